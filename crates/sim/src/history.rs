//! The inputs of a backtest (feature `history`): the policy to replay with where its metrics
//! come from ([`Subject`]), the metrics that follow the simulated fleet, the history read from
//! the subjects' Prometheus sources, and one [`ReplayConfig`] per subject. The command line
//! (`fleetscale backtest`) builds subjects from a configuration file and prints the results.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use fleetscale_core::policy::Policy;
use fleetscale_core::{InitialState, Scope};
use fleetscale_metrics::{PrometheusConfig, SourceConfig};

use crate::{FleetConfig, FleetQuantity, ProxyConfig, ReplayConfig, Result, SimError, Trace};

/// A policy to replay, with where its metrics come from: one target of a configuration.
#[derive(Clone, Debug)]
pub struct Subject {
    /// How the subject is named in the summary and the plots (the file name, typically).
    pub label: String,
    /// The app whose fleet is simulated.
    pub app: String,
    /// The scope the sources' queries are expanded in (`$APP_NAME`, process group, ...).
    pub scope: Scope,
    /// The rules replayed tick by tick.
    pub policy: Policy,
    /// The state new machines are created in.
    pub initial_state: InitialState,
    /// The time between ticks, also the default resolution of the history.
    pub interval: Duration,
    /// The target's metric sources, read for the history.
    pub sources: Vec<SourceConfig>,
}

/// Parses `--from`/`--to`: RFC 3339, Unix seconds, `now`, `now-DURATION`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(s: &str) -> std::result::Result<SystemTime, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(SystemTime::now());
    }
    if let Some(ago) = s.strip_prefix("now-") {
        let d = humantime::parse_duration(ago).map_err(|e| format!("{s:?}: {e}"))?;
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} is before the epoch"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?} is not a time: use RFC 3339 (2026-01-05T00:00:00Z), Unix seconds, now or now-24h")
    })
}

/// Metrics that stand for the fleet: the explicit `specs` (`NAME=QUANTITY`, as
/// `--fleet-metric` gives them), and Prometheus sources counting `fly_instance_up` (the
/// blueprint's `running_machines`).
///
/// # Errors
/// [`SimError::Input`] for a spec that is not `NAME=QUANTITY` or names no quantity.
pub fn fleet_metrics(
    specs: &[String],
    subjects: &[&Subject],
) -> Result<BTreeMap<String, FleetQuantity>> {
    let mut out = BTreeMap::new();
    for s in subjects {
        for src in &s.sources {
            if let SourceConfig::Prometheus(p) = src {
                if p.query.contains("fly_instance_up") {
                    out.insert(p.name.clone(), FleetQuantity::Started);
                }
            }
        }
    }
    for spec in specs {
        let (name, q) = spec.split_once('=').ok_or_else(|| {
            SimError::Input(format!("--fleet-metric {spec:?}: expected NAME=QUANTITY"))
        })?;
        let q: FleetQuantity = q
            .parse()
            .map_err(|e| SimError::Input(format!("--fleet-metric {spec:?}: {e}")))?;
        out.insert(name.trim().to_owned(), q);
    }
    Ok(out)
}

/// What to read besides the sources the rules use: the load driving the Fly Proxy model.
#[derive(Clone, Debug, Default)]
pub struct HistoryRequest {
    /// The resolution (default: the first subject's interval).
    pub step: Option<Duration>,
    /// The source (or trace column) holding the app's load.
    pub load: Option<String>,
    /// A PromQL query for the load, read with the address and token of the first subject's
    /// first Prometheus source.
    pub load_query: Option<String>,
}

/// Reads from Prometheus, from `from` to `to`, every source some subject's policy uses (but
/// the `fleet` metrics, which the simulation provides), and the load of `request`.
///
/// # Errors
/// [`SimError::Input`] when there is nothing to read or `load_query` has no Prometheus source
/// to borrow; [`SimError::Metrics`] when Prometheus fails; trace errors for inconsistent
/// series.
pub async fn read_history(
    request: &HistoryRequest,
    subjects: &[&Subject],
    fleet: &BTreeMap<String, FleetQuantity>,
    from: SystemTime,
    to: SystemTime,
) -> Result<Trace> {
    let step = request.step.unwrap_or(subjects[0].interval);
    let scope = &subjects[0].scope;
    let mut wanted: Vec<SourceConfig> = Vec::new();
    let mut seen = BTreeSet::new();
    for s in subjects {
        let used: Vec<&str> = s.policy.variables();
        for src in &s.sources {
            let name = src.name();
            let is_load = request.load.as_deref() == Some(name);
            if (used.contains(&name) || is_load)
                && !fleet.contains_key(name)
                && seen.insert(name.to_owned())
            {
                wanted.push(src.clone());
            }
        }
    }
    if let Some(q) = &request.load_query {
        let base = subjects[0]
            .sources
            .iter()
            .find_map(|s| match s {
                SourceConfig::Prometheus(p) => Some(p.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                SimError::Input("--load-query needs a Prometheus source on the target (its address and token are used)".into())
            })?;
        let name = request.load.clone().unwrap_or_else(|| "load".to_owned());
        let mut pc = PrometheusConfig::new(name.clone(), base.address, q.clone());
        pc.token = base.token;
        pc.timeout = base.timeout;
        wanted.retain(|s| s.name() != name);
        wanted.push(SourceConfig::Prometheus(pc));
    }
    let mut trace: Option<Trace> = None;
    for src in &wanted {
        let h = src.history(scope, from, to, step).await?;
        for w in &h.warnings {
            eprintln!("warning: prometheus ({}): {w}", src.name());
        }
        let t = match &mut trace {
            Some(t) => t,
            None => trace.insert(Trace::new(h.timestamps, BTreeMap::new())?),
        };
        t.insert(src.name(), h.values)?;
    }
    trace.ok_or_else(|| {
        SimError::Input(
            "no metric to read: the rules use none, and no --load or --load-query names one".into(),
        )
    })
}

/// One replay per subject, all on the same simulated fleet (`fleet`), Fly Proxy model
/// (`proxy`) and fleet metrics.
pub fn replay_configs(
    subjects: &[&Subject],
    fleet_metrics: &BTreeMap<String, FleetQuantity>,
    proxy: Option<&ProxyConfig>,
    fleet: &FleetConfig,
) -> Vec<ReplayConfig> {
    subjects
        .iter()
        .map(|s| {
            let mut c = ReplayConfig::new(s.label.clone(), s.app.clone(), s.policy.clone());
            c.scope = s.scope.clone();
            c.plan_options.initial_state = s.initial_state;
            c.interval = s.interval;
            c.proxy = proxy.cloned();
            c.fleet_metrics = fleet_metrics.clone();
            c.fleet = *fleet;
            c
        })
        .collect()
}
