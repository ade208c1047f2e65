//! End to end: the built `fly-autoscaler`, configured only with `FAS_*` variables whose metric
//! comes from `FAS_TEMPORAL_*`, scaling an app on the fake Machines API from a count of running
//! Temporal workflow executions:
//! - from the fake Temporal frontend over mutual TLS with a test CA (scale out, cap, scale in,
//!   hold while Temporal is unreachable);
//! - from the real Temporal dev server (workflows started and terminated with the Temporal CLI);
//! - `eval` from a YAML `type: temporal` collector, and the Go tool's start-up errors.

mod common;

use std::time::Duration;

use common::{eventually, run, Proc};
use fleetscale_fly::FlyState;
use fleetscale_metrics::harness::temporal::ExecutionStatus;
use fleetscale_metrics::harness::{FakeTemporal, TemporalDevServer, TestPki};
use fleetscale_metrics::temporal::COUNT_PATH;

const TOKEN: &str = "FlyV1 fm2_temporal-e2e";

fn machines(fake: &fleetscale_fly::fake::FakeFly, app: &str) -> (usize, usize) {
    let ms = fake.machines(app);
    let live: Vec<_> = ms
        .iter()
        .filter(|m| m.state != FlyState::Destroyed)
        .collect();
    let started = live.iter().filter(|m| m.state == FlyState::Started).count();
    (live.len(), started)
}

/// `fly-autoscaler serve` scaling `app` to the running workflows of its task queue in the
/// namespace `ns` of the Temporal frontend at `address`, at least 1 and at most `cap`.
fn serve_on_workflows(
    fly_url: &str,
    app: &str,
    cap: usize,
    address: &str,
    ns: &str,
) -> std::process::Command {
    let mut cmd = common::fas_serve(fly_url, app, TOKEN);
    cmd.env(
        "FAS_CREATED_MACHINE_COUNT",
        format!("min(max(workflow_count, 1), {cap})"),
    )
    .env("FAS_INTERVAL", "300ms")
    .env("FAS_TEMPORAL_ADDRESS", address)
    .env("FAS_TEMPORAL_NAMESPACE", ns)
    .env("FAS_TEMPORAL_METRIC_NAME", "workflow_count")
    .env("FAS_TEMPORAL_QUERY", "TaskQueue = '$APP_NAME'");
    cmd
}

/// Waits until `app` has `n` machines that are not destroyed.
async fn until_live(
    fly: &fleetscale_fly::fake::FakeFly,
    app: &str,
    n: usize,
    logs: impl Fn() -> String,
) {
    let what = format!("live machines of {app}");
    common::count_reaches(&what, || machines(fly, app).0, n, logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_on_running_workflows_over_mutual_tls() {
    const APP: &str = "temporal-app";
    const NS: &str = "jobs";
    let server = common::fake_fly_with_apps(TOKEN, &[APP]).await;
    let fly = server.fake().clone();

    let pki = TestPki::new().unwrap();
    let temporal = FakeTemporal::start_with(Some(pki.server_tls(true))).unwrap();
    temporal.add_namespace(NS);
    // Another app's workflows and finished ones are never counted.
    temporal.start_workflow(NS, "other-1", "render", "other-app");
    temporal.start_workflow(NS, "done-1", "render", APP);
    temporal.set_status(NS, "done-1", ExecutionStatus::Completed);

    let mut cmd = serve_on_workflows(&server.url(), APP, 6, &temporal.localhost_port(), NS);
    cmd.env("FAS_TIMEOUT", "2s")
        .env("FAS_TEMPORAL_CERT_DATA", &pki.client_cert_pem)
        .env("FAS_TEMPORAL_KEY_DATA", &pki.client_key_pem)
        .env("FAS_TEMPORAL_CA_DATA", &pki.ca_pem);
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();

    // No running workflow of this app: the one machine stays.
    eventually(
        "a count of 0 read",
        || (!temporal.calls_to(COUNT_PATH).is_empty()).then_some(()),
        &logs,
    )
    .await;
    assert_eq!(machines(&fly, APP).0, 1, "{}", logs());

    for i in 0..3 {
        temporal.start_workflow(NS, &format!("job-{i}"), "render", APP);
    }
    eventually(
        "3 machines",
        || (machines(&fly, APP) == (3, 3)).then_some(()),
        &logs,
    )
    .await;

    for i in 3..9 {
        temporal.start_workflow(NS, &format!("job-{i}"), "render", APP);
    }
    until_live(&fly, APP, 6, &logs).await;
    let seen = temporal.calls_to(COUNT_PATH).len();
    eventually(
        "four more reads",
        || (temporal.calls_to(COUNT_PATH).len() >= seen + 4).then_some(()),
        &logs,
    )
    .await;
    assert_eq!(machines(&fly, APP).0, 6, "never past the cap\n{}", logs());

    // Work finishes: 2 running left, so 2 machines.
    for i in 0..7 {
        temporal.set_status(NS, &format!("job-{i}"), ExecutionStatus::Completed);
    }
    until_live(&fly, APP, 2, &logs).await;

    // Temporal stops answering in time: the count is held, nothing is scaled in.
    temporal.set_delay(Some(Duration::from_secs(60)));
    for i in 7..9 {
        temporal.set_status(NS, &format!("job-{i}"), ExecutionStatus::Completed);
    }
    let failed = |p: &Proc| {
        p.stderr_lines()
            .iter()
            .filter(|l| l.contains("workflow_count") && l.contains("timed out"))
            .count()
    };
    eventually(
        "three failed reads",
        || (failed(&proc) >= 3).then_some(()),
        &logs,
    )
    .await;
    assert_eq!(
        machines(&fly, APP).0,
        2,
        "a failed metric never scales in\n{}",
        logs()
    );

    // What crossed the wire: the Go tool's query, the namespace header, over mutual TLS.
    let call = temporal.calls_to(COUNT_PATH).remove(0);
    assert_eq!(
        call.query,
        "ExecutionStatus=\"Running\" AND (TaskQueue = 'temporal-app')"
    );
    assert_eq!(call.namespace, NS);
    assert_eq!(call.namespace_header.as_deref(), Some(NS));
    // The key never reaches the logs.
    let key_body = pki.client_key_pem.lines().nth(1).unwrap().to_owned();
    assert!(!logs().contains(&key_body), "client key in the logs");

    proc.stop_cleanly("TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_on_the_real_temporal_server() {
    const APP: &str = "real-temporal-app";
    const NS: &str = "scaling";
    let temporal = TemporalDevServer::start(&[NS])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let server = common::fake_fly_with_apps(TOKEN, &[APP]).await;
    let fly = server.fake().clone();

    let proc = Proc::spawn(serve_on_workflows(
        &server.url(),
        APP,
        5,
        &temporal.host_port(),
        NS,
    ));
    let stderr = proc.stderr.clone();
    let t = &temporal;
    let logs = move || {
        format!(
            "{}\n--- temporal ---\n{}",
            stderr.lock().unwrap().join("\n"),
            t.log()
        )
    };

    for i in 0..4 {
        temporal
            .start_workflow(NS, &format!("wf-{i}"), "ingest", APP)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    until_live(&fly, APP, 4, &logs).await;
    for i in 0..3 {
        temporal
            .terminate_workflow(NS, &format!("wf-{i}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    until_live(&fly, APP, 1, &logs).await;
    assert_eq!(
        temporal
            .count(NS, "ExecutionStatus = 'Running'")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        1
    );
    drop(proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_reads_a_yaml_temporal_collector() {
    let temporal = FakeTemporal::start().unwrap();
    for (id, queue) in [
        ("a", "yaml-app"),
        ("b", "yaml-app"),
        ("c", "yaml-app"),
        ("d", "elsewhere"),
    ] {
        temporal.start_workflow("default", id, "my_workflow_type", queue);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_file(
        dir.path(),
        "fly-autoscaler.yml",
        "app-name: yaml-app\n\
         created-machine-count: \"workflow_count * 2\"\n\
         metric-collectors:\n\
         \x20 - type: temporal\n\
         \x20   metric-name: workflow_count\n\
         \x20   address: ${TEMPORAL_ADDR}\n\
         \x20   namespace: default\n\
         \x20   query: 'WorkflowType=\"my_workflow_type\" AND TaskQueue=\"$APP_NAME\"'\n",
    );
    let mut cmd = common::fas();
    cmd.env("TEMPORAL_ADDR", temporal.host_port())
        .args(["eval", "-config"])
        .arg(&path);
    let (status, out, err) = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    assert!(status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"]["min"], 6, "{out}");
    assert_eq!(
        temporal.calls_to(COUNT_PATH)[0].query,
        "ExecutionStatus=\"Running\" AND (WorkflowType=\"my_workflow_type\" AND TaskQueue=\"yaml-app\")"
    );
}

#[test]
fn start_up_errors_are_the_go_tools() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("FAS_TEMPORAL_ADDRESS", "localhost:7233"), ("FAS_TEMPORAL_METRIC_NAME", "w")],
            "ERROR: cannot create metrics collectors: metric collector[0]: temporal namespace required",
        ),
        (
            &[("FAS_TEMPORAL_ADDRESS", "localhost:7233"), ("FAS_TEMPORAL_NAMESPACE", "default")],
            "ERROR: metric-collectors[0]: metric name required",
        ),
        (
            &[
                ("FAS_TEMPORAL_ADDRESS", "localhost:7233"),
                ("FAS_TEMPORAL_NAMESPACE", "default"),
                ("FAS_TEMPORAL_METRIC_NAME", "w"),
                ("FAS_TEMPORAL_KEY_DATA", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"),
            ],
            "ERROR: cannot create metrics collectors: metric collector[0]: tls: failed to find any PEM data in certificate input",
        ),
    ];
    for (vars, want) in cases {
        let mut cmd = common::fas();
        cmd.env("FAS_APP_NAME", "a")
            .env("FAS_API_TOKEN", TOKEN)
            .env("FAS_CREATED_MACHINE_COUNT", "1")
            .env("FAS_METRICS_ADDR", "127.0.0.1:0")
            .envs(vars.iter().copied())
            .arg("serve");
        let (status, _out, err) = run(cmd);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.lines().any(|l| l == want), "wanted {want:?} in\n{err}");
        assert!(!err.contains("AAAA"), "key material in the error:\n{err}");
    }
}
