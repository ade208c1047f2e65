//! Sources against canned HTTP answers on loopback: the wire details a real Prometheus does not
//! produce on demand (proxy errors, rate limits, warnings, Fly's path prefix, malformed bodies),
//! and the HTTP JSON source.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetscale_core::testing::LogBuffer;
use fleetscale_core::{Error, MetricSource, Scope};
use fleetscale_metrics::harness::LoopbackServer;
use fleetscale_metrics::{
    HttpJsonConfig, HttpJsonSource, MetricsError, PrometheusConfig, PrometheusSource, QueryMethod,
};

mod mentions;
use mentions::assert_mentions;

/// What the canned server saw.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    body: String,
}

#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn answer(State(c): State<Canned>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    c.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        authorization: parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned()),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &c.headers {
        headers.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    (
        StatusCode::from_u16(c.status).unwrap(),
        headers,
        c.body.clone(),
    )
        .into_response()
}

struct Server {
    server: LoopbackServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(status: u16, content_type: &str, body: &str) -> Server {
        Server::with(
            status,
            vec![("content-type", content_type.to_owned())],
            body,
            Duration::ZERO,
        )
    }

    fn with(
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &str,
        delay: Duration,
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let canned = Canned {
            status,
            headers,
            body: body.to_owned(),
            delay,
            seen: seen.clone(),
        };
        let server =
            LoopbackServer::start(axum::Router::new().fallback(answer).with_state(canned)).unwrap();
        Server { server, seen }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

const JSON: &str = "application/json";

/// The value of parameter `name` in a query string or a form body, percent-decoded.
fn param(encoded: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(encoded.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn prom(server: &Server, query: &str) -> PrometheusSource {
    PrometheusSource::new(PrometheusConfig::new("m", server.url(), query)).unwrap()
}

#[tokio::test]
async fn fly_path_prefix_token_and_parameters_are_sent_as_documented() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"app":"web"},"value":[1700000000,"12"]}]}}"#;
    let server = Server::start(200, JSON, body);
    let cfg = PrometheusConfig::new(
        "conc",
        format!("{}/prometheus/my-org/", server.url()),
        "sum(fly_app_concurrency{app=\"$APP_NAME\"})",
    )
    .with_token("FlyV1 fm2_abc")
    .with_timeout(Duration::from_millis(2500));
    let src = PrometheusSource::new(cfg.clone()).unwrap();
    assert_eq!(src.collect(&Scope::new("web")).await.unwrap(), 12.0);
    let seen = server.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/prometheus/my-org/api/v1/query");
    assert_eq!(seen.authorization.as_deref(), Some("FlyV1 fm2_abc"));
    let query = "sum(fly_app_concurrency{app=\"web\"})";
    assert_eq!(param(&seen.query, "query").as_deref(), Some(query));
    assert_eq!(param(&seen.query, "timeout").as_deref(), Some("2.5"));

    // POST sends the same as a form body; a plain token becomes a bearer token.
    let post = PrometheusSource::new(cfg.with_method(QueryMethod::Post).with_token("plain-token"))
        .unwrap();
    assert_eq!(post.collect(&Scope::new("web")).await.unwrap(), 12.0);
    let seen = server.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer plain-token"));
    assert_eq!(param(&seen.body, "query").as_deref(), Some(query));

    // No token, no header.
    prom(&server, "up")
        .collect(&Scope::new("web"))
        .await
        .unwrap();
    assert_eq!(server.last().authorization, None);
}

#[tokio::test]
async fn warnings_are_logged_and_returned() {
    let body = r#"{"status":"success","warnings":["PromQL warning: encountered a mix of histograms"],"data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
    let server = Server::start(200, JSON, body);
    let buf = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let buf = buf.clone();
            move || buf.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let reading = prom(&server, "x").read(&Scope::new("web")).await.unwrap();
    assert_eq!(reading.value, 3.0);
    assert_eq!(
        reading.warnings,
        vec!["PromQL warning: encountered a mix of histograms"]
    );
    let log = buf.text();
    assert_mentions(&log, &["WARN", "encountered a mix of histograms"]);
}

#[tokio::test]
async fn foreign_and_broken_answers_keep_their_context() {
    // A 200 that is not JSON (a login page): InvalidResponse showing where and what.
    let html = Server::start(200, "text/html", "<html><title>Sign in</title></html>");
    let err = prom(&html, "up").read(&Scope::new("a")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, MetricsError::InvalidResponse { .. }),
        "{text}"
    );
    assert_mentions(
        &text,
        &["GET http://127.0.0.1:", "/api/v1/query", "Sign in"],
    );
    let core: Error = err.into();
    assert_eq!(core.kind(), "invalid_response");

    // Truncated JSON.
    let cut = Server::start(
        200,
        JSON,
        r#"{"status":"success","data":{"resultType":"vec"#,
    );
    let err = prom(&cut, "up").read(&Scope::new("a")).await.unwrap_err();
    assert!(matches!(err, MetricsError::InvalidResponse { .. }), "{err}");

    // A load balancer's 502: retryable Unavailable with the body.
    let lb = Server::start(502, "text/html", "<h1>502 Bad Gateway</h1>");
    let err = prom(&lb, "up").read(&Scope::new("a")).await.unwrap_err();
    assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
    let core: Error = err.into();
    assert!(
        matches!(core, Error::Unavailable { .. }) && core.is_retryable(),
        "{core}"
    );

    // Prometheus' own 503 error body.
    let busy = Server::start(
        503,
        JSON,
        r#"{"status":"error","errorType":"unavailable","error":"TSDB not ready"}"#,
    );
    let err = prom(&busy, "up").read(&Scope::new("a")).await.unwrap_err();
    assert!(err.to_string().contains("TSDB not ready"), "{err}");
    assert!(Error::from(err).is_retryable());

    // A query the server gave up on (errorType timeout) is retryable.
    let slow = Server::start(
        503,
        JSON,
        r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
    );
    let core: Error = prom(&slow, "up")
        .collect(&Scope::new("a"))
        .await
        .unwrap_err();
    assert!(core.is_retryable(), "{core}");

    // 429 with Retry-After.
    let limited = Server::with(
        429,
        vec![("retry-after", "7".to_owned())],
        "slow down",
        Duration::ZERO,
    );
    let core = prom(&limited, "up")
        .collect(&Scope::new("a"))
        .await
        .unwrap_err();
    assert_eq!(core.retry_after(), Some(Duration::from_secs(7)), "{core}");

    // 403 from a gateway.
    let denied = Server::start(403, "text/plain", "token expired");
    let err = prom(&denied, "up")
        .read(&Scope::new("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MetricsError::Unauthorized { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("token expired"));

    // An unknown errorType from a Prometheus-compatible server is reported, not a decode error.
    let odd = Server::start(
        422,
        JSON,
        r#"{"status":"error","errorType":"vm_unsupported","error":"unsupported"}"#,
    );
    let err = prom(&odd, "up").read(&Scope::new("a")).await.unwrap_err();
    assert!(err.to_string().contains("vm_unsupported"), "{err}");
}

#[tokio::test]
async fn a_huge_body_is_refused_without_reading_it_all() {
    let huge = "x".repeat(9 * 1024 * 1024);
    let server = Server::start(200, JSON, &huge);
    let err = prom(&server, "up")
        .read(&Scope::new("a"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn http_json_reads_numbers_and_numeric_strings() {
    let server = Server::start(
        200,
        JSON,
        r#"{"queues":{"my app":{"pending":17,"as_text":" 4.5 "}},"list":[{"n":"-2"}]}"#,
    );
    let cfg = |pointer: &str| {
        HttpJsonConfig::new(
            "backlog",
            format!("{}/stats/$APP_NAME?api_key=SECRETKEY", server.url()),
            pointer,
        )
    };
    let src = HttpJsonSource::new(cfg("/queues/my app/pending").with_token("tok")).unwrap();
    assert_eq!(src.collect(&Scope::new("my app")).await.unwrap(), 17.0);
    let seen = server.last();
    assert_eq!(seen.path, "/stats/my%20app");
    assert_eq!(seen.query, "api_key=SECRETKEY");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tok"));

    let text = HttpJsonSource::new(cfg("/queues/my app/as_text")).unwrap();
    assert_eq!(text.collect(&Scope::new("x")).await.unwrap(), 4.5);
    let list = HttpJsonSource::new(cfg("/list/0/n")).unwrap();
    assert_eq!(list.collect(&Scope::new("x")).await.unwrap(), -2.0);

    // Missing pointer: a Metric error naming the pointer, never the query string's key.
    let missing = HttpJsonSource::new(cfg("/queues/nope")).unwrap();
    let err = missing.read(&Scope::new("x")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MetricsError::Pointer { .. }), "{text}");
    assert!(text.contains("/queues/nope"), "{text}");
    assert!(!text.contains("SECRETKEY"), "{text}");
    assert_eq!(Error::from(err).kind(), "metric");
}

#[tokio::test]
async fn http_json_failures_are_classified() {
    let not_json = Server::start(200, "text/plain", "all good");
    let src = HttpJsonSource::new(HttpJsonConfig::new("m", not_json.url(), "/n")).unwrap();
    let err = src.read(&Scope::new("a")).await.unwrap_err();
    assert!(matches!(err, MetricsError::InvalidResponse { .. }), "{err}");
    assert!(err.to_string().contains("all good"), "{err}");

    let denied = Server::start(401, "text/plain", "who are you");
    let src = HttpJsonSource::new(HttpJsonConfig::new("m", denied.url(), "/n")).unwrap();
    assert!(matches!(
        src.collect(&Scope::new("a")).await.unwrap_err(),
        Error::Unauthorized { .. }
    ));

    let broken = Server::start(500, "text/plain", "oops");
    let src = HttpJsonSource::new(HttpJsonConfig::new("m", broken.url(), "/n")).unwrap();
    assert!(src
        .collect(&Scope::new("a"))
        .await
        .unwrap_err()
        .is_retryable());

    let missing = Server::start(404, "text/plain", "no such queue");
    let src = HttpJsonSource::new(HttpJsonConfig::new("m", missing.url(), "/n")).unwrap();
    assert_eq!(
        src.collect(&Scope::new("a")).await.unwrap_err().kind(),
        "invalid_response"
    );

    let slow = Server::with(
        200,
        vec![("content-type", JSON.to_owned())],
        r#"{"n":1}"#,
        Duration::from_secs(30),
    );
    let src = HttpJsonSource::new(
        HttpJsonConfig::new("m", slow.url(), "/n").with_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    assert!(matches!(
        src.collect(&Scope::new("a")).await.unwrap_err(),
        Error::Timeout { .. }
    ));

    let port = fleetscale_metrics::harness::closed_port().unwrap();
    let src =
        HttpJsonSource::new(HttpJsonConfig::new("m", format!("http://{port}/x"), "")).unwrap();
    assert!(matches!(
        src.collect(&Scope::new("a")).await.unwrap_err(),
        Error::Unavailable { .. }
    ));
}
