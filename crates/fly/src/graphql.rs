//! [`FlyGraphql`]: a small client of Fly's GraphQL API, for the one fact the Machines API does
//! not give: whether a deploy (a *release*) of an app is in progress.
//!
//! # The deploy guard
//! Before every reconcile of an app, fly-autoscaler calls fly-go's
//! `Client.GetAppCurrentReleaseMachines` (`superfly/fly-go`, `resource_releases.go`):
//!
//! ```graphql
//! query ($appName: String!) {
//!   app(name: $appName) {
//!     currentRelease: currentReleaseUnprocessed {
//!       id version description reason status imageRef stable user { id email name } createdAt
//!     }
//!   }
//! }
//! ```
//!
//! On an error it logs `get current release failed` and skips the app; when `status` is
//! `running` it logs `release in progress, skipping reconciliation` and skips it
//! (`superfly/fly-autoscaler`, `reconciler_pool.go`, `monitorReconciler`).
//! [`FlyGraphql::current_release`] sends the same query, named `GetAppCurrentReleaseMachines`
//! and without `user` (never read, and one less field a scoped token might not be allowed to
//! see). `flyctl deploy` sets the status to `running` when it starts and to `complete`,
//! `failed` or `interrupted` when it ends (`superfly/flyctl`,
//! `internal/command/deploy/machines_deploymachinesapp.go`, `DeployMachinesApp`).
//!
//! An app that never had a release (its machines were created with the Machines API only)
//! answers `currentReleaseUnprocessed: null`: fly-go returns a nil `*Release` and
//! fly-autoscaler dereferences it (a nil-pointer panic). Here `null` is `Ok(None)`: no
//! release, so none in progress.
//!
//! # Endpoint and token
//! `POST {base}/graphql` with `{"query", "operationName", "variables"}` (fly-go `client.go`,
//! `NewClientFromOptions`: `fmt.Sprintf("%s/graphql", opts.BaseURL)`). The base is
//! `https://api.fly.io`: fly-autoscaler's `cmd/fly-autoscaler/main.go` hard-codes it with
//! `fly.SetBaseURL(APIBaseURL)`. fly-go itself reads no environment variable for it (only
//! `SetBaseURL` / `ClientOptions.BaseURL`); flyctl reads **`FLY_API_BASE_URL`** (`superfly/flyctl`,
//! `internal/config/config.go`, `apiBaseURLEnvKey`, default `https://api.fly.io`), and
//! [`GraphqlConfig::from_env`] honours that same variable, e.g. to point at the fake of
//! `fleetscale_fly::fake` (feature `fake`), which serves this query.
//!
//! The `Authorization` header is fly-go's `Tokens.GraphQLHeader`
//! ([`crate::token::graphql_authorization_header`]): the same token as for the Machines API.
//!
//! # Errors and retries
//! A query is a read, so every transient failure is retried with the backoff of
//! [`RetryConfig`]: 429 (honouring `Retry-After` up to [`RetryConfig::max_retry_after`]), any
//! 5xx, connection errors and timeouts. A non-empty `errors` array is
//! [`FlyError::Graphql`] (not retried; partial `data` is ignored, as fly-go does). Every
//! attempt runs under [`GraphqlConfig::timeout`]; dropping a future aborts the request.
//!
//! ```
//! # #[cfg(feature = "fake")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};
//! use fleetscale_fly::{FlyGraphql, GraphqlConfig};
//!
//! let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::instant())
//!     .await
//!     .unwrap();
//! server.fake().create_app("web", "personal");
//! // Against Fly: GraphqlConfig::from_env() (https://api.fly.io, or FLY_API_BASE_URL).
//! let gql = FlyGraphql::new(None, GraphqlConfig::default().with_base_url(server.url())).unwrap();
//! assert_eq!(gql.current_release("web").await.unwrap(), None); // never deployed
//! server.fake().set_release_status("web", Some("running"));
//! assert!(gql.current_release("web").await.unwrap().unwrap().is_running());
//! server.shutdown().await;
//! # });
//! ```

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, USER_AGENT};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use crate::client::{classify_status, fallback_message, send_once};
use crate::error::{excerpt, ApiContext, FlyError, GraphqlError};
use crate::pacing::RetryConfig;
use fleetscale_core::Token;

/// Fly's API host, the GraphQL base URL fly-autoscaler hard-codes.
pub const DEFAULT_GRAPHQL_BASE_URL: &str = "https://api.fly.io";
/// The environment variable flyctl reads to override that base URL (fly-go reads none).
pub const GRAPHQL_BASE_URL_ENV: &str = "FLY_API_BASE_URL";
/// The release status of a deploy in progress.
pub const RELEASE_RUNNING: &str = "running";

/// The deploy-guard query: fly-go's `GetAppCurrentReleaseMachines`, named, without `user`.
pub const CURRENT_RELEASE_QUERY: &str = "query GetAppCurrentReleaseMachines($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable createdAt } } }";
/// The operation name of [`CURRENT_RELEASE_QUERY`].
pub const CURRENT_RELEASE_OPERATION: &str = "GetAppCurrentReleaseMachines";

/// Settings of a [`FlyGraphql`] client.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphqlConfig {
    /// Base URL; the endpoint is `{base_url}/graphql`. Default [`DEFAULT_GRAPHQL_BASE_URL`].
    pub base_url: String,
    /// Timeout of one attempt. Default 30 s.
    pub timeout: Duration,
    /// TCP connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Retries of transient failures (a query is always safe to repeat).
    pub retry: RetryConfig,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            base_url: DEFAULT_GRAPHQL_BASE_URL.to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryConfig::default(),
            user_agent: concat!("fleetscale-fly/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl GraphqlConfig {
    /// The defaults with the base URL from `FLY_API_BASE_URL` when set and non-empty (as
    /// flyctl does).
    pub fn from_env() -> Self {
        GraphqlConfig::from_getenv(&|k| std::env::var(k).ok())
    }

    /// Like [`GraphqlConfig::from_env`] with a custom environment lookup.
    pub fn from_getenv(getenv: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut c = GraphqlConfig::default();
        if let Some(url) = getenv(GRAPHQL_BASE_URL_ENV) {
            if !url.trim().is_empty() {
                c.base_url = url.trim().to_owned();
            }
        }
        c
    }

    /// Sets the base URL.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Sets the timeout of one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// An app's current release as the deploy-guard query returns it. Every field but `status`
/// may be missing; unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// Release ID.
    #[serde(default)]
    pub id: Option<String>,
    /// Release version (`v12` in `fly releases` is 12).
    #[serde(default)]
    pub version: Option<i64>,
    /// `running` while a deploy is in progress; `complete`, `failed`, `interrupted` after.
    #[serde(default)]
    pub status: String,
    /// Free text describing the release.
    #[serde(default)]
    pub description: Option<String>,
    /// Reason, e.g. `deploy`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The image the release deployed, as the GraphQL `imageRef` field gives it.
    #[serde(default)]
    pub image_ref: Option<String>,
    /// Whether the release is stable.
    #[serde(default)]
    pub stable: Option<bool>,
    /// Creation time (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
}

impl Release {
    /// Whether a deploy is in progress (`status == "running"`, exactly as fly-autoscaler
    /// compares it).
    pub fn is_running(&self) -> bool {
        self.status == RELEASE_RUNNING
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

#[derive(Deserialize)]
struct CurrentReleaseData {
    app: Option<CurrentReleaseApp>,
}

#[derive(Deserialize)]
struct CurrentReleaseApp {
    #[serde(rename = "currentRelease", default)]
    current_release: Option<Release>,
}

/// A client of Fly's GraphQL API (queries only). Cheap to clone.
#[derive(Clone, Debug)]
pub struct FlyGraphql {
    http: reqwest::Client,
    url: Url,
    auth: Option<HeaderValue>,
    config: GraphqlConfig,
}

impl FlyGraphql {
    /// A client with `token` (`None` for unauthenticated fakes) and `config`.
    ///
    /// # Errors
    /// [`FlyError::Config`] for an invalid base URL or a token that cannot be a header value.
    pub fn new(token: Option<Token>, config: GraphqlConfig) -> Result<Self, FlyError> {
        let mut url = crate::client::parse_base_url("GraphQL base URL", &config.base_url)?;
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.push("graphql");
        }
        let auth = crate::token::header_value(token.as_ref(), true)?;
        let http = crate::client::http_client(config.connect_timeout)?;
        Ok(FlyGraphql {
            http,
            url,
            auth,
            config,
        })
    }

    /// A client with [`GraphqlConfig::from_env`].
    ///
    /// # Errors
    /// As [`FlyGraphql::new`].
    pub fn from_env(token: Option<Token>) -> Result<Self, FlyError> {
        FlyGraphql::new(token, GraphqlConfig::from_env())
    }

    /// The settings this client was built with (base URL, timeouts, retries).
    pub fn config(&self) -> &GraphqlConfig {
        &self.config
    }

    /// The endpoint, `{base}/graphql`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The current release of `app` (`currentReleaseUnprocessed`), or `None` when the app has
    /// never been released (the API answers `null`).
    ///
    /// # Errors
    /// [`FlyError::Graphql`] when the API answers `errors` (e.g. an unknown app); HTTP,
    /// transport and timeout errors as for any call; [`FlyError::MalformedBody`] when the
    /// answer has no `data.app`.
    pub async fn current_release(&self, app: &str) -> Result<Option<Release>, FlyError> {
        let data: CurrentReleaseData = self
            .query(
                Some(CURRENT_RELEASE_OPERATION),
                CURRENT_RELEASE_QUERY,
                json!({ "appName": app }),
            )
            .await?;
        match data.app {
            Some(a) => Ok(a.current_release),
            None => Err(FlyError::MalformedBody {
                ctx: self.context(200),
                excerpt: "{\"data\":{\"app\":null}}".into(),
                source: <serde_json::Error as serde::de::Error>::custom(
                    "data.app is null without errors",
                ),
            }),
        }
    }

    /// Runs a GraphQL **query** and decodes its `data` as `T`. Retried on transient failures
    /// (see the module docs), which is why mutations are refused.
    ///
    /// # Errors
    /// [`FlyError::Config`] for a mutation or subscription; [`FlyError::Graphql`] for an
    /// `errors` answer; [`FlyError::MalformedBody`] when the body or its `data` cannot be
    /// decoded; any HTTP, transport or timeout error.
    pub async fn query<T: DeserializeOwned>(
        &self,
        operation_name: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<T, FlyError> {
        let head = query.trim_start();
        if head.starts_with("mutation") || head.starts_with("subscription") {
            return Err(FlyError::Config(
                "FlyGraphql runs queries only (it retries them)".into(),
            ));
        }
        let mut body = json!({ "query": query, "variables": variables });
        if let Some(op) = operation_name {
            body["operationName"] = json!(op);
        }
        let (ctx, bytes) = self.execute(&body).await?;
        let envelope: Envelope = decode(&ctx, &bytes)?;
        if let Some(errors) = envelope.errors.filter(|e| !e.is_empty()) {
            return Err(FlyError::Graphql { ctx, errors });
        }
        let data = envelope.data.unwrap_or(Value::Null);
        serde_json::from_value(data).map_err(|source| FlyError::MalformedBody {
            ctx: ctx.clone(),
            excerpt: excerpt(&String::from_utf8_lossy(&bytes), 200),
            source,
        })
    }

    fn context(&self, status: u16) -> ApiContext {
        ApiContext {
            origin: ApiContext::origin_of(&self.url),
            method: "POST".into(),
            path: self.url.path().to_owned(),
            status,
            request_id: None,
        }
    }

    async fn execute(&self, body: &Value) -> Result<(ApiContext, Vec<u8>), FlyError> {
        let retry = &self.config.retry;
        let max_attempts = retry.max_attempts.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match self.attempt(body).await {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
            let transient = err.is_transient() || matches!(err, FlyError::Server { .. });
            if attempt >= max_attempts || !transient {
                return Err(err);
            }
            let Some(delay) = retry.delay_after(attempt, &err) else {
                return Err(err);
            };
            tracing::debug!(attempt, ?delay, error = %err, "retrying Fly GraphQL query");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: &Value) -> Result<(ApiContext, Vec<u8>), FlyError> {
        let ctx = self.context(0);
        let mut req = self
            .http
            .post(self.url.clone())
            .header(USER_AGENT, &self.config.user_agent)
            .json(body);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let (ctx, status, headers, bytes) = send_once(req, self.config.timeout, ctx).await?;
        if status.is_success() {
            return Ok((ctx, bytes));
        }
        Err(classify_status(
            ctx,
            status,
            &headers,
            error_message(status, &bytes),
        ))
    }
}

/// The message of a non-2xx GraphQL answer: its `errors` messages, else Fly's REST error
/// fields, else a body excerpt.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| serde_json::from_value::<Vec<GraphqlError>>(e.clone()).ok())
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.iter()
                .map(|x| x.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        });
    let from_rest = || {
        parsed.as_ref().and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    };
    from_errors
        .or_else(from_rest)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body))
}

fn decode<T: DeserializeOwned>(ctx: &ApiContext, body: &[u8]) -> Result<T, FlyError> {
    serde_json::from_slice(body).map_err(|source| FlyError::MalformedBody {
        ctx: ctx.clone(),
        excerpt: excerpt(&String::from_utf8_lossy(body), 200),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_base_plus_graphql() {
        let g = FlyGraphql::new(None, GraphqlConfig::default()).unwrap();
        assert_eq!(g.url().as_str(), "https://api.fly.io/graphql");
        let g = FlyGraphql::new(
            None,
            GraphqlConfig::default().with_base_url("http://127.0.0.1:9/prefix/"),
        )
        .unwrap();
        assert_eq!(g.url().as_str(), "http://127.0.0.1:9/prefix/graphql");
        for bad in ["nope", "ftp://x", "mailto:a@b"] {
            assert!(matches!(
                FlyGraphql::new(None, GraphqlConfig::default().with_base_url(bad)),
                Err(FlyError::Config(_))
            ));
        }
    }

    #[test]
    fn env_override_is_flyctls_variable() {
        let c = GraphqlConfig::from_getenv(&|k| {
            (k == "FLY_API_BASE_URL").then(|| " http://localhost:1 ".to_owned())
        });
        assert_eq!(c.base_url, "http://localhost:1");
        let c = GraphqlConfig::from_getenv(&|_| Some("  ".to_owned()));
        assert_eq!(c.base_url, DEFAULT_GRAPHQL_BASE_URL);
    }

    #[test]
    fn release_decoding_is_tolerant() {
        let r: Release = serde_json::from_value(json!({
            "id": "rel_1", "version": 7, "status": "running", "imageRef": "registry.fly.io/a:1",
            "stable": false, "createdAt": "2024-05-01T10:00:00Z", "somethingNew": 1
        }))
        .unwrap();
        assert!(r.is_running());
        assert_eq!(r.version, Some(7));
        assert_eq!(r.image_ref.as_deref(), Some("registry.fly.io/a:1"));
        let done: Release = serde_json::from_value(json!({"status": "complete"})).unwrap();
        assert!(!done.is_running());
        let d: CurrentReleaseData =
            serde_json::from_value(json!({"app": {"currentRelease": null}})).unwrap();
        assert_eq!(d.app.unwrap().current_release, None);
    }

    #[test]
    fn non_2xx_messages_prefer_graphql_errors() {
        let m = error_message(
            StatusCode::UNAUTHORIZED,
            br#"{"errors":[{"message":"You must be authenticated"},{"message":"again"}]}"#,
        );
        assert_eq!(m, "You must be authenticated; again");
        let m = error_message(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(m, "<html>bad gateway</html>");
        let m = error_message(StatusCode::FORBIDDEN, br#"{"error":"nope"}"#);
        assert_eq!(m, "nope");
    }

    #[test]
    fn mutations_are_refused_and_token_hidden() {
        let g = FlyGraphql::new(
            Some(Token::new("FlyV1 fm2_topsecret")),
            GraphqlConfig::default(),
        )
        .unwrap();
        assert!(!format!("{g:?}").contains("topsecret"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(g.query::<Value>(None, "mutation { x }", Value::Null))
            .unwrap_err();
        assert!(matches!(e, FlyError::Config(_)), "{e}");
    }
}
