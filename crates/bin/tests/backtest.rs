//! `fleetscale backtest` as a user runs it: on the shipped trace (byte-identical output,
//! `--compare`, clear errors), with the fly-autoscaler variables, and from a REAL Prometheus
//! holding the same history (read with `query_range`), which must give the same figures.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fleetscale, run};
use fleetscale_metrics::harness::{openmetrics_gauge, PrometheusServer};
use fleetscale_sim::Trace;
use serde_json::Value;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/traces/diurnal-day.csv");

/// The blueprint as a fleetscale TOML file; `address` is where its Prometheus would be.
fn blueprint(dir: &Path, name: &str, rule: &str, address: &str) -> PathBuf {
    let target = format!(
        "\n[[target]]\nname = \"web\"\nbackend = {{ type = \"fly\", app = \"bt-app\" }}\ninitial_state = \"stopped\"\n\n[target.policy]\ncreated = \"{rule}\"\n\n"
    );
    let source = common::prometheus_source_toml(
        "running_machines",
        address,
        "count(fly_instance_up{app='$APP_NAME'})",
    );
    common::write_file(dir, name, &(target + &source))
}

/// `fleetscale backtest` of `config` on the trace file `trace`, writing to `out`.
fn backtest(config: &Path, trace: &Path, out: &Path) -> Command {
    let mut cmd = fleetscale();
    cmd.args(["backtest", "--config"])
        .arg(config)
        .arg("--trace")
        .arg(trace)
        .arg("--out")
        .arg(out);
    cmd
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn the_shipped_trace_backtests_twice_to_the_same_bytes_and_compares_two_policies() {
    let dir = tempfile::tempdir().unwrap();
    let a = blueprint(
        dir.path(),
        "blueprint.toml",
        "min(running_machines + 1, 10)",
        "http://127.0.0.1:9",
    );
    let b = blueprint(
        dir.path(),
        "two-spares.toml",
        "min(running_machines + 2, 12)",
        "http://127.0.0.1:9",
    );
    let go = |out: &str, compare: bool| {
        let mut c = backtest(&a, Path::new(SHIPPED), &dir.path().join(out));
        if compare {
            c.arg("--compare").arg(&b);
        }
        run(c)
    };
    let (status, out, err) = go("one", false);
    assert!(status.success(), "{out}\n{err}");
    assert!(
        err.contains("running_machines follows the simulated fleet"),
        "{err}"
    );
    assert!(out.contains("machine-hours started"), "{out}");
    assert!(
        out.contains("5760 samples from 2026-01-05T00:00:00Z to 2026-01-06T00:00:00Z"),
        "{out}"
    );
    let (status, _, _) = go("again", false);
    assert!(status.success());
    let first = std::fs::read(dir.path().join("one/summary.json")).unwrap();
    assert_eq!(
        first,
        std::fs::read(dir.path().join("again/summary.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(dir.path().join("one/plot.svg")).unwrap(),
        std::fs::read(dir.path().join("again/plot.svg")).unwrap()
    );
    let s = summary(&dir.path().join("one"));
    assert_eq!(s["peak_machines"], 10, "the blueprint's cap");
    assert!(s["proxy_actions"]["start"].as_u64().unwrap() > 10, "{s}");
    assert_eq!(s["ignored_actions"], 0);

    let (status, out, err) = go("both", true);
    assert!(status.success(), "{out}\n{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.contains("blueprint.toml") && header.contains("two-spares.toml"),
        "{out}"
    );
    let second: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("both/summary.compare.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(second["peak_machines"], 12);
    // One more spare: less time without one.
    assert!(second["no_spare_seconds"].as_f64().unwrap() < s["no_spare_seconds"].as_f64().unwrap());
    assert_eq!(
        &png_magic(&dir.path().join("both/plot.png")),
        b"\x89PNG\r\n\x1a\n"
    );
}

fn png_magic(path: &Path) -> [u8; 8] {
    let bytes = std::fs::read(path).unwrap();
    bytes[..8].try_into().unwrap()
}

#[test]
fn bad_inputs_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = blueprint(
        dir.path(),
        "b.toml",
        "min(queue_depth + 1, 10)",
        "http://127.0.0.1:9",
    );
    let (status, _, err) = run(backtest(&cfg, Path::new(SHIPPED), &dir.path().join("x")));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("queue_depth"), "{err}");
    assert!(!dir.path().join("x").exists(), "nothing written");

    let good = blueprint(
        dir.path(),
        "g.toml",
        "min(running_machines + 1, 10)",
        "http://127.0.0.1:9",
    );
    let bad_trace = common::write_file(dir.path(), "t.csv", "timestamp,load\n0,1\n15,lots\n");
    let (status, _, err) = run(backtest(&good, &bad_trace, &dir.path().join("y")));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("t.csv: trace line 3, column 2"), "{err}");
    assert!(!dir.path().join("y").exists());

    let (status, _, err) = run(fleetscale()
        .args(["backtest", "--config"])
        .arg(&good)
        .args(["--from", "yesterday", "--to", "now", "--out"])
        .arg(dir.path().join("z")));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is not a time"), "{err}");
}

#[test]
fn fly_autoscaler_variables_are_backtested_as_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = run(fleetscale()
        .args(["backtest", "--fas-env", "--trace", SHIPPED, "--out"])
        .arg(dir.path())
        .env("FAS_APP_NAME", "bt-app")
        .env("FAS_CREATED_MACHINE_COUNT", "min(running_machines + 1, 10)")
        .env("FAS_INITIAL_MACHINE_STATE", "stopped")
        .env("FAS_PROMETHEUS_ADDRESS", "http://127.0.0.1:9")
        .env("FAS_PROMETHEUS_METRIC_NAME", "running_machines")
        .env(
            "FAS_PROMETHEUS_QUERY",
            "count(fly_instance_up{app='$APP_NAME'})",
        ));
    assert!(status.success(), "{out}\n{err}");
    assert!(
        out.lines().next().unwrap().contains("FAS_* environment"),
        "{out}"
    );
    let s = summary(dir.path());
    assert_eq!(s["policy"]["created"], "min(running_machines + 1, 10)");
    assert_eq!(s["policy"]["initial_state"], "stopped");
    assert_eq!(s["peak_machines"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_gives_the_same_figures_as_the_same_history_in_a_trace() {
    // Five hours of the shipped day (07:00–12:00: the morning ramp and the 09:30 burst) as
    // Fly's concurrency metric, one series per region, in a real Prometheus.
    let day = Trace::from_csv(&std::fs::read_to_string(SHIPPED).unwrap()).unwrap();
    let part = day.slice(7 * 240, 12 * 240);
    let load: Vec<(i64, f64)> = part
        .timestamps()
        .iter()
        .zip(part.series("load").unwrap())
        .map(|(t, v)| (t / 1000, v.unwrap()))
        .collect();
    // Two regions carrying a third and two thirds of it.
    let third: Vec<(i64, f64)> = load.iter().map(|(t, v)| (*t, v / 4.0)).collect();
    let rest: Vec<(i64, f64)> = load.iter().map(|(t, v)| (*t, v * 3.0 / 4.0)).collect();
    let mut text = openmetrics_gauge(
        "fly_app_concurrency",
        &[("app", "bt-app"), ("region", "iad")],
        &third,
    );
    let fra = openmetrics_gauge(
        "fly_app_concurrency",
        &[("app", "bt-app"), ("region", "fra")],
        &rest,
    );
    text.push_str(fra.split_once('\n').unwrap().1);
    // Another app's load, which `$APP_NAME` must leave out.
    text.push_str(&openmetrics_gauge(
        "fly_app_concurrency_other",
        &[("app", "other")],
        &load,
    ));
    let prom = match PrometheusServer::start_with_history(&text).await {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };

    let dir = tempfile::tempdir().unwrap();
    let cfg = blueprint(
        dir.path(),
        "blueprint.toml",
        "min(running_machines + 1, 10)",
        &prom.url(),
    );
    let from = part.timestamps()[0] / 1000;
    let to = part.timestamps()[part.len() - 1] / 1000;
    let (status, out, err) = run(fleetscale()
        .args(["backtest", "--config"])
        .arg(&cfg)
        .args([
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--step",
            "15s",
        ])
        .args(["--load-query", "sum(fly_app_concurrency{app='$APP_NAME'})"])
        .arg("--out")
        .arg(dir.path().join("prom")));
    assert!(status.success(), "{out}\n{err}");
    assert!(
        out.contains("1200 samples from 2026-01-05T07:00:00Z"),
        "{out}"
    );

    let csv = common::write_file(dir.path(), "part.csv", &part.to_csv());
    let (status, out, err) = run(backtest(&cfg, &csv, &dir.path().join("csv")));
    assert!(status.success(), "{out}\n{err}");
    let mut from_prom = summary(&dir.path().join("prom"));
    let from_csv = summary(&dir.path().join("csv"));
    // The same history gives the same figures (sums of quarters may differ in the last bit,
    // which nothing here is sensitive to: the proxy compares the load with multiples of 20).
    assert_eq!(from_prom["history"]["samples"], 1200);
    from_prom["history"] = from_csv["history"].clone();
    assert_eq!(from_prom, from_csv);
    assert!(
        from_csv["proxy_actions"]["start"].as_u64().unwrap() >= 5,
        "{from_csv}"
    );
}

#[test]
fn the_readme_table_is_what_the_readme_command_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = run(fleetscale()
        .current_dir(&root)
        .args(["backtest", "--config", "crates/sim/traces/blueprint.toml"])
        .args(["--compare", "crates/sim/traces/two-spares.toml"])
        .args(["--trace", "crates/sim/traces/diurnal-day.csv", "--out"])
        .arg(dir.path()));
    assert!(status.success(), "{out}\n{err}");
    let table = std::fs::read_to_string(dir.path().join("table.txt")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```text\n{table}```")),
        "README.md's backtest table is out of date; the command prints:\n{table}"
    );
    // The committed plot is a PNG of the same size as the one produced.
    let committed = std::fs::read(root.join("docs/backtest.png")).unwrap();
    let produced = std::fs::read(dir.path().join("plot.png")).unwrap();
    assert_eq!(
        committed[..24],
        produced[..24],
        "PNG signature and IHDR (width, height)"
    );
}
