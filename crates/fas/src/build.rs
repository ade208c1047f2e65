//! From a fly-autoscaler configuration to the engine's pieces: the configuration loaded from
//! the environment and the YAML file, its policy, metric sources, Fly clients and engine
//! settings, its secrets registered for redaction, and `eval`'s one-shot evaluation.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetscale_core::engine::EngineConfig;
use fleetscale_core::expr::Expr;
use fleetscale_core::policy::{self, CountRule, Policy, COUNT_VARIABLES};
use fleetscale_core::{Bounds, Counts, InitialState, MetricSource, Scope, Targets};
use fleetscale_fly::apps::FlyApps;
use fleetscale_fly::{ClientConfig, FlyGraphql, GraphqlConfig, MachinesClient, Token};
use fleetscale_metrics::{
    MetricsError, PrometheusConfig, PrometheusSource, TemporalConfig, TemporalSource,
};

use crate::config::{self, Config};
use crate::error::{FasError, Result};
use crate::gocompat::{format_go_duration, go_quote};

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
            .map_err(|e| FasError::io(format!("open {}", path.display()), e))?;
        c.apply_yaml(&text, getenv)
            .map_err(|e| FasError::config(format!("{}: {e}", path.display())))?;
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
        .map_err(|e| FasError::config(format!("invalid {kind} machine count expression: {e}")))
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
        fleetscale_core::Error::Config { message, .. } => FasError::config(message),
        e => FasError::config(format!("invalid expression: {e}")),
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
            .map_err(|e| FasError::config(format!("metric collector[{i}]: {e}")))?;
        if mc.kind == "temporal" {
            out.push(build_temporal(c, mc).map_err(|e| {
                FasError::config(format!(
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
            FasError::config(format!(
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
pub(crate) fn fly_apps(c: &Config, client: MachinesClient) -> FlyApps {
    FlyApps::new(client, c.app_name.clone(), c.org.clone())
        .with_process_group(Some(c.process_group.clone()))
        .with_regions(c.regions.clone())
}

/// The state new machines are created in: `stopped` when the configuration says so.
pub(crate) fn initial_state(c: &Config) -> InitialState {
    if c.initial_machine_state == "stopped" {
        InitialState::Stopped
    } else {
        InitialState::Started
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

/// Logs fly-autoscaler's `reconciler pool initialized, beginning loop` line with the Go tool's
/// attributes (durations in Go's format, `created`/`started` as one value or a min/max group).
pub fn log_pool_initialized(c: &Config, collectors: usize) {
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
            return Err(FasError::config(format!(
                "environment variable {name} is set but its value is not valid UTF-8"
            )));
        }
    }
    Ok(())
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
                return Err(FasError::Failed(format!(
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
            return Err(FasError::config(
                "eval cannot read machine counts for a wildcard app name: name one app",
            ));
        }
        if config
            .api_token
            .as_ref()
            .is_none_or(fleetscale_fly::token::is_blank)
        {
            return Err(FasError::config(
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
                FasError::Failed(format!("cannot calculate {which} machine count: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        ok.validate().unwrap();
        let sources = build_sources(&ok).unwrap();
        assert_eq!(sources[0].name(), "workflows");
    }
}
