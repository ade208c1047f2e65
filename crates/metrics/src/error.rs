//! The crate's error type, [`MetricsError`], and its conversion into [`fleetscale_core::Error`].

use std::sync::Arc;
use std::time::Duration;

use fleetscale_core::{BoxError, Error};

/// Everything that can go wrong while reading a metric.
///
/// Messages never contain tokens: credentials travel only in headers, and URLs shown in messages
/// have their query string removed (an HTTP JSON source may carry an API key there).
/// Converted into [`fleetscale_core::Error`] at the [`fleetscale_core::MetricSource`] boundary;
/// see the `From` impl for the class each variant maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The source's configuration is invalid (bad address, empty query, bad pointer, ...).
    /// Maps to [`Error::Config`].
    #[error("metric `{metric}`: invalid configuration: {message}")]
    Config {
        /// The metric's name.
        metric: String,
        /// What is wrong.
        message: String,
    },

    /// The query did not finish within the configured timeout. Maps to [`Error::Timeout`].
    #[error("metric `{metric}`: {operation}: no answer within {}", fleetscale_core::format_seconds(*after))]
    Timeout {
        /// The metric's name.
        metric: String,
        /// What timed out, e.g. `GET http://prom:9090/api/v1/query`.
        operation: String,
        /// How long the call was given (the source's configured timeout).
        after: Duration,
    },

    /// The caller cancelled the query. Maps to [`Error::Cancelled`].
    #[error("metric `{metric}`: cancelled")]
    Cancelled {
        /// The metric's name.
        metric: String,
    },

    /// The server could not be reached, or the connection broke before an answer was read.
    /// Maps to [`Error::Unavailable`]. The message names the address and the cause
    /// (connection refused, DNS, TLS, ...).
    #[error(
        "metric `{metric}`: cannot reach {url}: {}",
        crate::http::describe_transport(source)
    )]
    Connect {
        /// The metric's name.
        metric: String,
        /// The address (without query string).
        url: String,
        /// The HTTP client's error (its URL removed).
        #[source]
        source: reqwest::Error,
    },

    /// The server refused the credentials (HTTP 401 or 403). Maps to [`Error::Unauthorized`].
    #[error("metric `{metric}`: {url} answered HTTP {status}: {body}")]
    Unauthorized {
        /// The metric's name.
        metric: String,
        /// The address (without query string).
        url: String,
        /// 401 or 403.
        status: u16,
        /// The start of the response body, for the operator.
        body: String,
    },

    /// The server asked us to slow down (HTTP 429). Maps to [`Error::RateLimited`].
    #[error("metric `{metric}`: {url} answered HTTP 429 (rate limited)")]
    RateLimited {
        /// The metric's name.
        metric: String,
        /// The address (without query string).
        url: String,
        /// The `Retry-After` header, when it held a number of seconds.
        retry_after: Option<Duration>,
    },

    /// The server answered with an HTTP error status and no Prometheus error body (e.g. a proxy's
    /// HTML page). 5xx maps to [`Error::Unavailable`], anything else to
    /// [`Error::InvalidResponse`].
    #[error("metric `{metric}`: {url} answered HTTP {status}: {body}")]
    Http {
        /// The metric's name.
        metric: String,
        /// The address (without query string).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// Prometheus answered `{"status":"error", "errorType": ..., "error": ...}`.
    /// `bad_data` and `execution` (the query is wrong) and any other 4xx map to
    /// [`Error::InvalidRequest`]; `timeout` (the server's own evaluation deadline), `internal`,
    /// `unavailable`, `canceled` and any 5xx to [`Error::Unavailable`] (retryable); anything else
    /// to [`Error::Metric`].
    #[error("metric `{metric}`: prometheus error ({error_type}, HTTP {status}): {error}; query: {query}")]
    Prometheus {
        /// The metric's name.
        metric: String,
        /// The HTTP status code that came with the error body.
        status: u16,
        /// Prometheus' `errorType`, e.g. `bad_data`.
        error_type: String,
        /// Prometheus' `error` message.
        error: String,
        /// The query as sent (after expansion), truncated.
        query: String,
    },

    /// The answer could not be decoded: not JSON, not the documented shape, not a number.
    /// Maps to [`Error::InvalidResponse`].
    #[error("metric `{metric}`: invalid response from {context}: {message}")]
    InvalidResponse {
        /// The metric's name.
        metric: String,
        /// Which call answered, e.g. `GET http://prom:9090/api/v1/query`.
        context: String,
        /// What was wrong, with the start of the body when useful.
        message: String,
        /// The decoding error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The query returned no series. Maps to [`Error::Metric`] (configure
    /// [`crate::EmptyResult::Zero`] to read 0 instead).
    #[error("metric `{metric}`: query returned no data (empty result); query: {query}")]
    Empty {
        /// The metric's name.
        metric: String,
        /// The query as sent, truncated.
        query: String,
    },

    /// The query returned several series and no aggregation was configured.
    /// Maps to [`Error::Metric`].
    #[error("metric `{metric}`: query returned {count} series, expected one (configure an aggregation such as `sum` or narrow the query): {series}")]
    MultipleSeries {
        /// The metric's name.
        metric: String,
        /// How many series came back.
        count: usize,
        /// The first label sets, truncated.
        series: String,
    },

    /// The value was NaN or infinite. Maps to [`Error::Metric`].
    #[error("metric `{metric}`: value is not a finite number ({value}) in {series}")]
    NotFinite {
        /// The metric's name.
        metric: String,
        /// The value as the server wrote it.
        value: String,
        /// Which series (label set) held it.
        series: String,
    },

    /// The result had a type this source cannot turn into one number (a string, or a range
    /// vector from an instant query). Maps to [`Error::Metric`].
    #[error("metric `{metric}`: unexpected result type `{result_type}`: {hint}")]
    UnexpectedResultType {
        /// The metric's name.
        metric: String,
        /// Prometheus' `resultType`.
        result_type: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// A Temporal frontend call failed with a gRPC status (also connection failures, which
    /// the channel reports as `UNAVAILABLE`). `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `ABORTED`,
    /// `INTERNAL`, `UNKNOWN`, `DEADLINE_EXCEEDED`, `CANCELLED` map to [`Error::Unavailable`];
    /// `PERMISSION_DENIED` and `UNAUTHENTICATED` to [`Error::Unauthorized`]; `NOT_FOUND` (the
    /// namespace does not exist) to [`Error::NotFound`]; `INVALID_ARGUMENT` (a query Temporal
    /// rejects) and `UNIMPLEMENTED` to [`Error::InvalidRequest`]; anything else to
    /// [`Error::Metric`].
    #[error("metric `{metric}`: temporal {call} (namespace {namespace}): {code}: {message}")]
    Temporal {
        /// The metric's name.
        metric: String,
        /// The gRPC method and endpoint, e.g. `CountWorkflowExecutions at https://h:7233`.
        call: String,
        /// The Temporal namespace the call asked about.
        namespace: String,
        /// gRPC's canonical code name, e.g. `UNAVAILABLE`.
        code: &'static str,
        /// The server's message and decoded error details, or the connection error.
        message: String,
    },

    /// An HTTP JSON source's pointer matched nothing, or something that is not a number.
    /// Maps to [`Error::Metric`].
    #[error("metric `{metric}`: JSON pointer `{pointer}` in the answer of {url}: {message}")]
    Pointer {
        /// The metric's name.
        metric: String,
        /// The RFC 6901 pointer.
        pointer: String,
        /// The address (without query string).
        url: String,
        /// What was found instead.
        message: String,
    },

    /// The one request shared by several targets failed (see
    /// [`crate::GroupedPrometheusSource`]): every target reading it gets this, which shows
    /// and maps exactly as the error it holds.
    #[error(transparent)]
    Shared(Arc<MetricsError>),
}

impl MetricsError {
    /// The name of the metric the error is about (every variant has one).
    pub fn metric(&self) -> &str {
        match self {
            MetricsError::Config { metric, .. }
            | MetricsError::Timeout { metric, .. }
            | MetricsError::Cancelled { metric }
            | MetricsError::Connect { metric, .. }
            | MetricsError::Unauthorized { metric, .. }
            | MetricsError::RateLimited { metric, .. }
            | MetricsError::Http { metric, .. }
            | MetricsError::Prometheus { metric, .. }
            | MetricsError::InvalidResponse { metric, .. }
            | MetricsError::Empty { metric, .. }
            | MetricsError::MultipleSeries { metric, .. }
            | MetricsError::NotFinite { metric, .. }
            | MetricsError::UnexpectedResultType { metric, .. }
            | MetricsError::Pointer { metric, .. }
            | MetricsError::Temporal { metric, .. } => metric,
            MetricsError::Shared(inner) => inner.metric(),
        }
    }
}

/// Maps each variant onto the class the engine acts on; the full message (never a secret) is
/// kept in the core error's message, and the underlying I/O or decoding error as its `source`.
impl From<MetricsError> for Error {
    fn from(err: MetricsError) -> Self {
        let core = class_of(&err, err.to_string());
        if matches!(core, Error::Cancelled) {
            return core;
        }
        core.with_source(err)
    }
}

/// The core error of `err`'s class, carrying `message` (without a source).
fn class_of(err: &MetricsError, message: String) -> Error {
    match err {
        MetricsError::Shared(inner) => class_of(inner, message),
        MetricsError::Config { .. } => Error::config(message),
        MetricsError::Timeout {
            operation, after, ..
        } => Error::timeout(operation.clone(), *after),
        MetricsError::Cancelled { .. } => Error::Cancelled,
        MetricsError::Connect { .. } => Error::unavailable(message),
        MetricsError::Unauthorized { .. } => Error::unauthorized(message),
        MetricsError::RateLimited { retry_after, .. } => Error::rate_limited(message, *retry_after),
        MetricsError::Http { status, url, .. } => {
            if *status >= 500 {
                Error::unavailable(message)
            } else {
                Error::InvalidResponse {
                    context: url.clone(),
                    message,
                    source: None,
                }
            }
        }
        MetricsError::Prometheus {
            status, error_type, ..
        } => match error_type.as_str() {
            "timeout" | "internal" | "unavailable" | "canceled" => Error::unavailable(message),
            "bad_data" | "execution" => Error::invalid_request(message),
            _ if *status >= 500 => Error::unavailable(message),
            _ if *status >= 400 => Error::invalid_request(message),
            _ => Error::metric(err.metric(), without_metric(&message, err.metric())),
        },
        MetricsError::Temporal {
            code,
            namespace,
            metric,
            ..
        } => match *code {
            "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "ABORTED" | "INTERNAL" | "UNKNOWN"
            | "DEADLINE_EXCEEDED" | "CANCELLED" => Error::unavailable(message),
            "PERMISSION_DENIED" | "UNAUTHENTICATED" => Error::unauthorized(message),
            "NOT_FOUND" => {
                Error::not_found(format!("temporal namespace {namespace:?} ({message})"))
            }
            "INVALID_ARGUMENT" | "UNIMPLEMENTED" => Error::invalid_request(message),
            _ => Error::metric(metric.clone(), message),
        },
        MetricsError::InvalidResponse { context, .. } => Error::InvalidResponse {
            context: context.clone(),
            message,
            source: None,
        },
        // `Error::Metric` names the metric itself: its message is the rest.
        MetricsError::Empty { metric, .. }
        | MetricsError::MultipleSeries { metric, .. }
        | MetricsError::NotFinite { metric, .. }
        | MetricsError::UnexpectedResultType { metric, .. }
        | MetricsError::Pointer { metric, .. } => {
            Error::metric(metric.clone(), without_metric(&message, metric))
        }
    }
}

/// A message without its leading ``metric `name`: `` (the core error names the metric itself).
fn without_metric(message: &str, metric: &str) -> String {
    message
        .strip_prefix(&format!("metric `{metric}`: "))
        .unwrap_or(message)
        .to_owned()
}

/// Shortens `text` to at most `max` characters (on a char boundary), marking the cut with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((idx, _)) => format!("{}…", &text[..idx]),
    }
}

/// A URL for messages: scheme, host, port and path only (query strings may hold API keys).
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("  abc  ", 5), "abc");
        assert_eq!(truncate("ééééé", 3), "ééé…");
    }

    #[test]
    fn urls_lose_query_and_credentials() {
        let url = url::Url::parse("https://user:pw@host:8080/p/q?api_key=secret#x").unwrap();
        assert_eq!(display_url(&url), "https://host:8080/p/q");
    }

    #[test]
    fn classes() {
        let e: Error = MetricsError::Empty {
            metric: "m".into(),
            query: "q".into(),
        }
        .into();
        assert!(matches!(e, Error::Metric { ref metric, .. } if metric == "m"));
        let e: Error = MetricsError::Prometheus {
            metric: "m".into(),
            status: 400,
            error_type: "bad_data".into(),
            error: "parse error".into(),
            query: "q(".into(),
        }
        .into();
        assert_eq!(e.kind(), "invalid_request");
        assert!(e.to_string().contains("bad_data"));
        let e: Error = MetricsError::Http {
            metric: "m".into(),
            url: "u".into(),
            status: 502,
            body: "bad gateway".into(),
        }
        .into();
        assert!(e.is_retryable());
    }
}
