//! # fleetscale-bin
//!
//! The code of the two binaries, as a library so it can be tested:
//!
//! - `fly-autoscaler` ([`fas`]): a drop-in replacement for `superfly/fly-autoscaler`
//!   (same `FAS_*` variables, YAML file, commands, log lines and metric names);
//! - `fleetscale` ([`cli`]): the native command line: `run` and `eval` a TOML
//!   configuration of many targets, `weave reclaim`, and with the `fakes` feature (on by
//!   default; `--no-default-features` builds a production binary without them) `demo`,
//!   `fake fly` and `fake weave`.
//!
//! Shared pieces: Go-compatible parsing ([`gocompat`]), slog-shaped JSON logs
//! ([`logging`]), the `/metrics` and `/healthz` server ([`http`]) fed by
//! `fleetscale_metrics::AutoscalerMetrics`.

pub mod coordination;
pub mod error;
pub mod fas;
pub mod gocompat;
pub mod http;
pub mod logging;
pub mod redact;
pub mod supervise;

pub use error::{BinError, Result};
pub mod backtest;
pub mod cli;
#[cfg(feature = "fakes")]
pub mod demo;
pub mod ec2;
#[cfg(feature = "fakes")]
pub mod fakes;
pub mod native;
pub mod weave;
