//! fly-autoscaler's log lines, written from decision records.
//!
//! The Go tool logs while it works (`reconciler.go`, `reconciler_pool.go`); we log the same
//! messages with the same attributes, in the same order, when the tick's record arrives:
//!
//! | Go message | attributes | when |
//! |---|---|---|
//! | `reconciling` | `app`, `current{started,stopped}`, `target{created{min,max},started{min,max}}` | the policy decided (undefined bounds print 0, as in Go) |
//! | `begin bulk create` … `stop` | `app` | before the actions of one kind |
//! | `machine created` / `destroyed` | `app`, `id`, `region` | per success |
//! | `machine started` / `stopped` | `app`, `id` | per success |
//! | `cannot create machine, skipping` (…) | `app`, (`id`), `err` | per failure |
//! | `not enough stopped machines available to reach target, please create more machines` | `app` | WARN, too few machines to start |
//! | `bulk create completed` … | `app`, `n` | after the actions of one kind |
//! | `metrics collection failed` | `app`, `err` | ERROR, a metric failed (nothing is scaled in) |
//! | `reconciliation failed` | `app`, `err` | ERROR, listing failed, an expression failed, or nothing to clone |
//! | `release in progress, skipping reconciliation` | `app` | WARN, the tick was paused: the app's current release is `running` (a deploy) |
//! | `get current release failed` | `app`, `err` | ERROR, the release check (GraphQL) failed; the app is skipped this tick |
//!
//! Ours, beyond the Go tool: `dry run: would …` (INFO) per planned action with
//! `FAS_DRY_RUN` (at most [`MAX_LOGGED_ACTIONS`], then one `dry run: and more` line counting
//! the rest by kind), and `plan note` (WARN) for the planner's other notes (caps,
//! transitions).

use std::collections::HashMap;
use std::sync::Mutex;

use fleetscale_core::plan::{Action, ActionKind};
use fleetscale_core::record::{
    summarize_actions, DecisionObserver, DecisionRecord, MetricReading, TickStatus,
    MAX_LOGGED_ACTIONS,
};
use fleetscale_core::MachineId;

/// Writes fly-autoscaler's log lines for each record (see the module docs).
#[derive(Debug, Default)]
pub struct GoLogObserver {
    /// Regions of machines created, by id, filled by [`RegionMemo`] (records only carry ids).
    regions: Mutex<HashMap<MachineId, String>>,
}

impl GoLogObserver {
    /// A new observer.
    pub fn new() -> Self {
        GoLogObserver::default()
    }

    /// Remembers the region of a machine (created or about to be destroyed) for the
    /// `machine created` / `machine destroyed` lines.
    pub fn remember_region(&self, id: &MachineId, region: Option<&str>) {
        if let (Ok(mut g), Some(r)) = (self.regions.lock(), region) {
            if g.len() > 10_000 {
                g.clear();
            }
            g.insert(id.clone(), r.to_owned());
        }
    }

    fn region_of(&self, id: &MachineId) -> String {
        self.regions
            .lock()
            .ok()
            .and_then(|g| g.get(id).cloned())
            .unwrap_or_default()
    }
}

fn bound(v: Option<u32>) -> u64 {
    u64::from(v.unwrap_or(0))
}

impl DecisionObserver for GoLogObserver {
    fn observe(&self, r: &DecisionRecord) {
        let app = r.target.as_str();
        if let TickStatus::Paused { .. } = &r.status {
            // The only pause of fly-autoscaler's scalers is the release guard.
            tracing::warn!(app, "release in progress, skipping reconciliation");
            return;
        }
        if let TickStatus::Failed { stage, message, .. } = &r.status {
            if stage == "paused" {
                // The message names the GraphQL URL and FLY_API_BASE_URL (see FlyScaler).
                tracing::error!(app, err = %message, "get current release failed");
                return;
            }
            let err = if stage == "list" {
                format!("list machines: {message}")
            } else {
                message.clone()
            };
            tracing::error!(app, err = %err, "reconciliation failed");
            return;
        }
        if let Some((name, MetricReading::Failed { message, .. })) = r
            .metrics
            .iter()
            .find(|(_, m)| matches!(m, MetricReading::Failed { .. }))
        {
            tracing::error!(
                app,
                err = %format!("collect metric ({}): {message}", crate::gocompat::go_quote(name)),
                "metrics collection failed"
            );
        }
        let Some(decision) = &r.decision else {
            return;
        };
        let metrics_failed = r
            .metrics
            .values()
            .any(|m| matches!(m, MetricReading::Failed { .. }));
        if decision.raw.is_none() && !metrics_failed {
            // The rules could not be evaluated (NaN, infinity, a type error).
            tracing::error!(app, err = %decision.notes.join("; "), "reconciliation failed");
        } else if !metrics_failed {
            let counts = r.counts.unwrap_or_default();
            let t = decision.targets;
            tracing::info!(
                app,
                current.started = u64::from(counts.started),
                current.stopped = u64::from(counts.stopped),
                target.created.min = bound(t.created.min),
                target.created.max = bound(t.created.max),
                target.started.min = bound(t.started.min),
                target.started.max = bound(t.started.max),
                "reconciling"
            );
        }
        let Some(plan) = &r.plan else {
            return;
        };
        for note in &plan.notes {
            if note.contains("no machine available to clone") {
                tracing::error!(
                    app,
                    err = "no machine available to clone for scale up",
                    "reconciliation failed"
                );
            } else if note.starts_with("not enough stopped machines") {
                tracing::warn!(
                    app,
                    "not enough stopped machines available to reach target, please create more machines"
                );
            } else {
                tracing::warn!(app, note = %note, "plan note");
            }
        }
        if r.status == TickStatus::DryRun {
            let shown = MAX_LOGGED_ACTIONS;
            for a in plan.actions.iter().take(shown) {
                tracing::info!(app, action = %a, "dry run: would {}", a.kind());
            }
            if plan.actions.len() > shown {
                let rest = &plan.actions[shown..];
                tracing::info!(
                    app,
                    n = rest.len() as u64,
                    actions = %summarize_actions(rest),
                    "dry run: and more"
                );
            }
            return;
        }
        for kind in [
            ActionKind::Create,
            ActionKind::Destroy,
            ActionKind::Start,
            ActionKind::Stop,
        ] {
            let outcomes: Vec<_> = r
                .outcomes
                .iter()
                .filter(|o| o.action.kind() == kind)
                .collect();
            if outcomes.is_empty() {
                continue;
            }
            let k = kind.as_str();
            tracing::info!(app, "begin bulk {k}");
            let mut n = 0u64;
            for o in outcomes {
                match (&o.error, &o.action) {
                    (None, Action::Create { request, .. }) => {
                        n += 1;
                        let id = o.created.clone().unwrap_or_else(|| MachineId::new(""));
                        let region = request
                            .region
                            .clone()
                            .unwrap_or_else(|| self.region_of(&id));
                        tracing::info!(app, id = %id, region = %region, "machine created");
                    }
                    (None, Action::Destroy { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, region = %self.region_of(id), "machine destroyed");
                    }
                    (None, Action::Start { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, "machine started");
                    }
                    (None, Action::Stop { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, "machine stopped");
                    }
                    (Some(e), Action::Create { .. }) => {
                        tracing::error!(app, err = %e.message, "cannot create machine, skipping");
                    }
                    (Some(e), Action::Destroy { .. }) => {
                        tracing::error!(app, err = %e.message, "cannot destroy machine, skipping");
                    }
                    (Some(e), Action::Start { id, .. }) => {
                        tracing::error!(app, id = %id, err = %e.message, "cannot start machine, skipping");
                    }
                    (Some(e), Action::Stop { id, .. }) => {
                        tracing::error!(app, id = %id, err = %e.message, "cannot stop machine, skipping");
                    }
                }
            }
            tracing::info!(app, n, "bulk {k} completed");
        }
    }
}

/// A [`fleetscale_core::Scaler`] wrapper that tells a [`GoLogObserver`] the region of each
/// machine it creates and lists, so the log lines can name it. Every call is passed through
/// unchanged.
pub struct RegionMemo {
    inner: std::sync::Arc<dyn fleetscale_core::Scaler>,
    log: std::sync::Arc<GoLogObserver>,
}

impl std::fmt::Debug for RegionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionMemo").finish_non_exhaustive()
    }
}

impl RegionMemo {
    /// Wraps `inner`.
    pub fn new(
        inner: std::sync::Arc<dyn fleetscale_core::Scaler>,
        log: std::sync::Arc<GoLogObserver>,
    ) -> Self {
        RegionMemo { inner, log }
    }
}

#[async_trait::async_trait]
impl fleetscale_core::Scaler for RegionMemo {
    /// The inner scaler's.
    fn capabilities(&self) -> fleetscale_core::Capabilities {
        self.inner.capabilities()
    }
    /// Passes through; remembers each machine's region.
    async fn list(&self) -> fleetscale_core::Result<Vec<fleetscale_core::Machine>> {
        let ms = self.inner.list().await?;
        for m in &ms {
            self.log.remember_region(&m.id, m.region.as_deref());
        }
        Ok(ms)
    }
    /// Passes through; remembers the new machine's region.
    async fn create(
        &self,
        request: &fleetscale_core::CreateRequest,
    ) -> fleetscale_core::Result<fleetscale_core::Machine> {
        let m = self.inner.create(request).await?;
        self.log.remember_region(&m.id, m.region.as_deref());
        Ok(m)
    }
    /// Passes through.
    async fn start(&self, id: &MachineId) -> fleetscale_core::Result<()> {
        self.inner.start(id).await
    }
    /// Passes through.
    async fn stop(&self, id: &MachineId) -> fleetscale_core::Result<()> {
        self.inner.stop(id).await
    }
    /// Passes through.
    async fn suspend(&self, id: &MachineId) -> fleetscale_core::Result<()> {
        self.inner.suspend(id).await
    }
    /// Passes through.
    async fn destroy(&self, id: &MachineId) -> fleetscale_core::Result<()> {
        self.inner.destroy(id).await
    }
    /// Passes through (the release guard).
    async fn paused(&self) -> fleetscale_core::Result<Option<String>> {
        self.inner.paused().await
    }
}
