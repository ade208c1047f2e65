//! `fly-autoscaler`: a drop-in replacement for Fly's Go autoscaler on the fleetscale engine.
//!
//! Same environment variables, YAML file, defaults, validation messages, subcommands, log
//! lines and metric names as `superfly/fly-autoscaler` v0.3.2 (see [`config`] and
//! [`observer`]); the differences (bug fixes and extras) are listed in the repository's
//! README, section "fly-autoscaler compatibility".

pub mod config;
pub mod observer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetProvider, TargetSpec};
use fleetscale_core::expr::Expr;
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::{self, CountRule, Policy, COUNT_VARIABLES};
use fleetscale_core::{Bounds, Counts, InitialState, MetricSource, Scope, Targets};
use fleetscale_fly::apps::FlyApps;
use fleetscale_fly::{ClientConfig, FlyGraphql, GraphqlConfig, MachinesClient, Token};
use fleetscale_metrics::{
    MetricsError, PrometheusConfig, PrometheusSource, TemporalConfig, TemporalSource,
};
use tokio_util::sync::CancellationToken;

use crate::error::{BinError, Result};
use crate::gocompat::{format_go_duration, go_quote};
use crate::http::{Health, MetricsServer};
use config::Config;
use fleetscale_metrics::AutoscalerMetrics;
use observer::GoLogObserver;

/// The top-level usage text (the Go tool's, with its commands).
pub const USAGE: &str = "\
fly-autoscaler is a metrics-based autoscaler for automatically scaling your
Fly Machines up. It continuously monitors external metrics to derive the
appropriate number of machines to run to handle the load.

This is fleetscale's drop-in replacement of superfly/fly-autoscaler: the same
FAS_* variables, YAML file, commands, logs and metrics.

Usage:

\tfly-autoscaler <command> [arguments]

The commands are:

\teval         collects metrics once and evaluates server count
\tserve        runs the autoscaler server process (the default)
\tversion      prints the version
";

const SERVE_USAGE: &str = "\
The serve command runs the autoscaler server process and begins managing a fleet
of Fly machines based on metrics.

Usage:

\tfly-autoscaler serve [arguments]

Arguments:
  -config string
    \tPath to config file
";

const EVAL_USAGE: &str = "\
The eval command runs collects metrics once and evaluates the given expression.
No scaling is performed. This command should be used for testing & debugging.

Usage:

\tfly-autoscaler eval [arguments]

Arguments:
  -config string
    \tPath to config file
";

/// `fly-autoscaler version`'s line: `fly-autoscaler <version>, commit=<commit>` as the Go
/// tool prints it (the commit comes from `FLEETSCALE_COMMIT` at build time).
pub fn version_string() -> String {
    format!(
        "fly-autoscaler {} (fleetscale), commit={}",
        env!("CARGO_PKG_VERSION"),
        option_env!("FLEETSCALE_COMMIT").unwrap_or("unknown")
    )
}

/// The top-level help: [`USAGE`], then every environment variable with what it is for.
pub fn help_text() -> String {
    let mut out = String::from(USAGE);
    out.push_str("\nEnvironment variables (a YAML file given with -config overrides them):\n\n");
    let width = config::ENV_VARIABLES
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (name, what) in config::ENV_VARIABLES {
        out.push_str(&format!("\t{name:<width$}  {what}\n"));
    }
    out.push_str(
        "\nEach command takes -config PATH; `fly-autoscaler <command> -h` shows it. \
         `fly-autoscaler version` (or --version) prints the version.\n",
    );
    out
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `serve [-config PATH]` (also the default).
    Serve {
        /// `-config`.
        config: Option<PathBuf>,
    },
    /// `eval [-config PATH]`.
    Eval {
        /// `-config`.
        config: Option<PathBuf>,
    },
    /// `version` (also `--version`, `-version`, `-v`).
    Version,
    /// Print this usage text and exit with status 0.
    Help(String),
}

/// Parses the arguments (without the program name) like the Go tool: a command, then Go
/// `flag`-style options (`-config PATH`, `-config=PATH`, `--config PATH`). With no command,
/// or options first, the command is `serve`.
///
/// # Errors
/// `fly-autoscaler X: unknown command`, `flag provided but not defined: -x`,
/// `flag needs an argument: -config`, `too many arguments`.
pub fn parse_args(args: &[String]) -> Result<Command> {
    let (cmd, rest) = match args.split_first() {
        None => ("serve", &args[..0]),
        Some((first, rest)) => match first.as_str() {
            "serve" | "eval" | "version" => (first.as_str(), rest),
            "--version" | "-version" | "-v" => return Ok(Command::Version),
            "help" | "-h" | "-help" | "--help" => return Ok(Command::Help(help_text())),
            f if f.starts_with('-') => ("serve", args),
            other => {
                return Err(BinError::Failed(format!(
                    "fly-autoscaler {other}: unknown command"
                )))
            }
        },
    };
    if cmd == "version" {
        return Ok(Command::Version);
    }
    let usage = if cmd == "eval" {
        EVAL_USAGE
    } else {
        SERVE_USAGE
    };
    let mut config = None;
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if !a.starts_with('-') || a == "-" {
            return Err(BinError::Failed("too many arguments".into()));
        }
        if a == "--" {
            if i + 1 < rest.len() {
                return Err(BinError::Failed("too many arguments".into()));
            }
            break;
        }
        let name = a.trim_start_matches('-');
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        match name {
            "h" | "help" => return Ok(Command::Help(usage.to_owned())),
            "config" => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        rest.get(i).cloned().ok_or_else(|| {
                            BinError::Failed("flag needs an argument: -config".into())
                        })?
                    }
                };
                config = Some(PathBuf::from(v));
            }
            other => {
                return Err(BinError::Failed(format!(
                    "flag provided but not defined: -{other}"
                )))
            }
        }
        i += 1;
    }
    Ok(if cmd == "eval" {
        Command::Eval { config }
    } else {
        Command::Serve { config }
    })
}

/// Loads the configuration: environment (through `getenv`), then the YAML file if given.
///
/// # Errors
/// Environment parse errors, an unreadable file, YAML errors (prefixed with the path).
pub fn load_config(
    path: Option<&std::path::Path>,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let mut c = Config::from_env(getenv)?;
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BinError::io(format!("open {}", path.display()), e))?;
        c.apply_yaml(&text, getenv)
            .map_err(|e| BinError::config(format!("{}: {e}", path.display())))?;
    }
    Ok(c)
}

/// The policy of the configuration: fly-autoscaler's rules, created counts kept at >= 1.
/// Expressions are compiled now and their variables checked against `metric_names` (the Go
/// tool only found such mistakes at every reconcile).
///
/// # Errors
/// An expression that does not parse or uses an unknown variable.
pub fn build_policy(c: &Config, metric_names: &[&str]) -> Result<Policy> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let rule = |kind: &str, single: &str, min: &str, max: &str| {
        CountRule::from_settings(
            kind,
            opt(single).as_deref(),
            opt(min).as_deref(),
            opt(max).as_deref(),
        )
        .map_err(|e| BinError::config(format!("invalid {kind} machine count expression: {e}")))
    };
    let policy = Policy {
        created: rule(
            "created",
            &c.created_machine_count,
            &c.min_created_machine_count,
            &c.max_created_machine_count,
        )?,
        started: rule(
            "started",
            &c.started_machine_count,
            &c.min_started_machine_count,
            &c.max_started_machine_count,
        )?,
        ..Policy::default()
    };
    policy.check(metric_names).map_err(|e| match e {
        fleetscale_core::Error::Config { message, .. } => BinError::config(message),
        e => BinError::config(format!("invalid expression: {e}")),
    })?;
    Ok(policy)
}

/// The metric sources of the collectors. Prometheus queries expand `$APP_NAME` per app and
/// other `$VAR`s from the environment at query time, like the Go tool since v0.3.2.
///
/// # Errors
/// A collector that is not supported or whose settings are invalid.
pub fn build_sources(c: &Config) -> Result<Vec<Arc<dyn MetricSource>>> {
    let mut out: Vec<Arc<dyn MetricSource>> = Vec::new();
    for (i, mc) in c.metric_collectors.iter().enumerate() {
        mc.validate()
            .map_err(|e| BinError::config(format!("metric collector[{i}]: {e}")))?;
        if mc.kind == "temporal" {
            out.push(build_temporal(c, mc).map_err(|e| {
                BinError::config(format!(
                    "cannot create metrics collectors: metric collector[{i}]: {e}"
                ))
            })?);
            continue;
        }
        let mut pc = PrometheusConfig::new(&mc.metric_name, &mc.address, &mc.query)
            .with_expand_env(true)
            .with_timeout(c.timeout);
        if let Some(t) = &mc.token {
            pc = pc.with_token(t.clone());
        }
        let src = PrometheusSource::new(pc).map_err(|e| {
            BinError::config(format!(
                "cannot create metrics collectors: metric collector[{i}]: {e}"
            ))
        })?;
        out.push(Arc::new(src));
    }
    Ok(out)
}

/// A Temporal collector as fly-autoscaler builds it (`newTemporalMetricCollector`): address,
/// namespace, client certificate and key, query; the query's `$VAR`s expanded per app (and
/// from the environment) at query time. Its deadline is the Go SDK's for a call made under the
/// reconcile timeout: half of it, clamped to 1–10 s (`newGRPCContext`).
///
/// # Errors
/// The Go tool's message alone (`temporal namespace required`, `tls: …`), or ours.
fn build_temporal(
    c: &Config,
    mc: &config::CollectorConfig,
) -> std::result::Result<Arc<dyn MetricSource>, String> {
    let secret = |t: &Option<fleetscale_metrics::Token>| {
        t.as_ref()
            .filter(|t| !t.is_empty())
            .map(|t| t.expose().to_owned())
    };
    let mut tc = TemporalConfig::new(&mc.metric_name, &mc.address, &mc.namespace)
        .with_query(&mc.query)
        .with_expand_env(true)
        .with_timeout((c.timeout / 2).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(10),
        ));
    tc.cert = secret(&mc.cert_data);
    tc.key = mc.key_data.clone().filter(|t| !t.is_empty());
    tc.ca = secret(&mc.ca_data);
    tc.api_key = mc.api_key.clone().filter(|t| !t.is_empty());
    match TemporalSource::new(tc) {
        Ok(s) => Ok(Arc::new(s)),
        // The message alone, as the Go tool's `Open()` errors read.
        Err(MetricsError::Config { message, .. }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// A Machines API client with the configured token; the base URL comes from
/// `FLY_FLAPS_BASE_URL` when set (as fly-go does), else `https://api.machines.dev`.
///
/// # Errors
/// A token that cannot be a header, an invalid base URL.
pub fn build_client(c: &Config, getenv: &dyn Fn(&str) -> Option<String>) -> Result<MachinesClient> {
    let mut cfg = ClientConfig::default();
    if let Some(url) = getenv(fleetscale_fly::client::BASE_URL_ENV) {
        if !url.trim().is_empty() {
            cfg.base_url = url.trim().to_owned();
        }
    }
    let token = c
        .api_token
        .as_ref()
        .map(|t| Token::new(t.expose().to_owned()));
    Ok(MachinesClient::new(token, cfg)?)
}

/// The GraphQL client of the deploy guard ("release in progress, skipping reconciliation"):
/// `https://api.fly.io/graphql` as fly-autoscaler, or `$FLY_API_BASE_URL/graphql` when that
/// variable is set (flyctl's override; fly-autoscaler has none), with the configured token and
/// the reconcile timeout.
///
/// # Errors
/// A token that cannot be a header, an invalid base URL.
pub fn build_graphql(c: &Config, getenv: &dyn Fn(&str) -> Option<String>) -> Result<FlyGraphql> {
    let cfg = GraphqlConfig::from_getenv(getenv).with_timeout(c.timeout);
    let token = c
        .api_token
        .as_ref()
        .map(|t| Token::new(t.expose().to_owned()));
    Ok(FlyGraphql::new(token, cfg)?)
}

/// The app or wildcard of `c`, limited to its process group.
fn fly_apps(c: &Config, client: MachinesClient) -> FlyApps {
    FlyApps::new(client, c.app_name.clone(), c.org.clone())
        .with_process_group(Some(c.process_group.clone()))
        .with_regions(c.regions.clone())
}

fn initial_state(c: &Config) -> InitialState {
    if c.initial_machine_state == "stopped" {
        InitialState::Stopped
    } else {
        InitialState::Started
    }
}

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
                crate::gocompat::go_quote(self.apps.pattern()),
                crate::gocompat::go_quote(self.apps.org())
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

/// The engine settings of a configuration.
pub fn engine_config(c: &Config) -> EngineConfig {
    EngineConfig::default()
        .with_interval(c.interval)
        .with_tick_timeout(c.timeout)
        .with_metric_timeout(c.timeout)
        .with_concurrency(usize::try_from(c.concurrency.max(1)).unwrap_or(1))
        // The Go tool acts on one machine at a time; so do we (the client paces too).
        .with_action_concurrency(1)
        .with_refresh_interval(c.app_list_refresh_interval)
        .with_dry_run(c.dry_run)
        .with_shutdown_grace(c.shutdown_grace)
}

/// Registers every secret of a configuration with [`crate::redact`], so that no log line or
/// message prints it, whatever path it takes.
pub fn register_secrets(c: &Config) {
    let tokens = c
        .api_token
        .iter()
        .chain(c.metric_collectors.iter().flat_map(|m| {
            m.token
                .iter()
                .chain(m.cert_data.iter())
                .chain(m.key_data.iter())
                .chain(m.api_key.iter())
        }));
    for t in tokens {
        crate::redact::register(t.expose());
    }
}

fn log_pool_initialized(c: &Config, collectors: usize) {
    let interval = format_go_duration(c.interval);
    let timeout = format_go_duration(c.timeout);
    let refresh = format_go_duration(c.app_list_refresh_interval);
    let regions =
        (!c.regions.is_empty()).then(|| serde_json::to_string(&c.regions).unwrap_or_default());
    let (min_c, max_c) = (c.min_created(), c.max_created());
    let (min_s, max_s) = (c.min_started(), c.max_started());
    // slog.String("created", …) when min == max, else a group created{min,max}.
    let created = (min_c == max_c).then_some(min_c);
    let created_range = (min_c != max_c).then_some((min_c, max_c));
    let started = (min_s == max_s).then_some(min_s);
    let started_range = (min_s != max_s).then_some((min_s, max_s));
    tracing::info!(
        interval = %interval,
        timeout = %timeout,
        appListRefreshInterval = %refresh,
        collectors = collectors as u64,
        regions__json = regions.as_deref(),
        created = created,
        created.min = created_range.map(|r| r.0),
        created.max = created_range.map(|r| r.1),
        started = started,
        started.min = started_range.map(|r| r.0),
        started.max = started_range.map(|r| r.1),
        "reconciler pool initialized, beginning loop"
    );
}

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere) and returns the signal's name.
pub async fn wait_for_signal() -> &'static str {
    crate::supervise::Signals::new().next().await
}

/// `serve`: validates, connects, starts the metrics server and the engine, and runs until
/// SIGINT or SIGTERM; then gives the ticks in flight the shutdown grace and returns (see
/// [`crate::supervise`]: a second signal exits at once, an engine that dies ends the process).
///
/// # Errors
/// Configuration errors (Go's messages), client construction errors, a metrics address that
/// cannot be bound, an engine that stopped on its own.
pub async fn serve(config: Config, getenv: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = option_env!("FLEETSCALE_COMMIT").unwrap_or(""),
        "fly-autoscaler"
    );
    config.validate()?;
    config.validate_serve()?;
    // An extension: FAS_ETCD_ENDPOINTS makes this process one of several replicas sharing
    // the apps through etcd; without it nothing changes.
    let etcd = fleetscale_etcd::EtcdConfig::from_env("FAS_ETCD_", getenv)
        .map_err(|e| BinError::Failed(e.to_string()))?;
    let client = build_client(&config, getenv)
        .map_err(|e| BinError::Failed(format!("cannot create fly client: {e}")))?;
    let graphql = build_graphql(&config, getenv)
        .map_err(|e| BinError::Failed(format!("cannot create fly client: {e}")))?;
    tracing::info!("connected to fly");
    let sources = build_sources(&config)?;
    tracing::info!(n = sources.len() as u64, "metrics collectors initialized");
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    let policy = build_policy(&config, &names)?;
    let metrics_addr = config.metrics_socket_addr()?;

    let log = Arc::new(GoLogObserver::new());
    let metrics = Arc::new(AutoscalerMetrics::new());
    let health = Arc::new(Health::new(
        config.interval * 3 + config.timeout + config.app_list_refresh_interval,
    ));
    let provider = Arc::new(
        FlyTargets::new(config.clone(), client, policy, sources).with_release_guard(graphql),
    );
    let status = crate::http::status_board("fly-autoscaler", config.interval);
    let replication = etcd
        .map(|c| crate::coordination::Replication::start(c, metrics.clone()))
        .transpose()?;
    let engine = Arc::new(crate::coordination::attach(
        Engine::new(engine_config(&config), provider)
            .with_observer(log)
            .with_observer(metrics.clone())
            .with_observer(health.clone())
            .with_observer(status.clone()),
        replication.as_ref(),
    ));
    log_pool_initialized(&config, config.metric_collectors.len());

    // Without /metrics and /healthz the autoscaler cannot be watched: a listen address that
    // cannot be bound stops it at start.
    let server = MetricsServer::start_with_status(metrics_addr, metrics, health, Some(status))
        .await
        .map_err(|e| {
            BinError::Failed(format!(
                "cannot serve metrics on {} (FAS_METRICS_ADDR): {e}",
                config.metrics_addr
            ))
        })?;
    let shown = if config.metrics_addr == config::DEFAULT_METRICS_ADDR {
        config.metrics_addr.clone()
    } else {
        server.addr().to_string()
    };
    tracing::info!(addr = %shown, "serving metrics");

    let cancel = CancellationToken::new();
    let run = {
        let engine = engine.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { engine.run(cancel.cancelled_owned()).await })
    };
    let result = crate::supervise::run_until_signal(run, cancel, config.shutdown_grace).await;
    if let Some(r) = replication {
        r.stop().await;
    }
    server.shutdown().await;
    result
}

/// `eval`: collects every metric once and evaluates the count expressions, without scaling
/// (and without the release check: like the Go tool's `eval`, it reports what would be wanted
/// even during a deploy).
/// Machine counts (for expressions that use `created_machines` etc.) are read from the
/// Machines API only when an expression needs them.
///
/// # Errors
/// Go's messages: `metrics collection failed: collect metric ("x"): …`,
/// `cannot calculate min created machine count: …`.
pub async fn eval(config: &Config, getenv: &dyn Fn(&str) -> Option<String>) -> Result<Targets> {
    config.validate()?;
    let sources = build_sources(config)?;
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    let policy = build_policy(config, &names)?;
    let app = if config.is_wildcard() {
        String::new()
    } else {
        config.app_name.clone()
    };
    let mut scope = Scope::new(app.clone());
    if !config.process_group.is_empty() {
        scope = scope.with_group(config.process_group.clone());
    }
    let mut values = BTreeMap::new();
    for s in &sources {
        let v = tokio::time::timeout(config.timeout, s.collect(&scope))
            .await
            .map_err(|_| fleetscale_core::Error::Timeout {
                operation: format!("metric {}", s.name()),
                after: config.timeout,
                source: None,
            })
            .and_then(|r| r);
        match v {
            Ok(v) => {
                values.insert(s.name().to_owned(), v);
            }
            Err(e) => {
                return Err(BinError::Failed(format!(
                    "metrics collection failed: collect metric ({}): {e}",
                    go_quote(s.name())
                )))
            }
        }
    }
    let needs_counts = policy
        .variables()
        .iter()
        .any(|v| COUNT_VARIABLES.contains(v));
    let counts = if needs_counts {
        if config.is_wildcard() {
            return Err(BinError::config(
                "eval cannot read machine counts for a wildcard app name: name one app",
            ));
        }
        if config.api_token.is_none() {
            return Err(BinError::config(
                "api token required: an expression uses the current machine counts",
            ));
        }
        let client = build_client(config, getenv)?;
        let machines = fly_apps(config, client).scaler(&app)?.list().await?;
        Counts::of(&machines)
    } else {
        Counts::default()
    };
    let vars = policy::variables(&scope, &counts, &values);
    let calc = |which: &str, src: &str, clamp: bool| -> Result<Option<u32>> {
        if src.is_empty() {
            return Ok(None);
        }
        let v = Expr::parse(src)
            .and_then(|e| e.eval_count(&vars))
            .map_err(|e| {
                BinError::Failed(format!("cannot calculate {which} machine count: {e}"))
            })?;
        Ok(Some(if clamp { v.max(1) } else { v }))
    };
    Ok(Targets {
        created: Bounds {
            min: calc("min created", config.min_created(), true)?,
            max: calc("max created", config.max_created(), true)?,
        },
        started: Bounds {
            min: calc("min started", config.min_started(), false)?,
            max: calc("max started", config.max_started(), false)?,
        },
    })
}

/// Runs the `fly-autoscaler` command line and returns the process exit status: 0 on
/// success, 1 on error (`ERROR: …` on stderr, as the Go tool), 2 for usage.
/// Refuses environment variables `fly-autoscaler` reads whose value is not valid UTF-8 (Go
/// reads bytes; a Rust `String` cannot hold them, and reading such a variable as unset would
/// report "app name required" for a name that is set).
///
/// # Errors
/// `environment variable FAS_APP_NAME is set but its value is not valid UTF-8`.
pub fn check_env_utf8(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<()> {
    for (k, v) in vars {
        let Some(name) = k.to_str() else { continue };
        let read = name.starts_with("FAS_")
            || name.starts_with("TEMPORAL_TLS_")
            || config::ENV_VARIABLES.iter().any(|(n, _)| *n == name);
        if read && v.to_str().is_none() {
            return Err(BinError::config(format!(
                "environment variable {name} is set but its value is not valid UTF-8"
            )));
        }
    }
    Ok(())
}

/// Runs the `fly-autoscaler` command line and returns the process exit status: 0 on
/// success (and for `--help`, `--version`), 1 on error (`ERROR: …` on stderr, as the Go tool,
/// never showing a secret).
pub async fn main_with_args(args: Vec<String>) -> i32 {
    let getenv = |k: &str| std::env::var(k).ok();
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            crate::redact::eprint_line(&format!("ERROR: {e}"));
            return 1;
        }
    };
    // The tokens are secrets before anything is parsed: a value put in the wrong variable by
    // mistake is then never echoed by a parse error either.
    for name in [
        "FAS_API_TOKEN",
        "FAS_PROMETHEUS_TOKEN",
        "FAS_TEMPORAL_CERT_DATA",
        "FAS_TEMPORAL_KEY_DATA",
        "TEMPORAL_TLS_CERT_DATA",
        "TEMPORAL_TLS_KEY_DATA",
    ] {
        if let Some(v) = getenv(name) {
            crate::redact::register(&v);
        }
    }
    let loaded = |path: Option<&std::path::Path>| {
        check_env_utf8(std::env::vars_os())?;
        let c = load_config(path, &getenv)?;
        register_secrets(&c);
        Ok::<_, BinError>(c)
    };
    let result = match cmd {
        Command::Help(text) => {
            println!("{text}");
            return 0;
        }
        Command::Version => {
            println!("{}", version_string());
            return 0;
        }
        Command::Serve { config } => match loaded(config.as_deref()) {
            Ok(c) => {
                crate::logging::init_slog_json(if c.verbose {
                    tracing_subscriber::filter::LevelFilter::DEBUG
                } else {
                    tracing_subscriber::filter::LevelFilter::INFO
                });
                serve(c, &getenv).await
            }
            Err(e) => Err(e),
        },
        Command::Eval { config } => match loaded(config.as_deref()) {
            Ok(c) => {
                crate::logging::init_slog_json(tracing_subscriber::filter::LevelFilter::WARN);
                eval(&c, &getenv).await.map(|t| {
                    crate::redact::print_line(
                        &serde_json::to_string_pretty(&t).unwrap_or_else(|_| "{}".into()),
                    );
                })
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            crate::redact::eprint_line(&format!("ERROR: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            parse_args(&args(&[])).unwrap(),
            Command::Serve { config: None }
        );
        assert_eq!(
            parse_args(&args(&["serve", "-config", "a.yml"])).unwrap(),
            Command::Serve {
                config: Some("a.yml".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["eval", "--config=b.yml"])).unwrap(),
            Command::Eval {
                config: Some("b.yml".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["-config", "c.yml"])).unwrap(),
            Command::Serve {
                config: Some("c.yml".into())
            }
        );
        assert_eq!(parse_args(&args(&["version"])).unwrap(), Command::Version);
        assert!(matches!(
            parse_args(&args(&["help"])).unwrap(),
            Command::Help(_)
        ));
        assert_eq!(
            parse_args(&args(&["eval", "-h"])).unwrap(),
            Command::Help(EVAL_USAGE.to_owned())
        );
        assert_eq!(parse_args(&args(&["--version"])).unwrap(), Command::Version);
        match parse_args(&args(&["--help"])).unwrap() {
            Command::Help(text) => {
                for (name, _) in config::ENV_VARIABLES {
                    assert!(text.contains(name), "{name} missing from --help");
                }
            }
            other => panic!("{other:?}"),
        }
        let e = |a: &[&str]| parse_args(&args(a)).unwrap_err().to_string();
        assert_eq!(e(&["scale"]), "fly-autoscaler scale: unknown command");
        assert_eq!(e(&["serve", "-x"]), "flag provided but not defined: -x");
        assert_eq!(e(&["serve", "-config"]), "flag needs an argument: -config");
        assert_eq!(e(&["eval", "extra"]), "too many arguments");
    }

    #[test]
    fn policy_checks_expressions_at_start() {
        let c = Config {
            app_name: "a".into(),
            created_machine_count: "min(running + 1, 10)".into(),
            ..Config::default()
        };
        build_policy(&c, &["running"]).unwrap();
        let e = build_policy(&c, &[]).unwrap_err().to_string();
        assert!(e.contains("running"), "{e}");
        let bad = Config {
            created_machine_count: "min(".into(),
            ..c
        };
        assert!(build_policy(&bad, &["running"]).is_err());
    }

    /// fly-autoscaler's `newTemporalMetricCollector` errors, behind `cannot create metrics
    /// collectors: metric collector[i]: `, word for word.
    #[test]
    fn temporal_collectors_fail_with_the_go_messages() {
        let with = |mc: config::CollectorConfig| Config {
            app_name: "a".into(),
            created_machine_count: "workflows".into(),
            metric_collectors: vec![mc],
            ..Config::default()
        };
        let temporal = |address: &str, namespace: &str| config::CollectorConfig {
            kind: "temporal".into(),
            metric_name: "workflows".into(),
            address: address.into(),
            namespace: namespace.into(),
            ..config::CollectorConfig::default()
        };
        let msg = |c: Config| match build_sources(&c) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("built"),
        };
        assert_eq!(
            msg(with(temporal("", "default"))),
            "cannot create metrics collectors: metric collector[0]: temporal address required"
        );
        assert_eq!(
            msg(with(temporal("localhost:7233", ""))),
            "cannot create metrics collectors: metric collector[0]: temporal namespace required"
        );
        let mut cert_only = temporal("localhost:7233", "default");
        cert_only.cert_data = Some(fleetscale_metrics::Token::new(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        ));
        assert_eq!(
            msg(with(cert_only)),
            "cannot create metrics collectors: metric collector[0]: tls: failed to find any PEM data in key input"
        );
        // Valid: built without connecting; Go's Validate has nothing to say about Temporal.
        let ok = with(temporal("localhost:7233", "default"));
        assert_eq!(ok.validate(), Ok(()));
        let sources = build_sources(&ok).unwrap();
        assert_eq!(sources[0].name(), "workflows");
    }
}
