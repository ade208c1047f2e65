//! Policy tests: validation, error rule, limits, stabilization, steps, cooldowns.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetscale_core::policy::{
    CountRule, Decision, ErrorPolicy, Limits, MetricReadings, Policy, PolicyState,
};
use fleetscale_core::{Bounds, Capabilities, Counts, Error, Scope};

/// A backend whose creates clone a template (Fly): created counts keep at least one.
const CLONES: Capabilities = Capabilities::DEFAULT;

/// A backend that creates from nothing: created counts may reach zero.
const POOL: Capabilities = Capabilities::DEFAULT.with_create_needs_template(false);
use proptest::prelude::*;

fn rule(e: &str) -> CountRule {
    CountRule::from_settings("created", Some(e), None, None).unwrap()
}

fn counts(created: u32, started: u32) -> Counts {
    Counts {
        created,
        started,
        stopped: created - started,
        ..Counts::default()
    }
}

fn readings(pairs: &[(&str, Result<f64, &str>)]) -> MetricReadings {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map_err(str::to_owned)))
        .collect()
}

fn scope() -> Scope {
    Scope::new("my-app")
}

/// A policy whose created count is the metric `q`, within `limits`.
fn q_policy(limits: Limits) -> Policy {
    Policy {
        created: rule("q"),
        limits,
        ..Policy::default()
    }
}

/// The readings of a policy whose only metric is `q`.
fn only_q(value: Result<f64, &str>) -> MetricReadings {
    readings(&[("q", value)])
}

/// One decision of `p` for `my-app` with `created` machines of which `started` run.
fn tick(
    p: &Policy,
    st: &mut PolicyState,
    (created, started): (u32, u32),
    metrics: &MetricReadings,
    capabilities: Capabilities,
    now: Instant,
) -> Decision {
    p.decide(
        &scope(),
        &counts(created, started),
        metrics,
        capabilities,
        st,
        now,
    )
}

#[test]
fn fly_autoscaler_validation_rules() {
    let e = |s: Option<&str>, min: Option<&str>, max: Option<&str>| {
        CountRule::from_settings("created", s, min, max)
            .unwrap_err()
            .to_string()
    };
    assert!(e(Some("1"), Some("1"), Some("2")).contains("cannot specify both"));
    assert!(e(None, Some("1"), None).contains("requires max-created-machine-count"));
    assert!(e(None, None, Some("1")).contains("requires min-created-machine-count"));
    assert_eq!(
        CountRule::from_settings("created", Some("  "), None, None).unwrap(),
        CountRule::Undefined
    );
    let p = Policy::default();
    assert!(p
        .check(&[])
        .unwrap_err()
        .to_string()
        .contains("at least one"));
}

#[test]
fn metric_names_may_not_shadow_built_ins_and_unknown_variables_fail_at_load() {
    let p = Policy {
        created: rule("min(running_machines + 1, 10)"),
        ..Policy::default()
    };
    assert!(p.check(&["running_machines"]).is_ok());
    let err = p
        .check(&["created_machines", "running_machines"])
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("created_machines"));
    let typed = Policy {
        created: rule("app_name + 1"),
        ..Policy::default()
    };
    let err = typed.check(&[]).unwrap_err();
    assert!(matches!(err, Error::Expression(_)), "{err}");
    let boolean = Policy {
        created: rule("created_machines > 2"),
        ..Policy::default()
    };
    assert!(boolean
        .check(&[])
        .unwrap_err()
        .to_string()
        .contains("must be a number"));
    let err = p.check(&["other"]).unwrap_err();
    assert!(matches!(err, Error::Expression(_)), "{err}");
    assert!(err.to_string().contains("running_machines"), "{err}");
}

#[test]
fn evaluates_the_blueprint_with_counts_and_app_name() {
    let p = Policy {
        created: rule("min(running_machines + 1, 10)"),
        started: CountRule::from_settings(
            "started",
            Some("app_name == 'my-app' ? started_machines : 0"),
            None,
            None,
        )
        .unwrap(),
        ..Policy::default()
    };
    let mut st = PolicyState::default();
    for (running, want) in [(0.0, 1), (1.0, 2), (9.0, 10), (40.0, 10)] {
        let running = readings(&[("running_machines", Ok(running))]);
        let d = tick(&p, &mut st, (3, 2), &running, CLONES, Instant::now());
        assert_eq!(d.targets.created, Bounds::exactly(want), "{d:?}");
        assert_eq!(d.targets.started, Bounds::exactly(2));
        assert!(!d.held);
    }
}

#[test]
fn failed_metric_holds_and_never_scales_in() {
    let p = q_policy(Limits::default());
    let mut st = PolicyState::default();
    let d = tick(
        &p,
        &mut st,
        (5, 5),
        &only_q(Err("timeout")),
        POOL,
        Instant::now(),
    );
    assert!(d.held);
    assert_eq!(d.targets.created, Bounds::NONE);
    assert!(d.notes.iter().any(|n| n.contains("timeout")));
    assert_eq!(st.consecutive_failures, 1);
}

#[test]
fn hold_still_enforces_hard_limits() {
    let p = q_policy(Limits {
        created: Bounds::between(3, 8),
        ..Limits::default()
    });
    let mut st = PolicyState::default();
    let d = tick(
        &p,
        &mut st,
        (1, 1),
        &only_q(Err("down")),
        POOL,
        Instant::now(),
    );
    assert_eq!(d.targets.created, Bounds::exactly(3));
}

#[test]
fn expression_errors_are_failures_too() {
    let p = Policy {
        created: rule("q / 0"),
        ..Policy::default()
    };
    let mut st = PolicyState::default();
    let d = tick(&p, &mut st, (2, 2), &only_q(Ok(1.0)), POOL, Instant::now());
    assert!(d.held, "{d:?}");
    assert_eq!(st.consecutive_failures, 1);
}

#[test]
fn fallback_after_n_failures_then_recovers() {
    let p = Policy {
        created: rule("q"),
        on_error: ErrorPolicy::Fallback {
            after_failures: 3,
            count: 4,
        },
        ..Policy::default()
    };
    let mut st = PolicyState::default();
    let now = Instant::now();
    let fail = only_q(Err("x"));
    for _ in 0..2 {
        assert!(tick(&p, &mut st, (1, 1), &fail, POOL, now).held);
    }
    let d = tick(&p, &mut st, (1, 1), &fail, POOL, now);
    assert!(!d.held);
    assert_eq!(d.targets.created, Bounds::exactly(4));
    let d = tick(&p, &mut st, (4, 4), &only_q(Ok(2.0)), POOL, now);
    assert_eq!(d.targets.created, Bounds::exactly(2));
    assert_eq!(st.consecutive_failures, 0);
    let zero = Policy {
        on_error: ErrorPolicy::Fallback {
            after_failures: 0,
            count: 1,
        },
        ..p
    };
    assert!(zero.check(&["q"]).is_err());
}

#[test]
fn hard_limits_clamp_and_created_keeps_one() {
    let p = q_policy(Limits {
        created: Bounds::between(2, 6),
        ..Limits::default()
    });
    let mut st = PolicyState::default();
    for (q, want) in [(0.0, 2), (4.0, 4), (100.0, 6)] {
        let d = tick(&p, &mut st, (3, 3), &only_q(Ok(q)), CLONES, Instant::now());
        assert_eq!(d.targets.created, Bounds::exactly(want));
    }
    let p = q_policy(Limits::default());
    let d = tick(
        &p,
        &mut st,
        (3, 3),
        &only_q(Ok(0.0)),
        CLONES,
        Instant::now(),
    );
    assert_eq!(d.targets.created, Bounds::exactly(1));
}

#[test]
fn scale_in_stabilization_keeps_the_highest_recent_max() {
    let p = q_policy(Limits {
        scale_in_stabilization: Duration::from_secs(300),
        ..Limits::default()
    });
    let mut st = PolicyState::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut decide = |q: f64, s: u64| {
        tick(&p, &mut st, (5, 5), &only_q(Ok(q)), POOL, at(s))
            .targets
            .created
    };
    assert_eq!(decide(8.0, 0), Bounds::exactly(8));
    // The recommendation drops, but 8 was seen within the window: max stays 8.
    assert_eq!(decide(3.0, 60), Bounds::between(3, 8));
    assert_eq!(decide(2.0, 200), Bounds::between(2, 8));
    // 301 s after the 8: the highest left in the window is 3.
    assert_eq!(decide(2.0, 301), Bounds::between(2, 3));
    // Scale-up is never delayed.
    assert_eq!(decide(12.0, 302), Bounds::exactly(12));
}

#[test]
fn step_limits_bound_each_tick() {
    let p = q_policy(Limits {
        max_step_up: Some(2),
        max_step_down: Some(1),
        ..Limits::default()
    });
    let mut st = PolicyState::default();
    let mut d = |q: f64| {
        tick(&p, &mut st, (5, 5), &only_q(Ok(q)), POOL, Instant::now())
            .targets
            .created
    };
    assert_eq!(d(20.0), Bounds::between(7, 20));
    assert_eq!(d(1.0), Bounds::between(1, 4));
    assert_eq!(d(6.0), Bounds::exactly(6));
}

#[test]
fn cooldowns_hold_after_actions() {
    let p = q_policy(Limits {
        cooldown_after_scale_up: Duration::from_secs(60),
        cooldown_after_scale_down: Duration::from_secs(120),
        ..Limits::default()
    });
    let mut st = PolicyState::default();
    let t0 = Instant::now();
    st.record_actions(t0, true, false);
    let r = only_q(Ok(9.0));
    let d = tick(&p, &mut st, (5, 5), &r, POOL, t0 + Duration::from_secs(30));
    assert!(d.held);
    assert_eq!(d.targets.created, Bounds::NONE);
    let d = tick(&p, &mut st, (5, 5), &r, POOL, t0 + Duration::from_secs(61));
    assert_eq!(d.targets.created, Bounds::exactly(9));
    st.record_actions(t0 + Duration::from_secs(61), false, true);
    let d = tick(&p, &mut st, (9, 9), &r, POOL, t0 + Duration::from_secs(150));
    assert!(d.held);
}

#[test]
fn evaluate_rules_matches_eval_output_shape() {
    let p = Policy {
        created: CountRule::from_settings("created", None, Some("q"), Some("q * 2")).unwrap(),
        ..Policy::default()
    };
    let t = p
        .evaluate_rules(
            &scope(),
            &counts(1, 1),
            &BTreeMap::from([("q".to_string(), 2.6)]),
            CLONES,
        )
        .unwrap();
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        r#"{"created":{"min":3,"max":5},"started":{"min":null,"max":null}}"#
    );
}

proptest! {
    /// Whatever the metric, the targets respect the hard limits and a failure never lowers max.
    #[test]
    fn targets_respect_hard_limits(q in -1e6f64..1e6, lo in 0u32..10, span in 0u32..10, created in 0u32..30, fail in any::<bool>()) {
        let p = q_policy(Limits { created: Bounds::between(lo, lo + span), ..Limits::default() });
        let mut st = PolicyState::default();
        let r = only_q(if fail { Err("x") } else { Ok(q) });
        let d = tick(&p, &mut st, (created, 0), &r, POOL, Instant::now());
        if let Some(min) = d.targets.created.min { prop_assert!(min >= lo && min <= lo + span); }
        if let Some(max) = d.targets.created.max { prop_assert!(max >= lo && max <= lo + span); }
        if fail {
            prop_assert!(d.targets.created.max.is_none_or(|m| m >= created.min(lo + span)));
        }
    }
}
