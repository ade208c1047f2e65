//! # fleetscale-bench
//!
//! The benchmark and reliability harness of fleetscale (not published):
//! - the `engine_bench` binary: the engine with `FlyScaler` against the fake Machines API on
//!   loopback, with injected latency and Fly's documented rate limits (see `BENCHMARKS.md`);
//! - soak and fuzz tests that need several backends (`tests/`).
//!
//! This library holds what the binary and the tests share: process statistics read from
//! `/proc`, seeding of the fake, request-log summaries, the emulated Weave cluster, and the
//! fuzz tests' case count.

pub mod alloc_count;
pub mod fleet;
pub mod procstat;
pub mod remote;
pub mod replicas;
pub mod stages;
pub mod weave_cluster;

/// The number of cases a fuzz test runs: `PROPTEST_CASES` when set to a number (long runs),
/// else `default` (what CI runs).
pub fn proptest_cases(default: u32) -> u32 {
    env_number("PROPTEST_CASES", default)
}

/// A multi-threaded Tokio runtime with I/O and timers, of `threads` workers (at least one)
/// named `thread_name`: the engine benchmark gives the engine and the fake Fly server runtimes
/// of their own, so that each one's threads are sized and seen apart (in `top -H`, profiles).
///
/// # Errors
/// When the operating system refuses the threads or the I/O driver.
pub fn runtime(threads: usize, thread_name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(thread_name)
        .enable_all()
        .build()
}

/// The number in the environment variable `name` when it holds one, else `default`: how the
/// soaks read their length, pace and seed, so that a long run or a failing seed is replayed by
/// setting a variable.
///
/// ```
/// assert_eq!(fleetscale_bench::env_number("FLEETSCALE_UNSET_FOR_THE_EXAMPLE", 7u64), 7);
/// ```
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
