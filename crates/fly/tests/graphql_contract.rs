//! Contract tests of the deploy guard: `FlyGraphql` and `FlyScaler::paused` against the fake's
//! `POST /graphql` over real HTTP on loopback.

mod common;

use std::time::Duration;

use common::{client, fast_retry, seed_app, server};
use fleetscale_core::Scaler;
use fleetscale_fly::fake::{FakeConfig, Fault, FaultKind};
use fleetscale_fly::{
    FlyError, FlyGraphql, FlyScaler, FlyScalerConfig, GraphqlConfig, RetryConfig, Token,
    RELEASE_IN_PROGRESS,
};
use serde_json::{json, Value};

const APP: &str = "web";
const TOKEN: &str = "FlyV1 fm2_test";

fn gql_config(srv: &fleetscale_fly::fake::FakeFlyServer) -> GraphqlConfig {
    GraphqlConfig {
        timeout: Duration::from_secs(20),
        retry: fast_retry(),
        ..GraphqlConfig::default().with_base_url(srv.url())
    }
}

fn gql(srv: &fleetscale_fly::fake::FakeFlyServer) -> FlyGraphql {
    FlyGraphql::new(Some(Token::new(TOKEN)), gql_config(srv)).unwrap()
}

fn authed() -> FakeConfig {
    FakeConfig {
        token: Some(Token::new(TOKEN)),
        ..FakeConfig::instant()
    }
}

fn graphql_posts(srv: &fleetscale_fly::fake::FakeFlyServer) -> usize {
    srv.fake().count_requests("POST", "/graphql")
}

#[tokio::test]
async fn a_running_release_pauses_the_scaler_until_it_completes() {
    let srv = server(authed()).await;
    let c = client(&srv);
    seed_app(&c, APP, Some("app")).await;
    let scaler = FlyScaler::new(c.clone(), FlyScalerConfig::new(APP))
        .unwrap()
        .with_release_guard(gql(&srv));
    assert!(scaler.release_guard().is_some());

    // Never deployed: `currentReleaseUnprocessed: null`, not paused (fly-autoscaler panics).
    assert_eq!(srv.fake().release(APP), None);
    assert_eq!(scaler.paused().await.unwrap(), None);

    assert!(srv.fake().set_release_status(APP, Some("running")));
    assert_eq!(
        scaler.paused().await.unwrap().as_deref(),
        Some(RELEASE_IN_PROGRESS)
    );
    let r = gql(&srv).current_release(APP).await.unwrap().unwrap();
    assert!(r.is_running());
    assert_eq!(r.version, Some(1));
    assert_eq!(r.reason.as_deref(), Some("deploy"));
    assert!(r
        .image_ref
        .as_deref()
        .unwrap()
        .starts_with("registry.fly.io/"));

    // The deploy finishes: same release, now complete.
    srv.fake().set_release_status(APP, Some("complete"));
    assert_eq!(scaler.paused().await.unwrap(), None);
    let done = gql(&srv).current_release(APP).await.unwrap().unwrap();
    assert_eq!((done.status.as_str(), done.version), ("complete", Some(1)));
    assert_eq!(done.stable, Some(true));

    // A new deploy is a new release; a failed one does not pause either.
    srv.fake().set_release_status(APP, Some("running"));
    assert_eq!(
        srv.fake().release(APP).map(|r| (r.version, r.status)),
        Some((2, "running".to_owned()))
    );
    assert!(scaler.paused().await.unwrap().is_some());
    srv.fake().set_release_status(APP, Some("failed"));
    assert_eq!(scaler.paused().await.unwrap(), None);

    // One POST /graphql per check (7 above), all answered 200.
    assert_eq!(graphql_posts(&srv), 7);
    assert!(srv
        .fake()
        .request_log()
        .iter()
        .filter(|r| r.path == "/graphql")
        .all(|r| r.status == 200));
    // Unknown apps cannot get a release.
    assert!(!srv.fake().set_release_status("nope", Some("running")));
    srv.shutdown().await;
}

#[tokio::test]
async fn without_a_guard_paused_makes_no_call() {
    let srv = server(authed()).await;
    let c = client(&srv);
    seed_app(&c, APP, Some("app")).await;
    srv.fake().set_release_status(APP, Some("running"));
    let scaler = FlyScaler::new(c, FlyScalerConfig::new(APP)).unwrap();
    assert_eq!(scaler.paused().await.unwrap(), None);
    assert_eq!(graphql_posts(&srv), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unknown_app_is_a_graphql_error_and_pauses_nothing_silently() {
    let srv = server(authed()).await;
    let e = gql(&srv).current_release("ghost").await.unwrap_err();
    match &e {
        FlyError::Graphql { ctx, errors } => {
            assert_eq!(ctx.status, 200);
            assert_eq!(ctx.path, "/graphql");
            assert!(ctx.request_id.is_some(), "fly-request-id is kept");
            assert_eq!(errors[0].message, "Could not find App \"ghost\"");
            assert_eq!(errors[0].code(), Some("NOT_FOUND"));
            assert_eq!(errors[0].path, vec![json!("app")]);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("Could not find App"), "{e}");
    assert!(matches!(
        fleetscale_core::Error::from(e),
        fleetscale_core::Error::NotFound { .. }
    ));
    // Not retried: a GraphQL error is an answer.
    assert_eq!(graphql_posts(&srv), 1);

    // Through the scaler: an error, so the engine skips the tick (stage `paused`).
    let scaler = FlyScaler::new(client(&srv), FlyScalerConfig::new("ghost"))
        .unwrap()
        .with_release_guard(gql(&srv));
    let err = scaler.paused().await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
    srv.shutdown().await;
}

#[tokio::test]
async fn server_errors_rate_limits_and_dropped_connections_are_retried() {
    let srv = server(authed()).await;
    seed_app(&client(&srv), APP, Some("app")).await;
    srv.fake().set_release_status(APP, Some("running"));
    let g = gql(&srv);

    // 503, 500 (a query may be repeated), 429 with Retry-After, a dropped connection: 5 failures
    // over 2 calls of 4 attempts each.
    srv.fake().inject(
        Fault::new(FaultKind::Status {
            status: 503,
            body: "<html>unavailable</html>".into(),
        })
        .path("/graphql"),
    );
    srv.fake().inject(
        Fault::new(FaultKind::Status {
            status: 500,
            body: r#"{"errors":[{"message":"internal"}]}"#.into(),
        })
        .path("/graphql"),
    );
    srv.fake().inject(
        Fault::new(FaultKind::RateLimited {
            retry_after: Some("0".into()),
        })
        .path("/graphql"),
    );
    assert!(g.current_release(APP).await.unwrap().unwrap().is_running());
    assert_eq!(graphql_posts(&srv), 4, "3 failures, then the answer");

    srv.fake()
        .inject(Fault::new(FaultKind::DropConnection).path("/graphql"));
    assert!(g.current_release(APP).await.unwrap().unwrap().is_running());
    assert_eq!(graphql_posts(&srv), 6);

    // Persistent 502: the attempts run out and the last error is returned.
    srv.fake().inject(
        Fault::new(FaultKind::Status {
            status: 502,
            body: "bad gateway".into(),
        })
        .path("/graphql")
        .times(10),
    );
    let e = g.current_release(APP).await.unwrap_err();
    assert!(matches!(e, FlyError::Server { .. }), "{e}");
    assert_eq!(e.status(), Some(502));
    assert_eq!(graphql_posts(&srv), 10, "4 attempts");
    assert!(matches!(
        fleetscale_core::Error::from(e),
        fleetscale_core::Error::Unavailable { .. }
    ));
    srv.fake().clear_faults();

    // A 429 asking for longer than max_retry_after is returned at once.
    srv.fake().inject(
        Fault::new(FaultKind::RateLimited {
            retry_after: Some("3600".into()),
        })
        .path("/graphql"),
    );
    let e = g.current_release(APP).await.unwrap_err();
    assert!(matches!(e, FlyError::RateLimited { .. }), "{e}");
    assert_eq!(graphql_posts(&srv), 11);
    srv.shutdown().await;
}

#[tokio::test]
async fn timeouts_malformed_bodies_and_bad_tokens() {
    let srv = server(authed()).await;
    seed_app(&client(&srv), APP, Some("app")).await;

    // A hanging answer: each attempt times out, then the error is a timeout.
    let quick = FlyGraphql::new(
        Some(Token::new(TOKEN)),
        GraphqlConfig {
            timeout: Duration::from_millis(200),
            retry: RetryConfig {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
                max_retry_after: Duration::from_secs(1),
            },
            ..gql_config(&srv)
        },
    )
    .unwrap();
    srv.fake()
        .inject(Fault::new(FaultKind::Hang).path("/graphql").times(2));
    let e = quick.current_release(APP).await.unwrap_err();
    assert!(matches!(e, FlyError::Timeout { .. }), "{e}");
    assert_eq!(graphql_posts(&srv), 2);

    // 200 with a body that is not JSON.
    srv.fake()
        .inject(Fault::new(FaultKind::Malformed).path("/graphql"));
    let e = gql(&srv).current_release(APP).await.unwrap_err();
    assert!(matches!(e, FlyError::MalformedBody { .. }), "{e}");

    // A wrong token: 401, GraphQL-shaped, not retried.
    let before = graphql_posts(&srv);
    let wrong = FlyGraphql::new(Some(Token::new("FlyV1 fm2_wrong")), gql_config(&srv)).unwrap();
    let e = wrong.current_release(APP).await.unwrap_err();
    assert!(matches!(e, FlyError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("token validation error"), "{e}");
    assert!(!e.to_string().contains("fm2_wrong"));
    assert_eq!(graphql_posts(&srv), before + 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_graphql_header_carries_every_part_of_the_token() {
    // A macaroon plus a personal token: the Machines API gets the macaroon only, GraphQL both
    // (fly-go Tokens.FlapsHeader / GraphQLHeader); the fake checks each form.
    let token = "fm2_mac,personal_tok";
    let srv = server(FakeConfig {
        token: Some(Token::new(token)),
        ..FakeConfig::instant()
    })
    .await;
    srv.fake().create_app(APP, "personal");
    let g = FlyGraphql::new(Some(Token::new(token)), gql_config(&srv)).unwrap();
    assert_eq!(g.current_release(APP).await.unwrap(), None);
    srv.shutdown().await;
}

#[tokio::test]
async fn fly_gos_verbatim_query_gets_the_selected_fields_only() {
    let srv = server(FakeConfig::instant()).await;
    srv.fake().create_app(APP, "personal");
    // fly-go resource_releases.go, as fly-go compacts it (whitespace runs to one space).
    let query = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";
    let post = |body: Value| {
        let url = format!("{}/graphql", srv.url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"query": query, "variables": {"appName": APP}});
    let (status, v) = post(body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"data": {"app": {"currentRelease": null}}}));

    srv.fake().set_release_status(APP, Some("running"));
    let (_, v) = post(body).await;
    let rel = &v["data"]["app"]["currentRelease"];
    let mut keys: Vec<&str> = rel
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "createdAt",
            "description",
            "id",
            "imageRef",
            "reason",
            "stable",
            "status",
            "user",
            "version"
        ],
        "exactly the selected fields"
    );
    assert_eq!(rel["status"], "running");
    assert_eq!(rel["version"], 1);
    assert_eq!(rel["user"].as_object().unwrap().len(), 3, "{}", rel["user"]);
    assert!(v.get("errors").is_none());

    // Validation and variable errors: `errors` only, no `data`.
    let (status, v) = post(json!({
        "query": "{ app(name: \"web\") { currentReleaseUnprocessed { nope } } }"
    }))
    .await;
    assert_eq!(status, 200);
    assert!(v.get("data").is_none(), "{v}");
    assert_eq!(
        v["errors"][0]["message"],
        "Field 'nope' doesn't exist on type 'Release'"
    );
    let (_, v) = post(json!({"query": query, "variables": {}})).await;
    assert_eq!(
        v["errors"][0]["message"],
        "Variable $appName of type String! was provided invalid value"
    );
    let (_, v) = post(json!({"query": "mutation { x }"})).await;
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("queries only"));
    let (_, v) = post(json!({"query": "{ app(name: "})).await;
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("Parse error"));
    let (status, _) = post(json!({"nothing": 1})).await;
    assert_eq!(status, 400);
    // Literal arguments, `__typename`, other App fields, a named operation chosen by name.
    let (_, v) = post(json!({
        "query": "query A { __typename } query B { a: app(name: \"web\") { __typename name organization { slug } } }",
        "operationName": "B"
    }))
    .await;
    assert_eq!(
        v,
        json!({"data": {"a": {"__typename": "App", "name": "web", "organization": {"slug": "personal"}}}})
    );

    // Through FlyGraphql::query: the same validation error is a typed GraphQL error.
    let g = FlyGraphql::new(None, gql_config(&srv)).unwrap();
    let e = g
        .query::<Value>(None, "{ app(name: \"web\") { bogus } }", json!({}))
        .await
        .unwrap_err();
    match e {
        FlyError::Graphql { errors, .. } => {
            assert_eq!(errors[0].code(), Some("undefinedField"));
            assert_eq!(errors[0].path, vec![json!("app"), json!("bogus")]);
        }
        other => panic!("{other}"),
    }
    srv.shutdown().await;
}
