//! Backoff between retries of a call that failed temporarily, shared by the backends' clients.
//!
//! "Full jitter" as described in the AWS Architecture Blog, *Exponential Backoff And Jitter*
//! (2015): the wait before retry `n` is uniformly random in `[0, min(max, initial × 2^n)]`,
//! which spreads the retries of many clients instead of synchronising them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The "full jitter" wait before retry number `retry` (0-based): uniformly random in
/// `[0, min(max, initial × 2^retry)]` (the exponent stops growing at 30).
///
/// ```
/// use std::time::Duration;
/// use fleetscale_core::backoff::full_jitter;
///
/// let (initial, max) = (Duration::from_millis(250), Duration::from_secs(10));
/// assert!(full_jitter(initial, max, 0) <= initial);
/// assert!(full_jitter(initial, max, 40) <= max);
/// assert_eq!(full_jitter(Duration::ZERO, max, 3), Duration::ZERO);
/// ```
pub fn full_jitter(initial: Duration, max: Duration, retry: u32) -> Duration {
    let cap = initial
        .saturating_mul(2u32.saturating_pow(retry.min(30)))
        .min(max);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let r = random_u64();
    Duration::from_nanos(nanos.checked_add(1).map_or(r, |span| r % span))
}

/// A non-cryptographic random number (for jitter only): a process-wide counter hashed with a
/// `RandomState`, whose keys the OS's random source seeds.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_the_growing_cap_and_are_jittered() {
        let (initial, max) = (Duration::from_millis(250), Duration::from_secs(10));
        let mut distinct = std::collections::BTreeSet::new();
        for retry in 0..40 {
            let wait = full_jitter(initial, max, retry);
            assert!(wait <= max, "retry {retry}: {wait:?}");
            assert!(
                wait <= initial.saturating_mul(2u32.saturating_pow(retry.min(30))),
                "retry {retry}: {wait:?}"
            );
            distinct.insert(wait);
        }
        assert!(distinct.len() > 10, "waits are jittered: {distinct:?}");
        let huge = Duration::from_nanos(u64::MAX);
        assert!(full_jitter(huge, huge, 5) <= huge);
    }
}
