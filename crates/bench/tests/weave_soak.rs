//! Chaos soak of the Weave reclaimer on the router emulator (real HTTP APIs on loopback), with
//! failure-detection delays like real routers' (scaled down) and Go-map output order.
//!
//! A fixed cluster of 3 peers and a churning population of observer peers, on hosts listed by
//! a [`FakeScaler`] (the inventory: the same one the engine would list). Each round a seeded
//! RNG picks events: observers join (launched outside any reclaimer: no process ever "joins"
//! them) and allocate addresses, leave gracefully (`weave reset`), vanish with their machine
//! removed from the inventory (**lost**: their space must be reclaimed), die before any
//! reclaimer saw them with their machine listed as destroyed (**lost unseen**: reclaimed from
//! the positive evidence) or with no trace in the inventory (**unproven**: must never be
//! reclaimed), crash while their machine stays listed (must **not** be reclaimed; they may
//! restart later), get partitioned from the fixed cluster while alive and keep allocating
//! (must **not** be reclaimed) and heal later, after the reclaimers have had passes to act;
//! reclaimed names come back on a new machine with a fresh database (a new incarnation, to be
//! reclaimed again when lost again); fixed peers (the designated one included) go down and
//! come back. Then reclaimers act: the standalone reclaimer (one pass; two at once on the
//! same ledger; one on a second ledger with the same designated peer; cut off midway and
//! restarted) or the engine's path (an engine tick through `WeaveMembership`, sometimes a
//! freshly started engine: a restart).
//!
//! Checked after **every** round:
//! - every `rmpeer` ran on the designated peer, by peer name, never on a fixed peer;
//! - zero reclaims of live peers: every `rmpeer` target was lost (dead, with evidence) or had
//!   left when it ran; never a partitioned, crashed-but-listed or unproven peer;
//! - at most one `rmpeer` that took space per peer **incarnation**;
//! - no two live routers own the same range or hand out the same address, no ring merge
//!   conflicts, no healed peer that cannot rejoin.
//!
//! At the end, with faults stopped and partitions healed: all lost space (of every
//! incarnation, seen or unseen) is reclaimed within a bounded number of passes, and unproven
//! peers still own theirs. `FLEETSCALE_WEAVE_SOAK_ROUNDS` sets the rounds (default 60),
//! `FLEETSCALE_SOAK_SEED` the seed.

use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fleetscale_bench::env_number;
use fleetscale_bench::weave_cluster::{
    fixed_peer_addresses, peer_address, peer_name, start_fixed_peers, FIXED_PEERS,
};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::Policy;
use fleetscale_core::testing::FakeScaler;
use fleetscale_core::{Machine, MachineState, Scope};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec};
use fleetscale_weave::{
    FixedPeer, ReclaimConfig, Reclaimer, ScalerInventory, WeaveMembership, WeaveMembershipConfig,
};

/// What the test did to an observer (its current incarnation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Live,
    /// Alive, cut off from the fixed cluster (since this round), still in the inventory.
    Partitioned(u64),
    /// Dead, machine still in the inventory.
    Crashed,
    /// Dead, machine gone from the inventory or listed as destroyed: its space must be
    /// reclaimed.
    Lost,
    /// Dead before any reclaimer saw it, and its machine left no trace: its death cannot be
    /// proven, it must never be reclaimed.
    Unproven,
    /// Left with `weave reset`.
    Left,
}

const DESIGNATED: u64 = 1;
const SOURCE: &str = "pool";

struct World {
    emu: Emulator,
    fixed: Vec<FixedPeer>,
    scaler: Arc<FakeScaler>,
    dir: tempfile::TempDir,
    peers: BTreeMap<u64, Fate>,
    /// Incarnation of each name (1 = first life).
    incarnation: BTreeMap<u64, u32>,
    /// Names whose current incarnation was reclaimed (an rmpeer took its space).
    reclaimed: BTreeSet<u64>,
    /// Names whose current incarnation was alive and reachable during a completed reclaimer
    /// pass or engine tick: bound to its machine. Only those are killed with their machine
    /// merely unlisted (a peer that lived and died unseen, with no trace of its machine, is
    /// `Unproven` by design).
    observed: BTreeSet<u64>,
    /// Machines of lost hosts listed as destroyed, with how many more rounds the inventory
    /// keeps listing them (EC2 lists a terminated instance for about an hour; the fake scaler
    /// drops a destroyed machine after one list, so the soak lists it again).
    tombstones: Vec<(Machine, u32)>,
    next: u64,
    fixed_down: BTreeSet<u64>,
}

impl World {
    fn config(&self, ledger: &str) -> ReclaimConfig {
        let mut c = ReclaimConfig::new(
            self.fixed.clone(),
            peer_name(DESIGNATED),
            self.dir.path().join(ledger),
        )
        .with_inventory(Arc::new(ScalerInventory::new(self.scaler.clone(), SOURCE)));
        c.verify_timeout = Duration::from_secs(10);
        c.lock_wait = Duration::from_secs(30);
        c.http_timeout = Duration::from_secs(5);
        // Scaled down with the emulator's detection delays (the default is 60 s).
        c.min_unreachable = Duration::from_millis(50);
        c
    }

    fn reclaimer(&self, ledger: &str) -> Arc<Reclaimer> {
        Arc::new(Reclaimer::new(self.config(ledger)).unwrap())
    }

    /// A freshly started engine whose target's membership reclaims lost members.
    fn engine(&self) -> Engine {
        let mut mc = WeaveMembershipConfig::new(self.fixed.clone())
            .with_inventory_source(SOURCE)
            .with_reclaimer(self.reclaimer("ledger.jsonl"));
        mc.http_timeout = Duration::from_secs(5);
        let target = TargetSpec::new(Scope::new("pool"), self.scaler.clone(), Policy::default())
            .with_membership(Arc::new(WeaveMembership::new(mc).unwrap()));
        Engine::new(
            EngineConfig::default().with_reclaim_lost_members(true),
            Arc::new(vec![target]),
        )
    }

    fn with(&self, pred: impl Fn(Fate) -> bool) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, f)| pred(**f))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Live peers a completed pass has seen.
    fn observed_live(&self) -> Vec<u64> {
        self.with(|f| f == Fate::Live)
            .into_iter()
            .filter(|n| self.observed.contains(n))
            .collect()
    }

    fn machine_id(&self, n: u64) -> String {
        format!(
            "m-dyn{n}-{}",
            self.incarnation.get(&n).copied().unwrap_or(1)
        )
    }

    fn machine(&self, n: u64, state: MachineState) -> Machine {
        let mut m = Machine::new(self.machine_id(n), state).with_address(peer_address(n));
        m.name = format!("dyn{n}");
        m
    }

    /// A new observer, launched outside any autoscaler, with an address.
    async fn join(&mut self, listed: Option<MachineState>) -> u64 {
        let n = self.next;
        self.next += 1;
        self.incarnation.insert(n, 1);
        self.emu
            .start_observer(
                PeerSpec::new(peer_name(n), format!("dyn{n}"), peer_address(n)),
                fixed_peer_addresses(),
            )
            .await
            .unwrap();
        if let Some(state) = listed {
            self.scaler.insert(self.machine(n, state));
        }
        self.peers.insert(n, Fate::Live);
        self.allocate(n, &format!("c{n}")).await;
        n
    }

    /// An address for `n`, once it has connected to the mesh. It gets space only if a fixed
    /// peer is reachable to donate or grant it; with the whole fixed cluster down the
    /// allocation would block, which is fine: it owns nothing.
    async fn allocate(&self, n: u64, ident: &str) {
        for _ in 0..50 {
            if self.emu.allocate(peer_name(n), ident).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A reclaimed name comes back on a new machine with a fresh database.
    async fn rejoin(&mut self, n: u64) {
        self.emu.weave_reset(peer_name(n)).unwrap();
        *self.incarnation.entry(n).or_default() += 1;
        self.reclaimed.remove(&n);
        self.observed.remove(&n);
        self.scaler.insert(self.machine(n, MachineState::Started));
        self.emu
            .launch(peer_name(n), fixed_peer_addresses())
            .await
            .unwrap();
        self.peers.insert(n, Fate::Live);
        let inc = self.incarnation[&n];
        self.allocate(n, &format!("c{n}-{inc}")).await;
    }

    fn unlist(&self, n: u64) {
        self.scaler.vanish(&self.machine_id(n).into());
    }

    /// The machine of `n` is terminated: listed as destroyed for the next rounds.
    fn terminate(&mut self, n: u64) {
        self.scaler.vanish(&self.machine_id(n).into());
        self.tombstones
            .push((self.machine(n, MachineState::Destroyed), 6));
    }

    /// Lists the tombstones again, one round less.
    fn relist_tombstones(&mut self) {
        for (m, left) in &mut self.tombstones {
            if self.scaler.machine(&m.id).is_none() {
                self.scaler.insert(m.clone());
            }
            *left -= 1;
        }
        let scaler = self.scaler.clone();
        self.tombstones.retain(|(m, left)| {
            if *left == 0 {
                scaler.vanish(&m.id);
            }
            *left > 0
        });
    }

    /// Restarts the fixed peers that are down. Returns whether any was restarted.
    async fn restart_fixed(&mut self) -> bool {
        let down = std::mem::take(&mut self.fixed_down);
        for &f in &down {
            let url = self.emu.restart(peer_name(f)).await.unwrap();
            for p in self.fixed.iter_mut().filter(|p| p.name == peer_name(f)) {
                p.api_url = url.clone();
            }
        }
        !down.is_empty()
    }

    /// Everything the given peers still own, in every live fixed peer's view.
    fn space_of(&self, peers: &[u64]) -> u64 {
        peers
            .iter()
            .flat_map(|&n| {
                FIXED_PEERS
                    .iter()
                    .filter(|&&f| self.emu.is_running(peer_name(f)))
                    .map(move |&f| self.emu.owned(peer_name(f), peer_name(n)))
            })
            .sum()
    }
}

/// The per-round safety checks, over the `rmpeer`s served since the last check.
fn check(
    w: &mut World,
    seen: &mut usize,
    took: &mut BTreeMap<(u64, u32), usize>,
) -> Result<(), String> {
    let log = w.emu.rmpeer_log();
    for r in &log[*seen..] {
        if r.by != peer_name(DESIGNATED) {
            return Err(format!(
                "rmpeer ran on {} not the designated peer: {r:?}",
                r.by
            ));
        }
        let Some(target) = r.target else {
            return Err(format!("rmpeer of an unknown peer: {r:?}"));
        };
        if r.id != target.to_string() {
            return Err(format!(
                "rmpeer by something else than the peer name: {r:?}"
            ));
        }
        let n = target.as_u64();
        if FIXED_PEERS.contains(&n) {
            return Err(format!("a fixed peer was reclaimed: {r:?}"));
        }
        // A peer that left with `weave reset` is dead and gone from the inventory too; it may
        // be reclaimed before its reset's gossip arrived (it then still owns its space in
        // the fixed peers' views). That is only safe if no range ends up owned twice, which
        // the duplicate-ownership check below decides.
        let fate = w.peers.get(&n).copied();
        if !matches!(fate, Some(Fate::Lost) | Some(Fate::Left)) || w.emu.is_running(target) {
            return Err(format!(
                "a peer that was not lost was reclaimed ({fate:?}): {r:?}"
            ));
        }
        if r.taken_over > 0 {
            let inc = w.incarnation.get(&n).copied().unwrap_or(1);
            let k = took.entry((n, inc)).or_default();
            *k += 1;
            if *k > 1 {
                return Err(format!(
                    "{target} incarnation {inc} reclaimed {k} times: {log:?}"
                ));
            }
            w.reclaimed.insert(n);
        }
    }
    *seen = log.len();
    let dup = w.emu.duplicate_ownership();
    if !dup.is_empty() {
        return Err(format!("duplicate ownership: {dup:?}"));
    }
    let dup = w.emu.duplicate_addresses();
    if !dup.is_empty() {
        return Err(format!("an address handed out twice: {dup:?}"));
    }
    let merge = w.emu.merge_errors();
    if !merge.is_empty() {
        return Err(format!("ring merge conflicts: {merge:?}"));
    }
    if let Some(n) = w.peers.keys().find(|n| w.emu.conflicted(peer_name(**n))) {
        return Err(format!("dyn{n} cannot rejoin: its ring conflicts"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaimer_never_reclaims_live_peers_and_reclaims_every_lost_incarnation_once() {
    let rounds: u64 = env_number("FLEETSCALE_WEAVE_SOAK_ROUNDS", 60);
    let seed: u64 = env_number("FLEETSCALE_SOAK_SEED", 0x00EA_7E50);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let emu = Emulator::new(EmulatorConfig {
        gossip_delay: Duration::from_millis(5),
        block_limit: Duration::from_secs(2),
        detection_delay: Duration::from_millis(20),
        detection_jitter: Duration::from_millis(40),
        reconnect_delay: Duration::from_millis(10),
        seed,
        ..EmulatorConfig::default()
    });
    let fixed = start_fixed_peers(&emu).await.unwrap();
    let mut w = World {
        emu,
        fixed,
        scaler: Arc::new(FakeScaler::new()),
        dir: tempfile::tempdir().unwrap(),
        peers: BTreeMap::new(),
        incarnation: BTreeMap::new(),
        reclaimed: BTreeSet::new(),
        observed: BTreeSet::new(),
        tombstones: Vec::new(),
        next: 10,
        fixed_down: BTreeSet::new(),
    };
    for _ in 0..4 {
        w.join(Some(MachineState::Started)).await;
    }

    let mut primary = w.reclaimer("ledger.jsonl");
    let mut engine = w.engine();
    let (mut seen, mut took) = (0usize, BTreeMap::new());
    let mut passes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut events: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 1..=rounds {
        // Events.
        for _ in 0..1 + rng.random_range(0..3) {
            let alive = w
                .with(|f| matches!(f, Fate::Live | Fate::Partitioned(_) | Fate::Crashed))
                .len();
            let event = match rng.random_range(0..13) {
                0 | 1 if alive < 20 => {
                    w.join(Some(MachineState::Started)).await;
                    "join"
                }
                2 => match w.observed_live().choose(&mut rng).copied() {
                    Some(n) => {
                        w.emu.kill(peer_name(n)).unwrap();
                        w.unlist(n);
                        w.peers.insert(n, Fate::Lost);
                        "kill+unlist"
                    }
                    None => continue,
                },
                3 => match w.observed_live().choose(&mut rng).copied() {
                    Some(n) => {
                        w.emu.kill(peer_name(n)).unwrap();
                        w.peers.insert(n, Fate::Crashed);
                        "crash"
                    }
                    None => continue,
                },
                4 => match w.with(|f| f == Fate::Crashed).choose(&mut rng).copied() {
                    Some(n) if rng.random_range(0..2) == 0 => {
                        w.emu.restart(peer_name(n)).await.unwrap();
                        w.peers.insert(n, Fate::Live);
                        w.observed.remove(&n);
                        "crash-restart"
                    }
                    Some(n) => {
                        // The crashed host is finally terminated: now it is lost.
                        if rng.random_range(0..2) == 0 {
                            w.unlist(n);
                        } else {
                            w.terminate(n);
                        }
                        w.peers.insert(n, Fate::Lost);
                        "crash-then-terminated"
                    }
                    None => continue,
                },
                5 => match w.with(|f| f == Fate::Live).choose(&mut rng).copied() {
                    Some(n) => {
                        w.emu.partition(peer_name(n)).unwrap();
                        // Both sides keep allocating during the partition.
                        let _ = w.emu.allocate(peer_name(n), &format!("p{n}-{round}"));
                        w.peers.insert(n, Fate::Partitioned(round));
                        "partition"
                    }
                    None => continue,
                },
                6 => {
                    // Heal only partitions the reclaimers had passes to act on.
                    let old = w.with(|f| matches!(f, Fate::Partitioned(r) if r + 2 <= round));
                    match old.choose(&mut rng).copied() {
                        Some(n) => {
                            w.emu.heal(peer_name(n)).unwrap();
                            w.peers.insert(n, Fate::Live);
                            w.observed.remove(&n);
                            "heal"
                        }
                        None => continue,
                    }
                }
                7 => match w.with(|f| f == Fate::Live).choose(&mut rng).copied() {
                    Some(n) => {
                        w.emu.weave_reset(peer_name(n)).unwrap();
                        w.unlist(n);
                        w.peers.insert(n, Fate::Left);
                        "reset+unlist"
                    }
                    None => continue,
                },
                8 => {
                    // A fixed peer goes down (at most one at a time, so consensus holds).
                    if !w.fixed_down.is_empty() {
                        continue;
                    }
                    let f = FIXED_PEERS[rng.random_range(0..3) as usize];
                    w.emu.kill(peer_name(f)).unwrap();
                    w.fixed_down.insert(f);
                    "fixed-down"
                }
                9 => {
                    if !w.restart_fixed().await {
                        continue;
                    }
                    // The reclaimers are configured with the routers' API URLs.
                    primary = w.reclaimer("ledger.jsonl");
                    engine = w.engine();
                    "fixed-restart"
                }
                10 => {
                    let back: Vec<u64> = w
                        .with(|f| f == Fate::Lost)
                        .into_iter()
                        .filter(|n| w.reclaimed.contains(n))
                        .collect();
                    match back.choose(&mut rng).copied() {
                        Some(n) => {
                            w.rejoin(n).await;
                            "rejoin-after-reclaim"
                        }
                        None => continue,
                    }
                }
                11 if alive < 20 => {
                    // Joins and dies before any reclaimer sees it; its machine is listed as
                    // destroyed (as EC2 lists terminated instances for a while).
                    let n = w.join(Some(MachineState::Started)).await;
                    w.emu.kill(peer_name(n)).unwrap();
                    w.terminate(n);
                    w.peers.insert(n, Fate::Lost);
                    "lost-unseen"
                }
                12 if alive < 20 => {
                    // Joins and dies unseen, and its machine left no trace: unprovable.
                    let n = w.join(None).await;
                    w.emu.kill(peer_name(n)).unwrap();
                    w.peers.insert(n, Fate::Unproven);
                    "unproven"
                }
                _ => continue,
            };
            *events.entry(event).or_default() += 1;
        }

        // Reclaimers act.
        w.relist_tombstones();
        let pass = match rng.random_range(0..10) {
            0 => {
                let other = w.reclaimer("ledger.jsonl");
                let (_, _) = tokio::join!(primary.run_once(), other.run_once());
                "two at once"
            }
            1 => {
                let other = w.reclaimer("other-ledger.jsonl");
                let (_, _) = tokio::join!(primary.run_once(), other.run_once());
                "second ledger"
            }
            2 => {
                let cut = Duration::from_millis(rng.random_range(0..40));
                let _ = tokio::time::timeout(cut, primary.run_once()).await;
                primary = w.reclaimer("ledger.jsonl");
                "cut off + restart"
            }
            3 => {
                primary = w.reclaimer("ledger.jsonl");
                primary.run_once().await;
                "restart"
            }
            4 | 5 => {
                engine.run_once().await.unwrap();
                "engine tick"
            }
            6 => {
                engine = w.engine();
                engine.run_once().await.unwrap();
                "engine restart"
            }
            _ => {
                primary.run_once().await;
                "pass"
            }
        };
        *passes.entry(pass).or_default() += 1;
        if pass != "cut off + restart" {
            for n in w.with(|f| f == Fate::Live) {
                w.observed.insert(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = check(&mut w, &mut seen, &mut took) {
            panic!("seed {seed}, round {round}: {e}\npeers: {:?}", w.peers);
        }
    }

    // Calm: every fixed peer up, partitions healed; all lost space is reclaimed within a few
    // passes, and unproven peers keep theirs.
    if w.restart_fixed().await {
        primary = w.reclaimer("ledger.jsonl");
    }
    for n in w.with(|f| matches!(f, Fate::Partitioned(_))) {
        w.emu.heal(peer_name(n)).unwrap();
        w.peers.insert(n, Fate::Live);
    }
    let bound = 20;
    let mut calm = 0;
    let lost = w.with(|f| f == Fate::Lost);
    while w.space_of(&lost) > 0 {
        calm += 1;
        assert!(
            calm <= bound,
            "seed {seed}: lost space not reclaimed after {bound} calm passes: {} addresses; peers {:?}; last pass {:?}",
            w.space_of(&lost),
            w.peers,
            primary.run_once().await
        );
        w.relist_tombstones();
        primary.run_once().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        check(&mut w, &mut seen, &mut took)
            .unwrap_or_else(|e| panic!("seed {seed}, calm pass {calm}: {e}"));
    }
    let unproven = w.with(|f| f == Fate::Unproven);
    let log = w.emu.rmpeer_log();
    let incarnations_reclaimed = took.len();
    let names_reclaimed_twice = {
        let mut by_name: BTreeMap<u64, usize> = BTreeMap::new();
        for (n, _) in took.keys() {
            *by_name.entry(*n).or_default() += 1;
        }
        by_name.values().filter(|k| **k > 1).count()
    };
    eprintln!(
        "weave soak: seed {seed}, {rounds} rounds, events {events:?}, reclaimer actions {passes:?}; \
         {} observers ({} lost, {} unproven, {} crashed, {} left); {} rmpeer calls, \
         {incarnations_reclaimed} incarnations reclaimed ({names_reclaimed_twice} names more than once), \
         calm passes to reclaim the rest: {calm}",
        w.peers.len(),
        lost.len(),
        unproven.len(),
        w.with(|f| f == Fate::Crashed).len(),
        w.with(|f| f == Fate::Left).len(),
        log.len(),
    );
    assert!(!lost.is_empty() && incarnations_reclaimed > 0);
    assert_eq!(w.space_of(&lost), 0);
    // Unproven deaths keep their space: nothing proved them dead.
    for n in &unproven {
        assert!(
            !log.iter().any(|r| r.target == Some(peer_name(*n))),
            "unproven dyn{n} was reclaimed"
        );
    }
}
