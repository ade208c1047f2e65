//! Messages a user can act on: a server that cannot be reached is named with the cause, a
//! timeout says what timed out and after how many seconds, and a failed release check names
//! the GraphQL URL and the variable that sets it.

use std::net::TcpListener;
use std::time::Duration;

use fleetscale_core::Scaler;
use fleetscale_fly::pacing::RetryConfig;
use fleetscale_fly::{
    ClientConfig, FlyError, FlyGraphql, FlyScaler, FlyScalerConfig, GraphqlConfig, MachinesClient,
};

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn client(base: &str) -> MachinesClient {
    MachinesClient::new(
        None,
        ClientConfig {
            retry: RetryConfig::none(),
            timeout: Duration::from_millis(500),
            ..ClientConfig::default().with_base_url(base)
        },
    )
    .unwrap()
}

/// The error of `GET /v1/apps/my-app` against `base`.
async fn get_app_error(base: &str) -> FlyError {
    client(base).get_app("my-app").await.unwrap_err()
}

#[tokio::test]
async fn connection_refused_names_the_server_and_the_cause() {
    let port = closed_port();
    let e = get_app_error(&format!("http://127.0.0.1:{port}")).await;
    let text = e.to_string();
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/v1/apps/my-app")),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(
        text != "error sending request" && !text.ends_with("error sending request"),
        "{text}"
    );
}

#[tokio::test]
async fn a_timeout_says_what_and_how_long_in_seconds() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let e = get_app_error(&format!("http://{addr}")).await;
    let text = e.to_string();
    assert!(
        text.contains(&format!("no answer from http://{addr} within 0.5 s")),
        "{text}"
    );
    let core: fleetscale_core::Error = e.into();
    let text = core.to_string();
    assert!(
        text.contains(&format!(
            "GET http://{addr}/v1/apps/my-app timed out after 0.5 s"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_release_check_names_the_graphql_url_and_fly_api_base_url() {
    let port = closed_port();
    let gql = FlyGraphql::new(
        None,
        GraphqlConfig {
            retry: RetryConfig::none(),
            ..GraphqlConfig::default().with_base_url(format!("http://127.0.0.1:{port}"))
        },
    )
    .unwrap();
    let scaler = FlyScaler::new(
        client(&format!("http://127.0.0.1:{}", closed_port())),
        FlyScalerConfig::new("my-app"),
    )
    .unwrap()
    .with_release_guard(gql);
    let e = scaler.paused().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "release check at http://127.0.0.1:{port}/graphql failed"
        )),
        "{text}"
    );
    assert!(text.contains("FLY_API_BASE_URL"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert_eq!(e.kind(), "unavailable", "the class is kept");
}
