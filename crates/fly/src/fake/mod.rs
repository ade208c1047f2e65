//! A fake Fly Machines API (feature `fake`): an HTTP server with Fly's endpoints, state machine,
//! leases, rate limits and error bodies, plus fault injection and a request log for tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};
//! let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::default()).await?;
//! println!("FLY_FLAPS_BASE_URL={}", server.url());
//! // ... point a MachinesClient (or flyctl/fly-go via FLY_FLAPS_BASE_URL) at it ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What it models (and how faithfully)
//! - Endpoints: apps (`GET /v1/apps?org_slug=`, `POST /v1/apps`, `GET /v1/apps/{app}`),
//!   machines list (`include_deleted`, `region`, `state`, `summary`, `metadata.*`), get,
//!   create (`config`, `region`, `name`, `skip_launch`, `lease_ttl`), start, stop, suspend,
//!   destroy (`force`/`kill`), wait (`state`, `timeout` ≤ 60 s, 408 on timeout), leases
//!   (`fly-machine-lease-nonce`), cordon/uncordon, `/metrics` (OpenMetrics text) with
//!   `fly_instance_up{app,region,instance} 1` per started machine, and `POST /graphql` for
//!   an app's current release (fly-go's `GetAppCurrentReleaseMachines`, the deploy guard's
//!   query; see [`FakeFly::set_release_status`]; the token there is checked in its GraphQL
//!   form). Faults match `/graphql` like any other path; it is not rate limited.
//! - States: `created → starting → started` on create (`skip_launch` stays `created`),
//!   `starting → started` on start, `stopping → stopped`, `suspending → suspended`,
//!   `destroying → destroyed`, each transition taking [`Delays`]. Operations the current state
//!   does not allow answer 412 `unable to <op> machine from current state: '<state>'` (the
//!   wording of Fly's `failed_precondition` errors), e.g. starting a started machine or
//!   destroying a running one without `force`/`kill`.
//! - Leases: a mutation of a leased machine without its nonce answers 409
//!   `{"error":"aborted: machine ID … lease currently held by …, expires at …"}`.
//! - Rate limits per action and machine (or app for create/list), answering 429 with
//!   `Retry-After` (seconds) when [`FakeConfig::rate_limits`] is set.
//! - Errors use Fly's body `{"error": "...", "status": "..."}` and every answer carries a
//!   `fly-request-id` header.
//!
//! The HTTP status of `insufficient_capacity` is not documented; the fake answers 412 with
//! `status: "insufficient_capacity"` (clients classify by the body's `status`, as fly-go does).

mod graphql;
mod server;
mod state;

use crate::types::{CreateAppRequest, CreateMachineRequest};
use crate::{FlyError, FlyMachine, MachinesClient};

pub use server::FakeFlyServer;
pub use state::{
    Delays, FakeConfig, FakeFly, FakeRateLimits, FakeRelease, Fault, FaultKind, RequestRecord,
};

/// Creates the app `app` of the organization `org` and its first machine (`config` in
/// `region`) through `client`, with the requests a user's `fly launch` sends: how tests give
/// the fake (or Fly) an app to scale.
///
/// # Errors
/// The client's, when a request fails.
pub async fn seed_app(
    client: &MachinesClient,
    org: &str,
    app: &str,
    config: serde_json::Value,
    region: &str,
) -> Result<FlyMachine, FlyError> {
    client
        .create_app(&CreateAppRequest {
            app_name: app.into(),
            org_slug: org.into(),
            network: None,
        })
        .await?;
    client
        .create_machine(
            app,
            &CreateMachineRequest {
                config,
                region: Some(region.into()),
                ..Default::default()
            },
        )
        .await
}
