//! `fleetscale demo`: the main job on embedded defaults, with no account and no server.
//!
//! 1. Starts the fake Fly Machines API in-process (real HTTP on a free loopback port, Fly's
//!    state machine and rate limits), creates an app and its first machine with the same
//!    requests as against Fly.
//! 2. Runs the engine with the policy of Fly's "Autoscale Machines" blueprint:
//!    `created = min(running_machines + 1, 10)`, new machines created **stopped**, where
//!    `running_machines` is `count(fly_instance_up{app=…})` read from the fake's `/metrics`
//!    page (what Prometheus would scrape).
//! 3. Plays a synthetic traffic curve (quiet, ramp, peak above what 10 machines absorb,
//!    decline, quiet) through the Fly Proxy model of `fleetscale_sim::proxy`: it starts a
//!    stopped machine when the running ones are above the soft limit (20), and stops one
//!    when the documented excess rule says so, as `auto_start_machines`/`auto_stop_machines`
//!    do; the backtests use the same model.
//! 4. Shows live the load, the target and the machines by state (a redrawn block on a
//!    terminal, one plain line per frame otherwise) and ends with a summary: actions, API
//!    calls from the fake's request log, and reaction time (a spare consumed by the proxy →
//!    a new spare created).
//!
//! Time is compressed: the scenario is the same for any `--duration`; every period (tick
//! interval, proxy pass, machine transitions) and the rate limits scale with it, and
//! `--speed N` plays it N times faster.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::ActionKind;
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::{DecisionObserver, DecisionRecord};
use fleetscale_core::{InitialState, Machine, MetricSource, Scope};
use fleetscale_fly::fake::{Delays, FakeConfig, FakeFly, FakeFlyServer, FakeRateLimits};
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
use fleetscale_fly::{
    ClientConfig, FlyScaler, FlyScalerConfig, FlyState, MachinesClient, PacingConfig, Rate, Token,
};
use fleetscale_sim::proxy::{FlyProxy, ProxyAction, ProxyConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::{BinError, Result};

/// The app the demo scales.
pub const DEMO_APP: &str = "demo-app";
/// The blueprint's rule.
pub const BLUEPRINT_RULE: &str = "min(running_machines + 1, 10)";
/// Requests one machine serves before the proxy prefers another (Fly's default soft limit).
pub const SOFT_LIMIT: f64 = 20.0;
const PEAK_LOAD: f64 = 230.0;
/// The reference length of the scenario; periods below are for this length.
const REFERENCE: Duration = Duration::from_secs(30);

/// Options of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Length of the scenario (default 30 s).
    pub duration: Duration,
    /// Play it this many times faster (default 1).
    pub speed: f64,
    /// Redraw a live block (a terminal) instead of printing plain lines.
    pub live: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: REFERENCE,
            speed: 1.0,
            live: false,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemoSummary {
    /// Successful autoscaler actions by kind (`create`, `destroy`, `start`, `stop`).
    pub actions: BTreeMap<String, usize>,
    /// Failed autoscaler actions.
    pub failed_actions: usize,
    /// The first few failures, as `action: error`.
    pub failures: Vec<String>,
    /// Machines the simulated proxy started.
    pub proxy_starts: usize,
    /// Machines the simulated proxy stopped.
    pub proxy_stops: usize,
    /// Machines API calls by kind, from the fake's request log.
    pub api_calls: BTreeMap<String, usize>,
    /// Times from a spare being consumed to a new spare existing.
    pub reactions: Vec<Duration>,
    /// Most machines at once.
    pub peak_machines: usize,
    /// Most started machines at once.
    pub peak_started: usize,
    /// Machines at the end.
    pub final_machines: usize,
    /// Ticks run.
    pub ticks: u64,
}

impl DemoSummary {
    /// Whether the fleet grew beyond its first machine and shrank back afterwards.
    pub fn scaled_out_and_in(&self) -> bool {
        self.peak_machines > 2 && self.final_machines < self.peak_machines
    }
}

/// The traffic at `p` ∈ [0, 1] of the scenario: quiet, ramp, peak, decline, quiet.
pub fn traffic(p: f64) -> f64 {
    fleetscale_sim::shapes::demo_traffic(p, PEAK_LOAD)
}

/// `count(fly_instance_up{app=…})` over the fake's `/metrics` page: what Prometheus would
/// scrape and the blueprint queries.
struct InstanceUp {
    fake: FakeFly,
}

#[async_trait]
impl MetricSource for InstanceUp {
    fn name(&self) -> &str {
        "running_machines"
    }
    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        let prefix = format!("fly_instance_up{{app=\"{}\"", scope.target);
        let n = self
            .fake
            .metrics_text()
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.trim_end().ends_with(" 1"))
            .count();
        // Prometheus answers an empty vector for `count()` of no series, which
        // `PrometheusSource` reads as 0 (no series to count); so does this stand-in.
        Ok(n as f64)
    }
}

#[derive(Default)]
struct Recorder {
    records: Mutex<Vec<DecisionRecord>>,
}

impl DecisionObserver for Recorder {
    fn observe(&self, r: &DecisionRecord) {
        if let Ok(mut g) = self.records.lock() {
            g.push(r.clone());
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Census {
    started: usize,
    moving: usize,
    spare: usize,
    destroying: usize,
    total: usize,
}

fn census(fake: &FakeFly) -> Census {
    let mut c = Census::default();
    for m in fake.machines(DEMO_APP) {
        c.total += 1;
        match m.state {
            FlyState::Started => c.started += 1,
            FlyState::Starting | FlyState::Stopping | FlyState::Creating => c.moving += 1,
            FlyState::Created | FlyState::Stopped | FlyState::Suspended => c.spare += 1,
            FlyState::Destroying => c.destroying += 1,
            _ => {}
        }
    }
    c
}

fn api_kind(method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = match (method, segs.as_slice()) {
        ("GET", [_, "apps", _, "machines"]) => "list machines",
        ("POST", [_, "apps", _, "machines"]) => "create machine",
        ("GET", [_, "apps", _, "machines", _]) => "get machine",
        ("DELETE", [_, "apps", _, "machines", _]) => "destroy machine",
        (_, [_, "apps", _, "machines", _, action]) => {
            return format!("{} {action}", method.to_lowercase());
        }
        ("POST", [_, "apps"]) => "create app",
        ("GET", [_, "apps", ..]) => "get app",
        _ => "other",
    };
    kind.to_owned()
}

/// Runs the demo, writing the live view to `out`, and returns the summary (also printed).
///
/// # Errors
/// A speed or duration outside what `fleetscale demo` accepts
/// ([`crate::cli::parse_demo_speed`], [`crate::cli::parse_demo_duration`]); when the fake
/// cannot be started or seeded, or the engine cannot be built.
pub async fn run_demo(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary> {
    let speed = opts.speed;
    crate::cli::parse_demo_speed(&speed.to_string())
        .map_err(|e| BinError::config(format!("demo speed: {e}")))?;
    crate::cli::parse_demo_duration(&humantime::format_duration(opts.duration).to_string())
        .map_err(|e| BinError::config(format!("demo duration: {e}")))?;
    let wall = opts.duration.div_f64(speed).max(Duration::from_millis(500));
    // How much faster than the 30 s reference this run is.
    let k = REFERENCE.as_secs_f64() / wall.as_secs_f64();
    let scaled = |d: Duration| d.div_f64(k).max(Duration::from_millis(10));
    let rate = |r: Rate| Rate::new(r.per_second * k, r.burst);
    let fly_limits = FakeRateLimits::default();
    let limits = FakeRateLimits {
        machine_action: rate(fly_limits.machine_action),
        get_machine: rate(fly_limits.get_machine),
        create: rate(fly_limits.create),
        app_action: rate(fly_limits.app_action),
    };
    let token = "FlyV1 fm2_demo";
    let server = FakeFlyServer::bind(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BinError::Failed("bad address".into()))?,
        FakeConfig {
            token: Some(Token::new(token)),
            delays: Delays::uniform(scaled(Duration::from_millis(300))),
            rate_limits: Some(limits),
            default_region: "iad".into(),
        },
    )
    .await
    .map_err(|e| BinError::io("start the fake Machines API", e))?;
    let fake = server.fake().clone();

    let pacing = PacingConfig {
        machine_action: limits.machine_action,
        get_machine: limits.get_machine,
        create: limits.create,
        app_action: limits.app_action,
        ..PacingConfig::default()
    };
    let client = MachinesClient::new(
        Some(Token::new(token)),
        ClientConfig {
            pacing,
            ..ClientConfig::default().with_base_url(server.url())
        },
    )?;
    // The same requests as against Fly: create the app, then its first machine.
    client
        .create_app(&CreateAppRequest {
            app_name: DEMO_APP.into(),
            org_slug: "personal".into(),
            network: None,
        })
        .await?;
    client
        .create_machine(
            DEMO_APP,
            &CreateMachineRequest {
                config: json!({
                    "image": "registry.fly.io/demo-app:deployment-1",
                    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                    "services": [{"protocol": "tcp", "internal_port": 8080,
                        "autostop": "stop", "autostart": true, "min_machines_running": 0,
                        "concurrency": {"type": "requests", "soft_limit": 20, "hard_limit": 25},
                        "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
                    "metadata": {"fly_process_group": "app"}
                }),
                region: Some("iad".into()),
                ..Default::default()
            },
        )
        .await?;

    let scaler = Arc::new(FlyScaler::new(client, FlyScalerConfig::new(DEMO_APP))?);
    let policy = Policy {
        created: CountRule::from_settings("created", Some(BLUEPRINT_RULE), None, None)?,
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new(DEMO_APP), scaler, policy)
        .with_source(Arc::new(InstanceUp { fake: fake.clone() }))
        .with_initial_state(InitialState::Stopped);
    target.validate()?;
    let interval = scaled(Duration::from_millis(750));
    let recorder = Arc::new(Recorder::default());
    let engine = Arc::new(
        Engine::new(
            EngineConfig::default()
                .with_interval(interval)
                .with_tick_timeout(scaled(Duration::from_secs(10)).max(Duration::from_secs(2)))
                .with_metric_timeout(Duration::from_secs(2))
                .with_concurrency(1)
                .with_action_concurrency(2),
            Arc::new(vec![target]),
        )
        .with_observer(recorder.clone()),
    );
    let cancel = CancellationToken::new();
    let engine_task = {
        let engine = engine.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { engine.run(cancel.cancelled_owned()).await })
    };

    let t0 = Instant::now();
    let proxy_pass = scaled(Duration::from_millis(250));
    let stop_pass = scaled(Duration::from_millis(700));
    let frame = if opts.live {
        Duration::from_millis(100)
    } else {
        wall / 24
    };
    let mut summary = DemoSummary::default();
    let mut last_proxy = t0;
    let mut proxy = FlyProxy::new(ProxyConfig {
        soft_limit: SOFT_LIMIT,
        autostop_every: stop_pass,
        max_starts_per_pass: Some(1),
        ..ProxyConfig::new("load")
    });
    let mut last_frame: Option<Instant> = None;
    let mut consumed_at: Option<Instant> = None;
    let mut drawn_lines = 0usize;
    let mut last_action = String::from("-");
    let mut seen_records = 0usize;
    let _ = writeln!(
        out,
        "fleetscale demo: Fly \"Autoscale Machines\" blueprint on the fake Machines API at {}\n\
         policy: created = {BLUEPRINT_RULE}, new machines stopped; Fly Proxy (simulated) starts a spare \
         above {SOFT_LIMIT} req/s per machine and stops one when there is excess capacity",
        server.url()
    );
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(t0);
        let done = elapsed >= wall;
        let p = (elapsed.as_secs_f64() / wall.as_secs_f64()).min(1.0);
        let load = traffic(p);
        let c = census(&fake);
        summary.peak_machines = summary.peak_machines.max(c.total);
        summary.peak_started = summary.peak_started.max(c.started);
        if c.spare > 0 {
            if let Some(at) = consumed_at.take() {
                summary.reactions.push(now.duration_since(at));
            }
        }

        // Fly Proxy: autostart at every proxy pass (one machine per pass, as requests
        // arrive), autostop every stop pass; machines being created are invisible to it.
        if now.duration_since(last_proxy) >= proxy_pass && !done {
            last_proxy = now;
            let view: Vec<Machine> = fake
                .machines(DEMO_APP)
                .iter()
                .filter(|m| m.state != FlyState::Creating)
                .map(|m| {
                    let mut v = Machine::new(m.id.as_str(), m.state.to_core());
                    v.created_at = m.created_at();
                    v
                })
                .collect();
            let at = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
            for action in proxy.pass(at, load, &view) {
                match action {
                    ProxyAction::Autostart(id) => {
                        if fake.proxy_autostart(DEMO_APP, id.as_str()) {
                            summary.proxy_starts += 1;
                            if consumed_at.is_none() {
                                consumed_at = Some(now);
                            }
                        }
                    }
                    ProxyAction::Autostop(id) => {
                        if fake.proxy_autostop(DEMO_APP, id.as_str()) {
                            summary.proxy_stops += 1;
                        }
                    }
                }
            }
        }

        // Actions of new records.
        if let Ok(g) = recorder.records.lock() {
            for r in g.iter().skip(seen_records) {
                for o in &r.outcomes {
                    last_action = format!(
                        "{}{}",
                        o.action,
                        o.error
                            .as_ref()
                            .map(|e| format!(" FAILED: {}", e.message))
                            .unwrap_or_default()
                    );
                }
            }
            seen_records = g.len();
        }
        let target = engine
            .last_decisions()
            .first()
            .and_then(|r| r.decision.as_ref())
            .and_then(|d| d.targets.created.min);

        if last_frame.is_none_or(|f| now.duration_since(f) >= frame) || done {
            last_frame = Some(now);
            let sim = elapsed.mul_f64(speed).min(opts.duration);
            if opts.live {
                let bar_len = ((load / PEAK_LOAD) * 40.0).round() as usize;
                let bar = format!(
                    "{}{}",
                    "█".repeat(bar_len),
                    "░".repeat(40 - bar_len.min(40))
                );
                let machines = format!(
                    "{}{}{}{}",
                    "●".repeat(c.started),
                    "◐".repeat(c.moving),
                    "○".repeat(c.spare),
                    "·".repeat(c.destroying)
                );
                let lines = [
                    format!(
                        "t {:>5.1}s / {:.0}s   load {:>5.0} req/s  {bar}",
                        sim.as_secs_f64(),
                        opts.duration.as_secs_f64(),
                        load
                    ),
                    format!(
                        "running {:>2}   target created {:>2}   machines {:>2}   spare {:>2}",
                        c.started,
                        target.map_or("-".into(), |t| t.to_string()),
                        c.total,
                        c.spare
                    ),
                    format!(
                        "machines {machines:<12}  (● started  ◐ starting/stopping  ○ stopped spare  · destroying)"
                    ),
                    format!("last action: {last_action}"),
                ];
                if drawn_lines > 0 {
                    let _ = write!(out, "\x1b[{drawn_lines}A");
                }
                for l in &lines {
                    let _ = writeln!(out, "\x1b[2K{l}");
                }
                drawn_lines = lines.len();
            } else {
                let _ = writeln!(
                    out,
                    "t={:>5.1}s load={:>3.0} target={:>2} machines={:>2} started={:>2} starting/stopping={} spare={} destroying={} last_action={}",
                    sim.as_secs_f64(),
                    load,
                    target.map_or("-".into(), |t| t.to_string()),
                    c.total,
                    c.started,
                    c.moving,
                    c.spare,
                    c.destroying,
                    last_action
                );
            }
            let _ = out.flush();
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cancel.cancel();
    let _ = engine_task.await;
    let records = recorder
        .records
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    summary.ticks = records.len() as u64;
    for r in &records {
        for o in &r.outcomes {
            if o.ok() {
                *summary
                    .actions
                    .entry(o.action.kind().as_str().to_owned())
                    .or_insert(0) += 1;
            } else {
                summary.failed_actions += 1;
                if summary.failures.len() < 3 {
                    if let Some(e) = &o.error {
                        summary
                            .failures
                            .push(format!("{}: {}", o.action, e.message));
                    }
                }
            }
        }
    }
    for req in fake.request_log() {
        *summary
            .api_calls
            .entry(api_kind(&req.method, &req.path))
            .or_insert(0) += 1;
    }
    summary.final_machines = census(&fake).total;
    server.shutdown().await;
    print_summary(&summary, out);
    Ok(summary)
}

fn print_summary(s: &DemoSummary, out: &mut dyn Write) {
    let n = |k: ActionKind| s.actions.get(k.as_str()).copied().unwrap_or(0);
    let total: usize = s.api_calls.values().sum();
    let calls: Vec<String> = s
        .api_calls
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let mut reactions = s.reactions.clone();
    reactions.sort();
    let reaction = if reactions.is_empty() {
        "no spare was consumed".to_owned()
    } else {
        format!(
            "median {:.2}s, max {:.2}s over {} scale-out(s)",
            reactions[reactions.len() / 2].as_secs_f64(),
            reactions[reactions.len() - 1].as_secs_f64(),
            reactions.len()
        )
    };
    let _ = writeln!(out, "\nsummary");
    let _ = writeln!(
        out,
        "  autoscaler: {} ticks, {} create, {} destroy, {} start, {} stop, {} failed",
        s.ticks,
        n(ActionKind::Create),
        n(ActionKind::Destroy),
        n(ActionKind::Start),
        n(ActionKind::Stop),
        s.failed_actions
    );
    for f in &s.failures {
        let _ = writeln!(out, "    failed: {f}");
    }
    let _ = writeln!(
        out,
        "  fly proxy (simulated): {} start, {} stop",
        s.proxy_starts, s.proxy_stops
    );
    let _ = writeln!(out, "  Machines API calls: {total} ({})", calls.join(", "));
    let _ = writeln!(
        out,
        "  reaction time (spare consumed -> new spare created): {reaction}"
    );
    let _ = writeln!(
        out,
        "  machines: 1 at start, peak {} ({} started), {} at the end",
        s.peak_machines, s.peak_started, s.final_machines
    );
    let verdict = if s.scaled_out_and_in() {
        "scaled out and back in"
    } else {
        "did not scale out and back in (try a longer --duration)"
    };
    let _ = writeln!(out, "  result: {verdict}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_curve_shape() {
        assert!(traffic(0.0) < SOFT_LIMIT);
        assert!(traffic(0.4) > 10.0 * SOFT_LIMIT, "peak beyond 10 machines");
        assert!(traffic(1.0) < SOFT_LIMIT);
        assert!(traffic(0.3) > traffic(0.15));
        assert!(traffic(0.7) < traffic(0.4));
    }

    #[test]
    fn api_kinds() {
        for (method, path, kind) in [
            ("GET", "/v1/apps/a/machines", "list machines"),
            ("POST", "/v1/apps/a/machines", "create machine"),
            ("DELETE", "/v1/apps/a/machines/m1", "destroy machine"),
            ("POST", "/v1/apps/a/machines/m1/lease", "post lease"),
            ("POST", "/v1/apps", "create app"),
        ] {
            assert_eq!(api_kind(method, path), kind, "{method} {path}");
        }
    }
}
