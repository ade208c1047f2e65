//! # fleetscale-fly
//!
//! The Fly.io backend of fleetscale:
//! - [`MachinesClient`]: a typed client of the Fly Machines API (machines, leases, wait,
//!   cordon, apps) with fly-go's token rules, typed errors carrying `fly-request-id`, tolerant
//!   decoding, pacing to Fly's documented rate limits and retries of idempotent calls only;
//! - [`FlyScaler`]: the core `Scaler` for one app and process group, with an optional deploy
//!   guard that pauses it while a release is in progress;
//! - [`FlyGraphql`]: the one GraphQL query that guard needs (the app's current release);
//! - [`AppDiscovery`]: the apps of an organization matching a wildcard, refreshed;
//! - `fake` (feature `fake`): a fake Machines API HTTP server (with the release query of the
//!   GraphQL API) for tests, demos and `fleetscale fake fly`.
//!
//! ```
//! # #[cfg(feature = "fake")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use fleetscale_core::{CreateRequest, Scaler};
//! use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};
//! use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
//! use fleetscale_fly::{ClientConfig, FlyScaler, FlyScalerConfig, Token, MachinesClient};
//!
//! // A fake Machines API on a free port (against Fly, use ClientConfig::from_env()).
//! let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::instant())
//!     .await
//!     .unwrap();
//! let token = Token::new("FlyV1 fm2_example");
//! let client =
//!     MachinesClient::new(Some(token), ClientConfig::default().with_base_url(server.url()))
//!         .unwrap();
//! // An app and its first machine, created exactly as against Fly.
//! let app = CreateAppRequest { app_name: "demo".into(), org_slug: "personal".into(), network: None };
//! client.create_app(&app).await.unwrap();
//! let config = serde_json::json!({"image": "registry.fly.io/demo:v1", "metadata": {"fly_process_group": "app"}});
//! client
//!     .create_machine("demo", &CreateMachineRequest { config, ..Default::default() })
//!     .await
//!     .unwrap();
//!
//! // The scaler clones it.
//! let scaler = FlyScaler::new(client, FlyScalerConfig::new("demo")).unwrap();
//! scaler.create(&CreateRequest::default()).await.unwrap();
//! assert_eq!(scaler.list().await.unwrap().len(), 2);
//! server.shutdown().await;
//! # });
//! ```
//!
//! Facts about the API come from `superfly/fly-go`, Fly's docs and fly-autoscaler, summarised
//! in the project's `shared/reference/fly-machines-and-fly-autoscaler.md`.

pub mod apps;
pub mod client;
mod discovery;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod graphql;
pub mod pacing;
mod scaler;
mod time;
pub mod token;
pub mod types;

pub use client::{ClientConfig, DestroyOptions, MachinesClient, WaitOptions};
pub use discovery::{AppDiscovery, Wildcard};
pub use error::{ApiContext, FlyError, GraphqlError};
/// The workspace's API token type (redacted in `Debug`, `Display` and serialised form);
/// [`token`] has Fly's header rules for it.
pub use fleetscale_core::Token;
pub use graphql::{FlyGraphql, GraphqlConfig, Release};
pub use pacing::{PacingConfig, Rate, RetryConfig};
pub use scaler::{
    DestroyPolicy, FlyScaler, FlyScalerConfig, DEFAULT_LEASE_TTL, DEFAULT_PROCESS_GROUP,
    RELEASE_IN_PROGRESS,
};
pub use time::{format_http_date, format_rfc3339, parse_http_date, parse_rfc3339};
pub use types::{Autostop, FlyMachine, FlyState, ImageRef, ListOptions};
