//! Shared HTTP plumbing of the sources: sending with a deadline and cancellation, bounded body
//! reads, and classification of HTTP error statuses.

use std::future::Future;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use tokio_util::sync::CancellationToken;

use crate::error::{truncate, MetricsError};

/// The most of a response body a source reads (Prometheus answers for one number are tiny; this
/// only guards against a misconfigured address streaming something huge).
pub(crate) const MAX_BODY: usize = 8 * 1024 * 1024;

/// How much of a body goes into an error message.
pub(crate) const BODY_SNIPPET: usize = 300;

/// An HTTP answer whose body was read to the end (at most [`MAX_BODY`] bytes).
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after: Option<Duration>,
}

impl Answer {
    /// The start of the body as text, for error messages.
    pub fn snippet(&self) -> String {
        truncate(&String::from_utf8_lossy(&self.body), BODY_SNIPPET)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` and reads the whole body (bounded by [`MAX_BODY`]).
/// `shown_url` is the address for messages (no query string).
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    metric: &str,
    shown_url: &str,
) -> Result<Answer, MetricsError> {
    let connect = |source: reqwest::Error| MetricsError::Connect {
        metric: metric.to_owned(),
        url: shown_url.to_owned(),
        source: source.without_url(),
    };
    let mut response = request.send().await.map_err(connect)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(connect)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(MetricsError::InvalidResponse {
                metric: metric.to_owned(),
                context: shown_url.to_owned(),
                message: format!("response body larger than {MAX_BODY} bytes"),
                source: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        body,
        retry_after,
    })
}

/// The error for a non-2xx answer that carries no more specific error body:
/// 401/403 -> [`MetricsError::Unauthorized`], 429 -> [`MetricsError::RateLimited`], else
/// [`MetricsError::Http`].
pub(crate) fn status_error(answer: &Answer, metric: &str, shown_url: &str) -> MetricsError {
    match answer.status {
        401 | 403 => MetricsError::Unauthorized {
            metric: metric.to_owned(),
            url: shown_url.to_owned(),
            status: answer.status,
            body: answer.snippet(),
        },
        429 => MetricsError::RateLimited {
            metric: metric.to_owned(),
            url: shown_url.to_owned(),
            retry_after: answer.retry_after,
        },
        status => MetricsError::Http {
            metric: metric.to_owned(),
            url: shown_url.to_owned(),
            status,
            body: answer.snippet(),
        },
    }
}

/// Runs `work` with a deadline and an optional cancellation token.
pub(crate) async fn bounded<T>(
    work: impl Future<Output = Result<T, MetricsError>>,
    timeout: Duration,
    cancel: Option<&CancellationToken>,
    metric: &str,
    operation: impl FnOnce() -> String,
) -> Result<T, MetricsError> {
    let timed = tokio::time::timeout(timeout, work);
    let result = match cancel {
        Some(token) => tokio::select! {
            biased;
            _ = token.cancelled() => {
                return Err(MetricsError::Cancelled { metric: metric.to_owned() })
            }
            r = timed => r,
        },
        None => timed.await,
    };
    result.unwrap_or_else(|_elapsed| {
        Err(MetricsError::Timeout {
            metric: metric.to_owned(),
            operation: operation(),
            after: timeout,
        })
    })
}

/// What went wrong with a request that got no (complete) answer, with the cause from deep in
/// the error chain (`cannot connect: tcp connect error: Connection refused (os error 111)`, a
/// DNS or TLS failure) rather than reqwest's generic `error sending request`.
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", fleetscale_core::error_causes(cause)),
        None => format!("{what}: {e}"),
    }
}

/// The HTTP client every source builds: rustls, no proxy surprises beyond reqwest's defaults,
/// a connect timeout no longer than the query timeout. A client that cannot be built is a
/// configuration error made by `bad`.
pub(crate) fn client(
    timeout: Duration,
    bad: &dyn Fn(String) -> MetricsError,
) -> Result<reqwest::Client, MetricsError> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("fleetscale-metrics/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))
}
