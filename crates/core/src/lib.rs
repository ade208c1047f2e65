//! # fleetscale-core
//!
//! The stable heart of fleetscale: the traits backends implement, the types that flow between
//! them, the expression language of scaling rules, the pure planner, and the engine that runs
//! ticks.
//!
//! ```text
//!  MetricSource(s) ──values──▶ Policy ──Targets──▶ plan() ──Plan──▶ Engine executes on a Scaler
//!                                                                    └─ ClusterMembership hooks
//! ```
//!
//! - Implement [`Scaler`] for your machines, [`MetricSource`] for your numbers and
//!   [`ClusterMembership`] for a cluster living on the machines. Each trait's docs state what
//!   the engine guarantees, what it assumes of you and what errors mean, with a runnable example.
//! - With the `testing` feature, `testing` holds in-memory fakes of all three traits with fault
//!   injection, and conformance suites that check your implementation with one call.
//!
//! All decisions are pure functions over data so they can be property-tested without I/O.
//!
//! # Implementing the traits: `#[async_trait]`
//!
//! The traits are object-safe (the engine holds `Arc<dyn Scaler>`), so their async methods are
//! written with the [`async_trait`](macro@async_trait) macro, re-exported here: put
//! `#[fleetscale_core::async_trait]` on your `impl` block and write `async fn` as usual, no
//! extra dependency needed. Which methods are async:
//!
//! | trait | async (`#[async_trait]`) | plain |
//! |---|---|---|
//! | [`Scaler`] | `list`, `create`, `start`, `stop`, `suspend`, `destroy`, `paused` | `capabilities` |
//! | [`MetricSource`] | `collect` | `name` |
//! | [`ClusterMembership`] | `members`, `join`, `leave`, `reclaim` | |
//! | [`engine::TargetProvider`] | `targets` | |
//! | [`coordination::Coordinator`] | `acquire`, `fence` | |
//! | [`coordination::LedgerStore`] / [`coordination::LedgerLock`] | `lock` / `records`, `append` | `describe` |
//! | [`record::DecisionObserver`] | | `observe`, `pass_finished` (not `#[async_trait]`) |
//!
//! ```
//! use fleetscale_core::{async_trait, MetricSource, Result, Scope};
//!
//! struct Two;
//!
//! #[async_trait]
//! impl MetricSource for Two {
//!     fn name(&self) -> &str {
//!         "two"
//!     }
//!     async fn collect(&self, _scope: &Scope) -> Result<f64> {
//!         Ok(2.0)
//!     }
//! }
//! ```

pub mod backoff;
pub mod coordination;
pub mod engine;
mod error;
pub mod expr;
mod machine;
mod membership;
mod metric;
pub mod plan;
pub mod policy;
pub mod record;
mod scaler;
mod scope;
mod secret;
mod targets;
#[cfg(feature = "testing")]
pub mod testing;

/// The attribute macro the traits' async methods are written with (crate `async-trait`);
/// see [Implementing the traits](crate#implementing-the-traits-async_trait).
pub use async_trait::async_trait;
pub use error::{error_causes, format_seconds, BoxError, Error, ErrorKind, Result};
pub use machine::{
    Counts, CreateRequest, Destination, Detail, InitialState, Machine, MachineId, MachineState,
};
pub use membership::{ClusterMembership, Member, ReclaimOutcome};
pub use metric::MetricSource;
pub use scaler::{Capabilities, Scaler};
pub use scope::{expand_vars, Scope};
pub use secret::{Secret, Token};
pub use targets::{Bounds, Targets};
