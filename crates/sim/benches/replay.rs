//! A day at a 15 s step (5,760 ticks of Fly's blueprint with the Fly Proxy model), replayed;
//! and what the rest of a backtest costs: reading the CSV, the summary's JSON, the SVG plot.
//!
//! `cargo bench -p fleetscale-sim --bench replay`

use criterion::{criterion_group, criterion_main, Criterion};
use fleetscale_core::policy::Limits;
use fleetscale_sim::{plot, replay, ReplayConfig, Trace};
use std::hint::black_box;
use std::time::Duration;

const SHIPPED: &str = include_str!("../traces/diurnal-day.csv");

fn blueprint() -> ReplayConfig {
    let mut c = ReplayConfig::fly_blueprint("blueprint", "my-app", "min(running_machines + 1, 10)")
        .unwrap();
    c.policy.limits = Limits {
        scale_in_stabilization: Duration::from_secs(300),
        cooldown_after_scale_down: Duration::from_secs(60),
        ..Limits::default()
    };
    c
}

fn bench(c: &mut Criterion) {
    let trace = Trace::from_csv(SHIPPED).unwrap();
    assert_eq!(trace.len(), 5760);
    let config = blueprint();
    let mut g = c.benchmark_group("backtest_day_15s");
    g.bench_function("replay", |b| {
        b.iter(|| replay(black_box(&trace), black_box(&config)).unwrap())
    });
    g.bench_function("read_csv", |b| {
        b.iter(|| Trace::from_csv(black_box(SHIPPED)).unwrap())
    });
    let r = replay(&trace, &config).unwrap();
    g.bench_function("summary_json", |b| {
        b.iter(|| black_box(&r.summary).to_json())
    });
    g.bench_function("plot_svg", |b| {
        b.iter(|| plot::svg(&[black_box(&r)]).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
