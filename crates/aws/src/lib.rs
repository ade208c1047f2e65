//! # fleetscale-aws
//!
//! The EC2 backend of fleetscale, on the official AWS SDK for Rust:
//!
//! - [`Ec2Scaler`]: the core [`Scaler`](fleetscale_core::Scaler) for one **pool** of EC2
//!   instances selected by tag (`fleetscale:pool = NAME`), on-demand or spot, launched from a
//!   launch template or explicit settings, with user data (e.g. the Weave Net bootstrap
//!   rendered by `fleetscale_weave::launch`, composed by the binary). It is also the inventory
//!   the Weave reclaimer asks whether a peer's host still exists.
//! - [`Ec2PoolConfig`]: the pool as written in a configuration file, validated while it is
//!   deserialized.
//! - `harness` (feature `test-harness`): `moto_server`, a real implementation of the EC2 API,
//!   started on a free loopback port for tests, and a fault-injecting proxy for what moto cannot
//!   produce (throttling, capacity errors, lost answers).
//!
//! Credentials, region and endpoint come from the standard AWS chain (environment, profiles,
//! SSO, web identity, ECS, instance metadata); the pool's `region`, `endpoint` and `profile`
//! override it. The crate needs Rust 1.94.1 or later (the SDK's minimum).

mod config;
mod error;
pub mod inventory;
mod random;
mod scaler;

#[cfg(feature = "test-harness")]
pub mod harness;

pub use config::{
    user_data_from_file, Ec2PoolConfig, Interruption, LaunchTemplateRef, Market, RetrySettings,
    SpotSettings, TimeoutSettings, UserData, DEFAULT_CAPACITY_COOLDOWN,
    DEFAULT_CREATE_STOPPED_TIMEOUT, DEFAULT_LAUNCH_GRACE, DEFAULT_PAGE_SIZE, DEFAULT_POOL_TAG,
    LAUNCH_TOKEN_TAG, MAX_TAGS, MAX_USER_DATA_BYTES,
};
pub use error::{classify, AwsError, ErrorClass};
pub use scaler::{ApiCalls, Ec2Scaler};

/// The AWS SDK crates this backend is built on, for callers that build their own
/// configuration or client.
pub use {aws_config, aws_sdk_ec2};
