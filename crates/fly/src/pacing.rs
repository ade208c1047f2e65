//! Client-side pacing (token buckets) and retry/backoff settings.
//!
//! Fly documents its Machines API limits as "per action, per machine (scoped per Machine ID or
//! App ID depending on the request): 1 req/s with short bursts to 3 req/s; Get Machine 5 req/s,
//! burst 10" (docs `machines/api/working-with-machines-api`). Create is app-scoped, so bulk
//! creates are paced per app. The client waits for a token *before* each attempt (retries
//! included), so it stays under the limits instead of bouncing off 429s.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token-bucket rate: `per_second` tokens are added each second, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (> 0).
    pub per_second: f64,
    /// Bucket size: how many requests may go at once after a pause (>= 1).
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_second` with bursts of `burst`.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Rate { per_second, burst }
    }
}

/// Which limits the client applies to itself. Defaults follow Fly's documented limits.
#[derive(Clone, Debug, PartialEq)]
pub struct PacingConfig {
    /// When `false`, no pacing at all (tests, or a caller with its own limiter).
    pub enabled: bool,
    /// Mutating actions per machine and action (start, stop, suspend, destroy, wait, lease,
    /// cordon): 1/s, burst 3.
    pub machine_action: Rate,
    /// `GET /v1/apps/{app}/machines/{id}` per machine: 5/s, burst 10.
    pub get_machine: Rate,
    /// Creates per app: 1/s, burst 3.
    pub create: Rate,
    /// App-scoped reads (list machines, get app) per app and org-scoped app listing per org:
    /// 1/s, burst 3.
    pub app_action: Rate,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            machine_action: Rate::new(1.0, 3),
            get_machine: Rate::new(5.0, 10),
            create: Rate::new(1.0, 3),
            app_action: Rate::new(1.0, 3),
        }
    }
}

impl PacingConfig {
    /// No pacing.
    pub fn disabled() -> Self {
        PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        }
    }
}

/// Retries of transient failures (429, 502/503/504, connection errors, client timeouts) for
/// idempotent calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts including the first (1 = no retries). Default 4.
    pub max_attempts: u32,
    /// Backoff cap of the first retry; doubles each retry. Default 200 ms.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff. Default 5 s.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a 429 asking for longer is returned to the caller
    /// instead of waited out. Default 30 s.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// No retries at all.
    pub fn none() -> Self {
        RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        }
    }

    /// The "full jitter" backoff before retry number `retry` (0-based): a uniformly random
    /// duration in `[0, min(max_backoff, initial_backoff * 2^retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

/// A non-cryptographic random number (for jitter only), from std's randomly seeded hasher.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by (action, scope). Reserving is synchronous; the wait is a plain
/// sleep, so dropping a waiting future is harmless (its token stays spent, which only makes
/// the client more conservative).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
}

impl Limiter {
    /// Reserves one token and returns how long to wait before using it.
    pub(crate) fn reserve(&self, action: &'static str, scope: &str, rate: Rate) -> Duration {
        let per_second = if rate.per_second > 0.0 {
            rate.per_second
        } else {
            1.0
        };
        let burst = f64::from(rate.burst.max(1));
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > 4096 {
            // Forget buckets that are full again: they carry no information.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * per_second < burst
            });
        }
        let b = buckets.entry((action, scope.to_owned())).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.last = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / per_second)
        }
    }

    /// Waits for a token.
    pub(crate) async fn acquire(&self, action: &'static str, scope: &str, rate: Rate) {
        let wait = self.reserve(action, scope, rate);
        if !wait.is_zero() {
            tracing::debug!(action, scope, ?wait, "pacing Machines API call");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_paces() {
        let l = Limiter::default();
        let r = Rate::new(1.0, 3);
        for _ in 0..3 {
            assert_eq!(l.reserve("start", "m1", r), Duration::ZERO);
        }
        let w = l.reserve("start", "m1", r);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // Another machine has its own bucket.
        assert_eq!(l.reserve("start", "m2", r), Duration::ZERO);
        // Another action too.
        assert_eq!(l.reserve("stop", "m1", r), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.reserve("start", "m1", r), Duration::ZERO);
    }

    #[test]
    fn backoff_is_bounded() {
        let c = RetryConfig::default();
        for retry in 0..40 {
            let b = c.backoff(retry);
            assert!(b <= c.max_backoff, "{b:?}");
            assert!(b <= c.initial_backoff * 2u32.saturating_pow(retry.min(30)));
        }
        let zero = RetryConfig {
            initial_backoff: Duration::ZERO,
            ..RetryConfig::default()
        };
        assert_eq!(zero.backoff(3), Duration::ZERO);
    }
}
