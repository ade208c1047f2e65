//! The built `fleetscale weave reclaim` daemon against the Weave router emulator: a dynamic
//! peer that owned addresses vanishes without `weave reset`; the daemon reclaims its space
//! with exactly one `rmpeer` on the designated fixed peer, and a later run does not repeat it
//! (the ledger remembers).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, run, Proc};
use fleetscale_weave::fake::{Emulator, EmulatorConfig};
use fleetscale_weave::PeerName;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_daemon_reclaims_a_vanished_peer_exactly_once() {
    let emu = Emulator::new(EmulatorConfig::default());
    let fixed = emu.start_fixture_cluster().await.expect("fixture cluster");
    let dyn4 = PeerName::from_u64(4).unwrap();
    let targets: Vec<String> = fixed.iter().map(|(s, _)| s.address.clone()).collect();
    emu.launch(dyn4, targets).await.expect("launch dyn4");
    let ip = emu.allocate(dyn4, "container-1").expect("allocate on dyn4");
    assert!(!ip.is_empty());
    let owned = emu.owned(fixed[0].0.name, dyn4);
    assert!(owned > 0, "dyn4 owns space");
    emu.kill(dyn4).expect("kill dyn4");

    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("reclaim.ledger");
    let fixed_args: Vec<String> = fixed
        .iter()
        .flat_map(|(spec, url)| {
            [
                "--fixed".to_owned(),
                format!("{}={}={url}", spec.name, spec.address),
            ]
        })
        .collect();
    let reclaim_cmd = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetscale"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--log-format")
            .arg("json")
            .args(["weave", "reclaim"])
            .args(&fixed_args)
            .arg("--ledger")
            .arg(&ledger)
            .args(extra);
        c
    };

    let mut proc = Proc::spawn(reclaim_cmd(&[
        "--grace",
        "1s",
        "--min-unreachable",
        "1s",
        "--interval",
        "300ms",
    ]));
    let stderr = proc.stderr.clone();
    let logs = move || stderr.lock().unwrap().join("\n");
    let rmpeers_of_dyn4 = || {
        emu.rmpeer_log()
            .into_iter()
            .filter(|r| r.target == Some(dyn4))
            .count()
    };
    eventually(
        "an rmpeer of dyn4",
        || (rmpeers_of_dyn4() > 0).then_some(()),
        &logs,
    )
    .await;
    // Several more passes (300 ms apart) run; none repeats the reclaim.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rmpeers_of_dyn4(), 1, "exactly once\n{}", logs());
    let record = emu
        .rmpeer_log()
        .into_iter()
        .find(|r| r.target == Some(dyn4))
        .unwrap();
    assert_eq!(
        record.by, fixed[0].0.name,
        "on the designated (first) fixed peer"
    );
    assert_eq!(record.taken_over, owned);
    assert_eq!(
        emu.owned(fixed[0].0.name, dyn4),
        0,
        "nothing owned by the gone peer"
    );
    assert!(emu.duplicate_ownership().is_empty());
    proc.signal("TERM");
    assert!(proc.wait(Duration::from_secs(60)).success(), "{}", logs());

    // A one-shot pass afterwards: nothing left to reclaim, exit 0, no second rmpeer.
    let (status, out, err) = run(reclaim_cmd(&[
        "--grace",
        "1s",
        "--min-unreachable",
        "1s",
        "--once",
    ]));
    assert!(status.success(), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON report");
    assert_eq!(report["reclaimed"], serde_json::json!([]), "{out}");
    assert_eq!(rmpeers_of_dyn4(), 1);
}
