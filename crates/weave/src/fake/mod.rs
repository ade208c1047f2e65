//! The Weave router emulator (feature `fake`).
//!
//! Several emulated routers in one process, each with its **own HTTP API** on `127.0.0.1`
//! (port 0), sharing an emulated mesh and IPAM ring:
//!
//! - **Views and gossip.** Each router has its own view of the ring. Every change (consensus,
//!   grant, reset, rmpeer) is broadcast to the routers it can reach and merged with the rules
//!   of `weave:ipam/ring/ring.go` (higher version wins; equal versions with different owners
//!   are an inconsistency when the receiver uses the range, otherwise the higher free count
//!   wins). Delivery is immediate by default, or after [`EmulatorConfig::gossip_delay`], which
//!   is what makes the duplicate-ownership hazard of concurrent `rmpeer`s reproducible.
//!   Free-space reports (`ReportFree`) change only the owner's view until its next broadcast,
//!   as gossip does.
//! - **Consensus.** Fixed peers are electors: the first allocation or `GET /ring` on a peer
//!   without a ring creates one (`ClaimForPeers` over the reachable electors, sorted) once a
//!   quorum (`N/2+1`, N = [`EmulatorConfig::consensus`] or the number of fixed peers) of
//!   electors is reachable. Observers never vote: an observer with no reachable elector gets
//!   no ring and its allocations block (`priming`), whatever other observers it reaches.
//! - **Allocation** (`POST /ip/{id}`): from the router's free space, else by asking the
//!   reachable peer with the most free space (ties: lowest token; Weave picks at random
//!   weighted by free space; [`Emulator::allocate_with_donor`] pins the donor) to donate with
//!   `Space.Donate`'s rule. Blocks while no space can be had.
//! - **`DELETE /peer`** (reset): the router's ranges go to one heir (the first reachable owner
//!   in ring order, as `pickPeerForTransfer`), version + 100; answers 204.
//! - **`DELETE /peer/{id}`** (rmpeer): nickname first, then peer name; the caller takes over,
//!   version + 100; answers `"<n> IPs taken over from <id>\n"`. Every call is logged
//!   ([`Emulator::rmpeer_log`]).
//! - **Faults**: [`Emulator::kill`] (the host vanishes: its HTTP server stops, the others see it
//!   unreachable after [`EmulatorConfig::detection_delay`] + jitter, as mesh only drops a
//!   silent connection after its heartbeat timeout), [`Emulator::partition`] (alive, its API
//!   still answers, it keeps allocating from its own ranges while the others keep allocating
//!   from theirs, unreachable from the fixed cluster after the detection delay),
//!   [`Emulator::heal`] (reconnects after [`EmulatorConfig::reconnect_delay`]; a ring
//!   conflict — its space was taken while it lived — drops its connections for good, as real
//!   routers do), [`Emulator::restart`] (same peer name, new UID, persisted ring kept unless
//!   it was reset; reconnects after the reconnect delay).
//! - **Irregular output**, as real routers: `/status/ipam` lines after the local one,
//!   `/status/peers` and the `/report` peer lists in Go map order, different on every call
//!   (unless [`EmulatorConfig::ordered_output`]); consensus may leave a fixed peer owning
//!   nothing ([`EmulatorConfig::consensus_quorum_only`]); `/report` has the fields real 2.8
//!   routers send (`VersionCheck`, `Interface`, `CaptureStats`, `MACs`, route lists).
//! - **Hazard detection**: [`Emulator::duplicate_ownership`] lists ranges that two live routers
//!   each believe they own, [`Emulator::duplicate_addresses`] addresses handed out by two live
//!   routers, and [`Emulator::merge_errors`] the ring conflicts Weave would log and drop
//!   connections over.
//! - **Output formats** match the captured Weave Net 2.8 outputs byte for byte
//!   (`/status/ipam` trailing spaces, `06.2%`), checked by the crate's tests.

mod hosts;
mod http;
mod pool;
mod ring;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use hosts::EmulatedHosts;
pub use pool::MachinePool;

use crate::status::{render_ipam_line, IpamPeerState};
use crate::PeerName;
use ring::{donation, fmt_ip, free_chunks, Ring};

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// First address of the allocation range (default `10.32.0.0`).
    pub range_start: [u8; 4],
    /// Prefix length of the range (default 12, as `--ipalloc-range` defaults to
    /// `10.32.0.0/12`).
    pub range_prefix: u8,
    /// The consensus count N (quorum N/2+1); `None`: the number of fixed peers added.
    pub consensus: Option<u32>,
    /// How long a ring broadcast takes to arrive; zero delivers it immediately.
    pub gossip_delay: Duration,
    /// How long blocking calls (`GET /ring`, `POST /ip/{id}`) wait before answering 503.
    pub block_limit: Duration,
    /// How long a router keeps listing a peer it lost without notice (a killed host, a
    /// partition) as reachable: mesh only drops a silent connection after its heartbeat
    /// timeout. Real Weave 2.8 routers took 36 s (partition) and 53 s (kill); zero (the
    /// default) makes the loss visible at once. Graceful stops (`weave stop`, `weave reset`)
    /// close the connection and are seen at once.
    pub detection_delay: Duration,
    /// A random extra delay, up to this much, added to [`Self::detection_delay`] per pair of
    /// routers (the real routers saw the same loss at different times).
    pub detection_jitter: Duration,
    /// How long a (re)started or healed router stays unconnected before it reconnects and
    /// exchanges rings with the mesh (mesh retries a failed connection after 2 s, growing
    /// ×1.5); zero (the default) reconnects at once.
    pub reconnect_delay: Duration,
    /// Consensus divides the range among a quorum of electors only (the first ones, sorted),
    /// leaving the other fixed peers owning nothing, as real Paxos does when a quorum agrees
    /// before the last votes arrive (seen on real routers). Default: every reachable elector.
    pub consensus_quorum_only: bool,
    /// Print `/status/ipam` non-local lines, `/status/peers` and the `/report` peer lists in
    /// a fixed order instead of Weave's Go-map order (which varies from call to call).
    pub ordered_output: bool,
    /// Seed of the emulator's randomness (output order, detection jitter).
    pub seed: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            range_start: [10, 32, 0, 0],
            range_prefix: 12,
            consensus: None,
            gossip_delay: Duration::ZERO,
            block_limit: Duration::from_secs(600),
            detection_delay: Duration::ZERO,
            detection_jitter: Duration::ZERO,
            reconnect_delay: Duration::ZERO,
            consensus_quorum_only: false,
            ordered_output: false,
            seed: 0x5eed,
        }
    }
}

/// A peer to launch: its name, nickname (host name) and host address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// Peer name.
    pub name: PeerName,
    /// Nickname.
    pub nickname: String,
    /// Host address (as other peers would list it in `$PEERS`).
    pub address: String,
}

impl PeerSpec {
    /// A spec; panics never: an invalid name is reported by [`PeerName`] parsing upstream.
    pub fn new(name: PeerName, nickname: impl Into<String>, address: impl Into<String>) -> Self {
        PeerSpec {
            name,
            nickname: nickname.into(),
            address: address.into(),
        }
    }
}

/// IPAM role of an emulated router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A consensus elector (fixed peer).
    Fixed,
    /// `--ipalloc-init=observer` (dynamic peer).
    Observer,
}

/// One `DELETE /peer/{id}` the emulator served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmpeerRecord {
    /// The router that ran it (and took the space).
    pub by: PeerName,
    /// The `{id}` as sent (after percent-decoding).
    pub id: String,
    /// The peer it resolved to, if any.
    pub target: Option<PeerName>,
    /// Addresses taken over.
    pub taken_over: u64,
}

/// A range that two or more live routers each believe is theirs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateOwnership {
    /// The range's first address.
    pub token: String,
    /// Every live router whose own view says it owns the range.
    pub owners: Vec<PeerName>,
}

/// Errors of the emulator's Rust control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// No such peer.
    #[error("no emulated peer {0}")]
    UnknownPeer(String),
    /// A peer with that name or nickname exists already.
    #[error("peer {0} already exists")]
    Exists(String),
    /// The router is not running.
    #[error("router {0} is not running")]
    NotRunning(String),
    /// The router is running already.
    #[error("router {0} is already running")]
    AlreadyRunning(String),
    /// The operation cannot complete now (no ring, no space); HTTP calls block instead.
    #[error("{0}")]
    WouldBlock(String),
    /// Binding the HTTP listener failed.
    #[error("cannot bind router API: {0}")]
    Bind(#[from] std::io::Error),
    /// `weave prime` through a router's HTTP API failed.
    #[error("prime: {0}")]
    Prime(#[source] crate::WeaveError),
}

struct Router {
    spec: PeerSpec,
    role: Role,
    alive: bool,
    group: u64,
    uid: u64,
    ring: Ring,
    /// This router's own entries as it last gossiped them (free-space reports in `ring` that
    /// were not broadcast yet are not visible to others).
    published_own: BTreeMap<u64, ring::Entry>,
    allocated: BTreeSet<u64>,
    idents: BTreeMap<String, u64>,
    targets: Vec<String>,
    shutting_down: bool,
    ready: bool,
    waiting: usize,
    addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    /// Bumped by every launch, kill, partition and heal: a pending reconnection of an older
    /// generation does nothing.
    generation: u64,
    /// Its ring conflicts with the mesh's: every connection it makes is dropped.
    conflicted: bool,
    /// When it was launched (its `/report` `MACs` `LastSeen`).
    started_at: std::time::SystemTime,
}

struct World {
    config: EmulatorConfig,
    start: u64,
    end: u64,
    routers: BTreeMap<PeerName, Router>,
    fixed_count: u32,
    next_group: u64,
    next_uid: u64,
    rmpeer_log: Vec<RmpeerRecord>,
    forget_log: Vec<(PeerName, Vec<String>)>,
    merge_errors: Vec<String>,
    /// Until when `(viewer, peer)` still lists a peer it lost without notice.
    fading: BTreeMap<(PeerName, PeerName), Instant>,
    rng: std::sync::atomic::AtomicU64,
}

/// The emulator: a handle to the shared world. Cheap to clone.
#[derive(Clone)]
pub struct Emulator {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator::new(EmulatorConfig::default())
    }
}

impl World {
    fn router(&self, name: PeerName) -> Result<&Router, FakeError> {
        self.routers
            .get(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))
    }

    fn quorum(&self) -> u32 {
        self.config.consensus.unwrap_or(self.fixed_count) / 2 + 1
    }

    /// Whether `viewer` sees `peer` in its mesh topology.
    fn knows(&self, viewer: PeerName, peer: PeerName) -> bool {
        match (self.routers.get(&viewer), self.routers.get(&peer)) {
            (Some(v), Some(p)) => v.alive && p.alive && (viewer == peer || v.group == p.group),
            _ => false,
        }
    }

    fn group_of(&self, viewer: PeerName) -> Vec<PeerName> {
        self.routers
            .keys()
            .copied()
            .filter(|p| self.knows(viewer, *p))
            .collect()
    }

    /// Whether `viewer`'s topology lists `peer`: connected now, or lost without notice less
    /// than the detection delay ago.
    fn sees(&self, viewer: PeerName, peer: PeerName) -> bool {
        if self.knows(viewer, peer) {
            return true;
        }
        self.routers.get(&viewer).is_some_and(|v| v.alive)
            && self
                .fading
                .get(&(viewer, peer))
                .is_some_and(|until| Instant::now() < *until)
    }

    /// Every peer in `viewer`'s topology, in Weave's varying (Go map) order unless
    /// [`EmulatorConfig::ordered_output`].
    fn seen_group(&self, viewer: PeerName) -> Vec<PeerName> {
        let peers: Vec<PeerName> = self
            .routers
            .keys()
            .copied()
            .filter(|p| self.sees(viewer, *p))
            .collect();
        self.map_order(peers)
    }

    /// The next pseudo-random number (SplitMix64).
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `items` in Go map iteration order: shuffled on every call, unless output is ordered.
    fn map_order<T>(&self, mut items: Vec<T>) -> Vec<T> {
        if !self.config.ordered_output {
            for i in (1..items.len()).rev() {
                let j = (self.random() % (i as u64 + 1)) as usize;
                items.swap(i, j);
            }
        }
        items
    }

    /// `peer` is about to lose its connections without notice (killed, partitioned away from
    /// everyone but `keep`): every router connected to it keeps listing it, and it them, for
    /// the detection delay.
    fn cut(&mut self, peer: PeerName, keep: &[PeerName]) {
        let now = Instant::now();
        let others: Vec<PeerName> = self
            .group_of(peer)
            .into_iter()
            .filter(|p| *p != peer && !keep.contains(p))
            .collect();
        for other in others {
            for pair in [(other, peer), (peer, other)] {
                let jitter = self.config.detection_jitter.as_nanos() as u64;
                let extra = if jitter == 0 {
                    0
                } else {
                    self.random() % (jitter + 1)
                };
                let until = now + self.config.detection_delay + Duration::from_nanos(extra);
                self.fading.insert(pair, until);
            }
        }
    }

    /// `peer` (re)connects to the mesh: rings are exchanged; a ring conflict drops its
    /// connections again (Weave logs `Received update for IP range I own ...` and closes the
    /// connection, forever while the conflict lasts).
    fn join_mesh(&mut self, peer: PeerName) {
        let Some(r) = self.routers.get_mut(&peer) else {
            return;
        };
        r.group = 0;
        r.generation += 1;
        self.fading.retain(|(a, b), _| *a != peer && *b != peer);
        let before = self.merge_errors.len();
        self.sync_group(peer);
        if self.merge_errors.len() > before {
            let g = self.next_group;
            self.next_group += 1;
            if let Some(r) = self.routers.get_mut(&peer) {
                r.group = g;
                r.conflicted = true;
            }
        } else if let Some(r) = self.routers.get_mut(&peer) {
            r.conflicted = false;
        }
    }

    /// Isolates `peer` now and joins it to the mesh after the reconnect delay.
    fn reconnect_later(&mut self, peer: PeerName, world: &Arc<Mutex<World>>) {
        let delay = self.config.reconnect_delay;
        if delay.is_zero() {
            self.join_mesh(peer);
            return;
        }
        let g = self.next_group;
        self.next_group += 1;
        let Some(r) = self.routers.get_mut(&peer) else {
            return;
        };
        r.group = g;
        r.generation += 1;
        let generation = r.generation;
        let world = Arc::clone(world);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut w = lock(&world);
            if w.routers
                .get(&peer)
                .is_some_and(|r| r.alive && r.generation == generation)
            {
                w.join_mesh(peer);
            }
        });
    }

    fn merge_into(&mut self, to: PeerName, incoming: &Ring) {
        let Some(r) = self.routers.get(&to) else {
            return;
        };
        let allocated = r.allocated.clone();
        let has_alloc = move |a: u64, b: u64| allocated.range(a..b).next().is_some();
        let mut view = r.ring.clone();
        match view.merge(incoming, to, &has_alloc) {
            Ok(_) => {
                if let Some(r) = self.routers.get_mut(&to) {
                    for (t, e) in &incoming.entries {
                        if e.peer == to && view.entries.get(t) == Some(e) {
                            r.published_own.insert(*t, e.clone());
                        }
                    }
                    r.published_own
                        .retain(|t, _| view.entries.get(t).is_some_and(|e| e.peer == to));
                    r.ring = view;
                }
            }
            Err(e) => self.merge_errors.push(format!("{to}: {e}")),
        }
    }

    /// What `peer` gossips: its view, with its own entries as last published.
    fn gossip_view(&self, peer: PeerName) -> Option<Ring> {
        let r = self.routers.get(&peer)?;
        let mut v = r.ring.clone();
        for (t, e) in v.entries.iter_mut() {
            if e.peer == peer {
                if let Some(p) = r.published_own.get(t) {
                    *e = p.clone();
                }
            }
        }
        Some(v)
    }

    /// Sends `from`'s view to everyone it reaches, now (delay zero) or later.
    fn broadcast(&mut self, from: PeerName, world: &Arc<Mutex<World>>) {
        let Some(r) = self.routers.get_mut(&from) else {
            return;
        };
        r.published_own = r
            .ring
            .entries
            .iter()
            .filter(|(_, e)| e.peer == from)
            .map(|(t, e)| (*t, e.clone()))
            .collect();
        let snapshot = r.ring.clone();
        let delay = self.config.gossip_delay;
        let targets: Vec<PeerName> = self
            .group_of(from)
            .into_iter()
            .filter(|p| *p != from)
            .collect();
        if delay.is_zero() {
            for t in targets {
                self.merge_into(t, &snapshot);
            }
        } else {
            let world = Arc::clone(world);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut w = lock(&world);
                // A message already sent arrives even if its sender stopped meanwhile (a
                // `weave reset` hands its ranges over, then the script stops the router); a
                // partition in between drops it.
                let sender_gone = w.routers.get(&from).is_some_and(|r| !r.alive);
                for t in targets {
                    let receiver_alive = w.routers.get(&t).is_some_and(|r| r.alive);
                    if w.knows(from, t) || (sender_gone && receiver_alive) {
                        w.merge_into(t, &snapshot);
                    }
                }
            });
        }
    }

    /// Everyone in `peer`'s group exchanges views (a (re)connection).
    fn sync_group(&mut self, peer: PeerName) {
        let group = self.group_of(peer);
        for _ in 0..2 {
            for a in &group {
                let Some(view) = self.gossip_view(*a) else {
                    continue;
                };
                if view.is_empty() {
                    continue;
                }
                for b in &group {
                    if a != b {
                        self.merge_into(*b, &view);
                    }
                }
            }
        }
    }

    /// Makes sure `me` has a ring: from a reachable peer that has one, or by consensus.
    fn ensure_ring(&mut self, me: PeerName, world: &Arc<Mutex<World>>) -> Result<(), FakeError> {
        if !self.router(me)?.ring.is_empty() {
            return Ok(());
        }
        let group = self.group_of(me);
        if let Some(view) = group
            .iter()
            .find(|p| self.routers.get(p).is_some_and(|r| !r.ring.is_empty()))
            .and_then(|p| self.gossip_view(*p))
        {
            self.merge_into(me, &view);
            return Ok(());
        }
        let electors: Vec<PeerName> = group
            .iter()
            .copied()
            .filter(|p| self.routers.get(p).is_some_and(|r| r.role == Role::Fixed))
            .collect();
        let quorum = self.quorum();
        if electors.is_empty() || (electors.len() as u32) < quorum {
            return Err(FakeError::WouldBlock(format!(
                "no ring: {} of {quorum} electors reachable",
                electors.len()
            )));
        }
        // The first elector (sorted) runs ClaimForPeers over the electors Paxos agreed on
        // (every reachable one, or only the first quorum) and broadcasts the ring.
        let leader = electors[0];
        let agreed: &[PeerName] = if self.config.consensus_quorum_only {
            &electors[..quorum as usize]
        } else {
            &electors
        };
        let mut ring = Ring::new(self.start, self.end);
        ring.claim_for_peers(agreed);
        if let Some(r) = self.routers.get_mut(&leader) {
            r.ring = ring;
        }
        self.broadcast(leader, world);
        if leader != me {
            if let Some(view) = self.routers.get(&leader).map(|r| r.ring.clone()) {
                self.merge_into(me, &view);
            }
        }
        Ok(())
    }

    fn report_free(&mut self, me: PeerName) {
        if let Some(r) = self.routers.get_mut(&me) {
            let allocated = r.allocated.clone();
            r.ring.report_free(me, &allocated);
        }
    }

    fn try_allocate(
        &mut self,
        me: PeerName,
        ident: &str,
        donor: Option<PeerName>,
        world: &Arc<Mutex<World>>,
    ) -> Result<String, FakeError> {
        let r = self.router(me)?;
        if !r.alive {
            return Err(FakeError::NotRunning(me.to_string()));
        }
        if r.shutting_down {
            return Err(FakeError::WouldBlock("allocator is shutting down".into()));
        }
        if let Some(a) = r.idents.get(ident) {
            return Ok(format!("{}/{}", fmt_ip(*a), self.config.range_prefix));
        }
        self.ensure_ring(me, world)?;
        let (start, end) = (self.start, self.end);
        let pick = |w: &World| -> Option<u64> {
            let r = w.routers.get(&me)?;
            free_chunks(&r.ring, me, &r.allocated)
                .into_iter()
                .flat_map(|(a, b)| a..b)
                .find(|x| *x != start && *x != end - 1)
        };
        if pick(self).is_none() {
            self.request_space(me, donor, world)?;
        }
        let addr = pick(self).ok_or_else(|| FakeError::WouldBlock("no free address".into()))?;
        if let Some(r) = self.routers.get_mut(&me) {
            r.allocated.insert(addr);
            r.idents.insert(ident.to_string(), addr);
        }
        // ReportFree changes only the local view until the next broadcast.
        self.report_free(me);
        Ok(format!("{}/{}", fmt_ip(addr), self.config.range_prefix))
    }

    fn request_space(
        &mut self,
        me: PeerName,
        donor: Option<PeerName>,
        world: &Arc<Mutex<World>>,
    ) -> Result<(), FakeError> {
        let view = self.router(me)?.ring.clone();
        let mut candidates: Vec<(u64, u64, PeerName)> = Vec::new(); // (free, first token, peer)
        for (t, _, e) in view.ranges() {
            if e.peer == me || e.free == 0 || !self.knows(me, e.peer) {
                continue;
            }
            match candidates.iter_mut().find(|c| c.2 == e.peer) {
                Some(c) => c.0 += e.free,
                None => candidates.push((e.free, t, e.peer)),
            }
        }
        let chosen = match donor {
            Some(d) => candidates.iter().find(|c| c.2 == d).map(|c| c.2),
            None => candidates
                .iter()
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .map(|c| c.2),
        }
        .ok_or_else(|| FakeError::WouldBlock("no reachable peer has free space".into()))?;
        let (chunk, donor_ring) = {
            let d = self.router(chosen)?;
            let chunks = free_chunks(&d.ring, chosen, &d.allocated);
            (donation(&chunks), d.ring.clone())
        };
        let (a, b) = chunk.ok_or_else(|| FakeError::WouldBlock("donor has no space".into()))?;
        let mut ring = donor_ring;
        ring.grant(chosen, a, b, me);
        if let Some(d) = self.routers.get_mut(&chosen) {
            d.ring = ring;
        }
        self.report_free(chosen);
        self.broadcast(chosen, world);
        // The donor also unicasts its ring back to the requester.
        if let Some(view) = self.routers.get(&chosen).map(|r| r.ring.clone()) {
            self.merge_into(me, &view);
        }
        Ok(())
    }

    fn reset(
        &mut self,
        me: PeerName,
        world: &Arc<Mutex<World>>,
    ) -> Result<Option<PeerName>, FakeError> {
        let r = self.router(me)?;
        let view = r.ring.clone();
        // pickPeerForTransfer: reachable owners in ring order, then reachable peers without
        // entries, then unreachable owners.
        let heir = view
            .ranges()
            .iter()
            .map(|(_, _, e)| e.peer)
            .find(|p| *p != me && self.knows(me, *p))
            .or_else(|| self.group_of(me).into_iter().find(|p| *p != me))
            .or_else(|| {
                view.ranges()
                    .iter()
                    .map(|(_, _, e)| e.peer)
                    .find(|p| *p != me)
            });
        let r = self
            .routers
            .get_mut(&me)
            .ok_or_else(|| FakeError::UnknownPeer(me.to_string()))?;
        r.shutting_down = true;
        if let Some(h) = heir {
            r.ring.transfer(me, h);
            r.allocated.clear();
            r.idents.clear();
            self.broadcast(me, world);
        }
        Ok(heir)
    }

    fn rmpeer(
        &mut self,
        me: PeerName,
        id: &str,
        world: &Arc<Mutex<World>>,
    ) -> Result<u64, FakeError> {
        let view = self.router(me)?.ring.clone();
        // Nickname first (the allocator's nickname map), then a peer name.
        let target = view
            .ranges()
            .iter()
            .map(|(_, _, e)| e.peer)
            .find(|p| self.routers.get(p).is_some_and(|r| r.spec.nickname == id))
            .or_else(|| id.parse::<PeerName>().ok());
        let taken = match target {
            Some(t) if t != me => {
                let r = self
                    .routers
                    .get_mut(&me)
                    .ok_or_else(|| FakeError::UnknownPeer(me.to_string()))?;
                let n = r.ring.transfer(t, me);
                if n > 0 {
                    self.broadcast(me, world);
                }
                n
            }
            _ => 0,
        };
        self.rmpeer_log.push(RmpeerRecord {
            by: me,
            id: id.to_string(),
            target,
            taken_over: taken,
        });
        Ok(taken)
    }

    fn is_known_in_ipam(&self, viewer: PeerName, peer: PeerName) -> bool {
        self.sees(viewer, peer)
    }

    fn ipam_text(&self, viewer: PeerName) -> String {
        let Some(r) = self.routers.get(&viewer) else {
            return String::new();
        };
        let size = self.end - self.start;
        let mut per: Vec<(PeerName, u64)> = Vec::new();
        for (_, s, e) in r.ring.ranges() {
            match per.iter_mut().find(|x| x.0 == e.peer) {
                Some(x) => x.1 += s,
                None => per.push((e.peer, s)),
            }
        }
        let nick = |p: PeerName| self.routers.get(&p).map(|r| r.spec.nickname.clone());
        let mut out = String::new();
        if let Some((_, ips)) = per.iter().find(|x| x.0 == viewer) {
            out.push_str(&render_ipam_line(
                viewer,
                nick(viewer).as_deref(),
                *ips,
                size,
                IpamPeerState::Local {
                    active: r.allocated.len() as u64,
                },
            ));
        }
        let others: Vec<&(PeerName, u64)> = per.iter().filter(|x| x.0 != viewer).collect();
        for (p, ips) in self.map_order(others) {
            let state = if self.is_known_in_ipam(viewer, *p) {
                IpamPeerState::Reachable
            } else {
                IpamPeerState::Unreachable
            };
            out.push_str(&render_ipam_line(
                *p,
                nick(*p).as_deref(),
                *ips,
                size,
                state,
            ));
        }
        out
    }
}

fn lock(world: &Arc<Mutex<World>>) -> MutexGuard<'_, World> {
    // A panic while holding the lock cannot leave the emulator half-updated in a way tests
    // rely on; keep going with the data.
    world.lock().unwrap_or_else(|e| e.into_inner())
}

impl Emulator {
    /// An empty emulated network.
    pub fn new(config: EmulatorConfig) -> Self {
        let seed = config.seed;
        let start = u64::from(u32::from_be_bytes(config.range_start));
        let end = start + (1u64 << (32 - u32::from(config.range_prefix.min(32))));
        Emulator {
            world: Arc::new(Mutex::new(World {
                config,
                start,
                end,
                routers: BTreeMap::new(),
                fixed_count: 0,
                next_group: 1,
                next_uid: 0x9e37_79b9_7f4a_7c15,
                rmpeer_log: Vec::new(),
                forget_log: Vec::new(),
                merge_errors: Vec::new(),
                fading: BTreeMap::new(),
                rng: std::sync::atomic::AtomicU64::new(seed),
            })),
        }
    }

    fn w(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Registers a peer (not running yet). Fixed peers count toward the consensus N.
    pub fn add_peer(&self, spec: PeerSpec, role: Role) -> Result<(), FakeError> {
        let mut w = self.w();
        if w.routers.contains_key(&spec.name)
            || w.routers.values().any(|r| r.spec.nickname == spec.nickname)
        {
            return Err(FakeError::Exists(spec.nickname));
        }
        if role == Role::Fixed {
            w.fixed_count += 1;
        }
        let ring = Ring::new(w.start, w.end);
        w.routers.insert(
            spec.name,
            Router {
                spec,
                role,
                alive: false,
                group: 0,
                uid: 0,
                ring,
                published_own: BTreeMap::new(),
                allocated: BTreeSet::new(),
                idents: BTreeMap::new(),
                targets: Vec::new(),
                shutting_down: false,
                ready: true,
                waiting: 0,
                addr: None,
                stop: None,
                generation: 0,
                conflicted: false,
                started_at: std::time::SystemTime::now(),
            },
        );
        Ok(())
    }

    /// Starts a registered router with these launch targets (`$PEERS`): its HTTP API comes up
    /// and it joins the mesh. A router that ran before keeps its persisted ring (unless it was
    /// reset) and gets a new UID.
    pub async fn launch(&self, name: PeerName, targets: Vec<String>) -> Result<String, FakeError> {
        let prev = {
            let w = self.w();
            let r = w.router(name)?;
            if r.alive {
                return Err(FakeError::AlreadyRunning(name.to_string()));
            }
            r.addr
        };
        // A restarted router comes back on its previous address (its API URL is configured
        // elsewhere); the previous server may take a moment to release the port.
        let listener = match prev {
            Some(a) => {
                let mut tries = 0;
                loop {
                    match tokio::net::TcpListener::bind(a).await {
                        Ok(l) => break l,
                        Err(_) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => break tokio::net::TcpListener::bind("127.0.0.1:0").await?,
                    }
                }
            }
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.w();
            w.next_uid = w
                .next_uid
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let uid = w.next_uid | 1;
            let r = w
                .routers
                .get_mut(&name)
                .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?;
            if r.alive {
                return Err(FakeError::AlreadyRunning(name.to_string()));
            }
            r.alive = true;
            r.group = 0;
            r.uid = uid;
            r.targets = targets;
            r.addr = Some(addr);
            r.stop = Some(tx);
            r.waiting = 0;
            r.started_at = std::time::SystemTime::now();
            let world = Arc::clone(&self.world);
            w.reconnect_later(name, &world);
        }
        let app = http::app(self.clone(), name);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(format!("http://{addr}"))
    }

    /// Starts the fixture cluster of `tests/fixtures/CAPTURE.md`: fixed peers
    /// `00:00:00:00:00:0N(fixedN)` at `192.168.77.N` (N = 1..=3), each targeting all three,
    /// primed (ring created), and registers observers `dyn4`, `dyn5` (not running; launch them
    /// with [`Emulator::launch`] or `weave launch` through [`EmulatedHosts`]). Returns the
    /// fixed peers' specs and API URLs. For `fleetscale fake weave` and quick experiments.
    pub async fn start_fixture_cluster(&self) -> Result<Vec<(PeerSpec, String)>, FakeError> {
        let targets: Vec<String> = (1..=3).map(|n| format!("192.168.77.{n}")).collect();
        let mut out = Vec::new();
        for n in 1..=3u64 {
            let name =
                PeerName::from_u64(n).ok_or_else(|| FakeError::UnknownPeer(n.to_string()))?;
            let spec = PeerSpec::new(name, format!("fixed{n}"), format!("192.168.77.{n}"));
            let url = self.start_fixed(spec.clone(), targets.clone()).await?;
            out.push((spec, url));
        }
        {
            let world = Arc::clone(&self.world);
            let mut w = self.w();
            let first = out[0].0.name;
            w.ensure_ring(first, &world)?;
        }
        for n in 4..=5u64 {
            let name =
                PeerName::from_u64(n).ok_or_else(|| FakeError::UnknownPeer(n.to_string()))?;
            self.add_peer(
                PeerSpec::new(name, format!("dyn{n}"), format!("192.168.77.{n}")),
                Role::Observer,
            )?;
        }
        Ok(out)
    }

    /// Registers and launches a fixed peer with the given targets.
    pub async fn start_fixed(
        &self,
        spec: PeerSpec,
        targets: Vec<String>,
    ) -> Result<String, FakeError> {
        let name = spec.name;
        self.add_peer(spec, Role::Fixed)?;
        self.launch(name, targets).await
    }

    /// Starts the fixed peers `specs`, each targeting all of them (as `weave launch $PEERS`
    /// on each host does), and primes the ring through the first one's HTTP API
    /// (`weave prime`, which waits up to `prime_deadline`, e.g. for a reconnect delay to
    /// pass): a running cluster for dynamic peers to join. Returns the peers as the
    /// membership and the reclaimer take them.
    ///
    /// # Errors
    /// [`FakeError::Exists`] and the errors of [`Emulator::launch`]; [`FakeError::Prime`].
    pub async fn start_primed(
        &self,
        specs: Vec<PeerSpec>,
        prime_deadline: Duration,
    ) -> Result<Vec<crate::FixedPeer>, FakeError> {
        let targets: Vec<String> = specs.iter().map(|s| s.address.clone()).collect();
        let mut fixed = Vec::new();
        for spec in specs {
            let (name, address) = (spec.name, spec.address.clone());
            let url = self.start_fixed(spec, targets.clone()).await?;
            fixed.push(crate::FixedPeer::new(name, address, url));
        }
        if let Some(first) = fixed.first() {
            crate::RouterClient::new(&first.api_url)
                .map_err(FakeError::Prime)?
                .prime(prime_deadline)
                .await
                .map_err(FakeError::Prime)?;
        }
        Ok(fixed)
    }

    /// Registers and launches an observer with the given targets.
    pub async fn start_observer(
        &self,
        spec: PeerSpec,
        targets: Vec<String>,
    ) -> Result<String, FakeError> {
        let name = spec.name;
        self.add_peer(spec, Role::Observer)?;
        self.launch(name, targets).await
    }

    /// The address a registered router's HTTP API listens on from its next launch (default: a
    /// free port of `127.0.0.1`). A test gives each emulated host a loopback address of its
    /// own (Linux routes all of `127.0.0.0/8` to loopback) so that `http://HOST_IP:PORT`
    /// reaches the host's router as it would a real one. A launch that cannot bind it within
    /// about 2 s falls back to a free port of `127.0.0.1`.
    pub fn listen_on(&self, name: PeerName, addr: std::net::SocketAddr) -> Result<(), FakeError> {
        let mut w = self.w();
        let r = w
            .routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?;
        r.addr = Some(addr);
        Ok(())
    }

    /// The router's API base URL (`None` while it is not running).
    pub fn url(&self, name: PeerName) -> Option<String> {
        let w = self.w();
        let r = w.routers.get(&name)?;
        r.alive.then(|| r.addr.map(|a| format!("http://{a}")))?
    }

    /// The peer with this nickname.
    pub fn peer_by_nickname(&self, nickname: &str) -> Option<PeerSpec> {
        self.w()
            .routers
            .values()
            .find(|r| r.spec.nickname == nickname)
            .map(|r| r.spec.clone())
    }

    /// The peer with this host address.
    pub fn peer_by_address(&self, address: &str) -> Option<PeerSpec> {
        self.w()
            .routers
            .values()
            .find(|r| r.spec.address == address)
            .map(|r| r.spec.clone())
    }

    /// Whether the router is running.
    pub fn is_running(&self, name: PeerName) -> bool {
        self.w().routers.get(&name).is_some_and(|r| r.alive)
    }

    /// The host vanishes without notice: its HTTP server stops; the others lose it after the
    /// detection delay ([`EmulatorConfig::detection_delay`]).
    pub fn kill(&self, name: PeerName) -> Result<(), FakeError> {
        let mut w = self.w();
        w.router(name)?;
        w.cut(name, &[]);
        Self::down(&mut w, name)
    }

    fn down(w: &mut World, name: PeerName) -> Result<(), FakeError> {
        let r = w
            .routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?;
        r.alive = false;
        r.generation += 1;
        if let Some(tx) = r.stop.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// `weave stop`: the router stops and closes its connections (the others see it gone at
    /// once); its ownership is kept (persisted).
    pub fn stop(&self, name: PeerName) -> Result<(), FakeError> {
        let mut w = self.w();
        Self::down(&mut w, name)
    }

    /// Cuts the peer off from everyone else: it keeps running and answering its API (and
    /// allocating from its own ranges), but no other peer reaches it (and it reaches none),
    /// after the detection delay.
    pub fn partition(&self, name: PeerName) -> Result<(), FakeError> {
        self.partition_together(&[name])
    }

    /// Puts several peers in a partition of their own, together.
    pub fn partition_together(&self, names: &[PeerName]) -> Result<(), FakeError> {
        let mut w = self.w();
        for n in names {
            w.router(*n)?;
        }
        for n in names {
            w.cut(*n, names);
        }
        let g = w.next_group;
        w.next_group += 1;
        for n in names {
            if let Some(r) = w.routers.get_mut(n) {
                r.group = g;
                r.generation += 1;
            }
        }
        Ok(())
    }

    /// Ends a partition: the peer reconnects (after [`EmulatorConfig::reconnect_delay`]) and
    /// views are exchanged. When its ring conflicts with the mesh's (its space was taken by
    /// `rmpeer` while it was alive), the connections are dropped again, as Weave does, and it
    /// stays cut off ([`Emulator::conflicted`]).
    pub fn heal(&self, name: PeerName) -> Result<(), FakeError> {
        let world = Arc::clone(&self.world);
        let mut w = self.w();
        w.router(name)?;
        w.reconnect_later(name, &world);
        Ok(())
    }

    /// Whether the router's ring conflicts with the mesh's, so that it cannot rejoin.
    pub fn conflicted(&self, name: PeerName) -> bool {
        self.w().routers.get(&name).is_some_and(|r| r.conflicted)
    }

    /// Whether `viewer`'s topology lists `peer` right now (what its `/report` says).
    pub fn sees(&self, viewer: PeerName, peer: PeerName) -> bool {
        self.w().sees(viewer, peer)
    }

    /// Restarts a router that was killed or stopped, with its previous targets.
    pub async fn restart(&self, name: PeerName) -> Result<String, FakeError> {
        let targets = self.w().router(name)?.targets.clone();
        self.launch(name, targets).await
    }

    /// Makes `GET /status` answer 503 (not ready) or 200.
    pub fn set_ready(&self, name: PeerName, ready: bool) -> Result<(), FakeError> {
        let mut w = self.w();
        w.routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?
            .ready = ready;
        Ok(())
    }

    /// Allocates an address for `ident` on `name` now (the Rust-side `POST /ip/{id}`), or
    /// [`FakeError::WouldBlock`] when the HTTP call would block.
    pub fn allocate(&self, name: PeerName, ident: &str) -> Result<String, FakeError> {
        self.allocate_with_donor(name, ident, None)
    }

    /// Like [`Emulator::allocate`], asking `donor` for space if needed (Weave picks a donor at
    /// random, weighted by free space; this pins it so scenarios are reproducible).
    pub fn allocate_with_donor(
        &self,
        name: PeerName,
        ident: &str,
        donor: Option<PeerName>,
    ) -> Result<String, FakeError> {
        let world = Arc::clone(&self.world);
        let mut w = self.w();
        w.try_allocate(name, ident, donor, &world)
    }

    /// `POST /ip/{ident}/{ip}/{prefix}` on `name` now: an address inside that subnet, from the
    /// router's own free space only (what `weave attach net:<cidr>` does; used to show two
    /// live routers handing out the same address). [`FakeError::WouldBlock`] when it owns
    /// no free address there.
    pub fn allocate_in(
        &self,
        name: PeerName,
        ident: &str,
        subnet: [u8; 4],
        prefix: u8,
    ) -> Result<String, FakeError> {
        let mut w = self.w();
        let r = w.router(name)?;
        if !r.alive {
            return Err(FakeError::NotRunning(name.to_string()));
        }
        let lo = u64::from(u32::from_be_bytes(subnet));
        let hi = lo + (1u64 << (32 - u32::from(prefix.min(32))));
        let addr = free_chunks(&r.ring, name, &r.allocated)
            .into_iter()
            .flat_map(|(a, b)| a.max(lo)..b.min(hi))
            .find(|x| *x != lo && *x != hi - 1)
            .ok_or_else(|| {
                FakeError::WouldBlock(format!("no free address in the subnet on {name}"))
            })?;
        if let Some(r) = w.routers.get_mut(&name) {
            r.allocated.insert(addr);
            r.idents.insert(ident.to_string(), addr);
        }
        w.report_free(name);
        Ok(format!("{}/{prefix}", fmt_ip(addr)))
    }

    /// `DELETE /peer` on `name` (the router keeps running, as after the HTTP call alone).
    /// Returns the heir.
    pub fn reset(&self, name: PeerName) -> Result<Option<PeerName>, FakeError> {
        let world = Arc::clone(&self.world);
        let mut w = self.w();
        w.reset(name, &world)
    }

    /// `weave reset`: `DELETE /peer`, then the router stops and its persisted data is deleted.
    pub fn weave_reset(&self, name: PeerName) -> Result<Option<PeerName>, FakeError> {
        let heir = if self.is_running(name) {
            self.reset(name)?
        } else {
            None
        };
        self.stop(name)?;
        let mut w = self.w();
        let (start, end) = (w.start, w.end);
        if let Some(r) = w.routers.get_mut(&name) {
            r.ring = Ring::new(start, end);
            r.published_own.clear();
            r.allocated.clear();
            r.idents.clear();
            r.shutting_down = false;
        }
        Ok(heir)
    }

    /// `DELETE /peer/{id}` on `name`.
    pub fn rmpeer(&self, name: PeerName, id: &str) -> Result<u64, FakeError> {
        let world = Arc::clone(&self.world);
        let mut w = self.w();
        w.rmpeer(name, id, &world)
    }

    /// `GET /status/ipam` as `viewer` would answer.
    pub fn ipam_text(&self, viewer: PeerName) -> String {
        self.w().ipam_text(viewer)
    }

    /// How many addresses `peer` owns in `viewer`'s view of the ring.
    pub fn owned(&self, viewer: PeerName, peer: PeerName) -> u64 {
        self.w()
            .routers
            .get(&viewer)
            .map(|r| r.ring.owned_by(peer))
            .unwrap_or(0)
    }

    /// `GET /report` (JSON) as `viewer` would answer.
    pub fn report(&self, viewer: PeerName) -> serde_json::Value {
        http::report_value(self, viewer)
    }

    /// Every `POST /forget` served so far: (router, addresses).
    pub fn forget_log(&self) -> Vec<(PeerName, Vec<String>)> {
        self.w().forget_log.clone()
    }

    /// Every `DELETE /peer/{id}` served so far.
    pub fn rmpeer_log(&self) -> Vec<RmpeerRecord> {
        self.w().rmpeer_log.clone()
    }

    /// Ring conflicts routers hit while merging (Weave logs them and drops the connection).
    pub fn merge_errors(&self) -> Vec<String> {
        self.w().merge_errors.clone()
    }

    /// Addresses that two or more **live** routers have each handed out: duplicate IPs on
    /// live hosts, the harm a wrongful `rmpeer` does. Empty when all is well.
    pub fn duplicate_addresses(&self) -> Vec<(String, Vec<PeerName>)> {
        let w = self.w();
        let mut by_addr: BTreeMap<u64, Vec<PeerName>> = BTreeMap::new();
        for (name, r) in w.routers.iter().filter(|(_, r)| r.alive) {
            for a in &r.allocated {
                by_addr.entry(*a).or_default().push(*name);
            }
        }
        by_addr
            .into_iter()
            .filter(|(_, owners)| owners.len() > 1)
            .map(|(a, owners)| (fmt_ip(a), owners))
            .collect()
    }

    /// Ranges that two or more **live** routers each believe they own: the duplicate-IP
    /// hazard of concurrent `rmpeer`s. Empty when all is well.
    pub fn duplicate_ownership(&self) -> Vec<DuplicateOwnership> {
        let w = self.w();
        let mut claims: BTreeMap<u64, BTreeSet<PeerName>> = BTreeMap::new();
        for (name, r) in w.routers.iter().filter(|(_, r)| r.alive) {
            for (a, b) in r.ring.owned_ranges(*name) {
                // A claim covers [a, b); compare by overlap on every other claimant's ranges.
                for (other, o) in w.routers.iter().filter(|(n, r)| r.alive && *n != name) {
                    for (c, d) in o.ring.owned_ranges(*other) {
                        if a < d && c < b {
                            let token = a.max(c);
                            let e = claims.entry(token).or_default();
                            e.insert(*name);
                            e.insert(*other);
                        }
                    }
                }
            }
        }
        claims
            .into_iter()
            .map(|(t, owners)| DuplicateOwnership {
                token: fmt_ip(t),
                owners: owners.into_iter().collect(),
            })
            .collect()
    }
}
