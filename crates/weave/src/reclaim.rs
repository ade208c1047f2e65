//! The reclaimer: detects IP space owned by dynamic peers that vanished without `weave reset`
//! and takes it back with `rmpeer` — exactly once, on exactly one designated fixed peer.
//!
//! # When a peer is reclaimed (all must hold)
//! 1. It **owns space** in the designated peer's IPAM view.
//! 2. It is **unreachable from the fixed cluster**: absent from the mesh topology of *every*
//!    fixed peer that answers (a peer reachable from any fixed peer is alive).
//! 3. It is **not a fixed peer** (by peer name, from the configuration; down fixed peers too).
//! 4. It is **gone**: either the inventory ([`ReclaimConfig::inventory`], any
//!    [`fleetscale_core::Scaler`]) no longer lists a machine for its host (matched by nickname =
//!    machine name or id, or by its last known address), or it has been unreachable
//!    continuously, as observed by this process, for longer than the operator-set
//!    [`ReclaimConfig::grace`] (no default: off unless set). A peer whose host cannot be tied
//!    to the inventory (no nickname, no address) is never "gone" by inventory.
//! 5. The **designated** reclaimer peer ([`ReclaimConfig::designated`], a fixed peer) answers.
//!    If it does not, nothing is done and the refusal is reported and counted.
//! 6. It has been **unreachable long enough**: observed unreachable (rule 2) continuously, by
//!    this process, for at least [`ReclaimConfig::min_unreachable`] (default 60 s) — on every
//!    path, even when the inventory says its host is gone and even when the caller confirms it
//!    ([`Reclaimer::reclaim_peer`] with `gone_confirmed`, the engine's path). Until then it is
//!    refused with [`RefusalReason::TooRecentlyUnreachable`] and reclaimed on a later pass.
//!
//! Partitioned-but-alive peers look exactly like dead ones in IPAM (`weave-net.md` §2.1); rule
//! 4 is what keeps them safe: their machine is still in the inventory, and a grace, when set,
//! should be longer than any partition you tolerate.
//!
//! # The minimum unreachable time (rule 6)
//! Acting on the very first observation of unreachability is fragile: right after a host
//! disappears, gossip and the mesh have not settled. The chaos soak
//! (`crates/bench/tests/weave_soak.rs`, BENCHMARKS.md) found that a `weave reset` followed at
//! once by the host being killed can leave the departed peer's hand-off undelivered, so the
//! fixed peers still show it owning space; a flapping link makes a live peer drop out of the
//! topology for a moment. Waiting lets the hand-off arrive (the peer then owns nothing and
//! rule 1 stops the reclaim) and lets a flapping peer reappear (which restarts its clock).
//!
//! The default, **60 s**, is two of Weave's periodic gossip intervals and its dead-connection
//! timeout: mesh (the version Weave 2.8 vendors) re-gossips its whole state every 30 s
//! (`defaultGossipInterval = 30 * time.Second`, `mesh:router.go`; `weave-net.md` §6), which is
//! what repairs a lost broadcast such as an undelivered hand-off; it sends a heartbeat every
//! 30 s on each connection and drops a connection that has been silent for twice that
//! (`tcpHeartbeat = 30 * time.Second`, read deadline `tcpHeartbeat * 2`, `mesh:connection.go`);
//! and a failed connection is retried after 2 s, growing ×1.5 (`weave-net.md` §6), i.e. about
//! six reconnection attempts in 60 s. Choosing exactly two gossip intervals (rather than one or
//! three) is a judgement: long enough for two anti-entropy rounds, short enough that lost space
//! comes back within a couple of reclaimer passes.
//!
//! How the clock works, honestly:
//! - It is **per process** and in memory: it starts when this [`Reclaimer`] first observes the
//!   peer owning space and unreachable (a pass of [`Reclaimer::run_once`], or the fresh
//!   observation every reclaim attempt makes under the ledger lock). A restart of the process
//!   restarts every clock, which only delays reclaims (errs on the safe side).
//! - "Continuously" means at every observation this process made: an observation in which any
//!   answering fixed peer reaches the peer, or in which the peer owns nothing, clears its clock;
//!   an observation that fails (no fixed peer answers, or no IPAM view) clears every clock, since
//!   nothing proves the peer stayed unreachable meanwhile. A peer that came back and vanished
//!   again *between* two observations is not noticed: observations are samples, one per
//!   [`ReclaimConfig::interval`]. With the defaults (60 s interval, 60 s minimum) a peer needs
//!   two consecutive passes seeing it unreachable, 60 s apart.
//! - [`ReclaimConfig::grace`] (reclaim by time alone, without the inventory) is the weaker
//!   signal, so it must not be shorter than the minimum: [`Reclaimer::new`] rejects
//!   `grace < min_unreachable`.
//! - `min_unreachable = 0` reclaims at the first observation (the behaviour before this
//!   setting existed); meant for tests and emulators whose gossip is instant.
//!
//! # Exactly once
//! - **Write-ahead ledger** ([`crate::ledger`]): under an exclusive file lock, the `intent` line
//!   is written and `fsync`ed **before** `DELETE /peer/{name}` is sent, then `done` after it
//!   answers, then `verified` once the designated peer's IPAM no longer lists the peer. Two
//!   reclaimer processes sharing the ledger serialise on the lock; the second sees `done` and
//!   does nothing.
//! - **Recovery** of an `intent` without `done` (a crash or timeout between writing the intent
//!   and recording the answer) never blindly repeats: IPAM is re-read on the designated peer;
//!   if the peer owns nothing any more, the space already moved and `done` is recorded. If it
//!   still owns space, `rmpeer` is repeated **only on the same designated peer** recorded in
//!   the intent. This is safe because `rmpeer` on the same peer is idempotent: that peer
//!   already holds any entries the first call transferred (at version + 100), so a second call
//!   finds nothing left to take: the captured fixture shows `0 IPs taken over from dyn5` for a
//!   repeat (`tests/fixtures/CAPTURE.md`, step 4) — the hazard is only two *different* peers
//!   each taking the same entries (`weave-net.md` §4.5). If the configured designated peer has
//!   changed since the intent, the reclaimer refuses ([`RefusalReason::IntentOnOtherPeer`])
//!   and an operator must decide.
//! - By peer **name** only (`DELETE /peer/00%3A00%3A...`), never by nickname.
//! - Afterwards, `POST /forget` of the peer's last known address on every answering fixed peer.
//!
//! # Residual risk (honest)
//! Two reclaimers on **different ledgers** (different machines) are not serialised by the lock.
//! They are still safe as long as they are configured with the **same designated peer**: both
//! `rmpeer`s then run on that one router, and the second takes over nothing (see above), so
//! no two routers ever claim the same range. The risks that remain are configuration errors:
//! two reclaimers with *different* designated peers, or an operator's manual `weave rmpeer` on
//! another peer at the same time, can produce duplicate ownership. And a peer that comes back
//! with its old data after being reclaimed (a restarted VM that was only powered off) clashes
//! with the new owner; the reclaimer detects it ([`RefusalReason::ReclaimedButOwnsAgain`]) but
//! cannot prevent it — such hosts must `weave reset` (delete their DB) before rejoining.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetscale_core::{Machine, ReclaimOutcome, Scaler};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, LedgerEntry, LedgerState};
use crate::report::{IpamReport, Report};
use crate::{PeerName, RouterClient, WeaveError};

/// Why a peer was not reclaimed. Counted in [`ReclaimMetrics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The peer is a fixed peer.
    Fixed,
    /// A fixed peer still reaches it (alive, maybe partitioned from others).
    Reachable,
    /// It owns no IP space: nothing to reclaim.
    OwnsNothing,
    /// The inventory still has its host, and no grace elapsed.
    NotGone,
    /// The inventory could not be read, and no grace elapsed.
    InventoryUnavailable,
    /// The designated reclaimer peer did not answer.
    DesignatedUnreachable,
    /// No fixed peer answered.
    NoFixedPeerReachable,
    /// Another reclaimer holds the ledger lock.
    LockHeld,
    /// An unfinished intent names another designated peer than the configured one.
    IntentOnOtherPeer,
    /// The ledger says it was reclaimed, yet it owns space again (it came back with old data).
    ReclaimedButOwnsAgain,
    /// It has been observed unreachable for less than [`ReclaimConfig::min_unreachable`]
    /// (by this process): it is reclaimed on a later pass if it stays unreachable.
    TooRecentlyUnreachable,
    /// The peer is unknown to the cluster.
    Unknown,
}

impl RefusalReason {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Fixed => "fixed",
            RefusalReason::Reachable => "reachable",
            RefusalReason::OwnsNothing => "owns_nothing",
            RefusalReason::NotGone => "not_gone",
            RefusalReason::InventoryUnavailable => "inventory_unavailable",
            RefusalReason::DesignatedUnreachable => "designated_unreachable",
            RefusalReason::NoFixedPeerReachable => "no_fixed_peer_reachable",
            RefusalReason::LockHeld => "lock_held",
            RefusalReason::IntentOnOtherPeer => "intent_on_other_peer",
            RefusalReason::ReclaimedButOwnsAgain => "reclaimed_but_owns_again",
            RefusalReason::TooRecentlyUnreachable => "too_recently_unreachable",
            RefusalReason::Unknown => "unknown",
        }
    }
}

/// One fixed peer: its peer name (the identity that must never be reclaimed), the address in
/// `$PEERS`, and its router API URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPeer {
    /// Peer name (`weave status` shows it as `Name:`).
    pub name: PeerName,
    /// Address given to `weave launch` (`$PEERS`).
    pub address: String,
    /// Router API base URL (e.g. `http://10.0.0.1:6784` when the API listens there, or a
    /// tunnel to its `127.0.0.1:6784`).
    pub api_url: String,
}

impl FixedPeer {
    /// A fixed peer.
    pub fn new(name: PeerName, address: impl Into<String>, api_url: impl Into<String>) -> Self {
        FixedPeer {
            name,
            address: address.into(),
            api_url: api_url.into(),
        }
    }
}

/// Reclaimer settings.
#[derive(Clone)]
pub struct ReclaimConfig {
    /// The fixed cluster.
    pub fixed: Vec<FixedPeer>,
    /// The single designated reclaimer peer (one of `fixed`). Every reclaimer of a cluster
    /// must be configured with the same one.
    pub designated: PeerName,
    /// The ledger file (local filesystem).
    pub ledger_path: PathBuf,
    /// The inventory: a peer whose host it no longer lists is gone.
    pub inventory: Option<Arc<dyn Scaler>>,
    /// Reclaim a peer unreachable for longer than this even if the inventory still lists it
    /// (or there is none). `None` (the default): never by time alone. Must be at least
    /// [`min_unreachable`](Self::min_unreachable) ([`Reclaimer::new`] rejects it otherwise).
    pub grace: Option<Duration>,
    /// Minimum time a peer must have been observed continuously unreachable (from every
    /// answering fixed peer, by this process) before it is reclaimed, on every path, even when
    /// the inventory says its host is gone (default 60 s: two of Weave's 30 s gossip intervals;
    /// see the module docs). The clock is in memory: a restart restarts it. `Duration::ZERO`
    /// reclaims at the first observation.
    pub min_unreachable: Duration,
    /// Time between passes of [`Reclaimer::run`] (default 60 s).
    pub interval: Duration,
    /// How long to wait for the space to be seen moved after `rmpeer` (default 30 s).
    pub verify_timeout: Duration,
    /// How long to wait for the ledger lock (default 60 s).
    pub lock_wait: Duration,
    /// Per-call router timeout (default 10 s).
    pub http_timeout: Duration,
}

impl std::fmt::Debug for ReclaimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReclaimConfig")
            .field("fixed", &self.fixed)
            .field("designated", &self.designated)
            .field("ledger_path", &self.ledger_path)
            .field("inventory", &self.inventory.as_ref().map(|_| "<scaler>"))
            .field("grace", &self.grace)
            .field("min_unreachable", &self.min_unreachable)
            .field("interval", &self.interval)
            .field("verify_timeout", &self.verify_timeout)
            .field("lock_wait", &self.lock_wait)
            .field("http_timeout", &self.http_timeout)
            .finish()
    }
}

impl ReclaimConfig {
    /// Settings with the defaults: no inventory, no grace (so nothing is reclaimed until one
    /// of them is set), 60 s minimum unreachable time, 60 s interval, 30 s verification, 60 s
    /// lock wait, 10 s calls.
    pub fn new(
        fixed: Vec<FixedPeer>,
        designated: PeerName,
        ledger_path: impl Into<PathBuf>,
    ) -> Self {
        ReclaimConfig {
            fixed,
            designated,
            ledger_path: ledger_path.into(),
            inventory: None,
            grace: None,
            min_unreachable: DEFAULT_MIN_UNREACHABLE,
            interval: Duration::from_secs(60),
            verify_timeout: Duration::from_secs(30),
            lock_wait: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the inventory.
    pub fn with_inventory(mut self, inventory: Arc<dyn Scaler>) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// Sets the grace.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Sets the minimum unreachable time.
    pub fn with_min_unreachable(mut self, min_unreachable: Duration) -> Self {
        self.min_unreachable = min_unreachable;
        self
    }
}

/// The default [`ReclaimConfig::min_unreachable`]: 60 s, two of mesh's 30 s gossip intervals
/// (see the module docs).
pub const DEFAULT_MIN_UNREACHABLE: Duration = Duration::from_secs(60);

/// Counters and gauges of the reclaimer (the caller exports them).
#[derive(Debug, Default)]
pub struct ReclaimMetrics {
    unreachable_peers: AtomicU64,
    unreachable_ips: AtomicU64,
    unreachable_pct_bits: AtomicU64,
    reclaims: AtomicU64,
    reclaimed_ips: AtomicU64,
    passes: AtomicU64,
    errors: AtomicU64,
    refusals: Mutex<BTreeMap<RefusalReason, u64>>,
}

/// A copy of [`ReclaimMetrics`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReclaimMetricsSnapshot {
    /// Gauge: peers owning space that no fixed peer reaches (last pass).
    pub unreachable_peers: u64,
    /// Gauge: addresses they own.
    pub unreachable_ips: u64,
    /// Gauge: their share of the range, in percent (Weave's
    /// `weave_ipam_unreachable_percentage`; the docs suggest alerting above 25).
    pub unreachable_percentage: f64,
    /// Counter: successful `rmpeer`s.
    pub reclaims: u64,
    /// Counter: addresses taken over.
    pub reclaimed_ips: u64,
    /// Counter: passes run.
    pub passes: u64,
    /// Counter: passes or reclaims that failed.
    pub errors: u64,
    /// Counter per refusal reason.
    pub refusals: BTreeMap<RefusalReason, u64>,
}

impl ReclaimMetrics {
    fn refuse(&self, r: RefusalReason) {
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(r).or_default() += 1;
        }
    }

    /// A snapshot.
    pub fn snapshot(&self) -> ReclaimMetricsSnapshot {
        ReclaimMetricsSnapshot {
            unreachable_peers: self.unreachable_peers.load(Ordering::Relaxed),
            unreachable_ips: self.unreachable_ips.load(Ordering::Relaxed),
            unreachable_percentage: f64::from_bits(
                self.unreachable_pct_bits.load(Ordering::Relaxed),
            ),
            reclaims: self.reclaims.load(Ordering::Relaxed),
            reclaimed_ips: self.reclaimed_ips.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            refusals: self.refusals.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }
}

/// What one pass saw and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassReport {
    /// Peers owning space that no fixed peer reaches: (name, nickname, IPs).
    pub unreachable: Vec<(PeerName, String, u64)>,
    /// Reclaimed this pass: (name, IPs taken over).
    pub reclaimed: Vec<(PeerName, u64)>,
    /// Not reclaimed: (name, reason, detail).
    pub refused: Vec<(PeerName, RefusalReason, String)>,
    /// Failures.
    pub errors: Vec<String>,
}

/// What the fixed cluster looks like right now.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Fixed peers that answered, by name.
    pub reachable_fixed: Vec<PeerName>,
    /// Every peer name in the topology of any answering fixed peer.
    pub alive: HashSet<String>,
    /// The IPAM view of the designated peer (or, when it did not answer, of the first fixed
    /// peer that did; then nothing is acted on).
    pub ipam: Option<IpamReport>,
    /// Whether the designated peer answered.
    pub designated_reachable: bool,
    /// Addresses learned from the fixed peers' connections, by peer name.
    pub addresses: HashMap<String, String>,
}

#[derive(Default)]
struct Memory {
    unreachable: UnreachableClock,
    addresses: HashMap<String, String>,
}

/// Since when each peer has been observed continuously unreachable (owning space, absent from
/// every answering fixed peer's topology), by this process.
#[derive(Debug, Default)]
struct UnreachableClock {
    since: HashMap<PeerName, Instant>,
}

impl UnreachableClock {
    /// One successful observation at `now`: `unreachable` are the peers seen owning space and
    /// unreachable. Their clocks start (if not running); every other clock stops.
    fn observed(&mut self, unreachable: &HashSet<PeerName>, now: Instant) {
        self.since.retain(|p, _| unreachable.contains(p));
        for p in unreachable {
            self.since.entry(*p).or_insert(now);
        }
    }

    /// An observation failed: nothing shows the peers stayed unreachable, so every clock stops.
    fn lost_sight(&mut self) {
        self.since.clear();
    }

    /// How long `peer` has been unreachable at `now`; `None` when it is not (yet) observed so.
    fn unreachable_for(&self, peer: PeerName, now: Instant) -> Option<Duration> {
        self.since
            .get(&peer)
            .map(|since| now.saturating_duration_since(*since))
    }
}

/// The peers an observation shows owning space and reachable from no answering fixed peer;
/// `None` when it has no IPAM view.
fn unreachable_owners(obs: &Observation) -> Option<HashSet<PeerName>> {
    let ipam = obs.ipam.as_ref()?;
    Some(
        ipam.owners()
            .into_iter()
            .filter(|o| o.ips > 0 && !obs.alive.contains(&o.peer))
            .filter_map(|o| o.peer.parse::<PeerName>().ok())
            .collect(),
    )
}

/// The reclaimer. See the module docs for the rules. Cheap to share (`Arc`).
pub struct Reclaimer {
    config: ReclaimConfig,
    clients: Vec<(FixedPeer, RouterClient)>,
    designated: RouterClient,
    ledger: Ledger,
    metrics: Arc<ReclaimMetrics>,
    memory: Mutex<Memory>,
}

impl std::fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reclaimer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn refused(kind: RefusalReason, reason: impl Into<String>) -> WeaveError {
    WeaveError::refused(kind, reason)
}

/// A duration for messages, to the millisecond (`60s`, `1.2s`, `200ms`).
fn humanize(d: Duration) -> String {
    format!(
        "{:?}",
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    )
}

fn strip_port(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => addr.to_string(),
    }
}

impl Reclaimer {
    /// A reclaimer.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when there are no fixed peers, the designated peer is not one of
    /// them, names repeat, an API URL is invalid, or [`ReclaimConfig::grace`] is shorter than
    /// [`ReclaimConfig::min_unreachable`] (the time-only path would then be refused anyway
    /// until the minimum passed; rejecting it says so instead of silently waiting longer).
    pub fn new(config: ReclaimConfig) -> Result<Self, WeaveError> {
        if config.fixed.is_empty() {
            return Err(WeaveError::config("the reclaimer needs the fixed peers"));
        }
        if let Some(grace) = config.grace {
            if grace < config.min_unreachable {
                return Err(WeaveError::config(format!(
                    "the grace ({}) is shorter than the minimum unreachable time ({}): a peer is \
                     never reclaimed before the minimum, so set the grace to at least the \
                     minimum (or lower the minimum)",
                    humanize(grace),
                    humanize(config.min_unreachable)
                )));
            }
        }
        let mut clients = Vec::new();
        for (i, f) in config.fixed.iter().enumerate() {
            if config.fixed[..i].iter().any(|g| g.name == f.name) {
                return Err(WeaveError::config(format!(
                    "fixed peer {} listed twice",
                    f.name
                )));
            }
            clients.push((
                f.clone(),
                RouterClient::new(&f.api_url)?.with_timeout(config.http_timeout),
            ));
        }
        let designated = clients
            .iter()
            .find(|(f, _)| f.name == config.designated)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                WeaveError::config(format!(
                    "designated reclaimer {} is not a fixed peer",
                    config.designated
                ))
            })?;
        Ok(Reclaimer {
            ledger: Ledger::new(config.ledger_path.clone()),
            config,
            clients,
            designated,
            metrics: Arc::default(),
            memory: Mutex::default(),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<ReclaimMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The configuration.
    pub fn config(&self) -> &ReclaimConfig {
        &self.config
    }

    /// Whether `name` is a configured fixed peer.
    pub fn is_fixed(&self, name: PeerName) -> bool {
        self.config.fixed.iter().any(|f| f.name == name)
    }

    /// Reads every fixed peer's `/report` (concurrently) and combines them. Every observation
    /// also advances the unreachable clocks ([`ReclaimConfig::min_unreachable`]): peers it
    /// shows owning space and unreachable keep (or start) their clock, all others lose it; a
    /// failed observation, or one without an IPAM view, stops every clock.
    ///
    /// # Errors
    /// [`WeaveError::Refused`] ([`RefusalReason::NoFixedPeerReachable`]) when none answers;
    /// [`WeaveError::Config`] when an answering router's name is not the configured one (a
    /// wrong URL must never make a fixed peer look unreachable).
    pub async fn observe(&self) -> Result<Observation, WeaveError> {
        let r = self.observe_fixed().await;
        let now = Instant::now();
        if let Ok(mut m) = self.memory.lock() {
            match r.as_ref().ok().and_then(unreachable_owners) {
                Some(set) => m.unreachable.observed(&set, now),
                None => m.unreachable.lost_sight(),
            }
        }
        r
    }

    async fn observe_fixed(&self) -> Result<Observation, WeaveError> {
        let reports: Vec<Result<Report, WeaveError>> =
            futures::future::join_all(self.clients.iter().map(|(_, c)| c.report())).await;
        let mut obs = Observation {
            reachable_fixed: Vec::new(),
            alive: HashSet::new(),
            ipam: None,
            designated_reachable: false,
            addresses: HashMap::new(),
        };
        let mut fallback_ipam = None;
        for ((fixed, _), r) in self.clients.iter().zip(reports) {
            let report = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(peer = %fixed.name, error = %e, "fixed peer did not answer");
                    continue;
                }
            };
            let router = report.router.as_ref();
            let name = router.map(|r| r.name.as_str()).unwrap_or("");
            if name.parse::<PeerName>().ok() != Some(fixed.name) {
                return Err(WeaveError::config(format!(
                    "router at {} says it is {name:?}, configured as fixed peer {}",
                    fixed.api_url, fixed.name
                )));
            }
            obs.reachable_fixed.push(fixed.name);
            if let Some(router) = router {
                for p in &router.peers {
                    obs.alive.insert(p.name.clone());
                    for c in &p.connections {
                        if !c.address.is_empty() {
                            // The address a peer dials from or listens at; the IP is its host.
                            let owner = if p.name == router.name {
                                &c.name
                            } else {
                                continue;
                            };
                            obs.addresses.insert(owner.clone(), strip_port(&c.address));
                        }
                    }
                }
            }
            if fixed.name == self.config.designated {
                obs.designated_reachable = true;
                obs.ipam = report.ipam.clone();
            } else if fallback_ipam.is_none() {
                fallback_ipam = report.ipam.clone();
            }
        }
        if obs.reachable_fixed.is_empty() {
            return Err(refused(
                RefusalReason::NoFixedPeerReachable,
                "no fixed peer answered",
            ));
        }
        if obs.ipam.is_none() {
            obs.ipam = fallback_ipam;
        }
        if let Ok(mut m) = self.memory.lock() {
            for (k, v) in &obs.addresses {
                m.addresses.insert(k.clone(), v.clone());
            }
        }
        Ok(obs)
    }

    fn remembered_address(&self, peer: PeerName) -> Option<String> {
        self.memory
            .lock()
            .ok()
            .and_then(|m| m.addresses.get(&peer.to_string()).cloned())
    }

    async fn inventory(&self) -> Option<Result<Vec<Machine>, String>> {
        let inv = self.config.inventory.as_ref()?;
        Some(inv.list().await.map_err(|e| e.to_string()))
    }

    /// The safety checks for one peer. `Ok(())` means it may be reclaimed now.
    fn check(
        &self,
        obs: &Observation,
        peer: PeerName,
        nickname: Option<&str>,
        gone_confirmed: bool,
        inventory: &Option<Result<Vec<Machine>, String>>,
    ) -> Result<(), (RefusalReason, String)> {
        if self.is_fixed(peer) {
            return Err((RefusalReason::Fixed, format!("{peer} is a fixed peer")));
        }
        let name = peer.to_string();
        let owned = obs.ipam.as_ref().map(|i| i.owned_by(&name)).unwrap_or(0);
        if owned == 0 {
            return Err((
                RefusalReason::OwnsNothing,
                format!("{peer} owns no IP space"),
            ));
        }
        if obs.alive.contains(&name) {
            return Err((
                RefusalReason::Reachable,
                format!("{peer} is reachable from the fixed cluster"),
            ));
        }
        if !obs.designated_reachable {
            return Err((
                RefusalReason::DesignatedUnreachable,
                format!(
                    "designated reclaimer {} did not answer",
                    self.config.designated
                ),
            ));
        }
        let unreachable_for = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.unreachable.unreachable_for(peer, Instant::now()));
        self.gone(peer, nickname, gone_confirmed, inventory, unreachable_for)?;
        let min = self.config.min_unreachable;
        match unreachable_for {
            Some(d) if d >= min => Ok(()),
            _ if min.is_zero() => Ok(()),
            d => Err((
                RefusalReason::TooRecentlyUnreachable,
                format!(
                    "{peer} has been unreachable for {} (observed by this process), less than \
                     the minimum of {}",
                    humanize(d.unwrap_or_default()),
                    humanize(min)
                ),
            )),
        }
    }

    /// Rule 4: whether the peer's host is gone (confirmed by the caller, absent from the
    /// inventory, or unreachable for longer than the grace).
    fn gone(
        &self,
        peer: PeerName,
        nickname: Option<&str>,
        gone_confirmed: bool,
        inventory: &Option<Result<Vec<Machine>, String>>,
        unreachable_for: Option<Duration>,
    ) -> Result<(), (RefusalReason, String)> {
        if gone_confirmed {
            return Ok(());
        }
        let grace_elapsed = match (self.config.grace, unreachable_for) {
            (Some(g), Some(d)) => d > g,
            _ => false,
        };
        if grace_elapsed {
            return Ok(());
        }
        match inventory {
            None => Err((
                RefusalReason::NotGone,
                format!("{peer}: no inventory configured and no grace elapsed"),
            )),
            Some(Err(e)) => Err((RefusalReason::InventoryUnavailable, e.clone())),
            Some(Ok(machines)) => {
                let address = self.remembered_address(peer);
                if nickname.is_none() && address.is_none() {
                    return Err((
                        RefusalReason::NotGone,
                        format!("{peer}: neither nickname nor address ties it to a host"),
                    ));
                }
                let present = machines.iter().filter(|m| m.state.exists()).find(|m| {
                    nickname.is_some_and(|n| n == m.name || n == m.id.as_str())
                        || (address.is_some() && m.address.as_deref().map(strip_port) == address)
                });
                match present {
                    Some(m) => Err((
                        RefusalReason::NotGone,
                        format!(
                            "{peer}: its host is still in the inventory as machine {}",
                            m.id
                        ),
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// One pass: observe, update metrics, reclaim every peer that passes all checks.
    pub async fn run_once(&self) -> PassReport {
        let mut report = PassReport::default();
        self.metrics.passes.fetch_add(1, Ordering::Relaxed);
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                if let WeaveError::Refused { kind, .. } = &e {
                    self.metrics.refuse(*kind);
                } else {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                }
                report.errors.push(e.to_string());
                return report;
            }
        };
        let Some(ipam) = obs.ipam.clone() else {
            report.errors.push("no IPAM on the fixed peers".into());
            return report;
        };
        let mut unreachable_ips = 0;
        let mut candidates = Vec::new();
        for o in ipam.owners() {
            if o.ips == 0 || obs.alive.contains(&o.peer) {
                continue;
            }
            let Ok(peer) = o.peer.parse::<PeerName>() else {
                report
                    .errors
                    .push(format!("bad peer name {:?} in IPAM", o.peer));
                continue;
            };
            unreachable_ips += o.ips;
            report.unreachable.push((peer, o.nickname.clone(), o.ips));
            candidates.push((peer, o.nickname));
        }
        let m = &self.metrics;
        m.unreachable_peers
            .store(report.unreachable.len() as u64, Ordering::Relaxed);
        m.unreachable_ips.store(unreachable_ips, Ordering::Relaxed);
        let pct = if ipam.range_num_ips > 0 {
            unreachable_ips as f64 * 100.0 / ipam.range_num_ips as f64
        } else {
            0.0
        };
        m.unreachable_pct_bits
            .store(pct.to_bits(), Ordering::Relaxed);

        let inventory = if candidates.iter().any(|(p, _)| !self.is_fixed(*p)) {
            self.inventory().await
        } else {
            None
        };
        for (peer, nickname) in candidates {
            let nick = (!nickname.is_empty()).then_some(nickname.as_str());
            if let Err((kind, why)) = self.check(&obs, peer, nick, false, &inventory) {
                tracing::info!(%peer, reason = kind.as_str(), "not reclaiming: {why}");
                m.refuse(kind);
                report.refused.push((peer, kind, why));
                continue;
            }
            match self.reclaim_locked(peer, nick, false, &inventory).await {
                Ok(o) if !o.already_reclaimed => report.reclaimed.push((peer, o.reclaimed)),
                Ok(_) => {}
                Err(WeaveError::Refused { kind, reason }) => {
                    m.refuse(kind);
                    report.refused.push((peer, kind, reason));
                }
                Err(WeaveError::Locked { path }) => {
                    m.refuse(RefusalReason::LockHeld);
                    report.refused.push((
                        peer,
                        RefusalReason::LockHeld,
                        format!("{path} is locked"),
                    ));
                }
                Err(e) => {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    report.errors.push(format!("{peer}: {e}"));
                }
            }
        }
        report
    }

    /// Runs passes every [`ReclaimConfig::interval`] until `shutdown` is cancelled; the first
    /// pass runs at once. A pass in progress finishes its current step before stopping (the
    /// ledger keeps what it did).
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let report = self.run_once().await;
            for (p, n) in &report.reclaimed {
                tracing::warn!(peer = %p, ips = n, "reclaimed IP space of a vanished peer");
            }
            for e in &report.errors {
                tracing::warn!("reclaim pass: {e}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// Reclaims one peer, with every check. `gone_confirmed`: the caller asserts the peer's
    /// machine is gone (the engine does, per the `ClusterMembership::reclaim` contract); the
    /// other checks (fixed, reachable, owns space, designated peer answers, ledger) still apply.
    ///
    /// # Errors
    /// [`WeaveError::Refused`] when a rule forbids it, [`WeaveError::Locked`] when another
    /// reclaimer holds the ledger past [`ReclaimConfig::lock_wait`], router and ledger errors,
    /// and [`WeaveError::StillOwned`] when the space was not seen moving in time (the ledger
    /// then says `done`; it is never repeated).
    pub async fn reclaim_peer(
        &self,
        peer: PeerName,
        gone_confirmed: bool,
    ) -> Result<ReclaimOutcome, WeaveError> {
        let inventory = if gone_confirmed {
            None
        } else {
            self.inventory().await
        };
        let r = self
            .reclaim_locked(peer, None, gone_confirmed, &inventory)
            .await;
        match &r {
            Err(WeaveError::Refused { kind, .. }) => self.metrics.refuse(*kind),
            Err(WeaveError::Locked { .. }) => self.metrics.refuse(RefusalReason::LockHeld),
            Err(_) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
        r
    }

    async fn reclaim_locked(
        &self,
        peer: PeerName,
        nickname: Option<&str>,
        gone_confirmed: bool,
        inventory: &Option<Result<Vec<Machine>, String>>,
    ) -> Result<ReclaimOutcome, WeaveError> {
        if self.is_fixed(peer) {
            return Err(refused(
                RefusalReason::Fixed,
                format!("{peer} is a fixed peer"),
            ));
        }
        let guard = self.ledger.lock(self.config.lock_wait).await?;
        // Everything below is decided on fresh data, under the lock.
        let obs = self.observe().await?;
        let name = peer.to_string();
        let owned_now = obs.ipam.as_ref().map(|i| i.owned_by(&name)).unwrap_or(0);
        let designated = self.config.designated;
        let nickname = nickname.map(str::to_string).or_else(|| {
            obs.ipam.as_ref().and_then(|i| {
                i.entries
                    .iter()
                    .find(|e| e.peer == name && !e.nickname.is_empty())
                    .map(|e| e.nickname.clone())
            })
        });
        let by = designated.to_string();
        match guard.states()?.get(&peer) {
            Some(e) if e.state != LedgerState::Intent => {
                if obs.designated_reachable && owned_now > 0 {
                    return Err(refused(
                        RefusalReason::ReclaimedButOwnsAgain,
                        format!(
                            "{peer} was reclaimed (ledger: {:?}) but owns {owned_now} IPs again: \
                             it came back with old data; `weave reset` it",
                            e.state
                        ),
                    ));
                }
                if e.state == LedgerState::Done && obs.designated_reachable {
                    let mut v = LedgerEntry::new(peer, LedgerState::Verified, e.designated);
                    v.note = Some("verified on a later pass".into());
                    guard.append(&v)?;
                }
                return Ok(ReclaimOutcome {
                    reclaimed: 0,
                    by: e.designated.to_string(),
                    already_reclaimed: true,
                });
            }
            Some(intent) => {
                // Crash recovery: never blindly repeat.
                if !obs.designated_reachable {
                    return Err(refused(
                        RefusalReason::DesignatedUnreachable,
                        format!(
                            "unfinished reclaim of {peer}: designated {designated} did not answer"
                        ),
                    ));
                }
                if owned_now == 0 {
                    let mut d = LedgerEntry::new(peer, LedgerState::Done, intent.designated);
                    d.note = Some("recovered: the space had already moved".into());
                    guard.append(&d)?;
                    guard.append(&LedgerEntry::new(
                        peer,
                        LedgerState::Verified,
                        intent.designated,
                    ))?;
                    return Ok(ReclaimOutcome {
                        reclaimed: 0,
                        by: intent.designated.to_string(),
                        already_reclaimed: true,
                    });
                }
                if intent.designated != designated {
                    return Err(refused(
                        RefusalReason::IntentOnOtherPeer,
                        format!(
                            "unfinished reclaim of {peer} was on {}, now designated {designated}: \
                             repeating it on another peer could duplicate ownership",
                            intent.designated
                        ),
                    ));
                }
                self.check(&obs, peer, nickname.as_deref(), true, inventory)
                    .map_err(|(k, w)| refused(k, w))?;
                tracing::warn!(%peer, "repeating an unfinished rmpeer on the same designated peer");
            }
            None => {
                self.check(&obs, peer, nickname.as_deref(), gone_confirmed, inventory)
                    .map_err(|(k, w)| refused(k, w))?;
            }
        }

        let address = obs
            .addresses
            .get(&name)
            .cloned()
            .or_else(|| self.remembered_address(peer));
        let mut intent = LedgerEntry::new(peer, LedgerState::Intent, designated);
        intent.nickname = nickname.clone();
        intent.ips = owned_now;
        intent.address = address.clone();
        guard.append(&intent)?;

        let outcome = self.designated.rmpeer(&peer).await?;
        let mut done = LedgerEntry::new(peer, LedgerState::Done, designated);
        done.ips = outcome.taken_over;
        done.address = address.clone();
        guard.append(&done)?;
        self.metrics.reclaims.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .reclaimed_ips
            .fetch_add(outcome.taken_over, Ordering::Relaxed);
        tracing::warn!(%peer, nickname = ?nickname, ips = outcome.taken_over, designated = %designated, "rmpeer done");

        self.verify(peer).await?;
        guard.append(&LedgerEntry::new(peer, LedgerState::Verified, designated))?;
        drop(guard);

        if let Some(addr) = address {
            for fixed in &obs.reachable_fixed {
                if let Some((_, c)) = self.clients.iter().find(|(f, _)| f.name == *fixed) {
                    if let Err(e) = c.forget(std::slice::from_ref(&addr)).await {
                        tracing::warn!(%peer, fixed = %fixed, error = %e, "forget failed");
                    }
                }
            }
        }
        Ok(ReclaimOutcome {
            reclaimed: outcome.taken_over,
            by,
            already_reclaimed: false,
        })
    }

    /// Polls the designated peer until `peer` owns nothing in its IPAM view.
    async fn verify(&self, peer: PeerName) -> Result<(), WeaveError> {
        let started = Instant::now();
        let name = peer.to_string();
        loop {
            let owned = match self.designated.report().await {
                Ok(r) => r.ipam.map(|i| i.owned_by(&name)).unwrap_or(0),
                Err(e) => {
                    tracing::debug!(error = %e, "verify: designated peer did not answer");
                    u64::MAX
                }
            };
            if owned == 0 {
                return Ok(());
            }
            if started.elapsed() >= self.config.verify_timeout {
                return Err(WeaveError::StillOwned {
                    peer: name,
                    owned: if owned == u64::MAX { 0 } else { owned },
                    after: self.config.verify_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pn(n: u64) -> PeerName {
        PeerName::from_u64(n).unwrap()
    }

    fn config() -> ReclaimConfig {
        ReclaimConfig::new(
            vec![FixedPeer::new(pn(1), "10.0.0.1", "http://127.0.0.1:9")],
            pn(1),
            "/nonexistent/ledger.jsonl",
        )
    }

    #[test]
    fn min_unreachable_defaults_to_60s_and_bounds_the_grace() {
        let c = config();
        assert_eq!(c.min_unreachable, Duration::from_secs(60));
        assert_eq!(c.min_unreachable, DEFAULT_MIN_UNREACHABLE);
        assert!(format!("{c:?}").contains("min_unreachable: 60s"));
        // A grace shorter than the minimum is a configuration error that names both.
        let e = Reclaimer::new(config().with_grace(Duration::from_secs(30))).unwrap_err();
        assert!(matches!(e, WeaveError::Config { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("30s") && msg.contains("60s"), "{msg}");
        // Equal, longer, or a lower minimum: accepted.
        Reclaimer::new(config().with_grace(Duration::from_secs(60))).unwrap();
        Reclaimer::new(config().with_grace(Duration::from_secs(600))).unwrap();
        let c = config()
            .with_grace(Duration::from_secs(30))
            .with_min_unreachable(Duration::from_secs(10));
        assert_eq!(
            Reclaimer::new(c).unwrap().config().min_unreachable,
            Duration::from_secs(10)
        );
        Reclaimer::new(config().with_min_unreachable(Duration::ZERO)).unwrap();
    }

    #[test]
    fn the_clock_runs_only_while_every_observation_shows_the_peer_unreachable() {
        let mut c = UnreachableClock::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let set = |ps: &[u64]| ps.iter().map(|n| pn(*n)).collect::<HashSet<_>>();
        assert_eq!(c.unreachable_for(pn(4), t0), None, "never observed");
        c.observed(&set(&[4, 5]), t0);
        assert_eq!(c.unreachable_for(pn(4), t0 + s(10)), Some(s(10)));
        // Seen again: the clock keeps its start.
        c.observed(&set(&[4, 5]), t0 + s(30));
        assert_eq!(c.unreachable_for(pn(4), t0 + s(60)), Some(s(60)));
        // dyn5 reachable (or owning nothing) at one observation: its clock stops, and starts
        // again from zero when it is next seen unreachable.
        c.observed(&set(&[4]), t0 + s(40));
        assert_eq!(c.unreachable_for(pn(5), t0 + s(45)), None);
        c.observed(&set(&[4, 5]), t0 + s(50));
        assert_eq!(c.unreachable_for(pn(5), t0 + s(60)), Some(s(10)));
        assert_eq!(c.unreachable_for(pn(4), t0 + s(60)), Some(s(60)));
        // A failed observation stops every clock.
        c.lost_sight();
        assert_eq!(c.unreachable_for(pn(4), t0 + s(70)), None);
        c.observed(&set(&[4]), t0 + s(80));
        assert_eq!(c.unreachable_for(pn(4), t0 + s(90)), Some(s(10)));
        // A clock never reads negative.
        assert_eq!(c.unreachable_for(pn(4), t0), Some(Duration::ZERO));
    }

    #[test]
    fn unreachable_owners_are_the_owners_no_fixed_peer_reaches() {
        let mut obs = Observation {
            reachable_fixed: vec![pn(1)],
            alive: HashSet::from([pn(1).to_string(), pn(6).to_string()]),
            ipam: None,
            designated_reachable: true,
            addresses: HashMap::new(),
        };
        assert_eq!(
            unreachable_owners(&obs),
            None,
            "no IPAM view: no observation"
        );
        let entry = |peer: u64, size: u64| crate::report::IpamEntry {
            token: format!("10.32.{peer}.0"),
            size,
            peer: pn(peer).to_string(),
            nickname: format!("n{peer}"),
            is_known_peer: peer != 4,
            version: 1,
        };
        obs.ipam = Some(IpamReport {
            range_num_ips: 1 << 20,
            // fixed1 reachable, dyn4 unreachable, dyn5 unreachable but owning nothing, dyn6
            // reachable from a fixed peer.
            entries: vec![entry(1, 100), entry(4, 50), entry(5, 0), entry(6, 20)],
            ..IpamReport::default()
        });
        assert_eq!(unreachable_owners(&obs), Some(HashSet::from([pn(4)])));
    }
}
