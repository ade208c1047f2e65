//! Chaos soak of the Weave reclaimer on the router emulator (real HTTP APIs on loopback).
//!
//! A fixed cluster of 3 peers and a churning population of observer peers. Each round a seeded
//! RNG picks events: observers join and allocate addresses, leave gracefully (`weave reset`),
//! vanish with their host removed from the inventory (**lost**: their space must be
//! reclaimed), crash while their host stays in the inventory (must **not** be reclaimed; they
//! may restart later), get partitioned from the fixed cluster while alive (must **not** be
//! reclaimed), heal; fixed peers (the designated one included) go down and come back. Then
//! one or two reclaimers run a pass: sometimes two at once on the same ledger, sometimes one
//! on a second ledger with the same designated peer, sometimes a pass is cut off midway (a
//! crash of the reclaimer process) and the reclaimer is replaced by a fresh one on the same
//! ledger (a restart).
//!
//! Checked after **every** round:
//! - zero double reclaims: every `rmpeer` ran on the designated peer, and at most one
//!   `rmpeer` per peer took over any space;
//! - zero reclaims of live peers: every `rmpeer` target was lost (dead and gone from the
//!   inventory) when it ran; never a fixed, partitioned or crashed-but-listed peer;
//! - no two live routers own the same range (the emulator's duplicate-ownership detector) and
//!   no ring merge conflicts.
//!
//! At the end, with faults stopped: all lost space is reclaimed within a bounded number of
//! passes. `FLEETSCALE_WEAVE_SOAK_ROUNDS` sets the rounds (default 60),
//! `FLEETSCALE_SOAK_SEED` the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{CreateRequest, Error, Machine, MachineId, MachineState, Scaler};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec};
use fleetscale_weave::{FixedPeer, PeerName, ReclaimConfig, Reclaimer, RouterClient};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.below(v.len() as u64) as usize])
    }
}

/// The machines hosting the observers, as an inventory the reclaimer reads.
#[derive(Default)]
struct Inventory(Mutex<Vec<Machine>>);

impl Inventory {
    fn add(&self, n: u64) {
        let mut m = Machine::new(format!("m-dyn{n}"), MachineState::Started).with_address(addr(n));
        m.name = format!("dyn{n}");
        self.0.lock().unwrap().push(m);
    }
    fn remove(&self, n: u64) {
        let name = format!("dyn{n}");
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
    format!("10.77.{}.{}", n / 250, n % 250 + 1)
}

/// What the test did to an observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Live,
    /// Alive, cut off from the fixed cluster, still in the inventory.
    Partitioned,
    /// Dead, host still in the inventory.
    Crashed,
    /// Dead, host gone from the inventory: its space must be reclaimed.
    Lost,
    /// Left with `weave reset`.
    Left,
}

const FIXED: [u64; 3] = [1, 2, 3];
const DESIGNATED: u64 = 1;

struct World {
    emu: Emulator,
    fixed: Vec<FixedPeer>,
    inventory: Arc<Inventory>,
    dir: tempfile::TempDir,
    peers: BTreeMap<u64, Fate>,
    next: u64,
    fixed_down: BTreeSet<u64>,
}

impl World {
    fn config(&self, ledger: &str) -> ReclaimConfig {
        let mut c = ReclaimConfig::new(
            self.fixed.clone(),
            pn(DESIGNATED),
            self.dir.path().join(ledger),
        )
        .with_inventory(self.inventory.clone());
        c.verify_timeout = Duration::from_secs(10);
        c.lock_wait = Duration::from_secs(30);
        c.http_timeout = Duration::from_secs(5);
        // The soak's passes do not sleep: reclaim at first sight (the 60 s default needs real time).
        c.min_unreachable = Duration::ZERO;
        c
    }

    fn reclaimer(&self, ledger: &str) -> Arc<Reclaimer> {
        Arc::new(Reclaimer::new(self.config(ledger)).unwrap())
    }

    fn with(&self, fate: Fate) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, f)| **f == fate)
            .map(|(n, _)| *n)
            .collect()
    }

    async fn join(&mut self) {
        let n = self.next;
        self.next += 1;
        let targets: Vec<String> = FIXED.iter().map(|&f| addr(f)).collect();
        self.emu
            .start_observer(PeerSpec::new(pn(n), format!("dyn{n}"), addr(n)), targets)
            .await
            .unwrap();
        self.inventory.add(n);
        self.peers.insert(n, Fate::Live);
        // It gets space only if a fixed peer is reachable to donate or grant it; with the
        // whole fixed cluster down the allocation would block, which is fine: it owns nothing.
        let _ = self.emu.allocate(pn(n), &format!("c{n}"));
    }

    /// Restarts the fixed peers that are down; a restarted router may answer on a new port,
    /// so the fixed-peer list is updated. Returns whether any was restarted.
    async fn restart_fixed(&mut self) -> bool {
        let down = std::mem::take(&mut self.fixed_down);
        for &f in &down {
            let url = self.emu.restart(pn(f)).await.unwrap();
            for p in self.fixed.iter_mut().filter(|p| p.name == pn(f)) {
                p.api_url = url.clone();
            }
        }
        !down.is_empty()
    }

    /// Everything a lost peer still owns, in every live fixed peer's view.
    fn lost_space(&self) -> u64 {
        self.with(Fate::Lost)
            .iter()
            .flat_map(|&n| {
                FIXED
                    .iter()
                    .filter(|&&f| self.emu.is_running(pn(f)))
                    .map(move |&f| self.emu.owned(pn(f), pn(n)))
            })
            .sum()
    }
}

/// The per-round safety checks.
fn check(w: &World, lost_when_reclaimed: &BTreeSet<u64>) -> Result<(), String> {
    let log = w.emu.rmpeer_log();
    let mut took: BTreeMap<PeerName, usize> = BTreeMap::new();
    for r in &log {
        if r.by != pn(DESIGNATED) {
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
        if FIXED.contains(&n) {
            return Err(format!("a fixed peer was reclaimed: {r:?}"));
        }
        // A peer that left with `weave reset` is dead and gone from the inventory too; it may
        // be reclaimed before its reset's gossip arrived (it then still owns its space in
        // the fixed peers' views). That is only safe if no range ends up owned twice, which
        // the duplicate-ownership check below decides.
        let left = w.peers.get(&n) == Some(&Fate::Left);
        if !(lost_when_reclaimed.contains(&n) || left) || w.emu.is_running(target) {
            return Err(format!(
                "a peer that was not lost was reclaimed ({:?}): {r:?}",
                w.peers.get(&n)
            ));
        }
        if r.taken_over > 0 {
            *took.entry(target).or_default() += 1;
        }
    }
    if let Some((p, k)) = took.iter().find(|(_, k)| **k > 1) {
        return Err(format!("{p} reclaimed {k} times: {log:?}"));
    }
    let dup = w.emu.duplicate_ownership();
    if !dup.is_empty() {
        return Err(format!("duplicate ownership: {dup:?}"));
    }
    let merge = w.emu.merge_errors();
    if !merge.is_empty() {
        return Err(format!("ring merge conflicts: {merge:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaimer_never_double_reclaims_nor_reclaims_live_peers_and_reclaims_all_lost_space() {
    let rounds: u64 = std::env::var("FLEETSCALE_WEAVE_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("FLEETSCALE_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00EA_7E50);
    let mut rng = Rng(seed);

    let emu = Emulator::new(EmulatorConfig {
        gossip_delay: Duration::from_millis(5),
        block_limit: Duration::from_secs(2),
        ..EmulatorConfig::default()
    });
    let targets: Vec<String> = FIXED.iter().map(|&n| addr(n)).collect();
    let mut fixed = Vec::new();
    for n in FIXED {
        let url = emu
            .start_fixed(
                PeerSpec::new(pn(n), format!("fixed{n}"), addr(n)),
                targets.clone(),
            )
            .await
            .unwrap();
        fixed.push(FixedPeer::new(pn(n), addr(n), url));
    }
    RouterClient::new(&fixed[0].api_url)
        .unwrap()
        .prime(Duration::from_secs(30))
        .await
        .unwrap();
    let mut w = World {
        emu,
        fixed,
        inventory: Arc::default(),
        dir: tempfile::tempdir().unwrap(),
        peers: BTreeMap::new(),
        next: 10,
        fixed_down: BTreeSet::new(),
    };
    for _ in 0..4 {
        w.join().await;
    }

    let mut primary = w.reclaimer("ledger.jsonl");
    // Peers that were lost when the reclaimers could act on them; a lost peer stays lost.
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    let (mut interrupted, mut concurrent, mut restarts, mut other_ledger) = (0, 0, 0, 0);
    let mut events: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 1..=rounds {
        // Events.
        for _ in 0..1 + rng.below(3) {
            match rng.below(10) {
                0 | 1
                    if w.peers
                        .values()
                        .filter(|f| **f != Fate::Lost && **f != Fate::Left)
                        .count()
                        < 20 =>
                {
                    w.join().await;
                    *events.entry("join").or_default() += 1;
                }
                2 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Live)) {
                        w.emu.kill(pn(n)).unwrap();
                        w.inventory.remove(n);
                        w.peers.insert(n, Fate::Lost);
                        lost.insert(n);
                        *events.entry("kill+remove").or_default() += 1;
                    }
                }
                3 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Live)) {
                        w.emu.kill(pn(n)).unwrap();
                        w.peers.insert(n, Fate::Crashed);
                        *events.entry("crash").or_default() += 1;
                    }
                }
                4 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Crashed)) {
                        if rng.below(2) == 0 {
                            w.emu.restart(pn(n)).await.unwrap();
                            w.peers.insert(n, Fate::Live);
                            *events.entry("crash-restart").or_default() += 1;
                        } else {
                            // The crashed host is finally removed: now it is lost.
                            w.inventory.remove(n);
                            w.peers.insert(n, Fate::Lost);
                            lost.insert(n);
                            *events.entry("crash-then-remove").or_default() += 1;
                        }
                    }
                }
                5 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Live)) {
                        w.emu.partition(pn(n)).unwrap();
                        w.peers.insert(n, Fate::Partitioned);
                        *events.entry("partition").or_default() += 1;
                    }
                }
                6 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Partitioned)) {
                        w.emu.heal(pn(n)).unwrap();
                        w.peers.insert(n, Fate::Live);
                        *events.entry("heal").or_default() += 1;
                    }
                }
                7 => {
                    if let Some(n) = rng.pick(&w.with(Fate::Live)) {
                        w.emu.weave_reset(pn(n)).unwrap();
                        w.inventory.remove(n);
                        w.peers.insert(n, Fate::Left);
                        *events.entry("reset+remove").or_default() += 1;
                    }
                }
                8 => {
                    // A fixed peer goes down (at most one at a time, so consensus holds).
                    if w.fixed_down.is_empty() {
                        let f = FIXED[rng.below(3) as usize];
                        w.emu.kill(pn(f)).unwrap();
                        w.fixed_down.insert(f);
                        *events.entry("fixed-down").or_default() += 1;
                    }
                }
                _ => {
                    if w.restart_fixed().await {
                        // The reclaimer is configured with the routers' API URLs.
                        primary = w.reclaimer("ledger.jsonl");
                    }
                }
            }
        }

        // Reclaimer passes.
        match rng.below(8) {
            0 => {
                // Two reclaimer processes at once on the same ledger.
                concurrent += 1;
                let other = w.reclaimer("ledger.jsonl");
                let (_, _) = tokio::join!(primary.run_once(), other.run_once());
            }
            1 => {
                // A second reclaimer on its own ledger, same designated peer (documented safe).
                other_ledger += 1;
                let other = w.reclaimer("other-ledger.jsonl");
                let (_, _) = tokio::join!(primary.run_once(), other.run_once());
            }
            2 => {
                // The reclaimer process dies midway through a pass, and is restarted.
                interrupted += 1;
                let cut = Duration::from_millis(rng.below(40));
                let _ = tokio::time::timeout(cut, primary.run_once()).await;
                primary = w.reclaimer("ledger.jsonl");
                restarts += 1;
            }
            3 => {
                restarts += 1;
                primary = w.reclaimer("ledger.jsonl");
                primary.run_once().await;
            }
            _ => {
                primary.run_once().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = check(&w, &lost) {
            panic!("seed {seed}, round {round}: {e}\npeers: {:?}", w.peers);
        }
    }

    // Calm: every fixed peer up, partitions healed; all lost space is reclaimed within a few
    // passes (one pass normally; more if the last one was cut off or a fixed peer was down).
    if w.restart_fixed().await {
        primary = w.reclaimer("ledger.jsonl");
    }
    for n in w.with(Fate::Partitioned) {
        w.emu.heal(pn(n)).unwrap();
        w.peers.insert(n, Fate::Live);
    }
    let bound = 5;
    let mut passes = 0;
    while w.lost_space() > 0 {
        passes += 1;
        assert!(
            passes <= bound,
            "seed {seed}: lost space not reclaimed after {bound} calm passes: {} addresses; peers {:?}; last pass {:?}",
            w.lost_space(),
            w.peers,
            primary.run_once().await
        );
        primary.run_once().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        check(&w, &lost).unwrap_or_else(|e| panic!("seed {seed}, calm pass {passes}: {e}"));
    }
    let log = w.emu.rmpeer_log();
    let reclaimed: BTreeSet<u64> = log
        .iter()
        .filter(|r| r.taken_over > 0)
        .filter_map(|r| r.target.map(|t| t.as_u64()))
        .collect();
    let repeats = log.iter().filter(|r| r.taken_over == 0).count();
    eprintln!(
        "weave soak: seed {seed}, {rounds} rounds, events {events:?}, {} observers ({} lost, {} crashed, {} partitioned, {} left), \
         {} rmpeer calls ({} took space, {repeats} took nothing), {concurrent} concurrent passes, \
         {other_ledger} passes with a second ledger, {interrupted} interrupted passes, {restarts} restarts, \
         calm passes to reclaim the rest: {passes}",
        w.peers.len(),
        lost.len(),
        w.with(Fate::Crashed).len(),
        w.peers.values().filter(|f| **f == Fate::Partitioned).count(),
        w.with(Fate::Left).len(),
        log.len(),
        reclaimed.len(),
    );
    // Something was really lost and reclaimed, and every lost peer that owned space is among
    // the reclaimed (or owned nothing by the time it was lost).
    assert!(!lost.is_empty() && !reclaimed.is_empty());
    assert_eq!(w.lost_space(), 0);
}
