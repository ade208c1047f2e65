//! Regression tests for what the benchmark and soak runs found in `FlyScaler` (BENCHMARKS.md,
//! "Chaos soak" and "Engine against the fake Machines API"), each over real HTTP against the
//! fake Machines API:
//! - a machine created to start lists as `created` before `starting`, and consecutive ticks
//!   must not start another machine in that window;
//! - creates must not fetch the template machine again (the tick's list already has it);
//! - a create answered 429 is retried (it was not executed), a 503 is not;
//! - a failed destroy whose lease release also failed must not block the machine for long.

mod common;

use std::time::Duration;

use common::{app_config, client, eventually, seed_app, server};
use fleetscale_core::plan::{plan_actions, Action, ActionKind, Plan, PlanOptions};
use fleetscale_core::{Bounds, Destination, InitialState, MachineState, Scaler, Targets};
use fleetscale_fly::fake::{Delays, FakeConfig, FakeFly, FakeFlyServer};
use fleetscale_fly::types::{CreateMachineRequest, StopRequest};
use fleetscale_fly::{FlyScaler, FlyScalerConfig, FlyState, MachinesClient};

const APP: &str = "web";

async fn wait_state(fake: &FakeFly, id: &str, state: FlyState) {
    eventually(&format!("{id} {state}"), || async {
        fake.state(APP, id) == Some(state.clone())
    })
    .await;
}

async fn add_machine(c: &MachinesClient) -> String {
    c.create_machine(
        APP,
        &CreateMachineRequest {
            config: app_config(None),
            region: Some("ams".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id
}

/// One engine-like tick: list, plan with the core planner (started creates), execute.
async fn tick(s: &FlyScaler, targets: &Targets) -> Plan {
    let inventory = s.list().await.unwrap();
    let options = PlanOptions {
        capabilities: s.capabilities(),
        initial_state: InitialState::Started,
        ..PlanOptions::default()
    };
    let plan = plan_actions(&inventory, targets, &options);
    for action in &plan.actions {
        match action {
            Action::Create { request, .. } => {
                s.create(request).await.unwrap();
            }
            Action::Start { id, .. } => s.start(id).await.unwrap(),
            Action::Stop { id, .. } => s.stop(id).await.unwrap(),
            Action::Destroy { id, .. } => s.destroy(id).await.unwrap(),
        }
    }
    plan
}

/// fly-autoscaler's usual policy: `created = load + 1`, `started = load`.
fn targets(load: u32) -> Targets {
    Targets {
        created: Bounds::exactly(load + 1),
        started: Bounds::exactly(load),
    }
}

/// The soak's deterministic recipe: 2 started + 1 stopped machines, load 2 → 4, passes back to
/// back while the new machines still list as `created` (here for 30 s).
async fn two_started_one_stopped(fake_delays_after: Delays) -> (FakeFlyServer, FlyScaler) {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, None).await.id;
    let second = add_machine(&c).await;
    let third = add_machine(&c).await;
    for id in [&first, &second, &third] {
        wait_state(srv.fake(), id, FlyState::Started).await;
    }
    c.stop_machine(APP, &third, &StopRequest::default(), None)
        .await
        .unwrap();
    wait_state(srv.fake(), &third, FlyState::Stopped).await;
    srv.fake().set_delays(fake_delays_after);
    let s = FlyScaler::new(c, FlyScalerConfig::new(APP)).unwrap();
    (srv, s)
}

fn slow_launch() -> Delays {
    Delays {
        create: Duration::from_secs(30),
        ..Delays::uniform(Duration::from_millis(20))
    }
}

/// Machines the fake will have running once every transition in flight ends. No machine of
/// these tests is created with `skip_launch`, so every `created` one is launching.
fn heading_to_started(fake: &FakeFly) -> usize {
    fake.machines(APP)
        .iter()
        .filter(|m| {
            m.state.to_core().destination() == Destination::Started || m.state == FlyState::Created
        })
        .count()
}

#[tokio::test]
async fn consecutive_ticks_never_start_another_machine_while_a_started_create_lists_created() {
    let (srv, s) = two_started_one_stopped(slow_launch()).await;
    let fake = srv.fake();
    fake.clear_request_log();

    let p1 = tick(&s, &targets(4)).await;
    assert_eq!(p1.count(ActionKind::Create), 2, "{:?}", p1.actions);
    assert_eq!(p1.count(ActionKind::Start), 0, "{:?}", p1.actions);
    // The new machines stay `created` for 30 s: every tick below runs in that window.
    for _ in 0..3 {
        let p = tick(&s, &targets(4)).await;
        assert!(
            p.is_empty(),
            "launching creates count as started: {:?}",
            p.actions
        );
    }
    assert_eq!(fake.count_requests("POST", "/start"), 0, "no start at all");
    assert_eq!(fake.count_requests("POST", "/machines"), 2);
    let states: Vec<String> = fake
        .machines(APP)
        .iter()
        .map(|m| m.state.as_str().to_owned())
        .collect();
    assert_eq!(
        heading_to_started(fake),
        4,
        "4 started once everything settles: {states:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_launch_that_never_happens_is_counted_as_created_again_after_the_grace_time() {
    let (srv, s) = two_started_one_stopped(slow_launch()).await;
    let s = FlyScaler::new(
        s.client().clone(),
        FlyScalerConfig {
            launch_grace: Duration::from_millis(300),
            ..FlyScalerConfig::new(APP)
        },
    )
    .unwrap();
    let p1 = tick(&s, &targets(4)).await;
    assert_eq!(p1.count(ActionKind::Create), 2);
    let listed = s.list().await.unwrap();
    let starting = listed
        .iter()
        .filter(|m| m.state == MachineState::Starting)
        .count();
    assert_eq!(
        starting, 2,
        "launching creates are starting within the grace time"
    );
    assert!(listed
        .iter()
        .filter(|m| m.state == MachineState::Starting)
        .all(|m| m.labels.get("fly_state").map(String::as_str) == Some("created")));
    // Still `created` after the grace time (the fake launches only after 30 s): they are
    // never-started machines again and the planner may start them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed = s.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|m| m.state == MachineState::Created)
            .count(),
        2
    );
    let p2 = tick(&s, &targets(4)).await;
    assert_eq!(p2.count(ActionKind::Start), 2, "{:?}", p2.actions);
    srv.shutdown().await;
}
