//! # fleetscale-metrics
//!
//! Where fleetscale's numbers come from, and the numbers fleetscale itself exposes.
//!
//! - [`PrometheusSource`]: a PromQL query (instant, or range with a window aggregation) against
//!   any Prometheus HTTP API, including Fly.io's at `https://api.fly.io/prometheus/<org>`, with
//!   `$APP_NAME` expanded per target at query time, Fly/Bearer tokens, a per-query deadline,
//!   cancellation, and strict result handling (empty, several series, NaN are errors unless
//!   configured otherwise).
//! - [`ConstantSource`]: a fixed number.
//! - [`HttpJsonSource`]: a number picked with a JSON pointer from any HTTP endpoint.
//! - [`TemporalSource`]: the number of running workflow executions of a Temporal namespace
//!   (`CountWorkflowExecutions` over gRPC, TLS and mutual TLS, API keys), as
//!   fly-autoscaler's Temporal collector.
//! - [`status::StatusBoard`]: the daemon's status page (`/`), a bounded recent history per
//!   target rendered as self-contained HTML.
//! - `server` (feature `server`): the `/metrics`, `/healthz` and status-page HTTP server of
//!   the binaries, fed by [`AutoscalerMetrics`] and a [`status::StatusBoard`].
//! - [`AutoscalerMetrics`]: the autoscaler's own metrics for `/metrics`, with
//!   fly-autoscaler's `fas_*` names exactly; the [`autoscaler`] module docs say why
//!   `prometheus-client` and how the names are kept.
//!
//! Every source implements [`fleetscale_core::MetricSource`], has a serde configuration struct
//! for TOML/YAML files ([`SourceConfig`] holds any of them, tagged by `type`), and reports failures as [`MetricsError`], which converts into the
//! core error classes the engine acts on.
//!
//! ## Why hand-written serde structs over reqwest, not `prometheus-http-query`
//!
//! `prometheus-http-query` 0.9 (MIT, reqwest 0.13) was considered and rejected because it loses
//! exactly the context an operator needs when a metric fails:
//! - a non-JSON error answer (a proxy's `401`, a load balancer's HTML `502`) becomes a generic
//!   client error "invalid media type" without the body, and a `2xx` with the wrong content
//!   type carries no source at all; we keep the HTTP status and the start of the body;
//! - Prometheus' `warnings` (and Prometheus 3 `infos`) are dropped by its response type; we
//!   log and return them;
//! - its `errorType` is a closed enum, so an unknown error type from a Prometheus-compatible
//!   server (VictoriaMetrics, Thanos, Mimir) fails to decode instead of being reported;
//! - JSON decoding errors do not say which field was wrong or show the body.
//!
//! We need only two endpoints (`/api/v1/query`, `/api/v1/query_range`), so the structs are a
//! few dozen lines ([`prometheus`] module, `result.rs`), unit-tested against canned bodies and
//! integration-tested against a real Prometheus server.
//!
//! ## Tests against a real Prometheus
//! With the `test-harness` feature, [`harness`] starts the Debian `prometheus` binary on a free
//! loopback port with a generated configuration scraping a test exporter. The tests fail (they
//! never skip) when the binary is missing: run `scripts/install-test-deps.sh`.

/// Builder setters of a configuration struct, each with its own doc: `name(field: Type) = value;`
/// makes `pub fn name(mut self, field: Type) -> Self`, which sets `field` to `value`.
macro_rules! setters {
    ($config:ty { $($(#[$attr:meta])* $name:ident($field:ident: $ty:ty) = $value:expr;)* }) => {
        impl $config {
            $(
                $(#[$attr])*
                pub fn $name(mut self, $field: $ty) -> Self {
                    self.$field = $value;
                    self
                }
            )*
        }
    };
}

pub mod autoscaler;
mod config;
mod constant;
mod error;
mod expand;
#[cfg(feature = "test-harness")]
pub mod harness;
mod http;
mod http_json;
pub mod prometheus;
#[cfg(feature = "server")]
pub mod server;
pub mod status;
pub mod temporal;
mod token;

pub use autoscaler::{AutoscalerMetrics, CoordinationSample, CONTENT_TYPE, TICK_BUCKETS};
pub use config::SourceConfig;
pub use constant::{ConstantConfig, ConstantSource};
pub use error::MetricsError;
/// The workspace's API token type (redacted in `Debug`, `Display` and serialised form),
/// re-exported so configurations of this crate's sources need no other import.
pub use fleetscale_core::Token;
pub use http_json::{HttpJsonConfig, HttpJsonSource};
pub use prometheus::{
    is_total_grouped_by, is_total_without_grouping, Aggregation, EmptyResult,
    GroupedPrometheusConfig, GroupedPrometheusSource, History, HistoryRange, PrometheusConfig,
    PrometheusSource, QueryMethod, RangeQuery, Reading, WindowAggregation,
};
pub use temporal::{TemporalConfig, TemporalSource};

/// The first check of every source's configuration: refuses a `name` that cannot be an
/// expression variable ([`check_name`]), then gives the maker of the [`MetricsError::Config`]
/// errors that name this source, for the checks that follow.
pub(crate) fn config_errors(
    name: &str,
) -> Result<impl Fn(String) -> MetricsError + Copy + '_, MetricsError> {
    let bad = move |message: String| MetricsError::Config {
        metric: name.to_owned(),
        message,
    };
    check_name(name).map_err(|m| bad(m.to_owned()))?;
    Ok(bad)
}

/// Checks that a metric name can be an expression variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("`name` is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            Err("`name` must start with a letter or `_` (it is an expression variable)")
        }
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Err("`name` may only hold letters, digits and `_` (it is an expression variable)")
        }
        _ => Ok(()),
    }
}
