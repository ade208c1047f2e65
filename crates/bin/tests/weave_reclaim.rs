//! The built `fleetscale weave reclaim` daemon against the Weave router emulator, as an
//! operator runs it: with an inventory command listing the hosts that exist. A dynamic peer
//! that owned addresses loses its host without `weave reset`; once the inventory no longer
//! lists the host, the daemon reclaims its space with exactly one `rmpeer` on the designated
//! fixed peer, and a later run does not repeat it (the ledger remembers). Without an
//! inventory, or with only a grace, it refuses to start before touching any router.

mod common;

use std::time::Duration;

use common::{eventually, fleetscale, run, Proc};
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

    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("reclaim.ledger");
    // The operator's inventory: a file of live hosts, printed by a command.
    let hosts = common::write_file(dir.path(), "hosts.txt", "i-dyn4 dyn4 192.168.77.4\n");
    let inventory = format!("command:cat {}", hosts.display());
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
        let mut c = fleetscale();
        c.args(["--log-format", "json", "weave", "reclaim"])
            .args(&fixed_args)
            .arg("--ledger")
            .arg(&ledger)
            .args(["--inventory", &inventory])
            .args(extra);
        c
    };

    let mut proc = Proc::spawn(reclaim_cmd(&[
        "--min-unreachable",
        "1s",
        "--interval",
        "1s",
    ]));
    let logs = proc.stderr_reader();
    // While dyn4 lives, the daemon binds it to its host and leaves it alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(emu.rmpeer_log().is_empty(), "{}", logs());
    assert!(
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .contains("\"host\":\"i-dyn4\""),
        "dyn4 bound to its host in the ledger\n{}",
        logs()
    );

    // The host vanishes, and the inventory says so.
    emu.kill(dyn4).expect("kill dyn4");
    std::fs::write(&hosts, "").unwrap();
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
    // Several more passes run; none repeats the reclaim.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    assert!(
        logs().contains("reclaimed the IP space of a vanished peer"),
        "{}",
        logs()
    );
    proc.stop_cleanly("TERM");

    // A one-shot pass afterwards: nothing left to reclaim, exit 0, no second rmpeer.
    let (status, out, err) = run(reclaim_cmd(&["--min-unreachable", "1s", "--once"]));
    assert!(status.success(), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON report");
    assert_eq!(report["reclaimed"], serde_json::json!([]), "{out}");
    assert_eq!(rmpeers_of_dyn4(), 1);
}

/// A listener standing in for a router: counts the connections it accepts.
async fn counting_listener() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (url, n)
}

#[tokio::test]
async fn refuses_a_grace_or_no_inventory_or_nonsense_before_touching_a_router() {
    let (url, connections) = counting_listener().await;
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| {
        let mut c = fleetscale();
        c.args(["weave", "reclaim", "--once", "--fixed"])
            .arg(format!("00:00:00:00:00:01=10.0.0.1={url}"))
            .arg("--ledger")
            .arg(dir.path().join("l"))
            .args(extra);
        c
    };
    let hosts = "command:printf h1";
    for (extra, wants) in [
        (
            vec!["--grace", "20s", "--min-unreachable", "10s"],
            vec![
                "--grace 20s is refused",
                "partition",
                "duplicate IPs",
                "--inventory fly:APP",
                "command:",
            ],
        ),
        (
            vec![],
            vec!["--inventory is required", "partition", "http(s)://"],
        ),
        (
            vec!["--inventory", hosts, "--interval", "0s"],
            vec!["the interval is 0ns", "between 1s and 24h"],
        ),
        (
            vec!["--inventory", "ftp://x"],
            vec!["--inventory \"ftp://x\""],
        ),
        (
            vec!["--inventory", hosts, "--designated", "00:00:00:00:00:09"],
            vec!["not a fixed peer"],
        ),
    ] {
        let (status, out, err) = run(base(&extra));
        assert!(!status.success(), "{extra:?} must fail\n{out}\n{err}");
        for w in wants {
            assert!(err.contains(w), "{extra:?}: want {w:?} in\n{err}");
        }
    }
    // A router URL with a path is refused at start too.
    let (status, _, err) = run(fleetscale()
        .args([
            "weave",
            "reclaim",
            "--once",
            "--inventory",
            hosts,
            "--fixed",
        ])
        .arg(format!("00:00:00:00:00:01=10.0.0.1={url}/weave")));
    assert!(!status.success());
    assert!(err.contains("no path"), "{err}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no router was contacted"
    );
}
