//! # fleetscale-fas
//!
//! The fly-autoscaler compatibility layer of fleetscale: what makes the `fly-autoscaler`
//! binary a drop-in replacement for `superfly/fly-autoscaler` v0.3.2. This is a composition
//! crate, not a backend: it puts the Fly backend, the metric sources and the engine together
//! the way the Go tool's configuration describes them; the backends never depend on it.
//!
//! - [`args`]: the command line (`serve`, `eval`, `version`, `-config PATH`), parsed like
//!   the Go tool's.
//! - [`config`]: the `FAS_*` environment variables and the YAML file of `-config`, with the
//!   Go tool's defaults and validation messages word for word ([`Config`]).
//! - [`gocompat`]: Go's duration, number and quoting formats, and `os.ExpandEnv`.
//! - [`build`]: the policy, metric sources, Fly clients and engine settings of a
//!   configuration, and `eval`'s one-shot evaluation.
//! - [`FlyTargets`]: the engine targets of a configuration (one app or a wildcard).
//! - [`observer`]: the Go tool's log lines, written from the engine's decision records.
//! - [`redact`]: the process-wide list of secrets (tokens, substituted values) that no line
//!   either binary writes may contain; both binaries' configurations register theirs.
//! - [`slog`]: a `tracing` layer writing them in the shape of Go's `log/slog` JSON handler.
//!
//! ```
//! use fleetscale_fas::{build_policy, Config};
//!
//! let config = Config {
//!     app_name: "web".into(),
//!     created_machine_count: "min(queue_depth / 10, 8)".into(),
//!     ..Config::default()
//! };
//! let policy = build_policy(&config, &["queue_depth"]).unwrap();
//! assert!(policy.variables().contains(&"queue_depth"));
//! assert!(build_policy(&config, &[]).is_err(), "an unknown metric fails at start");
//! ```
#![deny(missing_docs)]

pub mod args;
pub mod build;
pub mod config;
mod error;
pub mod gocompat;
pub mod observer;
pub mod redact;
pub mod slog;
mod targets;

pub use build::{
    build_client, build_graphql, build_policy, build_sources, check_env_utf8, engine_config, eval,
    load_config, log_pool_initialized, register_secrets,
};
pub use config::Config;
pub use error::{FasError, Result};
pub use observer::GoLogObserver;
pub use targets::FlyTargets;
