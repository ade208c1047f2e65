//! The process as an operator sees it: a bounded shutdown with a hung metric, a second
//! signal, a metrics port already in use, no token, zero intervals, why a target holds,
//! `--help`/`--version`, structured JSON logs, RFC 3339 in `eval --json`, and a wildcard that
//! matches no app.
//!
//! Waits have generous deadlines as guards against a hang, never as speed assertions: what is
//! asserted is what the process logged and how it exited.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, fas, fleetscale, run, Proc};
use fleetscale_fly::fake::FakeFlyServer;

const TOKEN: &str = "FlyV1 fm2_lifecycle-token";

/// A Prometheus that accepts connections and never answers; counts the connections.
async fn hung_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, seen)
}

fn hung_metric_serve(server: &str, prom: SocketAddr, grace: &str) -> Command {
    let mut cmd = common::fas_serve(server, "hung-app", TOKEN);
    cmd.env("FAS_CREATED_MACHINE_COUNT", "m + 1")
        .env("FAS_PROMETHEUS_ADDRESS", format!("http://{prom}"))
        .env("FAS_PROMETHEUS_METRIC_NAME", "m")
        .env("FAS_PROMETHEUS_QUERY", "count(up)")
        .env("FAS_TIMEOUT", "10m")
        .env("FAS_SHUTDOWN_GRACE", grace);
    cmd
}

/// `fly-autoscaler serve` with the shutdown grace `grace`, once its tick waits on a metric
/// that never answers (the fake Machines API is returned: it must outlive the process).
async fn serving_with_a_hung_metric(grace: &str) -> (FakeFlyServer, Proc) {
    let server = common::fake_fly_with_apps(TOKEN, &["hung-app"]).await;
    let (prom, seen) = hung_server().await;
    let proc = Proc::spawn(hung_metric_serve(&server.url(), prom, grace));
    eventually(
        "the tick waiting on the hung metric",
        || (seen.load(Ordering::SeqCst) > 0).then_some(()),
        proc.stderr_reader(),
    )
    .await;
    (server, proc)
}

/// `fly-autoscaler serve` for the app `a` with one machine and the token: the start every
/// refusal test varies by one setting.
fn serve_one_machine_of_a() -> Command {
    let mut cmd = fas();
    cmd.arg("serve")
        .env("FAS_APP_NAME", "a")
        .env("FAS_API_TOKEN", TOKEN)
        .env("FAS_CREATED_MACHINE_COUNT", "1");
    cmd
}

/// Runs `fleetscale <command words> --config <path>` with the token in `FLY_API_TOKEN`.
fn run_with_token(
    command: &str,
    path: &std::path::Path,
) -> (std::process::ExitStatus, String, String) {
    run(fleetscale()
        .args(command.split(' '))
        .arg("--config")
        .arg(path)
        .env("FLY_API_TOKEN", TOKEN))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_metric_ends_after_the_grace() {
    let (_server, mut proc) = serving_with_a_hung_metric("1s").await;
    let logs = proc.stderr_reader();
    // Without the grace the tick would wait out its 10 minute deadline: the deadline of the
    // wait is a guard against that hang, the assertions are on what was logged.
    let status = proc.stop("TERM");
    assert!(status.success(), "exit {status}\n{}", logs());
    let json = proc.json_logs();
    let signal = json
        .iter()
        .find(|l| l["msg"] == "signal received, shutting down")
        .unwrap_or_else(|| panic!("{}", logs()));
    assert_eq!(signal["grace_seconds"], 1.0, "{signal}");
    assert!(
        json.iter().any(|l| l["msg"]
            .as_str()
            .is_some_and(|m| m.contains("ticks still in flight after the grace of 1 s"))),
        "{}",
        logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (_server, mut proc) = serving_with_a_hung_metric("10m").await;
    let logs = proc.stderr_reader();
    proc.signal("TERM");
    proc.await_logged("signal received, shutting down").await;
    let status = proc.stop("INT");
    assert_eq!(status.code(), Some(1), "{}", logs());
    assert!(
        logs().contains("second signal: exiting at once"),
        "{}",
        logs()
    );
}

#[test]
fn a_metrics_port_in_use_stops_the_process_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, _, err) = run(serve_one_machine_of_a()
        .env("FLY_FLAPS_BASE_URL", "http://127.0.0.1:9")
        .env("FAS_METRICS_ADDR", addr.to_string()));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot serve metrics on {addr} (FAS_METRICS_ADDR)"
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("address"), "the cause: {err}");

    let dir = tempfile::tempdir().unwrap();
    let path = common::write_file(
        dir.path(),
        "f.toml",
        &format!("[server]\nlisten = \"{addr}\"\n[[target]]\nbackend = {{ type = \"fly\", app = \"a\", base_url = \"http://127.0.0.1:9\" }}\n[target.policy]\ncreated = \"1\"\n"),
    );
    let (status, _, err) = run_with_token("run", &path);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("listen on {addr}")), "{err}");
}

#[test]
fn no_token_and_zero_intervals_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = "[engine]\ninterval = \"15s\"\n[[target]]\nbackend = { type = \"fly\", app = \"a\" }\n[target.policy]\ncreated = \"1\"\n";
    let path = common::write_file(dir.path(), "f.toml", file);
    for cmd in ["run", "eval"] {
        let (status, _, err) = run(fleetscale().args([cmd, "--config"]).arg(&path));
        assert_eq!(status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("Fly API token required"), "{cmd}: {err}");
        assert!(err.contains("FLY_API_TOKEN"), "{cmd}: {err}");
    }
    common::write_file(dir.path(), "f.toml", &file.replace("15s", "0s"));
    let (status, _, err) = run_with_token("run", &path);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(":2:1: engine.interval must be greater than zero"),
        "{err}"
    );
    assert!(err.contains("interval = \"0s\""), "the line: {err}");

    let (status, _, err) = run(serve_one_machine_of_a().env_remove("FAS_API_TOKEN"));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("api token required"), "{err}");
    let (status, _, err) = run(serve_one_machine_of_a().env("FAS_INTERVAL", "0s"));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("FAS_INTERVAL must be a positive duration"),
        "{err}"
    );
}

#[test]
fn fly_autoscaler_help_and_version_exit_zero() {
    for arg in ["--help", "-h", "help"] {
        let (status, out, _) = run(fas().arg(arg));
        assert!(status.success(), "{arg}");
        for var in [
            "FAS_APP_NAME",
            "FAS_API_TOKEN",
            "FAS_PROMETHEUS_QUERY",
            "FAS_CREATED_MACHINE_COUNT",
            "FAS_SHUTDOWN_GRACE",
            "FLY_API_BASE_URL",
        ] {
            assert!(out.contains(var), "{arg}: {var} missing\n{out}");
        }
    }
    for arg in ["--version", "version"] {
        let (status, out, _) = run(fas().arg(arg));
        assert!(status.success(), "{arg}");
        assert!(out.starts_with("fly-autoscaler "), "{out}");
    }
}

#[test]
fn a_non_utf8_environment_value_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"my-\xffapp");
    let (status, _, err) = run(fas()
        .arg("eval")
        .env("FAS_APP_NAME", bad)
        .env("FAS_CREATED_MACHINE_COUNT", "1"));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("FAS_APP_NAME is set but its value is not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("app name required"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = common::write_file(dir.path(), "f.toml", "[[target]]\nbackend = { type = \"fly\", app = \"${APP}\" }\n[target.policy]\ncreated = \"1\"\n");
    let (status, _, err) = run(fleetscale()
        .args(["eval", "--config"])
        .arg(&path)
        .env("APP", bad));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("APP is set but its value is not valid UTF-8"),
        "{err}"
    );
}

/// `fleetscale run` says why it holds when the hold starts, and when it ends; JSON logs keep
/// structured fields as objects; `eval --json` has RFC 3339 times and seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_explained_and_records_are_structured() {
    let server = common::fake_fly_with_apps(TOKEN, &["hold-app"]).await;
    let lab = fleetscale_metrics::harness::shared_lab()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let text = common::engine_toml("200ms", "127.0.0.1:0")
        + &format!(
            "[[target]]\nname = \"hold\"\nbackend = {{ type = \"fly\", app = \"hold-app\", base_url = \"{}\", release_guard = false }}\n[target.policy]\ncreated = \"load\"\n",
            server.url()
        )
        + &common::prometheus_source_toml(
            "load",
            &lab.prometheus.url(),
            "lifecycle_load{app='$APP_NAME'}",
        );
    let path = common::write_file(dir.path(), "f.toml", &text);

    let (status, out, err) = run_with_token("eval --json", &path);
    assert!(status.success(), "{out}{err}");
    let rec: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let started = rec["started_at"].as_str().expect("a string time");
    assert!(
        humantime::parse_rfc3339(started).is_ok() && started.ends_with('Z'),
        "{started}"
    );
    assert!(rec["duration_seconds"].is_f64(), "{rec}");

    let mut proc = Proc::spawn(
        fleetscale()
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("FLY_API_TOKEN", TOKEN),
    );
    let logs = proc.stderr_reader();
    // The hold explained, then ended.
    proc.await_logged("holding the current counts: metric `load` failed")
        .await;
    lab.exporter
        .set("lifecycle_load", &[("app", "hold-app")], 2.0);
    proc.await_logged("hold ended").await;
    proc.stop_cleanly("TERM");
    let json = proc.json_logs();
    let holds = json
        .iter()
        .filter(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("holding the current counts"))
        })
        .count();
    assert_eq!(
        holds,
        1,
        "logged when the hold starts, not every tick\n{}",
        logs()
    );
    let hold = json
        .iter()
        .find(|l| l["msg"].as_str().is_some_and(|m| m.starts_with("holding")))
        .unwrap();
    assert_eq!(hold["level"], "WARN");
    let reason = hold["reason"].as_str().unwrap();
    assert!(
        reason.contains("metric `load` failed: query returned no data"),
        "{hold}"
    );
    assert_eq!(
        reason.matches("`load`").count(),
        1,
        "no repeated prefix: {hold}"
    );
    // `$APP_NAME` is the app, not the target's display name.
    assert!(reason.contains("app='hold-app'"), "{hold}");
    let r = json
        .iter()
        .find(|l| l["msg"] == "reconciling" && l["status"] == "scaled")
        .unwrap_or_else(|| panic!("{}", logs()));
    assert!(
        r["counts"].is_object() && r["counts"]["created"].is_u64(),
        "{r}"
    );
    assert_eq!(r["targets"]["created"]["min"], 2, "{r}");
    for l in &json {
        let text = l.to_string();
        assert!(!text.contains("Some("), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_that_matches_no_app_says_so() {
    let server = common::fake_fly_with_apps(TOKEN, &["tame"]).await;
    let mut cmd = common::fas_serve(&server.url(), "wild-*", TOKEN);
    cmd.env("FAS_ORG", "my-org")
        .env("FAS_CREATED_MACHINE_COUNT", "2")
        .env("FAS_INTERVAL", "200ms");
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    proc.await_logged("matches no app of organization").await;
    // Served, and healthy: the loop runs although it has no target.
    let addr = proc.logged_addr("serving metrics").await;
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let warnings = logs().matches("matches no app of organization").count();
    assert_eq!(warnings, 1, "said once, not every refresh\n{}", logs());
    proc.stop_cleanly("TERM");
}
