//! Random numbers for launch tokens and test request ids, from std's randomly keyed hasher (no
//! extra dependency; not for cryptography).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A random `u64`: each call hashes a process-wide counter, the time and the process id with
/// a `RandomState`, whose keys the OS's random source seeds.
pub(crate) fn u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A launch token: `fs-` and 32 hex digits (128 random bits). EC2's `ClientToken` allows up
/// to 64 ASCII characters.
pub(crate) fn launch_token() -> String {
    format!("fs-{:016x}{:016x}", u64(), u64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_distinct_and_well_formed() {
        let tokens: std::collections::BTreeSet<String> =
            (0..1000).map(|_| super::launch_token()).collect();
        assert_eq!(tokens.len(), 1000);
        for t in &tokens {
            assert_eq!(t.len(), 35);
            assert!(t[3..].chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
    }
}
