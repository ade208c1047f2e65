//! Test harness (feature `test-harness`): a real Prometheus server and the loopback servers
//! around it, reusable by every crate's tests.
//!
//! - [`PrometheusServer`]: starts the Debian `prometheus` binary (found by
//!   [`prometheus_binary`]) on a free loopback port with a generated configuration
//!   (`scrape_interval: 1s`) and a temporary storage directory; killed on drop, and also when
//!   the test process dies (a watchdog shell holds the other end of a pipe).
//! - [`TestExporter`]: a `/metrics` endpoint whose gauges the test sets.
//! - [`start_proxy`]: a reverse proxy that can demand an `Authorization` header (401 otherwise)
//!   and delay answers. Prometheus' own `--web.config.file` supports only TLS and HTTP *basic*
//!   auth (`basic_auth_users`, bcrypt; see prometheus/exporter-toolkit `docs/web-configuration.md`),
//!   not bearer tokens, so bearer and `FlyV1` tokens are tested through this proxy.
//! - [`LoopbackServer`]: any axum router on its own thread and port; [`closed_port`].
//! - [`Exposition`]: a strict parser of the text exposition formats.
//! - [`Lab`] / [`shared_lab`]: one exporter plus one Prometheus scraping it, shared by all the
//!   tests of a test binary (starting Prometheus once keeps a 2-core machine responsive).
//!
//! - [`temporal`]: a fake Temporal frontend ([`FakeTemporal`]), a test PKI ([`TestPki`]), a
//!   TLS-terminating proxy ([`TlsProxy`]) and the real Temporal dev server
//!   ([`TemporalDevServer`], from the Temporal CLI).
//!
//! When the binary is missing every entry point fails with [`HarnessError::NotInstalled`],
//! whose message is the install hint; tests must fail on it, never skip.

mod exporter;
pub mod exposition;
mod prometheus;
mod proxy;
pub mod temporal;

pub use exporter::TestExporter;
pub use exposition::{Exposition, ParseError};
pub use fleetscale_testkit::server::{closed_port, LoopbackServer};
pub use prometheus::{
    openmetrics_gauge, prometheus_binary, PrometheusServer, QuerySample, DEFAULT_DEADLINE,
    INSTALL_HINT,
};
pub use proxy::{start_proxy, ProxyOptions};
pub use temporal::{
    temporal_binary, FakeTemporal, Fault, ServerTls, TemporalDevServer, TestPki, TlsProxy,
    TEMPORAL_INSTALL_HINT,
};

/// Errors of the harness. `Debug` prints the same as `Display`, so `unwrap()` in a test shows
/// the install hint and Prometheus' log readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The Prometheus binary is not installed.
    #[error("{}", INSTALL_HINT)]
    NotInstalled,
    /// Prometheus did not start.
    #[error("prometheus did not start: {message}\n--- prometheus log (end) ---\n{log}")]
    Start {
        /// What happened.
        message: String,
        /// The end of its log.
        log: String,
    },
    /// A query through the harness failed.
    #[error("query `{query}` failed: {message}")]
    Query {
        /// The query.
        query: String,
        /// Why.
        message: String,
    },
    /// Something awaited did not happen in time.
    #[error(
        "timed out waiting for {what}; last result: {last}\n--- prometheus log (end) ---\n{log}"
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// The last observation.
        last: String,
        /// The end of Prometheus' log.
        log: String,
    },
    /// The Temporal CLI (with its dev server) is not installed.
    #[error("{}", temporal::TEMPORAL_INSTALL_HINT)]
    TemporalNotInstalled,
    /// The Temporal dev server did not start.
    #[error("temporal dev server did not start: {message}\n--- temporal log (end) ---\n{log}")]
    TemporalStart {
        /// What happened.
        message: String,
        /// The end of its log.
        log: String,
    },
    /// A Temporal CLI command failed.
    #[error("temporal {args} failed: {message}")]
    TemporalCli {
        /// The command's arguments.
        args: String,
        /// Its status and output.
        message: String,
    },
    /// A local I/O error (temp dir, port, process spawn).
    #[error("harness I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fleetscale_testkit::debug_as_display!(HarnessError);

/// A test exporter and a Prometheus scraping it every second.
#[derive(Debug)]
pub struct Lab {
    /// The exporter; set gauges on it, then [`PrometheusServer::wait_for_values`].
    pub exporter: TestExporter,
    /// The server; use [`PrometheusServer::url`] as a source's address.
    pub prometheus: PrometheusServer,
}

impl Lab {
    /// Starts a new exporter and a Prometheus scraping it.
    ///
    /// # Errors
    /// See [`PrometheusServer::start`].
    pub async fn start() -> Result<Lab, HarnessError> {
        let exporter = TestExporter::start()?;
        let prometheus = PrometheusServer::start(&[exporter.addr()]).await?;
        Ok(Lab {
            exporter,
            prometheus,
        })
    }
}

static SHARED: tokio::sync::OnceCell<Lab> = tokio::sync::OnceCell::const_new();

/// The [`Lab`] shared by all tests of this test binary, started on first use. Tests sharing it
/// must use metric names of their own. The Prometheus process ends with the test process.
///
/// # Errors
/// See [`PrometheusServer::start`]; a failed start is retried by the next caller.
pub async fn shared_lab() -> Result<&'static Lab, HarnessError> {
    SHARED.get_or_try_init(Lab::start).await
}
