//! The shape of a configuration file: `[engine]`, `[server]`, `[[target]]` (with its backend,
//! policy, sources and Weave membership) and `[coordination]`, as serde reads them. Values the
//! file spells as strings that need a position in error messages are kept [`Spanned`].

use std::time::Duration;

use fleetscale_core::engine::EngineConfig;
use fleetscale_core::policy::{ErrorPolicy, Limits};
use fleetscale_core::InitialState;
use fleetscale_metrics::SourceConfig;
use serde::Deserialize;
use toml::Spanned;

fn d15() -> Duration {
    Duration::from_secs(15)
}

/// `[engine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Time between passes (default 15s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one tick (default 30s).
    #[serde(with = "humantime_serde")]
    pub tick_timeout: Duration,
    /// Deadline of one metric read (default 10s).
    #[serde(with = "humantime_serde")]
    pub metric_timeout: Duration,
    /// Targets ticking at once (default 4).
    pub concurrency: usize,
    /// Backend calls at once within a tick (default 2).
    pub action_concurrency: usize,
    /// How often wildcard app lists are refreshed (default 60s).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Reclaim lost cluster members whose machine is gone (default false).
    pub reclaim_lost_members: bool,
    /// How long ticks in flight may go on after SIGINT/SIGTERM before they are cancelled
    /// (default 3s, under the 5 s Fly gives a Machine before killing it).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The most creates (and the most starts, stops, destroys) one tick of one target sends
    /// (default 100; at most 10,000).
    pub max_actions_per_tick: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            interval: d15(),
            tick_timeout: Duration::from_secs(30),
            metric_timeout: Duration::from_secs(10),
            concurrency: 4,
            action_concurrency: 2,
            refresh_interval: Duration::from_secs(60),
            reclaim_lost_members: false,
            shutdown_grace: fleetscale_core::engine::DEFAULT_SHUTDOWN_GRACE,
            max_actions_per_tick: fleetscale_core::plan::DEFAULT_MAX_ACTIONS_PER_KIND,
        }
    }
}

impl EngineSection {
    /// Checks the settings: durations neither zero (but the grace) nor longer than 7 days,
    /// concurrencies and the action cap at least 1, the cap at most 10,000. Returns the key at
    /// fault with the message.
    ///
    /// # Errors
    /// `(key, message)`.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        use fleetscale_core::policy::check_duration;
        for (key, d, zero_ok) in [
            ("interval", self.interval, false),
            ("tick_timeout", self.tick_timeout, false),
            ("metric_timeout", self.metric_timeout, false),
            ("refresh_interval", self.refresh_interval, false),
            ("shutdown_grace", self.shutdown_grace, true),
        ] {
            check_duration(&format!("engine.{key}"), d, zero_ok).map_err(|e| (key, bare(&e)))?;
        }
        if self.concurrency == 0 {
            return Err((
                "concurrency",
                "engine.concurrency must be at least 1".into(),
            ));
        }
        if self.action_concurrency == 0 {
            return Err((
                "action_concurrency",
                "engine.action_concurrency must be at least 1".into(),
            ));
        }
        let most = fleetscale_core::expr::MAX_MACHINE_COUNT;
        if !(1..=most).contains(&self.max_actions_per_tick) {
            return Err((
                "max_actions_per_tick",
                format!(
                    "engine.max_actions_per_tick must be from 1 to {most}, got {}",
                    self.max_actions_per_tick
                ),
            ));
        }
        Ok(())
    }
}

/// A core configuration error's message without the `invalid configuration: ` prefix (the
/// binaries' messages are all about configuration).
pub(crate) fn bare(e: &fleetscale_core::Error) -> String {
    match e {
        fleetscale_core::Error::Config { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// `host:port` for `/metrics` and `/healthz` (default `127.0.0.1:9090`); `"off"`
    /// disables the server.
    pub listen: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

fn default_group() -> Option<String> {
    Some("app".into())
}
fn default_token_env() -> String {
    "FLY_API_TOKEN".into()
}
fn default_true() -> bool {
    true
}

/// `backend = { type = "fly", … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlyBackend {
    /// The app, or a wildcard such as `my-app-*` (then `org` is required).
    pub app: String,
    /// The organization slug (wildcards).
    #[serde(default)]
    pub org: Option<String>,
    /// Process group (default `app`; `""` for every machine).
    #[serde(default = "default_group")]
    pub process_group: Option<String>,
    /// Regions for new machines, round-robin (default: the template's).
    #[serde(default)]
    pub regions: Vec<String>,
    /// The environment variable holding the API token (default `FLY_API_TOKEN`).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// The Machines API base URL (default `FLY_FLAPS_BASE_URL`, else Fly's).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Skip the app's ticks while a deploy of it is in progress (its current release is
    /// `running`, asked from Fly's GraphQL API each tick), as fly-autoscaler does. Default
    /// `true`.
    #[serde(default = "default_true")]
    pub release_guard: bool,
    /// The GraphQL API base URL of the release guard (default `FLY_API_BASE_URL`, else
    /// `https://api.fly.io`).
    #[serde(default)]
    pub graphql_base_url: Option<String>,
}

/// The backends (`type = "fly"`, `type = "ec2"`; more can be registered by adding variants).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Fly.io Machines.
    Fly(FlyBackend),
    /// A pool of EC2 instances (see [`fleetscale_aws::Ec2PoolConfig`]).
    Ec2(Box<fleetscale_aws::Ec2PoolConfig>),
}

/// `[target.policy]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Exact created count.
    pub created: Option<Spanned<String>>,
    /// Created min.
    pub created_min: Option<Spanned<String>>,
    /// Created max.
    pub created_max: Option<Spanned<String>>,
    /// Exact started count.
    pub started: Option<Spanned<String>>,
    /// Started min.
    pub started_min: Option<Spanned<String>>,
    /// Started max.
    pub started_max: Option<Spanned<String>>,
    /// Hard limits, steps, cooldowns, stabilization.
    #[serde(default)]
    pub limits: Option<Spanned<Limits>>,
    /// `{ mode = "hold" }` (default) or `{ mode = "fallback", after_failures = 3, count = 2 }`.
    #[serde(default)]
    pub on_error: ErrorPolicy,
}

/// `[target.weave]`: the machines are dynamic peers of a Weave Net cluster.
pub use fleetscale_weave::target::WeaveTargetConfig as WeaveSection;

/// One `[[target]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Display name (default: the app name).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the machines are.
    pub backend: BackendConfig,
    /// State of new machines: `started` (default), `stopped`, `suspended`.
    #[serde(default)]
    pub initial_state: InitialState,
    /// The rules.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Metric sources (`[[target.source]]`, tagged by `type`).
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceConfig>>,
    /// Optional Weave Net membership.
    #[serde(default)]
    pub weave: Option<WeaveSection>,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[engine]`.
    #[serde(default)]
    pub engine: Option<Spanned<EngineSection>>,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[[target]]`.
    #[serde(default, rename = "target")]
    pub targets: Vec<Spanned<TargetConfig>>,
    /// `[coordination]`: replicas sharing the targets through etcd (absent: this process
    /// owns every target).
    #[serde(default)]
    pub coordination: Option<Spanned<fleetscale_etcd::CoordinationSection>>,
}

impl FileConfig {
    /// The `[engine]` settings (the defaults when the table is absent).
    pub fn engine(&self) -> EngineSection {
        self.engine
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_default()
    }
}

/// The engine settings of `[engine]`; `dry_run` plans without acting (`fleetscale eval`,
/// `fleetscale run --dry-run`).
pub fn engine_config(e: &EngineSection, dry_run: bool) -> EngineConfig {
    EngineConfig::default()
        .with_interval(e.interval)
        .with_tick_timeout(e.tick_timeout)
        .with_metric_timeout(e.metric_timeout)
        .with_concurrency(e.concurrency.max(1))
        .with_action_concurrency(e.action_concurrency.max(1))
        .with_refresh_interval(e.refresh_interval)
        .with_dry_run(dry_run)
        .with_reclaim_lost_members(e.reclaim_lost_members)
        .with_shutdown_grace(e.shutdown_grace)
}
