//! The test kit against real loopback servers: the proxy steps forward what they should, the
//! PKI writes what it made, nothing secret shows in `Debug`.

use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::any;
use fleetscale_testkit::pki::TestPki;
use fleetscale_testkit::proxy::BufferedRequest;
use fleetscale_testkit::server::{closed_port, LoopbackServer};

/// An upstream that answers with what it received: method, path and query, the `x-test`
/// header (or `-`), the body; with `Content-Type: text/x-echo`.
fn echo_upstream() -> LoopbackServer {
    LoopbackServer::start(
        axum::Router::new().fallback(any(|request: Request| async move {
            let head = format!(
                "{} {} x-test={}",
                request.method(),
                request.uri(),
                request
                    .headers()
                    .get("x-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
            );
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap();
            let mut answer = Response::new(axum::body::Body::from(format!(
                "{head} body={}",
                String::from_utf8_lossy(&body)
            )));
            *answer.status_mut() = StatusCode::ACCEPTED;
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, "text/x-echo".parse().unwrap());
            answer
        })),
    )
    .unwrap()
}

/// A proxy in front of `upstream` that forwards the headers `forward_all` says (all but
/// `Host`, or none).
fn proxy_to(upstream: String, forward_all: bool) -> LoopbackServer {
    let client = reqwest::Client::new();
    LoopbackServer::start(axum::Router::new().fallback(any(move |request: Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let request = match BufferedRequest::read(request).await {
                Ok(r) => r,
                Err(refused) => return refused,
            };
            match request
                .send(&client, &upstream, |name| forward_all && name != HOST)
                .await
            {
                Ok(answer) => answer.into_response(),
                Err(failed) => failed,
            }
        }
    })))
    .unwrap()
}

async fn post(url: &str) -> (StatusCode, HeaderMap, String) {
    let answer = reqwest::Client::new()
        .post(url)
        .header("x-test", "kept")
        .body("payload")
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    (status, headers, answer.text().await.unwrap())
}

#[tokio::test]
async fn the_proxy_steps_forward_method_path_query_body_and_the_chosen_headers() {
    let upstream = echo_upstream();
    for (forward_all, seen_header) in [(true, "kept"), (false, "-")] {
        let proxy = proxy_to(upstream.url(), forward_all);
        let (status, headers, body) = post(&format!("{}/a/b?c=d", proxy.url())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "forward_all={forward_all}");
        assert_eq!(
            headers.get(CONTENT_TYPE).unwrap(),
            "text/x-echo",
            "forward_all={forward_all}"
        );
        assert_eq!(
            body,
            format!("POST /a/b?c=d x-test={seen_header} body=payload"),
            "forward_all={forward_all}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway_naming_the_proxy() {
    let proxy = proxy_to(format!("http://{}", closed_port().unwrap()), true);
    let (status, _, body) = post(&proxy.url()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("proxy: "), "{body}");
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_before_it_reaches_the_upstream() {
    use fleetscale_testkit::proxy::MAX_BODY;
    // An upstream that answers with the length of the body it received, whatever its size.
    let upstream = LoopbackServer::start(axum::Router::new().fallback(any(
        |request: Request| async move {
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            body.len().to_string()
        },
    )))
    .unwrap();
    let proxy = proxy_to(upstream.url(), true);
    let client = reqwest::Client::new();
    let at_limit = client
        .post(proxy.url())
        .body(vec![b'x'; MAX_BODY])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), StatusCode::OK);
    assert_eq!(at_limit.text().await.unwrap(), MAX_BODY.to_string());
    let over = client
        .post(proxy.url())
        .body(vec![b'x'; MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn the_pki_writes_each_pem_it_made_and_hides_them_from_debug() {
    let pki = TestPki::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    for (name, path, pem) in [
        ("ca", &files.ca, &pki.ca_pem),
        ("server_cert", &files.server_cert, &pki.server_cert_pem),
        ("server_key", &files.server_key, &pki.server_key_pem),
        ("client_cert", &files.client_cert, &pki.client_cert_pem),
        ("client_key", &files.client_key, &pki.client_key_pem),
        ("other_ca", &files.other_ca, &pki.other_ca_pem),
    ] {
        assert_eq!(&std::fs::read_to_string(path).unwrap(), pem, "{name}");
        let kind = if name.ends_with("key") {
            "PRIVATE KEY"
        } else {
            "CERTIFICATE"
        };
        assert!(
            pem.starts_with(&format!("-----BEGIN {kind}-----")),
            "{name}: {pem}"
        );
    }
    assert_ne!(pki.ca_pem, pki.other_ca_pem);
    assert_ne!(pki.client_cert_pem, pki.other_client_cert_pem);
    assert_eq!(format!("{pki:?}"), "TestPki { .. }");

    let tls = pki.server_tls(true);
    assert_eq!(tls.cert_pem, pki.server_cert_pem);
    assert_eq!(tls.client_ca_pem.as_deref(), Some(pki.ca_pem.as_str()));
    assert_eq!(pki.server_tls(false).client_ca_pem, None);
}
