//! The fleets and scenarios of the planner benchmarks (`benches/plan.rs` and
//! `benches/plan_instructions.rs`); `tests/planner.rs` plans fleets of the same state mix
//! against the reference planner.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use fleetscale_core::{Bounds, Counts, Machine, MachineState, Targets};

/// The state mix, repeated: mostly started and stopped, with every transition and failure.
pub const MIX: [MachineState; 12] = [
    MachineState::Started,
    MachineState::Started,
    MachineState::Started,
    MachineState::Started,
    MachineState::Stopped,
    MachineState::Stopped,
    MachineState::Created,
    MachineState::Starting,
    MachineState::Stopping,
    MachineState::Suspended,
    MachineState::Failed,
    MachineState::Destroying,
];

/// `n` machines in the mixed states, with distinct ids and creation times.
pub fn inventory(n: usize) -> Vec<Machine> {
    (0..n)
        .map(|i| {
            Machine::new(format!("m{i:08}"), MIX[i % MIX.len()])
                .with_created_at(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64),
                )
                .with_region("ams")
        })
        .collect()
}

/// The scenarios by name: a steady state (nothing to do), a scale-up (+10 % created, 80 %
/// started) and a scale-down (half the machines destroyed, a quarter left started).
pub const SCENARIOS: [&str; 3] = ["steady", "scale_up", "scale_down"];

/// The targets of scenario `name` (a `_capped` suffix is ignored) for a fleet of counts `c`.
pub fn scenario_targets(name: &str, c: &Counts) -> Targets {
    match name.trim_end_matches("_capped") {
        "steady" => Targets {
            created: Bounds::between(c.created, c.created),
            started: Bounds::between(c.started, c.started),
        },
        "scale_up" => Targets {
            created: Bounds::exactly(c.created + c.created / 10),
            started: Bounds::exactly(c.created * 8 / 10),
        },
        "scale_down" => Targets {
            created: Bounds::exactly((c.created / 2).max(1)),
            started: Bounds::exactly(c.created / 4),
        },
        other => panic!("unknown scenario {other}"),
    }
}
