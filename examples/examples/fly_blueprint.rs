//! Fly's "Autoscale Machines" blueprint, end to end on the fake Machines API: keep one spare
//! stopped machine beyond those running (`min(running_machines + 1, 10)`), so Fly Proxy can
//! start it on the next burst; never more than 10.
//!
//! `cargo run -p fleetscale-examples --example fly_blueprint`
//!
//! `running_machines` is `count(fly_instance_up{app='$APP_NAME'})`. With the Debian
//! `prometheus` package installed, a real Prometheus scrapes the fake's `/metrics` and the
//! example queries it, exactly as in production against `https://api.fly.io/prometheus/<org>`;
//! otherwise a built-in source counts the same series on the fake's page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::{InitialState, MetricSource, Scope};
use fleetscale_fly::fake::{FakeConfig, FakeFly, FakeFlyServer};
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
use fleetscale_fly::{ClientConfig, FlyScaler, FlyScalerConfig, FlyState, MachinesClient, Token};
use fleetscale_metrics::harness::PrometheusServer;
use fleetscale_metrics::{PrometheusConfig, PrometheusSource};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const APP: &str = "blueprint-app";
const QUERY: &str = "count(fly_instance_up{app='$APP_NAME'})";

/// The built-in stand-in for Prometheus: counts `fly_instance_up` series of the app on the
/// fake's metrics page.
struct InstanceUp(FakeFly);

#[async_trait]
impl MetricSource for InstanceUp {
    fn name(&self) -> &str {
        "running_machines"
    }
    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        let prefix = format!("fly_instance_up{{app=\"{}\"", scope.target);
        Ok(self
            .0
            .metrics_text()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count() as f64)
    }
}

fn census(fake: &FakeFly) -> (usize, usize, Vec<String>) {
    let ms = fake.machines(APP);
    let started = ms.iter().filter(|m| m.state == FlyState::Started).count();
    let spare = ms
        .iter()
        .filter(|m| matches!(m.state, FlyState::Created | FlyState::Stopped))
        .map(|m| m.id.clone())
        .collect();
    (ms.len(), started, spare)
}

async fn wait(fake: &FakeFly, total: usize, started: usize) -> Result<Vec<String>, BoxError> {
    let t0 = Instant::now();
    loop {
        let (t, s, spare) = census(fake);
        if t == total && s == started {
            return Ok(spare);
        }
        if t > 10 {
            return Err(format!("more than 10 machines: {t}").into());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "timed out waiting for {total} machines ({started} started); have {t} ({s})"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the scenario; returns the machine counts after each proxy start and whether a real
/// Prometheus was used.
pub async fn run() -> Result<(Vec<usize>, bool), BoxError> {
    let token = "FlyV1 fm2_example";
    let server = FakeFlyServer::bind(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            token: Some(Token::new(token)),
            ..FakeConfig::default()
        },
    )
    .await?;
    let fake = server.fake().clone();
    let client = MachinesClient::new(
        Some(Token::new(token)),
        ClientConfig::default().with_base_url(server.url()),
    )?;
    // `fly apps create` and the first machine of `fly deploy`, as raw Machines API calls.
    client
        .create_app(&CreateAppRequest {
            app_name: APP.into(),
            org_slug: "personal".into(),
            network: None,
        })
        .await?;
    client
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: serde_json::json!({
                    "image": "registry.fly.io/blueprint-app:deployment-1",
                    "services": [{"protocol": "tcp", "internal_port": 8080,
                        "autostop": "stop", "autostart": true,
                        "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
                    "metadata": {"fly_process_group": "app"}
                }),
                region: Some("iad".into()),
                ..Default::default()
            },
        )
        .await?;
    wait(&fake, 1, 1).await?;

    // A real Prometheus when installed, else the built-in source.
    let prometheus = if fleetscale_metrics::harness::prometheus_binary().is_ok() {
        Some(PrometheusServer::start(&[server.addr()]).await?)
    } else {
        None
    };
    let source: Arc<dyn MetricSource> = match &prometheus {
        Some(p) => {
            println!("Prometheus at {} scrapes the fake every second", p.url());
            Arc::new(PrometheusSource::new(PrometheusConfig::new(
                "running_machines",
                p.url(),
                QUERY,
            ))?)
        }
        None => {
            println!("prometheus not installed: counting fly_instance_up on the fake's page");
            Arc::new(InstanceUp(fake.clone()))
        }
    };

    let scaler = Arc::new(FlyScaler::new(client, FlyScalerConfig::new(APP))?);
    let policy = Policy {
        created: CountRule::from_settings(
            "created",
            Some("min(running_machines + 1, 10)"),
            None,
            None,
        )?,
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new(APP), scaler, policy)
        .with_source(source)
        .with_initial_state(InitialState::Stopped);
    target.validate()?;
    let engine = Arc::new(Engine::new(
        EngineConfig::default().with_interval(Duration::from_millis(250)),
        Arc::new(vec![target]),
    ));
    let stop = CancellationToken::new();
    let task = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop.cancelled_owned()).await })
    };

    let mut totals = Vec::new();
    let mut spare = wait(&fake, 2, 1).await?;
    println!("1 machine running -> the autoscaler created 1 spare, stopped: {spare:?}");
    for total in 3..=10 {
        // Traffic arrives: the proxy starts the spare; a new spare appears.
        fake.proxy_autostart(APP, &spare[0]);
        spare = wait(&fake, total, total - 1).await?;
        println!(
            "proxy started a spare -> {total} machines, {} running, 1 spare",
            total - 1
        );
        totals.push(total);
    }
    fake.proxy_autostart(APP, &spare[0]);
    wait(&fake, 10, 10).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t, s, _) = census(&fake);
    println!("all {s} running: target min(10 + 1, 10) = 10, still {t} machines (the cap)");
    totals.push(t);
    stop.cancel();
    task.await??;
    server.shutdown().await;
    Ok((totals, prometheus.is_some()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await.map(|_| ())
}
