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
    let server = common::fake_fly(TOKEN).await;
    common::seed_app(&common::client(&server, TOKEN), "hung-app").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_metric_ends_after_the_grace() {
    let (_server, mut proc) = serving_with_a_hung_metric("1s").await;
    let logs = proc.stderr_reader();
    proc.signal("TERM");
    // Without the grace the tick would wait out its 10 minute deadline: this deadline is a
    // guard against that hang, the assertions are on what was logged.
    let status = proc.wait(common::DEADLINE);
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
    eventually(
        "the first signal logged",
        || {
            logs()
                .contains("signal received, shutting down")
                .then_some(())
        },
        &logs,
    )
    .await;
    proc.signal("INT");
    let status = proc.wait(common::DEADLINE);
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
    let (status, _, err) = run({
        let mut c = fas();
        c.arg("serve")
            .env("FAS_APP_NAME", "a")
            .env("FAS_API_TOKEN", TOKEN)
            .env("FAS_CREATED_MACHINE_COUNT", "1")
            .env("FLY_FLAPS_BASE_URL", "http://127.0.0.1:9")
            .env("FAS_METRICS_ADDR", addr.to_string());
        c
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot serve metrics on {addr} (FAS_METRICS_ADDR)"
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("address"), "the cause: {err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"{addr}\"\n[[target]]\nbackend = {{ type = \"fly\", app = \"a\", base_url = \"http://127.0.0.1:9\" }}\n[target.policy]\ncreated = \"1\"\n"),
    )
    .unwrap();
    let (status, _, err) = run({
        let mut c = fleetscale();
        c.args(["run", "--config"])
            .arg(&path)
            .env("FLY_API_TOKEN", TOKEN);
        c
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("listen on {addr}")), "{err}");
}

#[test]
fn no_token_and_zero_intervals_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    let file = "[engine]\ninterval = \"15s\"\n[[target]]\nbackend = { type = \"fly\", app = \"a\" }\n[target.policy]\ncreated = \"1\"\n";
    std::fs::write(&path, file).unwrap();
    for cmd in ["run", "eval"] {
        let (status, _, err) = run({
            let mut c = fleetscale();
            c.args([cmd, "--config"]).arg(&path);
            c
        });
        assert_eq!(status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("Fly API token required"), "{cmd}: {err}");
        assert!(err.contains("FLY_API_TOKEN"), "{cmd}: {err}");
    }
    std::fs::write(&path, file.replace("15s", "0s")).unwrap();
    let (status, _, err) = run({
        let mut c = fleetscale();
        c.args(["run", "--config"])
            .arg(&path)
            .env("FLY_API_TOKEN", TOKEN);
        c
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(":2:1: engine.interval must be greater than zero"),
        "{err}"
    );
    assert!(err.contains("interval = \"0s\""), "the line: {err}");

    let (status, _, err) = run({
        let mut c = fas();
        c.arg("serve")
            .env("FAS_APP_NAME", "a")
            .env("FAS_CREATED_MACHINE_COUNT", "1");
        c
    });
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("api token required"), "{err}");
    let (status, _, err) = run({
        let mut c = fas();
        c.arg("serve")
            .env("FAS_APP_NAME", "a")
            .env("FAS_API_TOKEN", TOKEN)
            .env("FAS_CREATED_MACHINE_COUNT", "1")
            .env("FAS_INTERVAL", "0s");
        c
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("FAS_INTERVAL must be a positive duration"),
        "{err}"
    );
}

#[test]
fn fly_autoscaler_help_and_version_exit_zero() {
    for arg in ["--help", "-h", "help"] {
        let (status, out, _) = run({
            let mut c = fas();
            c.arg(arg);
            c
        });
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
        let (status, out, _) = run({
            let mut c = fas();
            c.arg(arg);
            c
        });
        assert!(status.success(), "{arg}");
        assert!(out.starts_with("fly-autoscaler "), "{out}");
    }
}

#[test]
fn a_non_utf8_environment_value_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"my-\xffapp");
    let (status, _, err) = run({
        let mut c = fas();
        c.arg("eval")
            .env("FAS_APP_NAME", bad)
            .env("FAS_CREATED_MACHINE_COUNT", "1");
        c
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("FAS_APP_NAME is set but its value is not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("app name required"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "[[target]]\nbackend = { type = \"fly\", app = \"${APP}\" }\n[target.policy]\ncreated = \"1\"\n").unwrap();
    let (status, _, err) = run({
        let mut c = fleetscale();
        c.args(["eval", "--config"]).arg(&path).env("APP", bad);
        c
    });
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
    let server = common::fake_fly(TOKEN).await;
    common::seed_app(&common::client(&server, TOKEN), "hold-app").await;
    let lab = fleetscale_metrics::harness::shared_lab()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(
        &path,
        format!(
            "[engine]\ninterval = \"200ms\"\n[server]\nlisten = \"127.0.0.1:0\"\n[[target]]\nname = \"hold\"\nbackend = {{ type = \"fly\", app = \"hold-app\", base_url = \"{}\", release_guard = false }}\n[target.policy]\ncreated = \"load\"\n[[target.source]]\ntype = \"prometheus\"\nname = \"load\"\naddress = \"{}\"\nquery = \"lifecycle_load{{app='$APP_NAME'}}\"\n",
            server.url(),
            lab.prometheus.url()
        ),
    )
    .unwrap();

    let (status, out, err) = run({
        let mut c = fleetscale();
        c.args(["eval", "--json", "--config"])
            .arg(&path)
            .env("FLY_API_TOKEN", TOKEN);
        c
    });
    assert!(status.success(), "{out}{err}");
    let rec: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let started = rec["started_at"].as_str().expect("a string time");
    assert!(
        humantime::parse_rfc3339(started).is_ok() && started.ends_with('Z'),
        "{started}"
    );
    assert!(rec["duration_seconds"].is_f64(), "{rec}");

    let mut cmd = fleetscale();
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("FLY_API_TOKEN", TOKEN);
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    eventually(
        "the hold explained",
        || {
            logs()
                .contains("holding the current counts: metric `load` failed")
                .then_some(())
        },
        &logs,
    )
    .await;
    lab.exporter
        .set("lifecycle_load", &[("app", "hold-app")], 2.0);
    eventually(
        "the hold ended",
        || logs().contains("hold ended").then_some(()),
        &logs,
    )
    .await;
    proc.signal("TERM");
    assert!(proc.wait(common::DEADLINE).success(), "{}", logs());
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
    let server = common::fake_fly(TOKEN).await;
    common::seed_app(&common::client(&server, TOKEN), "tame").await;
    let mut cmd = common::fas_serve(&server.url(), "wild-*", TOKEN);
    cmd.env("FAS_ORG", "my-org")
        .env("FAS_CREATED_MACHINE_COUNT", "2")
        .env("FAS_INTERVAL", "200ms");
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    eventually(
        "the warning",
        || {
            logs()
                .contains("matches no app of organization")
                .then_some(())
        },
        &logs,
    )
    .await;
    // Served, and healthy: the loop runs although it has no target.
    let addr = proc
        .json_logs()
        .iter()
        .find(|l| l["msg"] == "serving metrics")
        .and_then(|l| l["addr"].as_str().map(str::to_owned))
        .unwrap();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let warnings = logs().matches("matches no app of organization").count();
    assert_eq!(warnings, 1, "said once, not every refresh\n{}", logs());
    proc.signal("TERM");
    assert!(proc.wait(common::DEADLINE).success());
}
