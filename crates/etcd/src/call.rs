//! One etcd request with its deadline, retried while it could not reach a member.
//!
//! The client spreads requests over every endpoint; while a member is down some requests are
//! sent its way and fail to connect (gRPC `UNAVAILABLE`). Such a request is retried at once
//! on another pick, until the deadline, so one dead member of three costs nothing but a few
//! milliseconds. Only `UNAVAILABLE` answers are retried; every request of this crate is safe
//! to repeat even when the first attempt did take effect (creates compare with absence and
//! read back what holds the key, deletes compare the revision, fences record the same action
//! again, appends compare the record).

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::lease::Counters;
use crate::EtcdError;

fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, or `timeout` passes;
/// each attempt adds one to `counter`.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    timeout: Duration,
    counter: &AtomicU64,
    mut attempt: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EtcdError::timeout(what, timeout));
        }
        Counters::add(counter);
        match tokio::time::timeout(left, attempt()).await {
            Err(_) => return Err(EtcdError::timeout(what, timeout)),
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if retryable(&e) && Instant::now() + pause < deadline => {
                tracing::debug!(what, error = %e, "etcd request failed to reach a member; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Ok(Err(e)) => {
                tracing::debug!(what, error = ?e, retryable = retryable(&e), "etcd request failed");
                return Err(EtcdError::client(what, e));
            }
        }
    }
}
