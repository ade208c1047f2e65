//! End to end: the built `fly-autoscaler serve` and its deploy guard against the fake Machines
//! API and the fake's GraphQL endpoint (`FLY_API_BASE_URL`). While the app's current release is
//! `running` nothing is done and the Go tool's warning is logged; while the release check fails
//! nothing is done either ("get current release failed"); once the deploy completes the app
//! scales to the constant target.

mod common;

use common::{eventually, Proc};
use fleetscale_fly::fake::{Fault, FaultKind};

const APP: &str = "deploying-app";
const TOKEN: &str = "FlyV1 fm2_guard-token";

fn lines_with(p: &Proc, msg: &str) -> Vec<serde_json::Value> {
    p.json_logs()
        .into_iter()
        .filter(|l| l["msg"] == msg)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_scaling_while_a_release_is_running() {
    let server = common::fake_fly_with_apps(TOKEN, &[APP]).await;
    let fake = server.fake().clone();
    assert!(fake.set_release_status(APP, Some("running")));

    let mut proc = Proc::spawn(
        common::fas_serve(&server.url(), APP, TOKEN)
            .env("FAS_CREATED_MACHINE_COUNT", "3")
            .env("FAS_INTERVAL", "300ms"),
    );
    let logs = proc.stderr_reader();

    // 1. A deploy is running: several ticks, each skipped with the Go tool's warning.
    proc.await_logs("release in progress, skipping reconciliation", 3)
        .await;
    for l in lines_with(&proc, "release in progress, skipping reconciliation") {
        assert_eq!(l["level"], "WARN", "{l}");
        assert_eq!(l["app"], APP, "{l}");
    }
    assert_eq!(
        fake.machines(APP).len(),
        1,
        "no create during a deploy\n{}",
        logs()
    );
    assert_eq!(
        fake.count_requests("POST", &format!("/v1/apps/{APP}/machines")),
        1,
        "only the seeding create"
    );
    assert!(
        lines_with(&proc, "reconciling").is_empty(),
        "nothing reconciled\n{}",
        logs()
    );
    assert!(fake.count_requests("POST", "/graphql") >= 3);

    // The metrics: skipped ticks count no reconcile (as in the Go tool), but are visible.
    let serving = lines_with(&proc, "serving metrics");
    let addr = serving[0]["addr"].as_str().unwrap().to_owned();
    let page = common::get_text(&format!("http://{addr}/metrics")).await;
    let value = |page: &str, series: &str| -> f64 {
        page.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("{series} missing from\n{page}"))
    };
    for status in ["create", "destroy", "start", "stop", "no_scale"] {
        assert_eq!(
            value(
                &page,
                &format!("fas_reconcile_count{{status=\"{status}\"}} ")
            ),
            0.0,
            "{status}"
        );
    }
    assert!(
        value(
            &page,
            &format!("fleetscale_ticks_total{{target=\"{APP}\",status=\"paused\"}} ")
        ) >= 3.0
    );

    // 2. The deploy completed but the release check fails: still nothing done, an ERROR each
    //    tick (a 400 is not retried, so one fault per tick).
    fake.inject(
        Fault::new(FaultKind::Status {
            status: 400,
            body: r#"{"errors":[{"message":"injected failure"}]}"#.into(),
        })
        .path("/graphql")
        .times(1_000),
    );
    assert!(fake.set_release_status(APP, Some("complete")));
    proc.await_logs("get current release failed", 2).await;
    let failed = lines_with(&proc, "get current release failed");
    assert_eq!(failed[0]["level"], "ERROR", "{}", failed[0]);
    assert_eq!(failed[0]["app"], APP);
    assert!(
        failed[0]["err"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{}",
        failed[0]
    );
    assert_eq!(
        fake.machines(APP).len(),
        1,
        "no create without a release check"
    );

    // 3. The check works again and the release is complete: the app scales to 3.
    fake.clear_faults();
    common::machines_reach(&fake, APP, 3, &logs).await;
    // The fake sees a machine before this test's reader has the process's log line (it logs
    // after the effect, and its stderr is read by another thread), so the lines are awaited.
    proc.await_logs("reconciling", 1).await;
    let completed = eventually(
        "the bulk create logged",
        || lines_with(&proc, "bulk create completed").first().cloned(),
        &logs,
    )
    .await;
    assert_eq!(completed["n"], 2, "{completed}");
    // And stays there: a few more ticks, no overshoot.
    proc.await_more_logs("reconciling", 3).await;
    assert_eq!(fake.machines(APP).len(), 3, "{}", logs());

    proc.stop_cleanly("TERM");
}
