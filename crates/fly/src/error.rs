//! [`FlyError`]: every way a Machines API call can fail, and its mapping onto the core
//! error classes.

use std::fmt;
use std::time::Duration;

use fleetscale_core::Error as CoreError;

/// Where an API answer came from: enough to find the call in Fly's logs, never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiContext {
    /// Scheme, host and port of the API, e.g. `https://api.machines.dev` (no credentials, no
    /// path), so that a message names the server it could not reach. (A boxed `str` keeps
    /// every [`FlyError`] small.)
    pub origin: Box<str>,
    /// HTTP method, e.g. `POST`.
    pub method: Box<str>,
    /// Request path without the query, e.g. `/v1/apps/my-app/machines`.
    pub path: String,
    /// HTTP status code (0 when no answer was received).
    pub status: u16,
    /// The `fly-request-id` response header, when present.
    pub request_id: Option<Box<str>>,
}

impl ApiContext {
    /// `scheme://host[:port]` of `url`, for [`ApiContext::origin`].
    pub fn origin_of(url: &url::Url) -> Box<str> {
        let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        if let Some(port) = url.port() {
            origin.push_str(&format!(":{port}"));
        }
        origin.into()
    }
}

impl fmt::Display for ApiContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}{}", self.method, self.origin, self.path)?;
        if self.status != 0 {
            write!(f, " -> {}", self.status)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (fly-request-id {id})")?;
        }
        Ok(())
    }
}

/// One entry of a GraphQL answer's `errors` array (GraphQL spec, section 7.1.2 "Errors"):
/// `message`, optional `path` and `extensions` (Fly's API puts a `code` there; which codes it
/// uses is not documented).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphqlError {
    /// The error's text, as the server wrote it.
    #[serde(default)]
    pub message: String,
    /// The response path of the field that failed, e.g. `["app"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<serde_json::Value>,
    /// Server-specific details, e.g. `{"code": "NOT_FOUND"}`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extensions: serde_json::Value,
}

impl GraphqlError {
    /// An error with `message` and no path or extensions.
    pub fn new(message: impl Into<String>) -> Self {
        GraphqlError {
            message: message.into(),
            ..GraphqlError::default()
        }
    }

    /// `extensions.code`, when it is a string.
    pub fn code(&self) -> Option<&str> {
        self.extensions.get("code")?.as_str()
    }
}

impl fmt::Display for GraphqlError {
    /// The message, then the code and path when present: `Could not find App "x" (NOT_FOUND
    /// at app)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let path: Vec<String> = self
            .path
            .iter()
            .map(|p| match p {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        match (self.code(), path.is_empty()) {
            (Some(code), true) => write!(f, " ({code})"),
            (Some(code), false) => write!(f, " ({code} at {})", path.join(".")),
            (None, false) => write!(f, " (at {})", path.join(".")),
            (None, true) => Ok(()),
        }
    }
}

fn join_graphql(errors: &[GraphqlError]) -> String {
    if errors.is_empty() {
        return "no message".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of the Fly backend. Each API error carries its [`ApiContext`] (method, path, status,
/// `fly-request-id`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlyError {
    /// Fly has no capacity for the machine (`status: "insufficient_capacity"`). Try another
    /// region or later; never retried automatically.
    #[error("{ctx}: insufficient capacity: {message}")]
    InsufficientCapacity {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
    },
    /// The machine or app name is taken (`status: "name_taken"`).
    #[error("{ctx}: name taken: {message}")]
    NameTaken {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
    },
    /// HTTP 409: the machine is leased by someone else (or the lease nonce is wrong).
    #[error("{ctx}: lease conflict: {message}")]
    LeaseConflict {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message, e.g. `aborted: machine ID … lease currently held by …`.
        message: String,
    },
    /// HTTP 412: the operation is not possible in the machine's current state (e.g.
    /// `unable to start machine from current state: 'replacing'`).
    #[error("{ctx}: precondition failed: {message}")]
    PreconditionFailed {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
    },
    /// HTTP 404: the app or machine does not exist.
    #[error("{ctx}: not found: {message}")]
    NotFound {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
    },
    /// HTTP 401 or 403: the token was refused.
    #[error("{ctx}: unauthorized: {message}")]
    Unauthorized {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message (never contains the token).
        message: String,
    },
    /// HTTP 408 from `wait`: the state was not reached within the wait timeout.
    #[error("{ctx}: wait timed out: {message}")]
    WaitTimeout {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
        /// How many seconds the wait was (the `timeout` the call asked for, the API's unit;
        /// zero when unknown).
        wait_secs: u64,
    },
    /// HTTP 400 or 422: the request was invalid.
    #[error("{ctx}: invalid request: {message}")]
    InvalidRequest {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message.
        message: String,
    },
    /// HTTP 429: rate limited.
    #[error("{ctx}: rate limited{}", retry_after.map(|d| format!(" (retry after {})", fleetscale_core::format_seconds(d))).unwrap_or_default())]
    RateLimited {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// The `Retry-After` header (seconds or HTTP date), when present and valid.
        retry_after: Option<Duration>,
        /// Fly's message.
        message: String,
    },
    /// HTTP 5xx.
    #[error("{ctx}: server error: {message}")]
    Server {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message or a body excerpt.
        message: String,
    },
    /// Any other non-2xx status.
    #[error("{ctx}: unexpected status: {message}")]
    UnexpectedStatus {
        /// The call that failed (server, method, path, status, `fly-request-id`).
        ctx: ApiContext,
        /// Fly's message or a body excerpt.
        message: String,
    },
    /// Fly's GraphQL API answered with a non-empty `errors` array (the query failed, at least
    /// in part; partial `data` is ignored, as fly-go does).
    #[error("{ctx}: GraphQL error: {}", join_graphql(errors))]
    Graphql {
        /// The call (`POST /graphql`).
        ctx: ApiContext,
        /// The errors, in the server's order.
        errors: Vec<GraphqlError>,
    },
    /// A 2xx answer whose body could not be decoded.
    #[error("{ctx}: malformed response body ({source}); body starts with {excerpt:?}")]
    MalformedBody {
        /// The call whose answer could not be decoded (server, method, path, status, request id).
        ctx: ApiContext,
        /// The first bytes of the body (at most 200 characters).
        excerpt: String,
        /// Why the body is not the JSON expected.
        #[source]
        source: serde_json::Error,
    },
    /// The request could not be sent or the answer not read (connection refused/reset, DNS,
    /// TLS, body cut off). The message names the server and the cause.
    #[error("{ctx}: {}", describe_transport(source))]
    Transport {
        /// The call (status 0 when no answer arrived).
        ctx: ApiContext,
        /// The HTTP client's error (its URL is stripped).
        #[source]
        source: reqwest::Error,
    },
    /// The call did not finish within its timeout.
    #[error("{ctx}: no answer from {} within {}", ctx.origin, fleetscale_core::format_seconds(*after))]
    Timeout {
        /// The call that got no answer in time.
        ctx: ApiContext,
        /// The per-attempt timeout that passed.
        after: Duration,
    },
    /// The client or scaler is misconfigured (bad base URL, empty app name, ...).
    #[error("invalid Fly configuration: {0}")]
    Config(String),
    /// No machine of the process group can serve as a template for `create`.
    #[error("app {app}: no machine of process group {group:?} available to clone")]
    NoTemplate {
        /// The app whose machines were searched.
        app: String,
        /// The process group no usable machine was found in.
        group: String,
    },
    /// The machine exists but belongs to another app/process group, or its host is not ok:
    /// the scaler refuses to act on it.
    #[error("refusing to act on machine {id}: {reason}")]
    Refused {
        /// The id of the machine left alone.
        id: String,
        /// What made the scaler refuse to act on the machine.
        reason: String,
    },
    /// A machine did not reach the expected state (e.g. after a suspend-on-create).
    #[error("machine {id}: {message}")]
    UnexpectedState {
        /// The id of the machine in the wrong state.
        id: String,
        /// What was expected and seen.
        message: String,
    },
}

impl FlyError {
    /// The API context of the error, if it came from a call.
    pub fn context(&self) -> Option<&ApiContext> {
        match self {
            FlyError::InsufficientCapacity { ctx, .. }
            | FlyError::NameTaken { ctx, .. }
            | FlyError::LeaseConflict { ctx, .. }
            | FlyError::PreconditionFailed { ctx, .. }
            | FlyError::NotFound { ctx, .. }
            | FlyError::Unauthorized { ctx, .. }
            | FlyError::WaitTimeout { ctx, .. }
            | FlyError::InvalidRequest { ctx, .. }
            | FlyError::RateLimited { ctx, .. }
            | FlyError::Server { ctx, .. }
            | FlyError::UnexpectedStatus { ctx, .. }
            | FlyError::MalformedBody { ctx, .. }
            | FlyError::Graphql { ctx, .. }
            | FlyError::Transport { ctx, .. }
            | FlyError::Timeout { ctx, .. } => Some(ctx),
            _ => None,
        }
    }

    /// The `fly-request-id` of the failed call, if Fly answered with one.
    pub fn request_id(&self) -> Option<&str> {
        self.context()?.request_id.as_deref()
    }

    /// The HTTP status (None when no answer was received or the error is not from a call).
    pub fn status(&self) -> Option<u16> {
        self.context().map(|c| c.status).filter(|s| *s != 0)
    }

    /// Whether the same call may succeed if repeated *and the call is idempotent*: 429,
    /// 502/503/504, transport errors and timeouts. The client consults this only for
    /// idempotent calls; creates are retried on [`FlyError::RateLimited`] alone (a 429 was not
    /// executed, see [`crate::client`]).
    pub fn is_transient(&self) -> bool {
        match self {
            FlyError::RateLimited { .. } | FlyError::Transport { .. } => true,
            FlyError::Timeout { .. } => true,
            FlyError::Server { ctx, .. } => matches!(ctx.status, 502..=504),
            _ => false,
        }
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FlyError::NotFound { .. })
    }
}

impl From<FlyError> for CoreError {
    /// Maps onto the core classes: capacity → `Capacity`; name taken, lease conflict, 412 →
    /// `Conflict`; 404 → `NotFound`; 401/403 → `Unauthorized`; 408 and client timeouts →
    /// `Timeout`; 400/422 → `InvalidRequest`; 429 → `RateLimited`; 5xx and transport errors →
    /// `Unavailable`; malformed bodies → `InvalidResponse`; configuration → `Config`; refusals
    /// → `Refused`; GraphQL errors by their first `extensions.code` (`UNAUTHORIZED`,
    /// `UNAUTHENTICATED`, `FORBIDDEN` → `Unauthorized`; `NOT_FOUND` → `NotFound`; others
    /// `Backend`); the rest → `Backend`. The Fly error is kept as the `source` of every class,
    /// its message (with method, path and `fly-request-id`) as the core error's message; a rate
    /// limit keeps the `fly-request-id` and a wait timeout the wait it asked for.
    fn from(e: FlyError) -> Self {
        let message = e.to_string();
        let core = match &e {
            FlyError::InsufficientCapacity { .. } => CoreError::capacity(message),
            FlyError::NameTaken { .. }
            | FlyError::LeaseConflict { .. }
            | FlyError::PreconditionFailed { .. } => CoreError::conflict(message),
            FlyError::NotFound { ctx, .. } => CoreError::not_found(match &ctx.request_id {
                Some(id) => format!("{} (fly-request-id {id})", ctx.path),
                None => ctx.path.clone(),
            }),
            FlyError::Unauthorized { .. } => CoreError::unauthorized(message),
            FlyError::WaitTimeout { ctx, wait_secs, .. } => CoreError::timeout(
                format!(
                    "waiting for the machine's state ({} {}{})",
                    ctx.method, ctx.origin, ctx.path
                ),
                Duration::from_secs(*wait_secs),
            ),
            FlyError::Timeout { ctx, after } => {
                CoreError::timeout(format!("{} {}{}", ctx.method, ctx.origin, ctx.path), *after)
            }
            FlyError::InvalidRequest { .. } | FlyError::NoTemplate { .. } => {
                CoreError::invalid_request(message)
            }
            FlyError::RateLimited {
                ctx, retry_after, ..
            } => CoreError::RateLimited {
                message,
                request_id: ctx.request_id.as_deref().map(str::to_owned),
                retry_after: *retry_after,
                source: None,
            },
            FlyError::Server { .. } | FlyError::Transport { .. } => CoreError::unavailable(message),
            FlyError::MalformedBody { ctx, .. } => CoreError::InvalidResponse {
                context: format!("{} {}{}", ctx.method, ctx.origin, ctx.path),
                message,
                source: None,
            },
            FlyError::Graphql { errors, .. } => {
                let code = errors
                    .iter()
                    .find_map(GraphqlError::code)
                    .map(str::to_ascii_uppercase);
                match code.as_deref() {
                    Some("UNAUTHORIZED" | "UNAUTHENTICATED" | "FORBIDDEN") => {
                        CoreError::unauthorized(message)
                    }
                    Some("NOT_FOUND") => CoreError::not_found(message),
                    _ => CoreError::Backend {
                        message,
                        retryable: false,
                        source: None,
                    },
                }
            }
            FlyError::Config(_) => CoreError::config(message),
            FlyError::Refused { .. } => CoreError::refused(message),
            FlyError::UnexpectedStatus { .. } | FlyError::UnexpectedState { .. } => {
                CoreError::Backend {
                    message,
                    retryable: false,
                    source: None,
                }
            }
        };
        core.with_source(e)
    }
}

/// What went wrong with a request that got no (complete) answer, in words, with the cause
/// from deep in the error chain (`cannot connect: tcp connect error: Connection refused (os
/// error 111)`, a DNS or TLS failure), never the generic `error sending request` alone.
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else if e.is_request() {
        "the request could not be sent"
    } else {
        "transport error"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", fleetscale_core::error_causes(cause)),
        None => format!("{what}: {e}"),
    }
}

/// Cuts a body to at most `max` characters for error messages.
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let mut s: String = body.chars().take(max).collect();
    if body.chars().count() > max {
        s.push('…');
    }
    s
}
