//! The one error type of `fleetscale-core`, shared by every trait contract.
//!
//! Backends keep their own error enums (`FlyError`, `WeaveError`, ...) and convert into
//! [`Error`] at the trait boundary, keeping their error as the `source` so that nothing is
//! lost. The engine only looks at the *class* of an error ([`Error::is_retryable`],
//! [`Error::is_not_found`], ...), never at backend details.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boxed error from a backend, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the fleetscale core and of every trait implementation.
///
/// The variants are *classes* of failure that the engine acts on; the human-readable detail
/// is in the message and the `source` chain. Every class that can have an underlying error
/// keeps it as its `source` ([`Error::with_source`]), so that nothing a backend knew is lost
/// on the way up. Messages never contain secrets: backends must redact tokens before building
/// an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object (machine, member, app) does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `machine 148e21` or `app my-app`.
        what: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend does not implement this operation (see [`crate::Capabilities`]).
    #[error("operation `{operation}` is not supported by this backend")]
    Unsupported {
        /// The operation's name, e.g. `suspend`.
        operation: &'static str,
    },

    /// The operation conflicts with the object's current state or with another actor
    /// (a lease held by someone else, a name already taken, a peer still alive).
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend asked us to slow down (HTTP 429). Retryable after `retry_after`.
    ///
    /// Displays as `rate limited (retry after 2 s): <message>`, without the parts that are
    /// unknown.
    #[error("rate limited{}{}", retry_after.map(|d| format!(" (retry after {})", format_seconds(d))).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
    RateLimited {
        /// What the backend said, with the call that was refused (may be empty).
        message: String,
        /// The backend's identifier of the refused request (Fly: `fly-request-id`), to find
        /// it in the backend's logs.
        request_id: Option<String>,
        /// How long the backend asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend has no capacity for the request (e.g. Fly `insufficient_capacity`).
    /// Not retried in a loop: the next tick re-plans.
    #[error("insufficient capacity: {message}")]
    Capacity {
        /// The backend's explanation.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The credentials were refused (HTTP 401/403). Not retryable.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The backend's explanation, with any token redacted.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The request was refused as invalid (HTTP 400/422). Not retryable.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// The backend's explanation.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A temporary failure: connection refused or reset, HTTP 5xx, a backend that is not ready.
    /// Retryable for idempotent operations.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The operation did not finish within its deadline.
    ///
    /// Displays as `<operation> timed out after <seconds>` (`reading metric `load` timed out
    /// after 10 s`), or without the duration when it is unknown (zero).
    #[error("{operation} timed out{}", if after.is_zero() { String::new() } else { format!(" after {}", format_seconds(*after)) })]
    Timeout {
        /// What timed out, in words (`listing the machines`, `reading metric `load``).
        operation: String,
        /// How long it was given (zero when unknown).
        after: Duration,
        /// The backend's own error, if any (e.g. its answer that a wait timed out).
        #[source]
        source: Option<BoxError>,
    },

    /// The operation was cancelled (shutdown or caller gave up). Not an error of the backend.
    #[error("cancelled")]
    Cancelled,

    /// A backend or metric server answered something we could not understand.
    #[error("invalid response from {context}: {message}")]
    InvalidResponse {
        /// Which call answered, e.g. `GET /v1/apps/my-app/machines`.
        context: String,
        /// What was wrong with it.
        message: String,
        /// The decoding error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A metric could not give a usable value (no data, several series, NaN, ...).
    #[error("metric `{metric}`: {message}")]
    Metric {
        /// The metric's name, as used in expressions.
        metric: String,
        /// Why no value could be had.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// An expression failed to compile or evaluate.
    #[error(transparent)]
    Expression(#[from] crate::expr::ExprError),

    /// Configuration is invalid. The message names the key (and file/line when known).
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong and where.
        message: String,
        /// The underlying error, if any (a parse error, a backend's refusal of a setting).
        #[source]
        source: Option<BoxError>,
    },

    /// A safety rule refused the operation (e.g. reclaiming a peer that is still reachable,
    /// destroying the last machine). Never retried.
    #[error("refused for safety: {reason}")]
    Refused {
        /// Which rule refused it.
        reason: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other backend failure, classified by the backend as retryable or not.
    #[error("{message}")]
    Backend {
        /// What failed.
        message: String,
        /// Whether retrying the *same* call may succeed and is safe.
        retryable: bool,
        /// The backend's own error.
        #[source]
        source: Option<BoxError>,
    },
}

/// The class of an [`Error`], without its data: what the engine, the records and the metric
/// labels (`kind`) go by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Unsupported`].
    Unsupported,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::RateLimited`].
    RateLimited,
    /// [`Error::Capacity`].
    Capacity,
    /// [`Error::Unauthorized`].
    Unauthorized,
    /// [`Error::InvalidRequest`].
    InvalidRequest,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Cancelled`].
    Cancelled,
    /// [`Error::InvalidResponse`].
    InvalidResponse,
    /// [`Error::Metric`].
    Metric,
    /// [`Error::Expression`].
    Expression,
    /// [`Error::Config`].
    Config,
    /// [`Error::Refused`].
    Refused,
    /// [`Error::Backend`].
    Backend,
}

impl ErrorKind {
    /// The stable snake-case label (`not_found`, `rate_limited`, ...), as in JSON and metric
    /// labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Capacity => "capacity",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Metric => "metric",
            ErrorKind::Expression => "expression",
            ErrorKind::Config => "config",
            ErrorKind::Refused => "refused",
            ErrorKind::Backend => "backend",
        }
    }
}

impl PartialEq<str> for ErrorKind {
    /// Compares with the label ([`ErrorKind::as_str`]).
    fn eq(&self, label: &str) -> bool {
        self.as_str() == label
    }
}

impl PartialEq<&str> for ErrorKind {
    /// Compares with the label ([`ErrorKind::as_str`]).
    fn eq(&self, label: &&str) -> bool {
        self.as_str() == *label
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Whether a retry of the same call may succeed: rate limits, temporary unavailability and
    /// timeouts. Callers still decide whether the call is *safe* to repeat (idempotent).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Unavailable { .. } | Error::Timeout { .. } => true,
            Error::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The wait the backend asked for, if this is a rate limit with a `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Capacity { .. } => ErrorKind::Capacity,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            Error::Metric { .. } => ErrorKind::Metric,
            Error::Expression(_) => ErrorKind::Expression,
            Error::Config { .. } => ErrorKind::Config,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Keeps `cause` as the error's `source`. Classes without one ([`Error::Unsupported`],
    /// [`Error::Cancelled`], [`Error::Expression`], whose source is the expression error)
    /// are returned unchanged.
    ///
    /// ```
    /// use fleetscale_core::Error;
    /// let io = std::io::Error::other("lease held by 01H…");
    /// let e = Error::conflict("machine m1 is leased").with_source(io);
    /// assert_eq!(fleetscale_core::error_causes(&e), "conflict: machine m1 is leased: lease held by 01H…");
    /// ```
    pub fn with_source(mut self, cause: impl Into<BoxError>) -> Self {
        match &mut self {
            Error::NotFound { source, .. }
            | Error::Conflict { source, .. }
            | Error::RateLimited { source, .. }
            | Error::Capacity { source, .. }
            | Error::Unauthorized { source, .. }
            | Error::InvalidRequest { source, .. }
            | Error::Unavailable { source, .. }
            | Error::Timeout { source, .. }
            | Error::InvalidResponse { source, .. }
            | Error::Metric { source, .. }
            | Error::Config { source, .. }
            | Error::Refused { source, .. }
            | Error::Backend { source, .. } => *source = Some(cause.into()),
            Error::Unsupported { .. } | Error::Cancelled | Error::Expression(_) => {}
        }
        self
    }

    /// The same error with `context` in front of its message (after the name for
    /// [`Error::NotFound`]): the class and the source are kept. Classes without a message of
    /// their own ([`Error::Unsupported`], [`Error::Cancelled`], [`Error::Expression`]) become an
    /// [`Error::Backend`] of the same retryability whose source is the error.
    ///
    /// ```
    /// use fleetscale_core::{Error, ErrorKind};
    /// let e = Error::unauthorized("token expired").context("release check at https://api.fly.io/graphql");
    /// assert_eq!(e.kind(), ErrorKind::Unauthorized);
    /// assert_eq!(e.to_string(), "unauthorized: release check at https://api.fly.io/graphql: token expired");
    /// ```
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        let prefix = |m: &mut String| *m = format!("{context}: {m}");
        match &mut self {
            Error::NotFound { what, .. } => *what = format!("{what} ({context})"),
            Error::Conflict { message, .. }
            | Error::RateLimited { message, .. }
            | Error::Capacity { message, .. }
            | Error::Unauthorized { message, .. }
            | Error::InvalidRequest { message, .. }
            | Error::Unavailable { message, .. }
            | Error::InvalidResponse { message, .. }
            | Error::Metric { message, .. }
            | Error::Config { message, .. }
            | Error::Backend { message, .. } => prefix(message),
            Error::Timeout { operation, .. } => prefix(operation),
            Error::Refused { reason, .. } => prefix(reason),
            _ => {
                return Error::Backend {
                    message: format!("{context}: {self}"),
                    retryable: self.is_retryable(),
                    source: Some(Box::new(self)),
                }
            }
        }
        self
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound {
            what: what.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for a [`Error::RateLimited`] with a message and nothing else known.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Error::RateLimited {
            message: message.into(),
            request_id: None,
            retry_after,
            source: None,
        }
    }

    /// Shorthand for [`Error::Capacity`].
    pub fn capacity(message: impl Into<String>) -> Self {
        Error::Capacity {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Error::Unauthorized {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Unavailable`] without a source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Timeout`]: `operation` took longer than `after`.
    pub fn timeout(operation: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            operation: operation.into(),
            after,
            source: None,
        }
    }

    /// Shorthand for [`Error::Refused`].
    pub fn refused(reason: impl Into<String>) -> Self {
        Error::Refused {
            reason: reason.into(),
            source: None,
        }
    }

    /// Shorthand for a [`Error::Metric`] without a source.
    pub fn metric(metric: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Metric {
            metric: metric.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Backend`] wrapping a backend's own error.
    pub fn backend(
        message: impl Into<String>,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            message: message.into(),
            retryable,
            source: Some(source.into()),
        }
    }
}

/// A duration in seconds for messages: `30 s`, `2.5 s`, `0.25 s`, `0.001 s` (at most three
/// decimals, trailing zeros dropped).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(fleetscale_core::format_seconds(Duration::from_secs(30)), "30 s");
/// assert_eq!(fleetscale_core::format_seconds(Duration::from_millis(2500)), "2.5 s");
/// assert_eq!(fleetscale_core::format_seconds(Duration::from_micros(9_998_720)), "9.999 s");
/// ```
pub fn format_seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} s")
}

/// The causes of an error, outermost first, joined with `: `, leaving out a cause whose text
/// the previous one already contains. Transport errors of HTTP clients say only `error sending
/// request` at the top; the cause (`Connection refused (os error 111)`, a DNS or TLS failure)
/// is further down the chain.
///
/// ```
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let outer = std::io::Error::other(io);
/// assert_eq!(fleetscale_core::error_causes(&outer), "connection refused");
/// ```
pub fn error_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let text = text.trim();
        if !text.is_empty() && parts.last().is_none_or(|last| !last.contains(text)) {
            // A cause that repeats the outer text with more detail replaces it.
            if parts
                .last()
                .is_some_and(|last| text.contains(last.as_str()))
            {
                parts.pop();
            }
            parts.push(text.to_owned());
        }
        next = err.source();
    }
    parts.join(": ")
}

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        assert!(Error::rate_limited("", None).is_retryable());
        assert!(Error::Unavailable {
            message: "x".into(),
            source: None
        }
        .is_retryable());
        assert!(!Error::not_found("machine 1").is_retryable());
        assert!(!Error::capacity("none").is_retryable());
        assert_eq!(
            Error::rate_limited("", Some(Duration::from_secs(2))).retry_after(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_class_and_source() {
        let cases: Vec<(Error, &str)> = vec![
            (Error::not_found("machine 1"), "machine 1 (ctx) not found"),
            (Error::conflict("lease"), "conflict: ctx: lease"),
            (
                Error::rate_limited("slow down", Some(Duration::from_secs(1))),
                "rate limited (retry after 1 s): ctx: slow down",
            ),
            (Error::capacity("none"), "insufficient capacity: ctx: none"),
            (Error::unauthorized("token"), "unauthorized: ctx: token"),
            (Error::invalid_request("bad"), "invalid request: ctx: bad"),
            (
                Error::Unavailable {
                    message: "down".into(),
                    source: None,
                },
                "unavailable: ctx: down",
            ),
            (
                Error::Timeout {
                    operation: "list".into(),
                    after: Duration::from_secs(2),
                    source: None,
                },
                "ctx: list timed out after 2 s",
            ),
            (
                Error::InvalidResponse {
                    context: "GET /x".into(),
                    message: "eof".into(),
                    source: None,
                },
                "invalid response from GET /x: ctx: eof",
            ),
            (Error::metric("q", "nan"), "metric `q`: ctx: nan"),
            (Error::config("key"), "invalid configuration: ctx: key"),
            (
                Error::refused("last machine"),
                "refused for safety: ctx: last machine",
            ),
            (
                Error::backend("boom", true, std::io::Error::other("x")),
                "ctx: boom",
            ),
        ];
        for (e, want) in cases {
            let e = e.with_source(std::io::Error::other("root cause"));
            let (kind, retryable) = (e.kind(), e.is_retryable());
            let name = format!("{e:?}");
            let got = e.context("ctx");
            assert_eq!(got.to_string(), want, "{name}");
            assert_eq!(got.kind(), kind, "{name}");
            assert_eq!(got.is_retryable(), retryable, "{name}");
            let cause = std::error::Error::source(&got).map(ToString::to_string);
            assert_eq!(cause.as_deref(), Some("root cause"), "{name}");
        }
        // Classes without a message of their own become a backend error whose source is them.
        let unsupported = Error::Unsupported {
            operation: "suspend",
        };
        for e in [Error::Cancelled, unsupported] {
            let (message, retryable) = (e.to_string(), e.is_retryable());
            let got = e.context("ctx");
            assert_eq!(got.kind(), ErrorKind::Backend, "{message}");
            assert_eq!(got.to_string(), format!("ctx: {message}"));
            assert_eq!(got.is_retryable(), retryable, "{message}");
            let cause = std::error::Error::source(&got).map(ToString::to_string);
            assert_eq!(cause, Some(message));
        }
    }

    #[test]
    fn messages_read_well() {
        assert_eq!(
            Error::not_found("machine 148e").to_string(),
            "machine 148e not found"
        );
        assert_eq!(
            Error::rate_limited("", Some(Duration::from_secs(1))).to_string(),
            "rate limited (retry after 1 s)"
        );
        assert_eq!(
            Error::rate_limited("POST /v1/apps/a/machines", None).to_string(),
            "rate limited: POST /v1/apps/a/machines"
        );
        assert_eq!(
            Error::NotFound {
                what: "x".into(),
                source: None
            }
            .kind()
            .as_str(),
            "not_found"
        );
    }
}
