//! The engine under bad input and hostile numbers: hard limits that hold whatever the inventory
//! says, work bounded whatever a metric says, a loop that reports it is alive, and a shutdown
//! that ends within its grace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::expr::MAX_MACHINE_COUNT;
use fleetscale_core::plan::{ActionKind, DEFAULT_MAX_ACTIONS_PER_KIND};
use fleetscale_core::policy::{CountRule, Limits, Policy};
use fleetscale_core::record::{DecisionObserver, DecisionRecord, MetricReading, TickStatus};
use fleetscale_core::testing::{FakeScaler, LogBuffer, Op, StaticMetric};
use fleetscale_core::{Bounds, MachineState, Scope};
use tokio_util::sync::CancellationToken;

fn created(rule: &str) -> Policy {
    Policy {
        created: CountRule::from_settings("created", Some(rule), None, None).unwrap(),
        ..Policy::default()
    }
}

fn existing(fake: &FakeScaler) -> usize {
    fake.machines().iter().filter(|m| m.state.exists()).count()
}

/// One engine pass, after which the backend lists every machine but the first (`m1`), so every
/// machine the engine made, as unmanageable.
async fn pass_listing_new_machines_unmanageable(engine: &Engine, fake: &FakeScaler) {
    engine.run_once().await.unwrap();
    for m in fake.machines() {
        if m.id.as_str() != "m1" {
            fake.set_manageable(&m.id, false);
        }
    }
}

/// Runs `engine`'s loop on a task until the returned token is cancelled.
fn spawn_run(
    engine: &Arc<Engine>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<fleetscale_core::Result<()>>,
) {
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (e, c) = (engine.clone(), cancel.clone());
        async move { e.run(c.cancelled_owned()).await }
    });
    (cancel, run)
}

/// A backend whose new machines are listed unmanageable (Fly: `host_status` not `ok` for a
/// while): under a hard maximum of 3 the engine used to create 2 machines every tick.
#[tokio::test]
async fn the_hard_maximum_holds_when_new_machines_are_listed_unmanageable() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let policy = Policy {
        limits: Limits {
            created: Bounds {
                min: None,
                max: Some(3),
            },
            ..Limits::default()
        },
        ..created("10")
    };
    let t = TargetSpec::new(Scope::new("app"), fake.clone(), policy);
    t.validate().unwrap();
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![t]));
    for tick in 1..=5 {
        pass_listing_new_machines_unmanageable(&engine, &fake).await;
        assert!(
            existing(&fake) <= 3,
            "tick {tick}: {} machines exist under a maximum of 3",
            existing(&fake)
        );
    }
    assert_eq!(existing(&fake), 3);
    assert_eq!(
        fake.call_count(Op::Create),
        2,
        "two creates in all, not per tick"
    );
}

/// The same with a step limit: unmanageable machines count toward the step's base.
#[tokio::test]
async fn step_limits_count_unmanageable_machines() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let policy = Policy {
        limits: Limits {
            max_step_up: Some(1),
            ..Limits::default()
        },
        ..created("3")
    };
    let t = TargetSpec::new(Scope::new("app"), fake.clone(), policy);
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![t]));
    for tick in 1..=4 {
        pass_listing_new_machines_unmanageable(&engine, &fake).await;
        assert!(
            existing(&fake) <= 1 + tick,
            "tick {tick}: more than one step"
        );
        assert!(existing(&fake) <= 3, "tick {tick}: past the rule's count");
    }
}

/// A metric spike of 1e300 under `created = running_machines`: the count saturates at the
/// ceiling, the tick does at most the default cap of creates, and the record says why.
#[tokio::test]
async fn a_metric_spike_is_bounded_per_tick() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let spike = Arc::new(StaticMetric::new("running_machines", 1e300));
    let t = TargetSpec::new(Scope::new("app"), fake.clone(), created("running_machines"))
        .with_source(spike);
    t.validate().unwrap();
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![t.clone()]));

    let dry = engine.tick(&t, true).await;
    assert_eq!(dry.status, TickStatus::DryRun);
    let decision = dry.decision.as_ref().unwrap();
    assert_eq!(decision.targets.created.min, Some(MAX_MACHINE_COUNT));
    let plan = dry.plan.as_ref().unwrap();
    assert_eq!(
        plan.count(ActionKind::Create),
        DEFAULT_MAX_ACTIONS_PER_KIND as usize
    );
    assert!(
        plan.notes.iter().any(|n| n.contains("capped at 100")),
        "{:?}",
        plan.notes
    );
    assert_eq!(fake.call_count(Op::Create), 0, "a dry run creates nothing");

    let r = engine.run_once().await.unwrap().remove(0);
    assert_eq!(
        r.outcome_count(ActionKind::Create, true),
        DEFAULT_MAX_ACTIONS_PER_KIND as usize
    );
}

#[derive(Default)]
struct Passes {
    passes: Mutex<Vec<usize>>,
    records: Mutex<Vec<DecisionRecord>>,
}

impl DecisionObserver for Passes {
    fn observe(&self, record: &DecisionRecord) {
        self.records.lock().unwrap().push(record.clone());
    }
    fn pass_finished(&self, targets: usize) {
        self.passes.lock().unwrap().push(targets);
    }
}

/// A wildcard that matches no app has no tick to report: the loop still says it is alive.
#[tokio::test(start_paused = true)]
async fn every_pass_is_reported_also_over_no_target() {
    let passes = Arc::new(Passes::default());
    let engine = Arc::new(
        Engine::new(
            EngineConfig::default().with_interval(Duration::from_secs(10)),
            Arc::new(Vec::<TargetSpec>::new()),
        )
        .with_observer(passes.clone()),
    );
    let (cancel, run) = spawn_run(&engine);
    tokio::time::sleep(Duration::from_secs(25)).await;
    cancel.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*passes.passes.lock().unwrap(), vec![0, 0, 0]);
    assert!(passes.records.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_zero_interval_is_an_error_not_a_panic() {
    let engine = Engine::new(
        EngineConfig::default().with_interval(Duration::ZERO),
        Arc::new(Vec::<TargetSpec>::new()),
    );
    let e = engine.run(std::future::pending()).await.unwrap_err();
    assert!(e.to_string().contains("interval"), "{e}");
}

/// With a hung metric and long deadlines, a cancelled run returns after the shutdown grace,
/// not after the metric deadline. Time is tokio's paused clock: deterministic, not wall time.
#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_hung_tick_after_the_grace() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    // A metric that never answers, like a hung Prometheus.
    let hung = Arc::new(StaticMetric::new("load", 1.0));
    hung.hang();
    let t = TargetSpec::new(Scope::new("app"), fake, created("load")).with_source(hung);
    let passes = Arc::new(Passes::default());
    let grace = Duration::from_secs(2);
    let engine = Arc::new(
        Engine::new(
            EngineConfig::default()
                .with_tick_timeout(Duration::from_secs(600))
                .with_metric_timeout(Duration::from_secs(600))
                .with_shutdown_grace(grace),
            Arc::new(vec![t]),
        )
        .with_observer(passes.clone()),
    );
    let (cancel, run) = spawn_run(&engine);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(passes.records.lock().unwrap().is_empty(), "the tick hangs");
    let cancelled_at = tokio::time::Instant::now();
    cancel.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(cancelled_at.elapsed(), grace, "ended by the grace");
    assert!(
        passes.records.lock().unwrap().is_empty(),
        "the dropped tick recorded nothing"
    );
}

#[test]
fn actions_sent_when_the_grace_ends_are_logged_as_sent_with_unknown_outcome() {
    let lines = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let lines = lines.clone();
            move || lines.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            // A backend whose creates are sent and never answered.
            let scaler = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
            scaler.hang_next(Op::Create, u32::MAX);
            let t = TargetSpec::new(Scope::new("web"), scaler, created("3"));
            let engine = Arc::new(Engine::new(
                EngineConfig::default()
                    .with_tick_timeout(Duration::from_secs(600))
                    .with_shutdown_grace(Duration::from_secs(1)),
                Arc::new(vec![t]),
            ));
            let (cancel, run) = spawn_run(&engine);
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
            run.await.unwrap().unwrap();
        });
    });
    let text = lines.text();
    assert!(
        text.contains("ticks still in flight after the grace of 1 s"),
        "{text}"
    );
    let sent = text
        .lines()
        .filter(|l| l.contains("was sent and cancelled before it answered"))
        .count();
    // Action concurrency 4 by default: both planned creates were in flight.
    assert_eq!(sent, 2, "{text}");
    assert!(text.contains("app=web"), "{text}");
}

/// A metric that fails is reported once by name, not as ``metric `x`: metric `x`: ``.
#[tokio::test]
async fn a_failed_metric_message_names_the_metric_once() {
    let fake = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let metric = Arc::new(StaticMetric::new("load", 1.0));
    metric.fail("broker down");
    let t = TargetSpec::new(Scope::new("app"), fake, created("load")).with_source(metric);
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![t]));
    let r = engine.run_once().await.unwrap().remove(0);
    let MetricReading::Failed { message, .. } = &r.metrics["load"] else {
        panic!("{r:?}")
    };
    assert!(!message.contains("metric `load`"), "{message}");
    let notes = r.decision.unwrap().notes.join("; ");
    assert_eq!(
        notes.matches("load").count(),
        1,
        "the name appears once: {notes}"
    );
}
