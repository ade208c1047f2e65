//! `fleetscale run` and `fleetscale eval`: many targets from one TOML file.
//!
//! The format is shown in `fleetscale run --help` and the repository README. Every error
//! names the file, the line and column, and the key (the offending line is quoted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetProvider, TargetSpec};
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::{CountRule, ErrorPolicy, Limits, Policy};
use fleetscale_core::record::{MetricReading, TickStatus, TracingObserver};
use fleetscale_core::{ClusterMembership, InitialState, MetricSource, Scaler, Scope};
use fleetscale_fly::{
    AppDiscovery, ClientConfig, FlyGraphql, FlyScaler, FlyScalerConfig, FlyToken, GraphqlConfig,
    MachinesClient, Wildcard,
};
use fleetscale_metrics::SourceConfig;
use fleetscale_weave::{
    FixedPeer, PeerName, ReclaimConfig, Reclaimer, WeaveMembership, WeaveMembershipConfig,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use crate::error::{BinError, Result};
use crate::http::{Health, MetricsServer};
use fleetscale_metrics::AutoscalerMetrics;

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
        }
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

/// The backends (`type = "fly"`; more can be registered by adding variants).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Fly.io Machines.
    Fly(FlyBackend),
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
    pub limits: Limits,
    /// `{ mode = "hold" }` (default) or `{ mode = "fallback", after_failures = 3, count = 2 }`.
    #[serde(default)]
    pub on_error: ErrorPolicy,
}

fn default_router_port() -> u16 {
    6784
}

/// `[target.weave]`: the machines are dynamic peers of a Weave Net cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeaveSection {
    /// The fixed peers: `{ name = "…", address = "…", api_url = "http://…:6784" }`.
    pub fixed: Vec<FixedPeer>,
    /// Router API port on dynamic peers' addresses, for `DELETE /peer` on leave.
    #[serde(default = "default_router_port")]
    pub router_port: u16,
    /// The reclaim ledger; with it, lost members can be reclaimed (see
    /// `engine.reclaim_lost_members`).
    #[serde(default)]
    pub ledger: Option<PathBuf>,
    /// The designated reclaimer (default: the first fixed peer).
    #[serde(default)]
    pub designated: Option<PeerName>,
    /// Minimum time a lost member must have been seen unreachable, continuously, before it is
    /// reclaimed (default 60s; see `fleetscale_weave::ReclaimConfig::min_unreachable`).
    #[serde(default, with = "humantime_serde")]
    pub min_unreachable: Option<Duration>,
}

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
    pub sources: Vec<SourceConfig>,
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
    pub engine: EngineSection,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[[target]]`.
    #[serde(default, rename = "target")]
    pub targets: Vec<Spanned<TargetConfig>>,
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `path:line:col: message` and the quoted line.
pub fn located(path: &Path, text: &str, offset: usize, message: &str) -> String {
    let (line, col) = line_col(text, offset);
    let src = text.lines().nth(line - 1).unwrap_or("").trim_end();
    format!(
        "{}:{line}:{col}: {message}\n  {line:>4} | {src}",
        path.display()
    )
}

/// Replaces `${NAME}` with the environment variable (not `$NAME`, which PromQL queries use;
/// `${APP_NAME}`, `${TARGET}`, `${GROUP}` are left for query-time expansion). Comment lines
/// (first non-blank character `#`) are left alone.
///
/// # Errors
/// An unset variable, with its position.
pub fn expand_braced_env(
    path: &Path,
    text: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0usize;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            line_start += line.len();
            continue;
        }
        let mut rest = line;
        let mut consumed = line_start;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid && !matches!(name, "APP_NAME" | "TARGET" | "GROUP") {
                match getenv(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(BinError::config(located(
                            path,
                            text,
                            consumed + i,
                            &format!("environment variable {name} is not set"),
                        )))
                    }
                }
            } else {
                out.push_str(&rest[i..i + 2 + end + 1]);
            }
            consumed += i + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        line_start += line.len();
    }
    Ok(out)
}

/// Reads and parses a file.
///
/// # Errors
/// The file cannot be read; a TOML or type error (file, line, column, key).
pub fn load(path: &Path, getenv: &dyn Fn(&str) -> Option<String>) -> Result<(FileConfig, String)> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| BinError::io(format!("read {}", path.display()), e))?;
    let text = expand_braced_env(path, &raw, getenv)?;
    let cfg: FileConfig = toml::from_str(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        BinError::config(located(path, &text, offset, e.message().trim()))
    })?;
    if cfg.targets.is_empty() {
        return Err(BinError::config(format!(
            "{}: no [[target]] defined",
            path.display()
        )));
    }
    Ok((cfg, text))
}

struct Template {
    name: Option<String>,
    fly: FlyBackend,
    client: MachinesClient,
    release_guard: Option<FlyGraphql>,
    policy: Arc<Policy>,
    sources: Vec<Arc<dyn MetricSource>>,
    initial_state: InitialState,
    weave: Option<WeaveSection>,
    discovery: Option<AppDiscovery>,
}

/// The targets of a file: fixed apps and wildcards (re-listed at every refresh).
pub struct NativeTargets {
    templates: Vec<Template>,
    scalers: Mutex<HashMap<String, Arc<dyn Scaler>>>,
    memberships: Mutex<HashMap<String, Arc<dyn ClusterMembership>>>,
}

impl std::fmt::Debug for NativeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTargets")
            .field("templates", &self.templates.len())
            .finish_non_exhaustive()
    }
}

fn rule(
    path: &Path,
    text: &str,
    kind: &str,
    single: &Option<Spanned<String>>,
    min: &Option<Spanned<String>>,
    max: &Option<Spanned<String>>,
) -> Result<CountRule> {
    let first = [single, min, max]
        .into_iter()
        .flatten()
        .map(|s| s.span().start)
        .next()
        .unwrap_or(0);
    CountRule::from_settings(
        kind,
        single.as_ref().map(|s| s.get_ref().as_str()),
        min.as_ref().map(|s| s.get_ref().as_str()),
        max.as_ref().map(|s| s.get_ref().as_str()),
    )
    .map_err(|e| {
        let msg = e.to_string().replace("invalid configuration: ", "");
        BinError::config(located(path, text, first, &format!("policy.{kind}: {msg}")))
    })
}

impl NativeTargets {
    /// Builds every target of `cfg` (sources, policies, clients), checking expressions
    /// against the metric names.
    ///
    /// # Errors
    /// Located configuration errors; a missing token variable.
    pub fn build(
        path: &Path,
        text: &str,
        cfg: &FileConfig,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NativeTargets> {
        let mut templates = Vec::new();
        for t in &cfg.targets {
            let at = t.span().start;
            let t = t.get_ref();
            let here = |msg: String| BinError::config(located(path, text, at, &msg));
            let BackendConfig::Fly(fly) = &t.backend;
            let label = t.name.clone().unwrap_or_else(|| fly.app.clone());
            if fly.app.trim().is_empty() {
                return Err(here(format!("target {label:?}: backend.app is empty")));
            }
            if fly.app.contains('*') && fly.org.as_deref().unwrap_or("").is_empty() {
                return Err(here(format!(
                    "target {label:?}: backend.org is required when backend.app has a wildcard"
                )));
            }
            let p = &t.policy;
            let policy = Policy {
                created: rule(
                    path,
                    text,
                    "created",
                    &p.created,
                    &p.created_min,
                    &p.created_max,
                )?,
                started: rule(
                    path,
                    text,
                    "started",
                    &p.started,
                    &p.started_min,
                    &p.started_max,
                )?,
                limits: p.limits,
                on_error: p.on_error,
                keep_one_created: true,
            };
            let mut sources: Vec<Arc<dyn MetricSource>> = Vec::new();
            for s in &t.sources {
                sources.push(
                    s.build().map_err(|e| {
                        here(format!("target {label:?}: source {:?}: {e}", s.name()))
                    })?,
                );
            }
            let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
            policy
                .check(&names)
                .map_err(|e| here(format!("target {label:?}: {e}")))?;
            let token = getenv(&fly.token_env)
                .filter(|t| !t.trim().is_empty())
                .map(FlyToken::new);
            let mut cc = ClientConfig::default();
            if let Some(url) = fly
                .base_url
                .clone()
                .or_else(|| getenv(fleetscale_fly::client::BASE_URL_ENV))
                .filter(|u| !u.trim().is_empty())
            {
                cc.base_url = url;
            }
            let release_guard = if fly.release_guard {
                let mut gc = GraphqlConfig::from_getenv(getenv);
                if let Some(url) = fly
                    .graphql_base_url
                    .clone()
                    .filter(|u| !u.trim().is_empty())
                {
                    gc.base_url = url;
                }
                Some(
                    FlyGraphql::new(token.clone(), gc)
                        .map_err(|e| here(format!("target {label:?}: {e}")))?,
                )
            } else {
                None
            };
            let client = MachinesClient::new(token, cc)
                .map_err(|e| here(format!("target {label:?}: {e}")))?;
            let discovery = fly.app.contains('*').then(|| {
                AppDiscovery::new(
                    client.clone(),
                    fly.org.clone().unwrap_or_default(),
                    Wildcard::new(fly.app.clone()),
                )
            });
            templates.push(Template {
                name: t.name.clone(),
                fly: fly.clone(),
                client,
                release_guard,
                policy: Arc::new(policy),
                sources,
                initial_state: t.initial_state,
                weave: t.weave.clone(),
                discovery,
            });
        }
        Ok(NativeTargets {
            templates,
            scalers: Mutex::new(HashMap::new()),
            memberships: Mutex::new(HashMap::new()),
        })
    }

    fn spec(&self, t: &Template, app: &str, name: String) -> fleetscale_core::Result<TargetSpec> {
        let scaler = {
            let mut cache = self.scalers.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&name) {
                Some(s) => s.clone(),
                None => {
                    let group = t.fly.process_group.clone().filter(|g| !g.is_empty());
                    let cfg = FlyScalerConfig::new(app)
                        .with_process_group(group)
                        .with_regions(t.fly.regions.clone());
                    let mut fly = FlyScaler::new(t.client.clone(), cfg)?;
                    if let Some(g) = &t.release_guard {
                        fly = fly.with_release_guard(g.clone());
                    }
                    let s: Arc<dyn Scaler> = Arc::new(fly);
                    cache.insert(name.clone(), s.clone());
                    s
                }
            }
        };
        let mut scope = Scope::new(app);
        if let Some(g) = t.fly.process_group.clone().filter(|g| !g.is_empty()) {
            scope = scope.with_group(g);
        }
        if let Some(org) = &t.fly.org {
            scope = scope.with_var("ORG", org.clone());
        }
        let membership = match &t.weave {
            None => None,
            Some(w) => {
                let mut cache = self.memberships.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(&name) {
                    Some(m) => Some(m.clone()),
                    None => {
                        let port = w.router_port;
                        // Peers are bound to this target's machines under its own name.
                        let mut mc = WeaveMembershipConfig::new(w.fixed.clone())
                            .with_inventory_source(format!("fleetscale-target:{name}"));
                        mc.router_url = Some(Arc::new(move |m: &fleetscale_core::Machine| {
                            m.address.as_ref().map(|a| {
                                if a.contains(':') {
                                    format!("http://[{a}]:{port}")
                                } else {
                                    format!("http://{a}:{port}")
                                }
                            })
                        }));
                        if let Some(ledger) = &w.ledger {
                            let designated = w
                                .designated
                                .or_else(|| w.fixed.first().map(|f| f.name))
                                .ok_or_else(|| {
                                    fleetscale_core::Error::config("weave.fixed is empty")
                                })?;
                            let mut rc =
                                ReclaimConfig::new(w.fixed.clone(), designated, ledger.clone());
                            if let Some(d) = w.min_unreachable {
                                rc = rc.with_min_unreachable(d);
                            }
                            mc = mc.with_reclaimer(Arc::new(Reclaimer::new(rc)?));
                        }
                        let m: Arc<dyn ClusterMembership> = Arc::new(WeaveMembership::new(mc)?);
                        cache.insert(name.clone(), m.clone());
                        Some(m)
                    }
                }
            }
        };
        Ok(TargetSpec {
            scope: Scope {
                target: name,
                ..scope
            },
            scaler,
            sources: t.sources.clone(),
            policy: t.policy.clone(),
            plan_options: PlanOptions {
                initial_state: t.initial_state,
                ..PlanOptions::default()
            },
            membership,
        })
    }
}

#[async_trait]
impl TargetProvider for NativeTargets {
    /// Every fixed target, and for wildcards every matching app (the last good list when a
    /// refresh fails).
    async fn targets(&self) -> fleetscale_core::Result<Vec<TargetSpec>> {
        let mut out = Vec::new();
        for t in &self.templates {
            match &t.discovery {
                None => {
                    let name = t.name.clone().unwrap_or_else(|| t.fly.app.clone());
                    out.push(self.spec(t, &t.fly.app, name)?);
                }
                Some(d) => {
                    let apps = match d.refresh().await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::error!(pattern = %t.fly.app, err = %e, "app list update failed; keeping the last good list");
                            d.current().unwrap_or_default()
                        }
                    };
                    for app in apps {
                        let name = match &t.name {
                            Some(n) => format!("{n}/{app}"),
                            None => app.clone(),
                        };
                        out.push(self.spec(t, &app, name)?);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn engine_config(e: &EngineSection, dry_run: bool) -> EngineConfig {
    EngineConfig {
        interval: e.interval,
        tick_timeout: e.tick_timeout,
        metric_timeout: e.metric_timeout,
        concurrency: e.concurrency.max(1),
        action_concurrency: e.action_concurrency.max(1),
        refresh_interval: e.refresh_interval,
        dry_run,
        reclaim_lost_members: e.reclaim_lost_members,
    }
}

fn getenv(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Logs why a tick was skipped by its backend (e.g. `release in progress`) at WARN; the
/// [`TracingObserver`] line only says `status=paused`.
#[derive(Debug)]
struct PauseLog;

impl fleetscale_core::record::DecisionObserver for PauseLog {
    fn observe(&self, r: &fleetscale_core::record::DecisionRecord) {
        if let TickStatus::Paused { reason } = &r.status {
            tracing::warn!(app = %r.target, reason = %reason, "tick skipped: {reason}");
        }
    }
}

/// `fleetscale run`.
///
/// # Errors
/// Configuration errors; a listen address that cannot be bound.
pub async fn run(path: &Path, dry_run: bool) -> Result<()> {
    let (cfg, text) = load(path, &getenv)?;
    let provider = Arc::new(NativeTargets::build(path, &text, &cfg, &getenv)?);
    let metrics = Arc::new(AutoscalerMetrics::new());
    let health = Arc::new(Health::new(
        cfg.engine.interval * 3 + cfg.engine.tick_timeout + cfg.engine.refresh_interval,
    ));
    let status = crate::http::status_board("fleetscale", cfg.engine.interval);
    let engine = Arc::new(
        Engine::new(engine_config(&cfg.engine, dry_run), provider)
            .with_observer(Arc::new(TracingObserver))
            .with_observer(Arc::new(PauseLog))
            .with_observer(metrics.clone())
            .with_observer(health.clone())
            .with_observer(status.clone()),
    );
    let server = if cfg.server.listen.trim() == "off" {
        None
    } else {
        let addr: SocketAddr = crate::fas::config::parse_listen_addr(&cfg.server.listen)
            .ok_or_else(|| {
                BinError::config(format!(
                    "{}: server.listen {:?} is not host:port",
                    path.display(),
                    cfg.server.listen
                ))
            })?;
        let s = MetricsServer::start_with_status(addr, metrics, health, Some(status))
            .await
            .map_err(|e| BinError::io(format!("listen on {addr}"), e))?;
        tracing::info!(addr = %s.addr(), "serving /metrics and /healthz");
        Some(s)
    };
    tracing::info!(
        targets = cfg.targets.len(),
        dry_run,
        interval = ?cfg.engine.interval,
        "fleetscale running"
    );
    let cancel = CancellationToken::new();
    let task = {
        let engine = engine.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { engine.run(cancel).await })
    };
    let signal = crate::fas::wait_for_signal().await;
    tracing::info!(signal, "signal received, finishing ticks in flight");
    cancel.cancel();
    let _ = task.await;
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(())
}

/// `fleetscale eval`: one dry-run tick per target, printed; exit status 1 when a tick failed.
///
/// # Errors
/// Configuration errors; the target list cannot be built.
pub async fn eval(path: &Path, json: bool) -> Result<i32> {
    let (cfg, text) = load(path, &getenv)?;
    let provider = Arc::new(NativeTargets::build(path, &text, &cfg, &getenv)?);
    let targets = provider.targets().await?;
    let engine = Engine::new(engine_config(&cfg.engine, true), provider);
    let mut failed = false;
    for t in &targets {
        let r = engine.tick(t, true).await;
        failed |= matches!(r.status, TickStatus::Failed { .. });
        if json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            continue;
        }
        println!("target {}", r.target);
        if let Some(c) = r.counts {
            println!(
                "  machines: {} created, {} started, {} stopped, {} suspended, {} in transition, {} unmanageable",
                c.created, c.started, c.stopped, c.suspended, c.transitioning, c.unmanageable
            );
        }
        for (name, m) in &r.metrics {
            match m {
                MetricReading::Value(v) => println!("  metric {name} = {v}"),
                MetricReading::Failed { kind, message } => {
                    println!("  metric {name} FAILED ({kind}): {message}")
                }
            }
        }
        if let Some(d) = &r.decision {
            let b = |b: fleetscale_core::Bounds| {
                format!(
                    "min {} max {}",
                    b.min.map_or("-".into(), |v| v.to_string()),
                    b.max.map_or("-".into(), |v| v.to_string())
                )
            };
            if let Some(raw) = d.raw {
                println!(
                    "  rules: created {}, started {}",
                    b(raw.created),
                    b(raw.started)
                );
            }
            println!(
                "  targets: created {}, started {}{}",
                b(d.targets.created),
                b(d.targets.started),
                if d.held { " (held)" } else { "" }
            );
            for n in &d.notes {
                println!("  note: {n}");
            }
        }
        match &r.plan {
            Some(p) if !p.is_empty() => {
                println!("  would do:");
                for a in &p.actions {
                    println!("    - {a}");
                }
            }
            Some(_) => println!("  would do: nothing"),
            None => {}
        }
        if let Some(p) = &r.plan {
            for n in &p.notes {
                println!("  plan note: {n}");
            }
        }
        match &r.status {
            TickStatus::Failed { stage, message, .. } => {
                println!("  FAILED at {stage}: {message}")
            }
            TickStatus::Paused { reason } => println!("  paused: {reason}"),
            _ => {}
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig> {
        let path = Path::new("fleetscale.toml");
        let text = expand_braced_env(path, text, &|k| (k == "TOKEN").then(|| "s3cret".into()))?;
        toml::from_str::<FileConfig>(&text).map_err(|e| {
            BinError::config(located(
                path,
                &text,
                e.span().map_or(0, |s| s.start),
                e.message(),
            ))
        })
    }

    const GOOD: &str = r#"
[engine]
interval = "5s"

[[target]]
name = "web"
backend = { type = "fly", app = "my-app" }
initial_state = "stopped"

[target.policy]
created = "min(running_machines + 1, 10)"
on_error = { mode = "fallback", after_failures = 3, count = 2 }

[target.policy.limits]
created = { min = 1, max = 10 }
scale_in_stabilization = "5m"

[[target.source]]
type = "prometheus"
name = "running_machines"
address = "http://127.0.0.1:9090"
query = "count(fly_instance_up{app='${APP_NAME}'})"
token = "${TOKEN}"
"#;

    #[test]
    fn parses_a_full_file() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.engine.interval, Duration::from_secs(5));
        let t = cfg.targets[0].get_ref();
        assert_eq!(t.initial_state, InitialState::Stopped);
        assert_eq!(t.policy.limits.created.max, Some(10));
        assert_eq!(t.sources.len(), 1);
        let nt = NativeTargets::build(Path::new("f.toml"), GOOD, &cfg, &|_| None).unwrap();
        assert_eq!(nt.templates.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad = GOOD.replace(
            "initial_state = \"stopped\"",
            "initial_state = \"stopped\"\nbogus = 1",
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("fleetscale.toml:9:"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let bad = GOOD.replace("interval = \"5s\"", "interval = \"5 parsecs\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("fleetscale.toml:3:"), "{e}");
        assert!(e.contains("interval"), "{e}");

        let bad = GOOD.replace("token = \"${TOKEN}\"", "token = \"${MISSING}\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains(":23:") && e.contains("MISSING is not set"),
            "{e}"
        );

        // Semantic errors: the expression's own line.
        let bad = GOOD.replace(
            "min(running_machines + 1, 10)",
            "min(running_machines + , 10)",
        );
        let cfg = parse(&bad);
        let text = expand_braced_env(Path::new("f.toml"), &bad, &|_| Some("x".into())).unwrap();
        let e = NativeTargets::build(Path::new("f.toml"), &text, &cfg.unwrap(), &|_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("f.toml:11:"), "{e}");
        assert!(e.contains("policy.created"), "{e}");
        // An unknown variable names the target.
        let bad = GOOD.replace("min(running_machines + 1, 10)", "queue_depth");
        let text = expand_braced_env(Path::new("f.toml"), &bad, &|_| Some("x".into())).unwrap();
        let cfg = parse(&bad).unwrap();
        let e = NativeTargets::build(Path::new("f.toml"), &text, &cfg, &|_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("queue_depth") && e.contains("\"web\""), "{e}");
    }

    #[test]
    fn the_example_file_and_a_weave_section_build() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fleetscale.example.toml"
        ));
        let env = |k: &str| (k == "FLY_PROMETHEUS_TOKEN").then(|| "FlyV1 fm2_x".to_owned());
        let (cfg, text) = load(path, &env).unwrap();
        assert_eq!(cfg.targets.len(), 2);
        NativeTargets::build(path, &text, &cfg, &env).unwrap();

        let weave = format!(
            "{GOOD}\n[target.weave]\nfixed = [{{ name = \"00:00:00:00:00:01\", address = \"10.0.0.1\", api_url = \"http://10.0.0.1:6784\" }}]\nledger = \"/tmp/l.jsonl\"\n"
        );
        let cfg = parse(&weave).unwrap();
        let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
        assert_eq!(w.router_port, 6784);
        assert_eq!(w.fixed.len(), 1);
        assert_eq!(w.min_unreachable, None, "the reclaimer's default applies");
        let cfg = parse(&format!("{weave}min_unreachable = \"90s\"\n")).unwrap();
        let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
        assert_eq!(w.min_unreachable, Some(Duration::from_secs(90)));
    }

    #[test]
    fn the_release_guard_is_on_by_default_and_can_be_turned_off() {
        let path = Path::new("f.toml");
        let env = |k: &str| match k {
            "FLY_API_BASE_URL" => Some("http://127.0.0.1:9".to_owned()),
            _ => None,
        };
        let cfg = parse(GOOD).unwrap();
        let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend;
        assert!(fly.release_guard);
        let built = NativeTargets::build(path, GOOD, &cfg, &env).unwrap();
        let guard = built.templates[0].release_guard.as_ref().expect("guard");
        assert_eq!(guard.url().as_str(), "http://127.0.0.1:9/graphql");

        let own = GOOD.replace(
            "app = \"my-app\" }",
            "app = \"my-app\", graphql_base_url = \"http://127.0.0.1:8\" }",
        );
        let cfg = parse(&own).unwrap();
        let built = NativeTargets::build(path, &own, &cfg, &env).unwrap();
        let guard = built.templates[0].release_guard.as_ref().expect("guard");
        assert_eq!(guard.url().as_str(), "http://127.0.0.1:8/graphql");

        let off = GOOD.replace(
            "app = \"my-app\" }",
            "app = \"my-app\", release_guard = false }",
        );
        let cfg = parse(&off).unwrap();
        let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend;
        assert!(!fly.release_guard);
        let built = NativeTargets::build(path, &off, &cfg, &env).unwrap();
        assert!(built.templates[0].release_guard.is_none());
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
