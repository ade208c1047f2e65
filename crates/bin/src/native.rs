//! `fleetscale run` and `fleetscale eval`: many targets from one TOML file.
//!
//! The format is shown in `fleetscale run --help` and the repository README; reading,
//! checking and building the file's targets is `fleetscale_config`'s work, this module runs
//! them (server, signals, replication) or evaluates them once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use fleetscale_config::{check_env_utf8, engine_config, load, FileConfig, NativeTargets};
use fleetscale_core::engine::{Engine, TargetProvider};
use fleetscale_core::record::{MetricReading, TickStatus, TracingObserver, MAX_LOGGED_ACTIONS};
use fleetscale_metrics::AutoscalerMetrics;

use crate::error::{BinError, Result};
use fleetscale_metrics::server::{Health, MetricsServer};

fn getenv(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Reads, checks and builds a configuration file with the process environment.
fn load_and_build(path: &Path) -> Result<(FileConfig, NativeTargets)> {
    if let Ok(raw) = std::fs::read_to_string(path) {
        check_env_utf8(&raw)?;
    }
    let (cfg, text) = load(path, &getenv)?;
    let provider = NativeTargets::build(path, &text, &cfg, &getenv)?;
    Ok((cfg, provider))
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
/// Runs until SIGINT or SIGTERM; ticks in flight then get `engine.shutdown_grace`, a second
/// signal exits at once, and an engine that stops on its own ends the process with an error
/// (see [`crate::supervise`]).
///
/// # Errors
/// Configuration errors; a listen address that cannot be bound; an engine that stopped on
/// its own; a second signal.
pub async fn run(path: &Path, dry_run: bool, etcd: &[String]) -> Result<()> {
    let (cfg, provider) = load_and_build(path)?;
    let mut coordination = cfg
        .coordination
        .as_ref()
        .map(|c| c.get_ref().clone())
        .unwrap_or_default();
    if !etcd.is_empty() {
        coordination.endpoints = etcd.to_vec();
    }
    let etcd = coordination
        .etcd_config()
        .map_err(|e| BinError::config(format!("{}: coordination: {e}", path.display())))?;
    let provider = Arc::new(provider);
    let engine_cfg = cfg.engine();
    let metrics = Arc::new(AutoscalerMetrics::new());
    let health = Arc::new(Health::new(
        engine_cfg.interval * 3 + engine_cfg.tick_timeout + engine_cfg.refresh_interval,
    ));
    let status = fleetscale_metrics::server::status_board("fleetscale", cfg.engine().interval);
    let replication = etcd
        .map(|c| fleetscale_config::coordination::Replication::start(c, metrics.clone()))
        .transpose()?;
    let engine = Arc::new(fleetscale_config::coordination::attach(
        Engine::new(engine_config(&engine_cfg, dry_run), provider)
            .with_observer(Arc::new(TracingObserver::new()))
            .with_observer(Arc::new(PauseLog))
            .with_observer(metrics.clone())
            .with_observer(health.clone())
            .with_observer(status.clone()),
        replication.as_ref(),
    ));
    let server = if cfg.server.listen.trim() == "off" {
        None
    } else {
        let addr: SocketAddr = fleetscale_fas::config::parse_listen_addr(&cfg.server.listen)
            .ok_or_else(|| {
                BinError::config(format!(
                    "{}: server.listen {:?} is not host:port",
                    path.display(),
                    cfg.server.listen
                ))
            })?;
        let s = MetricsServer::start_with_status(addr, metrics, health, Some(status))
            .await
            .map_err(|e| BinError::io(format!("listen on {addr} (server.listen)"), e))?;
        tracing::info!(addr = %s.addr(), "serving /metrics and /healthz");
        Some(s)
    };
    tracing::info!(
        targets = cfg.targets.len(),
        dry_run,
        interval_seconds = engine_cfg.interval.as_secs_f64(),
        "fleetscale running"
    );
    let result = crate::supervise::run_engine_until_signal(engine, engine_cfg.shutdown_grace).await;
    if let Some(r) = replication {
        r.stop().await;
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    result
}

/// `fleetscale eval`: one dry-run tick per target, printed; exit status 1 when a tick failed.
/// Plans of many actions are shown in part ([`MAX_LOGGED_ACTIONS`] actions, the rest counted by
/// kind); `--json` prints the whole record, times in RFC 3339 and durations in seconds.
///
/// # Errors
/// Configuration errors; the target list cannot be built.
pub async fn eval(path: &Path, json: bool) -> Result<i32> {
    let (cfg, provider) = load_and_build(path)?;
    let provider = Arc::new(provider);
    let targets = provider.targets().await?;
    let engine = Engine::new(engine_config(&cfg.engine(), true), provider);
    let mut failed = false;
    let say = |line: String| fleetscale_fas::redact::print_line(&line);
    for t in &targets {
        let r = engine.tick(t, true).await;
        failed |= matches!(r.status, TickStatus::Failed { .. });
        if json {
            say(serde_json::to_string(&r).unwrap_or_default());
            continue;
        }
        say(format!("target {}", r.target));
        if let Some(c) = r.counts {
            say(format!(
                "  machines: {} created, {} started, {} stopped, {} suspended, {} in transition, {} unmanageable",
                c.created, c.started, c.stopped, c.suspended, c.transitioning, c.unmanageable
            ));
        }
        for (name, m) in &r.metrics {
            match m {
                MetricReading::Value(v) => say(format!("  metric {name} = {v}")),
                MetricReading::Failed { kind, message } => {
                    say(format!("  metric {name} FAILED ({kind}): {message}"))
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
                say(format!(
                    "  rules: created {}, started {}",
                    b(raw.created),
                    b(raw.started)
                ));
            }
            say(format!(
                "  targets: created {}, started {}{}",
                b(d.targets.created),
                b(d.targets.started),
                if d.held { " (held)" } else { "" }
            ));
            for n in &d.notes {
                say(format!("  note: {n}"));
            }
        }
        match &r.plan {
            Some(p) if !p.is_empty() => {
                say(format!(
                    "  would do ({}):",
                    fleetscale_core::record::summarize_actions(&p.actions)
                ));
                for a in p.actions.iter().take(MAX_LOGGED_ACTIONS) {
                    say(format!("    - {a}"));
                }
                if p.actions.len() > MAX_LOGGED_ACTIONS {
                    let rest = &p.actions[MAX_LOGGED_ACTIONS..];
                    say(format!(
                        "    ... and {} more ({})",
                        rest.len(),
                        fleetscale_core::record::summarize_actions(rest)
                    ));
                }
            }
            Some(_) => say("  would do: nothing".into()),
            None => {}
        }
        if let Some(p) = &r.plan {
            for n in &p.notes {
                say(format!("  plan note: {n}"));
            }
        }
        match &r.status {
            TickStatus::Failed { stage, message, .. } => {
                say(format!("  FAILED at {stage}: {message}"))
            }
            TickStatus::Paused { reason } => say(format!("  paused: {reason}")),
            _ => {}
        }
    }
    Ok(if failed { 1 } else { 0 })
}
