//! [`ConstantSource`]: a fixed number, for tests, demos and "always keep N" policies.

use async_trait::async_trait;
use fleetscale_core::{MetricSource, Scope};
use serde::{Deserialize, Serialize};

use crate::error::MetricsError;

/// Configuration of a [`ConstantSource`].
///
/// ```
/// let cfg: fleetscale_metrics::ConstantConfig = toml::from_str("name = 'floor'\nvalue = 2").unwrap();
/// assert_eq!(cfg.value, 2.0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {
    /// The variable name in expressions.
    pub name: String,
    /// The value (finite).
    pub value: f64,
}

/// A [`MetricSource`] that always returns the same value, whatever the scope.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantSource {
    name: String,
    value: f64,
}

impl ConstantSource {
    /// A constant `value` named `name`.
    ///
    /// # Errors
    /// [`MetricsError::Config`] when the name is not an identifier or the value is NaN/infinite.
    pub fn new(name: impl Into<String>, value: f64) -> Result<Self, MetricsError> {
        let name = name.into();
        if let Err(message) = crate::check_name(&name) {
            return Err(MetricsError::Config {
                metric: name,
                message: message.to_owned(),
            });
        }
        if !value.is_finite() {
            return Err(MetricsError::Config {
                metric: name,
                message: format!("`value` must be a finite number, got {value}"),
            });
        }
        Ok(ConstantSource { name, value })
    }

    /// From its configuration; see [`ConstantSource::new`].
    pub fn from_config(config: &ConstantConfig) -> Result<Self, MetricsError> {
        ConstantSource::new(config.name.clone(), config.value)
    }

    /// The number every read returns (finite, checked at construction).
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// Returns the value; never fails.
#[async_trait]
impl MetricSource for ConstantSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn collect(&self, _scope: &Scope) -> fleetscale_core::Result<f64> {
        Ok(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_its_value_for_any_scope() {
        let c = ConstantSource::new("spare", 3.5).unwrap();
        assert_eq!(c.name(), "spare");
        assert_eq!(c.collect(&Scope::new("a")).await.unwrap(), 3.5);
        assert_eq!(c.collect(&Scope::new("b")).await.unwrap(), 3.5);
        assert!(ConstantSource::new("x", f64::NAN).is_err());
        assert!(ConstantSource::new("x", f64::INFINITY).is_err());
        assert!(ConstantSource::new("not valid", 1.0).is_err());
        let from = ConstantSource::from_config(&ConstantConfig {
            name: "k".into(),
            value: -1.0,
        })
        .unwrap();
        assert_eq!(from.value(), -1.0);
    }
}
