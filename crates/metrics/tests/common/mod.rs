//! What the tests against the shared lab (a test exporter scraped by a real Prometheus) have in
//! common.

use fleetscale_metrics::harness::{self, Lab};

/// The shared lab; a missing Prometheus binary fails the test with the install hint.
pub async fn lab() -> &'static Lab {
    match harness::shared_lab().await {
        Ok(lab) => lab,
        Err(e) => panic!("{e}"),
    }
}

/// Sets each series `(labels, value)` of the gauge `metric` at the lab's exporter, then waits
/// until Prometheus answers exactly these values for `metric` (so every series of `metric`
/// must be in `series`).
pub async fn publish(lab: &Lab, metric: &str, series: &[(&[(&str, &str)], f64)]) {
    for (labels, value) in series {
        lab.exporter.set(metric, labels, *value);
    }
    let values: Vec<String> = series
        .iter()
        .map(|(_, v)| as_prometheus_prints(*v))
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    lab.prometheus
        .wait_for_values(metric, &values)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`publish`] for series labelled with their app alone: `(app, value)`.
pub async fn publish_apps(lab: &Lab, metric: &str, apps: &[(&str, f64)]) {
    let labels: Vec<[(&str, &str); 1]> = apps.iter().map(|(app, _)| [("app", *app)]).collect();
    let series: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .zip(apps)
        .map(|(labels, (_, value))| (&labels[..], *value))
        .collect();
    publish(lab, metric, &series).await;
}

/// A sample value as Prometheus' JSON API writes it: `7`, `9.25`, `NaN`, `+Inf`.
fn as_prometheus_prints(v: f64) -> String {
    match v {
        f64::INFINITY => "+Inf".to_owned(),
        f64::NEG_INFINITY => "-Inf".to_owned(),
        _ => v.to_string(),
    }
}
