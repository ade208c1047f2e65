//! `PrometheusSource::history` against a REAL Prometheus holding past samples (written into
//! its storage by `promtool tsdb create-blocks-from openmetrics`). Missing binary => the test
//! fails with the install hint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetscale_core::Scope;
use fleetscale_metrics::harness::{openmetrics_gauge, PrometheusServer};
use fleetscale_metrics::{
    Aggregation, EmptyResult, History, HistoryRange, MetricsError, PrometheusConfig,
    PrometheusSource, SourceConfig,
};

/// 2026-01-05T00:00:00Z.
const DAY: i64 = 1_767_571_200;

fn at(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s as u64)
}

/// Every `step_s` seconds from `from` to `to` (Unix seconds).
fn range(from: i64, to: i64, step_s: u64) -> HistoryRange {
    HistoryRange::new(at(from), at(to), Duration::from_secs(step_s))
}

/// `source`'s history for app `a` from `from` to `to` (Unix seconds), every 15 s.
async fn config_history(
    source: &SourceConfig,
    from: i64,
    to: i64,
) -> Result<History, MetricsError> {
    source
        .history(&Scope::new("a"), at(from), at(to), Duration::from_secs(15))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_past_samples_per_target_with_aggregation_and_gaps() {
    // Two apps, two regions for `alpha`: a value every 15 s for 4 hours (960 samples each),
    // and a gap of 10 minutes in beta's samples.
    let n = 4 * 240;
    let alpha_iad: Vec<(i64, f64)> = (0..n).map(|k| (DAY + 15 * k, k as f64)).collect();
    let alpha_fra: Vec<(i64, f64)> = (0..n).map(|k| (DAY + 15 * k, 1000.0)).collect();
    let beta: Vec<(i64, f64)> = (0..n)
        .filter(|k| !(100..140).contains(k))
        .map(|k| (DAY + 15 * k, 0.5))
        .collect();
    let mut text = openmetrics_gauge(
        "hist_load",
        &[("app", "alpha"), ("region", "iad")],
        &alpha_iad,
    );
    // The second series of the same family, without a second `# TYPE` line.
    let fra = openmetrics_gauge(
        "hist_load",
        &[("app", "alpha"), ("region", "fra")],
        &alpha_fra,
    );
    text.push_str(fra.split_once('\n').unwrap().1);
    text.push_str(&openmetrics_gauge("hist_beta", &[("app", "beta")], &beta));
    let prom = match PrometheusServer::start_with_history(&text).await {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let source = |query: &str| {
        PrometheusSource::new(PrometheusConfig::new("load", prom.url(), query)).unwrap()
    };

    // `$APP_NAME` is expanded per target; the sum is evaluated by Prometheus at each step.
    let sum = source("sum(hist_load{app='$APP_NAME'})");
    let h = sum
        .history(&Scope::new("alpha"), &range(DAY, DAY + 4 * 3600 - 15, 15))
        .await
        .unwrap();
    assert_eq!(h.timestamps.len(), n as usize);
    assert_eq!(h.timestamps[1] - h.timestamps[0], 15_000);
    assert_eq!(h.values[0], Some(1000.0));
    assert_eq!(h.values[959], Some(1959.0));

    // Several series at a step: an error without an aggregation, combined with one.
    let raw = source("hist_load{app='$APP_NAME'}");
    let e = raw
        .history(&Scope::new("alpha"), &range(DAY, DAY + 60, 15))
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetricsError::MultipleSeries { count: 2, .. }),
        "{e}"
    );
    let max = PrometheusSource::new(
        PrometheusConfig::new("load", prom.url(), "hist_load{app='$APP_NAME'}")
            .with_aggregate(Aggregation::Max),
    )
    .unwrap();
    let h = max
        .history(&Scope::new("alpha"), &range(DAY + 60, DAY + 120, 30))
        .await
        .unwrap();
    assert_eq!(h.values, vec![Some(1000.0); 3]);

    // A gap longer than Prometheus' 5-minute lookback: missing values, or 0 when configured.
    let gap = source("hist_beta{app='$APP_NAME'}");
    let from = DAY + 15 * 90;
    let h = gap
        .history(&Scope::new("beta"), &range(from, from + 15 * 70, 15))
        .await
        .unwrap();
    let missing = h.values.iter().filter(|v| v.is_none()).count();
    // Samples 100..140 are absent; each of the last present (99) stays visible for 5 min
    // (20 steps), so 120..139 are empty.
    assert_eq!(missing, 20, "{:?}", h.values);
    assert_eq!(h.values[0], Some(0.5));
    let zero = PrometheusSource::new(
        PrometheusConfig::new("load", prom.url(), "hist_beta{app='$APP_NAME'}")
            .with_empty(EmptyResult::Zero),
    )
    .unwrap();
    let h = zero
        .history(&Scope::new("beta"), &range(from, from + 15 * 70, 15))
        .await
        .unwrap();
    assert!(h.values.iter().all(Option::is_some));
    assert_eq!(h.values.iter().filter(|v| **v == Some(0.0)).count(), 20);
    // By default (`auto`) a count of no series is 0, as a live read says.
    let count = source("count(hist_beta{app='$APP_NAME'})");
    let h = count
        .history(&Scope::new("beta"), &range(from, from + 15 * 70, 15))
        .await
        .unwrap();
    assert_eq!(h.values.iter().filter(|v| **v == Some(0.0)).count(), 20);
    assert_eq!(h.values.iter().filter(|v| **v == Some(1.0)).count(), 51);

    // A long range is read in chunks of at most 10,000 steps: 4 h at 1 s is 14,401 steps.
    let h = sum
        .history(&Scope::new("alpha"), &range(DAY, DAY + 4 * 3600, 1))
        .await
        .unwrap();
    assert_eq!(h.timestamps.len(), 14_401);
    assert!(h.values.iter().all(Option::is_some));
    assert_eq!(
        h.values[14_400],
        Some(1959.0),
        "the last sample stays visible"
    );
}

#[tokio::test]
async fn constants_repeat_and_sources_without_a_past_are_named() {
    use fleetscale_metrics::TemporalConfig;
    let constant: SourceConfig =
        toml::from_str("type = \"constant\"\nname = \"spare\"\nvalue = 2").unwrap();
    let h = config_history(&constant, DAY, DAY + 60).await.unwrap();
    assert_eq!(h.timestamps.len(), 5);
    assert_eq!(h.values, vec![Some(2.0); 5]);
    let temporal = SourceConfig::Temporal(TemporalConfig::new(
        "workflows",
        "127.0.0.1:7233",
        "default",
    ));
    let e = config_history(&temporal, DAY, DAY + 60)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot be read over the past") && e.contains("workflows"),
        "{e}"
    );
    let e = config_history(&constant, DAY + 60, DAY)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("ends before it starts"), "{e}");
}
