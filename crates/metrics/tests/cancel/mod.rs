//! A cancellation from outside a read, for the tests of `read_with_cancel`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token that a task of its own fires `after` from now.
pub fn fired_after(after: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        fire.cancel();
    });
    token
}
