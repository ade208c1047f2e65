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
//! - [`LogBuffer`]: an in-memory log sink, for tests that assert what was logged.
//! - [`LoopbackThread`]: a test server on a free loopback port, on a thread with its own
//!   runtime (so it outlives any one test's runtime).
//! - [`server_process`]: real server programs for tests (find, spawn under a watchdog that
//!   dies with the test process, wait for readiness, a log tail that keeps crash causes).
//! - [`conformance`]: `conformance::scaler(&my_scaler)` and
//!   `conformance::membership(&my_membership, &machine)` check the trait contracts.

pub mod conformance;
mod fake_membership;
mod fake_scaler;
mod log_buffer;
mod loopback;
mod memory_ledger;
mod metrics;
pub mod server_process;

pub use fake_membership::{FakeMembership, MembershipCall};
pub use fake_scaler::{FakeScaler, Op, ScalerCall, Transitions};
pub use log_buffer::LogBuffer;
pub use loopback::{LoopbackThread, ShutdownSignal};
pub use memory_ledger::MemoryLedger;
pub use metrics::{ScriptedMetric, StaticMetric};
