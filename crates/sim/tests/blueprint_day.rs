//! The Fly blueprint replayed over the shipped day: outputs, determinism, `--compare`.

use fleetscale_sim::{replay, shapes, write_outputs, ReplayConfig, Trace};

const SHIPPED: &str = include_str!("../traces/diurnal-day.csv");

fn blueprint(label: &str, rule: &str) -> ReplayConfig {
    ReplayConfig::fly_blueprint(label, "my-app", rule).unwrap()
}

#[test]
fn outputs_are_written_and_byte_identical_for_the_same_inputs() {
    let trace = Trace::from_csv(SHIPPED).unwrap();
    let a = replay(
        &trace,
        &blueprint("blueprint", "min(running_machines + 1, 10)"),
    )
    .unwrap();
    let b = replay(
        &trace,
        &blueprint("two spares", "min(running_machines + 2, 12)"),
    )
    .unwrap();
    let dir = match std::env::var_os("FLEETSCALE_KEEP_PLOT") {
        Some(d) => std::path::PathBuf::from(d),
        None => tempfile::tempdir().unwrap().keep(),
    };
    let out = write_outputs(&dir, &[&a, &b]).unwrap();
    let first = std::fs::read(&out.summary).unwrap();
    let again = replay(
        &trace,
        &blueprint("blueprint", "min(running_machines + 1, 10)"),
    )
    .unwrap();
    assert_eq!(first, again.summary.to_json().into_bytes());
    let png = std::fs::read(&out.png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(&out.svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("two spares"));
    println!("{}", std::fs::read_to_string(&out.table).unwrap());
    let _ = shapes::SHIPPED_DAY;
}
