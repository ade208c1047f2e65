//! End to end: the built `fly-autoscaler serve`, configured only with `FAS_*` variables,
//! against the fake Machines API and a real Prometheus that scrapes the fake's
//! `fly_instance_up` series: Fly's "Autoscale Machines" blueprint
//! (`min(running_machines + 1, 10)`, machines created stopped) keeps exactly one spare
//! machine, follows the proxy starting spares, and never goes past 10.

mod common;

use common::{eventually, Proc};
use fleetscale_fly::FlyState;

const APP: &str = "blueprint-app";
const TOKEN: &str = "FlyV1 fm2_e2e-token";

fn counts(fake: &fleetscale_fly::fake::FakeFly) -> (usize, usize, Vec<String>) {
    let ms = fake.machines(APP);
    let started = ms.iter().filter(|m| m.state == FlyState::Started).count();
    let spare: Vec<String> = ms
        .iter()
        .filter(|m| matches!(m.state, FlyState::Created | FlyState::Stopped))
        .map(|m| m.id.clone())
        .collect();
    (ms.len(), started, spare)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprint_keeps_one_spare_and_stops_at_ten() {
    let (server, prometheus) = common::blueprint_world(APP, TOKEN).await;
    let fake = server.fake().clone();
    let mut proc = Proc::spawn(common::blueprint_serve(&server, &prometheus, APP, TOKEN));
    let logs = proc.stderr_reader();

    // 1 started machine: exactly one extra machine, created stopped.
    let spare = eventually(
        "one spare machine",
        || {
            let (total, started, spare) = counts(&fake);
            (total == 2 && started == 1 && spare.len() == 1).then(|| spare[0].clone())
        },
        &logs,
    )
    .await;
    // It stays exactly one while nothing changes: several more ticks, no new machine.
    proc.await_more_logs("reconciling", 4).await;
    assert_eq!(counts(&fake).0, 2, "no overshoot while idle\n{}", logs());

    // The proxy starts the spare: another stopped machine appears; repeat up to the cap.
    let mut next = spare;
    for expected_total in 3..=10 {
        assert!(
            fake.proxy_autostart(APP, &next),
            "proxy could not start {next}"
        );
        next = eventually(
            &format!("{expected_total} machines with one spare"),
            || {
                let (total, started, spare) = counts(&fake);
                assert!(total <= 10, "more than 10 machines: {total}\n{}", logs());
                (total == expected_total && started == expected_total - 1 && spare.len() == 1)
                    .then(|| spare[0].clone())
            },
            &logs,
        )
        .await;
    }
    // All 10 running: the target is min(10 + 1, 10) = 10, so nothing more is created.
    assert!(fake.proxy_autostart(APP, &next));
    prometheus
        .wait_for_values(&format!("count(fly_instance_up{{app='{APP}'}})"), &["10"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proc.await_more_logs("reconciling", 4).await;
    let (total, started, _) = counts(&fake);
    assert_eq!((total, started), (10, 10), "never more than 10\n{}", logs());

    // Log lines: slog's JSON shape, no time, the Go tool's messages and attributes.
    let json = proc.json_logs();
    assert!(!json.is_empty());
    for l in &json {
        assert!(l.get("time").is_none(), "{l}");
        assert!(l["level"].is_string() && l["msg"].is_string(), "{l}");
    }
    let find = |msg: &str| json.iter().find(|l| l["msg"] == msg).cloned();
    let r = find("reconciling").expect("reconciling line");
    assert_eq!(r["app"], APP);
    assert!(
        r["current"]["started"].is_u64() && r["current"]["stopped"].is_u64(),
        "{r}"
    );
    assert!(r["target"]["created"]["min"].is_u64(), "{r}");
    let c = find("machine created").expect("machine created line");
    assert!(c["id"].is_string() && c["region"] == "iad", "{c}");
    assert!(find("begin bulk create").is_some());
    let b = find("bulk create completed").expect("bulk completed line");
    assert_eq!(b["n"], 1);
    let init = find("reconciler pool initialized, beginning loop").expect("init line");
    assert_eq!(init["interval"], "500ms");
    assert_eq!(init["timeout"], "30s");
    assert_eq!(init["created"], "min(running_machines + 1, 10)");
    assert!(find("connected to fly").is_some());
    let serving = find("serving metrics").expect("serving metrics line");

    // /metrics on the address it logged: the Go tool's names.
    let addr = serving["addr"].as_str().unwrap().to_owned();
    let page = common::get_text(&format!("http://{addr}/metrics")).await;
    let value = |series: &str| -> f64 {
        page.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("{series} missing from\n{page}"))
    };
    assert!(value("fas_reconcile_count{status=\"create\"} ") >= 9.0);
    assert!(value("fas_reconcile_count{status=\"no_scale\"} ") >= 8.0);
    assert_eq!(
        value("fleetscale_machine_actions_total{target=\"blueprint-app\",action=\"create\",status=\"ok\"} "),
        9.0
    );
    assert_eq!(value("fas_machine_start_count{status=\"ok\"} "), 0.0);
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The status page on the same port (rendered in Chromium by tests/status_page.rs).
    let status = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(status.status(), 200);
    assert!(status.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = status.text().await.unwrap();
    assert!(
        html.contains("<title>fly-autoscaler status</title>"),
        "{html}"
    );
    assert!(html.contains("data-target=\"blueprint-app\""), "{html}");
    assert!(
        html.contains("<dd data-count=\"created\">10</dd>"),
        "{html}"
    );

    // Every create cloned the first machine with skip_launch, one POST per machine.
    assert_eq!(
        fake.count_requests("POST", "/v1/apps/blueprint-app/machines"),
        10
    );

    // SIGTERM: graceful shutdown with the Go tool's message, exit status 0.
    proc.stop_cleanly("TERM");
    assert!(
        proc.json_logs()
            .iter()
            .any(|l| l["msg"] == "signal received, shutting down"),
        "{}",
        logs()
    );
}

/// A wildcard app name with an organization: every matching app is scaled, others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_scales_every_matching_app_of_the_org() {
    let server = common::fake_fly_with_apps(TOKEN, &["wild-1", "wild-2", "tame"]).await;
    let fake = server.fake().clone();
    let mut proc = Proc::spawn(
        // No command word: serving is the default.
        common::fas_on(&server.url(), "wild-*", TOKEN)
            .env("FAS_ORG", "my-org")
            .env("FAS_CONCURRENCY", "2")
            .env("FAS_CREATED_MACHINE_COUNT", "2")
            .env("FAS_INTERVAL", "500ms"),
    );
    let logs = proc.stderr_reader();
    eventually(
        "2 machines in each wild app",
        || (fake.machines("wild-1").len() == 2 && fake.machines("wild-2").len() == 2).then_some(()),
        &logs,
    )
    .await;
    assert_eq!(fake.machines("tame").len(), 1, "{}", logs());
    let reconciled = || -> std::collections::BTreeSet<String> {
        proc.json_logs()
            .iter()
            .filter(|l| l["msg"] == "reconciling")
            .filter_map(|l| l["app"].as_str().map(str::to_owned))
            .collect()
    };
    // The log is read on another thread: a line written before the effect seen above may
    // not have been read yet, so wait for both apps' lines before comparing.
    eventually(
        "both wild apps logged as reconciling",
        || {
            let apps = reconciled();
            (apps.contains("wild-1") && apps.contains("wild-2")).then_some(())
        },
        &logs,
    )
    .await;
    assert_eq!(
        reconciled().into_iter().collect::<Vec<_>>(),
        vec!["wild-1".to_owned(), "wild-2".to_owned()]
    );
    proc.stop_cleanly("INT");
}
