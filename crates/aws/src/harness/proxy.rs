//! [`FaultProxy`]: a loopback proxy in front of moto that records every EC2 action and injects
//! the failures moto cannot produce.
//!
//! EC2's Query API is `POST /` with a form body (`Action=RunInstances&Version=2016-11-15&…`);
//! errors are XML `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error>
//! </Errors><RequestID>…</RequestID></Response>` with an HTTP 4xx (client) or 5xx (server)
//! status (EC2 API reference, "Error codes" and "Query requests").

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::Response;
use fleetscale_testkit::proxy::BufferedRequest;
use fleetscale_testkit::server::LoopbackServer;

/// What the proxy does to one request of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers this EC2 error without forwarding (the call had no effect), e.g.
    /// `RequestLimitExceeded` (503) or `InsufficientInstanceCapacity` (500).
    Error {
        /// HTTP status.
        status: u16,
        /// EC2 error code.
        code: String,
        /// Message.
        message: String,
    },
    /// Forwards the request (it takes effect), then answers this error instead of moto's
    /// answer: an answer lost on the way back.
    ForwardThenError {
        /// HTTP status.
        status: u16,
        /// EC2 error code.
        code: String,
        /// Message.
        message: String,
    },
    /// Forwards the request (it takes effect), then holds the answer this long: long enough,
    /// the client times out or is cancelled without seeing it.
    ForwardThenDelay(Duration),
    /// Answers this body as-is without forwarding (a malformed answer, e.g. an HTML error page
    /// from something in between).
    Raw {
        /// HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl Fault {
    /// EC2's throttling answer.
    pub fn throttled() -> Fault {
        Fault::Error {
            status: 503,
            code: "RequestLimitExceeded".into(),
            message: "Request limit exceeded.".into(),
        }
    }

    /// EC2's capacity answer.
    pub fn insufficient_capacity() -> Fault {
        Fault::Error {
            status: 500,
            code: "InsufficientInstanceCapacity".into(),
            message: "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested.".into(),
        }
    }

    /// A server error after the call took effect.
    pub fn lost_answer() -> Fault {
        Fault::ForwardThenError {
            status: 500,
            code: "InternalError".into(),
            message: "An internal error has occurred.".into(),
        }
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The `Action` parameter.
    pub action: String,
    /// Every form parameter, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    faults: BTreeMap<String, VecDeque<Fault>>,
    requests: Vec<RecordedRequest>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
}

/// A proxy on a free loopback port forwarding to an EC2 endpoint (moto), recording every
/// request and applying queued [`Fault`]s per action. Stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    server: LoopbackServer,
    shared: Arc<Mutex<Shared>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (e.g. [`super::MotoServer::endpoint`]).
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .build()
                .map_err(std::io::Error::other)?,
            shared: shared.clone(),
        };
        let server =
            LoopbackServer::start(axum::Router::new().fallback(forward).with_state(state))?;
        Ok(FaultProxy { server, shared })
    }

    /// `http://127.0.0.1:<port>`: use it as the pool's endpoint.
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `fault` to the next `times` requests of `action` (after faults queued before).
    pub fn inject(&self, action: &str, fault: Fault, times: usize) {
        let mut s = self.shared();
        let q = s.faults.entry(action.to_string()).or_default();
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared().faults.clear();
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().requests.clone()
    }

    /// The requests of `action` seen so far.
    pub fn requests_of(&self, action: &str) -> Vec<RecordedRequest> {
        self.shared()
            .requests
            .iter()
            .filter(|r| r.action == action)
            .cloned()
            .collect()
    }

    /// How many requests of `action` the proxy saw (faulted ones included).
    pub fn count(&self, action: &str) -> usize {
        self.shared()
            .requests
            .iter()
            .filter(|r| r.action == action)
            .count()
    }

    /// Requests seen, by action.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.shared().requests {
            *m.entry(r.action.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Forgets the requests seen so far.
    pub fn reset_counts(&self) {
        self.shared().requests.clear();
    }
}

fn error_response(status: u16, code: &str, message: &str) -> Response {
    let request_id = format!("fleetscale-proxy-{:016x}", crate::random::u64());
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
        xml_escape(code),
        xml_escape(message)
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let request = match BufferedRequest::read(request).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let fault = {
        let mut s = state.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = s.faults.get_mut(&action).and_then(VecDeque::pop_front);
        s.requests.push(RecordedRequest {
            action: action.clone(),
            params,
            fault: fault.clone(),
        });
        fault
    };
    if let Some(Fault::Error {
        status,
        code,
        message,
    }) = &fault
    {
        return error_response(*status, code, message);
    }
    if let Some(Fault::Raw { status, body }) = &fault {
        let mut r = Response::new(Body::from(body.clone()));
        *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return r;
    }
    let answer = match request
        .send(&state.client, &state.upstream, |name| {
            name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH
        })
        .await
    {
        Ok(a) => a,
        Err(failed) => return failed,
    };
    match fault {
        Some(Fault::ForwardThenError {
            status,
            code,
            message,
        }) => return error_response(status, &code, &message),
        Some(Fault::ForwardThenDelay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    answer.into_response()
}
