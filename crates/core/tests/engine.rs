//! Engine tests on the in-memory fakes: ticks, transitions, hooks, faults, deadlines, shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::ActionKind;
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::{DecisionObserver, DecisionRecord, TickStatus};
use fleetscale_core::testing::{
    FakeMembership, FakeScaler, MembershipCall, Op, StaticMetric, Transitions,
};
use fleetscale_core::{Counts, Error, InitialState, Machine, MachineState, Result, Scaler, Scope};
use tokio_util::sync::CancellationToken;

fn policy(created: &str, started: Option<&str>) -> Policy {
    Policy {
        created: CountRule::from_settings("created", Some(created), None, None).unwrap(),
        started: CountRule::from_settings("started", started, None, None).unwrap(),
        ..Policy::default()
    }
}

fn engine_for(targets: Vec<TargetSpec>, config: EngineConfig) -> Engine {
    for t in &targets {
        t.validate().unwrap();
    }
    Engine::new(config, Arc::new(targets))
}

fn target(scaler: Arc<FakeScaler>, metric: Arc<StaticMetric>, p: Policy) -> TargetSpec {
    TargetSpec::new(Scope::new("app"), scaler, p).with_source(metric)
}

/// An engine over one target: `fake`, scaled to as many machines as a static metric `load`
/// of `value` says.
fn following_load(fake: &Arc<FakeScaler>, value: f64, config: EngineConfig) -> Engine {
    let load = Arc::new(StaticMetric::new("load", value));
    engine_for(
        vec![target(fake.clone(), load, policy("load", None))],
        config,
    )
}

async fn one_tick(engine: &Engine) -> DecisionRecord {
    engine.run_once().await.unwrap().remove(0)
}

#[tokio::test]
async fn scales_out_and_in_following_the_metric() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let load = Arc::new(StaticMetric::new("load", 4.0));
    let engine = engine_for(
        vec![target(
            fake.clone(),
            load.clone(),
            policy("load", Some("load")),
        )],
        EngineConfig::default(),
    );
    let r = one_tick(&engine).await;
    assert_eq!(r.status, TickStatus::Scaled, "{r:?}");
    assert_eq!(r.outcome_count(ActionKind::Create, true), 3);
    assert_eq!(Counts::of(&fake.machines()).started, 4);

    load.set(2.0);
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Destroy, true), 2);
    let c = Counts::of(&fake.machines());
    assert_eq!((c.created, c.started), (2, 2));

    let r = one_tick(&engine).await;
    assert_eq!(r.status, TickStatus::NoScale);
    assert_eq!(r.tick, 3);
}

#[tokio::test]
async fn transitions_in_flight_never_overshoot_across_ticks() {
    // Starts take three lists to settle: ticks in between must not start more machines.
    let fake = Arc::new(
        FakeScaler::new()
            .with_transitions(Transitions::AfterLists(3))
            .with_machines(6, MachineState::Stopped),
    );
    let load = Arc::new(StaticMetric::new("load", 4.0));
    let engine = engine_for(
        vec![target(fake.clone(), load, policy("6", Some("load")))],
        EngineConfig::default(),
    );
    for _ in 0..6 {
        one_tick(&engine).await;
        let started_or_starting = fake
            .machines()
            .iter()
            .filter(|m| matches!(m.state, MachineState::Started | MachineState::Starting))
            .count();
        assert!(started_or_starting <= 4, "overshoot: {:?}", fake.machines());
    }
    assert_eq!(fake.call_count(Op::Start), 4);
    assert_eq!(Counts::of(&fake.machines()).started, 4);
}

#[tokio::test]
async fn failing_create_is_not_retried_within_a_tick() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    fake.fail_next(Op::Create, 100, || Error::Capacity {
        message: "no room in ord".into(),
        source: None,
    });
    let engine = following_load(&fake, 3.0, EngineConfig::default());
    let r = one_tick(&engine).await;
    assert_eq!(
        fake.call_count(Op::Create),
        2,
        "one call per planned create"
    );
    assert_eq!(r.outcome_count(ActionKind::Create, false), 2);
    assert_eq!(
        r.outcomes[0].error.as_ref().unwrap().kind,
        fleetscale_core::ErrorKind::Capacity
    );
    one_tick(&engine).await;
    assert_eq!(
        fake.call_count(Op::Create),
        4,
        "the next tick re-plans, once"
    );
}

#[tokio::test]
async fn metric_failure_holds_instead_of_scaling_in() {
    let fake = Arc::new(FakeScaler::new().with_machines(5, MachineState::Started));
    let load = Arc::new(StaticMetric::new("load", 5.0));
    let engine = engine_for(
        vec![target(fake.clone(), load.clone(), policy("load", None))],
        EngineConfig::default(),
    );
    load.fail("prometheus down");
    let r = one_tick(&engine).await;
    assert_eq!(r.status, TickStatus::Held);
    assert_eq!(fake.call_count(Op::Destroy), 0);
    assert!(matches!(
        r.metrics["load"],
        fleetscale_core::record::MetricReading::Failed { .. }
    ));
}

#[tokio::test]
async fn non_finite_metric_is_a_failure() {
    let fake = Arc::new(FakeScaler::new().with_machines(2, MachineState::Started));
    let engine = following_load(&fake, f64::NAN, EngineConfig::default());
    assert_eq!(one_tick(&engine).await.status, TickStatus::Held);
}

#[tokio::test]
async fn list_failure_is_recorded_and_nothing_happens() {
    let fake = Arc::new(FakeScaler::new().with_machines(2, MachineState::Started));
    fake.fail_next(Op::List, 1, || Error::Unavailable {
        message: "502".into(),
        source: None,
    });
    let engine = following_load(&fake, 9.0, EngineConfig::default());
    let r = one_tick(&engine).await;
    assert!(
        matches!(r.status, TickStatus::Failed { ref stage, .. } if *stage == fleetscale_core::record::TickStage::List)
    );
    assert_eq!(fake.call_count(Op::Create), 0);
}

#[tokio::test]
async fn dry_run_plans_but_executes_nothing() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let engine = following_load(&fake, 3.0, EngineConfig::default().with_dry_run(true));
    let r = one_tick(&engine).await;
    assert_eq!(r.status, TickStatus::DryRun);
    assert_eq!(r.plan.as_ref().unwrap().count(ActionKind::Create), 2);
    assert_eq!(fake.call_count(Op::Create), 0);
    assert_eq!(fake.machines().len(), 1);
}

#[tokio::test]
async fn membership_leave_before_stop_and_join_after_start() {
    let fake = Arc::new(FakeScaler::new().with_machines(3, MachineState::Stopped));
    let cluster = Arc::new(FakeMembership::with_fixed(["fixed1"]));
    let load = Arc::new(StaticMetric::new("load", 2.0));
    let t = target(fake.clone(), load.clone(), policy("3", Some("load")))
        .with_membership(cluster.clone());
    let engine = engine_for(vec![t], EngineConfig::default());
    one_tick(&engine).await;
    let joins: Vec<_> = cluster
        .calls()
        .into_iter()
        .filter(|c| matches!(c, MembershipCall::Join(_)))
        .collect();
    assert_eq!(
        joins,
        vec![
            MembershipCall::Join("m1".into()),
            MembershipCall::Join("m2".into())
        ]
    );

    // A failed leave skips the stop: a member that did not hand off is never stopped.
    cluster.fail_leaves(1, || Error::Unavailable {
        message: "router down".into(),
        source: None,
    });
    load.set(1.0);
    let r = one_tick(&engine).await;
    assert_eq!(r.outcomes.len(), 1);
    assert_eq!(
        r.outcomes[0].error.as_ref().unwrap().step,
        fleetscale_core::record::ActionStep::Leave
    );
    assert_eq!(fake.call_count(Op::Stop), 0);
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Stop, true), 1);
    assert_eq!(
        cluster.calls().last(),
        Some(&MembershipCall::Leave("m2".into())),
        "leave of the stopped machine"
    );
    assert!(cluster.member("peer-m2").is_none());
}

#[tokio::test]
async fn reclaims_lost_members_once_when_enabled() {
    let fake = Arc::new(FakeScaler::new().with_machines(2, MachineState::Started));
    let cluster = Arc::new(FakeMembership::with_fixed(["fixed1"]));
    for m in fake.machines() {
        fleetscale_core::ClusterMembership::join(cluster.as_ref(), &m)
            .await
            .unwrap();
    }
    let t = target(
        fake.clone(),
        Arc::new(StaticMetric::new("load", 2.0)),
        policy("2", None),
    )
    .with_membership(cluster.clone());
    let engine = engine_for(
        vec![t],
        EngineConfig::default().with_reclaim_lost_members(true),
    );
    // m2's host vanishes; a partitioned m1 is unreachable but its machine still exists.
    fake.vanish(&"m2".into());
    cluster.set_reachable("peer-m2", false);
    cluster.set_reachable("peer-m1", false);
    let r = engine.run_once().await.unwrap().remove(0);
    assert_eq!(r.reclaims, vec![("peer-m2".to_string(), Ok(1))]);
    let r = engine.run_once().await.unwrap().remove(0);
    assert!(r.reclaims.is_empty(), "{:?}", r.reclaims);
    assert_eq!(cluster.reclaims_done(), 1);
    assert!(
        cluster.member("peer-m1").is_some(),
        "partitioned member kept"
    );
}

#[tokio::test(start_paused = true)]
async fn deadlines_bound_list_and_metrics() {
    // A scaler whose list hangs forever.
    let hanging = Arc::new(FakeScaler::new());
    hanging.hang_next(Op::List, u32::MAX);
    let t = TargetSpec::new(Scope::new("app"), hanging.clone(), policy("1", None));
    let engine = engine_for(vec![t], EngineConfig::default());
    let r = one_tick(&engine).await;
    assert!(
        matches!(r.status, TickStatus::Failed { ref kind, .. } if *kind == fleetscale_core::ErrorKind::Timeout),
        "{r:?}"
    );
    assert!(hanging.calls().is_empty(), "nothing planned without a list");

    let fake = Arc::new(FakeScaler::new().with_machines(3, MachineState::Started));
    // A metric that never answers.
    let silent = Arc::new(StaticMetric::new("silent", 1.0));
    silent.hang();
    let t = TargetSpec::new(Scope::new("app"), fake.clone(), policy("silent", None))
        .with_source(silent);
    let engine = engine_for(vec![t], EngineConfig::default());
    let r = one_tick(&engine).await;
    assert_eq!(r.status, TickStatus::Held);
    assert!(matches!(
        &r.metrics["silent"],
        fleetscale_core::record::MetricReading::Failed { kind, .. } if *kind == fleetscale_core::ErrorKind::Timeout
    ));
}

#[derive(Default)]
struct Records(std::sync::Mutex<Vec<DecisionRecord>>);

impl DecisionObserver for Records {
    fn observe(&self, record: &DecisionRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn run_ticks_immediately_then_every_interval_and_stops_on_cancel() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let records = Arc::new(Records::default());
    let engine = Arc::new(
        following_load(
            &fake,
            1.0,
            EngineConfig::default().with_interval(Duration::from_secs(15)),
        )
        .with_observer(records.clone()),
    );
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (e, c) = (engine.clone(), cancel.clone());
        async move { e.run(c.cancelled_owned()).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        records.0.lock().unwrap().len(),
        1,
        "first tick is immediate"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(records.0.lock().unwrap().len(), 3);
    engine.trigger();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        records.0.lock().unwrap().len(),
        4,
        "trigger runs a pass at once"
    );
    cancel.cancel();
    run.await.unwrap().unwrap();
    let n = records.0.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(records.0.lock().unwrap().len(), n, "no tick after shutdown");
    assert_eq!(engine.last_decisions().len(), 1);
}

#[tokio::test]
async fn initial_state_stopped_creates_spares_for_the_proxy() {
    // The blueprint: keep one spare stopped machine beyond those running.
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let running = Arc::new(StaticMetric::new("running_machines", 1.0));
    let t = target(
        fake.clone(),
        running.clone(),
        policy("min(running_machines + 1, 10)", None),
    )
    .with_initial_state(InitialState::Stopped);
    let engine = engine_for(vec![t], EngineConfig::default());
    one_tick(&engine).await;
    let c = Counts::of(&fake.machines());
    assert_eq!((c.created, c.started, c.never_started), (2, 1, 1));
    // The proxy starts the spare: the next tick adds another spare.
    let spare = fake
        .machines()
        .into_iter()
        .find(|m| m.state == MachineState::Created)
        .unwrap();
    fake.set_state(&spare.id, MachineState::Started);
    running.set(2.0);
    one_tick(&engine).await;
    let c = Counts::of(&fake.machines());
    assert_eq!((c.created, c.started, c.never_started), (3, 2, 1));
    running.set(40.0);
    one_tick(&engine).await;
    assert_eq!(Counts::of(&fake.machines()).created, 10);
}

#[tokio::test]
async fn a_paused_target_is_left_alone() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let engine = following_load(&fake, 5.0, EngineConfig::default());
    fake.set_paused(Some("release in progress"));
    let r = one_tick(&engine).await;
    assert_eq!(
        r.status,
        TickStatus::Paused {
            reason: "release in progress".into()
        }
    );
    assert_eq!(fake.call_count(Op::Create), 0);
    fake.set_paused(None);
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Create, true), 4);
}

/// A backend whose new machines list as `created` (never started) for a while after a create
/// that starts them, as Fly's do before `starting`, and that may not list them at all yet.
#[derive(Default)]
struct LaggingLaunches {
    machines: std::sync::Mutex<Vec<Machine>>,
    /// Whether `list` leaves out the machines created since the last `show_all`.
    hide_new: std::sync::atomic::AtomicBool,
    hidden: std::sync::Mutex<Vec<Machine>>,
    starts: std::sync::atomic::AtomicUsize,
}

impl LaggingLaunches {
    fn with_started(n: usize) -> Self {
        let s = LaggingLaunches::default();
        for i in 0..n {
            s.machines
                .lock()
                .unwrap()
                .push(Machine::new(format!("old{i}"), MachineState::Started));
        }
        s
    }
}

#[async_trait]
impl Scaler for LaggingLaunches {
    fn capabilities(&self) -> fleetscale_core::Capabilities {
        fleetscale_core::Capabilities::default().with_create_needs_template(false)
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        Ok(self.machines.lock().unwrap().clone())
    }
    async fn create(&self, _: &fleetscale_core::CreateRequest) -> Result<Machine> {
        let mut ms = self.machines.lock().unwrap();
        let hidden = self.hidden.lock().unwrap().len();
        let m = Machine::new(format!("new{}", ms.len() + hidden), MachineState::Created);
        if self.hide_new.load(std::sync::atomic::Ordering::SeqCst) {
            self.hidden.lock().unwrap().push(m.clone());
        } else {
            ms.push(m.clone());
        }
        Ok(m)
    }
    async fn start(&self, id: &fleetscale_core::MachineId) -> Result<()> {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut ms = self.machines.lock().unwrap();
        let m = ms.iter_mut().find(|m| &m.id == id).unwrap();
        m.state = MachineState::Started;
        Ok(())
    }
    async fn stop(&self, _: &fleetscale_core::MachineId) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _: &fleetscale_core::MachineId) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_started_create_that_still_lists_created_counts_as_started_until_the_deadline() {
    let pool = Arc::new(LaggingLaunches::with_started(2));
    let load = Arc::new(StaticMetric::new("load", 4.0));
    let t = TargetSpec::new(
        Scope::new("app"),
        pool.clone(),
        policy("load", Some("load")),
    )
    .with_source(load);
    let engine = engine_for(
        vec![t],
        EngineConfig::default().with_pending_create_timeout(Duration::from_secs(60)),
    );
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Create, true), 2, "{r:?}");
    // The new machines list as `created`: within the deadline they count as starting.
    for _ in 0..3 {
        let r = one_tick(&engine).await;
        assert_eq!(r.counts.unwrap().started, 4, "{r:?}");
        assert!(r.plan.as_ref().unwrap().is_empty(), "{r:?}");
    }
    assert_eq!(pool.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Past the deadline they are never-started machines again, and the planner starts them.
    tokio::time::advance(Duration::from_secs(61)).await;
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Start, true), 2, "{r:?}");
    assert_eq!(pool.starts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_create_the_inventory_does_not_show_yet_still_counts_and_is_never_acted_on() {
    let pool = Arc::new(LaggingLaunches::with_started(1));
    pool.hide_new
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let load = Arc::new(StaticMetric::new("load", 2.0));
    let t = TargetSpec::new(
        Scope::new("app"),
        pool.clone(),
        policy("load", Some("load")),
    )
    .with_source(load.clone());
    let engine = engine_for(vec![t], EngineConfig::default());
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Create, true), 1);
    let r = one_tick(&engine).await;
    let c = r.counts.unwrap();
    assert_eq!((c.created, c.started, c.unmanageable), (2, 2, 1), "{r:?}");
    assert!(
        r.plan.as_ref().unwrap().is_empty(),
        "no second create: {r:?}"
    );
    // Scaling in never picks the machine the inventory has not shown.
    load.set(1.0);
    let r = one_tick(&engine).await;
    let plan = r.plan.unwrap();
    assert!(
        plan.actions
            .iter()
            .all(|a| a.machine().map(|id| id.as_str()) != Some("new1")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn scale_in_suspends_where_the_target_asks_and_the_backend_can() {
    use fleetscale_core::plan::{PlanOptions, ScaleIn};
    let fake = Arc::new(FakeScaler::new().with_machines(3, MachineState::Started));
    let membership = Arc::new(FakeMembership::with_fixed(["fixed1"]));
    let t = target(
        fake.clone(),
        Arc::new(StaticMetric::new("load", 1.0)),
        policy("3", Some("load")),
    )
    .with_plan_options(PlanOptions::default().with_scale_in(ScaleIn::Suspend))
    .with_membership(membership.clone());
    let engine = engine_for(vec![t], EngineConfig::default());
    let r = one_tick(&engine).await;
    assert_eq!(r.outcome_count(ActionKind::Suspend, true), 2, "{r:?}");
    assert_eq!(r.outcome_count(ActionKind::Stop, true), 0);
    let c = Counts::of(&fake.machines());
    assert_eq!((c.started, c.suspended), (1, 2));
    // Each suspended machine left the cluster first.
    assert_eq!(
        membership
            .calls()
            .iter()
            .filter(|c| matches!(c, MembershipCall::Leave(_)))
            .count(),
        2
    );
    // A backend that cannot suspend stops instead, and the plan says so.
    let plain = Arc::new(
        FakeScaler::new()
            .with_capabilities(
                fleetscale_core::Capabilities::default().with_create_needs_template(false),
            )
            .with_machines(3, MachineState::Started),
    );
    let t = target(
        plain.clone(),
        Arc::new(StaticMetric::new("load", 1.0)),
        policy("3", Some("load")),
    )
    .with_plan_options(PlanOptions::default().with_scale_in(ScaleIn::Suspend));
    let r = one_tick(&engine_for(vec![t], EngineConfig::default())).await;
    assert_eq!(r.outcome_count(ActionKind::Stop, true), 2, "{r:?}");
    assert!(r
        .plan
        .unwrap()
        .notes
        .iter()
        .any(|n| n.contains("cannot suspend")));
}
