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
mod targets;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{BoxError, Error, Result};
pub use machine::{
    Counts, CreateRequest, Destination, InitialState, Machine, MachineId, MachineState,
};
pub use membership::{ClusterMembership, Member, ReclaimOutcome};
pub use metric::MetricSource;
pub use scaler::{Capabilities, Scaler};
pub use scope::{expand_vars, Scope};
pub use targets::{Bounds, Targets};
