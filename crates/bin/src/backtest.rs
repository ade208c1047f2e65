//! `fleetscale backtest`: what a policy would have done over past metrics, from a Prometheus
//! (`query_range`) or a CSV trace, replayed by `fleetscale_sim` against a simulated fleet.
//! This module only reads the configuration and the history; the replay, the summary and the
//! plots are the `fleetscale-sim` crate's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use fleetscale_core::policy::Policy;
use fleetscale_core::{InitialState, Scope};
use fleetscale_metrics::{PrometheusConfig, SourceConfig};
use fleetscale_sim::history::{
    fleet_metrics, parse_time, read_history, replay_configs, HistoryRequest, Subject,
};
use fleetscale_sim::{replay, write_outputs, FleetConfig, Latencies, ProxyConfig, Trace};

use crate::error::{BinError, Result};

/// `backtest`.
#[derive(Debug, Args)]
#[command(after_long_help = BACKTEST_HELP)]
pub struct BacktestArgs {
    /// The fleetscale TOML file; with --fas-env, an optional fly-autoscaler YAML file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read the policy and collectors from the FAS_* variables (and --config YAML), as
    /// fly-autoscaler does.
    #[arg(long)]
    pub fas_env: bool,
    /// The target (its name or app); for a wildcard, the app to backtest.
    #[arg(long)]
    pub target: Option<String>,
    /// Start of the range read from Prometheus: RFC 3339, Unix seconds, `now-24h`.
    #[arg(long, value_parser = parse_time, requires = "to")]
    pub from: Option<SystemTime>,
    /// End of the range: RFC 3339, Unix seconds, `now`.
    #[arg(long, value_parser = parse_time, requires = "from")]
    pub to: Option<SystemTime>,
    /// Resolution of the range (default: the tick interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,
    /// A CSV trace (`timestamp,metric1,…`) instead of Prometheus.
    #[arg(long, conflicts_with_all = ["from", "to", "step"], required_unless_present = "from")]
    pub trace: Option<PathBuf>,
    /// Where summary.json, table.txt, plot.svg and plot.png are written.
    #[arg(long)]
    pub out: PathBuf,
    /// A second configuration of the same kind, replayed on the same history, side by side.
    #[arg(long, value_name = "FILE2")]
    pub compare: Option<PathBuf>,
    /// The metric (trace column or source) holding the app's load, which drives the Fly
    /// Proxy model; a trace column named `load` is used by default.
    #[arg(long)]
    pub load: Option<String>,
    /// A PromQL query for the load (read with the address and token of the target's first
    /// Prometheus source), e.g. `sum(fly_app_concurrency{app='$APP_NAME'})`.
    #[arg(long)]
    pub load_query: Option<String>,
    /// The service's concurrency soft_limit per machine.
    #[arg(long, default_value_t = fleetscale_sim::proxy::DEFAULT_SOFT_LIMIT)]
    pub soft_limit: f64,
    /// The service's min_machines_running.
    #[arg(long, default_value_t = 0)]
    pub min_machines_running: u32,
    /// Time between Fly Proxy's autostop passes ("every few minutes").
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub proxy_stop_every: Duration,
    /// Do not model Fly Proxy (machines start and stop only by the policy).
    #[arg(long)]
    pub no_proxy: bool,
    /// A metric that follows the simulated fleet: NAME=started|running|machines|spare
    /// (repeatable). Prometheus sources counting `fly_instance_up` are `started` already.
    #[arg(long = "fleet-metric", value_name = "NAME=QUANTITY")]
    pub fleet_metrics: Vec<String>,
    /// Machines started at the beginning.
    #[arg(long, default_value_t = 1)]
    pub initial_started: u32,
    /// Machines stopped at the beginning.
    #[arg(long, default_value_t = 0)]
    pub initial_stopped: u32,
    /// From a create call to the machine existing.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub create_latency: Duration,
    /// From a start to `started`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub start_latency: Duration,
    /// From a stop to `stopped`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub stop_latency: Duration,
    /// From a destroy to gone.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub destroy_latency: Duration,
}

const BACKTEST_HELP: &str = "\
Replays the target's policy tick by tick (limits, cooldowns, stabilization and the planner
included) against a simulated fleet, and for Fly apps Fly Proxy (autostart above the soft
limit, autostop of excess machines every few minutes), over past metrics. Writes
summary.json (byte-identical for the same inputs), table.txt, plot.svg and plot.png.

  # A day from Prometheus, the load from Fly's concurrency metric:
  fleetscale backtest --config fleetscale.toml --from now-24h --to now \\
    --load-query \"sum(fly_app_concurrency{app='$APP_NAME'})\" --out backtest/

  # A recorded trace, two policies side by side:
  fleetscale backtest --config a.toml --compare b.toml --trace day.csv --out backtest/

  # The fly-autoscaler blueprint as deployed (FAS_* variables):
  fleetscale backtest --fas-env --trace day.csv --out backtest/";

fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn getenv(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The subject of a fleetscale TOML file: the target named by `--target` (or the only one).
fn native_subject(path: &Path, target: Option<&str>) -> Result<Subject> {
    let (cfg, text) = fleetscale_config::load(path, &getenv)?;
    let pick = cfg.targets.iter().find(|t| {
        let t = t.get_ref();
        let app = match &t.backend {
            fleetscale_config::BackendConfig::Fly(fly) => fly.app.as_str(),
            fleetscale_config::BackendConfig::Ec2(pool) => pool.pool.as_str(),
        };
        target.is_none_or(|n| t.name.as_deref() == Some(n) || app == n)
            || target.is_some_and(|n| app.contains('*') && wildcard_match(app, n))
    });
    let t = match (pick, target, cfg.targets.len()) {
        (Some(t), Some(_), _) | (Some(t), None, 1) => t,
        (_, None, _) => {
            return Err(BinError::config(format!(
                "{}: {} targets: name one with --target",
                path.display(),
                cfg.targets.len()
            )))
        }
        (None, Some(n), _) => {
            return Err(BinError::config(format!(
                "{}: no target named {n:?} (nor an app it names or a wildcard it matches)",
                path.display()
            )))
        }
    };
    let at = t.span().start;
    let t = t.get_ref();
    let fly = match &t.backend {
        fleetscale_config::BackendConfig::Fly(fly) => fly,
        fleetscale_config::BackendConfig::Ec2(pool) => {
            return Err(BinError::config(format!(
                "{}: target {:?} is an EC2 pool: backtests replay Fly apps only",
                path.display(),
                t.name.as_deref().unwrap_or(&pool.pool)
            )))
        }
    };
    let app = match (fly.app.contains('*'), target) {
        (false, _) => fly.app.clone(),
        (true, Some(n)) if n != fly.app && t.name.as_deref() != Some(n) => n.to_owned(),
        (true, _) => {
            return Err(BinError::config(format!(
                "{}: target {:?} is a wildcard: name the app to backtest with --target APP",
                path.display(),
                fly.app
            )))
        }
    };
    let p = &t.policy;
    let rule =
        |kind, single, min, max| fleetscale_config::rule(path, &text, kind, single, min, max);
    let policy = Policy {
        created: rule("created", &p.created, &p.created_min, &p.created_max)?,
        started: rule("started", &p.started, &p.started_min, &p.started_max)?,
        limits: p.limits.as_ref().map(|l| *l.get_ref()).unwrap_or_default(),
        on_error: p.on_error,
    };
    let sources: Vec<SourceConfig> = t.sources.iter().map(|s| s.get_ref().clone()).collect();
    let names: Vec<&str> = sources.iter().map(SourceConfig::name).collect();
    policy
        .check(&names)
        .map_err(|e| BinError::config(text.located(path, at, &e.to_string())))?;
    let mut scope = Scope::new(app.clone());
    if let Some(g) = fly.process_group.clone().filter(|g| !g.is_empty()) {
        scope = scope.with_group(g);
    }
    if let Some(org) = &fly.org {
        scope = scope.with_var("ORG", org.clone());
    }
    Ok(Subject {
        label: file_label(path),
        app,
        scope,
        policy,
        initial_state: t.initial_state,
        interval: cfg.engine().interval,
        sources,
    })
}

fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The subject of fly-autoscaler's configuration: FAS_* variables, then an optional YAML.
fn fas_subject(yaml: Option<&Path>, target: Option<&str>) -> Result<Subject> {
    let c = fleetscale_fas::load_config(yaml, &getenv)?;
    let mut sources = Vec::new();
    for mc in &c.metric_collectors {
        if mc.kind == "prometheus" {
            let mut pc = PrometheusConfig::new(&mc.metric_name, &mc.address, &mc.query)
                .with_expand_env(true)
                .with_timeout(c.timeout);
            if let Some(t) = &mc.token {
                pc = pc.with_token(t.clone());
            }
            sources.push(SourceConfig::Prometheus(pc));
        } else {
            sources.push(SourceConfig::Temporal(
                fleetscale_metrics::TemporalConfig::new(
                    &mc.metric_name,
                    &mc.address,
                    &mc.namespace,
                ),
            ));
        }
    }
    let names: Vec<&str> = sources.iter().map(SourceConfig::name).collect();
    let policy = fleetscale_fas::build_policy(&c, &names)?;
    let app = if c.is_wildcard() {
        target.map(str::to_owned).ok_or_else(|| {
            BinError::config(format!(
                "FAS_APP_NAME {:?} is a wildcard: name the app to backtest with --target APP",
                c.app_name
            ))
        })?
    } else {
        c.app_name.clone()
    };
    if app.is_empty() {
        return Err(BinError::config("app name required (FAS_APP_NAME)"));
    }
    let mut scope = Scope::new(app.clone());
    if !c.process_group.is_empty() {
        scope = scope.with_group(c.process_group.clone());
    }
    Ok(Subject {
        label: yaml.map_or_else(|| "FAS_* environment".to_owned(), file_label),
        app,
        scope,
        policy,
        initial_state: if c.initial_machine_state == "stopped" {
            InitialState::Stopped
        } else {
            InitialState::Started
        },
        interval: c.interval,
        sources,
    })
}

fn subject(path: Option<&Path>, args: &BacktestArgs) -> Result<Subject> {
    if args.fas_env {
        fas_subject(path, args.target.as_deref())
    } else {
        let path =
            path.ok_or_else(|| BinError::config("--config FILE is required (or --fas-env)"))?;
        native_subject(path, args.target.as_deref())
    }
}

/// `fleetscale backtest`. Returns the exit status.
///
/// # Errors
/// Configuration errors, an unreadable trace, Prometheus errors, outputs that cannot be
/// written. Nothing is written unless every replay succeeded.
pub async fn backtest(args: &BacktestArgs) -> Result<i32> {
    let a = subject(args.config.as_deref(), args)?;
    let b = match &args.compare {
        Some(path) => Some(subject(Some(path), args)?),
        None => None,
    };
    let subjects: Vec<&Subject> = [Some(&a), b.as_ref()].into_iter().flatten().collect();
    let fleet = fleet_metrics(&args.fleet_metrics, &subjects)?;
    let trace = match (&args.trace, args.from, args.to) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BinError::io(format!("read {}", path.display()), e))?;
            Trace::from_csv(&text)
                .map_err(|e| BinError::config(format!("{}: {e}", path.display())))?
        }
        (None, Some(from), Some(to)) => {
            let request = HistoryRequest {
                step: args.step,
                load: args.load.clone(),
                load_query: args.load_query.clone(),
            };
            read_history(&request, &subjects, &fleet, from, to).await?
        }
        _ => {
            return Err(BinError::config(
                "give --trace FILE.csv, or --from and --to",
            ))
        }
    };
    let load = args
        .load
        .clone()
        .or_else(|| args.load_query.as_ref().map(|_| "load".to_owned()))
        .or_else(|| trace.has("load").then(|| "load".to_owned()));
    let proxy = match (&load, args.no_proxy) {
        (Some(l), false) => Some(ProxyConfig {
            soft_limit: args.soft_limit,
            min_machines_running: args.min_machines_running,
            autostop_every: args.proxy_stop_every,
            ..ProxyConfig::new(l.clone())
        }),
        (None, false) => {
            eprintln!("note: Fly Proxy is not modelled: name the load with --load or --load-query");
            None
        }
        (_, true) => None,
    };
    for (name, q) in &fleet {
        eprintln!("note: metric {name} follows the simulated fleet ({q:?} machines)");
    }
    let fleet_config = FleetConfig {
        latencies: Latencies {
            create: args.create_latency,
            start: args.start_latency,
            stop: args.stop_latency,
            destroy: args.destroy_latency,
        },
        initial_started: args.initial_started,
        initial_stopped: args.initial_stopped,
    };
    let configs = replay_configs(&subjects, &fleet, proxy.as_ref(), &fleet_config);
    let t0 = Instant::now();
    let replays = configs
        .iter()
        .map(|c| replay(&trace, c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let took = t0.elapsed();
    let refs: Vec<&fleetscale_sim::Replay> = replays.iter().collect();
    let out = write_outputs(&args.out, &refs)?;
    print!(
        "{}",
        std::fs::read_to_string(&out.table).unwrap_or_default()
    );
    println!(
        "\n{} samples from {} to {}, replayed in {:.1} ms",
        trace.len(),
        replays[0].summary.history.from,
        replays[0].summary.history.to,
        took.as_secs_f64() * 1000.0 / replays.len() as f64
    );
    println!(
        "wrote {}, {}{}, {}, {}",
        out.summary.display(),
        out.compare
            .as_ref()
            .map(|p| format!("{}, ", p.display()))
            .unwrap_or_default(),
        out.table.display(),
        out.svg.display(),
        out.png.display()
    );
    Ok(0)
}
