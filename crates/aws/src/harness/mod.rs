//! Test harness (feature `test-harness`): a real EC2 API on loopback, reusable by every
//! crate's tests (this crate's, and the end-to-end tests of `fleetscale run`).
//!
//! - [`MotoServer`]: `moto_server` (PyPI `moto[server]`, a Python implementation of the AWS
//!   APIs), found by [`moto_server_binary`], started on a free loopback port with its log in a
//!   temporary directory; killed on drop, and also when the test process dies (a watchdog shell
//!   holds the other end of a pipe). Each server has its own state, so tests do not share
//!   instances.
//! - [`FaultProxy`]: a proxy in front of it that counts the EC2 actions it sees and injects
//!   what moto cannot produce: EC2 error answers (`RequestLimitExceeded`,
//!   `InsufficientInstanceCapacity`, ...), lost answers (forwarded, then an error or a long
//!   delay instead of the answer).
//!
//! moto (5.2.5) emulates the EC2 Query API closely, with known gaps this crate's tests work
//! around rather than hide: `RunInstances` ignores `ClientToken` (the scaler's launch-token
//! tag covers it), `DescribeInstances` pages by reservation (so each test instance is launched
//! on its own), stopping a one-time spot instance is allowed (EC2 refuses), instances go from
//! `pending` to `running` at once, and `RunInstances` with spot options creates no spot
//! request.
//!
//! When `moto_server` is missing, [`MotoServer::start`] fails with
//! [`HarnessError::NotInstalled`], whose message is the install hint; tests must fail on it,
//! never skip.

mod moto;
mod proxy;

pub use moto::{moto_server_binary, MotoServer, DEFAULT_DEADLINE, INSTALL_HINT, TEST_REGION};
pub use proxy::{Fault, FaultProxy, RecordedRequest};

/// Errors of the harness. `Debug` prints the same as `Display`, so `unwrap()` in a test shows
/// the install hint and moto's log readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// `moto_server` is not installed.
    #[error("{}", INSTALL_HINT)]
    NotInstalled,
    /// moto did not start.
    #[error("moto_server did not start: {message}\n--- moto_server log (end) ---\n{log}")]
    Start {
        /// What happened.
        message: String,
        /// The end of its log.
        log: String,
    },
    /// A setup call through the SDK failed.
    #[error("moto setup call failed: {0}")]
    Setup(String),
    /// A local I/O error (temp dir, port, process spawn).
    #[error("harness I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fleetscale_testkit::debug_as_display!(HarnessError);
