//! [`start_proxy`]: a loopback reverse proxy that can demand an `Authorization` header and delay
//! answers, put in front of a real Prometheus to test auth and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use fleetscale_testkit::proxy::BufferedRequest;

use super::LoopbackServer;

/// What the proxy does with each request.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Where requests go (path and query kept).
    pub upstream: SocketAddr,
    /// When set, a request whose `Authorization` header is not exactly this gets
    /// `401 Unauthorized` with a plain-text body (as an authenticating gateway would).
    pub require_authorization: Option<String>,
    /// Wait this long before forwarding (to test client timeouts).
    pub delay: Duration,
}

impl ProxyOptions {
    /// Forward to `upstream`, no auth, no delay.
    pub fn new(upstream: SocketAddr) -> Self {
        ProxyOptions {
            upstream,
            require_authorization: None,
            delay: Duration::ZERO,
        }
    }

    /// Demand this exact `Authorization` value.
    pub fn require_authorization(mut self, value: impl Into<String>) -> Self {
        self.require_authorization = Some(value.into());
        self
    }

    /// Delay every answer.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone)]
struct ProxyState {
    options: ProxyOptions,
    client: reqwest::Client,
}

/// Starts the proxy on a free loopback port.
///
/// # Errors
/// When no port can be bound.
pub fn start_proxy(options: ProxyOptions) -> std::io::Result<LoopbackServer> {
    let state = ProxyState {
        options,
        client: reqwest::Client::new(),
    };
    LoopbackServer::start(axum::Router::new().fallback(forward).with_state(state))
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    if let Some(expected) = &state.options.require_authorization {
        let given = request.headers().get(AUTHORIZATION);
        if given.map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "401 Unauthorized: bad or missing token\n",
            )
                .into_response();
        }
    }
    if !state.options.delay.is_zero() {
        tokio::time::sleep(state.options.delay).await;
    }
    let request = match BufferedRequest::read(request).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let upstream = format!("http://{}", state.options.upstream);
    match request
        .send(&state.client, &upstream, |name| name == CONTENT_TYPE)
        .await
    {
        Ok(answer) => answer.into_response(),
        Err(failed) => failed,
    }
}
