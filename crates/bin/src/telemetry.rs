//! The autoscaler's own Prometheus metrics, fed by decision records.
//!
//! [`TickMetrics`] is a [`DecisionObserver`]: every finished tick updates its counters and
//! gauges, and [`TickMetrics::render`] writes the Prometheus text exposition format (0.0.4).
//!
//! With the prefix `fas` the first three families are exactly fly-autoscaler's
//! (`reconciler_pool.go: RegisterPromMetrics`): counters without a `_total` suffix and with a
//! single `status` label, so existing dashboards and alerts keep working:
//! - `fas_machine_start_count{status="ok"|"failed"}`
//! - `fas_machine_stop_count{status="ok"|"failed"}`
//! - `fas_reconcile_count{status="create"|"destroy"|"start"|"stop"|"no_scale"}` (one per tick
//!   that reached a decision: the first action kind executed, or `no_scale`)
//!
//! The others are ours (the Go tool tracked creates and destroys but did not export them, and
//! had no per-app view):
//! - `<prefix>_machine_create_count{status}`, `<prefix>_machine_destroy_count{status}`
//! - `<prefix>_tick_count{app,status}` (`no_scale`, `scaled`, `dry_run`, `held`, `failed`)
//! - `<prefix>_machines{app,state}` gauge: `created`, `started`, `stopped`, `suspended`,
//!   `transitioning`, `unmanageable`, as of the last tick
//! - `<prefix>_target_machines{app,count,bound}` gauge (`count` = `created`|`started`,
//!   `bound` = `min`|`max`; absent when undefined)
//! - `<prefix>_metric_value{app,metric}` gauge; `<prefix>_metric_errors_count{app,metric}`
//! - `<prefix>_last_tick_timestamp_seconds{app}` gauge

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use fleetscale_core::plan::ActionKind;
use fleetscale_core::record::{DecisionObserver, DecisionRecord, MetricReading, TickStatus};

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), f64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
}

/// Counters and gauges of the ticks seen (see the module docs for the names).
pub struct TickMetrics {
    prefix: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for TickMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickMetrics")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "machine_start_count",
        "counter",
        "Machine starts, by outcome.",
    ),
    (
        "machine_stop_count",
        "counter",
        "Machine stops, by outcome.",
    ),
    (
        "reconcile_count",
        "counter",
        "Ticks by what they did: the first action kind executed, or no_scale.",
    ),
    (
        "machine_create_count",
        "counter",
        "Machine creates, by outcome.",
    ),
    (
        "machine_destroy_count",
        "counter",
        "Machine destroys, by outcome.",
    ),
    ("tick_count", "counter", "Ticks by target and status."),
    (
        "machines",
        "gauge",
        "Machines by state as of the last tick.",
    ),
    (
        "target_machines",
        "gauge",
        "The targets of the last tick that reached a decision.",
    ),
    (
        "metric_value",
        "gauge",
        "The last value read of each metric.",
    ),
    ("metric_errors_count", "counter", "Failed metric reads."),
    (
        "last_tick_timestamp_seconds",
        "gauge",
        "When the last tick of each target started (Unix seconds).",
    ),
];

impl TickMetrics {
    /// Metrics named `<prefix>_…`: `fas` for fly-autoscaler compatibility, `fleetscale` for
    /// the native binary.
    pub fn new(prefix: impl Into<String>) -> Self {
        let m = TickMetrics {
            prefix: prefix.into(),
            inner: Mutex::new(Inner::default()),
        };
        // fly-autoscaler exports its counters from the start, at zero.
        {
            let mut g = m.lock();
            for name in ["machine_start_count", "machine_stop_count"] {
                for status in ["ok", "failed"] {
                    g.counters
                        .insert((name, vec![("status", status.to_owned())]), 0.0);
                }
            }
            for status in ["create", "destroy", "start", "stop", "no_scale"] {
                g.counters.insert(
                    ("reconcile_count", vec![("status", status.to_owned())]),
                    0.0,
                );
            }
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of a counter or gauge (for tests and the demo summary), `0` when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let g = self.lock();
        let matches = |k: &(&'static str, Labels)| {
            k.0 == name
                && k.1.len() == labels.len()
                && k.1
                    .iter()
                    .zip(labels)
                    .all(|((a, b), (c, d))| a == c && b == d)
        };
        g.counters
            .iter()
            .chain(g.gauges.iter())
            .find(|(k, _)| matches(k))
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let series: Vec<(&Labels, f64)> = g
                .counters
                .iter()
                .chain(g.gauges.iter())
                .filter(|((n, _), _)| n == name)
                .map(|((_, l), v)| (l, *v))
                .collect();
            if series.is_empty() {
                continue;
            }
            let full = format!("{}_{name}", self.prefix);
            let _ = writeln!(out, "# HELP {full} {help}");
            let _ = writeln!(out, "# TYPE {full} {kind}");
            for (labels, v) in series {
                let _ = write!(out, "{full}");
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(val));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", number(v));
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

impl DecisionObserver for TickMetrics {
    /// Updates every family from one record. Never blocks for long (one mutex).
    fn observe(&self, r: &DecisionRecord) {
        let mut g = self.lock();
        let app = r.target.clone();
        let g = &mut *g;
        fn inc(g: &mut Inner, name: &'static str, labels: Labels, by: f64) {
            *g.counters.entry((name, labels)).or_insert(0.0) += by;
        }
        fn set(g: &mut Inner, name: &'static str, labels: Labels, v: f64) {
            g.gauges.insert((name, labels), v);
        }
        inc(
            g,
            "tick_count",
            vec![
                ("app", app.clone()),
                ("status", r.status.as_str().to_owned()),
            ],
            1.0,
        );
        for (metric, reading) in &r.metrics {
            if matches!(reading, MetricReading::Failed { .. }) {
                inc(
                    g,
                    "metric_errors_count",
                    vec![("app", app.clone()), ("metric", metric.clone())],
                    1.0,
                );
            }
        }
        for o in &r.outcomes {
            let kind = o.action.kind();
            // A start that failed at `join` did start; a stop that failed at `leave` did not.
            let join_only = |step: &str| {
                step == "join" && matches!(kind, ActionKind::Start | ActionKind::Create)
            };
            let failed_here = o.error.as_ref().is_some_and(|e| !join_only(&e.step));
            let status = if failed_here { "failed" } else { "ok" }.to_owned();
            let name = match kind {
                ActionKind::Start => "machine_start_count",
                ActionKind::Stop => "machine_stop_count",
                ActionKind::Create => "machine_create_count",
                ActionKind::Destroy => "machine_destroy_count",
            };
            inc(g, name, vec![("status", status)], 1.0);
        }
        match &r.status {
            TickStatus::Scaled => inc(
                g,
                "reconcile_count",
                vec![("status", r.reconcile_status().to_owned())],
                1.0,
            ),
            TickStatus::NoScale => inc(
                g,
                "reconcile_count",
                vec![("status", "no_scale".into())],
                1.0,
            ),
            _ => {}
        }
        let started_at = r
            .started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        set(
            g,
            "last_tick_timestamp_seconds",
            vec![("app", app.clone())],
            started_at,
        );
        for (metric, reading) in &r.metrics {
            if let MetricReading::Value(v) = reading {
                set(
                    g,
                    "metric_value",
                    vec![("app", app.clone()), ("metric", metric.clone())],
                    *v,
                );
            }
        }
        if let Some(c) = r.counts {
            for (state, n) in [
                ("created", c.created),
                ("started", c.started),
                ("stopped", c.stopped),
                ("suspended", c.suspended),
                ("transitioning", c.transitioning),
                ("unmanageable", c.unmanageable),
            ] {
                set(
                    g,
                    "machines",
                    vec![("app", app.clone()), ("state", state.into())],
                    f64::from(n),
                );
            }
        }
        if let Some(d) = &r.decision {
            for (count, b) in [
                ("created", d.targets.created),
                ("started", d.targets.started),
            ] {
                for (bound, v) in [("min", b.min), ("max", b.max)] {
                    let labels = vec![
                        ("app", app.clone()),
                        ("count", count.to_owned()),
                        ("bound", bound.to_owned()),
                    ];
                    match v {
                        Some(v) => set(g, "target_machines", labels, f64::from(v)),
                        None => {
                            g.gauges.remove(&("target_machines", labels));
                        }
                    }
                }
            }
        }
    }
}
