//! The built `fly-autoscaler` as a user runs it: `eval`, `version`, help, and the Go tool's
//! error messages and exit statuses.

mod common;

use common::{fas, run};
use fleetscale_metrics::harness::Lab;
use serde_json::{json, Value};

/// `fly-autoscaler eval` for the app `my-app` with the created count `created`.
fn eval_my_app(created: &str) -> std::process::Command {
    let mut cmd = fas();
    cmd.arg("eval")
        .env("FAS_APP_NAME", "my-app")
        .env("FAS_CREATED_MACHINE_COUNT", created);
    cmd
}

#[test]
fn eval_prints_the_targets_as_the_go_tool() {
    let (status, out, err) = run(eval_my_app("2.6")
        .env("FAS_MIN_STARTED_MACHINE_COUNT", "0")
        .env("FAS_MAX_STARTED_MACHINE_COUNT", "max(1, 3 - 5)"));
    assert!(status.success(), "{err}");
    // json.MarshalIndent(out, "", "  ") in the Go tool's eval.go.
    assert_eq!(
        out,
        "{\n  \"created\": {\n    \"min\": 3,\n    \"max\": 3\n  },\n  \"started\": {\n    \"min\": 0,\n    \"max\": 1\n  }\n}\n"
    );
    // Created counts are at least 1 (nothing left to clone otherwise); undefined is null.
    let (status, out, err) = run(eval_my_app("-2"));
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"created": {"min": 1, "max": 1}, "started": {"min": null, "max": null}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_reads_prometheus_with_app_name_from_a_yaml_file() {
    let lab = Lab::start().await.unwrap_or_else(|e| panic!("{e}"));
    lab.exporter
        .set("queue_depth", &[("app", "worker-app")], 42.0);
    lab.exporter.set("queue_depth", &[("app", "other")], 1000.0);
    lab.prometheus
        .wait_for_values("queue_depth{app='worker-app'}", &["42"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_file(
        dir.path(),
        "fly-autoscaler.yml",
        "app-name: worker-app\n\
         started-machine-count: \"ceil(queue_depth / 10)\"\n\
         metric-collectors:\n\
         \x20 - type: prometheus\n\
         \x20   metric-name: queue_depth\n\
         \x20   address: ${PROM_URL}\n\
         \x20   query: sum(queue_depth{app='$APP_NAME'})\n",
    );
    let (status, out, err) = run(fas()
        .arg("eval")
        .arg("-config")
        .arg(&path)
        .env("PROM_URL", lab.prometheus.url()));
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"created": {"min": null, "max": null}, "started": {"min": 5, "max": 5}})
    );

    // The app `nobody` scaled on `query` over no series, evaluated with `--config`.
    let eval_nobody = |query: &str| {
        let yaml = format!(
            "app-name: nobody\nstarted-machine-count: queue_depth\nmetric-collectors:\n  - type: prometheus\n    metric-name: queue_depth\n    address: {}\n    query: {query}\n",
            lab.prometheus.url()
        );
        let path = common::write_file(dir.path(), "fly-autoscaler.yml", &yaml);
        run(fas().arg("eval").arg("--config").arg(&path))
    };
    // A sum over no series is 0 (an empty vector from Prometheus: nothing to add up).
    let (status, out, err) = eval_nobody("sum(queue_depth{app='$APP_NAME'})");
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["started"], json!({"min": 0, "max": 0}));

    // A query without a natural zero that matches nothing: the Go tool's message, exit 1.
    let (status, _, err) = eval_nobody("queue_depth{app='$APP_NAME'}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("ERROR: metrics collection failed: collect metric (\"queue_depth\"): "),
        "{err}"
    );
}

#[test]
fn validation_errors_use_the_go_messages() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "ERROR: app name required\n"),
        (
            &[("FAS_APP_NAME", "a")],
            "ERROR: must define either created machine count or started machine count\n",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_CREATED_MACHINE_COUNT", "1"),
                ("FAS_MIN_CREATED_MACHINE_COUNT", "1"),
            ],
            "ERROR: cannot define created machine count and min/max created machine count\n",
        ),
        (
            &[("FAS_APP_NAME", "a"), ("FAS_MIN_STARTED_MACHINE_COUNT", "1")],
            "ERROR: max started machine count required if min started machine count is defined\n",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_CREATED_MACHINE_COUNT", "1"),
                ("FAS_INITIAL_MACHINE_STATE", "suspended"),
            ],
            "ERROR: initial machine state must be either 'started' or 'stopped'\n",
        ),
        (
            &[("FAS_APP_NAME", "a"), ("FAS_CREATED_MACHINE_COUNT", "1")],
            "ERROR: cannot create fly client: api token required\n",
        ),
        (
            &[
                ("FAS_APP_NAME", "a-*"),
                ("FAS_CREATED_MACHINE_COUNT", "1"),
                ("FAS_API_TOKEN", "t"),
            ],
            "ERROR: cannot initialize reconciler pool: organization required if app name uses a wildcard\n",
        ),
        (
            &[("FAS_INTERVAL", "15")],
            "ERROR: cannot parse FAS_INTERVAL as duration: \"15\"\n",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_CREATED_MACHINE_COUNT", "1"),
                ("FAS_PROMETHEUS_ADDRESS", "http://127.0.0.1:1"),
                ("FAS_PROMETHEUS_METRIC_NAME", "x"),
            ],
            "ERROR: metric-collectors[0]: prometheus query required\n",
        ),
    ];
    for (env, want) in cases {
        let (status, _, err) = run(fas().arg("serve").envs(env.iter().copied()));
        assert_eq!(status.code(), Some(1), "{env:?}: {err}");
        // The JSON log lines come first; the error is the last line.
        let last = err.lines().last().unwrap_or("").to_owned() + "\n";
        assert_eq!(&last, want, "{env:?}");
    }
}

#[test]
fn an_expression_with_an_unknown_variable_fails_at_start() {
    let (status, _, err) = run(fas()
        .arg("serve")
        .env("FAS_APP_NAME", "a")
        .env("FAS_API_TOKEN", "t")
        .env("FAS_CREATED_MACHINE_COUNT", "queue_depth + 1"));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("queue_depth"), "{err}");
}

#[test]
fn version_help_and_unknown_commands() {
    let (status, out, _) = run(fas().arg("version"));
    assert!(status.success());
    assert!(out.starts_with("fly-autoscaler "), "{out}");

    let (status, out, _) = run(fas().arg("help"));
    assert_eq!(status.code(), Some(0), "asking for help is not an error");
    assert!(
        out.contains("fly-autoscaler <command> [arguments]"),
        "{out}"
    );

    let (status, _, err) = run(fas().arg("frobnicate"));
    assert_eq!(status.code(), Some(1));
    assert_eq!(err, "ERROR: fly-autoscaler frobnicate: unknown command\n");

    let (status, _, err) = run(fas().args(["serve", "-config", "/nonexistent/fas.yml"]));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("/nonexistent/fas.yml"), "{err}");
}
