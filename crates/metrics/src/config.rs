//! [`SourceConfig`]: any source of this crate, as one tagged configuration entry.

use std::sync::Arc;

use fleetscale_core::MetricSource;
use serde::{Deserialize, Serialize};

use crate::{
    ConstantConfig, ConstantSource, HttpJsonConfig, HttpJsonSource, MetricsError, PrometheusConfig,
    PrometheusSource, TemporalConfig, TemporalSource,
};

/// One metric source in a configuration file, tagged by `type`.
///
/// ```
/// use fleetscale_metrics::SourceConfig;
/// #[derive(serde::Deserialize)]
/// struct File { sources: Vec<SourceConfig> }
/// let file: File = toml::from_str(r#"
///     [[sources]]
///     type = "prometheus"
///     name = "load"
///     address = "https://api.fly.io/prometheus/my-org"
///     query = "sum(fly_app_concurrency{app='$APP_NAME'})"
///     empty = "zero"
///
///     [[sources]]
///     type = "constant"
///     name = "spare"
///     value = 1
///
///     [[sources]]
///     type = "http_json"
///     name = "backlog"
///     url = "http://jobs.internal/stats/$APP_NAME"
///     pointer = "/pending"
///
///     [[sources]]
///     type = "temporal"
///     name = "workflows"
///     address = "temporal.internal:7233"
///     namespace = "default"
///     query = "TaskQueue = '$APP_NAME'"
/// "#).unwrap();
/// let built: Vec<_> = file.sources.iter().map(|s| s.build().unwrap()).collect();
/// assert_eq!(
///     built.iter().map(|s| s.name()).collect::<Vec<_>>(),
///     ["load", "spare", "backlog", "workflows"]
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// A [`PrometheusSource`].
    Prometheus(PrometheusConfig),
    /// A [`ConstantSource`].
    Constant(ConstantConfig),
    /// An [`HttpJsonSource`].
    HttpJson(HttpJsonConfig),
    /// A [`TemporalSource`].
    Temporal(TemporalConfig),
}

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Prometheus(c) => &c.name,
            SourceConfig::Constant(c) => &c.name,
            SourceConfig::HttpJson(c) => &c.name,
            SourceConfig::Temporal(c) => &c.name,
        }
    }

    /// The secrets the source holds (credentials it sends, private keys): callers that print
    /// text from the source's answers (logs, errors) redact them.
    pub fn secrets(&self) -> Vec<&crate::Token> {
        match self {
            SourceConfig::Prometheus(c) => c.token.iter().collect(),
            SourceConfig::Constant(_) => Vec::new(),
            SourceConfig::HttpJson(c) => c.token.iter().collect(),
            SourceConfig::Temporal(c) => c.key.iter().chain(c.api_key.iter()).collect(),
        }
    }

    /// Builds the source.
    ///
    /// # Errors
    /// [`MetricsError::Config`] when the configuration is invalid (see each source's `new`).
    pub fn build(&self) -> Result<Arc<dyn MetricSource>, MetricsError> {
        Ok(match self {
            SourceConfig::Prometheus(c) => Arc::new(PrometheusSource::new(c.clone())?),
            SourceConfig::Constant(c) => Arc::new(ConstantSource::from_config(c)?),
            SourceConfig::HttpJson(c) => Arc::new(HttpJsonSource::new(c.clone())?),
            SourceConfig::Temporal(c) => Arc::new(TemporalSource::new(c.clone())?),
        })
    }
}
