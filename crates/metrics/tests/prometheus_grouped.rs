//! `GroupedPrometheusSource` against a REAL Prometheus server (the Debian `prometheus` binary)
//! scraping a test exporter on loopback. HTTP requests are counted by a forwarding proxy in
//! front of the server, one per test, so tests running in parallel do not see each other's
//! queries. Missing binary => every test fails with the install hint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use fleetscale_core::{Error, MetricSource, Scope};
use fleetscale_metrics::harness::{self, closed_port, Lab, LoopbackServer};
use fleetscale_metrics::{
    EmptyResult, GroupedPrometheusConfig, GroupedPrometheusSource, MetricsError, PrometheusConfig,
    PrometheusSource, QueryMethod,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod common;
use common::{lab, publish, publish_apps};

/// A proxy in front of the lab's Prometheus that counts the `/api/v1/query` requests it
/// forwards and can hold each one for a while.
struct CountingProxy {
    server: LoopbackServer,
    queries: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    delay: Duration,
    queries: Arc<AtomicUsize>,
    client: reqwest::Client,
}

impl CountingProxy {
    fn start(lab: &Lab, delay: Duration) -> Self {
        let queries = Arc::new(AtomicUsize::new(0));
        let state = ProxyState {
            upstream: lab.prometheus.url(),
            delay,
            queries: queries.clone(),
            client: reqwest::Client::new(),
        };
        let router = axum::Router::new().fallback(forward).with_state(state);
        CountingProxy {
            server: LoopbackServer::start(router).unwrap(),
            queries,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    if request.uri().path() == "/api/v1/query" {
        state.queries.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(state.delay).await;
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let content_type = request.headers().get("content-type").cloned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let mut upstream = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    if let Some(ct) = content_type {
        upstream = upstream.header("content-type", ct);
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let ct = answer.headers().get("content-type").cloned();
            let mut response = Response::new(Body::from(answer.bytes().await.unwrap_or_default()));
            *response.status_mut() = status;
            if let Some(ct) = ct {
                response.headers_mut().insert("content-type", ct);
            }
            response
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn grouped(cfg: GroupedPrometheusConfig) -> GroupedPrometheusSource {
    GroupedPrometheusSource::new(cfg).expect("valid config")
}

/// Reads every app concurrently, each through its own clone of `source` (as the engine's
/// targets hold theirs), and returns the results in the order of `apps`.
async fn read_all(
    source: &GroupedPrometheusSource,
    apps: &[String],
) -> Vec<Result<f64, MetricsError>> {
    let mut set = JoinSet::new();
    for (i, app) in apps.iter().enumerate() {
        let src = source.clone();
        let scope = Scope::new(app.clone());
        set.spawn(async move { (i, src.read(&scope).await.map(|r| r.value)) });
    }
    let mut out: Vec<Option<Result<f64, MetricsError>>> = (0..apps.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.unwrap();
        out[i] = Some(r);
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn one_request_serves_every_target_with_its_own_value() {
    let lab = lab().await;
    let apps: Vec<String> = (0..40).map(|i| format!("app-{i:02}")).collect();
    for (i, app) in apps.iter().enumerate() {
        // Two instances per app, so that the grouped `sum` really adds something up.
        for instance in ["i-1", "i-2"] {
            lab.exporter.set(
                "g1_load",
                &[("app", app), ("instance", instance)],
                i as f64 + 0.25,
            );
        }
    }
    lab.prometheus
        .wait_for("g1_load", harness::DEFAULT_DEADLINE, |r| r.len() == 80)
        .await
        .unwrap();
    let proxy = CountingProxy::start(lab, Duration::ZERO);
    let source = grouped(
        GroupedPrometheusConfig::new("load", proxy.url(), "sum by (app) (g1_load)")
            .with_max_age(Duration::from_secs(3600)),
    );
    let values = read_all(&source, &apps).await;
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v.as_ref().unwrap(), 2.0 * (i as f64 + 0.25), "{}", apps[i]);
    }
    assert_eq!(proxy.queries(), 1, "40 targets, one request");
    assert_eq!(source.requests_sent(), 1);

    // The same numbers as one per-app query each (which costs one request per app).
    let per_app = PrometheusSource::new(PrometheusConfig::new(
        "load",
        proxy.url(),
        "sum(g1_load{app=\"$APP_NAME\"})",
    ))
    .unwrap();
    for (app, grouped_value) in apps.iter().zip(&values) {
        let single = per_app.collect(&Scope::new(app.clone())).await.unwrap();
        assert_eq!(single, *grouped_value.as_ref().unwrap(), "{app}");
    }
    assert_eq!(proxy.queries(), 1 + apps.len());

    // POST sends the same query as a form.
    let post = grouped(
        GroupedPrometheusConfig::new("load", proxy.url(), "sum by (app) (g1_load)")
            .with_method(QueryMethod::Post),
    );
    let reading = post.read(&Scope::new("app-07")).await.unwrap();
    assert_eq!((reading.value, reading.series), (14.5, 1));
    assert!(
        reading.query.contains("app=\"app-07\""),
        "{}",
        reading.query
    );

    // Another scope variable can pick the series: the group label of the target.
    let by_group = grouped(
        GroupedPrometheusConfig::new("load", proxy.url(), "sum by (app) (g1_load)")
            .with_label("app", "GROUP"),
    );
    let scope = Scope::new("fly-app-name").with_group("app-03");
    assert_eq!(by_group.collect(&scope).await.unwrap(), 6.5);
}

#[tokio::test]
async fn a_missing_app_follows_the_empty_result_policy_as_a_per_app_query_would() {
    let lab = lab().await;
    publish_apps(lab, "g2_reqs", &[("busy", 5.0)]).await;
    let proxy = CountingProxy::start(lab, Duration::ZERO);
    let idle = Scope::new("idle");
    let cases = [
        // (grouped query, equivalent per-app query, policy, expected for the missing app)
        (
            "sum by (app) (g2_reqs)",
            "sum(g2_reqs{app=\"$APP_NAME\"})",
            EmptyResult::Auto,
            Some(0.0),
        ),
        (
            "count by (app) (g2_reqs)",
            "count(g2_reqs{app=\"$APP_NAME\"})",
            EmptyResult::Auto,
            Some(0.0),
        ),
        (
            "max by (app) (g2_reqs)",
            "max(g2_reqs{app=\"$APP_NAME\"})",
            EmptyResult::Auto,
            None,
        ),
        (
            "sum by (app) (g2_reqs)",
            "sum(g2_reqs{app=\"$APP_NAME\"})",
            EmptyResult::Error,
            None,
        ),
        (
            "max by (app) (g2_reqs)",
            "max(g2_reqs{app=\"$APP_NAME\"})",
            EmptyResult::Zero,
            Some(0.0),
        ),
    ];
    for (query, per_app_query, empty, want) in cases {
        let src =
            grouped(GroupedPrometheusConfig::new("reqs", proxy.url(), query).with_empty(empty));
        let per_app = PrometheusSource::new(
            PrometheusConfig::new("reqs", proxy.url(), per_app_query).with_empty(empty),
        )
        .unwrap();
        // The app that has a series gets it whatever the policy.
        assert_eq!(
            src.collect(&Scope::new("busy")).await.unwrap(),
            if query.starts_with("count") { 1.0 } else { 5.0 }
        );
        let got = src.read(&idle).await;
        let single = per_app.read(&idle).await;
        match want {
            Some(v) => {
                let reading = got.unwrap();
                assert_eq!((reading.value, reading.series), (v, 0), "{query} {empty:?}");
                assert_eq!(single.unwrap().value, v, "{per_app_query} {empty:?}");
            }
            None => {
                let err = got.unwrap_err();
                assert!(matches!(err, MetricsError::Empty { .. }), "{query}: {err}");
                assert!(err.to_string().contains("app=\"idle\""), "{err}");
                assert!(
                    matches!(single, Err(MetricsError::Empty { .. })),
                    "{per_app_query}: {single:?}"
                );
                let core: Error = err.into();
                assert_eq!(core.kind(), "metric");
            }
        }
    }
}

#[tokio::test]
async fn a_failed_or_unusable_answer_fails_every_target() {
    let lab = lab().await;
    publish_apps(lab, "g3_up", &[("a", 1.0), ("b", 2.0)]).await;
    let proxy = CountingProxy::start(lab, Duration::ZERO);
    let apps = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let long = Duration::from_secs(3600);

    // A query Prometheus refuses: every target gets its `bad_data`, from one request.
    let bad = grouped(
        GroupedPrometheusConfig::new("up", proxy.url(), "sum by (app) (rate(g3_up[1m])")
            .with_max_age(long),
    );
    for r in read_all(&bad, &apps).await {
        let err = r.unwrap_err();
        match &err {
            MetricsError::Shared(inner) => assert!(
                matches!(&**inner, MetricsError::Prometheus { error_type, .. } if error_type == "bad_data"),
                "{inner}"
            ),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("bad_data"), "{err}");
        let core: Error = err.into();
        assert_eq!(core.kind(), "invalid_request");
    }
    assert_eq!(proxy.queries(), 1, "a failure is shared too");

    // A scalar, and a vector whose series all lack the label, can serve no target.
    for (query, kind) in [
        ("scalar(sum(g3_up))", "metric"),
        ("sum(g3_up)", "invalid_response"),
    ] {
        let src = grouped(GroupedPrometheusConfig::new("up", proxy.url(), query));
        for r in read_all(&src, &apps).await {
            let err = r.unwrap_err();
            assert!(matches!(err, MetricsError::Shared(_)), "{query}: {err}");
            let core: Error = err.into();
            assert_eq!(core.kind(), kind, "{query}");
        }
    }

    // An unreachable server: unavailable (retryable) for every target, as for a per-app query.
    let port = closed_port().unwrap();
    let down = grouped(GroupedPrometheusConfig::new(
        "up",
        format!("http://{port}"),
        "sum by (app) (g3_up)",
    ));
    for r in read_all(&down, &apps).await {
        let err = r.unwrap_err();
        assert!(err.to_string().contains("cannot reach"), "{err}");
        let core: Error = err.into();
        assert!(matches!(core, Error::Unavailable { .. }), "{core}");
        assert!(core.is_retryable());
    }
    assert_eq!(down.requests_sent(), 1);
}

#[tokio::test]
async fn duplicates_and_non_numbers_fail_only_their_own_target() {
    let lab = lab().await;
    publish(
        lab,
        "g4_conns",
        &[
            (&[("app", "dup"), ("instance", "i-1")], 1.0),
            (&[("app", "dup"), ("instance", "i-2")], 2.0),
            (&[("app", "single")], 7.0),
            (&[("app", "nan")], f64::NAN),
            (&[("region", "ord")], 3.0),
        ],
    )
    .await;
    let proxy = CountingProxy::start(lab, Duration::ZERO);
    // No aggregation: several series per app are possible, and must not be silently picked.
    let src = grouped(GroupedPrometheusConfig::new(
        "conns",
        proxy.url(),
        "g4_conns",
    ));
    let apps: Vec<String> = ["dup", "single", "nan"].map(String::from).to_vec();
    let results = read_all(&src, &apps).await;
    match &results[0] {
        Err(e @ MetricsError::MultipleSeries { count: 2, .. }) => {
            let text = e.to_string();
            for i in ["i-1", "i-2"] {
                assert!(text.contains(&format!("instance=\"{i}\"")), "{text}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*results[1].as_ref().unwrap(), 7.0);
    match &results[2] {
        Err(MetricsError::NotFinite { value, series, .. }) => {
            assert_eq!(value, "NaN");
            assert!(series.contains("app=\"nan\""), "{series}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.queries(), 1);
}

#[tokio::test]
async fn an_answer_is_reused_within_max_age_and_never_after_it() {
    let lab = lab().await;
    publish_apps(lab, "g5_depth", &[("q", 1.0)]).await;
    let proxy = CountingProxy::start(lab, Duration::ZERO);
    let query = "sum by (app) (g5_depth)";
    let long = grouped(
        GroupedPrometheusConfig::new("depth", proxy.url(), query)
            .with_max_age(Duration::from_secs(3600)),
    );
    let short = grouped(
        GroupedPrometheusConfig::new("depth", proxy.url(), query)
            .with_max_age(Duration::from_millis(20)),
    );
    let q = Scope::new("q");
    assert_eq!(long.collect(&q).await.unwrap(), 1.0);
    assert_eq!(short.collect(&q).await.unwrap(), 1.0);
    assert_eq!(proxy.queries(), 2);

    // The value changes at the server.
    publish_apps(lab, "g5_depth", &[("q", 2.0)]).await;
    // Within its max age the answer (and its old value) is reused: no request.
    assert_eq!(long.collect(&q).await.unwrap(), 1.0);
    assert_eq!(long.requests_sent(), 1);
    // 20 ms after its request that answer is stale: a new one is fetched.
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(short.collect(&q).await.unwrap(), 2.0);
    assert_eq!(short.requests_sent(), 2);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(short.collect(&q).await.unwrap(), 2.0);
    assert_eq!(short.requests_sent(), 3);
    assert_eq!(proxy.queries(), 4);
}

#[tokio::test]
async fn concurrent_reads_share_one_request_in_flight_and_cancel_alone() {
    let lab = lab().await;
    publish_apps(lab, "g6_busy", &[("x", 10.0), ("y", 20.0)]).await;
    // Each request is held 300 ms; the max age is far shorter, so only single flight (not
    // the cache) can make the readers share.
    let proxy = CountingProxy::start(lab, Duration::from_millis(300));
    let src = grouped(
        GroupedPrometheusConfig::new("busy", proxy.url(), "sum by (app) (g6_busy)")
            .with_max_age(Duration::from_millis(1)),
    );
    let apps: Vec<String> = (0..32)
        .map(|i| if i % 2 == 0 { "x" } else { "y" }.to_owned())
        .collect();
    let cancel = CancellationToken::new();
    let cancelled = {
        let src = src.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { src.read_with_cancel(&Scope::new("x"), &cancel).await })
    };
    let all = {
        let src = src.clone();
        let apps = apps.clone();
        tokio::spawn(async move { read_all(&src, &apps).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancel.cancel();
    let err = cancelled.await.unwrap().unwrap_err();
    assert!(matches!(err, MetricsError::Cancelled { .. }), "{err}");
    for (app, r) in apps.iter().zip(all.await.unwrap()) {
        let want = if app == "x" { 10.0 } else { 20.0 };
        assert_eq!(r.unwrap(), want);
    }
    assert_eq!(proxy.queries(), 1, "33 concurrent readers, one request");
    assert_eq!(src.requests_sent(), 1);
}

#[test]
fn configuration_errors_are_refused_at_build() {
    let ok = GroupedPrometheusConfig::new("m", "http://127.0.0.1:9090", "sum by (app) (x)");
    for (cfg, needle) in [
        (
            GroupedPrometheusConfig::new("m", "http://h", "sum(x{app=\"$APP_NAME\"})"),
            "$APP_NAME",
        ),
        (
            GroupedPrometheusConfig::new("m", "http://h", "sum(x{app=\"${TARGET}\"})"),
            "$TARGET",
        ),
        (ok.clone().with_max_age(Duration::ZERO), "max_age"),
        (ok.clone().with_label("", "APP_NAME"), "label"),
        (GroupedPrometheusConfig::new("m", "ftp://h", "x"), "http"),
        (GroupedPrometheusConfig::new("m-1", "http://h", "x"), "name"),
        (GroupedPrometheusConfig::new("m", "http://h", " "), "query"),
        (ok.clone().with_timeout(Duration::ZERO), "timeout"),
        (ok.clone().with_token("bad\ntoken"), "token"),
    ] {
        let err = GroupedPrometheusSource::new(cfg.clone()).unwrap_err();
        assert!(matches!(err, MetricsError::Config { .. }), "{cfg:?}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    // Other `$` (PromQL's own, e.g. Grafana's `$__interval`) are not scope variables.
    GroupedPrometheusSource::new(GroupedPrometheusConfig::new(
        "m",
        "http://h",
        "sum by (app) (rate(x[$__rate_interval]))",
    ))
    .unwrap();
    // A token never shows in `Debug`.
    let with_token = GroupedPrometheusSource::new(ok.with_token("FlyV1 fm2_secret")).unwrap();
    assert!(!format!("{with_token:?}").contains("fm2_secret"));
    // Unknown keys in a file are refused.
    assert!(toml::from_str::<GroupedPrometheusConfig>(
        "name='a'\naddress='http://h'\nquery='q'\nmax_agee='1s'"
    )
    .is_err());
}
