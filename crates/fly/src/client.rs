//! [`MachinesClient`]: a typed, paced, retrying client of the Fly Machines API.
//!
//! # Retries
//! Transient failures (429, 502/503/504, connection errors, client-side timeouts) are retried
//! with exponential backoff and full jitter ([`RetryConfig`]), honouring `Retry-After` on 429
//! up to [`RetryConfig::max_retry_after`], **only** for calls that are safe to repeat:
//! every `GET` (list, get, wait, get lease, apps), `start`, `stop`, `suspend`, `cordon`,
//! `uncordon`, lease refresh and release (they carry the nonce), and `destroy` when it carries
//! a lease nonce (a repeated destroy of the same leased machine cannot hit another machine and
//! answers 404 once it is gone).
//!
//! **`create` is retried only when answered 429**, never after any other error: a create whose
//! answer was lost (timeout, connection dropped after the request was sent) or that failed on
//! the server side (5xx: the machine may exist) may have created a machine, and repeating it
//! would overshoot. A 429 is different: it is the rate limiter's refusal, given *instead of*
//! executing the request (RFC 6585 §4: the client "has sent too many requests in a given
//! amount of time"; Fly documents per-action limits for the Machines API, and the fake answers
//! 429 before touching its state), so the create did not happen and repeating it after
//! `Retry-After` cannot create twice. It is retried like any other call: up to
//! [`RetryConfig::max_attempts`], waiting `Retry-After` (a longer wait than
//! [`RetryConfig::max_retry_after`] is returned to the caller instead) or the backoff without
//! one, paced again. A 429 whose body says `insufficient_capacity` is a capacity error, not
//! retried. fly-autoscaler's create loop retried forever on any error without decrementing its
//! counter (`reconciler.go` `createN`, PR #37 closed unmerged), spinning on capacity, auth or
//! timeout errors; here any other failed create is returned to the caller once and the next
//! tick re-reads the inventory. Lease *acquisition* and app creation are not retried (a lost
//! answer would leave us unable to use what we got, or create twice).
//!
//! # Timeouts and cancellation
//! Every attempt runs under [`ClientConfig::timeout`] (for `wait`, the wait timeout plus that).
//! All methods are cancel-safe in the Rust sense: dropping the returned future at any `.await`
//! (e.g. in a `tokio::select!` with a shutdown signal, or under `tokio::time::timeout`) aborts
//! the HTTP request and any backoff sleep and leaves no client state behind. The *server*
//! may still have executed a request whose answer was not awaited; the next `list` shows it.
//!
//! # Pacing
//! See [`PacingConfig`]: token buckets per (action, machine) and per app for create.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::error::{excerpt, ApiContext, FlyError};
use crate::pacing::{Limiter, Paced, PacingConfig, Rate, RetryConfig};
use crate::types::{
    App, AppList, CreateAppRequest, CreateMachineRequest, ErrorBody, FlyMachine, Lease,
    LeaseEnvelope, ListOptions, StartResponse, StopRequest, WaitResponse,
};
use fleetscale_core::Token;

/// The public Machines API.
pub const DEFAULT_BASE_URL: &str = "https://api.machines.dev";
/// The environment variable fly-go reads to override the base URL.
pub const BASE_URL_ENV: &str = "FLY_FLAPS_BASE_URL";
/// The header that carries a lease's nonce on calls to a leased machine.
pub const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";
/// The request ID header Fly sets on every answer.
pub const REQUEST_ID_HEADER: &str = "fly-request-id";
/// The longest `wait` the API accepts (fly-go clamps to 60 s because of proxy timeouts).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Settings of a [`MachinesClient`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Base URL, default [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Timeout of one attempt of one call. Default 30 s.
    pub timeout: Duration,
    /// TCP connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// Client-side pacing.
    pub pacing: PacingConfig,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryConfig::default(),
            pacing: PacingConfig::default(),
            user_agent: concat!("fleetscale-fly/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientConfig {
    /// The defaults with the base URL taken from `FLY_FLAPS_BASE_URL` when set and non-empty,
    /// as fly-go does.
    pub fn from_env() -> Self {
        let mut c = ClientConfig::default();
        if let Ok(url) = std::env::var(BASE_URL_ENV) {
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
}

/// Options of `DELETE …/machines/{id}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestroyOptions {
    /// `?force=true`: kill the machine if it is running (documented parameter).
    pub force: bool,
    /// `?kill=true`: what fly-go and `fly machine destroy --force` send.
    pub kill: bool,
}

/// Options of `GET …/wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Target state: `started`, `stopped`, `suspended` or `destroyed`.
    pub state: String,
    /// Server-side wait, clamped to 1..=60 s.
    pub timeout: Duration,
    /// Instance ID (`version`/`instance_id`); required by Fly for `stopped`.
    pub instance_id: Option<String>,
}

impl WaitOptions {
    /// Wait for `state` for up to `timeout`.
    pub fn new(state: impl Into<String>, timeout: Duration) -> Self {
        WaitOptions {
            state: state.into(),
            timeout,
            instance_id: None,
        }
    }

    /// Sets the instance ID.
    pub fn with_instance_id(mut self, id: Option<String>) -> Self {
        self.instance_id = id;
        self
    }
}

/// Whether a call may be repeated after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Any transient failure ([`FlyError::is_transient`]).
    Idempotent,
    /// Only a 429 (the request was refused, not executed): creates.
    RateLimitedOnly,
    /// Never.
    Never,
}

struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Value>,
    nonce: Option<String>,
    retry: Retry,
    pace: Option<(&'static str, String, Rate)>,
    timeout: Duration,
}

/// A client of the Fly Machines API. Cheap to clone (shares its connection pool and limiter).
#[derive(Clone, Debug)]
pub struct MachinesClient {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    config: ClientConfig,
    limiter: std::sync::Arc<Limiter>,
}

/// Parses an API's base URL (`what` names it in the error): absolute, `http` or `https`, a
/// trailing `/` dropped so that path segments append cleanly.
pub(crate) fn parse_base_url(what: &str, raw: &str) -> Result<Url, FlyError> {
    let url = Url::parse(raw.trim_end_matches('/'))
        .map_err(|e| FlyError::Config(format!("invalid {what} {raw:?}: {e}")))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(FlyError::Config(format!(
            "invalid {what} {raw:?}: must be http(s)"
        )));
    }
    Ok(url)
}

/// The HTTP client both Fly APIs use: reqwest's defaults with the configured connect timeout
/// (each call sets its own overall timeout).
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, FlyError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| FlyError::Config(format!("cannot build HTTP client: {e}")))
}

impl MachinesClient {
    /// A client with `token` (may be `None` for unauthenticated fakes) and `config`.
    ///
    /// # Errors
    /// [`FlyError::Config`] for an invalid base URL or a token that cannot be a header value.
    pub fn new(token: Option<Token>, config: ClientConfig) -> Result<Self, FlyError> {
        let base = parse_base_url("base URL", &config.base_url)?;
        let auth = crate::token::header_value(token.as_ref(), false)?;
        let http = http_client(config.connect_timeout)?;
        Ok(MachinesClient {
            http,
            base,
            auth,
            config,
            limiter: Default::default(),
        })
    }

    /// A client with the default config, its base URL from `FLY_FLAPS_BASE_URL` when set
    /// (see [`ClientConfig::from_env`]).
    ///
    /// # Errors
    /// As [`MachinesClient::new`].
    pub fn from_env(token: Option<Token>) -> Result<Self, FlyError> {
        MachinesClient::new(token, ClientConfig::from_env())
    }

    /// The settings this client was built with (base URL, timeouts, retries, pacing).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// A call of `method` on the path `segments`, paced by `pace`: idempotent, with no query,
    /// body or nonce, bounded by the configured timeout. Callers change what differs.
    fn call(
        &self,
        method: Method,
        segments: &[&str],
        pace: Option<(&'static str, String, Rate)>,
    ) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            nonce: None,
            retry: Retry::Idempotent,
            pace,
            timeout: self.config.timeout,
        }
    }

    fn machine_call(&self, method: Method, app: &str, id: &str, tail: &[&str]) -> Call {
        let mut call = self.call(method, &["v1", "apps", app, "machines", id], None);
        call.segments.extend(tail.iter().map(|s| (*s).to_owned()));
        call
    }

    /// `POST …/{id}/{action}` with the lease nonce when given, paced as `pace_key` among the
    /// machine's actions.
    fn action_call(
        &self,
        app: &str,
        id: &str,
        action: &str,
        pace_key: &'static str,
        nonce: Option<&str>,
    ) -> Call {
        let mut call = self.machine_call(Method::POST, app, id, &[action]);
        call.nonce = nonce.map(str::to_owned);
        call.pace = self.action_pace(pace_key, id);
        call
    }

    fn action_pace(&self, action: &'static str, id: &str) -> Option<(&'static str, String, Rate)> {
        Some((action, id.to_owned(), self.config.pacing.machine_action))
    }

    /// `GET /v1/apps/{app}/machines` with filters.
    ///
    /// # Errors
    /// Any [`FlyError`]; 404 when the app does not exist.
    pub async fn list_machines(
        &self,
        app: &str,
        options: &ListOptions,
    ) -> Result<Vec<FlyMachine>, FlyError> {
        let mut call = self.call(
            Method::GET,
            &["v1", "apps", app, "machines"],
            Some(("list", app.to_owned(), self.config.pacing.app_action)),
        );
        call.query = options.query();
        self.json(call).await
    }

    /// `GET /v1/apps/{app}/machines/{id}`.
    ///
    /// # Errors
    /// [`FlyError::NotFound`] when the machine does not exist; any other [`FlyError`].
    pub async fn get_machine(&self, app: &str, id: &str) -> Result<FlyMachine, FlyError> {
        let mut call = self.machine_call(Method::GET, app, id, &[]);
        call.pace = Some(("get", id.to_owned(), self.config.pacing.get_machine));
        self.json(call).await
    }

    /// `POST /v1/apps/{app}/machines`. **Retried only when answered 429** (not executed; see
    /// the module docs); never after a 5xx, a timeout or a connection error.
    ///
    /// # Errors
    /// [`FlyError::InsufficientCapacity`], [`FlyError::NameTaken`],
    /// [`FlyError::InvalidRequest`], any other [`FlyError`].
    pub async fn create_machine(
        &self,
        app: &str,
        request: &CreateMachineRequest,
    ) -> Result<FlyMachine, FlyError> {
        let body = serde_json::to_value(request)
            .map_err(|e| FlyError::Config(format!("cannot encode create request: {e}")))?;
        let mut call = self.call(
            Method::POST,
            &["v1", "apps", app, "machines"],
            Some(("create", app.to_owned(), self.config.pacing.create)),
        );
        call.body = Some(body);
        call.retry = Retry::RateLimitedOnly;
        self.json(call).await
    }

    /// `POST …/{id}/start`, with the lease nonce when given.
    ///
    /// # Errors
    /// [`FlyError::PreconditionFailed`] when the state does not allow a start (e.g. already
    /// started, replacing); [`FlyError::LeaseConflict`]; any other [`FlyError`].
    pub async fn start_machine(
        &self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<StartResponse, FlyError> {
        let call = self.action_call(app, id, "start", "start", nonce);
        self.json_or_default(call).await
    }

    /// `POST …/{id}/stop` with optional signal and timeout.
    ///
    /// # Errors
    /// As [`MachinesClient::start_machine`].
    pub async fn stop_machine(
        &self,
        app: &str,
        id: &str,
        request: &StopRequest,
        nonce: Option<&str>,
    ) -> Result<(), FlyError> {
        let mut call = self.action_call(app, id, "stop", "stop", nonce);
        call.body = Some(serde_json::to_value(request).unwrap_or(Value::Null));
        self.empty(call).await
    }

    /// `POST …/{id}/suspend`.
    ///
    /// # Errors
    /// As [`MachinesClient::start_machine`].
    pub async fn suspend_machine(
        &self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<(), FlyError> {
        self.empty(self.action_call(app, id, "suspend", "suspend", nonce))
            .await
    }

    /// `DELETE …/{id}` (`?force=true` / `?kill=true` per `options`). Retried on transient
    /// errors only when a lease nonce is given.
    ///
    /// # Errors
    /// [`FlyError::NotFound`] when already gone; [`FlyError::LeaseConflict`]; any other.
    pub async fn destroy_machine(
        &self,
        app: &str,
        id: &str,
        options: DestroyOptions,
        nonce: Option<&str>,
    ) -> Result<(), FlyError> {
        let mut call = self.machine_call(Method::DELETE, app, id, &[]);
        if options.force {
            call.query.push(("force".into(), "true".into()));
        }
        if options.kill {
            call.query.push(("kill".into(), "true".into()));
        }
        call.nonce = nonce.map(str::to_owned);
        call.retry = if nonce.is_some() {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        call.pace = self.action_pace("destroy", id);
        self.empty(call).await
    }

    /// `GET …/{id}/wait?state=…&timeout=…`. The timeout is clamped to 1..=60 s (the API's
    /// maximum); the HTTP timeout of the call is the wait plus [`ClientConfig::timeout`].
    ///
    /// # Errors
    /// [`FlyError::WaitTimeout`] (408) when the state was not reached in time; any other.
    pub async fn wait_machine(
        &self,
        app: &str,
        id: &str,
        options: &WaitOptions,
    ) -> Result<WaitResponse, FlyError> {
        let secs = options.timeout.as_secs().clamp(1, MAX_WAIT.as_secs());
        let mut call = self.machine_call(Method::GET, app, id, &["wait"]);
        call.query.push(("state".into(), options.state.clone()));
        call.query.push(("timeout".into(), secs.to_string()));
        if let Some(instance) = &options.instance_id {
            call.query.push(("instance_id".into(), instance.clone()));
        }
        call.timeout = Duration::from_secs(secs) + self.config.timeout;
        call.pace = self.action_pace("wait", id);
        self.json_or_default(call).await.map_err(|e| match e {
            FlyError::WaitTimeout { ctx, message, .. } => FlyError::WaitTimeout {
                ctx,
                message,
                wait_secs: secs,
            },
            e => e,
        })
    }

    /// `POST …/{id}/lease` with `{ttl, description}`: acquires a lease. Not retried.
    ///
    /// # Errors
    /// [`FlyError::LeaseConflict`] when someone else holds it; any other.
    pub async fn acquire_lease(
        &self,
        app: &str,
        id: &str,
        ttl: Duration,
        description: Option<&str>,
    ) -> Result<Lease, FlyError> {
        let mut call = self.machine_call(Method::POST, app, id, &["lease"]);
        let mut body = serde_json::json!({ "ttl": ttl.as_secs().max(1) });
        if let Some(d) = description {
            body["description"] = Value::String(d.to_owned());
        }
        call.body = Some(body);
        call.retry = Retry::Never;
        call.pace = self.action_pace("lease", id);
        self.lease(call).await
    }

    /// `POST …/{id}/lease` with the nonce header: refreshes our lease.
    ///
    /// # Errors
    /// [`FlyError::LeaseConflict`] when the nonce is not the holder's; any other.
    pub async fn refresh_lease(
        &self,
        app: &str,
        id: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<Lease, FlyError> {
        let mut call = self.machine_call(Method::POST, app, id, &["lease"]);
        call.body = Some(serde_json::json!({ "ttl": ttl.as_secs().max(1) }));
        call.nonce = Some(nonce.to_owned());
        call.pace = self.action_pace("lease", id);
        self.lease(call).await
    }

    /// `GET …/{id}/lease`: the current lease.
    ///
    /// # Errors
    /// [`FlyError::NotFound`] when there is no lease (Fly answers 404); any other.
    pub async fn get_lease(&self, app: &str, id: &str) -> Result<Lease, FlyError> {
        let mut call = self.machine_call(Method::GET, app, id, &["lease"]);
        call.pace = Some(("get", id.to_owned(), self.config.pacing.get_machine));
        self.lease(call).await
    }

    /// `DELETE …/{id}/lease` with the nonce header.
    ///
    /// # Errors
    /// [`FlyError::LeaseConflict`] for a wrong nonce; any other.
    pub async fn release_lease(&self, app: &str, id: &str, nonce: &str) -> Result<(), FlyError> {
        let mut call = self.machine_call(Method::DELETE, app, id, &["lease"]);
        call.nonce = Some(nonce.to_owned());
        call.pace = self.action_pace("lease", id);
        self.empty(call).await
    }

    /// `POST …/{id}/cordon`: the proxy stops routing to the machine.
    ///
    /// # Errors
    /// Any [`FlyError`].
    pub async fn cordon(&self, app: &str, id: &str, nonce: Option<&str>) -> Result<(), FlyError> {
        self.empty(self.action_call(app, id, "cordon", "cordon", nonce))
            .await
    }

    /// `POST …/{id}/uncordon`.
    ///
    /// # Errors
    /// Any [`FlyError`].
    pub async fn uncordon(&self, app: &str, id: &str, nonce: Option<&str>) -> Result<(), FlyError> {
        self.empty(self.action_call(app, id, "uncordon", "cordon", nonce))
            .await
    }

    /// `GET /v1/apps?org_slug=…`: the apps of an organization.
    ///
    /// # Errors
    /// Any [`FlyError`].
    pub async fn list_apps(&self, org_slug: &str) -> Result<AppList, FlyError> {
        let mut call = self.call(
            Method::GET,
            &["v1", "apps"],
            Some(("apps", org_slug.to_owned(), self.config.pacing.app_action)),
        );
        call.query = vec![("org_slug".into(), org_slug.to_owned())];
        self.json(call).await
    }

    /// `POST /v1/apps` with `{app_name, org_slug}`. Not retried. Fly answers 201 with little
    /// or no body; the returned [`App`] is filled from the answer where present and from the
    /// request otherwise.
    ///
    /// # Errors
    /// [`FlyError::NameTaken`] / [`FlyError::InvalidRequest`]; any other.
    pub async fn create_app(&self, request: &CreateAppRequest) -> Result<App, FlyError> {
        let body = serde_json::to_value(request)
            .map_err(|e| FlyError::Config(format!("cannot encode create app request: {e}")))?;
        let mut call = self.call(
            Method::POST,
            &["v1", "apps"],
            Some((
                "create_app",
                request.org_slug.clone(),
                self.config.pacing.create,
            )),
        );
        call.body = Some(body);
        call.retry = Retry::Never;
        let mut app: App = self.json_or_default(call).await?;
        if app.name.is_empty() {
            app.name = request.app_name.clone();
        }
        Ok(app)
    }

    /// `GET /v1/apps/{app}`.
    ///
    /// # Errors
    /// [`FlyError::NotFound`]; any other.
    pub async fn get_app(&self, app: &str) -> Result<App, FlyError> {
        let call = self.call(
            Method::GET,
            &["v1", "apps", app],
            Some(("get_app", app.to_owned(), self.config.pacing.app_action)),
        );
        self.json(call).await
    }

    async fn lease(&self, call: Call) -> Result<Lease, FlyError> {
        let (ctx, body) = self.execute(call).await?;
        let env: LeaseEnvelope = decode(&ctx, &body)?;
        match env.data {
            Some(lease) => Ok(lease),
            None => {
                // Some answers carry the lease at the top level.
                let lease: Lease = decode(&ctx, &body)?;
                Ok(lease)
            }
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, FlyError> {
        let (ctx, body) = self.execute(call).await?;
        decode(&ctx, &body)
    }

    /// Decodes the body, or returns `T::default()` for an empty body.
    async fn json_or_default<T: DeserializeOwned + Default>(
        &self,
        call: Call,
    ) -> Result<T, FlyError> {
        let (ctx, body) = self.execute(call).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        decode(&ctx, &body)
    }

    /// Ignores the body of a successful answer, but still rejects one that is not JSON (a
    /// proxy's HTML page is not a success).
    async fn empty(&self, call: Call) -> Result<(), FlyError> {
        let (ctx, body) = self.execute(call).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let _: Value = decode(&ctx, &body)?;
        Ok(())
    }

    /// Runs a call with pacing, timeout and retries; returns the 2xx body.
    async fn execute(&self, call: Call) -> Result<(ApiContext, Vec<u8>), FlyError> {
        let mut url = self.base.clone();
        {
            // `cannot_be_a_base` was rejected in `new`, so this cannot fail.
            if let Ok(mut segs) = url.path_segments_mut() {
                segs.pop_if_empty();
                segs.extend(call.segments.iter());
            }
        }
        let path = url.path().to_owned();
        let retry_cfg = &self.config.retry;
        let max_attempts = match call.retry {
            Retry::Idempotent | Retry::RateLimitedOnly => retry_cfg.max_attempts.max(1),
            Retry::Never => 1,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut paced = None;
            if self.config.pacing.enabled {
                if let Some((action, scope, rate)) = &call.pace {
                    let rate = self.config.pacing.paced(*rate);
                    paced = Some(self.limiter.acquire(action, scope, rate).await);
                }
            }
            let result = self.attempt(&call, &url, &path, paced).await;
            let err = match result {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
            let retryable = match call.retry {
                Retry::Idempotent => err.is_transient(),
                Retry::RateLimitedOnly => matches!(err, FlyError::RateLimited { .. }),
                Retry::Never => false,
            };
            if attempt >= max_attempts || !retryable {
                return Err(err);
            }
            let Some(delay) = retry_cfg.delay_after(attempt, &err) else {
                return Err(err);
            };
            tracing::debug!(
                method = %call.method, path = %path, attempt, ?delay, error = %err,
                "retrying Machines API call"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        url: &Url,
        path: &str,
        paced: Option<Paced>,
    ) -> Result<(ApiContext, Vec<u8>), FlyError> {
        let ctx = ApiContext {
            origin: ApiContext::origin_of(url),
            method: call.method.as_str().into(),
            path: path.to_owned(),
            status: 0,
            request_id: None,
        };
        let mut req = self
            .http
            .request(call.method.clone(), url.clone())
            .header(USER_AGENT, &self.config.user_agent);
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(nonce) = &call.nonce {
            req = req.header(LEASE_NONCE_HEADER, nonce);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let sent = send_once(req, call.timeout, ctx).await;
        if let (Some(paced), Some((action, scope, _))) = (paced, &call.pace) {
            // Answered or failed, the server counted the call (if at all) no later than now;
            // learnt before a refusal or headers below, which then only lower the bucket.
            self.limiter.answered(action, scope, paced);
        }
        let (ctx, status, headers, body) = sent?;
        if let Some((action, scope, rate)) =
            call.pace.as_ref().filter(|_| self.config.pacing.enabled)
        {
            // The server's word on its limit beats the client's estimate (see `pacing`).
            let rate = self.config.pacing.paced(*rate);
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.limiter
                    .refused(action, scope, rate, retry_after(&headers));
            } else {
                self.limiter.observe(action, scope, rate, &headers);
            }
        }
        if status.is_success() {
            Ok((ctx, body))
        } else {
            Err(classify(ctx, status, &headers, &body))
        }
    }
}

fn decode<T: DeserializeOwned>(ctx: &ApiContext, body: &[u8]) -> Result<T, FlyError> {
    serde_json::from_slice(body).map_err(|source| FlyError::MalformedBody {
        ctx: ctx.clone(),
        excerpt: excerpt(&String::from_utf8_lossy(body), 200),
        source,
    })
}

/// The `Retry-After` header: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::time::parse_http_date(v)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Turns a non-2xx answer into a [`FlyError`]. The body's `status` field wins over the HTTP
/// code for `insufficient_capacity` and `name_taken` (as in fly-go `flaps_error.go`).
fn classify(ctx: ApiContext, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> FlyError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.error.clone().or_else(|| b.message.clone()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));
    match parsed.as_ref().and_then(|b| b.status.as_deref()) {
        Some("insufficient_capacity") => return FlyError::InsufficientCapacity { ctx, message },
        Some("name_taken") => return FlyError::NameTaken { ctx, message },
        _ => {}
    }
    classify_status(ctx, status, headers, message)
}

/// The message of an error answer without a usable JSON message: a body excerpt, or the
/// status's reason phrase for an empty body.
pub(crate) fn fallback_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        excerpt(text.trim(), 200)
    }
}

/// The [`FlyError`] of a non-2xx status, by the status alone.
pub(crate) fn classify_status(
    ctx: ApiContext,
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
) -> FlyError {
    match status.as_u16() {
        400 | 422 => FlyError::InvalidRequest { ctx, message },
        401 | 403 => FlyError::Unauthorized { ctx, message },
        404 => FlyError::NotFound { ctx, message },
        408 => FlyError::WaitTimeout {
            ctx,
            message,
            wait_secs: 0,
        },
        409 => FlyError::LeaseConflict { ctx, message },
        412 => FlyError::PreconditionFailed { ctx, message },
        429 => FlyError::RateLimited {
            retry_after: retry_after(headers),
            ctx,
            message,
        },
        500..=599 => FlyError::Server { ctx, message },
        _ => FlyError::UnexpectedStatus { ctx, message },
    }
}

/// Sends one request and reads its whole body within `timeout`, filling `ctx` with the status
/// and `fly-request-id`. Transport failures and the deadline become [`FlyError::Transport`] and
/// [`FlyError::Timeout`]; the status is left for the caller to classify. Shared by the Machines
/// API client and the GraphQL client.
pub(crate) async fn send_once(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    mut ctx: ApiContext,
) -> Result<
    (
        ApiContext,
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        Vec<u8>,
    ),
    FlyError,
> {
    let fut = async {
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await;
        Ok::<_, reqwest::Error>((status, headers, bytes))
    };
    let (status, headers, bytes) = match tokio::time::timeout(timeout, fut).await {
        Err(_) => {
            return Err(FlyError::Timeout {
                ctx,
                after: timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(FlyError::Transport {
                ctx,
                source: e.without_url(),
            })
        }
        Ok(Ok(v)) => v,
    };
    ctx.status = status.as_u16();
    ctx.request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(Into::into);
    match bytes {
        Ok(b) => Ok((ctx, status, headers, b.to_vec())),
        Err(e) => Err(FlyError::Transport {
            ctx,
            source: e.without_url(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(status: u16) -> ApiContext {
        ApiContext {
            origin: "https://api.machines.dev".into(),
            method: "POST".into(),
            path: "/v1/apps/a/machines".into(),
            status,
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn classification() {
        let h = HeaderMap::new();
        let cap = classify(
            ctx(412),
            StatusCode::PRECONDITION_FAILED,
            &h,
            br#"{"error":"no capacity in iad","status":"insufficient_capacity"}"#,
        );
        assert!(
            matches!(cap, FlyError::InsufficientCapacity { .. }),
            "{cap}"
        );
        assert_eq!(cap.request_id(), Some("req-1"));
        let taken = classify(
            ctx(409),
            StatusCode::CONFLICT,
            &h,
            br#"{"error":"name taken","status":"name_taken"}"#,
        );
        assert!(matches!(taken, FlyError::NameTaken { .. }));
        let html = classify(
            ctx(502),
            StatusCode::BAD_GATEWAY,
            &h,
            b"<html>bad gateway</html>",
        );
        assert!(matches!(html, FlyError::Server { .. }));
        assert!(html.is_transient());
        let e500 = classify(ctx(500), StatusCode::INTERNAL_SERVER_ERROR, &h, b"");
        assert!(!e500.is_transient());
        let mut h2 = HeaderMap::new();
        h2.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        match classify(ctx(429), StatusCode::TOO_MANY_REQUESTS, &h2, b"{}") {
            FlyError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn retry_after_http_date() {
        let mut h = HeaderMap::new();
        let at = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&crate::time::format_http_date(at)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = MachinesClient::new(
            Some(Token::new("FlyV1 fm2_topsecret")),
            ClientConfig::default(),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
    }

    #[test]
    fn bad_base_urls() {
        for bad in ["not a url", "mailto:x@y", "ftp://host"] {
            let cfg = ClientConfig::default().with_base_url(bad);
            assert!(matches!(
                MachinesClient::new(None, cfg),
                Err(FlyError::Config(_))
            ));
        }
    }
}
