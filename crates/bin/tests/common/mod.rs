//! Helpers of the end-to-end tests: run a built binary with captured output, wait with
//! deadlines for what it logs or serves, write its configuration, start the fake Machines API
//! and seed an app the way a user does on Fly. Each test file states only what differs.
#![allow(dead_code)]

use std::borrow::BorrowMut;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};
use fleetscale_fly::{ClientConfig, FlyMachine, MachinesClient, Token};
use fleetscale_metrics::harness::PrometheusServer;
use serde_json::{json, Value};

/// Deadline for anything a test waits for: generous, a loaded 2-core machine is slow.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running binary whose stdout and stderr lines are collected as they arrive.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    lines
}

impl Proc {
    /// Spawns `cmd` (owned, or a `&mut` builder chain such as `fleetscale().arg("run")`) with
    /// piped output.
    pub fn spawn(mut cmd: impl BorrowMut<Command>) -> Proc {
        let mut child = cmd
            .borrow_mut()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn binary");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// A closure that returns everything the process wrote to stderr so far, for failure
    /// messages (it holds no borrow of the process, which the test may still signal or wait).
    pub fn stderr_reader(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let stderr = self.stderr.clone();
        move || stderr.lock().unwrap().join("\n")
    }

    /// The same as [`Proc::stderr_reader`] for stdout.
    pub fn stdout_reader(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let stdout = self.stdout.clone();
        move || stdout.lock().unwrap().join("\n")
    }

    /// Waits until `n` more JSON log lines with the message `msg` have arrived than there are
    /// now (`reconciling`: `n` more ticks).
    pub async fn await_more_logs(&self, msg: &str, n: usize) {
        let seen = self.count_logs(msg);
        self.await_logs(msg, seen + n).await;
    }

    /// Waits until there are at least `n` JSON log lines with the message `msg`.
    pub async fn await_logs(&self, msg: &str, n: usize) {
        eventually(
            &format!("{n} `{msg}` lines"),
            || (self.count_logs(msg) >= n).then_some(()),
            self.stderr_reader(),
        )
        .await;
    }

    /// How many JSON log lines with the message `msg` there are now.
    pub fn count_logs(&self, msg: &str) -> usize {
        self.json_logs().iter().filter(|l| l["msg"] == msg).count()
    }

    /// Waits until the process has written `text` to stderr (a log line that follows an
    /// effect is awaited, never assumed to be there with the effect).
    pub async fn await_logged(&self, text: &str) {
        let logs = self.stderr_reader();
        eventually(
            &format!("`{text}` in the logs"),
            || logs().contains(text).then_some(()),
            &logs,
        )
        .await;
    }

    /// The `addr` field of the first JSON log line with the message `msg` (where the process
    /// serves its metrics), once it is there.
    pub async fn logged_addr(&self, msg: &str) -> String {
        eventually(
            &format!("`{msg}` with an address in the logs"),
            || {
                self.json_logs().iter().find_map(|l| {
                    (l["msg"].as_str() == Some(msg))
                        .then(|| l["addr"].as_str().map(str::to_string))
                        .flatten()
                })
            },
            self.stderr_reader(),
        )
        .await
    }

    /// Sends `sig` and waits (up to [`DEADLINE`]) for the exit.
    pub fn stop(&mut self, sig: &str) -> ExitStatus {
        self.signal(sig);
        self.wait(DEADLINE)
    }

    /// Sends `sig` and asserts a clean exit (status 0), showing stderr when it is not.
    pub fn stop_cleanly(&mut self, sig: &str) {
        let status = self.stop(sig);
        assert!(
            status.success(),
            "exit {status} after SIG{sig}\n{}",
            self.stderr_lines().join("\n")
        );
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stderr line that is a JSON object.
    pub fn json_logs(&self) -> Vec<Value> {
        self.stderr_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Sends a signal with `kill(1)` (the tests use no `unsafe`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(200));
                return s;
            }
            if t0.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {deadline:?}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The built `fly-autoscaler` with an empty environment but `PATH`: nothing of the test
/// process' own environment reaches it.
pub fn fas() -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_fly-autoscaler")))
}

/// The built `fleetscale` with an empty environment but `PATH`.
pub fn fleetscale() -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_fleetscale")))
}

fn clean(mut cmd: Command) -> Command {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// `fly-autoscaler serve` against the Machines API at `fly_url` (both base URLs) for `app`
/// with `token`, its own `/metrics` on a free port; the test adds the scaling settings.
pub fn fas_serve(fly_url: &str, app: &str, token: &str) -> Command {
    let mut cmd = fas_on(fly_url, app, token);
    cmd.arg("serve");
    cmd
}

/// [`fas_serve`] without the command word: `fly-autoscaler` with no command serves, as the Go
/// tool does.
pub fn fas_on(fly_url: &str, app: &str, token: &str) -> Command {
    let mut cmd = fas();
    cmd.env("FLY_FLAPS_BASE_URL", fly_url)
        .env("FLY_API_BASE_URL", fly_url)
        .env("FAS_APP_NAME", app)
        .env("FAS_API_TOKEN", token)
        .env("FAS_METRICS_ADDR", "127.0.0.1:0");
    cmd
}

/// The fake Machines API with `app` seeded (one started machine) and a real Prometheus
/// scraping the fake's `fly_instance_up` series, once it counts that machine: the world of
/// Fly's "Autoscale Machines" blueprint.
pub async fn blueprint_world(app: &str, token: &str) -> (FakeFlyServer, PrometheusServer) {
    let server = fake_fly_with_apps(token, &[app]).await;
    let prometheus = PrometheusServer::start(&[server.addr()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    prometheus
        .wait_for_values(&format!("count(fly_instance_up{{app='{app}'}})"), &["1"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (server, prometheus)
}

/// `fly-autoscaler serve` with the blueprint's exact configuration (FAS_* variables only:
/// `count(fly_instance_up{app='$APP_NAME'})` as `running_machines`,
/// `min(running_machines + 1, 10)` machines, new machines stopped, a 500 ms interval).
pub fn blueprint_serve(
    server: &FakeFlyServer,
    prometheus: &PrometheusServer,
    app: &str,
    token: &str,
) -> Command {
    let mut cmd = fas_serve(&server.url(), app, token);
    cmd.env("FAS_CREATED_MACHINE_COUNT", "min(running_machines + 1, 10)")
        .env("FAS_INITIAL_MACHINE_STATE", "stopped")
        .env("FAS_PROMETHEUS_ADDRESS", prometheus.url())
        .env("FAS_PROMETHEUS_METRIC_NAME", "running_machines")
        .env(
            "FAS_PROMETHEUS_QUERY",
            "count(fly_instance_up{app='$APP_NAME'})",
        )
        .env("FAS_INTERVAL", "500ms");
    cmd
}

/// A loopback port nothing listens on at the moment, for a binary told to listen there.
pub fn free_port() -> u16 {
    fleetscale_core::testing::server_process::free_loopback_port().expect("a free port")
}

/// The first of `n` consecutive loopback ports nothing listens on at the moment (held all at
/// once while checked), for a binary told to listen on a range of ports.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..200 {
        let first = free_port();
        let Some(last) = first.checked_add(n - 1) else {
            continue;
        };
        let held: Vec<_> = (first..=last)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(Result::is_ok) {
            return first;
        }
    }
    panic!("no run of {n} free loopback ports");
}

/// [`eventually`] for a check that awaits (an HTTP request, an API call): polls `f` every
/// 200 ms until it returns `Some`, or panics after [`DEADLINE`] with `what` and `describe()`.
pub async fn eventually_async<T>(
    what: &str,
    describe: impl Fn() -> String,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "timed out waiting for {what}\n{}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET url` until `ready` holds for the body, and returns that body; a failed request
/// counts as an empty body. A timeout shows the last body and `describe()` (the process' logs).
pub async fn page_until(
    url: &str,
    describe: impl Fn() -> String,
    ready: impl Fn(&str) -> bool,
) -> String {
    let last = Mutex::new(String::new());
    eventually_async(
        &format!("{url} to answer as expected"),
        || format!("last answer:\n{}\n{}", last.lock().unwrap(), describe()),
        async || {
            let body = match reqwest::get(url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if ready(&body) {
                return Some(body);
            }
            *last.lock().unwrap() = body;
            None
        },
    )
    .await
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The head of a `fleetscale` TOML file: the tick `interval` and where `/metrics` is served
/// (`listen`, `"off"` for nowhere).
pub fn engine_toml(interval: &str, listen: &str) -> String {
    format!("[engine]\ninterval = \"{interval}\"\n\n[server]\nlisten = \"{listen}\"\n")
}

/// A `[[target.source]]` table of type `kind` named `name`, with the string `fields`.
pub fn source_toml(kind: &str, name: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!("[[target.source]]\ntype = \"{kind}\"\nname = \"{name}\"\n");
    for (key, value) in fields {
        out.push_str(&format!("{key} = \"{value}\"\n"));
    }
    out
}

/// A `[[target.source]]` table of type `prometheus` named `name`, at `address`, with `query`.
pub fn prometheus_source_toml(name: &str, address: &str, query: &str) -> String {
    source_toml(
        "prometheus",
        name,
        &[("address", address), ("query", query)],
    )
}

/// The target `web` of the app `app` (its token in `MY_FLY_TOKEN`) that keeps two stopped
/// spares beside its started machines, at most 10: `tests/configs/web-spares.toml`.
pub fn web_spares_toml(app: &str) -> String {
    include_str!("../configs/web-spares.toml").replace("${WEB_APP}", app)
}

/// Points `cmd` at the Machines API (and its GraphQL endpoint) at `fly_url`, with `token` in
/// `MY_FLY_TOKEN` (the `token_env` of the tests' TOML files).
pub fn on_fly<'a>(cmd: &'a mut Command, fly_url: &str, token: &str) -> &'a mut Command {
    cmd.env("FLY_FLAPS_BASE_URL", fly_url)
        .env("FLY_API_BASE_URL", fly_url)
        .env("MY_FLY_TOKEN", token)
}

/// Waits until `count()` is `n`; a timeout names `what` was counted and shows `describe()`
/// (the process' logs).
pub async fn count_reaches(
    what: &str,
    count: impl Fn() -> usize,
    n: usize,
    describe: impl Fn() -> String,
) {
    eventually(
        &format!("{n} {what}"),
        || (count() == n).then_some(()),
        || format!("last count {}\n{}", count(), describe()),
    )
    .await;
}

/// Waits until the fake holds `n` machines of `app` (of any state).
pub async fn machines_reach(
    fake: &fleetscale_fly::fake::FakeFly,
    app: &str,
    n: usize,
    describe: impl Fn() -> String,
) {
    let what = format!("machines of {app}");
    count_reaches(&what, || fake.machines(app).len(), n, describe).await;
}

/// `fleetscale fake fly` (built from `cmd`) on a free loopback port with `app` seeded, once it
/// says where it listens (it prints that after binding). Returns the process and its port.
pub async fn fake_fly_process(mut cmd: impl BorrowMut<Command>, app: &str) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proc = Proc::spawn(
        cmd.borrow_mut()
            .args(["fake", "fly", "--listen", &listen, "--app", app]),
    );
    let out = proc.stdout_reader();
    let err = proc.stderr_reader();
    eventually(
        "the fake to listen",
        || out().contains("FLY_FLAPS_BASE_URL=").then_some(()),
        || format!("stdout:\n{}\nstderr:\n{}", out(), err()),
    )
    .await;
    (proc, port)
}

/// The body of `GET url` (a `/metrics` page), which must answer.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Runs a binary (owned, or a `&mut` builder chain such as `fas().arg("eval")`) to completion
/// and returns (status, stdout, stderr).
pub fn run(mut cmd: impl BorrowMut<Command>) -> (ExitStatus, String, String) {
    let out = cmd
        .borrow_mut()
        .stdin(Stdio::null())
        .output()
        .expect("run binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after [`DEADLINE`] with `what`
/// and the last state described by `describe`.
pub async fn eventually<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}\n{}", describe());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fake Machines API on a free loopback port, requiring `token`.
pub async fn fake_fly(token: &str) -> FakeFlyServer {
    FakeFlyServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            token: Some(Token::new(token)),
            ..FakeConfig::default()
        },
    )
    .await
    .expect("bind fake Machines API")
}

/// The fake Machines API (see [`fake_fly`]) with each of `apps` seeded by [`seed_app`].
pub async fn fake_fly_with_apps(token: &str, apps: &[&str]) -> FakeFlyServer {
    let server = fake_fly(token).await;
    let client = client(&server, token);
    for app in apps {
        seed_app(&client, app).await;
    }
    server
}

/// A client of `server` with `token`.
pub fn client(server: &FakeFlyServer, token: &str) -> MachinesClient {
    MachinesClient::new(
        Some(Token::new(token)),
        ClientConfig::default().with_base_url(server.url()),
    )
    .unwrap()
}

/// What `fly deploy` would give the first machine of a process group `app`.
pub fn app_config() -> Value {
    json!({
        "image": "registry.fly.io/blueprint:deployment-1",
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "tcp", "internal_port": 8080,
                      "autostop": "stop", "autostart": true, "min_machines_running": 0,
                      "concurrency": {"type": "requests", "soft_limit": 20},
                      "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
        "metadata": {"fly_process_group": "app", "fly_release_id": "rel-1"}
    })
}

/// Creates an app and its first (started) machine with the same requests as against Fly.
pub async fn seed_app(client: &MachinesClient, app: &str) -> FlyMachine {
    fleetscale_fly::fake::seed_app(client, "my-org", app, app_config(), "iad")
        .await
        .expect("create the app and its first machine")
}
