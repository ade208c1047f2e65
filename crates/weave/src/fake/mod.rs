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
//!   unreachable), [`Emulator::partition`] (alive, its API still answers, unreachable from the
//!   fixed cluster), [`Emulator::heal`], [`Emulator::restart`] (same peer name, new UID,
//!   persisted ring kept unless it was reset).
//! - **Hazard detection**: [`Emulator::duplicate_ownership`] lists ranges that two live routers
//!   each believe they own, and [`Emulator::merge_errors`] the ring conflicts Weave would log
//!   and drop connections over.
//! - **Output formats** match the captured Weave Net 2.8 outputs byte for byte
//!   (`/status/ipam` trailing spaces, `06.2%`), checked by the crate's tests.

mod hosts;
mod http;
mod ring;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use hosts::EmulatedHosts;

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
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            range_start: [10, 32, 0, 0],
            range_prefix: 12,
            consensus: None,
            gossip_delay: Duration::ZERO,
            block_limit: Duration::from_secs(600),
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
    merge_errors: Vec<String>,
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
                for t in targets {
                    if w.knows(from, t) {
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
        // The first elector (sorted) runs ClaimForPeers and broadcasts the ring.
        let leader = electors[0];
        let mut ring = Ring::new(self.start, self.end);
        ring.claim_for_peers(&electors);
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
        self.knows(viewer, peer)
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
        for (p, ips) in per.iter().filter(|x| x.0 != viewer) {
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
                merge_errors: Vec::new(),
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
        let listener = match prev {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => l,
                Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            },
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
            w.sync_group(name);
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

    /// The host vanishes without notice: its HTTP server stops, the others lose it.
    pub fn kill(&self, name: PeerName) -> Result<(), FakeError> {
        let mut w = self.w();
        let r = w
            .routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?;
        r.alive = false;
        if let Some(tx) = r.stop.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// `weave stop`-like: same as [`Emulator::kill`] for the emulator (ownership is kept).
    pub fn stop(&self, name: PeerName) -> Result<(), FakeError> {
        self.kill(name)
    }

    /// Cuts the peer off from everyone else: it keeps running and answering its API, but no
    /// other peer reaches it (and it reaches none).
    pub fn partition(&self, name: PeerName) -> Result<(), FakeError> {
        let mut w = self.w();
        let g = w.next_group;
        w.next_group += 1;
        w.routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?
            .group = g;
        Ok(())
    }

    /// Puts several peers in a partition of their own, together.
    pub fn partition_together(&self, names: &[PeerName]) -> Result<(), FakeError> {
        let mut w = self.w();
        let g = w.next_group;
        w.next_group += 1;
        for n in names {
            w.routers
                .get_mut(n)
                .ok_or_else(|| FakeError::UnknownPeer(n.to_string()))?
                .group = g;
        }
        Ok(())
    }

    /// Ends a partition: the peer reconnects and views are exchanged.
    pub fn heal(&self, name: PeerName) -> Result<(), FakeError> {
        let mut w = self.w();
        w.routers
            .get_mut(&name)
            .ok_or_else(|| FakeError::UnknownPeer(name.to_string()))?
            .group = 0;
        w.sync_group(name);
        Ok(())
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
        self.kill(name)?;
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

    /// Every `DELETE /peer/{id}` served so far.
    pub fn rmpeer_log(&self) -> Vec<RmpeerRecord> {
        self.w().rmpeer_log.clone()
    }

    /// Ring conflicts routers hit while merging (Weave logs them and drops the connection).
    pub fn merge_errors(&self) -> Vec<String> {
        self.w().merge_errors.clone()
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
