//! # fleetscale-config
//!
//! The native configuration of `fleetscale run` and `fleetscale eval`: one TOML file of many
//! targets on any backend. This is a composition crate, not a backend: it knows every backend
//! (Fly, EC2, Weave membership, etcd coordination) and builds their targets for the engine;
//! the backends never depend on it.
//!
//! - [`schema`]: the file's tables as serde reads them ([`FileConfig`]).
//! - [`text`]: reading a file ([`load`]): `${NAME}` substitution outside comments, and
//!   `path:line:col` positions in every error, quoting the line as written (never an expanded
//!   value, which may be a token).
//! - [`validate`]: count expressions and policies checked at their own key, and the
//!   environment variables the file reads.
//! - [`NativeTargets`]: the targets of a file as a
//!   [`TargetProvider`](fleetscale_core::engine::TargetProvider): Fly apps and wildcards
//!   ([`fly`]), EC2 pools ([`ec2`]), with their Weave memberships.
//! - [`coordination`]: replicas of either binary sharing the targets through etcd (from
//!   `[coordination]` or fly-autoscaler's `FAS_ETCD_*`), their state on `/metrics`.
//!
//! Every secret of a file (tokens, values substituted for `${NAME}`) is registered with
//! `fleetscale_fas::redact`, the process-wide list no line a binary writes may contain.
//!
//! ```
//! use std::path::Path;
//! use fleetscale_config::{ConfigText, FileConfig};
//!
//! let file = "[[target]]\nbackend = { type = \"fly\", app = \"web\" }\n[target.policy]\ncreated = \"2\"\n";
//! let text = ConfigText::expand(Path::new("fleetscale.toml"), file, &|_| None).unwrap();
//! let cfg: FileConfig = toml::from_str(&text.expanded).unwrap();
//! assert_eq!(cfg.targets.len(), 1);
//! ```
#![deny(missing_docs)]

pub mod coordination;
pub mod ec2;
mod error;
pub mod fly;
pub mod schema;
mod targets;
pub mod text;
pub mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, Result};
pub use schema::{
    engine_config, BackendConfig, EngineSection, FileConfig, FlyBackend, PolicyConfig,
    ServerSection, TargetConfig, WeaveSection,
};
pub use targets::NativeTargets;
pub use text::{line_col, load, located, ConfigText};
pub use validate::{check_env_utf8, rule};
