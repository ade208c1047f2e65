//! The purpose of Fly's "Autoscale Machines" blueprint at low traffic, end to end: the built
//! `fly-autoscaler serve` with the blueprint's exact configuration (FAS_* variables only:
//! `count(fly_instance_up{app='$APP_NAME'})`, `min(running_machines + 1, 10)`, new machines
//! stopped), the fake Machines API, and a real Prometheus scraping the fake's
//! `fly_instance_up` series (one per started machine, as on Fly).
//!
//! Evening: the proxy has started spares, the app has grown. Night: the proxy stops every
//! machine; no `fly_instance_up` series is left, Prometheus answers an empty vector for the
//! count, and the app must come down to ONE stopped spare, never zero. Morning: the proxy
//! starts that machine and the autoscaler creates the next spare.

mod common;

use common::{eventually, Proc};
use fleetscale_fly::FlyState;

const APP: &str = "night-app";
const TOKEN: &str = "FlyV1 fm2_night-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_night_the_app_comes_down_to_one_stopped_spare_and_grows_again_in_the_morning() {
    let (server, prometheus) = common::blueprint_world(APP, TOKEN).await;
    let fake = server.fake().clone();
    let proc = Proc::spawn(common::blueprint_serve(&server, &prometheus, APP, TOKEN));
    let logs = proc.stderr_reader();
    let spares = |fake: &fleetscale_fly::fake::FakeFly| -> Vec<String> {
        fake.machines(APP)
            .iter()
            .filter(|m| matches!(m.state, FlyState::Created | FlyState::Stopped))
            .map(|m| m.id.clone())
            .collect()
    };

    // Day into evening: the proxy starts each new spare; the app grows to 4 machines, 3 of
    // them running and one spare.
    let mut next = eventually(
        "a first spare",
        || {
            spares(&fake)
                .first()
                .cloned()
                .filter(|_| fake.machines(APP).len() == 2)
        },
        &logs,
    )
    .await;
    for total in 3..=4 {
        assert!(fake.proxy_autostart(APP, &next), "proxy start {next}");
        next = eventually(
            &format!("{total} machines with one spare"),
            || {
                let s = spares(&fake);
                (fake.machines(APP).len() == total && s.len() == 1).then(|| s[0].clone())
            },
            &logs,
        )
        .await;
    }

    // Night: the proxy stops every running machine. Every machine is now a stopped spare;
    // the count has no series to count.
    for m in fake.machines(APP) {
        if m.state == FlyState::Started {
            assert!(fake.proxy_autostop(APP, &m.id), "proxy stop {}", m.id);
        }
    }
    let mut fewest = usize::MAX;
    let survivor = eventually(
        "the app down to one stopped machine",
        || {
            let ms: Vec<_> = fake
                .machines(APP)
                .into_iter()
                .filter(|m| m.state != FlyState::Destroyed)
                .collect();
            fewest = fewest.min(ms.len());
            assert!(!ms.is_empty(), "the app has no machine left\n{}", logs());
            (ms.len() == 1 && matches!(ms[0].state, FlyState::Stopped | FlyState::Created))
                .then(|| ms[0].id.clone())
        },
        &logs,
    )
    .await;
    assert_eq!(fewest, 1, "never fewer than one machine");
    // It stays at one while the night lasts: several more ticks, nothing created or destroyed.
    proc.await_more_logs("reconciling", 4).await;
    let night: Vec<_> = fake
        .machines(APP)
        .into_iter()
        .filter(|m| m.state != FlyState::Destroyed)
        .collect();
    assert_eq!(night.len(), 1, "one stopped spare all night\n{}", logs());
    // The night's ticks were decisions, not failures: the empty count is a count of 0.
    let json = proc.json_logs();
    assert!(
        !json.iter().any(|l| l["msg"] == "metrics collection failed"),
        "{}",
        logs()
    );
    let night_targets: Vec<u64> = json
        .iter()
        .filter(|l| l["msg"] == "reconciling" && l["current"]["started"] == 0)
        .filter_map(|l| l["target"]["created"]["min"].as_u64())
        .collect();
    // (The first night ticks may still see the evening's count: Prometheus scrapes every
    // few hundred milliseconds.)
    assert!(
        night_targets.iter().rev().take(4).all(|&n| n == 1) && night_targets.len() >= 4,
        "night targets {night_targets:?}"
    );
    assert!(
        json.iter().any(|l| l["msg"] == "machine destroyed"),
        "{}",
        logs()
    );

    // Morning: the proxy starts the survivor; a new spare is created.
    assert!(fake.proxy_autostart(APP, &survivor));
    eventually(
        "a new spare in the morning",
        || {
            let live = fake
                .machines(APP)
                .into_iter()
                .filter(|m| m.state != FlyState::Destroyed)
                .count();
            (live == 2 && spares(&fake).len() == 1).then_some(())
        },
        &logs,
    )
    .await;
}
