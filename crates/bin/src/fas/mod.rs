//! `fly-autoscaler`: a drop-in replacement for Fly's Go autoscaler on the fleetscale engine.
//!
//! Same environment variables, YAML file, defaults, validation messages, subcommands, log
//! lines and metric names as `superfly/fly-autoscaler` v0.3.2; the configuration, its
//! targets and its log lines are `fleetscale_fas`'s, this module parses the command line and
//! runs the process (server, signals, replication). The differences from the Go tool (bug
//! fixes and extras) are listed in the repository's README, section "fly-autoscaler
//! compatibility".

use std::sync::Arc;

use fleetscale_core::engine::Engine;
use fleetscale_fas::args::{parse_args, version_string, Command};
use fleetscale_fas::config::{self, Config};
use fleetscale_fas::{
    build_client, build_graphql, build_policy, build_sources, check_env_utf8, engine_config, eval,
    load_config, log_pool_initialized, register_secrets, FlyTargets, GoLogObserver,
};
use fleetscale_metrics::server::{Health, MetricsServer};
use fleetscale_metrics::AutoscalerMetrics;

use crate::error::{BinError, Result};

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
    let status = fleetscale_metrics::server::status_board("fly-autoscaler", config.interval);
    let replication = etcd
        .map(|c| fleetscale_config::coordination::Replication::start(c, metrics.clone()))
        .transpose()?;
    let engine = Arc::new(fleetscale_config::coordination::attach(
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

    let result = crate::supervise::run_engine_until_signal(engine, config.shutdown_grace).await;
    if let Some(r) = replication {
        r.stop().await;
    }
    server.shutdown().await;
    result
}

/// Runs the `fly-autoscaler` command line and returns the process exit status: 0 on
/// success (and for `--help`, `--version`), 1 on error (`ERROR: …` on stderr, as the Go tool,
/// never showing a secret).
pub async fn main_with_args(args: Vec<String>) -> i32 {
    let getenv = |k: &str| std::env::var(k).ok();
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            fleetscale_fas::redact::eprint_line(&format!("ERROR: {e}"));
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
            fleetscale_fas::redact::register(&v);
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
                eval(&c, &getenv)
                    .await
                    .map(|t| {
                        fleetscale_fas::redact::print_line(
                            &serde_json::to_string_pretty(&t).unwrap_or_else(|_| "{}".into()),
                        );
                    })
                    .map_err(BinError::from)
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            fleetscale_fas::redact::eprint_line(&format!("ERROR: {e}"));
            1
        }
    }
}
