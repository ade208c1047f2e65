//! # fleetscale-bin
//!
//! The two binaries, thin: argument dispatch, process setup (logging, the `/metrics` and
//! `/healthz` server, replication through etcd) and signal handling, as a library so it can
//! be tested. What they run lives in libraries:
//!
//! - `fly-autoscaler` ([`fas`]): a drop-in replacement for `superfly/fly-autoscaler`
//!   (same `FAS_*` variables, YAML file, commands, log lines and metric names); its
//!   configuration, command line, targets and log lines are `fleetscale_fas`'s.
//! - `fleetscale` ([`cli`]): the native command line: `run` and `eval` ([`native`]) a TOML
//!   configuration of many targets (read and built by `fleetscale_config`), `backtest`
//!   ([`backtest`], replayed by `fleetscale_sim`), `weave reclaim` ([`weave`]), and with the
//!   `fakes` feature (on by default; `--no-default-features` builds a production binary
//!   without them) `demo`, `fake fly` and `fake weave`.
//!
//! Shared pieces: slog-shaped or human logs on a redacting stderr ([`logging`]), signal
//! handling and the shutdown grace ([`supervise`]); the `/metrics` server is
//! `fleetscale_metrics::server`, secret redaction `fleetscale_fas::redact`.

pub mod error;
pub mod fas;
pub mod logging;
pub mod supervise;

pub use error::{BinError, Result};
pub mod backtest;
pub mod cli;
#[cfg(feature = "fakes")]
pub mod demo;
#[cfg(feature = "fakes")]
pub mod fakes;
pub mod native;
pub mod weave;
