//! Shared helpers of the integration tests: a fake server on a free loopback port and a client
//! pointed at it.
#![allow(dead_code)]

use std::time::Duration;

use fleetscale_fly::fake::{Delays, FakeConfig, FakeFly, FakeFlyServer, Fault, FaultKind};
use fleetscale_fly::{
    ClientConfig, FlyMachine, FlyState, MachinesClient, PacingConfig, RetryConfig, Token,
};
use serde_json::{json, Value};

/// The app the tests seed and scale.
pub const APP: &str = "web";

pub async fn server(config: FakeConfig) -> FakeFlyServer {
    FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("bind fake")
}

/// A fake with no rate limits whose transitions take `delays`.
pub async fn server_with_delays(delays: Delays) -> FakeFlyServer {
    server(FakeConfig {
        delays,
        ..FakeConfig::instant()
    })
    .await
}

/// A fault answering `status` with `body`.
pub fn status_fault(status: u16, body: &str) -> Fault {
    Fault::new(FaultKind::Status {
        status,
        body: body.into(),
    })
}

/// Polls until machine `id` of [`APP`] is in `state` on the fake.
pub async fn wait_state(fake: &FakeFly, id: &str, state: FlyState) {
    eventually(&format!("{id} {state}"), || async {
        fake.state(APP, id) == Some(state.clone())
    })
    .await;
}

/// Four attempts, 10 ms to 100 ms apart, a `Retry-After` of up to 5 s honoured.
pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    }
}

/// Fast retries, no client pacing, generous timeout.
pub fn client_config(server: &FakeFlyServer) -> ClientConfig {
    ClientConfig {
        base_url: server.url(),
        timeout: Duration::from_secs(20),
        retry: fast_retry(),
        pacing: PacingConfig::disabled(),
        ..ClientConfig::default()
    }
}

pub fn client(server: &FakeFlyServer) -> MachinesClient {
    MachinesClient::new(Some(Token::new("FlyV1 fm2_test")), client_config(server)).unwrap()
}

pub fn app_config(group: Option<&str>) -> Value {
    let mut c = json!({
        "image": "registry.fly.io/web:deployment-1",
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "suspend", "autostart": true,
                      "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
        "env": {"FOO": "bar"},
        "a_field_from_the_future": {"keep": ["me", 1]},
        "metadata": {"fly_release_id": "rel-1", "fly_release_version": "3"}
    });
    if let Some(g) = group {
        c["metadata"]["fly_process_group"] = json!(g);
    }
    c
}

/// Creates an app and its first machine with the same requests a user sends to Fly.
pub async fn seed_app(client: &MachinesClient, app: &str, group: Option<&str>) -> FlyMachine {
    fleetscale_fly::fake::seed_app(client, "my-org", app, app_config(group), "ams")
        .await
        .expect("create the app and its first machine")
}

/// Polls until `f` holds (generous timeout for loaded CI machines).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
