//! fly-autoscaler's configuration: `FAS_*` environment variables, then the optional YAML file
//! of `-config PATH` decoded over them (YAML keys win), then validation with the Go tool's
//! messages.
//!
//! Sources: `superfly/fly-autoscaler` v0.3.2 `cmd/fly-autoscaler/main.go` (`Config`,
//! `NewConfig`, `NewConfigFromEnv`, `Validate`, `ParseConfig`), `reconciler_pool.go` (defaults,
//! "organization required if app name uses a wildcard"), and `cmd/fly-autoscaler/main_test.go`,
//! which asserts the validation messages reproduced here word for word.

use std::net::SocketAddr;
use std::time::Duration;

use fleetscale_metrics::Token;
use serde::{Deserialize, Deserializer};

use crate::gocompat::{expand_env_keep_app_name, go_quote, parse_go_duration};
use crate::FasError;

/// Default reconcile interval (`fas.DefaultReconcileInterval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default per-app reconcile deadline (`fas.DefaultReconcileTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wildcard app list refresh (`fas.DefaultAppListRefreshInterval`).
pub const DEFAULT_APP_LIST_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Default process group (`fas.DefaultProcessGroup`).
pub const DEFAULT_PROCESS_GROUP: &str = "app";
/// Default worker count (`fas.DefaultConcurrency`).
pub const DEFAULT_CONCURRENCY: i64 = 1;
/// fly-autoscaler's hard-coded metrics listener.
pub const DEFAULT_METRICS_ADDR: &str = ":9090";

/// Every environment variable `fly-autoscaler` reads, with what it is for: the `FAS_*`
/// variables of the Go tool, our extras, and the Fly API base URLs. `--help` lists them; values
/// that are not valid UTF-8 are refused with their name.
pub const ENV_VARIABLES: &[(&str, &str)] = &[
    (
        "FAS_APP_NAME",
        "app to scale; `*` wildcards select several apps (then FAS_ORG)",
    ),
    (
        "FAS_ORG",
        "organization slug, required with a wildcard app name",
    ),
    (
        "FAS_REGIONS",
        "regions for new machines, comma-separated, round-robin",
    ),
    ("FAS_PROCESS_GROUP", "process group to scale (default app)"),
    (
        "FAS_CREATED_MACHINE_COUNT",
        "expression: machines that should exist",
    ),
    (
        "FAS_MIN_CREATED_MACHINE_COUNT",
        "expression: at least this many machines",
    ),
    (
        "FAS_MAX_CREATED_MACHINE_COUNT",
        "expression: at most this many machines",
    ),
    (
        "FAS_INITIAL_MACHINE_STATE",
        "state of new machines: started (default) or stopped",
    ),
    (
        "FAS_STARTED_MACHINE_COUNT",
        "expression: machines that should run",
    ),
    (
        "FAS_MIN_STARTED_MACHINE_COUNT",
        "expression: at least this many running",
    ),
    (
        "FAS_MAX_STARTED_MACHINE_COUNT",
        "expression: at most this many running",
    ),
    ("FAS_CONCURRENCY", "apps reconciled at once (default 1)"),
    ("FAS_INTERVAL", "time between reconciles (default 15s)"),
    (
        "FAS_TIMEOUT",
        "deadline of one app's reconcile (default 30s)",
    ),
    (
        "FAS_APP_LIST_REFRESH_INTERVAL",
        "how often wildcard app lists are refreshed (default 60s)",
    ),
    ("FAS_API_TOKEN", "Fly API token (secret)"),
    (
        "FAS_PROMETHEUS_ADDRESS",
        "Prometheus API address, e.g. https://api.fly.io/prometheus/my-org",
    ),
    (
        "FAS_PROMETHEUS_METRIC_NAME",
        "variable name of the query's value in expressions",
    ),
    ("FAS_PROMETHEUS_QUERY", "PromQL; $APP_NAME is the app"),
    ("FAS_PROMETHEUS_TOKEN", "Prometheus token (secret)"),
    (
        "FAS_TEMPORAL_ADDRESS",
        "Temporal collectors are not supported (refused at start)",
    ),
    (
        "FAS_METRICS_ADDR",
        "fleetscale: /metrics and /healthz listen address (default :9090)",
    ),
    (
        "FAS_DRY_RUN",
        "fleetscale: true plans and logs, changes nothing",
    ),
    (
        "FAS_SHUTDOWN_GRACE",
        "fleetscale: time ticks in flight get after SIGTERM (default 3s)",
    ),
    (
        "FAS_MAX_ACTIONS_PER_TICK",
        "fleetscale: most creates, starts, stops or destroys per app and tick (default 100)",
    ),
    (
        "FAS_ETCD_ENDPOINTS",
        "fleetscale: etcd client URLs, comma separated: replicas share the apps through etcd",
    ),
    (
        "FAS_ETCD_*",
        "fleetscale: PREFIX, LEASE_TTL (default 10s), FENCE_MARGIN, REQUEST_TIMEOUT, CONNECT_TIMEOUT, REPLICA_NAME, USERNAME, PASSWORD or PASSWORD_FILE, CA_FILE, CERT_FILE, KEY_FILE, SERVER_NAME",
    ),
    (
        "FLY_FLAPS_BASE_URL",
        "Machines API base URL (default https://api.machines.dev)",
    ),
    (
        "FLY_API_BASE_URL",
        "GraphQL API base URL of the release check (default https://api.fly.io)",
    ),
    ("RUST_LOG", "fleetscale: log filter, e.g. debug"),
];

/// A configuration problem ([`FasError::Config`]), with the Go tool's message where it has
/// one.
fn err(msg: impl Into<String>) -> FasError {
    FasError::config(msg)
}

/// One `metric-collectors` entry (or the collector defined by `FAS_PROMETHEUS_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorConfig {
    /// `prometheus` or `temporal`.
    pub kind: String,
    /// The variable name in expressions.
    pub metric_name: String,
    /// PromQL, or Temporal's visibility filter (`$APP_NAME` expanded per app at query time).
    pub query: String,
    /// Base URL of the Prometheus API, or the Temporal frontend's `host:port`.
    pub address: String,
    /// Optional token (`Fly…` sent verbatim, else `Bearer`).
    pub token: Option<Token>,
    /// Temporal namespace.
    pub namespace: String,
    /// Temporal mTLS client certificate (PEM).
    pub cert_data: Option<Token>,
    /// Temporal mTLS client key (PEM).
    pub key_data: Option<Token>,
    /// Ours: Temporal CA certificates (PEM) verifying the server (`ca-data`,
    /// `FAS_TEMPORAL_CA_DATA`); the system roots otherwise.
    pub ca_data: Option<Token>,
    /// Ours: a Temporal Cloud API key (`api-key`, `FAS_TEMPORAL_API_KEY`).
    pub api_key: Option<Token>,
}

impl CollectorConfig {
    /// The Go tool's `MetricCollectorConfig.Validate`. Like it, nothing is checked here for
    /// Temporal (its `validateTemporal` returns nil): `temporal address required`, `temporal
    /// namespace required` and the TLS key pair errors come when the collector is built.
    ///
    /// # Errors
    /// `metric name required`, `type required`, `invalid type: "x"`, `prometheus address
    /// required`, `prometheus query required`.
    pub fn validate(&self) -> Result<(), FasError> {
        if self.metric_name.is_empty() {
            return Err(err("metric name required"));
        }
        match self.kind.as_str() {
            "prometheus" => {
                if self.address.is_empty() {
                    return Err(err("prometheus address required"));
                }
                if self.query.is_empty() {
                    return Err(err("prometheus query required"));
                }
                Ok(())
            }
            "temporal" => Ok(()),
            "" => Err(err("type required")),
            other => Err(err(format!("invalid type: {}", go_quote(other)))),
        }
    }
}

/// The whole configuration, as the Go tool's `Config` plus our extras.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `app-name` / `FAS_APP_NAME`; `*` wildcards select several apps.
    pub app_name: String,
    /// `org` / `FAS_ORG`: needed with a wildcard.
    pub org: String,
    /// `regions` / `FAS_REGIONS` (comma-separated): regions for new machines, round-robin.
    pub regions: Vec<String>,
    /// `process-group` / `FAS_PROCESS_GROUP`, default `app`.
    pub process_group: String,
    /// `created-machine-count`.
    pub created_machine_count: String,
    /// `min-created-machine-count`.
    pub min_created_machine_count: String,
    /// `max-created-machine-count`.
    pub max_created_machine_count: String,
    /// `initial-machine-state`: `started` (default) or `stopped`.
    pub initial_machine_state: String,
    /// `started-machine-count`.
    pub started_machine_count: String,
    /// `min-started-machine-count`.
    pub min_started_machine_count: String,
    /// `max-started-machine-count`.
    pub max_started_machine_count: String,
    /// `concurrency` / `FAS_CONCURRENCY`: apps reconciled at once (wildcard mode).
    pub concurrency: i64,
    /// `interval` / `FAS_INTERVAL`.
    pub interval: Duration,
    /// `timeout` / `FAS_TIMEOUT`: deadline of one app's reconcile.
    pub timeout: Duration,
    /// `app-list-refresh-interval` / `FAS_APP_LIST_REFRESH_INTERVAL`.
    pub app_list_refresh_interval: Duration,
    /// `api-token` / `FAS_API_TOKEN`.
    pub api_token: Option<Token>,
    /// `verbose` (YAML only): debug logs.
    pub verbose: bool,
    /// `metric-collectors`, or the ones from `FAS_PROMETHEUS_*` / `FAS_TEMPORAL_*`.
    pub metric_collectors: Vec<CollectorConfig>,
    /// Ours: `FAS_METRICS_ADDR` (`host:port` or `:port`), default `:9090`.
    pub metrics_addr: String,
    /// Ours: `FAS_DRY_RUN=true` plans and logs but changes nothing.
    pub dry_run: bool,
    /// Ours: `FAS_SHUTDOWN_GRACE` / `shutdown-grace`: how long ticks in flight may go on after
    /// SIGTERM (default 3s).
    pub shutdown_grace: Duration,
    /// Ours: `FAS_MAX_ACTIONS_PER_TICK` / `max-actions-per-tick`: the most creates (and the most
    /// starts, stops, destroys) one tick of one app sends (default 100).
    pub max_actions_per_tick: u32,
}

impl Default for Config {
    /// The Go tool's `NewConfig()` (plus `initial-machine-state: started`, which its
    /// `NewConfigFromEnv` sets when the variable is empty).
    fn default() -> Self {
        Config {
            app_name: String::new(),
            org: String::new(),
            regions: Vec::new(),
            process_group: DEFAULT_PROCESS_GROUP.into(),
            created_machine_count: String::new(),
            min_created_machine_count: String::new(),
            max_created_machine_count: String::new(),
            initial_machine_state: "started".into(),
            started_machine_count: String::new(),
            min_started_machine_count: String::new(),
            max_started_machine_count: String::new(),
            concurrency: DEFAULT_CONCURRENCY,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            app_list_refresh_interval: DEFAULT_APP_LIST_REFRESH_INTERVAL,
            api_token: None,
            verbose: false,
            metric_collectors: Vec::new(),
            metrics_addr: DEFAULT_METRICS_ADDR.into(),
            dry_run: false,
            shutdown_grace: fleetscale_core::engine::DEFAULT_SHUTDOWN_GRACE,
            max_actions_per_tick: fleetscale_core::plan::DEFAULT_MAX_ACTIONS_PER_KIND,
        }
    }
}

fn duration_value(name: &str, s: &str) -> Result<Duration, FasError> {
    let parse_err = || err(format!("cannot parse {name} as duration: {}", go_quote(s)));
    let ns = parse_go_duration(s).map_err(|_| parse_err())?;
    if ns <= 0 {
        return Err(err(format!(
            "{name} must be a positive duration, got {}",
            go_quote(s)
        )));
    }
    let d = Duration::from_nanos(u64::try_from(ns).map_err(|_| parse_err())?);
    if d > fleetscale_core::policy::MAX_SETTING_DURATION {
        return Err(err(format!(
            "{name} must be at most 168h (7 days), got {}",
            go_quote(s)
        )));
    }
    Ok(d)
}

/// A grace period: like [`duration_value`], but `0s` is allowed (cancel at once).
fn grace_value(name: &str, s: &str) -> Result<Duration, FasError> {
    if parse_go_duration(s) == Ok(0) {
        return Ok(Duration::ZERO);
    }
    duration_value(name, s)
}

fn actions_value(name: &str, s: &str) -> Result<u32, FasError> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=fleetscale_core::expr::MAX_MACHINE_COUNT).contains(&n) => Ok(n),
        _ => Err(err(format!(
            "{name} must be a whole number from 1 to {}, got {}",
            fleetscale_core::expr::MAX_MACHINE_COUNT,
            go_quote(s)
        ))),
    }
}

fn token(s: String) -> Option<Token> {
    (!s.is_empty()).then(|| Token::new(s))
}

impl Config {
    /// `NewConfigFromEnv`: the defaults overridden by the `FAS_*` variables read through
    /// `getenv` (an unset and an empty variable are the same, as with Go's `os.Getenv`).
    ///
    /// # Errors
    /// `cannot parse FAS_CONCURRENCY as integer: "x"`, `cannot parse FAS_INTERVAL as
    /// duration: "x"` (and the same for `FAS_TIMEOUT`, `FAS_APP_LIST_REFRESH_INTERVAL`).
    pub fn from_env(getenv: &dyn Fn(&str) -> Option<String>) -> Result<Config, FasError> {
        let get = |k: &str| getenv(k).unwrap_or_default();
        let mut c = Config {
            app_name: get("FAS_APP_NAME"),
            org: get("FAS_ORG"),
            created_machine_count: get("FAS_CREATED_MACHINE_COUNT"),
            min_created_machine_count: get("FAS_MIN_CREATED_MACHINE_COUNT"),
            max_created_machine_count: get("FAS_MAX_CREATED_MACHINE_COUNT"),
            initial_machine_state: get("FAS_INITIAL_MACHINE_STATE"),
            started_machine_count: get("FAS_STARTED_MACHINE_COUNT"),
            min_started_machine_count: get("FAS_MIN_STARTED_MACHINE_COUNT"),
            max_started_machine_count: get("FAS_MAX_STARTED_MACHINE_COUNT"),
            api_token: token(get("FAS_API_TOKEN")),
            ..Config::default()
        };
        let s = get("FAS_PROCESS_GROUP");
        if !s.is_empty() {
            c.process_group = s;
        }
        let s = get("FAS_REGIONS");
        if !s.is_empty() {
            // Go splits on commas without trimming; we also trim blanks and drop empty parts.
            c.regions = s
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if c.initial_machine_state.is_empty() {
            c.initial_machine_state = "started".into();
        }
        let s = get("FAS_CONCURRENCY");
        if !s.is_empty() {
            c.concurrency = s.parse().map_err(|_| {
                err(format!(
                    "cannot parse FAS_CONCURRENCY as integer: {}",
                    go_quote(&s)
                ))
            })?;
        }
        for (name, slot) in [
            ("FAS_INTERVAL", &mut c.interval),
            ("FAS_TIMEOUT", &mut c.timeout),
            (
                "FAS_APP_LIST_REFRESH_INTERVAL",
                &mut c.app_list_refresh_interval,
            ),
        ] {
            let s = get(name);
            if !s.is_empty() {
                *slot = duration_value(name, &s)?;
            }
        }
        let s = get("FAS_METRICS_ADDR");
        if !s.is_empty() {
            c.metrics_addr = s;
        }
        let s = get("FAS_SHUTDOWN_GRACE");
        if !s.is_empty() {
            c.shutdown_grace = grace_value("FAS_SHUTDOWN_GRACE", &s)?;
        }
        let s = get("FAS_MAX_ACTIONS_PER_TICK");
        if !s.is_empty() {
            c.max_actions_per_tick = actions_value("FAS_MAX_ACTIONS_PER_TICK", &s)?;
        }
        let s = get("FAS_DRY_RUN");
        if !s.is_empty() {
            c.dry_run = parse_go_bool(&s).ok_or_else(|| {
                err(format!(
                    "cannot parse FAS_DRY_RUN as boolean: {}",
                    go_quote(&s)
                ))
            })?;
        }
        let addr = get("FAS_PROMETHEUS_ADDRESS");
        if !addr.is_empty() {
            c.metric_collectors.push(CollectorConfig {
                kind: "prometheus".into(),
                address: addr,
                metric_name: get("FAS_PROMETHEUS_METRIC_NAME"),
                query: get("FAS_PROMETHEUS_QUERY"),
                token: token(get("FAS_PROMETHEUS_TOKEN")),
                ..CollectorConfig::default()
            });
        }
        let addr = get("FAS_TEMPORAL_ADDRESS");
        if !addr.is_empty() {
            let pick = |a: &str, b: &str| {
                let v = get(a);
                if v.is_empty() {
                    get(b)
                } else {
                    v
                }
            };
            c.metric_collectors.push(CollectorConfig {
                kind: "temporal".into(),
                address: addr,
                namespace: get("FAS_TEMPORAL_NAMESPACE"),
                metric_name: get("FAS_TEMPORAL_METRIC_NAME"),
                cert_data: token(pick("TEMPORAL_TLS_CERT_DATA", "FAS_TEMPORAL_CERT_DATA")),
                key_data: token(pick("TEMPORAL_TLS_KEY_DATA", "FAS_TEMPORAL_KEY_DATA")),
                query: get("FAS_TEMPORAL_QUERY"),
                // Ours, read in the same order as the certificate (the Temporal CLI's name
                // first): a CA bundle and an API key.
                ca_data: token(pick("TEMPORAL_TLS_CA_DATA", "FAS_TEMPORAL_CA_DATA")),
                api_key: token(pick("TEMPORAL_API_KEY", "FAS_TEMPORAL_API_KEY")),
                ..CollectorConfig::default()
            });
        }
        Ok(c)
    }

    /// `NewConfigFromEnv` over the process environment.
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_process_env() -> Result<Config, FasError> {
        Config::from_env(&|k| std::env::var(k).ok())
    }

    /// `ParseConfig`: expands environment variables in `text` (Go's `os.ExpandEnv`, except
    /// that `$APP_NAME`/`${APP_NAME}` are kept for per-app expansion at query time), then
    /// decodes the YAML over `self`; unknown keys are errors.
    ///
    /// # Errors
    /// A YAML syntax or type error (with its line and column), an unknown key, a duration
    /// Go would not parse.
    ///
    /// A leading UTF-8 byte order mark is ignored. Messages never show an expanded value: a
    /// value taken from the environment is written back as `${NAME}` (see
    /// [`crate::redact::unexpand`]).
    pub fn apply_yaml(
        &mut self,
        text: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), FasError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let substituted = std::cell::RefCell::new(Vec::<(String, String)>::new());
        let expanded = expand_env_keep_app_name(text, |name| {
            let v = getenv(name);
            if let Some(v) = &v {
                substituted.borrow_mut().push((name.to_owned(), v.clone()));
            }
            v
        });
        let substituted = substituted.into_inner();
        let fail = |message: String| err(crate::redact::unexpand(&message, &substituted));
        let y: YamlConfig = if expanded.trim().is_empty() {
            YamlConfig::default()
        } else {
            serde_yaml_ng::from_str(&expanded).map_err(|e| fail(format!("yaml: {e}")))?
        };
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = y.$field { self.$field = v; }
            )*};
        }
        take!(
            app_name,
            org,
            regions,
            process_group,
            created_machine_count,
            min_created_machine_count,
            max_created_machine_count,
            initial_machine_state,
            started_machine_count,
            min_started_machine_count,
            max_started_machine_count,
            concurrency,
            verbose
        );
        if let Some(t) = y.api_token {
            self.api_token = token(t);
        }
        for (key, value, slot) in [
            ("interval", y.interval, &mut self.interval),
            ("timeout", y.timeout, &mut self.timeout),
            (
                "app-list-refresh-interval",
                y.app_list_refresh_interval,
                &mut self.app_list_refresh_interval,
            ),
        ] {
            if let Some(v) = value {
                *slot = duration_value(key, &v).map_err(|e| fail(format!("yaml: {e}")))?;
            }
        }
        if let Some(v) = y.shutdown_grace {
            self.shutdown_grace =
                grace_value("shutdown-grace", &v).map_err(|e| fail(format!("yaml: {e}")))?;
        }
        if let Some(v) = y.max_actions_per_tick {
            self.max_actions_per_tick = actions_value("max-actions-per-tick", &v)
                .map_err(|e| fail(format!("yaml: {e}")))?;
        }
        if let Some(list) = y.metric_collectors {
            self.metric_collectors = list
                .into_iter()
                .map(|c| CollectorConfig {
                    kind: c.kind.unwrap_or_default(),
                    metric_name: c.metric_name.unwrap_or_default(),
                    query: c.query.unwrap_or_default(),
                    address: c.address.unwrap_or_default(),
                    token: c.token.and_then(token),
                    namespace: c.namespace.unwrap_or_default(),
                    cert_data: c.cert_data.and_then(token),
                    key_data: c.key_data.and_then(token),
                    ca_data: c.ca_data.and_then(token),
                    api_key: c.api_key.and_then(token),
                })
                .collect();
        }
        Ok(())
    }

    /// Whether any created-count setting is given.
    pub fn is_created_machine_count_defined(&self) -> bool {
        !self.created_machine_count.is_empty()
            || !self.min_created_machine_count.is_empty()
            || !self.max_created_machine_count.is_empty()
    }

    /// Whether any started-count setting is given.
    pub fn is_started_machine_count_defined(&self) -> bool {
        !self.started_machine_count.is_empty()
            || !self.min_started_machine_count.is_empty()
            || !self.max_started_machine_count.is_empty()
    }

    /// `GetMinCreatedMachineN`: the single value, else the min.
    pub fn min_created(&self) -> &str {
        first_non_empty(&self.created_machine_count, &self.min_created_machine_count)
    }
    /// `GetMaxCreatedMachineN`.
    pub fn max_created(&self) -> &str {
        first_non_empty(&self.created_machine_count, &self.max_created_machine_count)
    }
    /// `GetMinStartedMachineN`.
    pub fn min_started(&self) -> &str {
        first_non_empty(&self.started_machine_count, &self.min_started_machine_count)
    }
    /// `GetMaxStartedMachineN`.
    pub fn max_started(&self) -> &str {
        first_non_empty(&self.started_machine_count, &self.max_started_machine_count)
    }

    /// Whether the app name has a `*` (several apps).
    pub fn is_wildcard(&self) -> bool {
        self.app_name.contains('*')
    }

    /// `Config.Validate`, with the Go tool's messages in its order, plus checks of ours that
    /// come after them (positive concurrency).
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), FasError> {
        if self.app_name.is_empty() {
            return Err(err("app name required"));
        }
        if !self.is_created_machine_count_defined() && !self.is_started_machine_count_defined() {
            return Err(err(
                "must define either created machine count or started machine count",
            ));
        }
        validate_kind(
            "created",
            &self.created_machine_count,
            &self.min_created_machine_count,
            &self.max_created_machine_count,
        )?;
        validate_kind(
            "started",
            &self.started_machine_count,
            &self.min_started_machine_count,
            &self.max_started_machine_count,
        )?;
        inverted_bounds(
            "created",
            &self.min_created_machine_count,
            &self.max_created_machine_count,
        )?;
        inverted_bounds(
            "started",
            &self.min_started_machine_count,
            &self.max_started_machine_count,
        )?;
        if !matches!(self.initial_machine_state.as_str(), "started" | "stopped") {
            return Err(err(
                "initial machine state must be either 'started' or 'stopped'",
            ));
        }
        for (i, c) in self.metric_collectors.iter().enumerate() {
            c.validate()
                .map_err(|e| err(format!("metric-collectors[{i}]: {e}")))?;
        }
        if self.concurrency < 1 {
            return Err(err(format!(
                "concurrency must be at least 1, got {}",
                self.concurrency
            )));
        }
        Ok(())
    }

    /// The checks `serve` adds: an API token (`cannot create fly client: api token
    /// required`) and an organization for wildcards (`cannot initialize reconciler pool:
    /// organization required if app name uses a wildcard`).
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate_serve(&self) -> Result<(), FasError> {
        // A token that is only a scheme (`FlyV1 `, `Bearer `) sends no credentials at all.
        if self
            .api_token
            .as_ref()
            .is_none_or(fleetscale_fly::token::is_blank)
        {
            return Err(err("cannot create fly client: api token required"));
        }
        if self.is_wildcard() && self.org.is_empty() {
            return Err(err(
                "cannot initialize reconciler pool: organization required if app name uses a wildcard",
            ));
        }
        Ok(())
    }

    /// The metrics listen address: `:9090` means every interface, as in Go.
    ///
    /// # Errors
    /// When the address is not `host:port` or `:port`.
    pub fn metrics_socket_addr(&self) -> Result<SocketAddr, FasError> {
        parse_listen_addr(&self.metrics_addr).ok_or_else(|| {
            err(format!(
                "invalid FAS_METRICS_ADDR {}",
                go_quote(&self.metrics_addr)
            ))
        })
    }
}

/// Parses `host:port` or Go's `:port` (all interfaces).
pub fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host == "localhost" {
        return Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    None
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

fn validate_kind(kind: &str, single: &str, min: &str, max: &str) -> Result<(), FasError> {
    if single.is_empty() && min.is_empty() && max.is_empty() {
        return Ok(());
    }
    if !single.is_empty() && (!min.is_empty() || !max.is_empty()) {
        return Err(err(format!(
            "cannot define {kind} machine count and min/max {kind} machine count"
        )));
    }
    if !min.is_empty() && max.is_empty() {
        return Err(err(format!(
            "max {kind} machine count required if min {kind} machine count is defined"
        )));
    }
    if min.is_empty() && !max.is_empty() {
        return Err(err(format!(
            "min {kind} machine count required if max {kind} machine count is defined"
        )));
    }
    Ok(())
}

/// Constant min and max expressions with min above max can never be met: refused at load
/// (expressions with variables are clamped at run time, max winning).
fn inverted_bounds(kind: &str, min: &str, max: &str) -> Result<(), FasError> {
    use fleetscale_core::expr::{Expr, Variables};
    let constant = |src: &str| {
        let e = Expr::parse(src).ok()?;
        if !e.variables().is_empty() {
            return None;
        }
        e.eval_count(&Variables::new()).ok()
    };
    if let (Some(lo), Some(hi)) = (constant(min), constant(max)) {
        if lo > hi {
            return Err(err(format!(
                "min {kind} machine count ({lo}) is greater than max {kind} machine count ({hi})"
            )));
        }
    }
    Ok(())
}

/// yaml.v3 decodes any scalar into a Go `string` field (`created-machine-count: 2`); serde
/// would refuse the integer, so scalars are taken as their text.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct YamlConfig {
    #[serde(default, deserialize_with = "scalar")]
    app_name: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    org: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default, deserialize_with = "scalar")]
    process_group: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    created_machine_count: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    min_created_machine_count: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_created_machine_count: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    initial_machine_state: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    started_machine_count: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    min_started_machine_count: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_started_machine_count: Option<String>,
    #[serde(default)]
    concurrency: Option<i64>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    app_list_refresh_interval: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    api_token: Option<String>,
    #[serde(default)]
    verbose: Option<bool>,
    #[serde(default)]
    metric_collectors: Option<Vec<YamlCollector>>,
    #[serde(default, deserialize_with = "scalar")]
    shutdown_grace: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_actions_per_tick: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct YamlCollector {
    #[serde(default, rename = "type", deserialize_with = "scalar")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    metric_name: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    query: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    address: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    token: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    cert_data: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    key_data: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    ca_data: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    api_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn app(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config {
            app_name: "myapp".into(),
            ..Config::default()
        };
        f(&mut c);
        c
    }

    /// The cases and messages of fly-autoscaler's `cmd/fly-autoscaler/main_test.go`
    /// (`TestConfig_Validate`).
    #[test]
    fn validate_messages_match_go() {
        let cases: Vec<(Config, &str)> = vec![
            (Config::default(), "app name required"),
            (
                app(|_| {}),
                "must define either created machine count or started machine count",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.min_created_machine_count = "1".into();
                }),
                "cannot define created machine count and min/max created machine count",
            ),
            (
                app(|c| c.min_created_machine_count = "1".into()),
                "max created machine count required if min created machine count is defined",
            ),
            (
                app(|c| c.max_created_machine_count = "1".into()),
                "min created machine count required if max created machine count is defined",
            ),
            (
                app(|c| {
                    c.started_machine_count = "1".into();
                    c.min_started_machine_count = "1".into();
                }),
                "cannot define started machine count and min/max started machine count",
            ),
            (
                app(|c| c.min_started_machine_count = "1".into()),
                "max started machine count required if min started machine count is defined",
            ),
            (
                app(|c| c.max_started_machine_count = "1".into()),
                "min started machine count required if max started machine count is defined",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.initial_machine_state = "suspended".into();
                }),
                "initial machine state must be either 'started' or 'stopped'",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.metric_collectors.push(CollectorConfig::default());
                }),
                "metric-collectors[0]: metric name required",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.metric_collectors.push(CollectorConfig {
                        metric_name: "x".into(),
                        ..CollectorConfig::default()
                    });
                }),
                "metric-collectors[0]: type required",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.metric_collectors.push(CollectorConfig {
                        metric_name: "x".into(),
                        kind: "kafka".into(),
                        ..CollectorConfig::default()
                    });
                }),
                "metric-collectors[0]: invalid type: \"kafka\"",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.metric_collectors.push(CollectorConfig {
                        metric_name: "x".into(),
                        kind: "prometheus".into(),
                        ..CollectorConfig::default()
                    });
                }),
                "metric-collectors[0]: prometheus address required",
            ),
            (
                app(|c| {
                    c.created_machine_count = "1".into();
                    c.metric_collectors.push(CollectorConfig {
                        metric_name: "x".into(),
                        kind: "prometheus".into(),
                        address: "http://p".into(),
                        ..CollectorConfig::default()
                    });
                }),
                "metric-collectors[0]: prometheus query required",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.validate().unwrap_err().to_string(), want);
        }
        let ok = app(|c| c.started_machine_count = "ceil(q / 10)".into());
        ok.validate().unwrap();
    }

    #[test]
    fn env_defaults_and_values() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.app_list_refresh_interval, Duration::from_secs(60));
        assert_eq!(c.process_group, "app");
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.initial_machine_state, "started");
        assert_eq!(c.metrics_socket_addr().unwrap().port(), 9090);
        assert!(c.metric_collectors.is_empty());

        let c = Config::from_env(&env(&[
            ("FAS_APP_NAME", "my-app"),
            ("FAS_ORG", "acme"),
            ("FAS_REGIONS", "iad, ord,"),
            ("FAS_PROCESS_GROUP", "worker"),
            ("FAS_CREATED_MACHINE_COUNT", "min(running + 1, 10)"),
            ("FAS_INITIAL_MACHINE_STATE", "stopped"),
            ("FAS_CONCURRENCY", "4"),
            ("FAS_INTERVAL", "500ms"),
            ("FAS_TIMEOUT", "1m30s"),
            ("FAS_APP_LIST_REFRESH_INTERVAL", "1h2m3s"),
            ("FAS_API_TOKEN", "FlyV1 fm2_x"),
            ("FAS_PROMETHEUS_ADDRESS", "http://prom:9090"),
            ("FAS_PROMETHEUS_METRIC_NAME", "running"),
            (
                "FAS_PROMETHEUS_QUERY",
                "count(fly_instance_up{app='$APP_NAME'})",
            ),
            ("FAS_PROMETHEUS_TOKEN", "secret"),
        ]))
        .unwrap();
        assert_eq!(c.regions, vec!["iad", "ord"]);
        assert_eq!(c.process_group, "worker");
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.app_list_refresh_interval, Duration::from_secs(3723));
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.metric_collectors.len(), 1);
        assert_eq!(c.metric_collectors[0].metric_name, "running");
        assert_eq!(c.api_token.as_ref().unwrap().expose(), "FlyV1 fm2_x");
        assert!(!format!("{c:?}").contains("fm2_x"), "token leaked in Debug");
        assert!(
            !format!("{c:?}").contains("secret"),
            "token leaked in Debug"
        );
        c.validate().unwrap();
        c.validate_serve().unwrap();
    }

    #[test]
    fn env_parse_errors_use_go_wording() {
        let e = Config::from_env(&env(&[("FAS_INTERVAL", "15")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot parse FAS_INTERVAL as duration: \"15\""
        );
        let e = Config::from_env(&env(&[("FAS_TIMEOUT", "soon")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot parse FAS_TIMEOUT as duration: \"soon\""
        );
        let e = Config::from_env(&env(&[("FAS_CONCURRENCY", "two")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot parse FAS_CONCURRENCY as integer: \"two\""
        );
        assert!(Config::from_env(&env(&[("FAS_INTERVAL", "0s")])).is_err());
    }

    #[test]
    fn serve_needs_token_and_org_for_wildcards() {
        let c = app(|c| c.created_machine_count = "2".into());
        assert_eq!(
            c.validate_serve().unwrap_err().to_string(),
            "cannot create fly client: api token required"
        );
        for blank in ["FlyV1 ", "Bearer  ", "FlyV1"] {
            let c = app(|c| {
                c.created_machine_count = "2".into();
                c.api_token = Some(Token::new(blank));
            });
            assert_eq!(
                c.validate_serve().unwrap_err().to_string(),
                "cannot create fly client: api token required",
                "{blank:?}"
            );
        }
        let c = app(|c| {
            c.app_name = "my-app-*".into();
            c.created_machine_count = "2".into();
            c.api_token = Some(Token::new("t"));
        });
        assert_eq!(
            c.validate_serve().unwrap_err().to_string(),
            "cannot initialize reconciler pool: organization required if app name uses a wildcard"
        );
    }

    /// The sample file of fly-autoscaler (`etc/fly-autoscaler.yml`, as `main_test.go` reads
    /// it), with `$APP_NAME` kept and other variables expanded.
    #[test]
    fn yaml_over_env() {
        let yaml = r#"
app-name: TARGET_APP_NAME
org: $ORG_SLUG
regions: [iad, ord]
started-machine-count: "ceil(queue_depth / 10)"
interval: 15s
timeout: 1m30s
api-token: "FlyV1 ..."
verbose: false
metric-collectors:
  - type: prometheus
    metric-name: queue_depth
    address: "https://api.fly.io/prometheus/MY_ORG"
    query: "sum(queue_depth{app='$APP_NAME'}) + ${APP_NAME_LEN}"
    token: "FlyV1 ..."
"#;
        let getenv = env(&[
            ("FAS_APP_NAME", "from-env"),
            ("FAS_CREATED_MACHINE_COUNT", "3"),
            ("FAS_PROMETHEUS_ADDRESS", "http://env-prom"),
            ("ORG_SLUG", "acme"),
            ("APP_NAME_LEN", "7"),
        ]);
        let mut c = Config::from_env(&getenv).unwrap();
        c.apply_yaml(yaml, &getenv).unwrap();
        assert_eq!(c.app_name, "TARGET_APP_NAME");
        assert_eq!(c.org, "acme");
        assert_eq!(c.regions, vec!["iad", "ord"]);
        assert_eq!(c.started_machine_count, "ceil(queue_depth / 10)");
        // Not in the file: the env value stays.
        assert_eq!(c.created_machine_count, "3");
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.process_group, "app");
        assert_eq!(
            c.metric_collectors.len(),
            1,
            "the file's list replaces env's"
        );
        let mc = &c.metric_collectors[0];
        assert_eq!(mc.kind, "prometheus");
        assert_eq!(mc.address, "https://api.fly.io/prometheus/MY_ORG");
        assert_eq!(mc.query, "sum(queue_depth{app='$APP_NAME'}) + 7");
        assert_eq!(mc.token.as_ref().unwrap().expose(), "FlyV1 ...");
    }

    #[test]
    fn yaml_errors() {
        let getenv = env(&[]);
        let mut c = Config::default();
        let e = c
            .apply_yaml("app-name: x\nbogus: 1\n", &getenv)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = c.apply_yaml("interval: 15\n", &getenv).unwrap_err();
        assert!(e.to_string().contains("interval"), "{e}");
        let e = c
            .apply_yaml(
                "metric-collectors:\n  - type: prometheus\n    nope: 1\n",
                &getenv,
            )
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `nope`"), "{e}");
        // Scalars are taken as text, as yaml.v3 does for string fields.
        c.apply_yaml("created-machine-count: 2\n", &getenv).unwrap();
        assert_eq!(c.created_machine_count, "2");
        // An empty file changes nothing.
        c.apply_yaml("\n", &getenv).unwrap();
        assert_eq!(c.created_machine_count, "2");
    }

    #[test]
    fn temporal_from_env_and_yaml() {
        let getenv = env(&[
            ("FAS_TEMPORAL_ADDRESS", "temporal:7233"),
            ("FAS_TEMPORAL_NAMESPACE", "orders"),
            ("FAS_TEMPORAL_METRIC_NAME", "workflows"),
            ("FAS_TEMPORAL_QUERY", "TaskQueue = '$APP_NAME'"),
            ("FAS_TEMPORAL_CERT_DATA", "cert-from-fas"),
            ("TEMPORAL_TLS_CERT_DATA", "cert-from-temporal-cli"),
            ("FAS_TEMPORAL_KEY_DATA", "key-secret-1"),
            ("FAS_TEMPORAL_CA_DATA", "ca-pem"),
            ("FAS_TEMPORAL_API_KEY", "api-secret-2"),
        ]);
        let c = Config::from_env(&getenv).unwrap();
        let mc = &c.metric_collectors[0];
        assert_eq!(mc.kind, "temporal");
        assert_eq!(mc.address, "temporal:7233");
        assert_eq!(mc.namespace, "orders");
        assert_eq!(mc.metric_name, "workflows");
        assert_eq!(mc.query, "TaskQueue = '$APP_NAME'");
        // The Temporal CLI's variable wins, as in the Go tool.
        assert_eq!(
            mc.cert_data.as_ref().unwrap().expose(),
            "cert-from-temporal-cli"
        );
        assert_eq!(mc.key_data.as_ref().unwrap().expose(), "key-secret-1");
        assert_eq!(mc.ca_data.as_ref().unwrap().expose(), "ca-pem");
        assert_eq!(mc.api_key.as_ref().unwrap().expose(), "api-secret-2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("key-secret-1") && !shown.contains("api-secret-2"),
            "{shown}"
        );
        // No FAS_TEMPORAL_ADDRESS: no collector, whatever else is set.
        let c = Config::from_env(&env(&[("FAS_TEMPORAL_NAMESPACE", "x")])).unwrap();
        assert!(c.metric_collectors.is_empty());

        let mut c = Config::default();
        c.apply_yaml(
            "metric-collectors:\n  - type: temporal\n    metric-name: workflow_count\n    address: localhost:7233\n    namespace: default\n    cert-data: C\n    key-data: K\n    ca-data: CA\n    api-key: AK\n    query: 'WorkflowType=\"my_workflow_type\"'\n",
            &env(&[]),
        )
        .unwrap();
        let mc = &c.metric_collectors[0];
        assert_eq!(
            (
                mc.kind.as_str(),
                mc.metric_name.as_str(),
                mc.namespace.as_str()
            ),
            ("temporal", "workflow_count", "default")
        );
        assert_eq!(mc.query, "WorkflowType=\"my_workflow_type\"");
        assert_eq!(mc.api_key.as_ref().unwrap().expose(), "AK");
        assert_eq!(mc.ca_data.as_ref().unwrap().expose(), "CA");
        mc.validate().unwrap();
    }

    #[test]
    fn extras_and_absurd_values() {
        let c = Config::from_env(&env(&[
            ("FAS_SHUTDOWN_GRACE", "1500ms"),
            ("FAS_MAX_ACTIONS_PER_TICK", "7"),
        ]))
        .unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(c.max_actions_per_tick, 7);
        let d = Config::from_env(&env(&[])).unwrap();
        assert_eq!(d.shutdown_grace, Duration::from_secs(3));
        assert_eq!(d.max_actions_per_tick, 100);
        assert_eq!(
            Config::from_env(&env(&[("FAS_SHUTDOWN_GRACE", "0s")]))
                .unwrap()
                .shutdown_grace,
            Duration::ZERO
        );
        for (k, v, want) in [
            (
                "FAS_INTERVAL",
                "0s",
                "FAS_INTERVAL must be a positive duration",
            ),
            (
                "FAS_INTERVAL",
                "10000h",
                "FAS_INTERVAL must be at most 168h",
            ),
            (
                "FAS_TIMEOUT",
                "2562047h",
                "FAS_TIMEOUT must be at most 168h",
            ),
            (
                "FAS_SHUTDOWN_GRACE",
                "-1s",
                "FAS_SHUTDOWN_GRACE must be a positive duration",
            ),
            ("FAS_MAX_ACTIONS_PER_TICK", "0", "from 1 to 10000"),
            ("FAS_MAX_ACTIONS_PER_TICK", "1e12", "from 1 to 10000"),
        ] {
            let e = Config::from_env(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let mut c = Config::default();
        c.apply_yaml("shutdown-grace: 2s\nmax-actions-per-tick: 5\n", &env(&[]))
            .unwrap();
        assert_eq!(
            (c.shutdown_grace, c.max_actions_per_tick),
            (Duration::from_secs(2), 5)
        );
    }

    #[test]
    fn inverted_constant_bounds_are_refused() {
        let c = app(|c| {
            c.min_created_machine_count = "5".into();
            c.max_created_machine_count = "2".into();
        });
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "min created machine count (5) is greater than max created machine count (2)"
        );
        let c = app(|c| {
            c.min_started_machine_count = "3".into();
            c.max_started_machine_count = "1".into();
        });
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min started"));
        // Expressions with variables are clamped at run time, not refused.
        let c = app(|c| {
            c.min_created_machine_count = "q + 5".into();
            c.max_created_machine_count = "2".into();
        });
        c.validate().unwrap();
    }

    #[test]
    fn yaml_errors_never_show_an_expanded_value_and_a_bom_is_fine() {
        let getenv = env(&[("CANARY", "FlyV1 fm2_canary_in_yaml")]);
        let mut c = Config::default();
        let e = c
            .apply_yaml("app-name: x\nconcurrency: $CANARY\n", &getenv)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("fm2_canary_in_yaml"), "{e}");
        assert!(e.contains("${CANARY}"), "{e}");
        let e = c
            .apply_yaml("interval: ${CANARY}\n", &getenv)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("fm2_canary_in_yaml"), "{e}");
        c.apply_yaml("\u{feff}app-name: bom-app\n", &getenv)
            .unwrap();
        assert_eq!(c.app_name, "bom-app");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr(":9090"),
            Some(SocketAddr::from(([0, 0, 0, 0], 9090)))
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0"),
            Some(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert_eq!(
            parse_listen_addr("localhost:80"),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(parse_listen_addr("nope"), None);
    }
}
