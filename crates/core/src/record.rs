//! Decision records: what one tick saw, decided and did, for logs, metrics and `status`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::plan::{Action, ActionKind, Plan};
use crate::policy::Decision;
use crate::Counts;

/// A metric's reading in one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricReading {
    /// The value read.
    Value(f64),
    /// Why no value could be read.
    Failed {
        /// The error class ([`crate::Error::kind`]).
        kind: String,
        /// The error message.
        message: String,
    },
}

/// The result of one executed action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The action as planned.
    pub action: Action,
    /// The machine created, for creates that succeeded.
    pub created: Option<crate::MachineId>,
    /// `None` on success; the error class and message on failure.
    pub error: Option<ActionError>,
    /// How long the call took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionError {
    /// The error class ([`crate::Error::kind`]).
    pub kind: String,
    /// The message.
    pub message: String,
    /// Which step failed: `leave`, `create`, `start`, `stop`, `destroy`, `join`.
    pub step: String,
}

impl ActionOutcome {
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
        /// Where: `list`, `deadline`, `cancelled`.
        stage: String,
        /// The error class.
        kind: String,
        /// The message.
        message: String,
    },
}

impl TickStatus {
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
pub struct DecisionRecord {
    /// The target's name.
    pub target: String,
    /// The tick's sequence number for this target (1 for the first).
    pub tick: u64,
    /// When the tick started.
    pub started_at: SystemTime,
    /// How long the tick took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The counts of the inventory read (`None` when listing failed).
    pub counts: Option<Counts>,
    /// The metric readings by name.
    pub metrics: BTreeMap<String, MetricReading>,
    /// The policy's decision.
    pub decision: Option<Decision>,
    /// The plan.
    pub plan: Option<Plan>,
    /// The executed actions' outcomes, in plan order.
    pub outcomes: Vec<ActionOutcome>,
    /// Membership reclaims done this tick: (member name, reclaimed amount or error message).
    pub reclaims: Vec<(String, Result<u64, String>)>,
    /// How the tick ended.
    pub status: TickStatus,
}

impl DecisionRecord {
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
}

impl<T: DecisionObserver + ?Sized> DecisionObserver for std::sync::Arc<T> {
    fn observe(&self, record: &DecisionRecord) {
        (**self).observe(record)
    }
}

/// Logs each record as one structured `tracing` event (target `fleetscale::decision`), and each
/// action at info level.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingObserver;

impl DecisionObserver for TracingObserver {
    fn observe(&self, r: &DecisionRecord) {
        let targets = r
            .decision
            .as_ref()
            .map(|d| serde_json::to_string(&d.targets).unwrap_or_default())
            .unwrap_or_default();
        let counts = r
            .counts
            .map(|c| {
                format!(
                    "created={} started={} stopped={}",
                    c.created, c.started, c.stopped
                )
            })
            .unwrap_or_default();
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
                app = %r.target, tick = r.tick, status = status.as_str(), counts = %counts,
                targets = %targets, actions = r.plan.as_ref().map_or(0, |p| p.actions.len()),
                "reconciling"
            ),
        }
        for o in &r.outcomes {
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
    }
}
