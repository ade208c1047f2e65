//! The fixture scenario on the emulator, driven through `WeaveMembership` and the
//! `Reclaimer`: a fixed cluster of 3, two observers join, one leaves with reset, one is killed
//! and reclaimed exactly once; partitioned and fixed peers are never reclaimed; a peer is
//! reclaimed only after it stayed unreachable for the minimum unreachable time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::{
    ClusterMembership, CreateRequest, Error, Machine, MachineId, MachineState, Scaler,
};
use fleetscale_weave::fake::{EmulatedHosts, Emulator, EmulatorConfig, PeerSpec, Role};
use fleetscale_weave::ledger::{Ledger, LedgerEntry, LedgerState};
use fleetscale_weave::{
    FixedPeer, PeerName, ReclaimConfig, Reclaimer, RefusalReason, RouterClient, WeaveMembership,
    WeaveMembershipConfig,
};

/// A minimal inventory: the machines of the autoscaled pool.
#[derive(Default)]
struct Inventory(Mutex<Vec<Machine>>);

impl Inventory {
    fn add(&self, m: Machine) {
        self.0.lock().unwrap().push(m);
    }
    fn remove(&self, name: &str) {
        self.0.lock().unwrap().retain(|m| m.name != name);
    }
}

#[async_trait]
impl Scaler for Inventory {
    async fn list(&self) -> fleetscale_core::Result<Vec<Machine>> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn create(&self, _: &CreateRequest) -> fleetscale_core::Result<Machine> {
        Err(Error::Unsupported {
            operation: "create",
        })
    }
    async fn start(&self, _: &MachineId) -> fleetscale_core::Result<()> {
        Err(Error::Unsupported { operation: "start" })
    }
    async fn stop(&self, _: &MachineId) -> fleetscale_core::Result<()> {
        Err(Error::Unsupported { operation: "stop" })
    }
    async fn destroy(&self, _: &MachineId) -> fleetscale_core::Result<()> {
        Err(Error::Unsupported {
            operation: "destroy",
        })
    }
}

fn pn(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

fn addr(n: u64) -> String {
    format!("192.168.77.{n}")
}

fn machine(n: u64, nick: &str) -> Machine {
    Machine::new(format!("m-{nick}"), MachineState::Started)
        .with_address(addr(n))
        .with_label("role", "dynamic")
        .tap_name(nick)
}

trait TapName {
    fn tap_name(self, n: &str) -> Self;
}
impl TapName for Machine {
    fn tap_name(mut self, n: &str) -> Self {
        self.name = n.to_string();
        self
    }
}

struct World {
    emu: Emulator,
    hosts: EmulatedHosts,
    fixed: Vec<FixedPeer>,
    inventory: Arc<Inventory>,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(config: EmulatorConfig) -> World {
        let emu = Emulator::new(config);
        let targets: Vec<String> = (1..=3).map(addr).collect();
        let mut fixed = Vec::new();
        for n in 1..=3 {
            let url = emu
                .start_fixed(
                    PeerSpec::new(pn(n), format!("fixed{n}"), addr(n)),
                    targets.clone(),
                )
                .await
                .unwrap();
            fixed.push(FixedPeer::new(pn(n), addr(n), url));
        }
        // weave prime on one fixed peer.
        RouterClient::new(&fixed[0].api_url)
            .unwrap()
            .prime(Duration::from_secs(60))
            .await
            .unwrap();
        for n in 4..=5 {
            emu.add_peer(
                PeerSpec::new(pn(n), format!("dyn{n}"), addr(n)),
                Role::Observer,
            )
            .unwrap();
        }
        World {
            hosts: EmulatedHosts::new(emu.clone()),
            emu,
            fixed,
            inventory: Arc::default(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn reclaim_config(&self, designated: u64, ledger: &str) -> ReclaimConfig {
        let mut c = ReclaimConfig::new(
            self.fixed.clone(),
            pn(designated),
            self.dir.path().join(ledger),
        )
        .with_inventory(self.inventory.clone());
        c.verify_timeout = Duration::from_secs(30);
        c.lock_wait = Duration::from_secs(60);
        // These scenarios test the other rules: reclaim at the first observation (the
        // emulator's gossip is instant). The minimum has its own tests below.
        c.min_unreachable = Duration::ZERO;
        c
    }

    fn reclaimer(&self, ledger: &str) -> Arc<Reclaimer> {
        Arc::new(Reclaimer::new(self.reclaim_config(1, ledger)).unwrap())
    }

    fn membership(&self, reclaimer: Option<Arc<Reclaimer>>) -> WeaveMembership {
        let mut c = WeaveMembershipConfig::new(self.fixed.clone())
            .with_runner(Arc::new(self.hosts.clone()))
            .with_inventory(self.inventory.clone());
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
            self.inventory.add(mach.clone());
            m.join(&mach).await.unwrap();
            self.emu.allocate(pn(n), &format!("c{n}")).unwrap();
            assert!(self.emu.owned(pn(1), pn(n)) > 0);
        }
    }
}

#[tokio::test]
async fn scenario_join_leave_kill_reclaim_exactly_once_with_two_reclaimers() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;

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
    let members = m.members().await.unwrap();
    assert_eq!(members.len(), 5);
    let dyn4 = members
        .iter()
        .find(|x| x.nickname.as_deref() == Some("dyn4"))
        .unwrap();
    assert!(dyn4.reachable && !dyn4.fixed && dyn4.owned > 0);
    assert_eq!(dyn4.machine.as_ref().map(|i| i.as_str()), Some("m-dyn4"));
    assert_eq!(dyn4.address.as_deref(), Some("192.168.77.4"));
    assert_eq!(members.iter().filter(|x| x.fixed).count(), 3);

    // dyn4 leaves with reset; afterwards it owns nothing.
    let dyn4m = machine(4, "dyn4");
    m.leave(&dyn4m).await.unwrap();
    assert_eq!(w.emu.owned(pn(1), pn(4)), 0);
    m.leave(&dyn4m).await.unwrap(); // idempotent
    w.inventory.remove("dyn4");

    // dyn5's host vanishes, and the inventory no longer has it.
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");

    // Two reclaimer processes sharing one ledger run at the same time.
    let a = w.reclaimer("ledger.jsonl");
    let b = w.reclaimer("ledger.jsonl");
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

    // Later passes (and a restarted reclaimer) do nothing more.
    for r in [&a, &b, &w.reclaimer("ledger.jsonl")] {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    }
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    let states = Ledger::new(w.dir.path().join("ledger.jsonl"))
        .lock(Duration::from_secs(10))
        .await
        .unwrap()
        .states()
        .unwrap();
    assert_eq!(states[&pn(5)].state, LedgerState::Verified);
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
async fn unreachable_metrics_and_no_action_without_inventory_or_grace() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    // No inventory, no grace: nothing is ever reclaimed by default.
    let mut c = w.reclaim_config(1, "l.jsonl");
    c.inventory = None;
    let r = Reclaimer::new(c).unwrap();
    let p = r.run_once().await;
    assert_eq!(p.unreachable, [(pn(5), "dyn5".to_string(), owned5)]);
    assert_eq!(p.refused[0].1, RefusalReason::NotGone);
    let s = r.metrics().snapshot();
    assert_eq!(s.unreachable_peers, 1);
    assert_eq!(s.unreachable_ips, owned5);
    assert!((s.unreachable_percentage - owned5 as f64 * 100.0 / (1u64 << 20) as f64).abs() < 1e-9);
    assert_eq!(s.refusals[&RefusalReason::NotGone], 1);
    assert!(w.emu.rmpeer_log().is_empty());

    // An explicit grace reclaims once it elapsed (observed by this process).
    let mut c = w.reclaim_config(1, "l.jsonl");
    c.inventory = None;
    let r = Reclaimer::new(c.with_grace(Duration::from_millis(200))).unwrap();
    assert!(
        r.run_once().await.reclaimed.is_empty(),
        "the grace starts at first sight"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.run_once().await.reclaimed, [(pn(5), owned5)]);
    assert_eq!(w.emu.rmpeer_log().len(), 1);
}

#[tokio::test]
async fn partitioned_and_fixed_peers_are_never_reclaimed() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    // dyn5 is partitioned: alive, its API answers, unreachable from the fixed cluster. Its
    // machine is still in the inventory. fixed3 is down.
    w.emu.partition(pn(5)).unwrap();
    w.emu.kill(pn(3)).unwrap();
    let mut c = w.reclaim_config(1, "l.jsonl");
    c.grace = Some(Duration::from_secs(3600));
    let r = Reclaimer::new(c).unwrap();
    for _ in 0..3 {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty(), "{p:?}");
        let reasons: Vec<_> = p.refused.iter().map(|(n, k, _)| (*n, *k)).collect();
        assert!(
            reasons.contains(&(pn(5), RefusalReason::NotGone)),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&(pn(3), RefusalReason::Fixed)),
            "{reasons:?}"
        );
    }
    // Direct single-member path, even with the caller asserting the machine is gone.
    let e = r.reclaim_peer(pn(3), true).await.unwrap_err();
    assert!(matches!(
        e,
        fleetscale_weave::WeaveError::Refused {
            kind: RefusalReason::Fixed,
            ..
        }
    ));
    // Through the membership: fixed and reachable members are refused.
    let m = w.membership(Some(Arc::new(
        Reclaimer::new(w.reclaim_config(1, "l.jsonl")).unwrap(),
    )));
    let members = m.members().await.unwrap();
    let fixed3 = members
        .iter()
        .find(|x| x.name == pn(3).to_string())
        .unwrap();
    assert!(fixed3.fixed);
    assert!(matches!(
        m.reclaim(fixed3).await,
        Err(Error::Refused { .. })
    ));
    let dyn4 = members
        .iter()
        .find(|x| x.name == pn(4).to_string())
        .unwrap();
    assert!(dyn4.reachable);
    assert!(matches!(m.reclaim(dyn4).await, Err(Error::Refused { .. })));
    assert!(w.emu.rmpeer_log().is_empty());
    assert!(w.emu.duplicate_ownership().is_empty());

    // The partition heals: dyn5 was never touched and still owns its space.
    w.emu.heal(pn(5)).unwrap();
    assert!(w.emu.owned(pn(1), pn(5)) > 0);
    assert!(w.emu.merge_errors().is_empty());
}

#[tokio::test]
async fn restart_with_intent_but_no_done() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");

    // Case 1: crashed after the intent, before the rmpeer was sent.
    let ledger = Ledger::new(w.dir.path().join("crash1.jsonl"));
    {
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        g.append(&LedgerEntry::new(pn(5), LedgerState::Intent, pn(1)))
            .unwrap();
    }
    let p = w.reclaimer("crash1.jsonl").run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), owned5)], "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(w.emu.rmpeer_log()[0].by, pn(1));

    // Case 2: crashed after rmpeer went through, before `done`: the restarted reclaimer sees
    // the space moved and records done without a second rmpeer.
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");
    let ledger = Ledger::new(w.dir.path().join("crash2.jsonl"));
    {
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        g.append(&LedgerEntry::new(pn(5), LedgerState::Intent, pn(1)))
            .unwrap();
    }
    w.emu.rmpeer(pn(1), "00:00:00:00:00:05").unwrap();
    let r = w.reclaimer("crash2.jsonl");
    let p = r.run_once().await;
    assert!(p.reclaimed.is_empty() && p.errors.is_empty(), "{p:?}");
    assert_eq!(w.emu.rmpeer_log().len(), 1, "no second rmpeer");
    let out = r.reclaim_peer(pn(5), true).await.unwrap();
    assert!(out.already_reclaimed);
    let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
    assert_eq!(g.states().unwrap()[&pn(5)].state, LedgerState::Verified);
    drop(g);

    // Case 3: an unfinished intent on another designated peer is never repeated elsewhere.
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");
    let ledger = Ledger::new(w.dir.path().join("crash3.jsonl"));
    {
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        g.append(&LedgerEntry::new(pn(5), LedgerState::Intent, pn(2)))
            .unwrap();
    }
    let p = w.reclaimer("crash3.jsonl").run_once().await;
    assert_eq!(p.refused[0].1, RefusalReason::IntentOnOtherPeer, "{p:?}");
    assert!(w.emu.rmpeer_log().is_empty());
}

#[tokio::test]
async fn designated_peer_down_means_no_action() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");
    w.emu.kill(pn(1)).unwrap(); // the designated reclaimer
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
    // What the reclaimer prevents: two peers rmpeer the same dead peer before gossip spreads.
    let w = World::new(EmulatorConfig {
        gossip_delay: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await;
    let m = w.membership(None);
    w.join_both(&m).await;
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
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    w.emu.partition(pn(4)).unwrap();
    // The hand-off broadcast is lost: the fixed cluster still sees dyn4 owning its space.
    let e = m.leave(&machine(4, "dyn4")).await.unwrap_err();
    assert!(e.to_string().contains("still owns"), "{e}");
}

#[tokio::test]
async fn observers_cannot_form_a_ring_alone() {
    let emu = Emulator::default();
    emu.add_peer(PeerSpec::new(pn(1), "fixed1", addr(1)), Role::Fixed)
        .unwrap();
    emu.add_peer(PeerSpec::new(pn(2), "fixed2", addr(2)), Role::Fixed)
        .unwrap();
    emu.add_peer(PeerSpec::new(pn(3), "fixed3", addr(3)), Role::Fixed)
        .unwrap();
    let targets: Vec<String> = (1..=3).map(addr).collect();
    let u4 = emu
        .start_observer(PeerSpec::new(pn(4), "dyn4", addr(4)), targets.clone())
        .await
        .unwrap();
    emu.start_observer(PeerSpec::new(pn(5), "dyn5", addr(5)), targets.clone())
        .await
        .unwrap();
    assert!(emu.allocate(pn(4), "c").is_err());
    let c4 = RouterClient::new(&u4).unwrap();
    assert!(matches!(
        c4.allocate("c", Duration::from_millis(300)).await,
        Err(fleetscale_weave::WeaveError::Timeout { .. })
    ));
    assert_eq!(emu.ipam_text(pn(4)), "", "no ring, empty /status/ipam");
    // One elector is not a quorum of 3 either.
    emu.launch(pn(1), targets.clone()).await.unwrap();
    assert!(emu.allocate(pn(4), "c").is_err());
    emu.launch(pn(2), targets.clone()).await.unwrap();
    assert!(emu.allocate(pn(4), "c").unwrap().ends_with("/12"));
    assert!(emu.owned(pn(1), pn(4)) > 0);
}

#[tokio::test]
async fn conformance_membership() {
    let w = World::new(EmulatorConfig::default()).await;
    let reclaimer = w.reclaimer("conf.jsonl");
    let m = w.membership(Some(reclaimer));
    let mach = machine(4, "dyn4");
    w.inventory.add(mach.clone());
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
        refusals.extend(p.refused.iter().filter(|x| x.0 == peer).map(|x| x.1));
        assert!(Instant::now() < deadline, "never reclaimed: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_peer_unreachable_for_less_than_the_minimum_is_refused_then_reclaimed_once() {
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    // dyn5's host vanishes and the inventory says so at once.
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");
    let min = Duration::from_secs(1);
    let r = Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min)).unwrap();

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
    // The single-peer path (the engine's, with the machine confirmed gone) obeys it too, as
    // long as the minimum has not passed since the first sighting.
    if t0.elapsed() < min / 2 {
        match r.reclaim_peer(pn(5), true).await {
            Err(fleetscale_weave::WeaveError::Refused {
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
    let w = World::new(EmulatorConfig::default()).await;
    let m = w.membership(None);
    w.join_both(&m).await;
    let owned5 = w.emu.owned(pn(1), pn(5));
    // A flapping link: dyn5 drops out of the fixed cluster's topology while the inventory (here
    // wrongly) already says its host is gone.
    w.inventory.remove("dyn5");
    w.emu.partition(pn(5)).unwrap();
    let min = Duration::from_secs(1);
    let r = Reclaimer::new(w.reclaim_config(1, "l.jsonl").with_min_unreachable(min)).unwrap();
    let p = r.run_once().await;
    assert_eq!(
        p.refused[0].1,
        RefusalReason::TooRecentlyUnreachable,
        "{p:?}"
    );
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
    assert_eq!(
        p.refused[0].1,
        RefusalReason::TooRecentlyUnreachable,
        "{p:?}"
    );
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
    let owned5 = w.emu.owned(pn(1), pn(5));
    w.emu.kill(pn(5)).unwrap();
    w.inventory.remove("dyn5");
    let member = m
        .members()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.name == pn(5).to_string())
        .unwrap();
    assert!(!member.reachable && member.owned > 0);
    // What the engine does each tick for a lost member: the first call starts the clock.
    let t0 = Instant::now();
    let e = m.reclaim(&member).await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("less than the minimum"), "{e}");
    assert!(w.emu.rmpeer_log().is_empty());
    // Later ticks: refused until the minimum has passed, then reclaimed once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        match m.reclaim(&member).await {
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
    let again = m.reclaim(&member).await.unwrap();
    assert!(again.already_reclaimed && again.reclaimed == 0);
    assert_eq!(w.emu.rmpeer_log().len(), 1);
    assert_eq!(
        reclaimer.metrics().snapshot().reclaims,
        1,
        "exactly one rmpeer"
    );
}
