//! The autoscaler's own `/metrics`: exact names, labels and values, checked by parsing the
//! output, from plain data, from hand-built decision records, and from a running engine whose
//! metric comes from a real Prometheus; and a real Prometheus scraping the output.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::{Action, ActionKind};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::{
    ActionError, ActionOutcome, ActionStep, DecisionObserver, DecisionRecord, MetricReading,
    TickStage, TickStatus,
};
use fleetscale_core::testing::FakeScaler;
use fleetscale_core::{
    Bounds, Counts, CreateRequest, Error, ErrorKind, MachineId, MachineState, Scope, Targets,
};
use fleetscale_metrics::harness::{self, Exposition, LoopbackServer, PrometheusServer};
use fleetscale_metrics::{
    AutoscalerMetrics, PrometheusConfig, PrometheusSource, CONTENT_TYPE as OM,
};

fn parse(m: &AutoscalerMetrics) -> Exposition {
    let text = m.encode();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn v(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.value(name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", e.samples))
}

/// One expected sample: name, labels, value.
type Sample<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Asserts each sample `(name, labels, value)`, naming the one that differs.
#[track_caller]
fn assert_samples(e: &Exposition, samples: &[Sample]) {
    for (name, labels, want) in samples {
        assert_eq!(v(e, name, labels), *want, "{name}{labels:?}");
    }
}

#[test]
fn plain_data_renders_exact_names_labels_and_values() {
    let m = AutoscalerMetrics::new();
    m.record_reconcile(Some(ActionKind::Create));
    m.record_reconcile(Some(ActionKind::Create));
    m.record_reconcile(None);
    m.record_action("web", ActionKind::Start, true);
    m.record_action("web", ActionKind::Start, false);
    m.record_action("web", ActionKind::Stop, true);
    m.record_action("web", ActionKind::Create, true);
    m.record_error("web", "rate_limited");
    m.record_error("web", "rate_limited");
    m.set_machines(
        "web",
        &Counts {
            created: 5,
            started: 3,
            stopped: 1,
            transitioning: 1,
            never_started: 1,
            ..Counts::default()
        },
    );
    m.set_targets(
        "web",
        &Targets {
            created: Bounds::between(2, 6),
            started: Bounds {
                min: Some(3),
                max: None,
            },
        },
    );
    m.set_metric_value("web", "queue_depth", 42.5);
    m.record_reclaim("web", true);
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    m.record_tick("web", "scaled", Duration::from_millis(300), true, at);
    m.record_tick(
        "web",
        "failed",
        Duration::from_millis(20),
        false,
        at + Duration::from_secs(60),
    );

    let e = parse(&m);
    assert!(e.eof, "OpenMetrics output ends with # EOF");

    // fly-autoscaler's three families: exact names (no `_total`), exact status values.
    for (name, statuses) in [
        (
            "fas_reconcile_count",
            &["create", "destroy", "start", "stop", "no_scale"][..],
        ),
        ("fas_machine_start_count", &["ok", "failed"][..]),
        ("fas_machine_stop_count", &["ok", "failed"][..]),
    ] {
        let got: BTreeSet<String> = e
            .samples_named(name)
            .iter()
            .map(|s| s.labels["status"].clone())
            .collect();
        let want: BTreeSet<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(e.family(name).unwrap().kind, "gauge", "{name}");
        assert!(e.samples_named(&format!("{name}_total")).is_empty());
    }
    assert_samples(
        &e,
        &[
            ("fas_reconcile_count", &[("status", "create")], 2.0),
            ("fas_reconcile_count", &[("status", "no_scale")], 1.0),
            ("fas_reconcile_count", &[("status", "destroy")], 0.0),
            ("fas_machine_start_count", &[("status", "ok")], 1.0),
            ("fas_machine_start_count", &[("status", "failed")], 1.0),
            ("fas_machine_stop_count", &[("status", "ok")], 1.0),
            ("fas_machine_stop_count", &[("status", "failed")], 0.0),
        ],
    );

    // Per-target series.
    let machines = |state| {
        v(
            &e,
            "fleetscale_machines",
            &[("target", "web"), ("state", state)],
        )
    };
    assert_eq!(
        [
            machines("created"),
            machines("started"),
            machines("stopped"),
            machines("suspended"),
            machines("never_started"),
            machines("failed"),
            machines("transitioning"),
            machines("unmanageable"),
        ],
        [5.0, 3.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    );
    let bound = |kind, bound| {
        e.value(
            "fleetscale_target_machines",
            &[("target", "web"), ("kind", kind), ("bound", bound)],
        )
    };
    assert_eq!(bound("created", "min"), Some(2.0));
    assert_eq!(bound("created", "max"), Some(6.0));
    assert_eq!(bound("started", "min"), Some(3.0));
    assert_eq!(
        bound("started", "max"),
        None,
        "an unbounded side has no series"
    );
    assert_eq!(
        v(
            &e,
            "fleetscale_metric_value",
            &[("target", "web"), ("metric", "queue_depth")]
        ),
        42.5
    );
    let action = |a, s| {
        e.value(
            "fleetscale_machine_actions_total",
            &[("target", "web"), ("action", a), ("status", s)],
        )
    };
    assert_eq!(action("start", "ok"), Some(1.0));
    assert_eq!(action("start", "failed"), Some(1.0));
    assert_eq!(action("stop", "ok"), Some(1.0));
    assert_eq!(action("create", "ok"), Some(1.0));
    assert_eq!(action("destroy", "ok"), None);
    assert_eq!(
        e.family("fleetscale_machine_actions").unwrap().kind,
        "counter"
    );
    assert_samples(
        &e,
        &[
            (
                "fleetscale_errors_total",
                &[("target", "web"), ("kind", "rate_limited")],
                2.0,
            ),
            (
                "fleetscale_ticks_total",
                &[("target", "web"), ("status", "scaled")],
                1.0,
            ),
            (
                "fleetscale_ticks_total",
                &[("target", "web"), ("status", "failed")],
                1.0,
            ),
            (
                "fleetscale_member_reclaims_total",
                &[("target", "web"), ("status", "ok")],
                1.0,
            ),
        ],
    );
    // The failed tick did not move the last success.
    assert_eq!(
        v(
            &e,
            "fleetscale_last_success_timestamp_seconds",
            &[("target", "web")]
        ),
        1_700_000_000.0
    );
    // Histogram: two observations, 0.3 s and 0.02 s.
    assert_eq!(
        e.family("fleetscale_tick_duration_seconds").unwrap().kind,
        "histogram"
    );
    assert_eq!(v(&e, "fleetscale_tick_duration_seconds_count", &[]), 2.0);
    assert!((v(&e, "fleetscale_tick_duration_seconds_sum", &[]) - 0.32).abs() < 1e-9);
    assert_samples(
        &e,
        &[
            (
                "fleetscale_tick_duration_seconds_bucket",
                &[("le", "0.01")],
                0.0,
            ),
            (
                "fleetscale_tick_duration_seconds_bucket",
                &[("le", "0.025")],
                1.0,
            ),
            (
                "fleetscale_tick_duration_seconds_bucket",
                &[("le", "0.5")],
                2.0,
            ),
            (
                "fleetscale_tick_duration_seconds_bucket",
                &[("le", "+Inf")],
                2.0,
            ),
        ],
    );

    // Exactly these sample names, nothing else.
    let names: BTreeSet<String> = e.sample_names();
    let want: BTreeSet<String> = [
        "fas_reconcile_count",
        "fas_machine_start_count",
        "fas_machine_stop_count",
        "fleetscale_machines",
        "fleetscale_target_machines",
        "fleetscale_metric_value",
        "fleetscale_machine_actions_total",
        "fleetscale_errors_total",
        "fleetscale_ticks_total",
        "fleetscale_member_reclaims_total",
        "fleetscale_tick_duration_seconds_bucket",
        "fleetscale_tick_duration_seconds_sum",
        "fleetscale_tick_duration_seconds_count",
        "fleetscale_last_success_timestamp_seconds",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, want);

    // Forgetting the target removes every series labelled with it.
    m.forget_target("web");
    let e = parse(&m);
    let leftover: Vec<_> = e
        .samples
        .iter()
        .filter(|s| s.labels.get("target").map(String::as_str) == Some("web"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:#?}");
    assert_eq!(v(&e, "fas_reconcile_count", &[("status", "create")]), 2.0);
}

fn outcome(action: Action, error: Option<(Error, ActionStep)>) -> ActionOutcome {
    let mut o = ActionOutcome::new(action);
    o.error = error.map(|(e, step)| ActionError::new(step, &e));
    o.duration = Duration::from_millis(5);
    o
}

fn record(target: &str, status: TickStatus) -> DecisionRecord {
    let mut r = DecisionRecord::new(target, 1, UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    r.duration = Duration::from_millis(40);
    r.status = status;
    r
}

#[test]
fn decision_records_map_onto_the_series() {
    let m = AutoscalerMetrics::new();

    // A tick that started two machines (one failed) after reading one metric and failing another.
    let mut r = record("api", TickStatus::Scaled);
    r.counts = Some(Counts {
        created: 4,
        started: 1,
        stopped: 3,
        ..Counts::default()
    });
    r.metrics.insert("load".into(), MetricReading::Value(7.0));
    r.metrics.insert(
        "queue".into(),
        MetricReading::Failed {
            kind: ErrorKind::Timeout,
            message: "slow".into(),
        },
    );
    let start = |id: &str| Action::Start {
        id: MachineId::new(id),
        from: MachineState::Stopped,
        reason: "test".into(),
    };
    r.outcomes = vec![
        outcome(start("m1"), None),
        outcome(
            start("m2"),
            Some((Error::capacity("none left"), ActionStep::Start)),
        ),
    ];
    r.reclaims = vec![
        ("peer-a".into(), Ok(5)),
        ("peer-b".into(), Err("no".into())),
    ];
    m.observe(&r);

    // A failed tick (list failed) counts an error but no reconcile.
    m.observe(&record(
        "api",
        TickStatus::Failed {
            stage: TickStage::List,
            kind: ErrorKind::Unavailable,
            message: "down".into(),
        },
    ));

    // A paused tick (a deploy in progress) counts no reconcile either (the totals below).
    m.observe(&record(
        "deploying",
        TickStatus::Paused {
            reason: "release in progress".into(),
        },
    ));

    // A clean no-scale tick of another target sets its last success.
    let mut ok = record("worker", TickStatus::NoScale);
    ok.metrics.insert("load".into(), MetricReading::Value(1.0));
    m.observe(&ok);

    // A dry run executes nothing: reconcile counts no_scale.
    let mut dry = record("worker", TickStatus::DryRun);
    dry.plan = None;
    m.observe(&dry);

    // A destroy that failed.
    let mut d = record("worker", TickStatus::Scaled);
    d.outcomes = vec![outcome(
        Action::Destroy {
            id: MachineId::new("m9"),
            from: MachineState::Stopped,
            reason: "test".into(),
        },
        Some((Error::not_found("machine m9"), ActionStep::Destroy)),
    )];
    m.observe(&d);

    // A create that succeeded.
    let mut c = record("worker", TickStatus::Scaled);
    c.outcomes = vec![outcome(
        Action::Create {
            request: CreateRequest::default(),
            reason: "test".into(),
        },
        None,
    )];
    m.observe(&c);

    let e = parse(&m);
    assert_samples(
        &e,
        &[
            ("fas_reconcile_count", &[("status", "start")], 1.0),
            ("fas_reconcile_count", &[("status", "destroy")], 1.0),
            ("fas_reconcile_count", &[("status", "create")], 1.0),
            ("fas_reconcile_count", &[("status", "no_scale")], 2.0),
            ("fas_reconcile_count", &[("status", "stop")], 0.0),
            ("fas_machine_start_count", &[("status", "ok")], 1.0),
            ("fas_machine_start_count", &[("status", "failed")], 1.0),
            (
                "fleetscale_machines",
                &[("target", "api"), ("state", "stopped")],
                3.0,
            ),
            (
                "fleetscale_metric_value",
                &[("target", "api"), ("metric", "load")],
                7.0,
            ),
        ],
    );
    assert_eq!(
        e.value(
            "fleetscale_metric_value",
            &[("target", "api"), ("metric", "queue")]
        ),
        None
    );
    for (target, kind, n) in [
        ("api", "timeout", 1.0),
        ("api", "capacity", 1.0),
        ("api", "unavailable", 1.0),
        ("worker", "not_found", 1.0),
    ] {
        assert_eq!(
            v(
                &e,
                "fleetscale_errors_total",
                &[("target", target), ("kind", kind)]
            ),
            n,
            "{target} {kind}"
        );
    }
    assert_samples(
        &e,
        &[
            (
                "fleetscale_machine_actions_total",
                &[
                    ("target", "worker"),
                    ("action", "destroy"),
                    ("status", "failed"),
                ],
                1.0,
            ),
            (
                "fleetscale_member_reclaims_total",
                &[("target", "api"), ("status", "failed")],
                1.0,
            ),
            (
                "fleetscale_ticks_total",
                &[("target", "api"), ("status", "failed")],
                1.0,
            ),
            (
                "fleetscale_ticks_total",
                &[("target", "deploying"), ("status", "paused")],
                1.0,
            ),
        ],
    );
    // api never had a clean tick (a metric and an action failed); worker did.
    assert_eq!(
        e.value(
            "fleetscale_last_success_timestamp_seconds",
            &[("target", "api")]
        ),
        None
    );
    let worker = v(
        &e,
        "fleetscale_last_success_timestamp_seconds",
        &[("target", "worker")],
    );
    assert!((worker - 1_800_000_000.04).abs() < 1e-3, "{worker}");
    assert_eq!(v(&e, "fleetscale_tick_duration_seconds_count", &[]), 7.0);
}

fn serve(metrics: Arc<AutoscalerMetrics>) -> LoopbackServer {
    LoopbackServer::start(axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = metrics.encode();
            async move { ([(CONTENT_TYPE, OM)], body) }
        }),
    ))
    .unwrap()
}

/// The whole chain: exporter gauge -> real Prometheus -> PrometheusSource -> engine -> fake
/// machines -> AutoscalerMetrics -> `/metrics`, parsed, and scraped by a second real Prometheus.
#[tokio::test]
async fn a_running_engine_exposes_its_decisions_on_metrics() {
    let lab = harness::shared_lab()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    lab.exporter.set("e2e_queue_depth", &[("app", "web")], 3.0);
    lab.prometheus
        .wait_for_values("e2e_queue_depth", &["3"])
        .await
        .unwrap();

    let scaler = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let source = Arc::new(
        PrometheusSource::new(PrometheusConfig::new(
            "queue_depth",
            lab.prometheus.url(),
            "e2e_queue_depth{app=\"$APP_NAME\"}",
        ))
        .unwrap(),
    );
    let policy = Policy {
        created: CountRule::from_settings("created", Some("queue_depth"), None, None).unwrap(),
        started: CountRule::from_settings("started", Some("queue_depth"), None, None).unwrap(),
        ..Policy::default()
    };
    let spec = TargetSpec::new(Scope::new("web"), scaler.clone(), policy).with_source(source);
    spec.validate().unwrap();
    let metrics = Arc::new(AutoscalerMetrics::new());
    let engine =
        Engine::new(EngineConfig::default(), Arc::new(vec![spec])).with_observer(metrics.clone());

    let first = engine.run_once().await.unwrap().remove(0);
    assert_eq!(first.status, TickStatus::Scaled, "{first:?}");
    assert_eq!(Counts::of(&scaler.machines()).created, 3);

    let e = parse(&metrics);
    assert_samples(
        &e,
        &[
            ("fas_reconcile_count", &[("status", "create")], 1.0),
            ("fas_reconcile_count", &[("status", "no_scale")], 0.0),
            (
                "fleetscale_machine_actions_total",
                &[("target", "web"), ("action", "create"), ("status", "ok")],
                2.0,
            ),
            (
                "fleetscale_metric_value",
                &[("target", "web"), ("metric", "queue_depth")],
                3.0,
            ),
        ],
    );
    // Counts are the inventory the tick started from.
    assert_eq!(
        v(
            &e,
            "fleetscale_machines",
            &[("target", "web"), ("state", "created")]
        ),
        1.0
    );
    for (kind, bound) in [
        ("created", "min"),
        ("created", "max"),
        ("started", "min"),
        ("started", "max"),
    ] {
        assert_eq!(
            v(
                &e,
                "fleetscale_target_machines",
                &[("target", "web"), ("kind", kind), ("bound", bound)]
            ),
            3.0
        );
    }
    let first_success = v(
        &e,
        "fleetscale_last_success_timestamp_seconds",
        &[("target", "web")],
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        first_success > now - 3600.0 && first_success <= now + 1.0,
        "{first_success}"
    );

    // Second tick: nothing to do.
    let second = engine.run_once().await.unwrap().remove(0);
    assert_eq!(second.status, TickStatus::NoScale, "{second:?}");

    // The metric disappears from Prometheus: the read fails, the engine holds.
    lab.exporter.remove("e2e_queue_depth", &[("app", "web")]);
    lab.prometheus
        .wait_for("e2e_queue_depth", harness::DEFAULT_DEADLINE, |r| {
            r.is_empty()
        })
        .await
        .unwrap();
    let third = engine.run_once().await.unwrap().remove(0);
    assert!(
        matches!(
            third.metrics.get("queue_depth"),
            Some(MetricReading::Failed { .. })
        ),
        "{third:?}"
    );
    let e = parse(&metrics);
    assert_samples(
        &e,
        &[
            ("fas_reconcile_count", &[("status", "no_scale")], 2.0),
            (
                "fleetscale_errors_total",
                &[("target", "web"), ("kind", "metric")],
                1.0,
            ),
        ],
    );
    assert_eq!(
        e.value(
            "fleetscale_metric_value",
            &[("target", "web"), ("metric", "queue_depth")]
        ),
        None
    );
    assert_samples(
        &e,
        &[
            (
                "fleetscale_ticks_total",
                &[("target", "web"), ("status", "scaled")],
                1.0,
            ),
            ("fleetscale_tick_duration_seconds_count", &[], 3.0),
        ],
    );

    // A real Prometheus scrapes the page and stores fly-autoscaler's exact series names.
    let page = serve(metrics.clone());
    let scraper = PrometheusServer::start(&[page.addr()]).await.unwrap();
    scraper
        .wait_for_values("fas_reconcile_count{status=\"create\"}", &["1"])
        .await
        .unwrap();
    scraper
        .wait_for_values("fas_reconcile_count", &["1", "0", "0", "0", "2"])
        .await
        .unwrap();
    scraper
        .wait_for_values(
            "fleetscale_machine_actions_total{target=\"web\",action=\"create\",status=\"ok\"}",
            &["2"],
        )
        .await
        .unwrap();
    scraper
        .wait_for_values("fas_machine_start_count", &["0", "0"])
        .await
        .unwrap();
    scraper
        .wait_for_values("fleetscale_tick_duration_seconds_count", &["3"])
        .await
        .unwrap();
}
