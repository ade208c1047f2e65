//! The Criterion settings of the workspace's micro-benchmarks (core's expression and planner
//! benches, Fly's decoding, Weave's parsing), in one place so that their figures in
//! BENCHMARKS.md are measured alike. Each bench includes this file with `#[path]` (see
//! `crates/shared/README.md`): a bench target cannot export a function, and Criterion is a
//! dev-dependency only.

use std::time::Duration;

use criterion::Criterion;

/// Twenty samples over three seconds after a one-second warm-up: enough for the
/// micro-benchmarks here (each iteration well under a millisecond) to give stable medians
/// while `cargo bench --workspace` stays short on a 2-core machine.
pub fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

/// The `main` of a bench target: runs `bench` with [`quick`] settings (and the command line's
/// Criterion options), then prints Criterion's summary, as `criterion_group!` with
/// `config = quick()` followed by `criterion_main!` would.
pub fn run(bench: fn(&mut Criterion)) {
    let mut criterion = quick().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
