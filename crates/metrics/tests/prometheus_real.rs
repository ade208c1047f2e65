//! `PrometheusSource` against a REAL Prometheus server (the Debian `prometheus` binary) scraping
//! a test exporter on loopback. Missing binary => every test fails with the install hint.

use std::time::Duration;

use fleetscale_core::{Error, MetricSource, Scope};
use fleetscale_metrics::harness::{self, closed_port, start_proxy, Lab, ProxyOptions};
use fleetscale_metrics::{
    Aggregation, EmptyResult, MetricsError, PrometheusConfig, PrometheusSource, QueryMethod,
    RangeQuery, WindowAggregation,
};

mod cancel;
mod common;
use common::{lab, publish, publish_apps};

fn source(lab: &Lab, name: &str, query: &str) -> PrometheusConfig {
    PrometheusConfig::new(name, lab.prometheus.url(), query)
}

fn build(cfg: PrometheusConfig) -> PrometheusSource {
    PrometheusSource::new(cfg).expect("valid config")
}

#[tokio::test]
async fn a_gauge_set_by_the_exporter_is_read_back() {
    let lab = lab().await;
    publish_apps(lab, "t1_queue_depth", &[("solo", 7.0)]).await;
    let get = build(source(lab, "queue_depth", "t1_queue_depth"));
    assert_eq!(get.name(), "queue_depth");
    assert_eq!(get.collect(&Scope::new("solo")).await.unwrap(), 7.0);

    // A change is seen after the next scrape, via GET and POST alike.
    publish_apps(lab, "t1_queue_depth", &[("solo", 9.25)]).await;
    assert_eq!(get.collect(&Scope::new("solo")).await.unwrap(), 9.25);
    let post = build(source(lab, "queue_depth", "t1_queue_depth").with_method(QueryMethod::Post));
    let reading = post.read(&Scope::new("solo")).await.unwrap();
    assert_eq!((reading.value, reading.series), (9.25, 1));
    assert!(reading.warnings.is_empty());

    // A trailing slash on the address is fine.
    let slash = build(PrometheusConfig::new(
        "queue_depth",
        format!("{}/", lab.prometheus.url()),
        "t1_queue_depth",
    ));
    assert_eq!(slash.collect(&Scope::new("solo")).await.unwrap(), 9.25);
}

#[tokio::test]
async fn app_name_selects_the_series_of_each_target() {
    let lab = lab().await;
    publish_apps(lab, "t2_load", &[("alpha", 3.0), ("beta", 11.0)]).await;
    // The same source serves both targets; expansion happens at query time.
    let plain = build(source(lab, "load", "t2_load{app=\"$APP_NAME\"}"));
    let braced = build(source(lab, "load", "sum(t2_load{app='${APP_NAME}'})"));
    for src in [&plain, &braced] {
        assert_eq!(src.collect(&Scope::new("alpha")).await.unwrap(), 3.0);
        assert_eq!(src.collect(&Scope::new("beta")).await.unwrap(), 11.0);
    }
    // Also when the query comes from a configuration file (fly-autoscaler blanks `$APP_NAME`
    // in its YAML file at load time).
    let from_file: PrometheusConfig = toml::from_str(&format!(
        "name = 'load'\naddress = '{}'\nquery = 't2_load{{app=\"$APP_NAME\"}}'\n",
        lab.prometheus.url()
    ))
    .unwrap();
    let from_file = build(from_file);
    assert_eq!(from_file.collect(&Scope::new("beta")).await.unwrap(), 11.0);
    // A target without a series gets the empty-result error, not another app's value.
    let err = plain.collect(&Scope::new("gamma")).await.unwrap_err();
    assert!(matches!(err, Error::Metric { .. }), "{err}");
}

#[tokio::test]
async fn empty_result_is_an_error_by_default_and_zero_when_configured() {
    let lab = lab().await;
    let query = "t3_never_exported{app=\"$APP_NAME\"}";
    let strict = build(source(lab, "idle", query));
    let err = strict.read(&Scope::new("x")).await.unwrap_err();
    assert!(matches!(err, MetricsError::Empty { .. }), "{err}");
    assert!(
        err.to_string().contains("t3_never_exported{app=\"x\"}"),
        "{err}"
    );
    let core: Error = err.into();
    assert_eq!(core.kind(), "metric");

    let zero = build(source(lab, "idle", query).with_empty(EmptyResult::Zero));
    let reading = zero.read(&Scope::new("x")).await.unwrap();
    assert_eq!((reading.value, reading.series), (0.0, 0));
}

#[tokio::test]
async fn several_series_are_named_in_the_error_or_aggregated() {
    let lab = lab().await;
    let series: [(&[(&str, &str)], f64); 3] = [
        (&[("app", "multi"), ("instance", "i-1")], 1.0),
        (&[("app", "multi"), ("instance", "i-2")], 2.0),
        (&[("app", "multi"), ("instance", "i-3")], 4.0),
    ];
    publish(lab, "t4_conns", &series).await;
    let query = "t4_conns{app=\"$APP_NAME\"}";
    let err = build(source(lab, "conns", query))
        .read(&Scope::new("multi"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, MetricsError::MultipleSeries { count: 3, .. }),
        "{text}"
    );
    for i in ["i-1", "i-2", "i-3"] {
        assert!(text.contains(&format!("instance=\"{i}\"")), "{text}");
    }
    assert!(text.contains("t4_conns{"), "{text}");
    for (agg, want) in [
        (Aggregation::Sum, 7.0),
        (Aggregation::Avg, 7.0 / 3.0),
        (Aggregation::Min, 1.0),
        (Aggregation::Max, 4.0),
    ] {
        let src = build(source(lab, "conns", query).with_aggregate(agg));
        let reading = src.read(&Scope::new("multi")).await.unwrap();
        assert_eq!((reading.value, reading.series), (want, 3), "{agg:?}");
    }
}

#[tokio::test]
async fn nan_and_infinity_from_the_exporter_are_errors() {
    let lab = lab().await;
    publish_apps(
        lab,
        "t5_ratio",
        &[("nan", f64::NAN), ("inf", f64::INFINITY)],
    )
    .await;
    let src = build(source(lab, "ratio", "t5_ratio{app=\"$APP_NAME\"}"));
    for (app, shown) in [("nan", "NaN"), ("inf", "+Inf")] {
        match src.read(&Scope::new(app)).await {
            Err(MetricsError::NotFinite { value, series, .. }) => {
                assert_eq!(value, shown);
                assert!(series.contains(&format!("app=\"{app}\"")), "{series}");
            }
            other => panic!("{app}: {other:?}"),
        }
        let core = src.collect(&Scope::new(app)).await.unwrap_err();
        assert!(matches!(core, Error::Metric { .. }), "{core}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = closed_port().unwrap();
    let src = build(PrometheusConfig::new("m", format!("http://{port}"), "up"));
    let err = src.read(&Scope::new("a")).await.unwrap_err();
    assert!(matches!(err, MetricsError::Connect { .. }), "{err}");
    let core: Error = err.into();
    assert!(matches!(core, Error::Unavailable { .. }), "{core}");
    assert!(core.is_retryable());
}

#[tokio::test]
async fn a_slow_server_times_out_and_a_query_can_be_cancelled() {
    let lab = lab().await;
    publish_apps(lab, "t7_slow", &[("slow", 1.0)]).await;
    let proxy =
        start_proxy(ProxyOptions::new(lab.prometheus.addr()).delay(Duration::from_secs(30)))
            .unwrap();
    let cfg = PrometheusConfig::new("slow", proxy.url(), "t7_slow")
        .with_timeout(Duration::from_millis(300));
    let src = build(cfg.clone());
    let err = src.read(&Scope::new("slow")).await.unwrap_err();
    match &err {
        MetricsError::Timeout {
            after, operation, ..
        } => {
            assert_eq!(*after, Duration::from_millis(300));
            assert!(operation.contains("/api/v1/query"), "{operation}");
        }
        other => panic!("{other:?}"),
    }
    let core: Error = err.into();
    assert!(matches!(core, Error::Timeout { .. }), "{core}");

    // Cancellation: a generous timeout, cancelled from outside.
    let patient = build(cfg.with_timeout(Duration::from_secs(120)));
    let err = cancel::cancelled_read(Duration::from_millis(200), async |token| {
        patient.read_with_cancel(&Scope::new("slow"), token).await
    })
    .await;
    assert!(matches!(Error::from(err), Error::Cancelled));

    // The same proxy without delay answers: the timeout was the delay's doing.
    let fast = start_proxy(ProxyOptions::new(lab.prometheus.addr())).unwrap();
    let ok = build(
        PrometheusConfig::new("slow", fast.url(), "t7_slow").with_timeout(Duration::from_secs(60)),
    );
    assert_eq!(ok.collect(&Scope::new("slow")).await.unwrap(), 1.0);
}

#[tokio::test]
async fn tokens_are_sent_like_flys_client_and_a_bad_one_is_unauthorized() {
    let lab = lab().await;
    publish_apps(lab, "t8_secure", &[("sec", 5.0)]).await;

    let bearer = start_proxy(
        ProxyOptions::new(lab.prometheus.addr()).require_authorization("Bearer good-token"),
    )
    .unwrap();
    let cfg = PrometheusConfig::new("secure", bearer.url(), "t8_secure");
    let good = build(cfg.clone().with_token("good-token"));
    assert_eq!(good.collect(&Scope::new("sec")).await.unwrap(), 5.0);

    for bad in [cfg.clone().with_token("wrong-token"), cfg.clone()] {
        let err = build(bad).read(&Scope::new("sec")).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, MetricsError::Unauthorized { status: 401, .. }),
            "{text}"
        );
        assert!(text.contains("bad or missing token"), "{text}");
        assert!(!text.contains("wrong-token"), "secret in message: {text}");
        let core: Error = err.into();
        assert!(matches!(core, Error::Unauthorized { .. }), "{core}");
        assert!(!core.is_retryable());
    }

    // Fly macaroons go verbatim, without `Bearer`.
    let fly = start_proxy(
        ProxyOptions::new(lab.prometheus.addr()).require_authorization("FlyV1 fm2_abc,fm2_def"),
    )
    .unwrap();
    let fly_src = build(
        PrometheusConfig::new("secure", fly.url(), "t8_secure").with_token("FlyV1 fm2_abc,fm2_def"),
    );
    assert_eq!(fly_src.collect(&Scope::new("sec")).await.unwrap(), 5.0);
}

#[tokio::test]
async fn a_prometheus_error_body_is_reported_with_its_type() {
    let lab = lab().await;
    let src = build(source(lab, "broken", "sum(t9_x{app=\"$APP_NAME\"}"));
    let err = src.read(&Scope::new("a")).await.unwrap_err();
    match &err {
        MetricsError::Prometheus {
            status,
            error_type,
            error,
            query,
            ..
        } => {
            assert_eq!((*status, error_type.as_str()), (400, "bad_data"));
            assert!(error.contains("parse error"), "{error}");
            assert!(query.contains("app=\"a\""), "{query}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(Error::from(err).kind(), "invalid_request");

    // An instant query that returns a range vector is explained.
    publish_apps(lab, "t9_level", &[("m", 2.0)]).await;
    let err = build(source(lab, "m", "t9_level[1m]"))
        .read(&Scope::new("m"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MetricsError::UnexpectedResultType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("avg_over_time"), "{err}");

    // A scalar is a value.
    let scalar = build(source(lab, "s", "scalar(vector(4)) * 2"));
    let reading = scalar.read(&Scope::new("m")).await.unwrap();
    assert_eq!((reading.value, reading.series), (8.0, 0));
}

#[tokio::test]
async fn a_range_query_aggregates_over_the_window() {
    let lab = lab().await;
    publish_apps(lab, "t10_level", &[("ranged", 1.0)]).await;
    publish_apps(lab, "t10_level", &[("ranged", 3.0)]).await;
    let base = source(lab, "level", "t10_level{app=\"$APP_NAME\"}");
    let range = |over| RangeQuery {
        window: Duration::from_secs(600),
        step: Some(Duration::from_secs(1)),
        over,
    };
    let read = |over| {
        let src = build(base.clone().with_range(range(over)));
        async move { src.read(&Scope::new("ranged")).await.unwrap().value }
    };
    assert_eq!(read(WindowAggregation::Max).await, 3.0);
    assert_eq!(read(WindowAggregation::Min).await, 1.0);
    assert_eq!(read(WindowAggregation::Last).await, 3.0);
    let avg = read(WindowAggregation::Avg).await;
    assert!(avg > 1.0 && avg < 3.0, "avg {avg}");
    // Empty window.
    let empty = build(
        source(lab, "level", "t10_level{app=\"nobody\"}").with_range(range(WindowAggregation::Avg)),
    );
    assert!(matches!(
        empty.read(&Scope::new("x")).await,
        Err(MetricsError::Empty { .. })
    ));
}

#[tokio::test]
async fn a_dropped_server_is_stopped_and_its_directory_removed() {
    let exporter = harness::TestExporter::start().unwrap();
    exporter.set("t11_up", &[], 1.0);
    let server = harness::PrometheusServer::start(&[exporter.addr()])
        .await
        .unwrap();
    server.wait_for_values("t11_up", &["1"]).await.unwrap();
    let (addr, dir) = (server.addr(), server.dir().to_path_buf());
    assert!(dir.join("prometheus.yml").is_file());
    drop(server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    // Nothing answers on its port any more (poll: the kernel may take a moment).
    let deadline = std::time::Instant::now() + harness::DEFAULT_DEADLINE;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "prometheus still listening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fly's blueprint at night: Fly Proxy has stopped every machine, no `fly_instance_up` series
/// exists, and real Prometheus answers an empty vector for `count(...)`. That is a count of 0,
/// not a failure; an empty result of a query without a natural zero stays an error, and so do
/// NaN and unreachable servers.
#[tokio::test]
async fn an_empty_count_or_sum_is_zero_and_other_empty_results_stay_errors() {
    let lab = lab().await;
    publish(
        lab,
        "t12_fly_instance_up",
        &[(&[("app", "day"), ("instance", "m1")], 1.0)],
    )
    .await;
    let blueprint = build(source(
        lab,
        "running_machines",
        "count(t12_fly_instance_up{app='$APP_NAME'})",
    ));
    assert_eq!(blueprint.config().empty, EmptyResult::Auto, "the default");
    // Day: one machine reports.
    assert_eq!(blueprint.collect(&Scope::new("day")).await.unwrap(), 1.0);
    // Night: no series at all; Prometheus' answer is an empty vector, read as 0.
    let night = blueprint.read(&Scope::new("night")).await.unwrap();
    assert_eq!((night.value, night.series), (0.0, 0));
    // sum() without grouping likewise.
    let sum = build(source(
        lab,
        "rps",
        "SUM(rate(t12_nothing{app='$APP_NAME'}[1m]))",
    ));
    assert_eq!(sum.collect(&Scope::new("night")).await.unwrap(), 0.0);
    // No natural zero: still an error (the engine holds).
    for query in [
        "avg(t12_fly_instance_up{app='$APP_NAME'})",
        "count by (region) (t12_fly_instance_up{app='$APP_NAME'})",
        "t12_fly_instance_up{app='$APP_NAME'}",
        "count(t12_fly_instance_up{app='$APP_NAME'}) * 2",
    ] {
        let err = build(source(lab, "m", query))
            .read(&Scope::new("night"))
            .await
            .unwrap_err();
        assert!(matches!(err, MetricsError::Empty { .. }), "{query}: {err}");
    }
    // `empty = "error"` keeps the Go tool's behaviour.
    let strict = build(
        source(
            lab,
            "running_machines",
            "count(t12_fly_instance_up{app='$APP_NAME'})",
        )
        .with_empty(EmptyResult::Error),
    );
    assert!(matches!(
        strict.read(&Scope::new("night")).await,
        Err(MetricsError::Empty { .. })
    ));
    // NaN inside a count is still an error, not 0.
    publish_apps(lab, "t12_ratio", &[("nan", f64::NAN)]).await;
    let nan = build(source(lab, "ratio", "sum(t12_ratio{app='$APP_NAME'})"));
    assert!(matches!(
        nan.read(&Scope::new("nan")).await,
        Err(MetricsError::NotFinite { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_named_with_the_cause() {
    let port = closed_port().unwrap();
    let src = build(PrometheusConfig::new(
        "m",
        format!("http://{port}"),
        "count(up)",
    ));
    let err = src.read(&Scope::new("a")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot reach http://{port}/")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert_eq!(
        text.matches("metric `m`").count(),
        1,
        "the name once: {text}"
    );
}
