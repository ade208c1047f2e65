//! `FlyScaler` as the engine drives it, over real HTTP against the fake Machines API:
//! - a machine created to start lists as `created` before `starting`: consecutive ticks must
//!   not start another machine in that window (the engine's pending creates), and after the
//!   deadline such a machine is started;
//! - a scale-up costs the tick's list and one `POST` per create (the template travels in the
//!   request), and a create reads its template only when the request does not carry it;
//! - a create answered 429 is retried (it was not executed), a 503 is not;
//! - a failed destroy whose lease release also failed does not block the machine for long.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    app_config, client, seed_app, server, server_with_delays, status_fault, wait_state, APP,
};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::{Action, ActionKind, Plan};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::{
    CreateRequest, Destination, Error, InitialState, Machine, MachineId, MachineState, Scaler,
    Scope,
};
use fleetscale_fly::fake::{Delays, FakeConfig, FakeFly, FakeFlyServer, Fault, FaultKind};
use fleetscale_fly::types::{CreateMachineRequest, StopRequest};
use fleetscale_fly::{FlyScaler, FlyScalerConfig, FlyState, MachinesClient};

async fn add_machine(c: &MachinesClient, group: Option<&str>) -> String {
    c.create_machine(
        APP,
        &CreateMachineRequest {
            config: app_config(group),
            region: Some("ams".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id
}

/// The engine ticking one Fly app with fixed targets and started creates.
struct Ticks {
    engine: Engine,
    target: TargetSpec,
}

impl Ticks {
    /// `created` machines, `started` of them running (`None`: no opinion).
    fn new(s: Arc<FlyScaler>, created: u32, started: Option<u32>, config: EngineConfig) -> Self {
        let count = |kind: &str, n: Option<u32>| {
            let n = n.map(|n| n.to_string());
            CountRule::from_settings(kind, n.as_deref(), None, None).unwrap()
        };
        let policy = Policy {
            created: count("created", Some(created)),
            started: count("started", started),
            ..Policy::default()
        };
        let target =
            TargetSpec::new(Scope::new(APP), s, policy).with_initial_state(InitialState::Started);
        Ticks {
            engine: Engine::new(config, Arc::new(Vec::<TargetSpec>::new())),
            target,
        }
    }

    /// One tick; its plan, with every action executed successfully.
    async fn tick(&self) -> Plan {
        let r = self.engine.tick(&self.target, false).await;
        assert!(r.outcomes.iter().all(|o| o.ok()), "{r:?}");
        let shown = format!("{r:?}");
        r.plan.unwrap_or_else(|| panic!("no plan: {shown}"))
    }
}

/// The soak's deterministic recipe: 2 started + 1 stopped machines, load 2 → 4 (fly-autoscaler's
/// usual policy: created = load + 1, started = load), ticks back to back while the new machines
/// still list as `created` (here for 30 s).
async fn two_started_one_stopped(fake_delays_after: Delays) -> (FakeFlyServer, Arc<FlyScaler>) {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, None).await.id;
    let second = add_machine(&c, None).await;
    let third = add_machine(&c, None).await;
    for id in [&first, &second, &third] {
        wait_state(srv.fake(), id, FlyState::Started).await;
    }
    c.stop_machine(APP, &third, &StopRequest::default(), None)
        .await
        .unwrap();
    wait_state(srv.fake(), &third, FlyState::Stopped).await;
    srv.fake().set_delays(fake_delays_after);
    let s = FlyScaler::new(c, FlyScalerConfig::new(APP)).unwrap();
    (srv, Arc::new(s))
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
    let ticks = Ticks::new(s, 5, Some(4), EngineConfig::default());

    let p1 = ticks.tick().await;
    assert_eq!(p1.count(ActionKind::Create), 2, "{:?}", p1.actions);
    assert_eq!(p1.count(ActionKind::Start), 0, "{:?}", p1.actions);
    // The new machines stay `created` for 30 s: every tick below runs in that window.
    for _ in 0..3 {
        let p = ticks.tick().await;
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
async fn a_launch_that_never_happens_is_counted_as_created_again_after_the_deadline() {
    let (srv, s) = two_started_one_stopped(slow_launch()).await;
    let ticks = Ticks::new(
        s.clone(),
        5,
        Some(4),
        EngineConfig::default().with_pending_create_timeout(Duration::from_millis(300)),
    );
    let p1 = ticks.tick().await;
    assert_eq!(p1.count(ActionKind::Create), 2);
    // The backend reports what the API says: `created`, with the raw Fly state as a label.
    let listed = s.list().await.unwrap();
    let created: Vec<&Machine> = listed
        .iter()
        .filter(|m| m.state == MachineState::Created)
        .collect();
    assert_eq!(created.len(), 2);
    assert!(created
        .iter()
        .all(|m| m.labels.get("fly_state").map(String::as_str) == Some("created")));
    // Within the deadline the engine counts them as starting.
    let record = ticks.engine.tick(&ticks.target, true).await;
    assert_eq!(record.counts.unwrap().started, 4, "{record:?}");
    // Still `created` after the deadline (the fake launches only after 30 s): they are
    // never-started machines again and the planner starts them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let p2 = ticks.tick().await;
    assert_eq!(p2.count(ActionKind::Start), 2, "{:?}", p2.actions);
    srv.shutdown().await;
}

/// `(list calls, GETs of one machine, create POSTs)` in the fake's request log.
fn calls(fake: &FakeFly) -> (usize, usize, usize) {
    let log = fake.request_log();
    let is_list = |p: &str| p.ends_with("/machines");
    (
        log.iter()
            .filter(|r| r.method == "GET" && is_list(&r.path))
            .count(),
        log.iter()
            .filter(|r| r.method == "GET" && r.path.contains("/machines/"))
            .count(),
        log.iter()
            .filter(|r| r.method == "POST" && is_list(&r.path))
            .count(),
    )
}

#[tokio::test]
async fn a_bulk_scale_up_costs_one_list_and_one_post_per_create() {
    for group in [Some("app"), None] {
        let (srv, c, first) = one_started(group).await;
        let fake = srv.fake();
        let s = Arc::new(FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap());
        fake.clear_request_log();
        let p = Ticks::new(s, 6, None, EngineConfig::default()).tick().await;
        assert_eq!(p.count(ActionKind::Create), 5);
        assert!(p.actions.iter().all(|a| matches!(a,
            Action::Create { request, .. } if request.template_id().map(MachineId::as_str) == Some(first.as_str()))));
        assert_eq!(
            calls(fake),
            (1, 0, 5),
            "group {group:?}: the tick's list, then one POST per create and no template read"
        );
        assert_eq!(fake.machines(APP).len(), 6);
        // Every clone carries the template's config with the image pinned.
        let pinned = fake
            .machine(APP, &first)
            .unwrap()
            .image_ref
            .unwrap()
            .full_ref()
            .unwrap();
        for m in fake.machines(APP).iter().filter(|m| m.id != first) {
            let cfg = m.config.clone().unwrap();
            assert_eq!(cfg["image"], serde_json::json!(pinned));
            assert_eq!(cfg["env"]["FOO"], serde_json::json!("bar"));
        }
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn a_create_reads_its_template_only_when_the_request_does_not_carry_it() {
    let (srv, c, first) = one_started(Some("app")).await;
    let fake = srv.fake();
    let s = FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap();

    // A template named by id alone (a configured template the tick did not list) is read.
    let bare =
        CreateRequest::default().with_template(Machine::new(first.clone(), MachineState::Unknown));
    fake.clear_request_log();
    s.create(&bare).await.unwrap();
    assert_eq!(calls(fake), (0, 1, 1));

    // The template as listed is cloned as it was read: no read.
    let listed = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id.as_str() == first)
        .unwrap();
    let carried = CreateRequest::default().with_template(listed);
    fake.clear_request_log();
    s.create(&carried).await.unwrap();
    assert_eq!(calls(fake), (0, 0, 1));

    // A failed create changes nothing: the next one clones the listed template too.
    fake.inject(
        status_fault(422, r#"{"error":"invalid config"}"#)
            .method("POST")
            .path("/machines"),
    );
    fake.clear_request_log();
    let e = s.create(&carried).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
    s.create(&carried).await.unwrap();
    assert_eq!(calls(fake), (0, 0, 2));

    // No template at all: one list, to pick the newest started machine of the group.
    fake.clear_request_log();
    s.create(&CreateRequest::default()).await.unwrap();
    assert_eq!(calls(fake), (1, 0, 1));
    srv.shutdown().await;
}

fn post_statuses(fake: &FakeFly) -> Vec<u16> {
    fake.request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/machines"))
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn a_create_answered_429_is_retried_and_creates_exactly_one_machine() {
    let (srv, c, _) = one_started(Some("app")).await;
    let fake = srv.fake();
    let s = FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap();
    let post_429 = |retry_after: Option<&str>| {
        Fault::new(FaultKind::RateLimited {
            retry_after: retry_after.map(str::to_owned),
        })
        .method("POST")
        .path("/machines")
    };

    // 429 with `Retry-After: 0`, then with no header (backoff): each retried once.
    let mut machines = 1;
    for retry_after in [Some("0"), None] {
        fake.inject(post_429(retry_after));
        fake.clear_request_log();
        let m = s.create(&CreateRequest::default()).await.unwrap();
        machines += 1;
        assert_eq!(post_statuses(fake), vec![429, 200], "{retry_after:?}");
        assert_eq!(fake.machines(APP).len(), machines, "exactly one created");
        assert!(fake.machine(APP, m.id.as_str()).is_some());
    }

    // A `Retry-After` beyond the client's maximum (5 s in these tests) is returned at once.
    fake.inject(post_429(Some("60")));
    fake.clear_request_log();
    let e = s.create(&CreateRequest::default()).await.unwrap_err();
    assert!(
        matches!(e, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(60)),
        "{e}"
    );
    assert_eq!(post_statuses(fake), vec![429]);

    // 429 on every attempt: as many POSTs as `max_attempts` (4), none executed.
    fake.inject(post_429(Some("0")).times(10));
    fake.clear_request_log();
    let e = s.create(&CreateRequest::default()).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { .. }), "{e}");
    assert_eq!(post_statuses(fake), vec![429; 4]);
    fake.clear_faults();
    assert_eq!(fake.machines(APP).len(), machines, "nothing else created");

    // Errors after which the create may have been executed are never retried.
    for kind in [
        FaultKind::Status {
            status: 503,
            body: r#"{"error":"service unavailable"}"#.into(),
        },
        FaultKind::Status {
            status: 502,
            body: "<html>bad gateway</html>".into(),
        },
        FaultKind::DropConnection,
    ] {
        fake.inject(
            Fault::new(kind.clone())
                .method("POST")
                .path("/machines")
                .times(10),
        );
        fake.clear_request_log();
        let e = s.create(&CreateRequest::default()).await.unwrap_err();
        assert!(e.is_retryable(), "{kind:?}: {e}");
        assert_eq!(post_statuses(fake).len(), 1, "{kind:?}: one POST");
        fake.clear_faults();
    }
    assert_eq!(fake.machines(APP).len(), machines);
    srv.shutdown().await;
}

/// An instant fake with one started machine of `group`: `(server, client, its id)`.
async fn one_started(group: Option<&str>) -> (FakeFlyServer, MachinesClient, String) {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, group).await.id;
    wait_state(srv.fake(), &first, FlyState::Started).await;
    (srv, c, first)
}

/// A fake whose transitions take `delays`, with two started machines of group `app`:
/// `(server, client, first id, second id)`.
async fn two_started_app_machines(
    delays: Delays,
) -> (FakeFlyServer, MachinesClient, String, String) {
    let srv = server_with_delays(delays).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, Some("app")).await.id;
    let b = add_machine(&c, Some("app")).await;
    for id in [&first, &b] {
        wait_state(srv.fake(), id, FlyState::Started).await;
    }
    (srv, c, first, b)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_lease_left_by_a_failed_destroy_is_short_and_does_not_block_the_scaler() {
    let (srv, c, first, b) =
        two_started_app_machines(Delays::uniform(Duration::from_millis(20))).await;
    let fake = srv.fake();
    let s = FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap();
    let id = MachineId::new(b.clone());

    // The delete fails, and so does the release of the lease (500s are not retried).
    fake.inject(
        status_fault(500, r#"{"error":"internal error"}"#)
            .method("DELETE")
            .path(&b)
            .times(2),
    );
    let e = s.destroy(&id).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    let release = fake
        .request_log()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.ends_with("/lease"))
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(release, vec![500], "the release failed");

    // The lease left behind is short (the default TTL is 10 s).
    let lease = c.get_lease(APP, &b).await.expect("a lease is left");
    let expires = lease.expires_at.unwrap();
    assert!(
        expires <= unix_now() + 10,
        "lease expires in {} s",
        expires.saturating_sub(unix_now())
    );

    // Anyone else meets a lease conflict: `Error::Conflict`, one call, not retried.
    let other = FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap();
    fake.clear_request_log();
    let e = other.start(&id).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let e = other.destroy(&id).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let log = fake.request_log();
    let mutations: Vec<String> = log
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.path.rsplit('/').next().unwrap(),
                r.status
            )
        })
        .collect();
    assert_eq!(mutations, vec!["POST start 409", "POST lease 409"]);

    // The scaler that holds the lease is not blocked by it: it starts the machine, then
    // destroys it, with its nonce.
    fake.clear_request_log();
    s.start(&id).await.unwrap();
    wait_state(fake, &b, FlyState::Started).await;
    s.destroy(&id).await.unwrap();
    wait_state(fake, &b, FlyState::Destroyed).await;
    let log = fake.request_log();
    assert!(
        log.iter()
            .filter(|r| r.method != "GET")
            .all(|r| r.status == 200 && r.nonce.is_some()),
        "{log:#?}"
    );
    assert_eq!(fake.state(APP, &first), Some(FlyState::Started));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_destroy_keeps_its_short_lease_alive_while_it_waits_for_the_stop() {
    // The machine takes 6 s to stop, longer than the 4 s lease: the scaler waits in chunks
    // of half the TTL and refreshes the lease in between, so the machine stays leased.
    let (srv, c, _, b) = two_started_app_machines(Delays {
        stop: Duration::from_secs(6),
        ..Delays::uniform(Duration::from_millis(20))
    })
    .await;
    let fake = srv.fake();
    let mut config = FlyScalerConfig::new(APP);
    config.lease_ttl = Duration::from_secs(4);
    let s = FlyScaler::new(c.clone(), config).unwrap();
    fake.clear_request_log();
    let destroy = tokio::spawn({
        let id = MachineId::new(b.clone());
        async move { s.destroy(&id).await }
    });
    // Past the first lease's expiry, while the machine is still stopping.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = c.get_lease(APP, &b).await;
    destroy.await.unwrap().unwrap();
    assert!(held.is_ok(), "leased throughout the destroy: {held:?}");
    wait_state(fake, &b, FlyState::Destroyed).await;
    let log = fake.request_log();
    let refreshes = log
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lease") && r.nonce.is_some())
        .count();
    assert!(refreshes >= 1, "the lease was refreshed: {log:#?}");
    let delete = log
        .iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with(&b))
        .unwrap();
    assert_eq!(delete.status, 200);
    srv.shutdown().await;
}
