//! [`replay`]: a policy, tick by tick, over a [`Trace`], against a [`SimFleet`] and optionally
//! Fly Proxy.
//!
//! At every sample time `t`, in this order:
//! 1. the fleet's transitions due by `t` complete (each at its own instant);
//! 2. Fly Proxy (when modelled) autostarts spares for the load at `t`, or runs an autostop
//!    pass when its period has come;
//! 3. when a tick is due (the first sample, then every [`ReplayConfig::interval`]), the policy
//!    decides with [`Policy::decide`] — the metrics of the sample (a missing cell is a failed
//!    read), the [fleet quantities](ReplayConfig::fleet_metrics) and the counts of the
//!    simulated inventory — and [`plan_actions`] plans against that inventory, exactly as the
//!    engine does; every planned action then applies to the fleet (they all succeed, each
//!    taking its latency), and the cooldown clocks restart as the engine restarts them;
//! 4. a [`Frame`] records the load, the targets and the machines by state.
//!
//! The last sample lasts one [`Trace::step_ms`]. Same inputs, same output, byte for byte: the
//! clock is the trace's, in integer milliseconds, and nothing reads the wall clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetscale_core::plan::{plan_actions, ActionKind, PlanOptions};
use fleetscale_core::policy::{CountRule, MetricReadings, Policy, PolicyState};
use fleetscale_core::{Capabilities, Counts, InitialState, Scope, Targets};
use serde::Serialize;

use crate::error::{Result, SimError};
use crate::fleet::{FleetConfig, FleetQuantity, SimFleet, SimState};
use crate::proxy::{FlyProxy, ProxyAction, ProxyConfig};
use crate::summary::Summary;
use crate::trace::{format_time, Trace};

/// Everything a replay needs besides the trace.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// A label for tables and plots (e.g. the configuration file's name).
    pub label: String,
    /// The target (`app_name` in expressions).
    pub scope: Scope,
    /// The policy whose decisions are replayed (the same [`Policy`] the engine runs).
    pub policy: Policy,
    /// The planner's options (initial state of new machines, per-tick caps, and the
    /// capabilities of the backend simulated).
    pub plan_options: PlanOptions,
    /// Time between ticks (the engine's interval; 15 s by default).
    pub interval: Duration,
    /// How the simulated machines behave: transition latencies and the initial fleet.
    pub fleet: FleetConfig,
    /// Fly Proxy, for Fly targets whose machines it starts and stops.
    pub proxy: Option<ProxyConfig>,
    /// Metrics that stand for a quantity of the simulated fleet instead of a trace column.
    pub fleet_metrics: BTreeMap<String, FleetQuantity>,
}

impl ReplayConfig {
    /// A replay of `policy` for target `name` with the engine's defaults (15 s interval, new
    /// machines started, one started machine at the beginning, no proxy) and the
    /// capabilities of a Fly app (suspend, stopped creates, creates clone a machine).
    pub fn new(label: impl Into<String>, name: impl Into<String>, policy: Policy) -> Self {
        ReplayConfig {
            label: label.into(),
            scope: Scope::new(name.into()),
            policy,
            plan_options: PlanOptions::default().with_capabilities(
                Capabilities::default()
                    .with_suspend(true)
                    .with_create_needs_template(true)
                    .with_create_stopped(true),
            ),
            interval: Duration::from_secs(15),
            fleet: FleetConfig::default(),
            proxy: None,
            fleet_metrics: BTreeMap::new(),
        }
    }

    /// Fly's "Autoscale Machines" blueprint as a replay: the created count follows
    /// `created_rule` (the blueprint's is `min(running_machines + 1, 10)`), new machines are
    /// created stopped, `running_machines` is the fleet's started machines, and the Fly Proxy
    /// model ([`ProxyConfig::new`] over the `load` column) starts and stops machines.
    ///
    /// # Errors
    /// The rule's error ([`fleetscale_core::Error::Expression`] or `Config`), as
    /// [`CountRule::from_settings`] gives it.
    pub fn fly_blueprint(
        label: impl Into<String>,
        name: impl Into<String>,
        created_rule: &str,
    ) -> std::result::Result<Self, fleetscale_core::Error> {
        let policy = Policy {
            created: CountRule::from_settings("created", Some(created_rule), None, None)?,
            ..Policy::default()
        };
        let mut config = ReplayConfig::new(label, name, policy);
        config.plan_options.initial_state = InitialState::Stopped;
        config
            .fleet_metrics
            .insert("running_machines".into(), FleetQuantity::Started);
        config.proxy = Some(ProxyConfig::new("load"));
        Ok(config)
    }

    /// Checks the settings against the trace: every variable the rules use comes from a
    /// column, a fleet quantity or the built-ins; the proxy's load column exists; the
    /// interval is not zero.
    ///
    /// # Errors
    /// [`SimError::Config`] naming what is missing.
    pub fn check(&self, trace: &Trace) -> Result<()> {
        if self.interval.is_zero() {
            return Err(SimError::Config(
                "the tick interval must be greater than zero".into(),
            ));
        }
        if trace.is_empty() {
            return Err(SimError::Config("the trace has no sample".into()));
        }
        let builtin = |v: &str| {
            fleetscale_core::policy::COUNT_VARIABLES.contains(&v)
                || v == fleetscale_core::policy::APP_NAME_VARIABLE
        };
        let missing: Vec<&str> = self
            .policy
            .variables()
            .into_iter()
            .filter(|v| !builtin(v) && !trace.has(v) && !self.fleet_metrics.contains_key(*v))
            .collect();
        if !missing.is_empty() {
            let have: Vec<&str> = trace.names().collect();
            return Err(SimError::Config(format!(
                "the rules of {} use {} but the history has no such column (it has: {}) and no fleet quantity stands for it",
                self.label,
                missing.join(", "),
                if have.is_empty() { "none".to_owned() } else { have.join(", ") }
            )));
        }
        if let Some(p) = &self.proxy {
            if !trace.has(&p.load_metric) {
                return Err(SimError::Config(format!(
                    "the Fly Proxy model reads the load from `{}`, which the history does not have",
                    p.load_metric
                )));
            }
            if !(p.soft_limit.is_finite() && p.soft_limit > 0.0) {
                return Err(SimError::Config(format!(
                    "the soft limit must be a positive number, not {}",
                    p.soft_limit
                )));
            }
        }
        Ok(())
    }
}

/// Who acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The autoscaler (the policy's plan).
    Autoscaler,
    /// Fly Proxy (autostart, autostop).
    Proxy,
}

/// One action during the replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionEvent {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who acted: the autoscaler or Fly Proxy.
    pub by: Actor,
    /// Which action (create, start, stop, suspend, destroy).
    pub kind: ActionKind,
    /// On which machine (the new one for a create).
    pub machine: String,
}

/// The state of the replay at one sample, after its actions.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The sample time, Unix milliseconds.
    pub at_ms: i64,
    /// The proxy's load at this sample (`None` without a proxy or a value).
    pub load: Option<f64>,
    /// The targets of the latest tick.
    pub targets: Option<Targets>,
    /// Machines by state.
    pub census: BTreeMap<SimState, u32>,
    /// Whether a tick ran at this sample.
    pub ticked: bool,
}

/// What a replay produced: the summary figures, a frame per sample and every action.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The figures of the whole run (ticks, actions, peaks, time above max or below min).
    pub summary: Summary,
    /// One frame per sample.
    pub frames: Vec<Frame>,
    /// Every action, in order.
    pub actions: Vec<ActionEvent>,
}

/// Replays `config` over `trace`. See the [module docs](self) for the order of events.
///
/// # Errors
/// [`SimError::Config`] when [`ReplayConfig::check`] fails; nothing is replayed then.
///
/// # Example
/// ```
/// use fleetscale_core::policy::{CountRule, Policy};
/// use fleetscale_sim::{replay, ReplayConfig, Trace};
///
/// let policy = Policy {
///     created: CountRule::from_settings("created", Some("ceil(load / 10)"), None, None).unwrap(),
///     ..Policy::default()
/// };
/// let trace = Trace::from_csv("timestamp,load\n0,5\n15,35\n30,35\n45,5\n").unwrap();
/// let r = replay(&trace, &ReplayConfig::new("ten per machine", "web", policy)).unwrap();
/// assert_eq!(r.summary.peak_machines, 4);
/// assert_eq!(r.summary.actions["create"], 3);
/// ```
pub fn replay(trace: &Trace, config: &ReplayConfig) -> Result<Replay> {
    config.check(trace)?;
    let times = trace.timestamps();
    let t0 = times[0];
    let step = trace
        .step_ms()
        .unwrap_or_else(|| i64::try_from(config.interval.as_millis()).unwrap_or(i64::MAX));
    let end = times[times.len() - 1] + step;
    let interval = i64::try_from(config.interval.as_millis()).unwrap_or(i64::MAX);
    // The policy's cooldowns and stabilization window compare `Instant`s: one fixed base
    // plus the simulated offset keeps them on the trace's clock.
    let base = Instant::now();
    let instant = |t: i64| base + Duration::from_millis((t - t0).max(0) as u64);

    let mut fleet = SimFleet::new(config.fleet, t0);
    let mut proxy = config.proxy.clone().map(FlyProxy::new);
    let mut state = PolicyState::default();
    let mut next_tick = t0;
    let mut frames = Vec::with_capacity(times.len());
    let mut actions = Vec::new();
    let mut targets: Option<Targets> = None;
    let mut ticks = 0u64;
    let mut held = 0u64;
    let mut failed_reads = 0u64;
    let mut notes: BTreeMap<String, u64> = BTreeMap::new();

    for (i, &t) in times.iter().enumerate() {
        fleet.advance(t);
        let load = config
            .proxy
            .as_ref()
            .and_then(|p| trace.value(&p.load_metric, i));
        if let (Some(p), Some(load)) = (proxy.as_mut(), load) {
            for a in p.pass(t, load, &fleet.proxy_view()) {
                let (kind, id, ok) = match &a {
                    ProxyAction::Autostart(id) => {
                        (ActionKind::Start, id, fleet.proxy_start(id.as_str(), t))
                    }
                    ProxyAction::Autostop(id) => (ActionKind::Stop, id, fleet.stop(id.as_str(), t)),
                };
                if ok {
                    actions.push(ActionEvent {
                        at_ms: t,
                        by: Actor::Proxy,
                        kind,
                        machine: id.0.clone(),
                    });
                }
            }
        }

        let ticked = t >= next_tick;
        if ticked {
            next_tick = t + interval;
            ticks += 1;
            let inventory = fleet.inventory();
            let counts = Counts::of(&inventory);
            let mut readings = MetricReadings::new();
            for name in config.policy.variables() {
                if let Some(q) = config.fleet_metrics.get(name) {
                    readings.insert(name.to_owned(), Ok(f64::from(fleet.quantity(*q))));
                } else if trace.has(name) {
                    let r = trace
                        .value(name, i)
                        .ok_or_else(|| format!("no sample at {}", format_time(t)));
                    if r.is_err() {
                        failed_reads += 1;
                    }
                    readings.insert(name.to_owned(), r);
                }
            }
            let decision = config.policy.decide(
                &config.scope,
                &counts,
                &readings,
                config.plan_options.capabilities,
                &mut state,
                instant(t),
            );
            if decision.held {
                held += 1;
            }
            for n in &decision.notes {
                // Notes that carry a time or a value would make every tick distinct.
                let key = n.split(':').next().unwrap_or(n).to_owned();
                *notes.entry(key).or_default() += 1;
            }
            let plan = plan_actions(&inventory, &decision.targets, &config.plan_options);
            let (mut up, mut down) = (false, false);
            for action in &plan.actions {
                if let Some(id) = fleet.apply(action, t) {
                    up |= action.kind().is_scale_up();
                    down |= !action.kind().is_scale_up();
                    actions.push(ActionEvent {
                        at_ms: t,
                        by: Actor::Autoscaler,
                        kind: action.kind(),
                        machine: id,
                    });
                }
            }
            if up || down {
                state.record_actions(instant(t), up, down);
            }
            fleet.set_targets(t, decision.targets);
            targets = Some(decision.targets);
        }
        frames.push(Frame {
            at_ms: t,
            load,
            targets,
            census: fleet.census(),
            ticked,
        });
    }
    let ledger = fleet.finish(end);
    let census = fleet.census();
    let summary = Summary::build(
        trace,
        config,
        step,
        end,
        &ledger,
        &actions,
        &census,
        crate::summary::TickCounts {
            ticks,
            held,
            failed_reads,
            notes,
        },
    );
    Ok(Replay {
        summary,
        frames,
        actions,
    })
}
