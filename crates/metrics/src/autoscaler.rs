//! [`AutoscalerMetrics`]: the autoscaler's own metrics, for the binaries' `/metrics`.
//!
//! # Why `prometheus-client`, not the `metrics` facade
//! - **No global state.** The facade records into a process-wide recorder installed once; two
//!   engines in one process (or two tests running in parallel) would share and corrupt each
//!   other's numbers. `prometheus-client` keeps everything in values we own: each
//!   [`AutoscalerMetrics`] is independent, and tests assert exact values without interference.
//! - **Typed label sets.** Labels are structs checked by the compiler, not free-form strings.
//! - **The host still decides.** A host with its own [`Registry`] calls
//!   [`AutoscalerMetrics::register`] and encodes everything in one page; a host without one
//!   calls [`AutoscalerMetrics::encode`]. The facade's advantage (the host picks the backend)
//!   matters for a library embedded in many applications; our metrics are consumed by our own
//!   binaries, and the facade would still need `metrics-exporter-prometheus` to render them.
//! - It is the Prometheus project's official Rust client (Apache-2.0 OR MIT).
//!
//! # Output format and fly-autoscaler's exact names
//! [`AutoscalerMetrics::encode`] renders OpenMetrics text 1.0 ([`CONTENT_TYPE`], ending with
//! `# EOF`), which Prometheus, VictoriaMetrics (Fly's managed Prometheus) and Grafana Agent
//! scrape natively. OpenMetrics requires a *counter*'s sample to end in `_total`, and
//! `prometheus-client` appends it; fly-autoscaler's Go `CounterFunc`s are served in the
//! Prometheus 0.0.4 text format without that suffix (`fas_reconcile_count{status="create"} 3`).
//! To keep the stored series names identical, so existing dashboards and alerts keep working,
//! the three `fas_*` families are declared with the OpenMetrics type `gauge`: their samples are
//! exactly `fas_reconcile_count`, `fas_machine_start_count` and `fas_machine_stop_count`, with
//! the same `status` label values, and they only ever increase (use `rate()`/`increase()` as
//! before). Every `fleetscale_*` counter is a real counter (`..._total`).
//!
//! # Series
//! | name | type | labels |
//! |---|---|---|
//! | `fas_reconcile_count` | gauge (monotonic) | `status` = create, destroy, start, stop, no_scale |
//! | `fas_machine_start_count` | gauge (monotonic) | `status` = ok, failed |
//! | `fas_machine_stop_count` | gauge (monotonic) | `status` = ok, failed |
//! | `fleetscale_machines` | gauge | `target`, `state` = created, started, stopped, suspended, never_started, failed, transitioning, unmanageable |
//! | `fleetscale_target_machines` | gauge | `target`, `kind` = created, started, `bound` = min, max (absent when unbounded) |
//! | `fleetscale_metric_value` | gauge | `target`, `metric` (absent after a failed read) |
//! | `fleetscale_machine_actions_total` | counter | `target`, `action` = create, destroy, start, stop, `status` = ok, failed |
//! | `fleetscale_errors_total` | counter | `target`, `kind` ([`fleetscale_core::Error::kind`]) |
//! | `fleetscale_ticks_total` | counter | `target`, `status` = no_scale, scaled, dry_run, held, paused, failed |
//! | `fleetscale_member_reclaims_total` | counter | `target`, `status` = ok, failed |
//! | `fleetscale_tick_duration_seconds` | histogram | none (per-target durations are in the logs; a label would multiply the buckets by the number of apps a wildcard matches) |
//! | `fleetscale_last_success_timestamp_seconds` | gauge | `target` |
//!
//! With replicas sharing the targets (coordination, e.g. on etcd), set by
//! [`AutoscalerMetrics::set_coordination`] (absent for a single process):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `fleetscale_coordination_replicas` | gauge | `replica` (this replica's name): live replicas seen at the last pass |
//! | `fleetscale_coordination_acting` | gauge | `replica`: 1 while this replica may act (its lease is confirmed), 0 otherwise |
//! | `fleetscale_coordination_owned_targets` | gauge | `replica`: targets this replica owns |
//! | `fleetscale_coordination_target_owned` | gauge (1) | `target`: one series per target this replica owns |
//! | `fleetscale_coordination_ownership_changes_total` | counter | `change` = gained, lost |
//! | `fleetscale_coordination_store_requests_total` | counter | `op`: requests to the store by kind (etcd: range, txn, lease_grant, keep_alive, lease_revoke) |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetscale_core::plan::ActionKind;
use fleetscale_core::record::{DecisionObserver, DecisionRecord, MetricReading, TickStatus};
use fleetscale_core::{Counts, Targets};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`AutoscalerMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The buckets of `fleetscale_tick_duration_seconds` (seconds). A tick lists machines, reads
/// metrics and may wait for backend calls: from milliseconds to the 30 s default deadline.
pub const TICK_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const RECONCILE_STATUSES: [&str; 5] = ["create", "destroy", "start", "stop", "no_scale"];
const MACHINE_STATES: [&str; 8] = [
    "created",
    "started",
    "stopped",
    "suspended",
    "never_started",
    "failed",
    "transitioning",
    "unmanageable",
];
const TICK_STATUSES: [&str; 6] = ["no_scale", "scaled", "dry_run", "held", "paused", "failed"];
const ACTIONS: [ActionKind; 4] = [
    ActionKind::Create,
    ActionKind::Destroy,
    ActionKind::Start,
    ActionKind::Stop,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachinesLabels {
    target: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoundLabels {
    target: String,
    kind: &'static str,
    bound: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    target: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    target: String,
    action: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    target: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetStatusLabels {
    target: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// A replica's coordination state, for [`AutoscalerMetrics::set_coordination`]. Totals are
/// cumulative since the replica started (they become counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordinationSample {
    /// This replica's name.
    pub replica: String,
    /// Live replicas seen at the last pass.
    pub replicas: u64,
    /// Whether this replica may act now.
    pub acting: bool,
    /// The targets this replica owns now, by name.
    pub owned: Vec<String>,
    /// Targets taken over since start.
    pub gained_total: u64,
    /// Targets given up or lost since start.
    pub lost_total: u64,
    /// Requests to the store since start, by kind.
    pub store_requests: Vec<(&'static str, u64)>,
}

/// What was last set by [`AutoscalerMetrics::set_coordination`], to turn totals into counter
/// increments and to remove targets no longer owned.
#[derive(Debug, Default)]
struct CoordinationSeen {
    replica: Option<String>,
    owned: BTreeSet<String>,
    totals: BTreeMap<&'static str, u64>,
}

type U64Gauge = Gauge<u64, AtomicU64>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// The per-target label values in use, so [`AutoscalerMetrics::forget_target`] can remove
/// every series of a target.
#[derive(Debug, Default)]
struct Seen {
    metrics: BTreeSet<String>,
    error_kinds: BTreeSet<String>,
}

/// Declares `Families` from one row per metric family: its field, its type and first value,
/// its exposition name and its help text; `Families::new` makes them, `Families::register`
/// registers each under its name.
macro_rules! families {
    ($($field:ident: $ty:ty = $init:expr, $name:literal, $help:literal;)*) => {
        #[derive(Clone, Debug)]
        struct Families {
            $($field: $ty,)*
        }

        impl Families {
            fn new() -> Self {
                Families {
                    $($field: $init,)*
                }
            }

            fn register(&self, r: &mut Registry) {
                $(r.register($name, $help, self.$field.clone());)*
            }
        }
    };
}

families! {
    reconcile: Family<StatusLabel, U64Gauge> = Family::default(), "fas_reconcile_count", "Reconciles by outcome, as fly-autoscaler counts them (one per tick; a monotonic counter exposed as a gauge to keep fly-autoscaler's exact name).";
    machine_start: Family<StatusLabel, U64Gauge> = Family::default(), "fas_machine_start_count", "Machine starts by status (monotonic counter exposed as a gauge to keep fly-autoscaler's exact name).";
    machine_stop: Family<StatusLabel, U64Gauge> = Family::default(), "fas_machine_stop_count", "Machine stops by status (monotonic counter exposed as a gauge to keep fly-autoscaler's exact name).";
    machines: Family<MachinesLabels, Gauge> = Family::default(), "fleetscale_machines", "Machines of a target by state, as of the last inventory read.";
    target_machines: Family<BoundLabels, Gauge> = Family::default(), "fleetscale_target_machines", "The bounds the policy set for a target at the last tick (absent when unbounded).";
    metric_value: Family<MetricLabels, F64Gauge> = Family::default(), "fleetscale_metric_value", "The last value read from each metric source of a target (absent after a failed read).";
    actions: Family<ActionLabels, Counter> = Family::default(), "fleetscale_machine_actions", "Machine actions executed, by kind and status.";
    errors: Family<KindLabels, Counter> = Family::default(), "fleetscale_errors", "Errors by class: metric reads, backend calls and failed ticks.";
    ticks: Family<TargetStatusLabels, Counter> = Family::default(), "fleetscale_ticks", "Ticks by how they ended.";
    reclaims: Family<TargetStatusLabels, Counter> = Family::default(), "fleetscale_member_reclaims", "Cluster members reclaimed, by status.";
    tick_duration: Histogram = Histogram::new(TICK_BUCKETS), "fleetscale_tick_duration_seconds", "Duration of one tick of one target.";
    last_success: Family<TargetLabel, F64Gauge> = Family::default(), "fleetscale_last_success_timestamp_seconds", "Unix time at which the last successful tick of a target ended.";
    replicas: Family<ReplicaLabel, Gauge> = Family::default(), "fleetscale_coordination_replicas", "Live replicas seen at the last pass.";
    acting: Family<ReplicaLabel, Gauge> = Family::default(), "fleetscale_coordination_acting", "1 while this replica may act (its lease is confirmed), 0 while it acts on nothing.";
    owned_targets: Family<ReplicaLabel, Gauge> = Family::default(), "fleetscale_coordination_owned_targets", "Targets this replica owns.";
    target_owned: Family<TargetLabel, Gauge> = Family::default(), "fleetscale_coordination_target_owned", "1 for each target this replica owns.";
    ownership_changes: Family<ChangeLabel, Counter> = Family::default(), "fleetscale_coordination_ownership_changes", "Targets taken over (gained) and given up or lost (lost) by this replica.";
    store_requests: Family<OpLabel, Counter> = Family::default(), "fleetscale_coordination_store_requests", "Requests to the coordination store (etcd) by kind.";
}

/// The autoscaler's own metrics (see the [module docs](self) for every series).
///
/// Feed it either plain data (`record_*` / `set_*` methods, for hosts with their own loop) or
/// whole tick records through its [`DecisionObserver`] impl (for the engine). All methods take
/// `&self` and are cheap; share it in an `Arc`.
///
/// ```
/// use fleetscale_core::plan::ActionKind;
/// use fleetscale_metrics::AutoscalerMetrics;
///
/// let m = AutoscalerMetrics::new();
/// m.record_action("my-app", ActionKind::Start, true);
/// m.record_reconcile(Some(ActionKind::Start));
/// let text = m.encode();
/// assert!(text.contains("fas_machine_start_count{status=\"ok\"} 1\n"));
/// assert!(text.contains("fas_reconcile_count{status=\"start\"} 1\n"));
/// assert!(text.contains(
///     "fleetscale_machine_actions_total{target=\"my-app\",action=\"start\",status=\"ok\"} 1\n"
/// ));
/// ```
#[derive(Debug)]
pub struct AutoscalerMetrics {
    families: Families,
    registry: Registry,
    seen: Mutex<BTreeMap<String, Seen>>,
    coordination: Mutex<CoordinationSeen>,
}

impl Default for AutoscalerMetrics {
    fn default() -> Self {
        AutoscalerMetrics::new()
    }
}

impl AutoscalerMetrics {
    /// A new set of metrics with its own registry. The `fas_*` series exist from the start with
    /// value 0 for every status, as fly-autoscaler exposes them.
    pub fn new() -> Self {
        let families = Families::new();
        for status in RECONCILE_STATUSES {
            let _ = families.reconcile.get_or_create(&StatusLabel { status });
        }
        for status in ["ok", "failed"] {
            let _ = families
                .machine_start
                .get_or_create(&StatusLabel { status });
            let _ = families.machine_stop.get_or_create(&StatusLabel { status });
        }
        let mut registry = Registry::default();
        families.register(&mut registry);
        AutoscalerMetrics {
            families,
            registry,
            seen: Mutex::new(BTreeMap::new()),
            coordination: Mutex::new(CoordinationSeen::default()),
        }
    }

    /// Also registers every family in the host's `registry` (the same values: no copy), so the
    /// host renders them with its own metrics. Call once per registry.
    pub fn register(&self, registry: &mut Registry) {
        self.families.register(registry);
    }

    /// The OpenMetrics text of these metrics (serve with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; keep whatever was written if it ever does.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn seen(&self, target: &str, f: impl FnOnce(&mut Seen)) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        f(seen.entry(target.to_owned()).or_default());
    }

    /// Counts one reconcile the way fly-autoscaler does: `Some(kind)` when the tick executed
    /// actions (the first action's kind), `None` for `no_scale`.
    pub fn record_reconcile(&self, first_action: Option<ActionKind>) {
        let status = first_action.map_or("no_scale", ActionKind::as_str);
        self.families
            .reconcile
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// Counts one executed machine action of `target` (and fly-autoscaler's start/stop counts).
    pub fn record_action(&self, target: &str, action: ActionKind, ok: bool) {
        let status = if ok { "ok" } else { "failed" };
        self.families
            .actions
            .get_or_create(&ActionLabels {
                target: target.to_owned(),
                action: action.as_str(),
                status,
            })
            .inc();
        match action {
            ActionKind::Start => {
                self.families
                    .machine_start
                    .get_or_create(&StatusLabel { status })
                    .inc();
            }
            ActionKind::Stop => {
                self.families
                    .machine_stop
                    .get_or_create(&StatusLabel { status })
                    .inc();
            }
            ActionKind::Create | ActionKind::Suspend | ActionKind::Destroy => {}
        }
    }

    /// Counts one error of class `kind` ([`fleetscale_core::Error::kind`]) for `target`.
    pub fn record_error(&self, target: &str, kind: &str) {
        self.seen(target, |s| {
            s.error_kinds.insert(kind.to_owned());
        });
        self.families
            .errors
            .get_or_create(&KindLabels {
                target: target.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sets the machine counts of `target`.
    pub fn set_machines(&self, target: &str, counts: &Counts) {
        let values = [
            counts.created,
            counts.started,
            counts.stopped,
            counts.suspended,
            counts.never_started,
            counts.failed,
            counts.transitioning,
            counts.unmanageable,
        ];
        for (state, value) in MACHINE_STATES.into_iter().zip(values) {
            self.families
                .machines
                .get_or_create(&MachinesLabels {
                    target: target.to_owned(),
                    state,
                })
                .set(i64::from(value));
        }
    }

    /// Sets the policy's bounds for `target`; an unbounded side removes its series.
    pub fn set_targets(&self, target: &str, targets: &Targets) {
        let sides = [
            ("created", "min", targets.created.min),
            ("created", "max", targets.created.max),
            ("started", "min", targets.started.min),
            ("started", "max", targets.started.max),
        ];
        for (kind, bound, value) in sides {
            let labels = BoundLabels {
                target: target.to_owned(),
                kind,
                bound,
            };
            match value {
                Some(v) => {
                    self.families
                        .target_machines
                        .get_or_create(&labels)
                        .set(i64::from(v));
                }
                None => {
                    self.families.target_machines.remove(&labels);
                }
            }
        }
    }

    /// Sets the last value of `metric` for `target`. A non-finite value removes the series.
    pub fn set_metric_value(&self, target: &str, metric: &str, value: f64) {
        let labels = MetricLabels {
            target: target.to_owned(),
            metric: metric.to_owned(),
        };
        if value.is_finite() {
            self.seen(target, |s| {
                s.metrics.insert(metric.to_owned());
            });
            self.families.metric_value.get_or_create(&labels).set(value);
        } else {
            self.families.metric_value.remove(&labels);
        }
    }

    /// Removes the value of `metric` for `target` (after a failed read: a stale value would
    /// mislead).
    pub fn clear_metric_value(&self, target: &str, metric: &str) {
        self.families.metric_value.remove(&MetricLabels {
            target: target.to_owned(),
            metric: metric.to_owned(),
        });
    }

    /// Counts one member reclaim of `target`.
    pub fn record_reclaim(&self, target: &str, ok: bool) {
        self.families
            .reclaims
            .get_or_create(&TargetStatusLabels {
                target: target.to_owned(),
                status: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Records one finished tick of `target`: its status (`no_scale`, `scaled`, `dry_run`,
    /// `held`, `paused`, `failed`; anything else is counted as `failed`), its duration, and, when
    /// `success`, the time it ended as the last success.
    pub fn record_tick(
        &self,
        target: &str,
        status: &str,
        duration: Duration,
        success: bool,
        ended_at: SystemTime,
    ) {
        let status = TICK_STATUSES
            .into_iter()
            .find(|s| *s == status)
            .unwrap_or("failed");
        self.families
            .ticks
            .get_or_create(&TargetStatusLabels {
                target: target.to_owned(),
                status,
            })
            .inc();
        self.families.tick_duration.observe(duration.as_secs_f64());
        if success {
            let at = ended_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            self.families
                .last_success
                .get_or_create(&TargetLabel {
                    target: target.to_owned(),
                })
                .set(at);
        }
    }

    /// Sets the coordination series from a replica's state (call it before each scrape, or
    /// after each pass). Totals only ever add to the counters: a total lower than the last one
    /// (a new store client counting from zero) adds nothing, and later totals add what they
    /// grew by since it.
    ///
    /// ```
    /// use fleetscale_metrics::{AutoscalerMetrics, CoordinationSample};
    ///
    /// let m = AutoscalerMetrics::new();
    /// m.set_coordination(&CoordinationSample {
    ///     replica: "host-a".into(),
    ///     replicas: 2,
    ///     acting: true,
    ///     owned: vec!["app-1".into()],
    ///     gained_total: 3,
    ///     lost_total: 2,
    ///     store_requests: vec![("txn", 7)],
    /// });
    /// let text = m.encode();
    /// assert!(text.contains("fleetscale_coordination_target_owned{target=\"app-1\"} 1\n"));
    /// assert!(text.contains("fleetscale_coordination_ownership_changes_total{change=\"lost\"} 2\n"));
    /// assert!(text.contains("fleetscale_coordination_acting{replica=\"host-a\"} 1\n"));
    /// ```
    pub fn set_coordination(&self, sample: &CoordinationSample) {
        let f = &self.families;
        let mut seen = self
            .coordination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let label = ReplicaLabel {
            replica: sample.replica.clone(),
        };
        if seen.replica.as_deref() != Some(sample.replica.as_str()) {
            if let Some(old) = seen.replica.take() {
                let old = ReplicaLabel { replica: old };
                f.replicas.remove(&old);
                f.acting.remove(&old);
                f.owned_targets.remove(&old);
            }
            seen.replica = Some(sample.replica.clone());
        }
        f.replicas.get_or_create(&label).set(sample.replicas as i64);
        f.acting.get_or_create(&label).set(i64::from(sample.acting));
        f.owned_targets
            .get_or_create(&label)
            .set(sample.owned.len() as i64);
        let now: BTreeSet<String> = sample.owned.iter().cloned().collect();
        for gone in seen.owned.difference(&now) {
            f.target_owned.remove(&TargetLabel {
                target: gone.clone(),
            });
        }
        for t in &now {
            f.target_owned
                .get_or_create(&TargetLabel { target: t.clone() })
                .set(1);
        }
        seen.owned = now;
        let mut add = |key: &'static str, total: u64, counter: &Counter| {
            let last = seen.totals.entry(key).or_insert(0);
            if total > *last {
                counter.inc_by(total - *last);
            }
            // A lower total is a new store client counting from zero: later increments
            // count from it.
            *last = total;
        };
        add(
            "change:gained",
            sample.gained_total,
            &f.ownership_changes
                .get_or_create(&ChangeLabel { change: "gained" }),
        );
        add(
            "change:lost",
            sample.lost_total,
            &f.ownership_changes
                .get_or_create(&ChangeLabel { change: "lost" }),
        );
        for (op, total) in &sample.store_requests {
            add(op, *total, &f.store_requests.get_or_create(&OpLabel { op }));
        }
    }

    /// Removes every series labelled with `target` (an app no longer matched by a wildcard).
    /// Its counters restart from zero if it comes back, which Prometheus handles as a reset.
    pub fn forget_target(&self, target: &str) {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target)
            .unwrap_or_default();
        let t = || target.to_owned();
        let f = &self.families;
        for state in MACHINE_STATES {
            f.machines.remove(&MachinesLabels { target: t(), state });
        }
        for kind in ["created", "started"] {
            for bound in ["min", "max"] {
                f.target_machines.remove(&BoundLabels {
                    target: t(),
                    kind,
                    bound,
                });
            }
        }
        for metric in seen.metrics {
            f.metric_value.remove(&MetricLabels {
                target: t(),
                metric,
            });
        }
        for kind in seen.error_kinds {
            f.errors.remove(&KindLabels { target: t(), kind });
        }
        for action in ACTIONS {
            for status in ["ok", "failed"] {
                f.actions.remove(&ActionLabels {
                    target: t(),
                    action: action.as_str(),
                    status,
                });
            }
        }
        for status in TICK_STATUSES {
            f.ticks.remove(&TargetStatusLabels {
                target: t(),
                status,
            });
        }
        for status in ["ok", "failed"] {
            f.reclaims.remove(&TargetStatusLabels {
                target: t(),
                status,
            });
        }
        f.last_success.remove(&TargetLabel { target: t() });
    }
}

/// Maps a tick's record onto the series:
/// - `fleetscale_ticks_total{status}` and the duration histogram, always;
/// - `fas_reconcile_count`: once per tick that did not fail, with the first executed action's
///   kind or `no_scale` ([`DecisionRecord::reconcile_status`]; a dry run executes nothing and
///   counts as `no_scale`); a failed tick counts nothing, and neither does a paused one (a
///   deploy in progress: fly-autoscaler skips the app before reconciling, counting nothing);
/// - `fleetscale_machines` from the inventory counts, `fleetscale_target_machines` from the
///   decision's targets, when present;
/// - each metric reading sets `fleetscale_metric_value`, or removes it and counts
///   `fleetscale_errors_total{kind}` on failure;
/// - each action outcome counts `fleetscale_machine_actions_total` (and the `fas_machine_*`
///   counts for starts and stops), a failed one also `fleetscale_errors_total{kind}`;
/// - a failed tick counts `fleetscale_errors_total{kind}`; reclaims count
///   `fleetscale_member_reclaims_total`;
/// - `fleetscale_last_success_timestamp_seconds` is set when the tick did not fail, every
///   metric was read and every action succeeded.
impl DecisionObserver for AutoscalerMetrics {
    fn observe(&self, r: &DecisionRecord) {
        let target = r.target.as_str();
        if let Some(counts) = &r.counts {
            self.set_machines(target, counts);
        }
        if let Some(decision) = &r.decision {
            self.set_targets(target, &decision.targets);
        }
        let mut metrics_ok = true;
        for (metric, reading) in &r.metrics {
            match reading {
                MetricReading::Value(v) => self.set_metric_value(target, metric, *v),
                MetricReading::Failed { kind, .. } => {
                    metrics_ok = false;
                    self.clear_metric_value(target, metric);
                    self.record_error(target, kind.as_str());
                }
            }
        }
        let mut actions_ok = true;
        for outcome in &r.outcomes {
            self.record_action(target, outcome.action.kind(), outcome.ok());
            if let Some(e) = &outcome.error {
                actions_ok = false;
                self.record_error(target, e.kind.as_str());
            }
        }
        for (_, result) in &r.reclaims {
            self.record_reclaim(target, result.is_ok());
        }
        let failed = match &r.status {
            TickStatus::Failed { kind, .. } => {
                self.record_error(target, kind.as_str());
                true
            }
            _ => false,
        };
        let paused = matches!(r.status, TickStatus::Paused { .. });
        if !failed && !paused {
            self.record_reconcile(r.outcomes.first().map(|o| o.action.kind()));
        }
        self.record_tick(
            target,
            r.status.as_str(),
            r.duration,
            !failed && metrics_ok && actions_ok,
            r.started_at + r.duration,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordination_series_follow_the_samples() {
        let m = AutoscalerMetrics::new();
        assert!(
            !m.encode().contains("fleetscale_coordination_acting{"),
            "no coordination series for a single process"
        );
        let sample = |owned: &[&str], gained, lost, txn| CoordinationSample {
            replica: "r1".into(),
            replicas: 3,
            acting: true,
            owned: owned.iter().map(|s| s.to_string()).collect(),
            gained_total: gained,
            lost_total: lost,
            store_requests: vec![("range", 4), ("txn", txn)],
        };
        m.set_coordination(&sample(&["a", "b"], 2, 0, 5));
        m.set_coordination(&sample(&["b", "c"], 3, 1, 9));
        let text = m.encode();
        assert!(!text.contains("target=\"a\""), "{text}");
        for line in [
            "fleetscale_coordination_target_owned{target=\"b\"} 1\n",
            "fleetscale_coordination_target_owned{target=\"c\"} 1\n",
            "fleetscale_coordination_owned_targets{replica=\"r1\"} 2\n",
            "fleetscale_coordination_replicas{replica=\"r1\"} 3\n",
            "fleetscale_coordination_ownership_changes_total{change=\"gained\"} 3\n",
            "fleetscale_coordination_ownership_changes_total{change=\"lost\"} 1\n",
            "fleetscale_coordination_store_requests_total{op=\"txn\"} 9\n",
            "fleetscale_coordination_store_requests_total{op=\"range\"} 4\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Not acting: the gauge says so; a lower total adds nothing.
        let mut s = sample(&[], 3, 3, 2);
        s.acting = false;
        m.set_coordination(&s);
        let text = m.encode();
        assert!(text.contains("fleetscale_coordination_acting{replica=\"r1\"} 0\n"));
        assert!(text.contains("fleetscale_coordination_owned_targets{replica=\"r1\"} 0\n"));
        assert!(text.contains("fleetscale_coordination_store_requests_total{op=\"txn\"} 9\n"));
        assert!(
            !text.contains("fleetscale_coordination_target_owned{"),
            "{text}"
        );
        // The new client's total grows from 2 to 5: the counter grows by 3.
        m.set_coordination(&sample(&[], 3, 3, 5));
        assert!(m
            .encode()
            .contains("fleetscale_coordination_store_requests_total{op=\"txn\"} 12\n"));
    }

    #[test]
    fn fas_series_exist_from_the_start() {
        let text = AutoscalerMetrics::new().encode();
        for status in RECONCILE_STATUSES {
            assert!(
                text.contains(&format!("fas_reconcile_count{{status=\"{status}\"}} 0\n")),
                "{text}"
            );
        }
        assert!(text.contains("fas_machine_stop_count{status=\"failed\"} 0\n"));
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("fas_reconcile_count_total"));
    }

    #[test]
    fn register_shares_values_with_the_host_registry() {
        let m = AutoscalerMetrics::new();
        let mut host = Registry::default();
        m.register(&mut host);
        m.record_error("a", "timeout");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &host).unwrap();
        assert!(text.contains("fleetscale_errors_total{target=\"a\",kind=\"timeout\"} 1\n"));
    }
}
