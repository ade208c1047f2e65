//! The engine targets of a fly-autoscaler configuration: one app, or every app of an
//! organization matching a wildcard.

use std::sync::Arc;

use async_trait::async_trait;
use fleetscale_core::engine::{TargetProvider, TargetSpec};
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::Policy;
use fleetscale_core::{InitialState, MetricSource};
use fleetscale_fly::apps::FlyApps;
use fleetscale_fly::{FlyGraphql, MachinesClient};

use crate::build::{fly_apps, initial_state};
use crate::config::Config;
use crate::gocompat::go_quote;

/// The targets of a configuration: one app, or every app of the organization matching the
/// wildcard (re-listed every `app-list-refresh-interval` by the engine; a failed listing is
/// logged as `app list update failed` and the last good list kept). With a release guard
/// ([`FlyTargets::with_release_guard`]) each app's scaler pauses while a deploy of it runs.
pub struct FlyTargets {
    apps: FlyApps,
    initial_state: InitialState,
    max_actions_per_tick: u32,
    policy: Arc<Policy>,
    sources: Vec<Arc<dyn MetricSource>>,
}

impl std::fmt::Debug for FlyTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyTargets")
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

impl FlyTargets {
    /// Targets for `config`.
    pub fn new(
        config: Config,
        client: MachinesClient,
        policy: Policy,
        sources: Vec<Arc<dyn MetricSource>>,
    ) -> Self {
        FlyTargets {
            apps: fly_apps(&config, client),
            initial_state: initial_state(&config),
            max_actions_per_tick: config.max_actions_per_tick,
            policy: Arc::new(policy),
            sources,
        }
    }

    /// Checks each app's current release before every tick, as fly-autoscaler does (see
    /// [`fleetscale_fly::FlyScaler::with_release_guard`]).
    pub fn with_release_guard(mut self, graphql: FlyGraphql) -> Self {
        self.apps = self.apps.with_release_guard(graphql);
        self
    }
}

#[async_trait]
impl TargetProvider for FlyTargets {
    /// One target per app; the wildcard list is fetched on every call (the engine calls once
    /// per refresh interval). A failed fetch is logged and the last good list used.
    async fn targets(&self) -> fleetscale_core::Result<Vec<TargetSpec>> {
        let list = self.apps.list().await;
        if let Some(e) = &list.refresh_error {
            tracing::error!(err = %e, "app list update failed");
        }
        if list.newly_empty {
            tracing::warn!(
                pattern = %self.apps.pattern(),
                org = %self.apps.org(),
                "app name pattern {} matches no app of organization {}: nothing to scale",
                go_quote(self.apps.pattern()),
                go_quote(self.apps.org())
            );
        }
        list.apps
            .iter()
            .map(|app| -> fleetscale_core::Result<TargetSpec> {
                Ok(TargetSpec::new(
                    self.apps.scope(app),
                    self.apps.scaler(app)?,
                    Policy::default(),
                )
                .with_shared_policy(self.policy.clone())
                .with_sources(self.sources.clone())
                .with_plan_options(
                    PlanOptions::default()
                        .with_initial_state(self.initial_state)
                        .with_max_actions_per_kind(Some(self.max_actions_per_tick)),
                ))
            })
            .collect()
    }
}
