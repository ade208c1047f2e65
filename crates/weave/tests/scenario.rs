//! Reclaim scenarios on the router emulator, driven through `WeaveMembership`, the
//! `Reclaimer` and the core engine: a fixed cluster of 3, observers that join, leave, die,
//! are partitioned and come back. Each finding of the field test against real Weave Net 2.8
//! routers (issue 10) has its scenario here:
//! 1. a live peer that is only partitioned is never reclaimed, however long the partition;
//! 2. the engine reclaims a dead peer it never joined itself, also after a restart;
//! 3. a name reclaimed once is reclaimed again after it came back and died again;
//! 4. unfinished intents are resolved, addresses forgotten after restarts, a no-op `rmpeer`
//!    is not a reclaim, a minority of fixed peers is not enough, a restarted designated peer
//!    is used only once it re-synced.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::Policy;
use fleetscale_core::testing::{FakeScaler, Op};
use fleetscale_core::{ClusterMembership, Error, Machine, MachineState, Scope};
use fleetscale_weave::fake::{
    EmulatedHosts, Emulator, EmulatorConfig, MachinePool, PeerSpec, Role,
};
use fleetscale_weave::inventory::HostSnapshot;
use fleetscale_weave::ledger::{Ledger, LedgerEntry, LedgerState, PeerRecord, ReclaimStage};
use fleetscale_weave::{
    FixedPeer, PeerName, ReclaimConfig, Reclaimer, RefusalReason, RouterClient, WeaveError,
    WeaveMembership, WeaveMembershipConfig,
};

fn pn(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

fn addr(n: u64) -> String {
    format!("192.168.77.{n}")
}

/// Peer `n` at [`addr`]`(n)`, nicknamed `{kind}{n}` (`fixed1`, `dyn4`).
fn spec(n: u64, kind: &str) -> PeerSpec {
    PeerSpec::new(pn(n), format!("{kind}{n}"), addr(n))
}

fn machine(n: u64, nick: &str) -> Machine {
    let mut m = Machine::new(format!("m-{nick}"), MachineState::Started)
        .with_address(addr(n))
        .with_label("role", "dynamic");
    m.name = nick.to_string();
    m
}

fn targets() -> Vec<String> {
    (1..=3).map(addr).collect()
}

struct World {
    emu: Emulator,
    hosts: EmulatedHosts,
    fixed: Vec<FixedPeer>,
    pool: Arc<MachinePool>,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(config: EmulatorConfig) -> World {
        let emu = Emulator::new(config);
        // weave prime on one fixed peer (once the reconnect delay, if any, has passed).
        let fixed = emu
            .start_primed(
                (1..=3).map(|n| spec(n, "fixed")).collect(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        for n in 4..=5 {
            emu.add_peer(spec(n, "dyn"), Role::Observer).unwrap();
        }
        World {
            hosts: EmulatedHosts::new(emu.clone()),
            emu,
            fixed,
            pool: Arc::new(MachinePool::new("pool")),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A world where dyn4 and dyn5 joined through a membership without a reclaimer.
    async fn joined(config: EmulatorConfig) -> (World, WeaveMembership) {
        let w = World::new(config).await;
        let m = w.membership(None);
        w.join_both(&m).await;
        (w, m)
    }

    /// The host of dyn`n` dies and leaves the inventory.
    fn lose(&self, n: u64) {
        self.emu.kill(pn(n)).unwrap();
        self.pool.remove(&format!("dyn{n}"));
    }

    fn reclaim_config(&self, designated: u64, ledger: &str) -> ReclaimConfig {
        let mut c = ReclaimConfig::new(
            self.fixed.clone(),
            pn(designated),
            self.dir.path().join(ledger),
        )
        .with_inventory(self.pool.clone());
        c.verify_timeout = Duration::from_secs(30);
        c.lock_wait = Duration::from_secs(60);
        // These scenarios test the other rules: reclaim at the first observation (the
        // emulator's gossip is instant unless a scenario sets delays). The minimum has its own
        // tests below.
        c.min_unreachable = Duration::ZERO;
        c
    }

    fn reclaimer(&self, ledger: &str) -> Arc<Reclaimer> {
        Arc::new(Reclaimer::new(self.reclaim_config(1, ledger)).unwrap())
    }

    fn membership(&self, reclaimer: Option<Arc<Reclaimer>>) -> WeaveMembership {
        let mut c = WeaveMembershipConfig::new(self.fixed.clone())
            .with_runner(Arc::new(self.hosts.clone()))
            .with_inventory_source("pool");
        c.poll_interval = Duration::from_millis(50);
        c.join_deadline = Duration::from_secs(30);
        c.leave_deadline = Duration::from_secs(5);
        if let Some(r) = reclaimer {
            c = c.with_reclaimer(r);
        }
        WeaveMembership::new(c).unwrap()
    }

    /// dyn4 and dyn5 join through the membership and allocate one address each.
    async fn join_both(&self, m: &WeaveMembership) {
        for n in 4..=5 {
            let mach = machine(n, &format!("dyn{n}"));
            self.pool.add(mach.clone());
            m.join(&mach).await.unwrap();
            self.emu.allocate(pn(n), &format!("c{n}")).unwrap();
            assert!(self.emu.owned(pn(1), pn(n)) > 0);
        }
    }

    async fn records(&self, ledger: &str) -> std::collections::BTreeMap<PeerName, PeerRecord> {
        Ledger::new(self.dir.path().join(ledger))
            .lock(Duration::from_secs(10))
            .await
            .unwrap()
            .records()
            .unwrap()
    }

    async fn append(&self, ledger: &str, e: LedgerEntry) {
        Ledger::new(self.dir.path().join(ledger))
            .lock(Duration::from_secs(5))
            .await
            .unwrap()
            .append(&e)
            .unwrap();
    }
}

fn reasons(p: &fleetscale_weave::PassReport, peer: PeerName) -> Vec<RefusalReason> {
    p.refused
        .iter()
        .filter(|x| x.0 == peer)
        .map(|x| x.1)
        .collect()
}

#[tokio::test]
async fn scenario_join_leave_kill_reclaim_exactly_once_with_two_reclaimers() {
    let (w, m) = World::joined(EmulatorConfig::default()).await;

    // The joins ran the observer launch with the fixed cluster only.
    let cmds = w.hosts.commands();
    assert_eq!(
        cmds[0],
        (
            addr(4),
            ["weave", "launch", "--no-restart", "--ipalloc-init=observer"]
                .iter()
                .map(|s| s.to_string())
                .chain((1..=3).map(addr))
                .collect::<Vec<_>>()
        )
    );
    let members = m.members(&w.pool.machines()).await.unwrap();
    assert_eq!(members.len(), 5);
    let dyn4 = members
        .iter()
        .find(|x| x.nickname.as_deref() == Some("dyn4"))
        .unwrap();
    assert!(dyn4.reachable && !dyn4.fixed && dyn4.owned > 0);
    assert_eq!(dyn4.machine.as_ref().map(|i| i.as_str()), Some("m-dyn4"));
    assert_eq!(dyn4.address.as_deref(), Some("192.168.77.4"));
    assert_eq!(members.iter().filter(|x| x.fixed).count(), 3);

    // Two reclaimer processes sharing one ledger watch the cluster: both peers get bound to
    // their machines.
    let a = w.reclaimer("ledger.jsonl");
    let b = w.reclaimer("ledger.jsonl");
    for r in [&a, &b] {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    }
    let rec = w.records("ledger.jsonl").await;
    assert_eq!(rec[&pn(5)].host.as_ref().unwrap().host, "m-dyn5");
    assert_eq!(rec[&pn(4)].host.as_ref().unwrap().host, "m-dyn4");

    // dyn4 leaves with reset; afterwards it owns nothing.
    let dyn4m = machine(4, "dyn4");
    m.leave(&dyn4m).await.unwrap();
    assert_eq!(w.emu.owned(pn(1), pn(4)), 0);
    m.leave(&dyn4m).await.unwrap(); // idempotent
    w.pool.remove("dyn4");

    // dyn5's host vanishes, and the inventory no longer has it.
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.lose(5);

    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let reclaimed: Vec<_> = ra.reclaimed.iter().chain(rb.reclaimed.iter()).collect();
    assert_eq!(reclaimed, [&(pn(5), owned5)], "{ra:?} {rb:?}");
    let log = w.emu.rmpeer_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].by, pn(1));
    assert_eq!(log[0].id, "00:00:00:00:00:05", "by name, never nickname");
    assert_eq!(log[0].taken_over, owned5);
    assert!(w.emu.duplicate_ownership().is_empty());
    assert_eq!(w.emu.owned(pn(2), pn(5)), 0);
    // Its address was forgotten on the fixed peers that answered.
    assert!(
        w.emu.forget_log().iter().any(|(_, a)| a == &vec![addr(5)]),
        "{:?}",
        w.emu.forget_log()
    );

    // Later passes (and a restarted reclaimer) do nothing more.
    for r in [&a, &b, &w.reclaimer("ledger.jsonl")] {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    }
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    let rec = w.records("ledger.jsonl").await;
    assert_eq!(rec[&pn(5)].stage, Some(ReclaimStage::Verified));
    let sa = a.metrics().snapshot();
    let sb = b.metrics().snapshot();
    assert_eq!(sa.reclaims + sb.reclaims, 1);
    assert_eq!(sa.reclaimed_ips + sb.reclaimed_ips, owned5);
    assert_eq!(
        sa.unreachable_peers, 0,
        "after the reclaim nothing is unreachable"
    );
    assert!(
        w.emu.merge_errors().is_empty(),
        "{:?}",
        w.emu.merge_errors()
    );
}

#[tokio::test]
async fn without_an_inventory_nothing_is_reclaimed() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    // A second reclaimer, with an inventory, watches from the start (binds both peers).
    let r2 = w.reclaimer("l2.jsonl");
    r2.run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    let mut c = w.reclaim_config(1, "l.jsonl");
    c.inventory = None;
    let r = Reclaimer::new(c).unwrap();
    for _ in 0..3 {
        let p = r.run_once().await;
        assert_eq!(p.unreachable, [(pn(5), "dyn5".to_string(), owned5)]);
        assert_eq!(reasons(&p, pn(5)), [RefusalReason::InventoryUnavailable]);
        assert!(p.errors[0].contains("no inventory configured"), "{p:?}");
    }
    let s = r.metrics().snapshot();
    assert_eq!(s.unreachable_peers, 1);
    assert_eq!(s.unreachable_ips, owned5);
    assert!((s.unreachable_percentage - owned5 as f64 * 100.0 / (1u64 << 20) as f64).abs() < 1e-9);
    assert_eq!(s.refusals[&RefusalReason::InventoryUnavailable], 3);
    assert!(w.emu.rmpeer_log().is_empty());

    // An inventory that contradicts the mesh (it says the host of dyn4, reachable, is gone) is
    // not evidence for anyone, dyn5 included.
    w.pool.set_state("dyn4", MachineState::Destroyed);
    w.pool.remove("dyn5");
    let p = r2.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert_eq!(reasons(&p, pn(5)), [RefusalReason::InventoryIncomplete]);
    assert!(
        p.refused[0].2.contains("lists as gone its host m-dyn4"),
        "{p:?}"
    );
    assert!(w.emu.rmpeer_log().is_empty());
    // Once it lists dyn4's host again, dyn5's absence is evidence.
    w.pool.set_state("dyn4", MachineState::Started);
    let p = r2.run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), owned5)], "{p:?}");
}

/// Finding 1: a live peer that is only partitioned is never reclaimed, with detection delays
/// like real routers' and both sides allocating during the partition; after the heal it
/// rejoins and no address is handed out twice.
#[tokio::test]
async fn finding_1_a_partitioned_live_peer_is_never_reclaimed() {
    let (w, _m) = World::joined(EmulatorConfig {
        detection_delay: Duration::from_millis(200),
        detection_jitter: Duration::from_millis(300),
        reconnect_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let r = Reclaimer::new(
        w.reclaim_config(1, "l.jsonl")
            .with_min_unreachable(Duration::from_millis(300)),
    )
    .unwrap();
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");

    // dyn4's link is cut; its router keeps running and allocating from its own space, the
    // fixed side keeps allocating too. Its machine is still in the inventory.
    w.emu.partition(pn(4)).unwrap();
    w.emu.allocate(pn(4), "c-4-part").unwrap();
    w.emu.allocate(pn(1), "c-1-part").unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty(), "a live peer was reclaimed: {p:?}");
        seen.extend(reasons(&p, pn(4)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains(&RefusalReason::NotGone),
        "the fixed cluster saw it unreachable, the inventory kept it alive: {seen:?}"
    );
    assert!(
        seen.iter().all(|k| *k == RefusalReason::NotGone),
        "{seen:?}"
    );
    assert!(w.emu.rmpeer_log().is_empty());

    // The partition heals: dyn4 rejoins, and nothing was handed out twice.
    w.emu.heal(pn(4)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!w.emu.conflicted(pn(4)));
    assert!(w.emu.sees(pn(1), pn(4)));
    assert!(w.emu.duplicate_addresses().is_empty());
    assert!(
        w.emu.merge_errors().is_empty(),
        "{:?}",
        w.emu.merge_errors()
    );
    let p = r.run_once().await;
    assert!(p.unreachable.is_empty() && p.refused.is_empty(), "{p:?}");
}

/// What the reclaimer prevents, reproduced on the emulator as it happened on real routers
/// (`tests/fixtures/real-2/README.md`): `rmpeer` of a live partitioned peer gives its range
/// to the designated peer, which hands out the addresses the peer still uses; after the heal
/// the peer refuses the ring and never rejoins.
#[tokio::test]
async fn the_emulator_reproduces_a_wrongful_rmpeer_of_a_partitioned_peer() {
    let (w, _m) = World::joined(EmulatorConfig {
        reconnect_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await;
    let range = w.emu.report(pn(1))["IPAM"]["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Peer"] == pn(4).to_string())
        .map(|e| e["Token"].as_str().unwrap().to_string())
        .unwrap();
    let subnet: [u8; 4] = range
        .split('.')
        .map(|o| o.parse().unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    w.emu.partition(pn(4)).unwrap();
    let mine = w.emu.allocate(pn(4), "c-4-part").unwrap();
    assert!(w.emu.rmpeer(pn(1), "00:00:00:00:00:04").unwrap() > 0);
    let theirs: Vec<String> = (1..=3)
        .map(|i| {
            w.emu
                .allocate_in(pn(1), &format!("c-1-dup-{i}"), subnet, 15)
                .unwrap()
        })
        .collect();
    assert!(!w.emu.duplicate_addresses().is_empty(), "{mine} {theirs:?}");
    w.emu.heal(pn(4)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(w.emu.conflicted(pn(4)), "it never rejoins");
    assert!(!w.emu.sees(pn(1), pn(4)));
    assert!(
        w.emu
            .merge_errors()
            .iter()
            .any(|e| e.contains("Received update for IP range I own")),
        "{:?}",
        w.emu.merge_errors()
    );
}

/// Finding 2: the engine reclaims a dead peer whose machine it never created nor joined,
/// also when the peer died while no process ran (a restart), from the persisted binding.
#[tokio::test]
async fn finding_2_the_engine_reclaims_peers_it_never_joined_also_after_a_restart() {
    let w = World::new(EmulatorConfig::default()).await;
    // dyn4 and dyn5 are launched outside any autoscaler process.
    for n in 4..=5 {
        w.emu.launch(pn(n), targets()).await.unwrap();
        w.emu.allocate(pn(n), &format!("c{n}")).unwrap();
    }
    let engine_for = |scaler: Arc<FakeScaler>| {
        let reclaimer = Arc::new(
            Reclaimer::new(
                w.reclaim_config(1, "engine.jsonl")
                    .with_min_unreachable(Duration::from_millis(200)),
            )
            .unwrap(),
        );
        let membership = Arc::new(w.membership(Some(reclaimer.clone())));
        let target = TargetSpec::new(Scope::new("pool"), scaler, Policy::default())
            .with_membership(membership);
        let engine = Engine::new(
            EngineConfig::default().with_reclaim_lost_members(true),
            Arc::new(vec![target]),
        );
        (engine, reclaimer)
    };
    let scaler = Arc::new(FakeScaler::new());
    for n in 4..=5 {
        scaler.insert(machine(n, &format!("dyn{n}")));
    }

    // Process A: one tick binds both peers to their machines; nothing is reclaimed. The tick
    // lists the machines once: the membership and the reclaimer use the engine's list.
    let (a, _) = engine_for(scaler.clone());
    let r = a.run_once().await.unwrap().remove(0);
    assert!(r.reclaims.is_empty(), "{:?}", r.reclaims);
    assert_eq!(scaler.call_count(Op::List), 1, "one list per tick");
    drop(a);
    let rec = w.records("engine.jsonl").await;
    assert_eq!(rec[&pn(5)].host.as_ref().unwrap().host, "m-dyn5");

    // While no process runs, dyn5's host is destroyed behind the autoscaler's back.
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    scaler.vanish(&"m-dyn5".into());

    // Process B (a restart) reclaims it from the persisted binding, once the mesh has agreed
    // for the minimum time; dyn4, alive, is never touched.
    let (b, reclaimer) = engine_for(scaler.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refusals = Vec::new();
    let mut ticks = 1;
    loop {
        let r = b.run_once().await.unwrap().remove(0);
        ticks += 1;
        assert_eq!(scaler.call_count(Op::List), ticks, "one list per tick");
        match r.reclaims.as_slice() {
            [(name, Ok(n))] if *name == pn(5).to_string() => {
                assert_eq!(*n, owned5);
                break;
            }
            [(_, Err(e))] => refusals.push(e.clone()),
            other => assert!(other.is_empty(), "{other:?}"),
        }
        assert!(Instant::now() < deadline, "never reclaimed: {refusals:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refusals.iter().all(|e| e.contains("less than the minimum")),
        "{refusals:?}"
    );
    for _ in 0..3 {
        let r = b.run_once().await.unwrap().remove(0);
        assert!(
            r.reclaims.iter().all(|(_, x)| matches!(x, Ok(0))),
            "{:?}",
            r.reclaims
        );
    }
    let log = w.emu.rmpeer_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].target, Some(pn(5)));
    assert_eq!(reclaimer.metrics().snapshot().reclaims, 1);
    assert!(w.emu.owned(pn(1), pn(4)) > 0);
}

/// Finding 3: a peer name that was reclaimed comes back (a new incarnation: its host
/// relaunched Weave with a fresh database) and dies again: reclaimed again, once. Both ways
/// back are covered: seen reachable with a new UID, and seen only owning space again.
#[tokio::test]
async fn finding_3_a_reclaimed_name_that_comes_back_and_dies_is_reclaimed_again() {
    let (w, m) = World::joined(EmulatorConfig::default()).await;
    let r = w.reclaimer("l.jsonl");
    r.run_once().await;
    w.lose(5);
    let p = r.run_once().await;
    assert_eq!(p.reclaimed.len(), 1, "{p:?}");
    assert_eq!(w.records("l.jsonl").await[&pn(5)].incarnation, 1);

    // The same host name comes back on a new machine with a fresh database (weave reset
    // wiped it), joins and allocates: seen reachable with a new UID.
    w.emu.weave_reset(pn(5)).unwrap();
    let mut back = machine(5, "dyn5");
    back.id = "m-dyn5-b".into();
    w.pool.add(back.clone());
    m.join(&back).await.unwrap();
    w.emu.allocate(pn(5), "c5-b").unwrap();
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    let rec = w.records("l.jsonl").await;
    assert_eq!(rec[&pn(5)].incarnation, 2);
    assert_eq!(rec[&pn(5)].stage, None);
    assert_eq!(rec[&pn(5)].host.as_ref().unwrap().host, "m-dyn5-b");
    assert_eq!(r.metrics().snapshot().incarnations, 1);

    // It dies again: reclaimed again, exactly once.
    let owned = w.emu.owned(pn(1), pn(5));
    w.lose(5);
    let p = r.run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), owned)], "{p:?}");
    for _ in 0..2 {
        assert!(r.run_once().await.reclaimed.is_empty());
    }
    assert_eq!(w.emu.rmpeer_log().len(), 2);
    assert_eq!(
        w.records("l.jsonl").await[&pn(5)].stage,
        Some(ReclaimStage::Verified)
    );

    // Third life, never seen reachable: it comes back, allocates and dies between two passes.
    // The pass sees it owning space again: a new incarnation, unbound. While its machine is
    // simply absent, nothing proves its death: refused, and said so.
    w.emu.weave_reset(pn(5)).unwrap();
    w.emu.launch(pn(5), targets()).await.unwrap();
    w.emu.allocate(pn(5), "c5-c").unwrap();
    let owned = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    let p = r.run_once().await;
    assert_eq!(reasons(&p, pn(5)), [RefusalReason::Unbound], "{p:?}");
    assert!(p.refused[0].2.contains("cannot be proven"), "{p:?}");
    assert_eq!(w.records("l.jsonl").await[&pn(5)].incarnation, 3);
    // Once the inventory lists its machine as destroyed, that is evidence: reclaimed once.
    let mut dead = machine(5, "dyn5");
    dead.id = "m-dyn5-c".into();
    dead.state = MachineState::Destroyed;
    w.pool.add(dead);
    let p = r.run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), owned)], "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 3);
    assert_eq!(r.metrics().snapshot().incarnations, 2);
    assert_eq!(r.metrics().snapshot().reclaimed_alive, 0);
}

#[tokio::test]
async fn partitioned_and_fixed_peers_are_never_reclaimed_through_the_membership() {
    let w = World::new(EmulatorConfig::default()).await;
    let r = Arc::new(Reclaimer::new(w.reclaim_config(1, "l.jsonl")).unwrap());
    let m = w.membership(Some(r.clone()));
    w.join_both(&m).await;
    m.members(&w.pool.machines()).await.unwrap();
    // dyn5 is partitioned: alive, its API answers, unreachable from the fixed cluster. Its
    // machine is still in the inventory. fixed3 is down.
    w.emu.partition(pn(5)).unwrap();
    w.emu.kill(pn(3)).unwrap();
    for _ in 0..3 {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty(), "{p:?}");
        assert_eq!(reasons(&p, pn(5)), [RefusalReason::NotGone], "{p:?}");
        assert_eq!(reasons(&p, pn(3)), [], "fixed peers are no candidates");
        assert_eq!(p.silent_fixed.len(), 1, "{p:?}");
    }
    let e = r
        .reclaim_peer(pn(3), &HostSnapshot::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WeaveError::Refused {
                kind: RefusalReason::Fixed,
                ..
            }
        ),
        "{e}"
    );
    let inventory = w.pool.machines();
    let members = m.members(&inventory).await.unwrap();
    let fixed3 = members
        .iter()
        .find(|x| x.name == pn(3).to_string())
        .unwrap();
    assert!(fixed3.fixed);
    assert!(matches!(
        m.reclaim(fixed3, &inventory).await,
        Err(Error::Refused { .. })
    ));
    let dyn4 = members
        .iter()
        .find(|x| x.name == pn(4).to_string())
        .unwrap();
    assert!(dyn4.reachable);
    assert!(matches!(
        m.reclaim(dyn4, &inventory).await,
        Err(Error::Refused { .. })
    ));
    // The engine would even ask for dyn5 if its machine were gone from the tick inventory: the
    // reclaimer judges by the binding (m-dyn5, still listed) and refuses.
    let dyn5 = members
        .iter()
        .find(|x| x.name == pn(5).to_string())
        .unwrap();
    assert_eq!(dyn5.machine.as_ref().map(|i| i.as_str()), Some("m-dyn5"));
    let e = m.reclaim(dyn5, &inventory).await.unwrap_err();
    assert!(e.to_string().contains("still in inventory pool"), "{e}");
    assert!(w.emu.rmpeer_log().is_empty());
    assert!(w.emu.duplicate_ownership().is_empty());

    // The partition heals: dyn5 was never touched and still owns its space.
    w.emu.heal(pn(5)).unwrap();
    assert!(w.emu.owned(pn(1), pn(5)) > 0);
    assert!(w.emu.merge_errors().is_empty());
}

/// Finding 4: an unfinished intent whose `rmpeer` took effect (the answer was lost) is
/// resolved on the next pass without a second `rmpeer`, and its address is forgotten, also
/// by a restarted reclaimer that only has the intent line.
#[tokio::test]
async fn finding_4_an_intent_whose_rmpeer_took_effect_is_resolved_and_forgotten() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    w.reclaimer("l.jsonl").run_once().await;
    w.lose(5);
    // Crashed between sending rmpeer and recording its answer.
    let mut intent = LedgerEntry::reclaim(pn(5), LedgerState::Intent, pn(1), 1);
    intent.address = Some(addr(5));
    w.append("l.jsonl", intent).await;
    w.emu.rmpeer(pn(1), "00:00:00:00:00:05").unwrap();
    // dyn5 now owns nothing, so it is no candidate; the unfinished record is resolved anyway.
    let r = w.reclaimer("l.jsonl");
    let p = r.run_once().await;
    assert_eq!(p.resolved, [pn(5)], "{p:?}");
    assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1, "no second rmpeer");
    assert_eq!(
        w.records("l.jsonl").await[&pn(5)].stage,
        Some(ReclaimStage::Verified)
    );
    assert!(
        w.emu.forget_log().iter().any(|(_, a)| a == &vec![addr(5)]),
        "the intent's address is forgotten: {:?}",
        w.emu.forget_log()
    );
    let p = r.run_once().await;
    assert!(p.resolved.is_empty() && p.reclaimed.is_empty(), "{p:?}");
}

#[tokio::test]
async fn restart_with_intent_but_no_answer() {
    // Case 1: crashed after the intent, before the rmpeer was sent: repeated on the same peer.
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    w.reclaimer("crash1.jsonl").run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.lose(5);
    w.append(
        "crash1.jsonl",
        LedgerEntry::reclaim(pn(5), LedgerState::Intent, pn(1), 1),
    )
    .await;
    let p = w.reclaimer("crash1.jsonl").run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), owned5)], "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(w.emu.rmpeer_log()[0].by, pn(1));

    // Case 2: an unfinished intent on another designated peer is never repeated elsewhere.
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    w.reclaimer("crash3.jsonl").run_once().await;
    w.lose(5);
    w.append(
        "crash3.jsonl",
        LedgerEntry::reclaim(pn(5), LedgerState::Intent, pn(2), 1),
    )
    .await;
    let p = w.reclaimer("crash3.jsonl").run_once().await;
    assert_eq!(
        reasons(&p, pn(5)),
        [RefusalReason::IntentOnOtherPeer],
        "{p:?}"
    );
    assert!(w.emu.rmpeer_log().is_empty());
}

/// A reverse proxy in front of one router that can lose the answer of the next
/// `DELETE /peer/{name}` after forwarding it, or send it twice (another actor got there
/// first), so that the router acts but the caller does not learn it.
struct Proxy {
    url: String,
    mode: Arc<Mutex<ProxyMode>>,
}

#[derive(Clone, Copy, PartialEq)]
enum ProxyMode {
    Pass,
    LoseRmpeerAnswer,
    RmpeerTwice,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        use axum::extract::{Request, State};
        use axum::response::IntoResponse;
        let mode = Arc::new(Mutex::new(ProxyMode::Pass));
        let state = (target, mode.clone(), reqwest::Client::new());
        async fn forward(
            State((target, mode, http)): State<(String, Arc<Mutex<ProxyMode>>, reqwest::Client)>,
            req: Request,
        ) -> axum::response::Response {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let accept = req.headers().get("accept").cloned();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let send = || {
                let mut b = http
                    .request(method.clone(), format!("{target}{uri}"))
                    .body(body.clone());
                if let Some(a) = &accept {
                    b = b.header("accept", a.clone());
                }
                b.send()
            };
            let is_rmpeer = method == axum::http::Method::DELETE && uri.starts_with("/peer/");
            let m = *mode.lock().unwrap();
            if is_rmpeer && m != ProxyMode::Pass {
                *mode.lock().unwrap() = ProxyMode::Pass;
                let first = send().await.unwrap();
                let _ = first.text().await;
                if m == ProxyMode::LoseRmpeerAnswer {
                    return (
                        axum::http::StatusCode::BAD_GATEWAY,
                        "upstream connection lost",
                    )
                        .into_response();
                }
            }
            let resp = send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                text,
            )
                .into_response()
        }
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, mode }
    }

    fn set(&self, m: ProxyMode) {
        *self.mode.lock().unwrap() = m;
    }
}

#[tokio::test]
async fn finding_4_a_lost_rmpeer_answer_and_a_no_op_rmpeer() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    let proxy = Proxy::start(w.fixed[0].api_url.clone()).await;
    let mut config = w.reclaim_config(1, "l.jsonl");
    config.fixed[0].api_url = proxy.url.clone();
    let r = Reclaimer::new(config.clone()).unwrap();
    r.run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.lose(5);

    // The router runs the rmpeer, but the answer is lost: an error, the intent stays.
    proxy.set(ProxyMode::LoseRmpeerAnswer);
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert!(p.errors.iter().any(|e| e.contains("502")), "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(
        w.records("l.jsonl").await[&pn(5)].stage,
        Some(ReclaimStage::Intent)
    );
    // The next pass (here a restarted process) sees the space moved: resolved, not repeated.
    let r = Reclaimer::new(config.clone()).unwrap();
    let p = r.run_once().await;
    assert_eq!(p.resolved, [pn(5)], "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(
        r.metrics().snapshot().reclaims,
        0,
        "not counted as a reclaim"
    );
    assert!(w.emu.owned(pn(1), pn(1)) >= owned5);

    // A no-op: dyn4 dies; another actor runs the rmpeer on the designated peer just before
    // ours, so ours takes nothing. That is not a reclaim: not counted, not logged as one.
    r.run_once().await;
    w.lose(4);
    proxy.set(ProxyMode::RmpeerTwice);
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert!(
        p.errors.iter().any(|e| e.contains("took over nothing")),
        "{p:?}"
    );
    let s = r.metrics().snapshot();
    assert_eq!((s.reclaims, s.noops), (0, 1));
    assert_eq!(
        w.records("l.jsonl").await[&pn(4)].stage,
        None,
        "noop: no reclaim"
    );
    // dyn4 owns nothing now: no further rmpeer.
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty() && p.unreachable.is_empty(), "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 3);
}

/// Finding 4: a minority of fixed peers is not enough to decide; silent fixed peers are
/// reported on every pass.
#[tokio::test]
async fn finding_4_a_majority_of_fixed_peers_must_answer() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    w.reclaimer("l.jsonl").run_once().await;
    w.lose(5);
    // Two of three URLs are wrong (nothing listens there).
    let mut c = w.reclaim_config(1, "l.jsonl");
    for f in &mut c.fixed[1..] {
        f.api_url = "http://127.0.0.1:9".into();
    }
    let r = Reclaimer::new(c).unwrap();
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert_eq!(reasons(&p, pn(5)), [RefusalReason::FixedQuorumMissing]);
    assert_eq!(p.silent_fixed.len(), 2);
    assert!(
        p.errors[0].contains("only 1 of 3 fixed peers answered"),
        "{p:?}"
    );
    assert_eq!(r.metrics().snapshot().silent_fixed_peers, 2);
    assert!(w.emu.rmpeer_log().is_empty());
    // One of three down is still a majority: reclaimed, with the silent one reported.
    w.emu.stop(pn(3)).unwrap();
    let p = w.reclaimer("l.jsonl").run_once().await;
    assert_eq!(p.reclaimed.len(), 1, "{p:?}");
    assert_eq!(p.silent_fixed.len(), 1);
}

/// Finding 4: a designated peer that restarted is used only once it has reconnected to the
/// other fixed peers and seen the dead peer's entries.
#[tokio::test]
async fn finding_4_a_restarted_designated_peer_is_used_only_once_re_synced() {
    let w = World::new(EmulatorConfig {
        reconnect_delay: Duration::from_millis(800),
        ..EmulatorConfig::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    let r = w.reclaimer("l.jsonl");
    r.run_once().await;
    w.lose(5);
    // The designated peer restarts (same name, new UID); until it reconnects it sees nobody.
    w.emu.stop(pn(1)).unwrap();
    w.emu.restart(pn(1)).await.unwrap();
    let restarted = Instant::now();
    let mut seen = Vec::new();
    while restarted.elapsed() < Duration::from_millis(500) {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty(), "used before it re-synced: {p:?}");
        seen.extend(reasons(&p, pn(5)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.contains(&RefusalReason::DesignatedNotSynced),
        "{seen:?}"
    );
    assert!(w.emu.rmpeer_log().is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut p = r.run_once().await;
    if p.reclaimed.is_empty() {
        // The UID change is noticed at the first observation after the restart; one more.
        p = r.run_once().await;
    }
    assert_eq!(p.reclaimed.len(), 1, "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
}

#[tokio::test]
async fn nonsensical_settings_are_refused() {
    let w = World::new(EmulatorConfig::default()).await;
    let base = || w.reclaim_config(1, "l.jsonl");
    let cases: Vec<(ReclaimConfig, &str)> = vec![
        (
            ReclaimConfig {
                interval: Duration::ZERO,
                ..base()
            },
            "the interval is 0ns",
        ),
        (
            ReclaimConfig {
                interval: Duration::from_millis(10),
                ..base()
            },
            "between 1s and 24h",
        ),
        (
            ReclaimConfig {
                min_unreachable: Duration::from_secs(90_000),
                ..base()
            },
            "minimum unreachable time",
        ),
        (
            ReclaimConfig {
                verify_timeout: Duration::ZERO,
                ..base()
            },
            "verify timeout",
        ),
        (
            ReclaimConfig {
                designated: pn(9),
                ..base()
            },
            "not a fixed peer",
        ),
        (
            ReclaimConfig {
                fixed: vec![],
                ..base()
            },
            "needs the fixed peers",
        ),
    ];
    for (c, want) in cases {
        let e = Reclaimer::new(c).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    let mut c = base();
    c.fixed[1].api_url = format!("{}/weave", w.fixed[1].api_url);
    let e = Reclaimer::new(c).unwrap_err().to_string();
    assert!(e.contains("no path"), "{e}");
    let mut c = base();
    c.fixed.push(c.fixed[0].clone());
    assert!(Reclaimer::new(c)
        .unwrap_err()
        .to_string()
        .contains("listed twice"));
}

#[tokio::test]
async fn designated_peer_down_means_no_action() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    w.reclaimer("l.jsonl").run_once().await;
    w.lose(5);
    w.emu.stop(pn(1)).unwrap(); // the designated reclaimer
    let r = w.reclaimer("l.jsonl");
    let p = r.run_once().await;
    assert!(
        p.refused.contains(&(
            pn(5),
            RefusalReason::DesignatedUnreachable,
            "designated reclaimer 00:00:00:00:00:01 did not answer".to_string()
        )),
        "{p:?}"
    );
    assert!(w.emu.rmpeer_log().is_empty());
    assert_eq!(
        r.metrics().snapshot().refusals[&RefusalReason::DesignatedUnreachable],
        1
    );
}

#[tokio::test]
async fn emulator_exposes_the_duplicate_ownership_hazard() {
    // What the ledger prevents: two peers rmpeer the same dead peer before gossip spreads.
    let (w, _m) = World::joined(EmulatorConfig {
        gossip_delay: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await;
    // Let the grants' broadcasts arrive everywhere first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.emu.kill(pn(5)).unwrap();
    let a = w.emu.rmpeer(pn(1), "00:00:00:00:00:05").unwrap();
    let b = w.emu.rmpeer(pn(2), "00:00:00:00:00:05").unwrap();
    assert!(a > 0 && b > 0, "both took the space: {a} {b}");
    // Each believes it owns the range at once, and the crossing gossip does not resolve it
    // (same version, different owner, equal free: each keeps its own).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dup = w.emu.duplicate_ownership();
    assert!(!dup.is_empty());
    assert_eq!(dup[0].owners, [pn(1), pn(2)]);
}

#[tokio::test]
async fn leave_of_a_partitioned_peer_fails_verification() {
    let (w, m) = World::joined(EmulatorConfig::default()).await;
    w.emu.partition(pn(4)).unwrap();
    // The hand-off broadcast is lost: the fixed cluster still sees dyn4 owning its space.
    let e = m.leave(&machine(4, "dyn4")).await.unwrap_err();
    assert!(e.to_string().contains("still owns"), "{e}");
}

#[tokio::test]
async fn observers_cannot_form_a_ring_alone() {
    let emu = Emulator::default();
    for n in 1..=3 {
        emu.add_peer(spec(n, "fixed"), Role::Fixed).unwrap();
    }
    let u4 = emu.start_observer(spec(4, "dyn"), targets()).await.unwrap();
    emu.start_observer(spec(5, "dyn"), targets()).await.unwrap();
    assert!(emu.allocate(pn(4), "c").is_err());
    let c4 = RouterClient::new(&u4).unwrap();
    assert!(matches!(
        c4.allocate("c", Duration::from_millis(300)).await,
        Err(WeaveError::Timeout { .. })
    ));
    assert_eq!(emu.ipam_text(pn(4)), "", "no ring, empty /status/ipam");
    // One elector is not a quorum of 3 either.
    emu.launch(pn(1), targets()).await.unwrap();
    assert!(emu.allocate(pn(4), "c").is_err());
    emu.launch(pn(2), targets()).await.unwrap();
    assert!(emu.allocate(pn(4), "c").unwrap().ends_with("/12"));
    assert!(emu.owned(pn(1), pn(4)) > 0);
}

#[tokio::test]
async fn conformance_membership() {
    let w = World::new(EmulatorConfig::default()).await;
    let reclaimer = w.reclaimer("conf.jsonl");
    let m = w.membership(Some(reclaimer));
    let mach = machine(4, "dyn4");
    w.pool.add(mach.clone());
    fleetscale_core::testing::conformance::membership(&m, &mach)
        .await
        .unwrap();
    assert!(w.emu.rmpeer_log().is_empty());
}

#[tokio::test]
async fn fixture_cluster_helper_and_emulated_weave_launch() {
    let emu = Emulator::default();
    let fixed = emu.start_fixture_cluster().await.unwrap();
    assert_eq!(fixed.len(), 3);
    let hosts = EmulatedHosts::new(emu.clone());
    use fleetscale_weave::HostRunner;
    let argv: Vec<String> = ["weave", "launch", "--no-restart", "--ipalloc-init=observer"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..=3).map(addr))
        .collect();
    assert!(hosts.run("dyn4", &argv).await.unwrap().success());
    // Launching twice fails like the script; a fixed-style launch of an observer is caught.
    assert_eq!(hosts.run("dyn4", &argv).await.unwrap().code, Some(1));
    let fixed_style: Vec<String> = argv
        .iter()
        .filter(|a| !a.starts_with("--ipalloc"))
        .cloned()
        .collect();
    assert_eq!(hosts.run("dyn5", &fixed_style).await.unwrap().code, Some(1));
    assert_eq!(hosts.run("nohost", &argv).await.unwrap().code, Some(255));
    emu.allocate(pn(4), "x").unwrap();
    let ipam = RouterClient::new(&fixed[0].1)
        .unwrap()
        .status_ipam()
        .await
        .unwrap();
    assert_eq!(ipam.iter().map(|l| l.ips).sum::<u64>(), 1 << 20);
    assert!(hosts
        .run("dyn4", &["weave".into(), "reset".into()])
        .await
        .unwrap()
        .success());
    assert!(!emu.is_running(pn(4)));
    assert_eq!(emu.owned(pn(1), pn(4)), 0);
}

/// Runs passes (100 ms apart) until one reclaims something; returns it with the time it ended,
/// and the refusals of `peer` seen before. Panics after a generous deadline.
async fn pass_until_reclaimed(
    r: &Reclaimer,
    peer: PeerName,
) -> (Vec<(PeerName, u64)>, Instant, Vec<RefusalReason>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refusals = Vec::new();
    loop {
        let p = r.run_once().await;
        if !p.reclaimed.is_empty() {
            return (p.reclaimed, Instant::now(), refusals);
        }
        assert!(p.errors.is_empty(), "{p:?}");
        refusals.extend(reasons(&p, peer));
        assert!(Instant::now() < deadline, "never reclaimed: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_peer_unreachable_for_less_than_the_minimum_is_refused_then_reclaimed_once() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    let min = Duration::from_secs(1);
    let r = Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min)).unwrap();
    r.run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    // dyn5's host vanishes and the inventory says so at once.
    w.lose(5);

    // First sight: gone by the inventory, unreachable, but only just: refused.
    let t0 = Instant::now();
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert_eq!(p.refused.len(), 1, "{p:?}");
    assert_eq!(p.refused[0].0, pn(5));
    assert_eq!(p.refused[0].1, RefusalReason::TooRecentlyUnreachable);
    assert!(
        p.refused[0].2.contains("less than the minimum of 1s"),
        "{}",
        p.refused[0].2
    );
    assert!(w.emu.rmpeer_log().is_empty());
    assert_eq!(
        r.metrics().snapshot().refusals[&RefusalReason::TooRecentlyUnreachable],
        1
    );
    // The single-peer path (the engine's) obeys it too, as long as the minimum has not passed
    // since the first sighting.
    let hosts = HostSnapshot::from_machines("pool", &w.pool.machines());
    if t0.elapsed() < min / 2 {
        match r.reclaim_peer(pn(5), &hosts).await {
            Err(WeaveError::Refused {
                kind: RefusalReason::TooRecentlyUnreachable,
                ..
            }) => {}
            // A machine slow enough for the minimum to pass meanwhile may reclaim here.
            other => assert!(t0.elapsed() >= min, "{other:?}"),
        }
    }

    // Later passes reclaim it once the minimum has passed, never before, exactly once.
    let (reclaimed, at, refusals) = if w.emu.rmpeer_log().is_empty() {
        pass_until_reclaimed(&r, pn(5)).await
    } else {
        (vec![(pn(5), owned5)], Instant::now(), Vec::new())
    };
    assert_eq!(reclaimed, [(pn(5), owned5)]);
    assert!(at.duration_since(t0) >= min, "reclaimed before the minimum");
    assert!(
        refusals
            .iter()
            .all(|k| *k == RefusalReason::TooRecentlyUnreachable),
        "{refusals:?}"
    );
    for _ in 0..3 {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    }
    let log = w.emu.rmpeer_log();
    assert_eq!(log.len(), 1, "exactly once: {log:?}");
    assert_eq!(log[0].by, pn(1));
    assert_eq!(log[0].taken_over, owned5);
    assert!(w.emu.duplicate_ownership().is_empty());
    // A fresh process (a restart) starts its own clock but the ledger says it is done.
    let p = Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min))
        .unwrap()
        .run_once()
        .await;
    assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
}

#[tokio::test]
async fn a_peer_seen_reachable_again_restarts_its_clock() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    let min = Duration::from_secs(1);
    let r = Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min)).unwrap();
    r.run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    // A flapping link: dyn5 drops out of the fixed cluster's topology while the inventory (here
    // wrongly, ahead of the real death) already says its host is gone.
    w.pool.remove("dyn5");
    w.emu.partition(pn(5)).unwrap();
    let p = r.run_once().await;
    assert_eq!(reasons(&p, pn(5)), [RefusalReason::TooRecentlyUnreachable]);
    // Longer than the minimum later, the link is back for one observation...
    tokio::time::sleep(min + Duration::from_millis(200)).await;
    w.emu.heal(pn(5)).unwrap();
    let p = r.run_once().await;
    assert!(p.unreachable.is_empty() && p.refused.is_empty(), "{p:?}");
    // ...and drops again: the clock starts from zero, so this is no reclaim.
    w.emu.partition(pn(5)).unwrap();
    let t1 = Instant::now();
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty(), "{p:?}");
    assert_eq!(reasons(&p, pn(5)), [RefusalReason::TooRecentlyUnreachable]);
    assert!(w.emu.rmpeer_log().is_empty());
    // The host really dies now; it is reclaimed once the minimum has passed since it was
    // last seen reachable.
    w.emu.kill(pn(5)).unwrap();
    let (reclaimed, at, _) = pass_until_reclaimed(&r, pn(5)).await;
    assert_eq!(reclaimed, [(pn(5), owned5)]);
    assert!(at.duration_since(t1) >= min);
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert!(w.emu.duplicate_ownership().is_empty());
}

#[tokio::test]
async fn the_membership_reclaim_waits_for_the_minimum_too() {
    let w = World::new(EmulatorConfig::default()).await;
    let min = Duration::from_secs(1);
    let reclaimer =
        Arc::new(Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min)).unwrap());
    let m = w.membership(Some(reclaimer.clone()));
    w.join_both(&m).await;
    m.members(&w.pool.machines()).await.unwrap();
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.lose(5);
    let inventory = w.pool.machines();
    let member = m
        .members(&inventory)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.name == pn(5).to_string())
        .unwrap();
    assert!(!member.reachable && member.owned > 0);
    assert_eq!(
        member.machine.as_ref().map(|i| i.as_str()),
        Some("m-dyn5"),
        "the bound machine, although it left the inventory"
    );
    // What the engine does each tick for a lost member: the first call starts the clock.
    let t0 = Instant::now();
    let e = m.reclaim(&member, &inventory).await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("less than the minimum"), "{e}");
    assert!(w.emu.rmpeer_log().is_empty());
    // Later ticks: refused until the minimum has passed, then reclaimed once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        match m.reclaim(&member, &inventory).await {
            Ok(o) => break o,
            Err(Error::Refused { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "never reclaimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(t0.elapsed() >= min);
    assert_eq!(out.reclaimed, owned5);
    assert!(!out.already_reclaimed);
    let again = m.reclaim(&member, &inventory).await.unwrap();
    assert!(again.already_reclaimed && again.reclaimed == 0);
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(
        reclaimer.metrics().snapshot().reclaims,
        1,
        "exactly one rmpeer"
    );
}

/// The ledger in a shared store (as etcd is for reclaimers on several hosts): reclaimers with
/// **different** designated peers reclaim each dead peer exactly once, and one that finds an
/// unfinished intent on another designated peer never repeats it elsewhere.
#[tokio::test]
async fn reclaimers_with_different_designated_peers_on_one_shared_ledger_reclaim_once() {
    let (w, _m) = World::joined(EmulatorConfig::default()).await;
    let store = fleetscale_core::testing::MemoryLedger::new();
    let on = |designated: u64| {
        Arc::new(
            Reclaimer::new(
                w.reclaim_config(designated, "unused.jsonl")
                    .with_ledger_store(Arc::new(store.clone())),
            )
            .unwrap(),
        )
    };
    let (a, b, c) = (on(1), on(2), on(3));
    a.run_once().await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.lose(5);
    let (ra, rb, rc) = tokio::join!(a.run_once(), b.run_once(), c.run_once());
    let reclaimed: Vec<_> = [&ra, &rb, &rc]
        .iter()
        .flat_map(|p| p.reclaimed.clone())
        .collect();
    assert_eq!(reclaimed, [(pn(5), owned5)], "{ra:?}\n{rb:?}\n{rc:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert!(w.emu.duplicate_ownership().is_empty());
    assert!(
        !w.dir.path().join("unused.jsonl").exists(),
        "the file is not used"
    );
    assert!(store
        .snapshot()
        .iter()
        .any(|l| l.contains("\"state\":\"verified\"")));

    // An intent on fixed1 whose answer nobody saw: the reclaimer designated fixed2 refuses to
    // repeat it on fixed2 while dyn4's space has not moved.
    b.run_once().await;
    w.lose(4);
    let mut intent = LedgerEntry::reclaim(pn(4), LedgerState::Intent, pn(1), 1);
    intent.address = Some(addr(4));
    {
        use fleetscale_core::coordination::LedgerStore;
        let held = store.lock(Duration::from_secs(5)).await.unwrap();
        held.append(&serde_json::to_string(&intent).unwrap())
            .await
            .unwrap();
    }
    let p = b.run_once().await;
    assert_eq!(
        reasons(&p, pn(4)),
        [RefusalReason::IntentOnOtherPeer],
        "{p:?}"
    );
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    // The reclaimer designated fixed1 finishes it there, once.
    let p = a.run_once().await;
    assert_eq!(p.reclaimed.len(), 1, "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 2);
    assert_eq!(w.emu.rmpeer_log()[1].by, pn(1));
}
