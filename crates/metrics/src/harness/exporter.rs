//! [`TestExporter`]: a Prometheus exporter on loopback whose gauges a test sets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use super::LoopbackServer;

type Gauges = BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>;

/// A `/metrics` endpoint (Prometheus text format 0.0.4) serving gauges set by the test.
///
/// ```no_run
/// use fleetscale_metrics::harness::TestExporter;
/// let exporter = TestExporter::start().unwrap();
/// exporter.set("queue_depth", &[("app", "web")], 12.0);
/// assert!(exporter.render().contains("queue_depth{app=\"web\"} 12"));
/// ```
#[derive(Debug)]
pub struct TestExporter {
    gauges: Arc<Mutex<Gauges>>,
    server: LoopbackServer,
}

impl TestExporter {
    /// Starts the exporter on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> std::io::Result<Self> {
        let gauges: Arc<Mutex<Gauges>> = Arc::default();
        let shared = gauges.clone();
        let router = axum::Router::new().route(
            "/metrics",
            get(move || {
                let text = render(&shared);
                async move {
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        text,
                    )
                }
            }),
        );
        Ok(TestExporter {
            gauges,
            server: LoopbackServer::start(router)?,
        })
    }

    /// The address Prometheus scrapes (`/metrics` on it).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Sets gauge `name{labels}` to `value` (NaN and infinities included).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = key(labels);
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .insert(key, value);
    }

    /// Removes the series `name{labels}` (Prometheus marks it stale at the next scrape).
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let mut gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(family) = gauges.get_mut(name) {
            family.remove(&key(labels));
            if family.is_empty() {
                gauges.remove(name);
            }
        }
    }

    /// The current exposition text.
    pub fn render(&self) -> String {
        render(&self.gauges)
    }
}

fn key(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = labels
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    k.sort();
    k
}

fn render(gauges: &Mutex<Gauges>) -> String {
    let gauges = gauges.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::new();
    for (name, series) in gauges.iter() {
        out.push_str(&format!(
            "# HELP {name} Set by the test.\n# TYPE {name} gauge\n"
        ));
        for (labels, value) in series {
            out.push_str(name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                out.push('{');
                out.push_str(&inner.join(","));
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(*value));
            out.push('\n');
        }
    }
    out
}

/// Escapes a label value for the text format (`\`, `"`, newline).
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as the text format writes it (`NaN`, `+Inf`, `-Inf`).
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}
