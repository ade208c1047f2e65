//! Decision records: what one tick saw, decided and did, for logs, metrics and `status`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::plan::{Action, ActionKind, Plan};
use crate::policy::Decision;
use crate::{Counts, ErrorKind, MachineId};

/// A metric's reading in one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricReading {
    /// The value the metric source returned this tick.
    Value(f64),
    /// Why no value could be read.
    Failed {
        /// The error class ([`crate::Error::kind`]).
        kind: ErrorKind,
        /// The error's text, without a leading ``metric `name`: `` (the map key names the metric).
        message: String,
    },
}

/// The result of one executed action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionOutcome {
    /// The action as the plan listed it, whether or not it succeeded.
    pub action: Action,
    /// The machine created, for creates that succeeded.
    pub created: Option<MachineId>,
    /// The region of the machine acted on, when known: the created machine's, or the one the
    /// inventory listed for the machine started, stopped, suspended or destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `None` on success; the error class and message on failure.
    pub error: Option<ActionError>,
    /// How long the call took (JSON: `duration_seconds`, a number).
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub duration: Duration,
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionError {
    /// The error class ([`crate::Error::kind`]).
    pub kind: ErrorKind,
    /// The error's text (its `Display`), for logs and `status`.
    pub message: String,
    /// Which step failed.
    pub step: ActionStep,
}

impl ActionError {
    /// The failure of `step` with `error`.
    pub fn new(step: ActionStep, error: &crate::Error) -> Self {
        ActionError {
            kind: error.kind(),
            message: error.to_string(),
            step,
        }
    }
}

/// The step of an action that failed: the backend call, or a membership hook around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionStep {
    /// [`crate::coordination::Coordinator::fence`] before the call: the fence could not be
    /// had or had expired, so nothing was sent.
    Fence,
    /// [`crate::ClusterMembership::leave`] before a stop, suspend or destroy (the action was
    /// then not sent).
    Leave,
    /// [`crate::Scaler::create`].
    Create,
    /// [`crate::Scaler::start`].
    Start,
    /// [`crate::Scaler::stop`].
    Stop,
    /// [`crate::Scaler::suspend`].
    Suspend,
    /// [`crate::Scaler::destroy`].
    Destroy,
    /// [`crate::ClusterMembership::join`] after a start or a started create.
    Join,
    /// Not sent: the engine was shutting down.
    Skipped,
}

impl ActionStep {
    /// `fence`, `leave`, `create`, `start`, `stop`, `suspend`, `destroy`, `join` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStep::Fence => "fence",
            ActionStep::Leave => "leave",
            ActionStep::Create => "create",
            ActionStep::Start => "start",
            ActionStep::Stop => "stop",
            ActionStep::Suspend => "suspend",
            ActionStep::Destroy => "destroy",
            ActionStep::Join => "join",
            ActionStep::Skipped => "skipped",
        }
    }
}

impl PartialEq<str> for ActionStep {
    /// Compares with the label.
    fn eq(&self, label: &str) -> bool {
        self.as_str() == label
    }
}

impl PartialEq<&str> for ActionStep {
    /// Compares with the label.
    fn eq(&self, label: &&str) -> bool {
        self.as_str() == *label
    }
}

impl std::fmt::Display for ActionStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tick that ended before planning stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TickStage {
    /// [`crate::Scaler::paused`] failed: a deploy could not be ruled out.
    Paused,
    /// [`crate::Scaler::list`] failed: there is no inventory to plan from.
    List,
}

impl TickStage {
    /// `paused` or `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            TickStage::Paused => "paused",
            TickStage::List => "list",
        }
    }
}

impl PartialEq<str> for TickStage {
    /// Compares with the label.
    fn eq(&self, label: &str) -> bool {
        self.as_str() == label
    }
}

impl PartialEq<&str> for TickStage {
    /// Compares with the label.
    fn eq(&self, label: &&str) -> bool {
        self.as_str() == *label
    }
}

impl std::fmt::Display for TickStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActionOutcome {
    /// The outcome of `action` before it ran: no error, nothing created, no time spent.
    pub fn new(action: Action) -> Self {
        ActionOutcome {
            action,
            created: None,
            region: None,
            error: None,
            duration: Duration::ZERO,
        }
    }

    /// Whether the action succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// How a tick ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TickStatus {
    /// Nothing needed doing.
    NoScale,
    /// Actions were executed (some may have failed; see the outcomes).
    Scaled,
    /// Actions were planned but not executed (dry run).
    DryRun,
    /// The policy held the counts (metric failure or cooldown) and nothing was done.
    Held,
    /// The backend asked to leave the target alone this tick ([`crate::Scaler::paused`]).
    Paused {
        /// The backend's reason, e.g. `release in progress`.
        reason: String,
    },
    /// The tick failed before planning.
    Failed {
        /// The step that failed: the pause check or the listing.
        stage: TickStage,
        /// The error class ([`crate::Error::kind`]).
        kind: ErrorKind,
        /// The error's text (its `Display`), for logs and `status`.
        message: String,
    },
}

impl TickStatus {
    /// The status of a tick that `error` stopped at `stage`, with the error's class and text.
    pub fn failed(stage: TickStage, error: &crate::Error) -> Self {
        TickStatus::Failed {
            stage,
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// A stable label: `no_scale`, `scaled`, `dry_run`, `held`, `paused`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TickStatus::NoScale => "no_scale",
            TickStatus::Scaled => "scaled",
            TickStatus::DryRun => "dry_run",
            TickStatus::Held => "held",
            TickStatus::Paused { .. } => "paused",
            TickStatus::Failed { .. } => "failed",
        }
    }
}

/// Everything about one tick of one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// The target's name.
    pub target: String,
    /// The tick's sequence number for this target (1 for the first).
    pub tick: u64,
    /// When the tick started (JSON: an RFC 3339 UTC time with milliseconds).
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// How long the tick took (JSON: `duration_seconds`, a number).
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub duration: Duration,
    /// The counts of the inventory read (`None` when listing failed).
    pub counts: Option<Counts>,
    /// Each metric's value or failure this tick, keyed by the metric's name.
    pub metrics: BTreeMap<String, MetricReading>,
    /// The policy's decision.
    pub decision: Option<Decision>,
    /// The actions planned from the decision (`None` when the tick ended before planning).
    pub plan: Option<Plan>,
    /// The executed actions' outcomes, in plan order.
    pub outcomes: Vec<ActionOutcome>,
    /// Membership reclaims done this tick: (member name, reclaimed amount or error message).
    pub reclaims: Vec<(String, Result<u64, String>)>,
    /// How the tick ended.
    pub status: TickStatus,
}

impl DecisionRecord {
    /// The record of tick number `tick` of `target`, started at `started_at`, before anything
    /// was seen: no counts, metrics, decision or plan, status [`TickStatus::NoScale`].
    pub fn new(target: impl Into<String>, tick: u64, started_at: SystemTime) -> Self {
        DecisionRecord {
            target: target.into(),
            tick,
            started_at,
            duration: Duration::ZERO,
            counts: None,
            metrics: BTreeMap::new(),
            decision: None,
            plan: None,
            outcomes: Vec::new(),
            reclaims: Vec::new(),
            status: TickStatus::NoScale,
        }
    }

    /// How many actions of `kind` succeeded (`ok = true`) or failed.
    pub fn outcome_count(&self, kind: ActionKind, ok: bool) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.action.kind() == kind && o.ok() == ok)
            .count()
    }

    /// fly-autoscaler's `fas_reconcile_count` status for this tick: the first action kind
    /// executed (`create`, `destroy`, `start`, `stop`), or `no_scale`.
    pub fn reconcile_status(&self) -> &'static str {
        self.outcomes
            .first()
            .map(|o| o.action.kind().as_str())
            .unwrap_or("no_scale")
    }
}

/// Durations as a number of seconds (`0.25`), as Prometheus and most tools expect: how records
/// serialise their durations, for `#[serde(with = "fleetscale_core::record::seconds")]` on
/// other types that should read alike.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Wait {
///     #[serde(with = "fleetscale_core::record::seconds")]
///     wait: Duration,
/// }
///
/// let json = serde_json::to_string(&Wait { wait: Duration::from_millis(250) }).unwrap();
/// assert_eq!(json, r#"{"wait":0.25}"#);
/// assert!(serde_json::from_str::<Wait>(r#"{"wait":-1}"#).is_err());
/// ```
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as a number of seconds.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads a number of seconds.
    ///
    /// # Errors
    /// A negative, infinite, NaN or too large number of seconds; anything but a number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Times in JSON as RFC 3339 UTC (`2025-01-31T12:00:00.123Z`).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

/// Receives every [`DecisionRecord`] as soon as its tick ends: metrics exporters, loggers,
/// status pages, tests.
///
/// # Assumptions
/// `observe` is called from the engine's tasks and must return quickly without blocking
/// (hand heavy work to a channel). It must not panic.
///
/// # Example
/// ```
/// use std::sync::Mutex;
/// use fleetscale_core::record::{DecisionObserver, DecisionRecord};
///
/// #[derive(Default)]
/// struct Collect(Mutex<Vec<DecisionRecord>>);
///
/// impl DecisionObserver for Collect {
///     fn observe(&self, record: &DecisionRecord) {
///         self.0.lock().unwrap().push(record.clone());
///     }
/// }
/// let c = Collect::default();
/// assert!(c.0.lock().unwrap().is_empty());
/// ```
pub trait DecisionObserver: Send + Sync {
    /// Called once per finished tick.
    fn observe(&self, record: &DecisionRecord);

    /// Called when a pass of [`crate::engine::Engine::run`] over `targets` targets has ended
    /// (also a pass over none): the engine loop is alive. Does nothing by default.
    fn pass_finished(&self, targets: usize) {
        let _ = targets;
    }
}

impl<T: DecisionObserver + ?Sized> DecisionObserver for std::sync::Arc<T> {
    fn observe(&self, record: &DecisionRecord) {
        (**self).observe(record)
    }

    fn pass_finished(&self, targets: usize) {
        (**self).pass_finished(targets)
    }
}

/// At most this many actions of a plan are logged one by one by [`TracingObserver`] (and
/// shown by the binaries' dry runs); the rest are summarised by kind, so that a plan of
/// thousands of actions never writes thousands of lines.
pub const MAX_LOGGED_ACTIONS: usize = 20;

/// `3 create, 2 stop`: the actions of a plan counted by kind, in a stable order.
pub fn summarize_actions<'a>(actions: impl IntoIterator<Item = &'a Action>) -> String {
    let mut counts: BTreeMap<ActionKind, usize> = BTreeMap::new();
    for a in actions {
        *counts.entry(a.kind()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Logs each record as one structured `tracing` event (target `fleetscale::decision`), and each
/// action at info level.
///
/// - `reconciling` (INFO) per tick with `status`, `counts.*`, `targets.{created,started}.
///   {min,max}` (structured fields, not text) and the number of actions; `tick failed` (WARN)
///   and `skipping the tick` (WARN) otherwise.
/// - Why a target is held: when a hold starts (a metric failed, an expression could not be
///   evaluated, a cooldown) a WARN (INFO for a cooldown) says why; when the reason changes it is
///   logged again; when the hold ends, `hold ended` (INFO). Every held tick in between only
///   shows `status="held"`.
/// - One line per executed action; at most [`MAX_LOGGED_ACTIONS`] of a plan, the rest counted
///   by kind in one line.
#[derive(Debug, Default)]
pub struct TracingObserver {
    /// The hold reason last logged, by target.
    holds: std::sync::Mutex<BTreeMap<String, String>>,
}

impl TracingObserver {
    /// An observer that has logged nothing yet.
    pub fn new() -> Self {
        TracingObserver::default()
    }

    fn log_hold(&self, r: &DecisionRecord) {
        let reason = r
            .decision
            .as_ref()
            .filter(|d| d.held)
            .map(|d| d.notes.join("; "));
        let Ok(mut holds) = self.holds.lock() else {
            return;
        };
        match reason {
            Some(reason) => {
                if holds.get(&r.target) != Some(&reason) {
                    let failure = r
                        .metrics
                        .values()
                        .any(|m| matches!(m, MetricReading::Failed { .. }))
                        || r.decision.as_ref().is_some_and(|d| d.raw.is_none());
                    if failure {
                        tracing::warn!(
                            target: "fleetscale::decision",
                            app = %r.target, tick = r.tick, reason = %reason,
                            "holding the current counts: {reason}"
                        );
                    } else {
                        tracing::info!(
                            target: "fleetscale::decision",
                            app = %r.target, tick = r.tick, reason = %reason,
                            "holding the current counts: {reason}"
                        );
                    }
                    holds.insert(r.target.clone(), reason);
                }
            }
            None => {
                // A failed or paused tick neither starts nor ends a hold.
                if r.decision.is_some() {
                    if let Some(was) = holds.remove(&r.target) {
                        tracing::info!(
                            target: "fleetscale::decision",
                            app = %r.target, tick = r.tick, was = %was,
                            "hold ended: the rules decide again"
                        );
                    }
                }
            }
        }
    }
}

impl DecisionObserver for TracingObserver {
    fn observe(&self, r: &DecisionRecord) {
        let targets = r.decision.as_ref().map(|d| d.targets);
        let counts = r.counts;
        match &r.status {
            TickStatus::Failed {
                stage,
                kind,
                message,
            } => tracing::warn!(
                target: "fleetscale::decision",
                app = %r.target, tick = r.tick, stage = %stage, kind = %kind,
                "tick failed: {message}"
            ),
            TickStatus::Paused { reason } => tracing::warn!(
                target: "fleetscale::decision",
                app = %r.target, tick = r.tick, "skipping the tick: {reason}"
            ),
            status => tracing::info!(
                target: "fleetscale::decision",
                app = %r.target,
                tick = r.tick,
                status = status.as_str(),
                counts.created = counts.map(|c| c.created),
                counts.started = counts.map(|c| c.started),
                counts.stopped = counts.map(|c| c.stopped),
                counts.unmanageable = counts.map(|c| c.unmanageable).filter(|n| *n > 0),
                targets.created.min = targets.and_then(|t| t.created.min),
                targets.created.max = targets.and_then(|t| t.created.max),
                targets.started.min = targets.and_then(|t| t.started.min),
                targets.started.max = targets.and_then(|t| t.started.max),
                actions = r.plan.as_ref().map_or(0, |p| p.actions.len()),
                "reconciling"
            ),
        }
        self.log_hold(r);
        if r.status == TickStatus::DryRun {
            if let Some(plan) = &r.plan {
                for a in plan.actions.iter().take(MAX_LOGGED_ACTIONS) {
                    tracing::info!(target: "fleetscale::decision", app = %r.target, "dry run: would {a}");
                }
                if plan.actions.len() > MAX_LOGGED_ACTIONS {
                    let rest = &plan.actions[MAX_LOGGED_ACTIONS..];
                    tracing::info!(
                        target: "fleetscale::decision",
                        app = %r.target,
                        "dry run: and {} more ({})",
                        rest.len(),
                        summarize_actions(rest)
                    );
                }
            }
        }
        for o in r.outcomes.iter().take(MAX_LOGGED_ACTIONS) {
            match &o.error {
                None => {
                    tracing::info!(target: "fleetscale::decision", app = %r.target, "{}", o.action)
                }
                Some(e) => tracing::warn!(
                    target: "fleetscale::decision", app = %r.target, step = %e.step, kind = %e.kind,
                    "{} failed: {}", o.action, e.message
                ),
            }
        }
        if r.outcomes.len() > MAX_LOGGED_ACTIONS {
            let rest = &r.outcomes[MAX_LOGGED_ACTIONS..];
            let failed = rest.iter().filter(|o| !o.ok()).count();
            tracing::info!(
                target: "fleetscale::decision",
                app = %r.target,
                "and {} more action(s) ({}), {failed} of them failed",
                rest.len(),
                summarize_actions(rest.iter().map(|o| &o.action))
            );
        }
    }
}
