//! No number may make the process do work or allocate memory in proportion to it: the built
//! binaries with counts of 1e12, a metric of 1e300 and a target of a million, in eval and in
//! dry runs. Memory is read from the child's `/proc/<pid>/status` (`VmHWM`, its peak resident
//! set), never from wall-clock speed; log volume is counted in lines per tick.

mod common;

use std::process::Command;

use common::{eventually, fas, fleetscale, run, Proc};

const TOKEN: &str = "FlyV1 fm2_hostile-token";

/// The peak resident set of a live process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib / 1024.0
}

/// Ten times what either binary needs at rest (about 10-20 MiB); the defect reached 744 MB
/// for a target of 1e6, and allocation failure (abort) for 1e12.
const MEMORY_BOUND_MIB: f64 = 160.0;

#[test]
fn eval_saturates_a_huge_count_with_a_warning() {
    let (status, out, err) = run(fas()
        .arg("eval")
        .env("FAS_APP_NAME", "my-app")
        .env("FAS_CREATED_MACHINE_COUNT", "1e12"));
    assert!(status.success(), "exit {status}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"]["min"], 10_000, "{out}");
    assert_eq!(v["created"]["max"], 10_000, "{out}");
    let warn = err
        .lines()
        .find(|l| l.contains("saturated"))
        .unwrap_or_else(|| panic!("no saturation warning:\n{err}"));
    let w: serde_json::Value = serde_json::from_str(warn).unwrap();
    assert_eq!(w["level"], "WARN");
    assert_eq!(w["expression"], "1e12", "{warn}");
    assert_eq!(w["value"], 1e12, "{warn}");
    assert_eq!(w["ceiling"], 10_000, "{warn}");
}

/// Polls until `n` more `reconciling` lines than `after` have been logged.
async fn ticks(proc: &Proc, n: usize, logs: &(dyn Fn() -> String + Sync)) {
    let count = |p: &Proc| {
        p.stderr_lines()
            .iter()
            .filter(|l| l.contains("\"msg\":\"reconciling\"") || l.contains(" reconciling"))
            .count()
    };
    eventually(
        &format!("{n} ticks"),
        || (count(proc) >= n).then_some(()),
        logs,
    )
    .await;
}

/// Spawns `cmd`, waits for 5 ticks and asserts its peak RSS stays under
/// [`MEMORY_BOUND_MIB`]; returns the process and that peak.
async fn five_ticks_within_the_memory_bound(cmd: Command) -> (Proc, f64) {
    let proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    ticks(&proc, 5, &logs).await;
    let peak = peak_rss_mib(proc.child.id());
    assert!(
        peak < MEMORY_BOUND_MIB,
        "peak RSS {peak:.1} MiB\n{}",
        logs()
    );
    (proc, peak)
}

/// Asserts that the process logged at most `per_tick` lines a tick (plus 20 at start; `tick`
/// marks a tick's line) and summed up the actions it left out in a line `left_out` accepts.
fn assert_terse(proc: &Proc, tick: &str, per_tick: usize, left_out: impl Fn(&str) -> bool) {
    let lines = proc.stderr_lines();
    let ticks_seen = lines.iter().filter(|l| l.contains(tick)).count();
    assert!(
        lines.len() <= per_tick * ticks_seen + 20,
        "{} lines for {ticks_seen} ticks",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| left_out(l)),
        "no summary of the actions left out\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_with_a_count_of_1e12_stays_small_and_terse() {
    let server = common::fake_fly_with_apps(TOKEN, &["huge"]).await;
    let mut cmd = common::fas_serve(&server.url(), "huge", TOKEN);
    cmd.env("FAS_CREATED_MACHINE_COUNT", "1e12")
        .env("FAS_DRY_RUN", "true")
        .env("FAS_INTERVAL", "200ms");
    let (mut proc, peak) = five_ticks_within_the_memory_bound(cmd).await;
    // Per tick: reconciling, the saturation WARN, a cap note, 20 actions and one summary.
    assert_terse(&proc, "\"msg\":\"reconciling\"", 40, |l| {
        l.contains("dry run: and more") && l.contains("80 create")
    });
    assert_eq!(
        server
            .fake()
            .count_requests("POST", "/v1/apps/huge/machines"),
        1,
        "a dry run creates nothing (the one create is the seed)"
    );
    proc.stop_cleanly("TERM");
    eprintln!("fly-autoscaler dry run, count 1e12: peak RSS {peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_of_1e300_is_bounded_per_tick() {
    let server = common::fake_fly_with_apps(TOKEN, &["spike"]).await;
    let lab = fleetscale_metrics::harness::shared_lab()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = common::fas_serve(&server.url(), "spike", TOKEN);
    cmd.env("FAS_CREATED_MACHINE_COUNT", "running_machines")
        .env("FAS_PROMETHEUS_ADDRESS", lab.prometheus.url())
        .env("FAS_PROMETHEUS_METRIC_NAME", "running_machines")
        .env("FAS_PROMETHEUS_QUERY", "vector(1e300)")
        .env("FAS_DRY_RUN", "true")
        .env("FAS_INTERVAL", "200ms");
    let (mut proc, peak) = five_ticks_within_the_memory_bound(cmd).await;
    let logs = proc.stderr_reader();
    let json = proc.json_logs();
    let r = json
        .iter()
        .find(|l| l["msg"] == "reconciling")
        .expect("reconciling");
    assert_eq!(r["target"]["created"]["min"], 10_000, "{r}");
    let warn = json
        .iter()
        .find(|l| l["msg"].as_str().is_some_and(|m| m.contains("saturated")))
        .unwrap_or_else(|| panic!("no saturation warning\n{}", logs()));
    assert_eq!(warn["expression"], "running_machines", "{warn}");
    assert_eq!(warn["value"], 1e300, "{warn}");
    proc.stop_cleanly("TERM");
    eprintln!("fly-autoscaler dry run, metric 1e300: peak RSS {peak:.1} MiB");
}

fn config_file(dir: &std::path::Path, server_url: &str, created: &str) -> std::path::PathBuf {
    let text = common::engine_toml("200ms", "127.0.0.1:0")
        + &format!(
            "\n[[target]]\nname = \"big\"\nbackend = {{ type = \"fly\", app = \"big\", base_url = \"{server_url}\", release_guard = false }}\n\n[target.policy]\ncreated = \"{created}\"\n"
        );
    common::write_file(dir, "fleetscale.toml", &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_of_a_million_in_eval_and_in_a_dry_run() {
    let server = common::fake_fly_with_apps(TOKEN, &["big"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &server.url(), "1e6");

    let (status, out, err) = run(fleetscale()
        .args(["eval", "--config"])
        .arg(&path)
        .env("FLY_API_TOKEN", TOKEN));
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    assert!(
        out.contains("targets: created min 10000 max 10000"),
        "{out}"
    );
    assert!(out.contains("would do (100 create):"), "{out}");
    assert!(out.contains("... and 80 more (80 create)"), "{out}");
    assert!(out.contains("creates capped at 100 of 9999"), "{out}");
    assert!(out.lines().count() < 60, "{out}");

    let mut cmd = fleetscale();
    cmd.args(["run", "--dry-run", "--config"])
        .arg(&path)
        .env("FLY_API_TOKEN", TOKEN);
    let (mut proc, peak) = five_ticks_within_the_memory_bound(cmd).await;
    assert_terse(&proc, " reconciling", 30, |l| {
        l.contains("dry run: and 80 more (80 create)")
    });
    proc.stop_cleanly("TERM");
    eprintln!("fleetscale run --dry-run, target 1e6: peak RSS {peak:.1} MiB");
}

#[test]
fn demo_refuses_absurd_speeds_and_durations_at_parse_time() {
    for bad in ["0", "NaN", "inf", "-1", "1e20", "abc", "0.001", "101"] {
        let (status, out, err) = run(fleetscale().args(["demo", &format!("--speed={bad}")]));
        assert_eq!(status.code(), Some(2), "--speed {bad}: {out}\n{err}");
        assert!(err.contains("--speed"), "--speed {bad}: {err}");
        assert!(!err.contains("panicked"), "--speed {bad}: {err}");
        assert!(out.is_empty(), "the demo did not start: {out}");
    }
    for bad in ["0s", "100y", "soon"] {
        let (status, _, err) = run(fleetscale().args(["demo", &format!("--duration={bad}")]));
        assert_eq!(status.code(), Some(2), "--duration {bad}: {err}");
        assert!(err.contains("--duration"), "--duration {bad}: {err}");
    }
}
