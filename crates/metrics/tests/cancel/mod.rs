//! A cancellation from outside a read, for the tests of `read_with_cancel`.

use std::fmt::Debug;
use std::time::Duration;

use fleetscale_metrics::MetricsError;
use tokio_util::sync::CancellationToken;

/// Runs `read` with a token that a task of its own fires `after` from now, and returns the
/// error the read must end with: [`MetricsError::Cancelled`].
pub async fn cancelled_read<T: Debug>(
    after: Duration,
    read: impl AsyncFnOnce(&CancellationToken) -> Result<T, MetricsError>,
) -> MetricsError {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        fire.cancel();
    });
    let err = read(&token).await.expect_err("a cancelled read fails");
    assert!(matches!(err, MetricsError::Cancelled { .. }), "{err:?}");
    err
}
