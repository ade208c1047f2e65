//! Test kit (feature `testing`): in-memory fakes of every trait with fault injection, and
//! conformance suites for third-party implementations.
//!
//! - [`FakeScaler`]: an in-memory fleet with the lifecycle state machine (transitions that
//!   settle after a chosen number of `list` calls), a call log, and injectable failures.
//! - [`FakeMembership`]: an in-memory cluster with fixed and dynamic members, reachability and
//!   a reclaim ledger (at most once per member).
//! - [`StaticMetric`], [`ScriptedMetric`]: metric sources whose values the test sets.
//! - [`MemoryLedger`]: a shared in-memory [`crate::coordination::LedgerStore`] with a real
//!   exclusive lock.
//! - [`conformance`]: `conformance::scaler(&my_scaler)` and
//!   `conformance::membership(&my_membership, &machine)` check the trait contracts.

pub mod conformance;
mod fake_membership;
mod fake_scaler;
mod memory_ledger;
mod metrics;

pub use fake_membership::{FakeMembership, MembershipCall};
pub use fake_scaler::{FakeScaler, Op, ScalerCall, Transitions};
pub use memory_ledger::MemoryLedger;
pub use metrics::{ScriptedMetric, StaticMetric};
