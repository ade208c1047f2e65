//! The fake's HTTP server (axum).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::state::{ApiErr, ApiResult, FakeConfig, FakeFly, FaultKind, Inner, RequestRecord};
use crate::client::{LEASE_NONCE_HEADER, REQUEST_ID_HEADER};

#[derive(Clone)]
struct AppState {
    fake: FakeFly,
    shutdown: CancellationToken,
}

/// A running fake Machines API server.
///
/// Dropping it stops the server too (without waiting); prefer [`FakeFlyServer::shutdown`].
#[derive(Debug)]
pub struct FakeFlyServer {
    addr: SocketAddr,
    fake: FakeFly,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeFlyServer {
    /// Binds `addr` (use port 0 for a free port) and serves a new, empty fake in the
    /// background. This is what `fleetscale fake fly --listen ADDR` runs.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr, config: FakeConfig) -> std::io::Result<FakeFlyServer> {
        FakeFlyServer::serve(addr, FakeFly::new(config)).await
    }

    /// Like [`FakeFlyServer::bind`] with an existing fake (e.g. seeded with apps).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn serve(addr: SocketAddr, fake: FakeFly) -> std::io::Result<FakeFlyServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let router = router(AppState {
            fake: fake.clone(),
            shutdown: shutdown.clone(),
        });
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "fake Fly server stopped with an error");
            }
        });
        tracing::info!(%addr, "fake Fly Machines API listening");
        Ok(FakeFlyServer {
            addr,
            fake,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the value for `FLY_FLAPS_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state handle.
    pub fn fake(&self) -> &FakeFly {
        &self.fake
    }

    /// Stops accepting, ends hanging requests and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Resolves when the server has been told to stop (for binaries serving until Ctrl-C).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }
}

impl Drop for FakeFlyServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route("/v1/apps/{app}", get(get_app))
        .route(
            "/v1/apps/{app}/machines",
            get(list_machines).post(create_machine),
        )
        .route(
            "/v1/apps/{app}/machines/{id}",
            machine_call(MethodFilter::GET, |f, app, id, _| {
                f.api_get_machine(app, id)
            })
            .delete(destroy_machine),
        )
        .route(
            "/v1/apps/{app}/machines/{id}/start",
            machine_call(MethodFilter::POST, Inner::api_start),
        )
        .route("/v1/apps/{app}/machines/{id}/stop", post(stop_machine))
        .route(
            "/v1/apps/{app}/machines/{id}/suspend",
            machine_call(MethodFilter::POST, Inner::api_suspend),
        )
        .route(
            "/v1/apps/{app}/machines/{id}/cordon",
            machine_call(MethodFilter::POST, |f, app, id, nonce| {
                f.api_cordon(app, id, true, nonce)
            }),
        )
        .route(
            "/v1/apps/{app}/machines/{id}/uncordon",
            machine_call(MethodFilter::POST, |f, app, id, nonce| {
                f.api_cordon(app, id, false, nonce)
            }),
        )
        .route("/v1/apps/{app}/machines/{id}/wait", get(wait_machine))
        .route(
            "/v1/apps/{app}/machines/{id}/lease",
            machine_call(MethodFilter::GET, |f, app, id, _| f.api_lease_get(app, id))
                .post(acquire_lease)
                .merge(machine_call(MethodFilter::DELETE, Inner::api_lease_release)),
        )
        .route("/metrics", get(metrics))
        .route("/graphql", post(graphql))
        .fallback(|| async { reply(Err(ApiErr::new(404, "not found"))) })
        .layer(middleware::from_fn_with_state(state.clone(), frontdoor))
        .with_state(state)
}

/// A call on one machine that takes no body: the fake's state, the app, the machine id and the
/// lease nonce (`fly-machine-lease-nonce`) when the request carries one.
type MachineCall = fn(&mut Inner, &str, &str, Option<&str>) -> ApiResult;

/// The route of `method` on `/v1/apps/{app}/machines/{id}[/...]` answering `call`.
fn machine_call(method: MethodFilter, call: MachineCall) -> MethodRouter<AppState> {
    on(
        method,
        move |State(st): State<AppState>,
              Path((app, id)): Path<(String, String)>,
              headers: HeaderMap| async move {
            reply(call(
                &mut st.fake.lock(),
                &app,
                &id,
                nonce(&headers).as_deref(),
            ))
        },
    )
}

fn reply(r: ApiResult) -> Response {
    let (status, body) = match r {
        Ok((s, b)) => (s, b),
        Err(e) => (e.status, e.body),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn nonce(headers: &HeaderMap) -> Option<String> {
    headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn json_body(body: &Bytes) -> Result<Value, ApiErr> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| ApiErr::new(400, format!("invalid JSON body: {e}")))
}

/// Request IDs, auth, faults, rate limits and the request log, around every handler.
async fn frontdoor(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let nonce = nonce(req.headers());
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let at = SystemTime::now();
    let (request_id, fault) = {
        let mut g = st.fake.lock();
        let id = g.next_request_id();
        (id, g.take_fault(&method, &path))
    };
    let record = |status: u16| RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        status,
        at,
        request_id: request_id.clone(),
        nonce: nonce.clone(),
        user_agent: user_agent.clone(),
    };

    let mut response = 'resp: {
        if path != "/metrics" {
            let graphql = path == "/graphql";
            if let Err(e) = st.fake.lock().check_auth(auth.as_deref(), graphql) {
                if graphql {
                    // GraphQL clients read `errors`, not Fly's REST `error`.
                    let msg = e.body.get("error").cloned().unwrap_or_default();
                    let body = serde_json::json!({ "errors": [{ "message": msg }] });
                    break 'resp reply(Err(ApiErr {
                        status: e.status,
                        body,
                    }));
                }
                break 'resp reply(Err(e));
            }
        }
        match fault {
            Some(FaultKind::Status { status, body }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                break 'resp (status, body).into_response();
            }
            Some(FaultKind::RateLimited { retry_after }) => {
                let mut r = reply(Err(ApiErr::new(429, "rate limit exceeded")));
                if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                break 'resp r;
            }
            Some(FaultKind::Latency(d)) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = st.shutdown.cancelled() => {}
                }
            }
            Some(FaultKind::Hang) => {
                st.fake.lock().log(record(0));
                st.shutdown.cancelled().await;
                return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
            }
            Some(FaultKind::Malformed) => {
                break 'resp (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    "{\"id\": \"truncated",
                )
                    .into_response();
            }
            Some(FaultKind::DropConnection) => {
                st.fake.lock().log(record(0));
                let stream = futures::stream::once(async {
                    Err::<Bytes, std::io::Error>(std::io::Error::other(
                        "connection dropped by fault injection",
                    ))
                });
                let mut r = Response::new(Body::from_stream(stream));
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    r.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
                return r;
            }
            None => {}
        }
        let limited = st.fake.lock().rate_limited(&method, &path);
        if let Some(secs) = limited {
            let mut r = reply(Err(ApiErr::new(429, "rate limit exceeded")));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            break 'resp r;
        }
        next.run(req).await
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    st.fake.lock().log(record(response.status().as_u16()));
    response
}

async fn list_apps(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    reply(
        st.fake
            .lock()
            .api_list_apps(q.get("org_slug").map(String::as_str)),
    )
}

async fn create_app(State(st): State<AppState>, body: Bytes) -> Response {
    let r = json_body(&body).and_then(|b| st.fake.lock().api_create_app(&b));
    reply(r)
}

async fn get_app(State(st): State<AppState>, Path(app): Path<String>) -> Response {
    reply(st.fake.lock().api_get_app(&app))
}

async fn list_machines(
    State(st): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    reply(st.fake.lock().api_list_machines(&app, &q))
}

async fn create_machine(
    State(st): State<AppState>,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let r = json_body(&body).and_then(|b| st.fake.lock().api_create_machine(&app, &b));
    reply(r)
}

async fn destroy_machine(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let force = flag("force") || flag("kill");
    reply(
        st.fake
            .lock()
            .api_destroy(&app, &id, force, nonce(&headers).as_deref()),
    )
}

async fn stop_machine(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The body (`signal`, `timeout`) is validated but the fake's stop time is its delay.
    let r = json_body(&body).and_then(|b| {
        if let Some(t) = b.get("timeout") {
            if !(t.is_string() || t.is_number() || t.is_null()) {
                return Err(ApiErr::new(400, "timeout must be a duration"));
            }
        }
        st.fake
            .lock()
            .api_stop(&app, &id, nonce(&headers).as_deref())
    });
    reply(r)
}

async fn wait_machine(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let state = q.get("state").cloned().unwrap_or_else(|| "started".into());
    let secs = match q
        .get("timeout")
        .map(|t| t.trim_end_matches('s').parse::<u64>())
    {
        None => 60,
        Some(Ok(s)) if (1..=60).contains(&s) => s,
        Some(_) => {
            return reply(Err(ApiErr::new(
                400,
                "invalid timeout: must be between 1 and 60 seconds",
            )))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match st.fake.lock().api_wait_check(&app, &id, &state) {
            Err(e) => return reply(Err(e)),
            Ok(Some(v)) => return reply(Ok((200, v))),
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            return reply(Err(ApiErr::new(
                408,
                format!("deadline_exceeded: machine did not reach state {state} within {secs}s"),
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = st.shutdown.cancelled() => return reply(Err(ApiErr::new(503, "shutting down"))),
        }
    }
}

async fn acquire_lease(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = json_body(&body).and_then(|b| {
        // fly-go sends `?ttl=N`; the docs show `{ttl, description}` in the body.
        let ttl = b
            .get("ttl")
            .and_then(Value::as_u64)
            .or_else(|| q.get("ttl").and_then(|t| t.parse().ok()))
            .unwrap_or(30);
        let description = b
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        st.fake
            .lock()
            .api_lease_acquire(&app, &id, ttl, &description, nonce(&headers).as_deref())
    });
    reply(r)
}

async fn graphql(State(st): State<AppState>, body: Bytes) -> Response {
    let (status, value) = super::graphql::execute(&st.fake.lock(), &body);
    reply(Ok((status, value)))
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::state::METRICS_CONTENT_TYPE),
        )],
        st.fake.metrics_text(),
    )
        .into_response()
}
