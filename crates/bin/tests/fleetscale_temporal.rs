//! The built `fleetscale` with a `[[target.source]] type = "temporal"`: `eval` and `run` on a
//! TOML file, the source reading the fake Temporal frontend over mutual TLS with certificate
//! files, and the located error of a bad Temporal source.

mod common;

use common::{fleetscale, on_fly, run, Proc};
use fleetscale_metrics::harness::{FakeTemporal, TestPki};
use fleetscale_metrics::temporal::COUNT_PATH;

const TOKEN: &str = "FlyV1 fm2_fleetscale-temporal";
const APP: &str = "wf-app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_and_run_scale_on_a_temporal_source() {
    let server = common::fake_fly_with_apps(TOKEN, &[APP]).await;
    let fly = server.fake().clone();
    let pki = TestPki::new().unwrap();
    let temporal = FakeTemporal::start_with(Some(pki.server_tls(true))).unwrap();
    temporal.add_namespace("batch");
    for i in 0..3 {
        temporal.start_workflow("batch", &format!("w{i}"), "resize", APP);
    }
    temporal.start_workflow("batch", "x", "resize", "another-app");

    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("client.pem", &pki.client_cert_pem),
        ("client.key", &pki.client_key_pem),
    ] {
        common::write_file(dir.path(), name, pem);
    }
    let d = dir.path().display();
    let target = format!(
        r#"
# Unnamed: the target is the app, so `$APP_NAME` is `{APP}`.
[[target]]
backend = {{ type = "fly", app = "{APP}", token_env = "MY_FLY_TOKEN" }}

[target.policy]
created = "max(workflows, 1)"

[target.policy.limits]
created = {{ min = 1, max = 5 }}

[[target.source]]
type = "temporal"
name = "workflows"
address = "{addr}"
namespace = "batch"
query = "TaskQueue = '$APP_NAME'"
ca_file = "{d}/ca.pem"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
timeout = "3s"
"#,
        addr = temporal.localhost_port()
    );
    let text = common::engine_toml("300ms", "127.0.0.1:0") + &target;
    let path = common::write_file(dir.path(), "fleetscale.toml", &text);
    let fly_url = server.url();
    let eval = |config: &std::path::Path| {
        run(on_fly(
            fleetscale().args(["eval", "--config"]).arg(config),
            &fly_url,
            TOKEN,
        ))
    };

    let (status, out, err) = eval(&path);
    assert!(status.success(), "{out}\n{err}");
    assert!(
        out.contains("metric workflows = 3"),
        "{out}\n{:?}",
        temporal.calls()
    );
    assert!(out.contains("targets: created min 3 max 3"), "{out}");
    assert_eq!(fly.machines(APP).len(), 1, "eval changed nothing");
    assert_eq!(
        temporal.calls_to(COUNT_PATH)[0].query,
        "ExecutionStatus=\"Running\" AND (TaskQueue = 'wf-app')"
    );

    let proc = Proc::spawn(on_fly(
        fleetscale()
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path),
        &fly_url,
        TOKEN,
    ));
    common::machines_reach(&fly, APP, 3, proc.stderr_reader()).await;
    drop(proc);

    // A Temporal source without a namespace: the file, the line of the target, the message.
    let bad = common::write_file(
        dir.path(),
        "bad.toml",
        &text.replace("namespace = \"batch\"", "namespace = \"\""),
    );
    let (status, _, err) = eval(&bad);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(err.contains("temporal namespace required"), "{err}");
}
