//! The [`MetricSource`] trait: where the numbers come from.

use async_trait::async_trait;

use crate::{Result, Scope};

/// A source of one number per target, read once per tick: a Prometheus query, a constant, an
/// HTTP endpoint, a queue depth.
///
/// The value is made available to policy expressions under [`MetricSource::name`].
///
/// Implement it with `#[fleetscale_core::async_trait]` on the `impl` block: `collect` is
/// `async`, `name` is a plain method.
///
/// # Guarantees the engine gives
/// - `collect` is called at most once per target per tick, concurrently with the target's other
///   sources, inside a deadline; when the deadline passes the future is dropped.
/// - A failure never scales in by default: the policy's error rule decides (hold, or a fallback
///   count after N consecutive failures).
///
/// # Assumptions about implementations
/// - **Read-only and idempotent**: collecting twice has no effect beyond the reads.
/// - **Cancellation-safe**: dropping the future at any `.await` leaves nothing half-done.
/// - **Scope-aware**: a source shared by many targets expands `$APP_NAME` / `${APP_NAME}` (see
///   [`Scope::expand`]) at collect time, not when it is built.
/// - Returns only finite numbers; a NaN or infinite reading is an [`crate::Error::Metric`].
///
/// # Errors
/// - [`crate::Error::Metric`]: the server answered, but with no usable value (empty result,
///   several series, NaN).
/// - [`crate::Error::Unavailable`] / [`crate::Error::Timeout`]: the server could not be read.
/// - [`crate::Error::Unauthorized`]: credentials were refused.
/// - [`crate::Error::InvalidResponse`]: the answer could not be decoded.
///
/// # Example
/// ```
/// use fleetscale_core::async_trait;
/// use fleetscale_core::{MetricSource, Result, Scope};
///
/// /// Reports the length of the target's name: a stand-in for a queue depth.
/// struct NameLength;
///
/// #[async_trait]
/// impl MetricSource for NameLength {
///     fn name(&self) -> &str {
///         "name_length"
///     }
///     async fn collect(&self, scope: &Scope) -> Result<f64> {
///         Ok(scope.target.len() as f64)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let value = NameLength.collect(&Scope::new("my-app")).await.unwrap();
/// assert_eq!(value, 6.0);
/// # });
/// ```
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// The variable name the value is bound to in expressions. Must be a valid identifier and
    /// must not clash with the count variables (`created_machines`, ...).
    fn name(&self) -> &str;

    /// Reads the current value for `scope`.
    async fn collect(&self, scope: &Scope) -> Result<f64>;
}

#[async_trait]
impl<T: MetricSource + ?Sized> MetricSource for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn collect(&self, scope: &Scope) -> Result<f64> {
        (**self).collect(scope).await
    }
}

#[async_trait]
impl<T: MetricSource + ?Sized> MetricSource for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn collect(&self, scope: &Scope) -> Result<f64> {
        (**self).collect(scope).await
    }
}
