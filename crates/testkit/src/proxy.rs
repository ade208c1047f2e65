//! The steps every loopback proxy of a test harness repeats, whatever it injects in between:
//! read the request whole ([`BufferedRequest::read`]), send it upstream and read the answer
//! whole ([`BufferedRequest::send`]), then answer it ([`UpstreamAnswer::into_response`]).
//!
//! ```no_run
//! use axum::extract::Request;
//! use axum::response::{IntoResponse, Response};
//! use fleetscale_testkit::proxy::BufferedRequest;
//!
//! async fn forward(client: &reqwest::Client, request: Request) -> Response {
//!     let request = match BufferedRequest::read(request).await {
//!         Ok(r) => r,
//!         Err(refused) => return refused,
//!     };
//!     let only_content_type =
//!         |name: &axum::http::HeaderName| name == axum::http::header::CONTENT_TYPE;
//!     match request.send(client, "http://127.0.0.1:9090", only_content_type).await {
//!         Ok(answer) => answer.into_response(),
//!         Err(failed) => failed,
//!     }
//! }
//! ```

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The largest request body a proxy reads (more is answered `400 Bad Request`).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// A request read whole, to be inspected and then sent upstream.
#[derive(Clone, Debug)]
pub struct BufferedRequest {
    /// The method.
    pub method: Method,
    /// The path and query, as sent (`/` when the request had none).
    pub path_and_query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// An upstream answer read whole: what a proxy passes back.
#[derive(Clone, Debug)]
pub struct UpstreamAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, if any (the only header passed back).
    pub content_type: Option<HeaderValue>,
    /// Its body (empty when reading it failed).
    pub body: Bytes,
}

impl BufferedRequest {
    /// Reads `request` whole.
    ///
    /// # Errors
    /// `400 Bad Request` with the reason when the body cannot be read or exceeds [`MAX_BODY`].
    pub async fn read(request: Request) -> Result<Self, Response> {
        let method = request.method().clone();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let headers = request.headers().clone();
        match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
            Ok(body) => Ok(BufferedRequest {
                method,
                path_and_query,
                headers,
                body,
            }),
            Err(e) => Err((StatusCode::BAD_REQUEST, e.to_string()).into_response()),
        }
    }

    /// Sends this request to `upstream` (`http://host:port`, no trailing slash) with the same
    /// method, path, query and body, and the headers `forward_header` accepts, and reads the
    /// answer whole.
    ///
    /// # Errors
    /// `502 Bad Gateway` with `proxy: <reason>` when the upstream cannot be reached.
    pub async fn send(
        self,
        client: &reqwest::Client,
        upstream: &str,
        forward_header: impl Fn(&HeaderName) -> bool,
    ) -> Result<UpstreamAnswer, Response> {
        let mut request = client
            .request(self.method, format!("{upstream}{}", self.path_and_query))
            .body(self.body);
        for (name, value) in self.headers.iter().filter(|(n, _)| forward_header(n)) {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(answer) => {
                let status = answer.status();
                let content_type = answer.headers().get(CONTENT_TYPE).cloned();
                let body = answer.bytes().await.unwrap_or_default();
                Ok(UpstreamAnswer {
                    status,
                    content_type,
                    body,
                })
            }
            Err(e) => Err((StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response()),
        }
    }
}

impl UpstreamAnswer {
    /// The answer as the proxy's own: the status, the `Content-Type` and the body.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        if let Some(ct) = self.content_type {
            response.headers_mut().insert(CONTENT_TYPE, ct);
        }
        response
    }
}
