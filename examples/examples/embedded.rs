//! The engine inside an existing tokio application: next to an axum HTTP server, sharing its
//! runtime, exposing its last decisions on `/autoscaler`, and stopping gracefully with it.
//!
//! `cargo run -p fleetscale-examples --example embedded` (runs a short scripted scenario,
//! then shuts down as it would on SIGTERM).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::testing::{FakeScaler, StaticMetric, Transitions};
use fleetscale_core::{MachineState, Scope};
use tokio_util::sync::CancellationToken;

/// The application's own state, with the engine in it.
#[derive(Clone)]
pub struct AppState {
    /// The autoscaler.
    pub engine: Arc<Engine>,
}

async fn autoscaler(State(st): State<AppState>) -> Json<serde_json::Value> {
    let d: Vec<serde_json::Value> = st
        .engine
        .last_decisions()
        .iter()
        .map(|r| {
            serde_json::json!({
                "target": r.target,
                "tick": r.tick,
                "status": r.status.as_str(),
                "counts": r.counts,
                "targets": r.decision.as_ref().map(|d| d.targets),
            })
        })
        .collect();
    Json(serde_json::Value::Array(d))
}

/// Runs the app (HTTP server + engine) until `shutdown` fires, then stops both: the server
/// stops accepting, the engine finishes the ticks in flight. Returns the server's address
/// through `ready` as soon as it listens.
pub async fn serve(
    shutdown: CancellationToken,
    load: Arc<StaticMetric>,
    fleet: Arc<FakeScaler>,
    ready: tokio::sync::oneshot::Sender<std::net::SocketAddr>,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let policy = Policy {
        created: CountRule::from_settings(
            "created",
            Some("max(1, ceil(load / 20)) + 1"),
            None,
            None,
        )?,
        started: CountRule::from_settings("started", Some("max(1, ceil(load / 20))"), None, None)?,
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new("embedded-app"), fleet, policy).with_source(load);
    target.validate()?;
    let engine = Arc::new(Engine::new(
        EngineConfig::default().with_interval(Duration::from_millis(100)),
        Arc::new(vec![target]),
    ));

    let app = Router::new()
        .route("/", get(|| async { "hello from the application\n" }))
        .route("/autoscaler", get(autoscaler))
        .with_state(AppState {
            engine: engine.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let _ = ready.send(listener.local_addr()?);
    let server = {
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        })
    };
    let autoscaler = {
        let engine = engine.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { engine.run(token.cancelled_owned()).await })
    };
    server.await??;
    autoscaler.await??;
    Ok(engine.last_decisions().first().map_or(0, |r| r.tick))
}

/// The scripted scenario: load rises and falls while a client polls `/autoscaler`, then the
/// app shuts down. Returns the started counts seen after each load step.
pub async fn run() -> Result<Vec<u32>, Box<dyn std::error::Error + Send + Sync>> {
    let fleet = Arc::new(
        FakeScaler::new()
            .with_transitions(Transitions::AfterLists(1))
            .with_machines(1, MachineState::Started),
    );
    let load = Arc::new(StaticMetric::new("load", 10.0));
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = tokio::spawn(serve(shutdown.clone(), load.clone(), fleet.clone(), tx));
    let addr = rx.await?;
    println!("application listening on http://{addr} (engine running beside it)");
    let mut seen = Vec::new();
    for l in [10.0, 90.0, 30.0] {
        load.set(l);
        // Wait for the fleet to settle on ceil(load / 20) started machines.
        let want = ((l / 20.0_f64).ceil() as u32).max(1);
        for _ in 0..200 {
            let started = fleet
                .machines()
                .iter()
                .filter(|m| m.state == MachineState::Started)
                .count() as u32;
            if started == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = tokio::net::TcpStream::connect(addr).await.is_ok();
        let started = fleet
            .machines()
            .iter()
            .filter(|m| m.state == MachineState::Started)
            .count() as u32;
        println!("load {l:>3}: {started} started (server up: {body})");
        seen.push(started);
    }
    shutdown.cancel(); // what a SIGTERM handler would do
    let ticks = app.await??;
    println!("shut down gracefully after {ticks} ticks");
    Ok(seen)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    run().await.map(|_| ())
}
