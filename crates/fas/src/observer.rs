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

use fleetscale_core::plan::{Action, ActionKind};
use fleetscale_core::record::{
    summarize_actions, DecisionObserver, DecisionRecord, MetricReading, TickStage, TickStatus,
    MAX_LOGGED_ACTIONS,
};
use fleetscale_core::MachineId;

/// Writes fly-autoscaler's log lines for each record (see the module docs).
#[derive(Debug, Default)]
pub struct GoLogObserver;

impl GoLogObserver {
    /// An observer that writes each record's lines as it arrives.
    pub fn new() -> Self {
        GoLogObserver
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
            if *stage == TickStage::Paused {
                // The message names the GraphQL URL and FLY_API_BASE_URL (see FlyScaler).
                tracing::error!(app, err = %message, "get current release failed");
                return;
            }
            let err = if *stage == TickStage::List {
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
            ActionKind::Suspend,
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
                    (None, Action::Create { .. }) => {
                        n += 1;
                        let id = o.created.clone().unwrap_or_else(|| MachineId::new(""));
                        let region = o.region.as_deref().unwrap_or_default();
                        tracing::info!(app, id = %id, region = %region, "machine created");
                    }
                    (None, Action::Destroy { id, .. }) => {
                        n += 1;
                        let region = o.region.as_deref().unwrap_or_default();
                        tracing::info!(app, id = %id, region = %region, "machine destroyed");
                    }
                    (None, Action::Start { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, "machine started");
                    }
                    (None, Action::Stop { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, "machine stopped");
                    }
                    (None, Action::Suspend { id, .. }) => {
                        n += 1;
                        tracing::info!(app, id = %id, "machine suspended");
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
                    (Some(e), Action::Suspend { id, .. }) => {
                        tracing::error!(app, id = %id, err = %e.message, "cannot suspend machine, skipping");
                    }
                }
            }
            tracing::info!(app, n, "bulk {k} completed");
        }
    }
}
