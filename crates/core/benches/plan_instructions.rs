//! One planner call per process, for instruction counts that do not depend on the machine's
//! load (the shared 2-core machine these figures come from often runs other builds):
//!
//! ```text
//! cargo bench -p fleetscale-core --bench plan_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='*plan_actions*' \
//!     target/release/deps/plan_instructions-<hash> fast <scenario> <machines>
//! ```
//!
//! Scenarios are those of `benches/plan.rs` (`steady`, `scale_up`, `scale_down`, each also
//! `_capped`); `reference` in place of `fast` runs the specification the tests hold the
//! planner to (`tests/support/reference_plan.rs`: written for clarity, a scan of the fleet per
//! action, so not a planner to count instructions of). Run without arguments (as `cargo bench`
//! does), it plans every scenario at 10,000 machines and checks each plan against the
//! specification's.

use std::hint::black_box;

use fleetscale_core::plan::{plan_actions, Plan, PlanOptions};
use fleetscale_core::{Capabilities, Counts, Machine};

#[path = "../tests/support/bench_fleet.rs"]
mod bench_fleet;
#[path = "../tests/support/reference_plan.rs"]
mod reference_plan;
use bench_fleet::{inventory, scenario_targets};

fn options(scenario: &str) -> PlanOptions {
    let cap = scenario.ends_with("_capped").then_some(10);
    PlanOptions::default()
        .with_capabilities(
            Capabilities::default()
                .with_suspend(true)
                .with_create_needs_template(true)
                .with_create_stopped(true),
        )
        .with_max_actions_per_kind(cap)
}

fn plan(which: &str, scenario: &str, inv: &[Machine]) -> Plan {
    let t = scenario_targets(scenario, &Counts::of(inv));
    let o = options(scenario);
    match which {
        "fast" => plan_actions(black_box(inv), black_box(&t), &o),
        "reference" => reference_plan::reference_plan(inv, &t, &o),
        other => panic!("unknown planner {other} (fast or reference)"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [which, scenario, n] = args.as_slice() {
        let inv = inventory(n.parse().expect("machines: a number"));
        let p = plan(which, scenario, &inv);
        println!("{which} {scenario} {n}: {} actions", p.actions.len());
        return;
    }
    let inv = inventory(10_000);
    for scenario in [
        "steady",
        "scale_up",
        "scale_up_capped",
        "scale_down",
        "scale_down_capped",
    ] {
        let fast = plan("fast", scenario, &inv);
        assert_eq!(fast, plan("reference", scenario, &inv), "{scenario}");
        println!(
            "{scenario} 10000: {} actions, equal to the specification's",
            fast.actions.len()
        );
    }
}
