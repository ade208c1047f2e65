//! # fleetscale-fly
//!
//! The Fly.io backend of fleetscale:
//! - [`MachinesClient`]: a typed client of the Fly Machines API (machines, leases, wait,
//!   cordon, apps) with fly-go's token rules, typed errors carrying `fly-request-id`, tolerant
//!   decoding, pacing to Fly's documented rate limits and retries of idempotent calls only;
//! - [`FlyScaler`]: the core `Scaler` for one app and process group;
//! - [`AppDiscovery`]: the apps of an organization matching a wildcard, refreshed;
//! - `fake` (feature `fake`): a fake Machines API HTTP server for tests, demos and
//!   `fleetscale fake fly`.
//!
//! Facts about the API come from `superfly/fly-go`, Fly's docs and fly-autoscaler, summarised
//! in the project's `shared/reference/fly-machines-and-fly-autoscaler.md`.

pub mod client;
mod discovery;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod pacing;
mod scaler;
mod time;
mod token;
pub mod types;

pub use client::{ClientConfig, DestroyOptions, MachinesClient, WaitOptions};
pub use discovery::{AppDiscovery, Wildcard};
pub use error::{ApiContext, FlyError};
pub use pacing::{PacingConfig, Rate, RetryConfig};
pub use scaler::{DestroyPolicy, FlyScaler, FlyScalerConfig, DEFAULT_PROCESS_GROUP};
pub use time::{format_http_date, format_rfc3339, parse_http_date, parse_rfc3339};
pub use token::FlyToken;
pub use types::{Autostop, FlyMachine, FlyState, ImageRef, ListOptions};
