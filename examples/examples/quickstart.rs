//! Quick start: the engine scaling an in-memory fleet with a synthetic load curve.
//!
//! No account, no server: `cargo run -p fleetscale-examples --example quickstart`.
//!
//! The policy is Fly's "Autoscale Machines" blueprint — keep one spare machine beyond those
//! running, at most 10 (`min(running_machines + 1, 10)`, new machines created stopped) — plus a
//! started count that follows the load (`ceil(load / 20)`: 20 requests per machine).

use std::sync::Arc;
use std::time::Duration;

use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::TickStatus;
use fleetscale_core::testing::{FakeScaler, StaticMetric, Transitions};
use fleetscale_core::{Counts, InitialState, MachineState, Scope};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fleet = Arc::new(
        FakeScaler::new()
            .with_transitions(Transitions::AfterLists(1))
            .with_machines(1, MachineState::Started),
    );
    let load = Arc::new(StaticMetric::new("load", 0.0));
    let running = Arc::new(StaticMetric::new("running_machines", 1.0));
    let policy = Policy {
        created: CountRule::from_settings(
            "created",
            Some("min(running_machines + 1, 10)"),
            None,
            None,
        )?,
        started: CountRule::from_settings("started", Some("max(1, ceil(load / 20))"), None, None)?,
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new("quickstart-app"), fleet.clone(), policy)
        .with_source(load.clone())
        .with_source(running.clone())
        .with_initial_state(InitialState::Stopped);
    target.validate()?;
    let engine = Engine::new(
        EngineConfig::default().with_interval(Duration::from_millis(100)),
        Arc::new(vec![target]),
    );

    println!("tick  load  running  created  started  actions");
    // A day of traffic in 24 ticks: quiet night, morning ramp, peak, evening decline.
    let curve = [
        5.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 190.0, 200.0, 190.0, 160.0, 140.0,
        120.0, 100.0, 80.0, 60.0, 40.0, 30.0, 20.0, 10.0, 5.0, 5.0,
    ];
    let mut actions = 0usize;
    for (i, l) in curve.iter().enumerate() {
        load.set(*l);
        running.set(f64::from(Counts::of(&fleet.machines()).started));
        let record = engine.run_once().await?.remove(0);
        if let TickStatus::Failed { message, .. } = &record.status {
            return Err(message.clone().into());
        }
        let c = Counts::of(&fleet.machines());
        let done: Vec<String> = record
            .outcomes
            .iter()
            .map(|o| o.action.kind().to_string())
            .collect();
        actions += done.len();
        println!(
            "{:>4}  {:>4}  {:>7}  {:>7}  {:>7}  {}",
            i + 1,
            l,
            running_value(&record),
            c.created,
            c.started,
            summarize(&done)
        );
        tokio::time::sleep(engine.config().interval).await;
    }
    println!(
        "done: {actions} actions, {} machines left",
        fleet.machines().len()
    );
    Ok(())
}

fn running_value(record: &fleetscale_core::record::DecisionRecord) -> String {
    match record.metrics.get("running_machines") {
        Some(fleetscale_core::record::MetricReading::Value(v)) => format!("{v}"),
        _ => "-".into(),
    }
}

fn summarize(kinds: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for k in ["destroy", "create", "start", "stop"] {
        let n = kinds.iter().filter(|x| x.as_str() == k).count();
        if n > 0 {
            out.push(format!("{k} x{n}"));
        }
    }
    out.join(", ")
}
