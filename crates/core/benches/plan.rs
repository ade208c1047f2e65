//! Planner micro-benchmarks: `plan_actions` over inventories of 10, 1,000, 10,000 and 100,000
//! machines in mixed states, for a steady state (nothing to do), a scale-up (+10 % created,
//! 80 % started) and a scale-down (half the machines destroyed, a quarter left started), each
//! also with per-tick caps of 10 actions per kind (`*_capped`).
//!
//! Run: `cargo bench -p fleetscale-core --bench plan -- --sample-size 20 --measurement-time 3`
//!
//! Only the planner is measured: the specification the tests hold it to
//! (`tests/support/reference_plan.rs`) is written for clarity and scans the fleet once per
//! action, so its times say nothing about planning.
//!
//! Throughput is reported per machine in the inventory, so "linear or better" reads as a flat
//! or falling time per element across sizes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use fleetscale_core::plan::{plan_actions, ActionKind, PlanOptions};
use fleetscale_core::{Capabilities, Counts, Targets};

#[path = "../tests/support/bench_fleet.rs"]
mod bench_fleet;
use bench_fleet::{inventory, scenario_targets, SCENARIOS};

#[path = "../../shared/criterion_config.rs"]
mod criterion_config;

fn scenarios(c: &Counts) -> [(&'static str, Targets); 3] {
    SCENARIOS.map(|name| (name, scenario_targets(name, c)))
}

fn bench(c: &mut Criterion) {
    let options = PlanOptions::default()
        .with_capabilities(
            Capabilities::default()
                .with_suspend(true)
                .with_create_needs_template(true)
                .with_create_stopped(true),
        )
        // Uncapped: the cost of planning a whole fleet's worth of actions.
        .with_max_actions_per_kind(None);
    // The same with per-tick caps of 10 actions of each kind (what a paced backend can do in
    // one tick anyway): the cost of the counting and sorting alone.
    let capped = options
        .clone()
        .with_max_creates(Some(10))
        .with_max_destroys(Some(10))
        .with_max_starts(Some(10))
        .with_max_stops(Some(10));
    let mut group = c.benchmark_group("plan_actions");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let inv = inventory(n);
        let counts = Counts::of(&inv);
        group.throughput(Throughput::Elements(n as u64));
        for (name, targets) in scenarios(&counts) {
            // Sanity, once per selected benchmark: the scenario plans what its name says.
            let mut checked = false;
            group.bench_with_input(BenchmarkId::new(name, n), &inv, |b, inv| {
                if !checked {
                    let plan = plan_actions(inv, &targets, &options);
                    match name {
                        "steady" => assert!(plan.is_empty(), "{:?}", plan.notes),
                        "scale_up" => assert!(plan.count(ActionKind::Create) > 0 || n < 10),
                        _ => assert!(plan.count(ActionKind::Destroy) > 0),
                    }
                    checked = true;
                }
                b.iter(|| plan_actions(black_box(inv), black_box(&targets), &options))
            });
            if name != "steady" {
                let mut checked = false;
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}_capped"), n),
                    &inv,
                    |b, inv| {
                        if !checked {
                            let plan = plan_actions(inv, &targets, &capped);
                            assert!(!plan.is_empty() && plan.actions.len() <= 40, "caps hold");
                            checked = true;
                        }
                        b.iter(|| plan_actions(black_box(inv), black_box(&targets), &capped))
                    },
                );
            }
        }
    }
    group.finish();
}

fn main() {
    criterion_config::run(bench);
}
