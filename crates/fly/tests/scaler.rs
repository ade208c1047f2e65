//! `FlyScaler` against the fake Machines API over loopback HTTP: the core conformance suite,
//! state mapping, process groups, cloning, and the fault tests of the issue (no create loop,
//! no overshoot across ticks, destroy touches only the named machine).

mod common;

use std::time::Duration;

use common::{
    app_config, client, client_config, seed_app, server, server_with_delays, status_fault,
    wait_state, APP,
};
use fleetscale_core::plan::{plan_actions, Action, ActionKind, PlanOptions};
use fleetscale_core::testing::conformance;
use fleetscale_core::{
    Bounds, CreateRequest, Error, InitialState, Machine, MachineId, MachineState, Scaler, Targets,
};
use fleetscale_fly::fake::{Delays, FakeConfig};
use fleetscale_fly::types::{CreateMachineRequest, StopRequest};
use fleetscale_fly::{
    ClientConfig, FlyMachine, FlyScaler, FlyScalerConfig, FlyState, MachinesClient,
};
use serde_json::json;

fn scaler(c: &MachinesClient) -> FlyScaler {
    FlyScaler::new(c.clone(), FlyScalerConfig::new(APP)).unwrap()
}

async fn add_machine(c: &MachinesClient, group: Option<&str>, skip_launch: bool) -> FlyMachine {
    c.create_machine(
        APP,
        &CreateMachineRequest {
            config: app_config(group),
            region: Some("ams".into()),
            skip_launch: Some(skip_launch),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A scaler of [`APP`] restricted to process `group` (`None`: every group).
fn group_scaler(c: &MachinesClient, group: Option<&str>) -> FlyScaler {
    FlyScaler::new(
        c.clone(),
        FlyScalerConfig::new(APP).with_process_group(group.map(str::to_owned)),
    )
    .unwrap()
}

/// The ids of the machines `s` lists.
async fn listed_ids(s: &FlyScaler) -> Vec<String> {
    s.list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.0)
        .collect()
}

#[tokio::test]
async fn conformance_suite_passes_with_transitions() {
    let srv = server(FakeConfig {
        delays: Delays::uniform(Duration::from_millis(50)),
        rate_limits: None,
        ..FakeConfig::default()
    })
    .await;
    let c = client(&srv);
    let first = seed_app(&c, APP, Some("app")).await;
    wait_state(srv.fake(), &first.id, FlyState::Started).await;
    let s = scaler(&c);
    conformance::scaler(&s).await.expect("FlyScaler conforms");
    // The template survived and the suite's machines are gone.
    let left: Vec<String> = srv.fake().machines(APP).into_iter().map(|m| m.id).collect();
    assert_eq!(left, vec![first.id.clone()]);
    srv.shutdown().await;
}

#[tokio::test]
async fn conformance_suite_passes_with_fly_rate_limits_and_default_pacing() {
    // Fly's documented limits on the server, the client's default pacing: no 429 surfaces.
    let srv = server(FakeConfig::default()).await;
    let c = MachinesClient::new(
        None,
        ClientConfig {
            pacing: Default::default(),
            ..client_config(&srv)
        },
    )
    .unwrap();
    let first = seed_app(&c, APP, None).await;
    wait_state(srv.fake(), &first.id, FlyState::Started).await;
    conformance::scaler(&scaler(&c))
        .await
        .expect("FlyScaler conforms under rate limits");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_failing_create_is_attempted_exactly_once_per_call() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    seed_app(&c, APP, None).await;
    let s = scaler(&c);
    let fake = srv.fake();
    fake.fail_next_creates(1000);
    fake.clear_request_log();
    for _ in 0..3 {
        let e = s.create(&CreateRequest::default()).await.unwrap_err();
        assert!(matches!(e, Error::Capacity { .. }), "{e}");
    }
    assert_eq!(
        fake.count_requests("POST", "/machines"),
        3,
        "one POST per create call"
    );

    // Same for transient errors that other calls would retry.
    fake.fail_next_creates(0);
    fake.clear_request_log();
    fake.inject(
        status_fault(503, "{}")
            .method("POST")
            .path("/machines")
            .times(100),
    );
    let e = s.create(&CreateRequest::default()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(fake.count_requests("POST", "/machines"), 1);
    fake.clear_faults();
    assert_eq!(fake.machines(APP).len(), 1, "nothing was created");
    srv.shutdown().await;
}

async fn tick(s: &FlyScaler, targets: &Targets) -> fleetscale_core::plan::Plan {
    let inventory = s.list().await.unwrap();
    let options = PlanOptions::default().with_capabilities(s.capabilities());
    let plan = plan_actions(&inventory, targets, &options);
    for action in &plan.actions {
        match action {
            Action::Create { request, .. } => {
                s.create(request).await.unwrap();
            }
            Action::Start { id, .. } => s.start(id).await.unwrap(),
            Action::Stop { id, .. } => s.stop(id).await.unwrap(),
            Action::Suspend { id, .. } => s.suspend(id).await.unwrap(),
            Action::Destroy { id, .. } => s.destroy(id).await.unwrap(),
        }
    }
    plan
}

#[tokio::test]
async fn transitions_in_flight_never_overshoot_across_ticks() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, None).await;
    let mut stopped = Vec::new();
    for _ in 0..3 {
        stopped.push(add_machine(&c, None, false).await.id);
    }
    for id in &stopped {
        wait_state(srv.fake(), id, FlyState::Started).await;
        c.stop_machine(APP, id, &StopRequest::default(), None)
            .await
            .unwrap();
        wait_state(srv.fake(), id, FlyState::Stopped).await;
    }
    wait_state(srv.fake(), &first.id, FlyState::Started).await;
    // Slow transitions from now on: every tick below happens while they are in flight.
    srv.fake()
        .set_delays(Delays::uniform(Duration::from_secs(30)));
    let s = scaler(&c);
    srv.fake().clear_request_log();

    // Started: 1 -> 3.
    let started = Targets {
        created: Bounds::NONE,
        started: Bounds::exactly(3),
    };
    let p1 = tick(&s, &started).await;
    assert_eq!(p1.count(ActionKind::Start), 2);
    for _ in 0..3 {
        let p = tick(&s, &started).await;
        assert!(
            p.is_empty(),
            "starting machines count as started: {:?}",
            p.actions
        );
    }
    assert_eq!(srv.fake().count_requests("POST", "/start"), 2);

    // Created: 4 -> 6, with creates that stay `created`/`starting` for 30 s.
    let created = Targets {
        created: Bounds::exactly(6),
        started: Bounds::NONE,
    };
    let p = tick(&s, &created).await;
    assert_eq!(p.count(ActionKind::Create), 2);
    for _ in 0..3 {
        let p = tick(&s, &created).await;
        assert!(p.is_empty(), "new machines count at once: {:?}", p.actions);
    }
    assert_eq!(srv.fake().count_requests("POST", "/machines"), 2);
    assert_eq!(srv.fake().machines(APP).len(), 6);

    // Stopping: started (3 starting + 2 new) -> 1; stops are in flight for 30 s.
    let fewer = Targets {
        created: Bounds::NONE,
        started: Bounds::exactly(1),
    };
    let p = tick(&s, &fewer).await;
    let stops = p.count(ActionKind::Stop);
    assert!(stops >= 1);
    for _ in 0..3 {
        let p = tick(&s, &fewer).await;
        assert!(
            p.is_empty(),
            "stopping machines count as stopped: {:?}",
            p.actions
        );
    }
    assert_eq!(srv.fake().count_requests("POST", "/stop"), stops);
    srv.shutdown().await;
}

#[tokio::test]
async fn destroy_touches_only_the_named_machine() {
    let srv = server_with_delays(Delays::uniform(Duration::from_millis(20))).await;
    let c = client(&srv);
    let a = seed_app(&c, APP, None).await;
    let b = add_machine(&c, None, false).await;
    let d = add_machine(&c, None, true).await;
    for id in [&a.id, &b.id] {
        wait_state(srv.fake(), id, FlyState::Started).await;
    }
    let s = scaler(&c);
    let fake = srv.fake();
    fake.clear_request_log();
    s.destroy(&MachineId::new(b.id.clone())).await.unwrap();
    wait_state(fake, &b.id, FlyState::Destroyed).await;
    let log = fake.request_log();
    for r in &log {
        let about_machine = r.path.contains("/machines/");
        assert!(
            !about_machine || r.path.contains(&b.id),
            "touched another machine: {r:?}"
        );
    }
    // Lease, cordon, graceful stop, wait, delete with the nonce, in that order.
    let steps: Vec<String> = log
        .iter()
        .filter(|r| r.method != "GET" || r.path.ends_with("/wait"))
        .map(|r| format!("{} {}", r.method, r.path.rsplit('/').next().unwrap_or("")))
        .collect();
    assert_eq!(
        steps,
        vec![
            "POST lease".to_string(),
            "POST cordon".into(),
            "POST stop".into(),
            "GET wait".into(),
            format!("DELETE {}", b.id),
        ]
    );
    let delete = log.iter().find(|r| r.method == "DELETE").unwrap();
    assert!(delete.nonce.is_some(), "destroy carries the lease nonce");
    assert!(
        !delete.query.contains("force"),
        "no force unless configured"
    );
    assert_eq!(fake.state(APP, &a.id), Some(FlyState::Started));
    assert_eq!(fake.state(APP, &d.id), Some(FlyState::Created));

    // Destroying it again, or an unknown machine, is NotFound and deletes nothing.
    fake.clear_request_log();
    assert!(s
        .destroy(&MachineId::new(b.id.clone()))
        .await
        .unwrap_err()
        .is_not_found());
    assert!(s
        .destroy(&MachineId::new("0000000000dead"))
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(fake.count_requests("DELETE", &b.id), 0);
    assert_eq!(fake.count_requests("DELETE", "dead"), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn destroy_respects_other_leases_groups_and_unhealthy_hosts() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let a = seed_app(&c, APP, Some("app")).await;
    let worker = add_machine(&c, Some("worker"), true).await;
    let b = add_machine(&c, Some("app"), true).await;
    let s = scaler(&c);
    let fake = srv.fake();

    // Someone else (a deploy) holds a lease on b.
    let theirs = c
        .acquire_lease(APP, &b.id, Duration::from_secs(60), Some("deploy"))
        .await
        .unwrap();
    fake.clear_request_log();
    let e = s.destroy(&MachineId::new(b.id.clone())).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(fake.count_requests("DELETE", &b.id), 0);
    c.release_lease(APP, &b.id, &theirs.nonce).await.unwrap();

    // Another process group is refused.
    let e = s
        .destroy(&MachineId::new(worker.id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");

    // A machine on an unreachable host is listed, not manageable, and refused.
    fake.set_host_status(APP, &a.id, "unreachable");
    let listed = s.list().await.unwrap();
    let ma = listed.iter().find(|m| m.id.as_str() == a.id).unwrap();
    assert!(!ma.manageable);
    assert_eq!(
        ma.labels.get("process_group").map(String::as_str),
        Some("app"),
        "group read from incomplete_config"
    );
    let e = s.destroy(&MachineId::new(a.id.clone())).await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(matches!(
        s.stop(&MachineId::new(a.id.clone())).await.unwrap_err(),
        Error::Refused { .. }
    ));
    assert_eq!(fake.count_requests("DELETE", &a.id), 0);
    assert_eq!(fake.count_requests("DELETE", &worker.id), 0);
    assert_eq!(fake.count_requests("POST", "/stop"), 0);

    // Without stop_first and force, destroying a running machine is a conflict (as on Fly);
    // with force it goes.
    fake.set_host_status(APP, &a.id, "ok");
    let mut cfg = FlyScalerConfig::new(APP);
    cfg.destroy.stop_first = false;
    cfg.destroy.cordon = false;
    let blunt = FlyScaler::new(c.clone(), cfg.clone()).unwrap();
    let e = blunt
        .destroy(&MachineId::new(a.id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(
        c.get_lease(APP, &a.id).await.unwrap_err().is_not_found(),
        "lease released after failure"
    );
    cfg.destroy.force = true;
    let forced = FlyScaler::new(c.clone(), cfg).unwrap();
    forced.destroy(&MachineId::new(a.id.clone())).await.unwrap();
    let log = fake.request_log();
    assert!(log
        .iter()
        .any(|r| r.method == "DELETE" && r.query.contains("force=true") && r.status == 200));
    srv.shutdown().await;
}

#[tokio::test]
async fn process_groups_and_unlabelled_machines() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let plain = seed_app(&c, APP, None).await;
    let s = scaler(&c);
    // Only unlabelled machines: they are the app's one group (fly-autoscaler ignores them).
    assert_eq!(s.list().await.unwrap().len(), 1);
    // They are the default group `app`, not any group.
    let web = group_scaler(&c, Some("web"));
    assert!(web.list().await.unwrap().is_empty());
    let app_labelled = add_machine(&c, Some("app"), true).await;
    let listed: Vec<String> = listed_ids(&s).await;
    assert_eq!(
        listed.len(),
        2,
        "unlabelled + app when the only group is app"
    );
    // A second group appears: unlabelled machines are no longer attributed.
    let worker = add_machine(&c, Some("worker"), true).await;
    let listed: Vec<String> = listed_ids(&s).await;
    assert_eq!(listed, vec![app_labelled.id.clone()]);
    let workers = group_scaler(&c, Some("worker"));
    let listed: Vec<String> = listed_ids(&workers).await;
    assert_eq!(listed, vec![worker.id.clone()]);
    let everything = group_scaler(&c, None);
    assert_eq!(everything.list().await.unwrap().len(), 3);
    // The legacy `process_group` key counts too.
    let mut legacy_cfg = app_config(None);
    legacy_cfg["metadata"]["process_group"] = json!("worker");
    c.create_machine(
        APP,
        &CreateMachineRequest {
            config: legacy_cfg,
            skip_launch: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(workers.list().await.unwrap().len(), 2);
    assert!(!s
        .list()
        .await
        .unwrap()
        .iter()
        .any(|m| m.id.as_str() == plain.id));
    srv.shutdown().await;
}

#[tokio::test]
async fn list_maps_all_states_labels_and_addresses() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let seeded = seed_app(&c, APP, None).await;
    let fake = srv.fake();
    let mut all = FlyState::KNOWN.to_vec();
    all.push(FlyState::Other("hibernating".into()));
    for (i, st) in all.iter().enumerate() {
        let m: FlyMachine = serde_json::from_value(json!({
            "id": format!("{:014x}", 0xabc000 + i),
            "state": st.as_str(),
            "region": "iad",
            "config": {"image": "x", "metadata": {}},
            "host_status": "ok",
            "created_at": "2024-01-01T00:00:00Z"
        }))
        .unwrap();
        fake.insert_machine(APP, m);
    }
    // The list endpoint hides destroyed machines, so read each one through the scaler's view.
    let s = scaler(&c);
    for (i, st) in all.iter().enumerate() {
        let m = c
            .get_machine(APP, &format!("{:014x}", 0xabc000 + i))
            .await
            .unwrap();
        let core = s.to_core(&m);
        let want = match st.as_str() {
            "created" | "creating" => MachineState::Created,
            "starting" | "restarting" => MachineState::Starting,
            "started" => MachineState::Started,
            "stopping" => MachineState::Stopping,
            "stopped" => MachineState::Stopped,
            "suspending" => MachineState::Suspending,
            "suspended" => MachineState::Suspended,
            "destroying" => MachineState::Destroying,
            "destroyed" | "replaced" | "migrated" => MachineState::Destroyed,
            "failed" | "launch_failed" => MachineState::Failed,
            _ => MachineState::Unknown,
        };
        assert_eq!(core.state, want, "{st}");
        assert_eq!(
            core.labels.get("fly_state").map(String::as_str),
            Some(st.as_str())
        );
    }
    let listed = s.list().await.unwrap();
    let m = listed.iter().find(|m| m.id.as_str() == seeded.id).unwrap();
    assert!(m.manageable);
    assert_eq!(m.region.as_deref(), Some("ams"));
    assert!(m.address.as_deref().unwrap().starts_with("fdaa:"));
    assert!(m.created_at.is_some());
    assert_eq!(
        m.labels.get("process_group").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        m.labels.get("release_id").map(String::as_str),
        Some("rel-1")
    );
    assert_eq!(
        m.labels.get("release_version").map(String::as_str),
        Some("3")
    );
    assert!(m.labels.get("image").unwrap().contains("@sha256:"));
    srv.shutdown().await;
}

#[tokio::test]
async fn create_clones_the_newest_healthy_machine_with_a_pinned_image() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let old = seed_app(&c, APP, None).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut newer_cfg = app_config(None);
    newer_cfg["env"]["FOO"] = json!("newer");
    let newer = c
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: newer_cfg.clone(),
                region: Some("lhr".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The newest machine is stopped-never-started: started machines are preferred.
    let _idle = add_machine(&c, None, true).await;
    wait_state(srv.fake(), &newer.id, FlyState::Started).await;
    wait_state(srv.fake(), &old.id, FlyState::Started).await;

    let s = FlyScaler::new(
        c.clone(),
        FlyScalerConfig::new(APP).with_regions(vec!["ord".into(), "cdg".into()]),
    )
    .unwrap();
    let mut req = CreateRequest::default();
    req.labels.insert("fleetscale".into(), "yes".into());
    let m1 = s.create(&req).await.unwrap();
    let fm1 = srv.fake().machine(APP, m1.id.as_str()).unwrap();
    let mut want = newer_cfg.clone();
    let pinned = newer.image_ref.as_ref().unwrap().full_ref().unwrap();
    assert!(pinned.contains("@sha256:"), "{pinned}");
    want["image"] = json!(pinned);
    want["metadata"]["fleetscale"] = json!("yes");
    assert_eq!(
        fm1.config.unwrap(),
        want,
        "config cloned exactly, image pinned, labels added"
    );
    assert_eq!(fm1.region.as_deref(), Some("ord"));
    let m2 = s.create(&CreateRequest::default()).await.unwrap();
    assert_eq!(m2.region.as_deref(), Some("cdg"));
    let m3 = s
        .create(&CreateRequest::default().with_region("syd"))
        .await
        .unwrap();
    assert_eq!(m3.region.as_deref(), Some("syd"));
    let m4 = s.create(&CreateRequest::default()).await.unwrap();
    assert_eq!(m4.region.as_deref(), Some("ord"));

    // An explicit template is honoured; without configured regions its region is used.
    let plain = scaler(&c);
    let from_old = plain
        .create(
            &CreateRequest::default()
                .with_template(Machine::new(old.id.clone(), MachineState::Unknown)),
        )
        .await
        .unwrap();
    let fm = srv.fake().machine(APP, from_old.id.as_str()).unwrap();
    assert_eq!(fm.config.unwrap()["env"]["FOO"], json!("bar"));
    assert_eq!(fm.region.as_deref(), Some("ams"));
    srv.shutdown().await;
}

#[tokio::test]
async fn create_initial_states_and_no_template() {
    let srv = server_with_delays(Delays::uniform(Duration::from_millis(30))).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, None).await;
    wait_state(srv.fake(), &first.id, FlyState::Started).await;
    let s = scaler(&c);
    let stopped = s
        .create(&CreateRequest::new(InitialState::Stopped))
        .await
        .unwrap();
    assert_eq!(stopped.state, MachineState::Created);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        srv.fake().state(APP, stopped.id.as_str()),
        Some(FlyState::Created)
    );
    let log = srv.fake().request_log();
    let post = log
        .iter()
        .rev()
        .find(|r| r.method == "POST" && r.path.ends_with("/machines"))
        .unwrap();
    assert_eq!(post.status, 200);

    let suspended = s
        .create(&CreateRequest::new(InitialState::Suspended))
        .await
        .unwrap();
    assert!(
        matches!(
            suspended.state,
            MachineState::Suspending | MachineState::Suspended
        ),
        "{:?}",
        suspended.state
    );
    wait_state(srv.fake(), suspended.id.as_str(), FlyState::Suspended).await;
    // Stop of a suspended machine is a no-op (the snapshot is kept); start resumes it.
    s.stop(&suspended.id).await.unwrap();
    assert_eq!(
        srv.fake().state(APP, suspended.id.as_str()),
        Some(FlyState::Suspended)
    );
    s.start(&suspended.id).await.unwrap();
    wait_state(srv.fake(), suspended.id.as_str(), FlyState::Started).await;

    // A group with no machine cannot create.
    let empty = group_scaler(&c, Some("nobody"));
    let e = empty.create(&CreateRequest::default()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
    assert!(e.to_string().contains("no machine"), "{e}");
    assert!(FlyScaler::new(c.clone(), FlyScalerConfig::new(" ")).is_err());
    srv.shutdown().await;
}
