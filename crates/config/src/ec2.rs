//! EC2 targets of `fleetscale run`: `backend = { type = "ec2", … }`, an
//! [`Ec2PoolConfig`] (validated by `fleetscale-aws` while the file is read), optionally with
//! `[target.weave]`: the pool's instances are then dynamic Weave peers, launched with the
//! dynamic-peer bootstrap script of `fleetscale_weave::launch` as their user data.

use std::sync::Arc;

use fleetscale_aws::{Ec2PoolConfig, Ec2Scaler, UserData};
use fleetscale_core::engine::TargetSpec;
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::Policy;
use fleetscale_core::{MetricSource, Scope};
use fleetscale_weave::WeaveMembership;

use crate::schema::TargetConfig;

/// One EC2 target: its pool, rules, metrics and Weave membership; the scaler connects (AWS
/// configuration chain) at the first tick.
pub struct Ec2Target {
    name: String,
    pool: Ec2PoolConfig,
    policy: Arc<Policy>,
    sources: Vec<Arc<dyn MetricSource>>,
    plan_options: PlanOptions,
    membership: Option<Arc<WeaveMembership>>,
    scaler: tokio::sync::OnceCell<Arc<Ec2Scaler>>,
}

impl Ec2Target {
    /// The target `name` of `t` on `pool`. With `[target.weave]`, new instances get the
    /// dynamic-peer bootstrap script (`weave launch --no-restart --ipalloc-init=observer` with
    /// the fixed peers only) as user data; the pool must then not set `user_data` itself.
    ///
    /// # Errors
    /// A message (without the target's name) for user data given twice, a pool that is invalid
    /// once the user data is set (e.g. over EC2's 16 KiB), or an invalid Weave section.
    pub fn new(
        name: String,
        mut pool: Ec2PoolConfig,
        t: &TargetConfig,
        policy: Arc<Policy>,
        sources: Vec<Arc<dyn MetricSource>>,
        max_actions_per_tick: u32,
    ) -> Result<Self, String> {
        let membership = match &t.weave {
            None => None,
            Some(w) => {
                let m = w.membership(&name).map_err(|e| e.to_string())?;
                if pool.user_data.is_some() {
                    return Err("backend.user_data cannot be set with [target.weave]: the instances' user data is then the Weave dynamic-peer bootstrap script (install Docker and weave in the AMI or launch template)".into());
                }
                pool.user_data = Some(UserData::new(m.launch_plan().bootstrap_script()));
                Some(Arc::new(m))
            }
        };
        pool.validate().map_err(|e| match e {
            fleetscale_aws::AwsError::Config { message } => format!("backend: {message}"),
            e => format!("backend: {e}"),
        })?;
        Ok(Ec2Target {
            name,
            pool,
            policy,
            sources,
            plan_options: PlanOptions::default()
                .with_initial_state(t.initial_state)
                .with_max_actions_per_kind(Some(max_actions_per_tick)),
            membership,
            scaler: tokio::sync::OnceCell::new(),
        })
    }

    /// The user data new instances get (the Weave bootstrap script with `[target.weave]`).
    pub fn user_data(&self) -> Option<&str> {
        self.pool.user_data.as_ref().map(|u| u.expose())
    }

    /// Whether both targets select the same instances (same endpoint, region, pool tag and
    /// pool): two targets would then fight over them.
    pub fn same_pool(&self, other: &Ec2Target) -> bool {
        let (a, b) = (&self.pool, &other.pool);
        a.endpoint == b.endpoint
            && a.region == b.region
            && a.profile == b.profile
            && a.pool_tag == b.pool_tag
            && a.pool == b.pool
    }

    /// The refusal of a second target on this pool.
    pub fn overlap_message(&self) -> String {
        format!(
            "manages the same EC2 instances as target {:?} (tag {}={}): two targets would fight over them; give them different pools",
            self.name, self.pool.pool_tag, self.pool.pool
        )
    }

    /// The engine's view of the target; connects the scaler the first time.
    ///
    /// # Errors
    /// The AWS configuration cannot be loaded (no region).
    pub async fn spec(&self) -> fleetscale_core::Result<TargetSpec> {
        let scaler = self
            .scaler
            .get_or_try_init(|| async { Ec2Scaler::connect(self.pool.clone()).await.map(Arc::new) })
            .await?;
        let mut spec = TargetSpec::new(
            Scope::new(self.name.clone()).with_var("POOL", self.pool.pool.clone()),
            scaler.clone(),
            Policy::default(),
        )
        .with_shared_policy(self.policy.clone())
        .with_sources(self.sources.clone())
        .with_plan_options(self.plan_options.clone());
        if let Some(m) = &self.membership {
            spec = spec.with_membership(m.clone());
        }
        Ok(spec)
    }
}
