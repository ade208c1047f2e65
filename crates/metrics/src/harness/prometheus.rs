//! [`PrometheusServer`]: the real Prometheus binary, started and stopped by a test.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetscale_core::testing::server_process::{
    find_program, retry_on_port_clash, says_address_in_use, ServerCommand, ServerProcess,
};
use serde::Deserialize;

use super::HarnessError;

/// The message of [`HarnessError::NotInstalled`].
pub const INSTALL_HINT: &str =
    "prometheus not found: run scripts/install-test-deps.sh (apt-get install -y prometheus)";

/// How long to wait for Prometheus to become ready, and for a series to show up. Generous: a
/// loaded 2-core CI machine may be slow, and this is a deadline, not an expectation.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(90);

/// Finds the Prometheus binary: `$FLEETSCALE_PROMETHEUS` if set, else `prometheus` on `PATH`,
/// else `/usr/bin/prometheus` (where the Debian package puts it).
///
/// # Errors
/// [`HarnessError::NotInstalled`] (with [`INSTALL_HINT`]) when none exists.
pub fn prometheus_binary() -> Result<PathBuf, HarnessError> {
    find_program(
        "FLEETSCALE_PROMETHEUS",
        "prometheus",
        &[],
        &[PathBuf::from("/usr/bin/prometheus")],
    )
    .ok_or(HarnessError::NotInstalled)
}

/// A running Prometheus server on `127.0.0.1:<free port>` with its own configuration and
/// storage in a temporary directory, scraping the given targets every second.
///
/// Stopped (SIGTERM, then its watchdog is killed after 10 s) and its directory removed on
/// drop; also killed when the test process dies in any way (so no Prometheus outlives its test
/// run, even one held in a `static`). After a crash the directory is kept for the log.
#[derive(Debug)]
pub struct PrometheusServer {
    addr: SocketAddr,
    process: ServerProcess,
    dir: PathBuf,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (each `http://<addr>/metrics`, job `test`,
    /// `honor_labels: true`) every second, and waits until it is ready.
    ///
    /// # Errors
    /// [`HarnessError::NotInstalled`] when the binary is missing; [`HarnessError::Start`] with
    /// the end of Prometheus' log when it exits or is not ready within [`DEFAULT_DEADLINE`].
    pub async fn start(targets: &[SocketAddr]) -> Result<Self, HarnessError> {
        Self::start_with(targets, None).await
    }

    /// Starts Prometheus with `openmetrics` (OpenMetrics text with timestamps, see
    /// [`openmetrics_gauge`]) already in its storage, scraping nothing: a server
    /// with history, for `query_range` over the past. The samples are turned into TSDB blocks
    /// by `promtool tsdb create-blocks-from openmetrics` (shipped with the Debian package,
    /// next to `prometheus`), and retention is long enough that old samples stay.
    ///
    /// # Errors
    /// As [`PrometheusServer::start`]; [`HarnessError::Start`] with promtool's output when it
    /// refuses the input.
    pub async fn start_with_history(openmetrics: &str) -> Result<Self, HarnessError> {
        Self::start_with(&[], Some(openmetrics)).await
    }

    async fn start_with(
        targets: &[SocketAddr],
        history: Option<&str>,
    ) -> Result<Self, HarnessError> {
        let binary = prometheus_binary()?;
        retry_on_port_clash(
            5,
            || Self::start_once(&binary, targets, history),
            |e| matches!(e, HarnessError::Start { log, .. } if says_address_in_use(log)),
        )
        .await
    }

    async fn start_once(
        binary: &Path,
        targets: &[SocketAddr],
        history: Option<&str>,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetscale-prometheus-")
            .tempdir()?
            .keep();
        let retention = match history {
            None => "1h",
            Some(samples) => {
                create_blocks(binary, &dir, samples)?;
                "36500d"
            }
        };
        let port = super::closed_port()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let target_list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: test\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            target_list.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config)?;
        let process = ServerCommand::new(binary, dir.join("prometheus.log"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--storage.tsdb.retention.time={retention}"))
            .arg("--log.level=info")
            .remove_dir_on_stop(&dir)
            .spawn()?;
        let server = PrometheusServer { addr, process, dir };
        server
            .process
            .wait_http_ready(DEFAULT_DEADLINE, addr, "/-/ready")
            .await
            .map_err(|e| HarnessError::Start {
                message: format!("prometheus {e}"),
                log: e.log,
            })?;
        Ok(server)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the base address for a [`crate::PrometheusSource`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The temporary directory holding the configuration, the log and the storage (removed when
    /// the server stops).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of Prometheus' log, with the cause lines of a crash kept (for failure
    /// messages).
    pub fn log(&self) -> String {
        self.process.log_tail()
    }

    /// Runs an instant query and returns `(labels, value)` per series (values as written, so
    /// NaN is visible). A scalar comes back as one series without labels.
    ///
    /// # Errors
    /// [`HarnessError::Query`] when the server cannot be reached or answers an error.
    pub async fn query(&self, query: &str) -> Result<Vec<QuerySample>, HarnessError> {
        #[derive(Deserialize)]
        struct Envelope {
            status: String,
            #[serde(default)]
            data: Option<Data>,
            #[serde(default)]
            error: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
        enum Data {
            Vector(Vec<VectorItem>),
            Scalar((f64, String)),
            Matrix(serde::de::IgnoredAny),
            String(serde::de::IgnoredAny),
        }
        #[derive(Deserialize)]
        struct VectorItem {
            metric: std::collections::BTreeMap<String, String>,
            value: (f64, String),
        }
        let fail = |message: String| HarnessError::Query {
            query: query.to_owned(),
            message,
        };
        let client = reqwest::Client::new();
        let response = client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        let envelope: Envelope =
            serde_json::from_slice(&body).map_err(|e| fail(format!("bad body: {e}")))?;
        if envelope.status != "success" {
            return Err(fail(envelope.error.unwrap_or_default()));
        }
        match envelope.data {
            Some(Data::Vector(items)) => Ok(items
                .into_iter()
                .map(|i| QuerySample {
                    labels: i.metric,
                    value: i.value.1,
                })
                .collect()),
            Some(Data::Scalar((_, v))) => Ok(vec![QuerySample {
                labels: Default::default(),
                value: v,
            }]),
            _ => Err(fail("not a vector or scalar".into())),
        }
    }

    /// Polls `query` until `done` accepts the result, up to `deadline`. Use it to wait for a
    /// scrape after a test exporter's gauge was set.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] with the last result when the deadline passes.
    pub async fn wait_for(
        &self,
        query: &str,
        deadline: Duration,
        done: impl Fn(&[QuerySample]) -> bool,
    ) -> Result<Vec<QuerySample>, HarnessError> {
        let started = Instant::now();
        loop {
            let last = match self.query(query).await {
                Ok(result) if done(&result) => return Ok(result),
                Ok(result) => format!("{result:?}"),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > deadline {
                return Err(HarnessError::Timeout {
                    what: format!("query `{query}`"),
                    last,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) until `query` returns exactly the given values
    /// (as strings, order-insensitive: `["1", "NaN"]`).
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when it does not happen.
    pub async fn wait_for_values(
        &self,
        query: &str,
        values: &[&str],
    ) -> Result<Vec<QuerySample>, HarnessError> {
        let mut want: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        want.sort();
        self.wait_for(query, DEFAULT_DEADLINE, |r| {
            let mut got: Vec<String> = r.iter().map(|s| s.value.clone()).collect();
            got.sort();
            got == want
        })
        .await
    }

    /// Stops the server now (what drop does).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// `promtool`: `$FLEETSCALE_PROMTOOL` if set, else next to the Prometheus binary (as Debian
/// installs both), else on `PATH`.
fn promtool_binary(prometheus: &Path) -> Result<PathBuf, HarnessError> {
    find_program(
        "FLEETSCALE_PROMTOOL",
        "promtool",
        &[prometheus.with_file_name("promtool")],
        &[],
    )
    .ok_or(HarnessError::NotInstalled)
}

/// Writes `samples` as TSDB blocks under `dir/data` with promtool.
fn create_blocks(prometheus: &Path, dir: &Path, samples: &str) -> Result<(), HarnessError> {
    let promtool = promtool_binary(prometheus)?;
    let input = dir.join("history.om");
    let mut text = samples.to_owned();
    if !text.trim_end().ends_with("# EOF") {
        text.push_str("# EOF\n");
    }
    fs::write(&input, text)?;
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(HarnessError::Start {
            message: format!(
                "promtool tsdb create-blocks-from openmetrics failed ({})",
                out.status
            ),
            log: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// OpenMetrics text of one gauge with timestamped samples, for
/// [`PrometheusServer::start_with_history`]: `# TYPE`, one line per `(Unix seconds, value)`.
/// Concatenate several; the final `# EOF` is added by the server.
///
/// ```
/// use fleetscale_metrics::harness::openmetrics_gauge;
/// let text = openmetrics_gauge("load", &[("app", "web")], &[(1_767_571_200, 1.5)]);
/// assert_eq!(text, "# TYPE load gauge\nload{app=\"web\"} 1.5 1767571200\n");
/// ```
pub fn openmetrics_gauge(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    };
    let mut out = format!("# TYPE {name} gauge\n");
    for (t, v) in samples {
        out.push_str(&format!("{series} {v} {t}\n"));
    }
    out
}

/// One series of an instant query's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuerySample {
    /// Its labels (`__name__` included when the query kept it).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The value as Prometheus wrote it (`"1"`, `"NaN"`).
    pub value: String,
}
