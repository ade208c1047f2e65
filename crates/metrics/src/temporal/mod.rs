//! [`TemporalSource`]: the number of running workflow executions of a Temporal namespace, read
//! with `CountWorkflowExecutions` on the frontend's gRPC API (`WorkflowService`).
//!
//! What fly-autoscaler v0.3.2 does (`temporal/temporal.go`, with `go.temporal.io/sdk` v1.26),
//! and what we do:
//! - `client.Dial` with the address (`host:port`) and namespace, then at every collect
//!   `CountWorkflow` with the query `ExecutionStatus="Running"` (and `AND (<query>)` when one is
//!   configured), `$APP_NAME` expanded per app ([`query`]). The count is the `count` field of
//!   `CountWorkflowExecutionsResponse`.
//! - The SDK's `Dial` first calls `GetSystemInfo` (5 s) and keeps the server's capabilities;
//!   `Unimplemented` is ignored. We make that call too, once, before the first count (lazily:
//!   a server that is down at start is a failed metric for that tick, not a failed start), and
//!   use its `internal_error_differentiation` capability as the SDK does.
//! - TLS when a client certificate or key is set (`tls.X509KeyPair`, server verified against
//!   the system roots, which honour `SSL_CERT_FILE`), plaintext otherwise. Ours in addition: a
//!   CA bundle ([`TemporalConfig::ca`]), an API key (`authorization: Bearer …`, which turns TLS
//!   on unless `tls = false`, as the SDK's `NewAPIKeyStaticCredentials`), an explicit `tls`
//!   switch and `server_name`.
//! - Every request carries `temporal-namespace: <namespace>` (the SDK's header, used by
//!   Temporal Cloud to route).
//! - Deadline and retries as the SDK's `newGRPCContext` / `defaultGrpcRetryParameters`: one
//!   deadline for the whole read (the bin passes the Go value, half the reconcile timeout
//!   clamped to 1–10 s), sent to the server as `grpc-timeout`; `Unavailable`,
//!   `ResourceExhausted`, `Aborted`, `Unknown` and (unless the server differentiates internal
//!   errors) `Internal` retried after 200 ms × 2ⁿ, at most a tenth of the deadline, ±20 % jitter,
//!   within the deadline. We also bound the attempts ([`TemporalConfig::attempts`]).

pub mod query;
mod status;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{MetricSource, Scope};
use serde::{Deserialize, Serialize};
use temporalio_protos::temporal::api::workflowservice::v1::{
    workflow_service_client::WorkflowServiceClient, CountWorkflowExecutionsRequest,
    GetSystemInfoRequest,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{MetricsError, Token};
pub use query::QueryError;

/// The default deadline of one read, retries included: 10 s, the Go SDK's `maxRPCTimeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of attempts of one call (the first and two retries).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// TCP and TLS connection deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The gRPC method paths the source calls (and the fake server answers).
pub const COUNT_PATH: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions";
/// See [`COUNT_PATH`].
pub const SYSTEM_INFO_PATH: &str = "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo";

/// The Go SDK's `retryServiceOperationInitialInterval`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The Go SDK's `getSystemInfoTimeout`.
const SYSTEM_INFO_TIMEOUT: Duration = Duration::from_secs(5);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_attempts() -> u32 {
    DEFAULT_ATTEMPTS
}

/// Configuration of a [`TemporalSource`], loadable from TOML or YAML.
///
/// ```
/// use fleetscale_metrics::TemporalConfig;
/// let cfg: TemporalConfig = toml::from_str(r#"
///     name = "workflows"
///     address = "my-ns.a1b2c.tmprl.cloud:7233"
///     namespace = "my-ns.a1b2c"
///     query = "TaskQueue = '$APP_NAME'"
///     api_key = "eyJhbGciOi..."
///     timeout = "5s"
/// "#).unwrap();
/// assert_eq!(format!("{:?}", cfg.api_key), "Some(<redacted>)");
/// assert!(cfg.tls_enabled());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalConfig {
    /// The variable name the value gets in expressions (an identifier).
    pub name: String,
    /// The frontend's gRPC address: `host:port` (as fly-autoscaler and the Temporal SDKs take
    /// it), or `http://host:port` / `https://host:port` (`https` turns TLS on).
    pub address: String,
    /// The namespace whose workflows are counted (required, as in fly-autoscaler).
    pub namespace: String,
    /// An extra visibility filter, combined as `ExecutionStatus="Running" AND (<query>)`;
    /// empty counts every running execution. `$APP_NAME` and the other scope variables are
    /// expanded at every collect. Must have balanced parentheses and closed literals.
    #[serde(default)]
    pub query: String,
    /// The client certificate chain (PEM), for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// A file holding [`TemporalConfig::cert`] (read when the source is built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM). A secret: never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Token>,
    /// A file holding [`TemporalConfig::key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that verify the server, instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A file holding [`TemporalConfig::ca`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate must carry, when it is not the address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Forces TLS on or off. By default TLS is on when the address is `https://…` or any of
    /// the certificate, key, CA or API key is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// A Temporal Cloud API key, sent as `authorization: Bearer <key>`. A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Token>,
    /// The deadline of one read, retries included (default 10 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per call, at least 1 (default 3): retries of transient failures.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Also expand `$VAR` in the query from the process environment, after the scope's
    /// variables (fly-autoscaler does). Off by default.
    #[serde(default)]
    pub expand_env: bool,
}

impl TemporalConfig {
    /// A plaintext configuration with every option at its default.
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        TemporalConfig {
            name: name.into(),
            address: address.into(),
            namespace: namespace.into(),
            query: String::new(),
            cert: None,
            cert_file: None,
            key: None,
            key_file: None,
            ca: None,
            ca_file: None,
            server_name: None,
            tls: None,
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            expand_env: false,
        }
    }

    /// Sets the client certificate and key (PEM) for mutual TLS.
    pub fn with_client_cert(mut self, cert: impl Into<String>, key: impl Into<Token>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Whether the channel uses TLS, by the rule of [`TemporalConfig::tls`].
    pub fn tls_enabled(&self) -> bool {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.trim().is_empty());
        let token = |t: &Option<Token>| t.as_ref().is_some_and(|t| !t.is_empty());
        self.tls.unwrap_or_else(|| {
            self.address.trim().starts_with("https://")
                || set(&self.cert)
                || self.cert_file.is_some()
                || token(&self.key)
                || self.key_file.is_some()
                || set(&self.ca)
                || self.ca_file.is_some()
                || token(&self.api_key)
        })
    }
}

setters! { TemporalConfig {
    /// Sets the visibility filter.
    with_query(query: impl Into<String>) = query.into();
    /// Sets the CA certificates (PEM) that verify the server.
    with_ca(ca: impl Into<String>) = Some(ca.into());
    /// Sets the API key.
    with_api_key(api_key: impl Into<Token>) = Some(api_key.into());
    /// Sets the TLS server name.
    with_server_name(server_name: impl Into<String>) = Some(server_name.into());
    /// Forces TLS on or off.
    with_tls(tls: bool) = Some(tls);
    /// Sets the deadline of one read.
    with_timeout(timeout: Duration) = timeout;
    /// Sets the attempts per call.
    with_attempts(attempts: u32) = attempts;
    /// Turns environment expansion of the query on or off.
    with_expand_env(expand_env: bool) = expand_env;
}}

/// Host and port of an address in any of the accepted forms.
fn split_address(address: &str) -> Option<(String, u16)> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    if rest.contains('/') {
        return None;
    }
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port))
}

fn read_file(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// A [`MetricSource`] that counts the running workflow executions of a Temporal namespace.
///
/// # Behaviour
/// See the [module docs](self): `GetSystemInfo` once, then `CountWorkflowExecutions` with
/// `ExecutionStatus="Running" AND (<query>)` (query expanded per scope), within one deadline,
/// transient failures retried with backoff and jitter. The connection is made on the first
/// read and re-established by the channel when it breaks. Dropping the future cancels the call.
///
/// # Errors
/// [`MetricsError::Timeout`] when the deadline passes, [`MetricsError::Temporal`] for a gRPC
/// status (class by code: `Unavailable`, `ResourceExhausted`, `Aborted`, `Internal`, `Unknown`,
/// `DeadlineExceeded` → [`fleetscale_core::Error::Unavailable`]; `PermissionDenied`,
/// `Unauthenticated` → `Unauthorized`; `NotFound` (namespace not found) → `NotFound`;
/// `InvalidArgument` (a bad query) → `InvalidRequest`), [`MetricsError::InvalidResponse`] for a
/// negative count.
///
/// # Example
/// ```no_run
/// use fleetscale_core::{MetricSource, Scope};
/// use fleetscale_metrics::{TemporalConfig, TemporalSource};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let source = TemporalSource::new(
///     TemporalConfig::new("workflows", "localhost:7233", "default")
///         .with_query("TaskQueue = '$APP_NAME'"),
/// )?;
/// let running = source.collect(&Scope::new("my-app")).await?;
/// # let _ = running; Ok(()) }
/// ```
pub struct TemporalSource {
    config: TemporalConfig,
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    shown: String,
    namespace_header: AsciiMetadataValue,
    authorization: Option<AsciiMetadataValue>,
    /// `Some(internal_error_differentiation)` once `GetSystemInfo` answered.
    capabilities: OnceLock<bool>,
    init: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TemporalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalSource")
            .field("name", &self.config.name)
            .field("address", &self.shown)
            .field("namespace", &self.config.namespace)
            .field("query", &self.config.query)
            .field("tls", &self.config.tls_enabled())
            .field("api_key", &self.config.api_key)
            .finish_non_exhaustive()
    }
}

impl TemporalSource {
    /// Checks the configuration, reads the certificate files and prepares the channel (no
    /// connection is made until the first read).
    ///
    /// # Errors
    /// [`MetricsError::Config`], whose message is fly-autoscaler's where it has one:
    /// `temporal address required`, `temporal namespace required`, the messages of Go's
    /// `tls.X509KeyPair` for the certificate and key; ours for a name that is not an
    /// identifier, an address that is not `host:port`, a query with unbalanced parentheses or an
    /// unclosed literal, an unreadable file, a CA bundle with no certificate, a zero timeout or
    /// zero attempts, a key or API key that cannot be a gRPC header.
    pub fn new(config: TemporalConfig) -> Result<Self, MetricsError> {
        let bad = crate::config_errors(&config.name)?;
        let address = config.address.trim();
        if address.is_empty() {
            return Err(bad("temporal address required".into()));
        }
        if config.namespace.is_empty() {
            return Err(bad("temporal namespace required".into()));
        }
        let (host, port) = split_address(address).ok_or_else(|| {
            bad(format!(
                "temporal address {address:?} must be host:port (or http(s)://host:port)"
            ))
        })?;
        query::check(&config.query)
            .map_err(|e| bad(format!("temporal query {:?}: {e}", config.query)))?;
        if config.timeout.is_zero() {
            return Err(bad("`timeout` must be greater than zero".into()));
        }
        if config.attempts == 0 {
            return Err(bad("`attempts` must be at least 1".into()));
        }
        let tls = config.tls_enabled();
        if !tls && address.starts_with("https://") {
            return Err(bad(
                "an https:// address needs TLS, but `tls` is false".into()
            ));
        }
        let scheme = if tls { "https" } else { "http" };
        let host_in_uri = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let shown = format!("{scheme}://{host_in_uri}:{port}");

        let mut endpoint = Endpoint::from_shared(shown.clone())
            .map_err(|e| bad(format!("temporal address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // The Go SDK's keepalive: ping every 30 s, 15 s to answer, also while idle.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(15))
            .keep_alive_while_idle(true)
            .user_agent(concat!("fleetscale/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| bad(format!("user agent: {e}")))?;

        let text = |inline: &Option<String>,
                    file: &Option<PathBuf>,
                    what: &str|
         -> Result<Option<String>, MetricsError> {
            match (inline.as_deref().filter(|s| !s.trim().is_empty()), file) {
                (Some(_), Some(_)) => Err(bad(format!(
                    "set either `{what}` or `{what}_file`, not both"
                ))),
                (Some(s), None) => Ok(Some(s.to_owned())),
                (None, Some(path)) => read_file(path, what).map(Some).map_err(bad),
                (None, None) => Ok(None),
            }
        };
        let cert = text(&config.cert, &config.cert_file, "cert")?;
        let key_inline = config
            .key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|k| k.expose().to_owned());
        let key = text(&key_inline, &config.key_file, "key")?;
        let ca = text(&config.ca, &config.ca_file, "ca")?;

        if tls {
            let mut tc = ClientTlsConfig::new().domain_name(
                config
                    .server_name
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| host.clone()),
            );
            match &ca {
                Some(ca) => {
                    tls::ca_roots(ca).map_err(|m| bad(format!("temporal ca: {m}")))?;
                    tc = tc.ca_certificate(Certificate::from_pem(ca));
                }
                None => tc = tc.with_native_roots(),
            }
            // Go: `if len(c.Cert) != 0 || len(c.Key) != 0 { tls.X509KeyPair(...) }`.
            if cert.is_some() || key.is_some() {
                let pair =
                    tls::key_pair(cert.as_deref().unwrap_or(""), key.as_deref().unwrap_or(""))
                        .map_err(bad)?;
                tc = tc.identity(Identity::from_pem(pair.cert_pem, pair.key_pem));
            }
            endpoint = endpoint
                .tls_config(tc)
                .map_err(|e| bad(format!("TLS configuration: {}", status::chain(&e))))?;
        } else if cert.is_some() || key.is_some() || ca.is_some() {
            return Err(bad(
                "a certificate, key or CA is set, but `tls` is false".into()
            ));
        }

        let namespace_header = AsciiMetadataValue::try_from(config.namespace.as_str())
            .map_err(|_| bad("the namespace cannot be a gRPC header value".into()))?;
        let authorization = match config.api_key.as_ref().filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => {
                let mut v: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {}", k.expose())).map_err(|_| {
                        bad("`api_key` contains characters not allowed in a gRPC header".into())
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(TemporalSource {
            config,
            endpoint,
            channel: OnceLock::new(),
            shown,
            namespace_header,
            authorization,
            capabilities: OnceLock::new(),
            init: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings this source was built with (address, namespace, query, TLS).
    pub fn config(&self) -> &TemporalConfig {
        &self.config
    }

    /// The endpoint URI the channel connects to (`http://…` or `https://…`).
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// The visibility query as it would be sent for `scope`.
    pub fn expanded_query(&self, scope: &Scope) -> String {
        query::build(&self.config.query, scope, self.config.expand_env)
    }

    /// Reads the count for `scope`. See the type's docs for behaviour and errors.
    pub async fn read(&self, scope: &Scope) -> Result<i64, MetricsError> {
        let deadline = Instant::now() + self.config.timeout;
        let timeout = || MetricsError::Timeout {
            metric: self.config.name.clone(),
            operation: format!("temporal CountWorkflowExecutions at {}", self.shown),
            after: self.config.timeout,
        };
        match tokio::time::timeout_at(deadline, self.run(scope, deadline)).await {
            // The channel enforces the `grpc-timeout` we send and may notice first: its
            // `CANCELLED: Timeout expired` is our deadline too.
            Err(_) => Err(timeout()),
            Ok(Err(MetricsError::Temporal {
                code: "CANCELLED" | "DEADLINE_EXCEEDED",
                ..
            })) if Instant::now() >= deadline => Err(timeout()),
            Ok(r) => r,
        }
    }

    /// Like [`TemporalSource::read`], but returns [`MetricsError::Cancelled`] as soon as
    /// `cancel` fires (the call is dropped).
    pub async fn read_with_cancel(
        &self,
        scope: &Scope,
        cancel: &CancellationToken,
    ) -> Result<i64, MetricsError> {
        tokio::select! {
            r = self.read(scope) => r,
            () = cancel.cancelled() => Err(MetricsError::Cancelled { metric: self.config.name.clone() }),
        }
    }

    fn client(&self) -> WorkflowServiceClient<Channel> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        WorkflowServiceClient::new(channel)
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(timeout);
        r.metadata_mut()
            .insert("temporal-namespace", self.namespace_header.clone());
        if let Some(auth) = &self.authorization {
            r.metadata_mut().insert("authorization", auth.clone());
        }
        r
    }

    async fn run(&self, scope: &Scope, deadline: Instant) -> Result<i64, MetricsError> {
        // An environment value may have unbalanced the filter: refuse to send it.
        let filter = crate::expand::expand(&self.config.query, scope, self.config.expand_env);
        query::check(&filter).map_err(|e| MetricsError::Config {
            metric: self.config.name.clone(),
            message: format!("temporal query {filter:?} after expansion: {e}"),
        })?;
        let query = self.expanded_query(scope);
        let differentiates = self.ensure_initialized(deadline).await?;
        tracing::debug!(metric = %self.config.name, target = %scope.target, %query, "temporal count");
        let request = CountWorkflowExecutionsRequest {
            namespace: self.config.namespace.clone(),
            query: query.clone(),
        };
        let answer = self
            .with_retries(
                "CountWorkflowExecutions",
                deadline,
                differentiates,
                |timeout| {
                    let mut client = self.client();
                    let request = self.request(request.clone(), timeout);
                    async move { client.count_workflow_executions(request).await }
                },
            )
            .await
            .map_err(|s| {
                status::error(
                    &self.config.name,
                    "CountWorkflowExecutions",
                    &self.shown,
                    &self.config.namespace,
                    &query,
                    s,
                )
            })?;
        let count = answer.into_inner().count;
        if count < 0 {
            return Err(MetricsError::InvalidResponse {
                metric: self.config.name.clone(),
                context: format!("temporal CountWorkflowExecutions at {}", self.shown),
                message: format!("negative count {count}"),
                source: None,
            });
        }
        Ok(count)
    }

    /// `GetSystemInfo` until it has answered once; returns whether the server differentiates
    /// internal errors (then `Internal` is not retried).
    async fn ensure_initialized(&self, deadline: Instant) -> Result<bool, MetricsError> {
        if let Some(d) = self.capabilities.get() {
            return Ok(*d);
        }
        let _guard = self.init.lock().await;
        if let Some(d) = self.capabilities.get() {
            return Ok(*d);
        }
        let deadline = deadline.min(Instant::now() + SYSTEM_INFO_TIMEOUT);
        let mut client = self.client();
        let request = self.request(
            GetSystemInfoRequest {},
            deadline.saturating_duration_since(Instant::now()),
        );
        let answer = tokio::time::timeout_at(deadline, client.get_system_info(request)).await;
        let differentiates = match answer {
            Err(_) => {
                return Err(MetricsError::Timeout {
                    metric: self.config.name.clone(),
                    operation: format!("temporal GetSystemInfo at {}", self.shown),
                    after: SYSTEM_INFO_TIMEOUT.min(self.config.timeout),
                })
            }
            Ok(Ok(info)) => info
                .into_inner()
                .capabilities
                .is_some_and(|c| c.internal_error_differentiation),
            // The SDK ignores Unimplemented (servers older than GetSystemInfo).
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => false,
            Ok(Err(s)) => {
                return Err(status::error(
                    &self.config.name,
                    "GetSystemInfo",
                    &self.shown,
                    &self.config.namespace,
                    "",
                    s,
                ))
            }
        };
        let _ = self.capabilities.set(differentiates);
        Ok(differentiates)
    }

    /// Runs `call` until it succeeds, fails with a non-retryable code, runs out of attempts, or
    /// the next backoff would pass `deadline`. `call` gets the time left, for `grpc-timeout`.
    async fn with_retries<T, F, Fut>(
        &self,
        name: &str,
        deadline: Instant,
        differentiates: bool,
        mut call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let max_backoff = (self.config.timeout / 10).max(INITIAL_BACKOFF);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match call(left).await {
                Ok(v) => return Ok(v),
                Err(s) => s,
            };
            if !status::retryable(status.code(), differentiates) || attempt >= self.config.attempts
            {
                return Err(status);
            }
            let wait = backoff(attempt - 1, max_backoff);
            if Instant::now() + wait >= deadline {
                return Err(status);
            }
            tracing::debug!(
                metric = %self.config.name,
                call = name,
                code = ?status.code(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "temporal call failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// The Go SDK's backoff before retry `n` (0-based): `200 ms × 2ⁿ`, at most `max`, then
/// ±20 % jitter (`backoffutils.JitterUp`).
pub(crate) fn backoff(n: u32, max: Duration) -> Duration {
    let base = INITIAL_BACKOFF
        .saturating_mul(2u32.saturating_pow(n.min(16)))
        .min(max);
    base.mul_f64(rand::random_range(0.8..=1.2))
}

#[async_trait]
impl MetricSource for TemporalSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        // Counts are far below 2^53: exact as f64.
        Ok(self.read(scope).await? as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            split_address("localhost:7233"),
            Some(("localhost".into(), 7233))
        );
        assert_eq!(
            split_address("https://ns.tmprl.cloud:7233/"),
            Some(("ns.tmprl.cloud".into(), 7233))
        );
        assert_eq!(split_address("[::1]:7233"), Some(("::1".into(), 7233)));
        assert_eq!(split_address("localhost"), None);
        assert_eq!(split_address("http://h:1/x"), None);
        assert_eq!(split_address(":7233"), None);
    }

    #[test]
    fn go_messages_for_missing_settings() {
        let msg = |c: TemporalConfig| match TemporalSource::new(c).unwrap_err() {
            MetricsError::Config { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(TemporalConfig::new("w", "", "default")),
            "temporal address required"
        );
        assert_eq!(
            msg(TemporalConfig::new("w", "localhost:7233", "")),
            "temporal namespace required"
        );
        assert!(msg(TemporalConfig::new("w", "localhost", "default")).contains("host:port"));
        assert!(
            msg(TemporalConfig::new("w", "localhost:1", "default").with_query("a) OR (b"))
                .contains("column 2")
        );
        assert!(
            msg(TemporalConfig::new("w", "localhost:1", "d").with_attempts(0)).contains("attempts")
        );
        assert!(
            msg(TemporalConfig::new("w", "https://h:1", "d").with_tls(false)).contains("https")
        );
        assert_eq!(
            msg(TemporalConfig::new("w", "localhost:1", "d").with_client_cert("junk", "")),
            "tls: failed to find any PEM data in certificate input"
        );
    }

    #[test]
    fn tls_rule() {
        let c = TemporalConfig::new("w", "localhost:7233", "default");
        assert!(!c.tls_enabled());
        assert!(c.clone().with_api_key("k").tls_enabled());
        assert!(!c.clone().with_api_key("k").with_tls(false).tls_enabled());
        assert!(TemporalConfig::new("w", "https://h:1", "d").tls_enabled());
        assert!(c.clone().with_ca("x").tls_enabled());
    }

    #[test]
    fn backoff_follows_the_go_sdk() {
        let max = Duration::from_secs(1);
        for n in 0..8 {
            let want = (INITIAL_BACKOFF * 2u32.pow(n)).min(max);
            let got = backoff(n, max);
            assert!(
                got >= want.mul_f64(0.8) && got <= want.mul_f64(1.2),
                "{n}: {got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c =
            TemporalConfig::new("w", "localhost:7233", "default").with_api_key("sekret-api-key");
        let s = TemporalSource::new(c.with_tls(false)).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("sekret"), "{shown}");
        assert!(shown.contains("http://localhost:7233"), "{shown}");
    }
}
