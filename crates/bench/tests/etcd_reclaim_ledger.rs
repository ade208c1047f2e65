//! The Weave reclaim ledger in real etcd: reclaimers on two "admin hosts" (each with its own
//! etcd client) with **different** designated peers, on the router emulator, reclaim each dead
//! peer exactly once (one `rmpeer`), whatever the interleaving of their passes. The setup the
//! file ledger cannot protect (two hosts, two files) is exactly this one.

use std::sync::Arc;
use std::time::Duration;

use fleetscale_bench::weave_cluster::{peer_address, peer_name, start_fixed_peers};
use fleetscale_core::coordination::LedgerStore;
use fleetscale_core::{ClusterMembership, Machine, MachineState};
use fleetscale_etcd::harness::EtcdCluster;
use fleetscale_etcd::{EtcdConfig, EtcdLedger};
use fleetscale_weave::fake::{
    EmulatedHosts, Emulator, EmulatorConfig, MachinePool, PeerSpec, Role,
};
use fleetscale_weave::{
    FixedPeer, ReclaimConfig, Reclaimer, WeaveMembership, WeaveMembershipConfig,
};

/// Three fixed peers, and observers dyn4..=dyn7 joined through the membership, each owning
/// address space.
async fn cluster() -> (Emulator, Vec<FixedPeer>, Arc<MachinePool>) {
    let emu = Emulator::new(EmulatorConfig::default());
    let fixed = start_fixed_peers(&emu).await.unwrap();
    let pool = Arc::new(MachinePool::new("pool"));
    let mut config = WeaveMembershipConfig::new(fixed.clone())
        .with_runner(Arc::new(EmulatedHosts::new(emu.clone())))
        .with_inventory_source("pool");
    config.poll_interval = Duration::from_millis(50);
    config.join_deadline = Duration::from_secs(30);
    let membership = WeaveMembership::new(config).unwrap();
    for n in 4..=7 {
        emu.add_peer(
            PeerSpec::new(peer_name(n), format!("dyn{n}"), peer_address(n)),
            Role::Observer,
        )
        .unwrap();
        let mut m = Machine::new(format!("m-dyn{n}"), MachineState::Started)
            .with_address(peer_address(n))
            .with_label("role", "dynamic");
        m.name = format!("dyn{n}");
        pool.add(m.clone());
        membership.join(&m).await.unwrap();
        emu.allocate(peer_name(n), &format!("c{n}")).unwrap();
        assert!(emu.owned(peer_name(1), peer_name(n)) > 0);
    }
    (emu, fixed, pool)
}

fn reclaimer(
    fixed: &[FixedPeer],
    designated: u64,
    pool: &Arc<MachinePool>,
    store: Arc<dyn LedgerStore>,
    dir: &std::path::Path,
) -> Arc<Reclaimer> {
    let mut c = ReclaimConfig::new(
        fixed.to_vec(),
        peer_name(designated),
        dir.join("unused.jsonl"),
    )
    .with_inventory(pool.clone())
    .with_ledger_store(store);
    c.verify_timeout = Duration::from_secs(30);
    c.lock_wait = Duration::from_secs(60);
    c.min_unreachable = Duration::ZERO;
    Arc::new(Reclaimer::new(c).unwrap())
}

fn etcd_store(config: &EtcdConfig) -> Arc<dyn LedgerStore> {
    Arc::new(EtcdLedger::new(config.clone(), "weave-reclaim").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaimers_on_two_hosts_with_different_designated_peers_reclaim_each_dead_peer_once() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let config = etcd.config();
    let (emu, fixed, pool) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    // Two hosts: each its own etcd client, its own designated peer.
    let host1 = reclaimer(&fixed, 1, &pool, etcd_store(&config), dir.path());
    let host2 = reclaimer(&fixed, 2, &pool, etcd_store(&config), dir.path());
    host1.run_once().await;
    host2.run_once().await;

    let mut reclaimed = Vec::new();
    for (round, dead) in [4u64, 5, 6, 7].into_iter().enumerate() {
        let owned = emu.owned(peer_name(1), peer_name(dead));
        assert!(owned > 0);
        emu.kill(peer_name(dead)).unwrap();
        pool.remove(&format!("dyn{dead}"));
        // Both hosts at once, in either order, several passes each.
        for _ in 0..3 {
            let (r1, r2) = if round % 2 == 0 {
                tokio::join!(host1.run_once(), host2.run_once())
            } else {
                let (r2, r1) = tokio::join!(host2.run_once(), host1.run_once());
                (r1, r2)
            };
            assert!(
                r1.errors.is_empty() && r2.errors.is_empty(),
                "{r1:?}\n{r2:?}"
            );
            reclaimed.extend(r1.reclaimed.iter().chain(&r2.reclaimed).copied());
        }
        assert_eq!(
            reclaimed
                .iter()
                .filter(|(p, _)| *p == peer_name(dead))
                .count(),
            1,
            "dyn{dead} reclaimed once: {reclaimed:?}"
        );
        assert_eq!(
            emu.rmpeer_log().len(),
            round + 1,
            "one rmpeer per dead peer"
        );
        assert!(emu.duplicate_ownership().is_empty());
    }
    // Each rmpeer ran on the designated peer of the reclaimer that did it, by name.
    let log = emu.rmpeer_log();
    assert!(
        log.iter()
            .all(|r| r.by == peer_name(1) || r.by == peer_name(2)),
        "{log:?}"
    );
    assert!(
        !dir.path().join("unused.jsonl").exists(),
        "the file ledger is not used"
    );

    // The ledger in etcd has intent, done and verified for every dead peer, in order.
    let store = EtcdLedger::new(config.clone(), "weave-reclaim").unwrap();
    let held = store.lock(Duration::from_secs(10)).await.unwrap();
    let records = held.records().await.unwrap();
    for n in 4..=7u64 {
        let peer = peer_name(n).to_string();
        let states: Vec<&str> = ["intent", "done", "verified"]
            .into_iter()
            .filter(|s| {
                records
                    .iter()
                    .any(|r| r.contains(&peer) && r.contains(&format!("\"state\":\"{s}\"")))
            })
            .collect();
        assert_eq!(
            states,
            ["intent", "done", "verified"],
            "{peer}: {records:?}"
        );
        let intent = records
            .iter()
            .position(|r| r.contains(&peer) && r.contains("\"state\":\"intent\""))
            .unwrap();
        let verified = records
            .iter()
            .position(|r| r.contains(&peer) && r.contains("\"state\":\"verified\""))
            .unwrap();
        assert!(intent < verified);
    }
}
