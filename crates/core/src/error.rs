//! The one error type of `fleetscale-core`, shared by every trait contract.
//!
//! Backends keep their own error enums (`FlyError`, `WeaveError`, ...) and convert into
//! [`Error`] at the trait boundary, keeping their error as the `source` so that nothing is
//! lost. The engine only looks at the *class* of an error ([`Error::is_retryable`],
//! [`Error::is_not_found`], ...), never at backend details.

use std::time::Duration;

/// A boxed error from a backend, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the fleetscale core and of every trait implementation.
///
/// The variants are *classes* of failure that the engine acts on; the human-readable detail
/// is in the message and the `source` chain. Messages never contain secrets: backends must
/// redact tokens before building an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object (machine, member, app) does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `machine 148e21` or `app my-app`.
        what: String,
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
    },

    /// The backend asked us to slow down (HTTP 429). Retryable after `retry_after`.
    #[error("rate limited{}", retry_after.map(|d| format!(" (retry after {})", format_seconds(d))).unwrap_or_default())]
    RateLimited {
        /// How long the backend asked us to wait, when it said.
        retry_after: Option<Duration>,
    },

    /// The backend has no capacity for the request (e.g. Fly `insufficient_capacity`).
    /// Not retried in a loop: the next tick re-plans.
    #[error("insufficient capacity: {message}")]
    Capacity {
        /// The backend's explanation.
        message: String,
    },

    /// The credentials were refused (HTTP 401/403). Not retryable.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The backend's explanation, with any token redacted.
        message: String,
    },

    /// The request was refused as invalid (HTTP 400/422). Not retryable.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// The backend's explanation.
        message: String,
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
        /// The deadline that passed (zero when unknown).
        after: Duration,
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
    },

    /// A safety rule refused the operation (e.g. reclaiming a peer that is still reachable,
    /// destroying the last machine). Never retried.
    #[error("refused for safety: {reason}")]
    Refused {
        /// Which rule refused it.
        reason: String,
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
            Error::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable label for the error class, used as a metric label (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Unsupported { .. } => "unsupported",
            Error::Conflict { .. } => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::Capacity { .. } => "capacity",
            Error::Unauthorized { .. } => "unauthorized",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::Cancelled => "cancelled",
            Error::InvalidResponse { .. } => "invalid_response",
            Error::Metric { .. } => "metric",
            Error::Expression(_) => "expression",
            Error::Config { .. } => "config",
            Error::Refused { .. } => "refused",
            Error::Backend { .. } => "backend",
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
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
        assert!(Error::RateLimited { retry_after: None }.is_retryable());
        assert!(Error::Unavailable {
            message: "x".into(),
            source: None
        }
        .is_retryable());
        assert!(!Error::not_found("machine 1").is_retryable());
        assert!(!Error::Capacity {
            message: "none".into()
        }
        .is_retryable());
        assert_eq!(
            Error::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
            .retry_after(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn messages_read_well() {
        assert_eq!(
            Error::not_found("machine 148e").to_string(),
            "machine 148e not found"
        );
        assert_eq!(
            Error::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
            .to_string(),
            "rate limited (retry after 1 s)"
        );
    }
}
