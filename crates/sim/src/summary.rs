//! [`Summary`]: the figures of a replay, as `summary.json` and as a printed table.
//!
//! Every duration is in seconds, computed from integer milliseconds; maps are ordered; the
//! JSON holds nothing that depends on the wall clock or the machine, so the same inputs give
//! a byte-identical file.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetscale_core::plan::ActionKind;
use fleetscale_core::policy::{CountRule, ErrorPolicy, Limits};
use fleetscale_core::InitialState;
use serde::Serialize;

use crate::fleet::{FleetConfig, FleetQuantity, Ledger, SimState};
use crate::proxy::ProxyConfig;
use crate::replay::{ActionEvent, Actor, ReplayConfig};
use crate::trace::{format_time, Trace};

/// The trace that was replayed: time span, sample count, step and metric names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryInfo {
    /// The first sample's time (RFC 3339).
    pub from: String,
    /// The end of the last sample (RFC 3339).
    pub to: String,
    /// Number of samples.
    pub samples: usize,
    /// The usual distance between samples.
    pub step_seconds: f64,
    /// The trace's metric names, sorted.
    pub columns: Vec<String>,
}

/// The policy replayed, as configured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyInfo {
    /// The created rule (`min(running_machines + 1, 10)`, or `min: …, max: …`).
    pub created: Option<String>,
    /// The started rule's source (`min: …, max: …` for a range; `None` when undefined).
    pub started: Option<String>,
    /// Limits, steps, cooldowns, stabilization.
    pub limits: Limits,
    /// What a metric failure does ([`ErrorPolicy`]).
    pub on_error: ErrorPolicy,
    /// The state new machines are created in.
    pub initial_state: InitialState,
}

/// A figure for each of the two counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PerCount {
    /// For the number of machines that exist.
    pub created: f64,
    /// For the number of machines started.
    pub started: f64,
}

/// Waits from Fly Proxy consuming the last spare to a spare being ready again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SpareWaits {
    /// How many times the proxy took the last spare.
    pub count: usize,
    /// The longest wait (0 when none).
    pub longest_seconds: f64,
    /// The median wait (0 when none).
    pub median_seconds: f64,
}

/// Counters of the ticks, collected by the replay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TickCounts {
    /// Ticks run.
    pub ticks: u64,
    /// Ticks whose decision held the counts (a failed read or a cooldown).
    pub held: u64,
    /// Metric reads that found no sample.
    pub failed_reads: u64,
    /// The decisions' notes by their first part, with how many ticks carried each.
    pub notes: BTreeMap<String, u64>,
}

/// The figures of one replay: `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The label of the run (e.g. the configuration file).
    pub label: String,
    /// The target's name the policy was replayed for (`app_name` in expressions).
    pub target: String,
    /// The trace the policy was replayed over.
    pub history: HistoryInfo,
    /// The policy as configured: rules, limits, error policy, initial state.
    pub policy: PolicyInfo,
    /// Time between ticks.
    pub interval_seconds: f64,
    /// The simulated fleet's settings.
    pub fleet: FleetConfig,
    /// Fly Proxy's settings, when modelled.
    pub proxy: Option<ProxyConfig>,
    /// Metrics that followed the simulated fleet.
    pub fleet_metrics: BTreeMap<String, FleetQuantity>,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks that held the counts.
    pub held_ticks: u64,
    /// Metric reads with no sample (each a failed read for the policy).
    pub failed_metric_reads: u64,
    /// What shaped the decisions (`cooldown`, `scale-in stabilized over 5m`, …), with how
    /// many ticks.
    pub decision_notes: BTreeMap<String, u64>,
    /// Machine-seconds by state (every state, zeros included).
    pub machine_seconds: BTreeMap<String, f64>,
    /// The autoscaler's actions by kind (create, destroy, start, stop).
    pub actions: BTreeMap<String, u64>,
    /// Fly Proxy's actions by kind (start, stop).
    pub proxy_actions: BTreeMap<String, u64>,
    /// Most machines existing at once.
    pub peak_machines: u32,
    /// Most machines started at once.
    pub peak_started: u32,
    /// Time with no spare ready (no created, stopped or suspended machine).
    pub no_spare_seconds: f64,
    /// Time with more machines than the latest targets' max: every machine that exists for
    /// `created`; started, starting and stopping machines for `started`.
    pub above_max_seconds: PerCount,
    /// Time with fewer machines than the latest targets' min: machines that exist and are not
    /// being created or destroyed for `created`; machines in `started` for `started`.
    pub below_min_seconds: PerCount,
    /// Waits for a spare after Fly Proxy took the last one.
    pub spare_waits: SpareWaits,
    /// Machines by state at the end.
    pub final_machines: BTreeMap<String, u32>,
    /// Planned actions that could not apply to the simulated fleet (expected 0).
    pub ignored_actions: u32,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn rule(r: &CountRule) -> Option<String> {
    match r {
        CountRule::Undefined => None,
        CountRule::Exact(e) => Some(e.source().to_owned()),
        CountRule::Range { min, max } => {
            Some(format!("min: {}, max: {}", min.source(), max.source()))
        }
    }
}

impl Summary {
    /// Collects the figures of a finished replay.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        trace: &Trace,
        config: &ReplayConfig,
        step_ms: i64,
        end_ms: i64,
        ledger: &Ledger,
        actions: &[ActionEvent],
        census: &BTreeMap<SimState, u32>,
        ticks: TickCounts,
    ) -> Summary {
        let count = |by: Actor, kinds: &[ActionKind]| -> BTreeMap<String, u64> {
            kinds
                .iter()
                .map(|k| {
                    let n = actions
                        .iter()
                        .filter(|a| a.by == by && a.kind == *k)
                        .count();
                    (k.as_str().to_owned(), n as u64)
                })
                .collect()
        };
        let mut waits = ledger.spare_waits_ms.clone();
        waits.sort_unstable();
        Summary {
            label: config.label.clone(),
            target: config.scope.target.clone(),
            history: HistoryInfo {
                from: format_time(trace.timestamps()[0]),
                to: format_time(end_ms),
                samples: trace.len(),
                step_seconds: secs(step_ms),
                columns: trace.names().map(str::to_owned).collect(),
            },
            policy: PolicyInfo {
                created: rule(&config.policy.created),
                started: rule(&config.policy.started),
                limits: config.policy.limits,
                on_error: config.policy.on_error,
                initial_state: config.plan_options.initial_state,
            },
            interval_seconds: config.interval.as_secs_f64(),
            fleet: config.fleet,
            proxy: config.proxy.clone(),
            fleet_metrics: config.fleet_metrics.clone(),
            ticks: ticks.ticks,
            held_ticks: ticks.held,
            failed_metric_reads: ticks.failed_reads,
            decision_notes: ticks.notes,
            machine_seconds: SimState::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_owned(),
                        secs(ledger.state_ms.get(s).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            actions: count(
                Actor::Autoscaler,
                &[
                    ActionKind::Create,
                    ActionKind::Destroy,
                    ActionKind::Start,
                    ActionKind::Stop,
                ],
            ),
            proxy_actions: count(Actor::Proxy, &[ActionKind::Start, ActionKind::Stop]),
            peak_machines: ledger.peak_machines,
            peak_started: ledger.peak_started,
            no_spare_seconds: secs(ledger.no_spare_ms),
            above_max_seconds: PerCount {
                created: secs(ledger.created_above_max_ms),
                started: secs(ledger.started_above_max_ms),
            },
            below_min_seconds: PerCount {
                created: secs(ledger.created_below_min_ms),
                started: secs(ledger.started_below_min_ms),
            },
            spare_waits: SpareWaits {
                count: waits.len(),
                longest_seconds: waits.last().map_or(0.0, |w| secs(*w)),
                median_seconds: if waits.is_empty() {
                    0.0
                } else {
                    secs(waits[waits.len() / 2])
                },
            },
            final_machines: census
                .iter()
                .map(|(s, n)| (s.as_str().to_owned(), *n))
                .collect(),
            ignored_actions: ledger.ignored_actions,
        }
    }

    /// `summary.json`: pretty-printed, ending with a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Every field is a plain number, string or map of them: this cannot fail.
            format!("{{\"error\": {:?}}}", e.to_string())
        });
        s.push('\n');
        s
    }

    /// Machine-hours in `state`.
    pub fn machine_hours(&self, state: SimState) -> f64 {
        self.machine_seconds
            .get(state.as_str())
            .copied()
            .unwrap_or(0.0)
            / 3600.0
    }
}

/// `1h 2m 3s` for a number of seconds (whole seconds; `0s` for zero).
pub fn format_seconds(s: f64) -> String {
    if !(s.is_finite() && s > 0.0) {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
}

fn rows(s: &Summary) -> Vec<(&'static str, String)> {
    let a = |k: &str| s.actions.get(k).copied().unwrap_or(0);
    let p = |k: &str| s.proxy_actions.get(k).copied().unwrap_or(0);
    let h = |st: SimState| format!("{:.2}", s.machine_hours(st));
    vec![
        ("machine-hours started", h(SimState::Started)),
        (
            "machine-hours stopped + suspended",
            format!(
                "{:.2}",
                s.machine_hours(SimState::Stopped) + s.machine_hours(SimState::Suspended)
            ),
        ),
        (
            "machine-hours created (never started)",
            h(SimState::Created),
        ),
        (
            "machine-hours in transition",
            format!(
                "{:.2}",
                [
                    SimState::Creating,
                    SimState::Starting,
                    SimState::Stopping,
                    SimState::Destroying
                ]
                .iter()
                .map(|st| s.machine_hours(*st))
                .sum::<f64>()
            ),
        ),
        (
            "autoscaler create / destroy",
            format!("{} / {}", a("create"), a("destroy")),
        ),
        (
            "autoscaler start / stop",
            format!("{} / {}", a("start"), a("stop")),
        ),
        (
            "Fly Proxy start / stop",
            if s.proxy.is_some() {
                format!("{} / {}", p("start"), p("stop"))
            } else {
                "not modelled".into()
            },
        ),
        (
            "peak machines (started)",
            format!("{} ({})", s.peak_machines, s.peak_started),
        ),
        (
            "time with no spare ready",
            format_seconds(s.no_spare_seconds),
        ),
        (
            "time above max: created / started",
            format!(
                "{} / {}",
                format_seconds(s.above_max_seconds.created),
                format_seconds(s.above_max_seconds.started)
            ),
        ),
        (
            "time below min: created / started",
            format!(
                "{} / {}",
                format_seconds(s.below_min_seconds.created),
                format_seconds(s.below_min_seconds.started)
            ),
        ),
        (
            "spare waits (longest)",
            format!(
                "{} ({})",
                s.spare_waits.count,
                format_seconds(s.spare_waits.longest_seconds)
            ),
        ),
        ("ticks (held)", format!("{} ({})", s.ticks, s.held_ticks)),
    ]
}

/// The printed table: one column per summary (one, or two with `--compare`).
///
/// ```
/// # use fleetscale_core::policy::{CountRule, Policy};
/// # use fleetscale_sim::{replay, table, ReplayConfig, Trace};
/// # let policy = Policy {
/// #     created: CountRule::from_settings("created", Some("2"), None, None).unwrap(),
/// #     ..Policy::default()
/// # };
/// # let trace = Trace::from_csv("timestamp,x\n0,1\n60,1\n").unwrap();
/// let r = replay(&trace, &ReplayConfig::new("two", "web", policy)).unwrap();
/// let text = table(&[&r.summary]);
/// assert!(text.contains("autoscaler create / destroy"));
/// assert!(text.lines().any(|l| l.starts_with("autoscaler create / destroy") && l.ends_with("1 / 0")));
/// ```
pub fn table(summaries: &[&Summary]) -> String {
    let all: Vec<Vec<(&str, String)>> = summaries.iter().map(|s| rows(s)).collect();
    let names: Vec<&str> = all
        .first()
        .map_or(Vec::new(), |r| r.iter().map(|(n, _)| *n).collect());
    let first = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let widths: Vec<usize> = summaries
        .iter()
        .zip(&all)
        .map(|(s, r)| {
            r.iter()
                .map(|(_, v)| v.chars().count())
                .chain([s.label.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = format!("{:<first$}", "");
    for (s, w) in summaries.iter().zip(&widths) {
        line.push_str(&format!("  {:>w$}", s.label));
    }
    out.push_str(line.trim_end());
    out.push('\n');
    for (i, name) in names.iter().enumerate() {
        let mut line = format!("{name:<first$}");
        for (r, w) in all.iter().zip(&widths) {
            line.push_str(&format!("  {:>w$}", r[i].1));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
