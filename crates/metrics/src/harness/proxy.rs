//! [`start_proxy`]: a loopback reverse proxy that can demand an `Authorization` header and delay
//! answers, put in front of a real Prometheus to test auth and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let body = match axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let url = format!("http://{}{path}", state.options.upstream);
    let mut upstream = state.client.request(method, url).body(body);
    if let Some(ct) = content_type {
        upstream = upstream.header(CONTENT_TYPE, ct);
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let ct = answer.headers().get(CONTENT_TYPE).cloned();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(ct) = ct {
                response.headers_mut().insert(CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    }
}
