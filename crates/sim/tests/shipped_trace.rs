//! The shipped trace, `traces/diurnal-day.csv`: what it is, and the blueprint replayed on it.

use fleetscale_sim::{shapes, Trace};

const SHIPPED: &str = include_str!("../traces/diurnal-day.csv");

#[test]
fn the_shipped_trace_is_the_generators_output() {
    let generated = shapes::diurnal_trace(shapes::SHIPPED_DAY, shapes::SHIPPED_STEP).to_csv();
    if std::env::var_os("FLEETSCALE_WRITE_TRACE").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/traces/diurnal-day.csv"),
            &generated,
        )
        .unwrap();
    }
    assert_eq!(
        SHIPPED, generated,
        "regenerate with FLEETSCALE_WRITE_TRACE=1"
    );
    let t = Trace::from_csv(SHIPPED).unwrap();
    assert_eq!(t.len(), 5760, "a day at a 15 s step");
    assert_eq!(t.step_ms(), Some(15_000));
}
