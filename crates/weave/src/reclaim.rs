//! The reclaimer: takes back the IP space of dynamic peers whose hosts vanished without
//! `weave reset` (spot instances, crashed hosts), with `rmpeer` — **exactly once per
//! incarnation, on one designated fixed peer, and never for a peer that is still alive**.
//!
//! # Why unreachability is not enough
//! A peer behind a network partition looks exactly like a dead one to the fixed cluster: it
//! is absent from every fixed peer's topology and IPAM marks it `unreachable!`, for as long as
//! the partition lasts (`weave-net.md` §2.1). But it keeps running and keeps handing out
//! addresses from its own ranges. `rmpeer` on such a peer gives those ranges to the designated
//! peer, which then hands out the same addresses (duplicate IPs on two live hosts), and when
//! the partition heals the peer refuses the ring forever (`Received update for IP range I own
//! ... incoming message says owner ...`: it can never rejoin). This was observed on real Weave
//! Net 2.8.1 routers (`tests/fixtures/real-2/README.md`). No amount of waiting tells the two
//! apart; only something outside the mesh can: an **inventory** of the hosts that exist.
//!
//! # When a peer is reclaimed (all must hold, on a fresh observation, under the ledger lock)
//! 1. It is **not a fixed peer** (by peer name, from the configuration).
//! 2. A **majority of the fixed peers answer** (more than half of those configured), each
//!    being the peer the configuration names. Fixed peers that do not answer are logged as
//!    warnings on every pass.
//! 3. The **designated** peer ([`ReclaimConfig::designated`]) answers and is **in sync**: it
//!    has established connections to every other answering fixed peer, it has not restarted
//!    since the previous observation (same UID), and its IPAM view gives the peer at least as
//!    much space as any other fixed peer's view does (it has seen all of the peer's entries).
//!    A restarted designated peer is used only once it has re-synced with the mesh.
//! 4. It **owns space** in the designated peer's view.
//! 5. The **mesh agrees**: it is absent from the topology of every answering fixed peer, and
//!    has been at every observation of this process for at least
//!    [`ReclaimConfig::min_unreachable`] (default 60 s, see below).
//! 6. The **inventory says its host is gone**. The peer's incarnation is *bound* to a host
//!    when it was seen reachable and its nickname (Weave: the host name) or address matched
//!    exactly one live host of an inventory; the binding is persisted in the ledger. A bound
//!    peer is gone when its host is listed as gone (destroyed, terminated), or absent from a
//!    complete listing **of the same inventory** that lists at least one live host. A peer
//!    that was never bound (it lived and died while no reclaimer watched) is gone only when a
//!    host *listed as gone* matches its nickname or last address and no live host does. A
//!    stopped host is not gone (its router comes back with its database). A peer that cannot
//!    be tied to any host is never reclaimed: the refusal ([`RefusalReason::Unbound`]) is
//!    logged as a warning so that an operator can look (`weave rmpeer` by hand, or fix the
//!    inventory's names). A listing that contradicts the mesh — it leaves out, or lists as
//!    gone, the host of a peer that has stayed reachable for at least the minimum unreachable
//!    time since (longer than the mesh takes to notice a dead peer) — is not evidence for
//!    anyone ([`RefusalReason::InventoryIncomplete`]).
//! 7. Its current incarnation has **not been reclaimed** (ledger; below).
//!
//! # The minimum unreachable time (rule 5)
//! Right after a host disappears, gossip and the mesh have not settled: a `weave reset`
//! followed at once by the host being killed can leave the departed peer's hand-off
//! undelivered, and a flapping link makes a live peer drop out of the topology for a moment.
//! Waiting lets the hand-off arrive (the peer then owns nothing, rule 4) and a flapping peer
//! reappear. The default, **60 s**, is two of mesh's 30 s gossip intervals
//! (`defaultGossipInterval`, `mesh:router.go`) and its dead-connection timeout (heartbeat 30 s,
//! read deadline twice that, `mesh:connection.go`; `weave-net.md` §6). Real routers took 36 s
//! to drop a partitioned peer and 53 s a killed one (`tests/fixtures/real-2/README.md`), so in
//! practice a peer is reclaimed about 1.5–2 minutes after its host dies. The clock is per
//! process and in memory: an observation in which any answering fixed peer reaches the peer,
//! or in which it owns nothing, stops it; a failed observation stops every clock; a restart
//! restarts them (errs on the safe side). `Duration::ZERO` reclaims at the first observation:
//! only for emulators whose gossip is instant.
//!
//! # Exactly once per incarnation
//! - **Write-ahead ledger** ([`crate::ledger`]): under an exclusive file lock, the `intent`
//!   line is written and `fsync`ed **before** `DELETE /peer/{name}` is sent, then `done` after
//!   it answers with the space taken over (`noop` when it took nothing: then nothing was
//!   reclaimed, nothing is counted, and a later pass may try again), then `verified` once the
//!   designated peer's IPAM no longer lists the peer; afterwards `POST /forget` of its last
//!   known address on every answering fixed peer. Reclaimers sharing the ledger serialise on
//!   the lock.
//! - **Recovery** of an `intent` without an answer (a crash, a timeout, an answer lost after
//!   the router acted) never blindly repeats: on every pass, unfinished records are resolved
//!   from the designated peer's view — if the peer owns nothing any more, the space moved and
//!   `done` + `verified` are recorded (and its address, from the intent line, forgotten); if
//!   it still owns space, `rmpeer` is repeated **only on the same designated peer** and only if
//!   every rule above still holds (`rmpeer` on the peer that already took the entries takes
//!   nothing more; the hazard is two *different* peers taking the same entries,
//!   `weave-net.md` §4.5). A changed designated peer refuses
//!   ([`RefusalReason::IntentOnOtherPeer`]).
//! - **Incarnations.** Weave peer names are stable per host: a host that was reclaimed and
//!   comes back (with a fresh database, after `weave reset`) rejoins under the same name.
//!   Every start of a router gets a new random UID, which `/report` lists for each reachable
//!   peer. A reclaimed name that is seen reachable with **another UID**, or that **owns space
//!   again** in the (in-sync) designated peer's view — space can only come back to it by new
//!   grants, since `rmpeer` moved all of its entries at a version 100 higher — starts a new
//!   incarnation in the ledger, whose death is reclaimed again, once. A reclaimed name seen
//!   reachable with the **same UID** is the reclaimed router itself, alive: that is logged as an
//!   error and counted ([`ReclaimMetricsSnapshot::reclaimed_alive`]); it must be `weave reset`
//!   before it can rejoin.
//! - By peer **name** only (`DELETE /peer/00%3A00%3A...`), never by nickname.
//!
//! # What is not protected
//! Two reclaimers on **different ledgers** with **different designated peers** can each take
//! the same peer's space (a local ledger only serialises processes on one host); an
//! operator's manual `weave rmpeer` on another peer can do the same. Use one ledger (or the
//! same designated peer everywhere). An inventory that drops a host that still runs makes
//! that host's peer look dead if the peer is unreachable at the same time (a partition and a
//! wrong inventory together); while the peer is reachable the contradiction is seen and no
//! listing of that inventory counts as evidence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetscale_core::ReclaimOutcome;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::inventory::{HostInventory, HostSnapshot};
use fleetscale_core::coordination::{LedgerLock, LedgerStore};

use crate::ledger::{
    append_entry, read_records, HostBinding, Ledger, LedgerEntry, LedgerState, PeerRecord,
    ReclaimStage,
};
use crate::observe::{Observation, Observer};
use crate::{PeerName, WeaveError};

/// Why a peer was not reclaimed. Counted in [`ReclaimMetrics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalReason {
    /// The peer's name is in the configured fixed cluster; fixed peers are never reclaimed.
    Fixed,
    /// A fixed peer still reaches it (alive, maybe partitioned from others).
    Reachable,
    /// It owns no IP space: nothing to reclaim.
    OwnsNothing,
    /// The inventory lists its host as existing (running, stopped, being destroyed).
    NotGone,
    /// Nothing ties it to a host of the inventory: its death cannot be proven.
    Unbound,
    /// The inventory could not be read.
    InventoryUnavailable,
    /// The inventory leaves out (or lists as gone) the host of a peer that is reachable right
    /// now: a listing that contradicts the mesh is not taken as evidence.
    InventoryIncomplete,
    /// The designated reclaimer peer did not answer.
    DesignatedUnreachable,
    /// The designated peer has not (re-)synced with the mesh yet.
    DesignatedNotSynced,
    /// No fixed peer answered.
    NoFixedPeerReachable,
    /// Fewer than a majority of the fixed peers answered.
    FixedQuorumMissing,
    /// Another reclaimer holds the ledger lock.
    LockHeld,
    /// An unfinished intent names another designated peer than the configured one.
    IntentOnOtherPeer,
    /// It has been observed unreachable for less than [`ReclaimConfig::min_unreachable`]
    /// (by this process): it is reclaimed on a later pass if it stays unreachable.
    TooRecentlyUnreachable,
    /// The peer is unknown to the cluster.
    Unknown,
}

impl RefusalReason {
    /// The reason as a stable snake_case label (`fixed`, `lock_held`), for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Fixed => "fixed",
            RefusalReason::Reachable => "reachable",
            RefusalReason::OwnsNothing => "owns_nothing",
            RefusalReason::NotGone => "not_gone",
            RefusalReason::Unbound => "unbound",
            RefusalReason::InventoryUnavailable => "inventory_unavailable",
            RefusalReason::InventoryIncomplete => "inventory_incomplete",
            RefusalReason::DesignatedUnreachable => "designated_unreachable",
            RefusalReason::DesignatedNotSynced => "designated_not_synced",
            RefusalReason::NoFixedPeerReachable => "no_fixed_peer_reachable",
            RefusalReason::FixedQuorumMissing => "fixed_quorum_missing",
            RefusalReason::LockHeld => "lock_held",
            RefusalReason::IntentOnOtherPeer => "intent_on_other_peer",
            RefusalReason::TooRecentlyUnreachable => "too_recently_unreachable",
            RefusalReason::Unknown => "unknown",
        }
    }

    /// Whether an operator should look (logged as a warning rather than information).
    fn needs_operator(self) -> bool {
        matches!(
            self,
            RefusalReason::Unbound
                | RefusalReason::InventoryUnavailable
                | RefusalReason::InventoryIncomplete
                | RefusalReason::FixedQuorumMissing
                | RefusalReason::IntentOnOtherPeer
                | RefusalReason::NoFixedPeerReachable
        )
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
    /// tunnel to its `127.0.0.1:6784`); scheme, host and port only.
    pub api_url: String,
}

impl FixedPeer {
    /// A fixed peer `name`, given to `weave launch` as `address`, with its router API at `api_url`.
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
    /// Every fixed peer: never reclaimed, and each asked for its view of the cluster.
    pub fixed: Vec<FixedPeer>,
    /// The single designated reclaimer peer (one of `fixed`). Every reclaimer of a cluster
    /// must be configured with the same one.
    pub designated: PeerName,
    /// The ledger file (local filesystem), used unless [`ReclaimConfig::ledger_store`] is set.
    pub ledger_path: PathBuf,
    /// A shared ledger store (etcd, ...) for reclaimers on several hosts; `None`: the file at
    /// [`ReclaimConfig::ledger_path`].
    pub ledger_store: Option<Arc<dyn LedgerStore>>,
    /// Where [`Reclaimer::run`] and [`Reclaimer::run_once`] get host listings. Not needed
    /// when the engine hands its tick inventory over ([`Reclaimer::reclaim_peer`]).
    pub inventory: Option<Arc<dyn HostInventory>>,
    /// Minimum time a peer must have been observed continuously unreachable (from every
    /// answering fixed peer, by this process) before it is reclaimed (default 60 s: see the
    /// module docs). At most one day.
    pub min_unreachable: Duration,
    /// Time between passes of [`Reclaimer::run`] (default 60 s; 1 s to 1 day).
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
            .field(
                "ledger_store",
                &self.ledger_store.as_ref().map(|l| l.describe()),
            )
            .field(
                "inventory",
                &self.inventory.as_ref().map(|i| i.source().to_string()),
            )
            .field("min_unreachable", &self.min_unreachable)
            .field("interval", &self.interval)
            .field("verify_timeout", &self.verify_timeout)
            .field("lock_wait", &self.lock_wait)
            .field("http_timeout", &self.http_timeout)
            .finish()
    }
}

impl ReclaimConfig {
    /// Settings with the defaults: no inventory (nothing is reclaimed by
    /// [`Reclaimer::run`] until one is set), 60 s minimum unreachable time, 60 s interval,
    /// 30 s verification, 60 s lock wait, 10 s calls.
    pub fn new(
        fixed: Vec<FixedPeer>,
        designated: PeerName,
        ledger_path: impl Into<PathBuf>,
    ) -> Self {
        ReclaimConfig {
            fixed,
            designated,
            ledger_path: ledger_path.into(),
            ledger_store: None,
            inventory: None,
            min_unreachable: DEFAULT_MIN_UNREACHABLE,
            interval: Duration::from_secs(60),
            verify_timeout: Duration::from_secs(30),
            lock_wait: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the inventory.
    pub fn with_inventory(mut self, inventory: Arc<dyn HostInventory>) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// Keeps the ledger in a shared store instead of the file.
    pub fn with_ledger_store(mut self, store: Arc<dyn LedgerStore>) -> Self {
        self.ledger_store = Some(store);
        self
    }

    /// Sets the minimum unreachable time.
    pub fn with_min_unreachable(mut self, min_unreachable: Duration) -> Self {
        self.min_unreachable = min_unreachable;
        self
    }

    /// Checks every setting; the reasons say what to change.
    ///
    /// # Errors
    /// [`WeaveError::Config`].
    pub fn validate(&self) -> Result<(), WeaveError> {
        const DAY: Duration = Duration::from_secs(86_400);
        let bad = |what: &str, v: Duration, range: &str| {
            Err(WeaveError::config(format!(
                "{what} is {}: it must be {range}",
                humanize(v)
            )))
        };
        if self.fixed.is_empty() {
            return Err(WeaveError::config("the reclaimer needs the fixed peers"));
        }
        if !self.fixed.iter().any(|f| f.name == self.designated) {
            return Err(WeaveError::config(format!(
                "designated reclaimer {} is not a fixed peer",
                self.designated
            )));
        }
        if self.interval < Duration::from_secs(1) || self.interval > DAY {
            return bad("the interval", self.interval, "between 1s and 24h");
        }
        if self.min_unreachable > DAY {
            return bad(
                "the minimum unreachable time",
                self.min_unreachable,
                "at most 24h",
            );
        }
        for (what, v) in [
            ("the verify timeout", self.verify_timeout),
            ("the lock wait", self.lock_wait),
            ("the router call timeout", self.http_timeout),
        ] {
            if v.is_zero() || v > Duration::from_secs(3600) {
                return bad(what, v, "between 1ms and 1h");
            }
        }
        Ok(())
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
    silent_fixed: AtomicU64,
    reclaims: AtomicU64,
    reclaimed_ips: AtomicU64,
    noops: AtomicU64,
    incarnations: AtomicU64,
    reclaimed_alive: AtomicU64,
    passes: AtomicU64,
    errors: AtomicU64,
    refusals: Mutex<BTreeMap<RefusalReason, u64>>,
}

/// A copy of [`ReclaimMetrics`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReclaimMetricsSnapshot {
    /// Gauge: peers owning space that no fixed peer reaches (last observation).
    pub unreachable_peers: u64,
    /// Gauge: addresses they own.
    pub unreachable_ips: u64,
    /// Gauge: their share of the range, in percent (Weave's
    /// `weave_ipam_unreachable_percentage`; the docs suggest alerting above 25).
    pub unreachable_percentage: f64,
    /// Gauge: configured fixed peers that did not answer the last observation.
    pub silent_fixed_peers: u64,
    /// Counter: `rmpeer`s that took space over.
    pub reclaims: u64,
    /// Counter: addresses taken over.
    pub reclaimed_ips: u64,
    /// Counter: `rmpeer`s that took nothing over (not reclaims).
    pub noops: u64,
    /// Counter: new incarnations of reclaimed peer names recorded.
    pub incarnations: u64,
    /// Counter: reclaimed peers seen alive again with the same UID (should stay 0).
    pub reclaimed_alive: u64,
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

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters and gauges as of now, each read on its own (not one atomic view).
    pub fn snapshot(&self) -> ReclaimMetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReclaimMetricsSnapshot {
            unreachable_peers: get(&self.unreachable_peers),
            unreachable_ips: get(&self.unreachable_ips),
            unreachable_percentage: f64::from_bits(get(&self.unreachable_pct_bits)),
            silent_fixed_peers: get(&self.silent_fixed),
            reclaims: get(&self.reclaims),
            reclaimed_ips: get(&self.reclaimed_ips),
            noops: get(&self.noops),
            incarnations: get(&self.incarnations),
            reclaimed_alive: get(&self.reclaimed_alive),
            passes: get(&self.passes),
            errors: get(&self.errors),
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
    /// Unfinished reclaims found already done (the space had moved) and recorded so.
    pub resolved: Vec<PeerName>,
    /// Not reclaimed: (name, reason, detail).
    pub refused: Vec<(PeerName, RefusalReason, String)>,
    /// Fixed peers that did not answer: (name, error).
    pub silent_fixed: Vec<(PeerName, String)>,
    /// What went wrong in this pass, as text (no inventory, quorum or IPAM; a failed survey...).
    pub errors: Vec<String>,
}

/// A survey: the observation and every peer's ledger record after this observation's
/// sightings were recorded.
#[derive(Clone, Debug)]
pub struct Survey {
    /// What the fixed cluster says.
    pub observation: Observation,
    /// Each peer's current incarnation.
    pub records: BTreeMap<PeerName, PeerRecord>,
}

impl Survey {
    /// The host `peer` runs (ran) on according to `hosts`: its binding when it was bound with
    /// this inventory, else the one live host it matches, else a host listed as gone that it
    /// matches.
    pub fn host_of(&self, peer: &str, hosts: &HostSnapshot) -> Option<String> {
        let name = peer.parse::<PeerName>().ok();
        let record = name.and_then(|n| self.records.get(&n));
        if let Some(b) = record.and_then(|r| r.host.as_ref()) {
            if b.source == hosts.source {
                return Some(b.host.clone());
            }
        }
        let nickname = self
            .observation
            .nickname(peer)
            .or_else(|| record.and_then(|r| r.nickname.clone()));
        let addresses = addresses_of(&self.observation, peer, record);
        let live = hosts.live_matches(nickname.as_deref(), &addresses);
        if live.len() == 1 {
            return Some(live[0].id.clone());
        }
        if live.is_empty() {
            let gone = hosts.gone_matches(nickname.as_deref(), &addresses);
            if gone.len() == 1 {
                return Some(gone[0].id.clone());
            }
        }
        None
    }
}

#[derive(Default)]
struct Memory {
    unreachable: UnreachableClock,
    /// The designated peer's UID at the previous observation.
    designated_uid: Option<u64>,
    /// The designated peer's UID changed at the last observation (it restarted).
    designated_restarted: bool,
    /// Warnings already given, so that each is logged once per peer incarnation.
    warned: HashSet<(String, String)>,
    /// Since when each reachable peer has had its host missing from, or listed gone by, the
    /// inventory (at every observation).
    contradicted: HashMap<String, Instant>,
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
            .filter(|o| o.ips > 0 && !obs.reachable(&o.peer))
            .filter_map(|o| o.peer.parse::<PeerName>().ok())
            .collect(),
    )
}

/// Every address known for `peer`: seen now, or recorded.
fn addresses_of(obs: &Observation, peer: &str, record: Option<&PeerRecord>) -> Vec<String> {
    let mut out: Vec<String> = obs
        .peers
        .get(peer)
        .map(|p| p.addresses.clone())
        .unwrap_or_default();
    if let Some(a) = record.and_then(|r| r.address.clone()) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The reclaimer. See the module docs for the rules. Cheap to share (`Arc`).
pub struct Reclaimer {
    config: ReclaimConfig,
    observer: Observer,
    ledger: Arc<dyn LedgerStore>,
    ledger_name: String,
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

/// What a reclaim attempt did.
enum Attempt {
    /// `rmpeer` took this many addresses over.
    Reclaimed(u64),
    /// The ledger says this incarnation was reclaimed already (by `by`).
    Already { by: Option<PeerName> },
    /// An unfinished reclaim was found to have taken effect, and recorded so.
    Resolved { by: Option<PeerName> },
}

/// What one pass knows when it judges a peer: the fresh observation taken under the lock,
/// the inventory's hosts (`None`: no inventory this pass) and the lasting contradictions
/// between that inventory and the mesh.
#[derive(Clone, Copy)]
struct PassFacts<'a> {
    obs: &'a Observation,
    hosts: Option<&'a HostSnapshot>,
    contradictions: &'a [String],
}

/// The outcome of judging one peer under the lock.
enum Judgement {
    /// Run `rmpeer` (`repeat`: an unfinished intent on the same designated peer).
    Reclaim { repeat: bool, why_gone: String },
    /// Nothing to do: already reclaimed; `lines` record an unfinished reclaim found to have
    /// taken effect (empty when nothing was resolved).
    Already { lines: Vec<LedgerEntry> },
}

impl Reclaimer {
    /// A reclaimer of `config`'s fixed cluster, recording its steps in `config`'s ledger.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for invalid settings ([`ReclaimConfig::validate`]), fixed peers
    /// listed twice or an invalid API URL.
    pub fn new(config: ReclaimConfig) -> Result<Self, WeaveError> {
        config.validate()?;
        let observer = Observer::new(&config.fixed, Some(config.designated), config.http_timeout)?;
        let ledger: Arc<dyn LedgerStore> = match &config.ledger_store {
            Some(store) => store.clone(),
            None => Arc::new(Ledger::new(config.ledger_path.clone())),
        };
        Ok(Reclaimer {
            ledger_name: ledger.describe(),
            ledger,
            config,
            observer,
            metrics: Arc::default(),
            memory: Mutex::default(),
        })
    }

    /// The counters and gauges this reclaimer updates (read with [`ReclaimMetrics::snapshot`]).
    pub fn metrics(&self) -> Arc<ReclaimMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The settings this reclaimer was built with.
    pub fn config(&self) -> &ReclaimConfig {
        &self.config
    }

    /// Whether `name` is a configured fixed peer.
    pub fn is_fixed(&self, name: PeerName) -> bool {
        self.config.fixed.iter().any(|f| f.name == name)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the ledger's lock.
    async fn lock_ledger(&self) -> Result<Box<dyn LedgerLock>, WeaveError> {
        match self.ledger.lock(self.config.lock_wait).await {
            Ok(l) => Ok(l),
            Err(fleetscale_core::Error::Conflict { .. }) => Err(WeaveError::Locked {
                path: self.ledger_name.clone(),
            }),
            Err(e) => Err(WeaveError::LedgerStore {
                store: self.ledger_name.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// Appends `lines` under `guard`, folding each into `records`.
    async fn write(
        &self,
        guard: &dyn LedgerLock,
        lines: Vec<LedgerEntry>,
        records: &mut BTreeMap<PeerName, PeerRecord>,
    ) -> Result<(), WeaveError> {
        for e in lines {
            append_entry(guard, &self.ledger_name, &e).await?;
            records
                .entry(e.peer)
                .or_insert_with(|| PeerRecord::new(e.peer, e.incarnation))
                .absorb(&e);
        }
        Ok(())
    }

    /// Logs `message` as a warning once per `(key, topic)`.
    fn warn_once(&self, key: &str, topic: &str, message: &str) {
        if self.memory().warned.insert((key.into(), topic.into())) {
            tracing::warn!("{message}");
        }
    }

    /// Reads every fixed peer (concurrently) and combines them. Every observation also
    /// advances the unreachable clocks ([`ReclaimConfig::min_unreachable`]) and notes whether
    /// the designated peer restarted.
    ///
    /// # Errors
    /// As [`Observer::observe`].
    pub async fn observe(&self) -> Result<Observation, WeaveError> {
        let r = self.observer.observe().await;
        let now = Instant::now();
        let mut m = self.memory();
        match r.as_ref().ok().and_then(unreachable_owners) {
            Some(set) => m.unreachable.observed(&set, now),
            None => m.unreachable.lost_sight(),
        }
        if let Ok(obs) = &r {
            if let Some(uid) = obs.designated_uid {
                m.designated_restarted = m.designated_uid.is_some_and(|prev| prev != uid);
                m.designated_uid = Some(uid);
            }
        }
        r
    }

    /// Observes the cluster and records in the ledger what it shows of each dynamic peer
    /// (its UID, nickname, address, the host of `hosts` it runs on; new incarnations of
    /// reclaimed names). Used by the membership at every engine tick and by each pass.
    ///
    /// # Errors
    /// Observation and ledger errors; [`WeaveError::Locked`] when another reclaimer holds the
    /// ledger past [`ReclaimConfig::lock_wait`].
    pub async fn survey(&self, hosts: Option<&HostSnapshot>) -> Result<Survey, WeaveError> {
        let guard = self.lock_ledger().await?;
        let observation = self.observe().await?;
        let mut records = read_records(guard.as_ref(), &self.ledger_name).await?;
        let (lines, _) = self.record_sightings(&observation, hosts, &records);
        self.write(guard.as_ref(), lines, &mut records).await?;
        drop(guard);
        self.update_gauges(&observation);
        for (peer, error) in &observation.silent {
            tracing::warn!(fixed_peer = %peer, error = %error, answered = observation.answered.len(), configured = self.config.fixed.len(), "fixed peer did not answer");
        }
        Ok(Survey {
            observation,
            records,
        })
    }

    fn update_gauges(&self, obs: &Observation) {
        let m = &self.metrics;
        m.silent_fixed
            .store(obs.silent.len() as u64, Ordering::Relaxed);
        let Some(ipam) = &obs.ipam else {
            return;
        };
        let (mut peers, mut ips) = (0u64, 0u64);
        for o in ipam.owners() {
            if o.ips > 0 && !obs.reachable(&o.peer) {
                peers += 1;
                ips += o.ips;
            }
        }
        m.unreachable_peers.store(peers, Ordering::Relaxed);
        m.unreachable_ips.store(ips, Ordering::Relaxed);
        let pct = if ipam.range_num_ips > 0 {
            ips as f64 * 100.0 / ipam.range_num_ips as f64
        } else {
            0.0
        };
        m.unreachable_pct_bits
            .store(pct.to_bits(), Ordering::Relaxed);
    }

    /// Whether the designated peer is in sync with the mesh for a decision about `peer`
    /// (rule 3). `Err` says why not.
    fn designated_in_sync(&self, obs: &Observation, peer: &str) -> Result<(), String> {
        let d = self.config.designated;
        if !obs.designated_ready {
            return Err(format!("designated peer {d} is not ready"));
        }
        if self.memory().designated_restarted {
            return Err(format!(
                "designated peer {d} restarted since the previous observation"
            ));
        }
        let missing: Vec<String> = obs
            .answered
            .iter()
            .filter(|f| **f != d && !obs.designated_links.contains(&f.to_string()))
            .map(|f| f.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "designated peer {d} has no established connection to fixed peer(s) {}",
                missing.join(", ")
            ));
        }
        let max = obs.owned_max.get(peer).copied().unwrap_or(0);
        let here = obs.owned(peer);
        if here < max {
            return Err(format!(
                "designated peer {d} sees {peer} owning {here} IPs, another fixed peer {max}: \
                 it has not seen all of the peer's entries yet"
            ));
        }
        Ok(())
    }

    /// The ledger lines the sightings of one observation call for (see
    /// [`Reclaimer::survey`]), and the lasting contradictions between `hosts` and the mesh:
    /// reachable peers whose bound host the listing leaves out or lists as gone.
    fn record_sightings(
        &self,
        obs: &Observation,
        hosts: Option<&HostSnapshot>,
        records: &BTreeMap<PeerName, PeerRecord>,
    ) -> (Vec<LedgerEntry>, Vec<String>) {
        let mut lines = Vec::new();
        let mut contradictions: Vec<(String, String)> = Vec::new();
        for (name, seen) in &obs.peers {
            let Ok(peer) = name.parse::<PeerName>() else {
                continue;
            };
            if self.is_fixed(peer) {
                continue;
            }
            let record = records
                .get(&peer)
                .cloned()
                .unwrap_or_else(|| PeerRecord::new(peer, 1));
            let reclaimed = record.stage.is_some_and(ReclaimStage::finished);
            if reclaimed && record.uid == Some(seen.uid) {
                let key = format!("{peer}/{}", seen.uid);
                if self.memory().warned.insert((key, "alive".into())) {
                    self.metrics.reclaimed_alive.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%peer, uid = seen.uid, incarnation = record.incarnation,
                        "a reclaimed peer is reachable again with the same UID: its router was alive when its space was taken; it cannot rejoin until it is `weave reset`");
                }
                continue;
            }
            let incarnation = if reclaimed {
                record.incarnation + 1
            } else {
                record.incarnation
            };
            let (binding, contradiction) = self.binding_for(peer, seen, &record, hosts, reclaimed);
            contradictions.extend(contradiction.map(|why| (name.clone(), why)));
            let nickname = (!seen.nickname.is_empty()).then(|| seen.nickname.clone());
            let address = seen.addresses.first().cloned().or(record.address.clone());
            let unchanged = !reclaimed
                && record.uid == Some(seen.uid)
                && record.host == binding
                && (nickname.is_none() || record.nickname == nickname)
                && record.address == address;
            if unchanged {
                continue;
            }
            if reclaimed {
                self.metrics.incarnations.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, uid = seen.uid, incarnation, "a reclaimed peer name is back with a new UID: a new incarnation, whose loss will be reclaimed once more");
            } else if record.host.is_some() && record.host != binding {
                tracing::info!(%peer, from = ?record.host, to = ?binding, "peer's host binding changed");
            }
            let mut e = LedgerEntry::new(peer, LedgerState::Seen);
            e.incarnation = incarnation;
            e.uid = Some(seen.uid);
            e.nickname = nickname;
            e.address = address;
            if let Some(b) = binding {
                e.host = Some(b.host);
                e.source = Some(b.source);
            }
            lines.push(e);
        }
        // An unreachable, unbound owner that matches exactly one host listed as gone, and no
        // live one: bound to it, so that the evidence outlives the listing (Fly lists a
        // destroyed machine only briefly, EC2 a terminated instance for about an hour).
        if let Some(hosts) = hosts {
            for (name, _) in obs.owned_max.iter().filter(|(_, ips)| **ips > 0) {
                let Ok(peer) = name.parse::<PeerName>() else {
                    continue;
                };
                let record = records.get(&peer);
                if self.is_fixed(peer)
                    || obs.reachable(name)
                    || record.is_some_and(|r| r.host.is_some() || r.stage.is_some())
                    || lines.iter().any(|e: &LedgerEntry| e.peer == peer)
                {
                    continue;
                }
                let nickname = obs
                    .nickname(name)
                    .or_else(|| record.and_then(|r| r.nickname.clone()));
                let addresses = addresses_of(obs, name, record);
                let gone = hosts.gone_matches(nickname.as_deref(), &addresses);
                if gone.len() != 1
                    || !hosts
                        .live_matches(nickname.as_deref(), &addresses)
                        .is_empty()
                {
                    continue;
                }
                let mut e = LedgerEntry::new(peer, LedgerState::Seen);
                e.incarnation = record.map(|r| r.incarnation).unwrap_or(1);
                e.uid = record.and_then(|r| r.uid);
                e.nickname = nickname;
                e.address = addresses.first().cloned();
                e.host = Some(gone[0].id.clone());
                e.source = Some(hosts.source.clone());
                e.note = Some("unreachable; matches a host listed as gone".into());
                lines.push(e);
            }
        }
        // Space owned again, in the in-sync designated peer's view, by a reclaimed name that is
        // not reachable: new grants went to a new incarnation (rmpeer moved every entry it had).
        if obs.designated_reachable {
            if let Some(ipam) = &obs.ipam {
                for o in ipam.owners() {
                    let Ok(peer) = o.peer.parse::<PeerName>() else {
                        continue;
                    };
                    let Some(record) = records.get(&peer) else {
                        continue;
                    };
                    if o.ips == 0
                        || obs.reachable(&o.peer)
                        || !record.stage.is_some_and(ReclaimStage::finished)
                        || self.designated_in_sync(obs, &o.peer).is_err()
                    {
                        continue;
                    }
                    self.metrics.incarnations.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, ips = o.ips, incarnation = record.incarnation + 1,
                        "a reclaimed peer name owns space again: a new incarnation (it rejoined with a fresh database); its loss will be reclaimed once more");
                    let mut e = LedgerEntry::new(peer, LedgerState::Seen);
                    e.incarnation = record.incarnation + 1;
                    e.nickname = (!o.nickname.is_empty()).then(|| o.nickname.clone());
                    e.note = Some(format!("owns {} IPs again after its reclaim", o.ips));
                    lines.push(e);
                }
            }
        }
        (lines, self.lasting_contradictions(contradictions))
    }

    /// The contradictions that have lasted at every observation for at least
    /// [`ReclaimConfig::min_unreachable`]: a peer whose host just died stays in the mesh's
    /// topology until its heartbeat times out (36-53 s on real routers), which is no
    /// contradiction; one still there after the minimum is.
    fn lasting_contradictions(&self, current: Vec<(String, String)>) -> Vec<String> {
        let now = Instant::now();
        let min = self.config.min_unreachable;
        let mut m = self.memory();
        m.contradicted
            .retain(|peer, _| current.iter().any(|(p, _)| p == peer));
        current
            .into_iter()
            .filter(|(peer, _)| {
                let since = *m.contradicted.entry(peer.clone()).or_insert(now);
                now.saturating_duration_since(since) >= min
            })
            .map(|(_, why)| why)
            .collect()
    }

    /// The host a reachable peer runs on, for its `seen` line, and the contradiction, if
    /// any, between the listing and the peer being alive.
    fn binding_for(
        &self,
        peer: PeerName,
        seen: &crate::observe::SeenPeer,
        record: &PeerRecord,
        hosts: Option<&HostSnapshot>,
        new_incarnation: bool,
    ) -> (Option<HostBinding>, Option<String>) {
        let kept = if new_incarnation {
            None
        } else {
            record.host.clone()
        };
        let Some(hosts) = hosts else {
            return (kept, None);
        };
        let nickname = (!seen.nickname.is_empty()).then_some(seen.nickname.as_str());
        let matches = hosts.live_matches(nickname, &seen.addresses);
        let key = format!("{peer}/{}", seen.uid);
        match matches.as_slice() {
            [one] => (
                Some(HostBinding {
                    host: one.id.clone(),
                    source: hosts.source.clone(),
                }),
                None,
            ),
            [] if kept.is_none() && hosts.gone_matches(nickname, &seen.addresses).len() == 1 => {
                // Still in a fixed peer's topology, but its host is listed as gone: a dead peer
                // that the mesh has not dropped yet (mesh notices a silent peer only after its
                // heartbeat timeout). Bound to that host; the contradiction keeps the listing
                // from counting as evidence until the mesh agrees.
                let gone = hosts.gone_matches(nickname, &seen.addresses)[0];
                let why = format!(
                    "peer {peer} ({}) is reachable, but inventory {} lists as gone its host {}",
                    seen.nickname, hosts.source, gone.id
                );
                (
                    Some(HostBinding {
                        host: gone.id.clone(),
                        source: hosts.source.clone(),
                    }),
                    Some(why),
                )
            }
            [] => match kept {
                Some(b) if b.source == hosts.source => {
                    let listed = hosts.get(&b.host);
                    if listed.is_none_or(|h| h.gone) {
                        let why = format!(
                            "peer {peer} ({}) is reachable, but inventory {} {} its host {}",
                            seen.nickname,
                            hosts.source,
                            if listed.is_some() {
                                "lists as gone"
                            } else {
                                "leaves out"
                            },
                            b.host
                        );
                        self.warn_once(
                            &key,
                            "contradiction",
                            &format!(
                                "{why}: no listing of this inventory counts as evidence of \
                                 death while it contradicts the mesh"
                            ),
                        );
                        (Some(b), Some(why))
                    } else {
                        (Some(b), None)
                    }
                }
                other => {
                    if other.is_none() {
                        self.warn_once(&key, "unmatched", &format!(
                            "peer {peer} ({}, addresses {:?}) is reachable but matches no live host of inventory {}: if it dies, its death can be proven only by a host listed as gone; check that the inventory lists its host name or address",
                            seen.nickname, seen.addresses, hosts.source));
                    }
                    (other, None)
                }
            },
            many => {
                if let Some(b) =
                    kept.filter(|b| b.source == hosts.source && many.iter().any(|h| h.id == b.host))
                {
                    return (Some(b), None);
                }
                self.warn_once(
                    &key,
                    "ambiguous",
                    &format!(
                        "peer {peer} ({}) matches several hosts of inventory {} ({}): not bound",
                        seen.nickname,
                        hosts.source,
                        many.iter()
                            .map(|h| h.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                (None, None)
            }
        }
    }

    /// Rule 6: whether the inventory shows the peer's host gone. `Ok` says how.
    fn evidence(
        &self,
        facts: &PassFacts<'_>,
        peer: PeerName,
        record: Option<&PeerRecord>,
    ) -> Result<String, (RefusalReason, String)> {
        let PassFacts {
            obs,
            hosts,
            contradictions,
        } = *facts;
        let Some(hosts) = hosts else {
            return Err((
                RefusalReason::InventoryUnavailable,
                format!("{peer}: no inventory listing this pass"),
            ));
        };
        let name = peer.to_string();
        if !contradictions.is_empty() {
            return Err((
                RefusalReason::InventoryIncomplete,
                format!(
                    "{peer}: inventory {} contradicts the mesh ({}): it is not evidence while it \
                     does",
                    hosts.source,
                    contradictions.join("; ")
                ),
            ));
        }
        // A live host it may run on — its host name or address — that no other reachable
        // peer occupies: the name may have come back there (a relaunch after `weave reset`)
        // since this ledger last saw it, whatever its binding says.
        let nickname = obs
            .nickname(&name)
            .or_else(|| record.and_then(|r| r.nickname.clone()));
        let addresses = addresses_of(obs, &name, record);
        let free_live: Vec<&str> = hosts
            .live_matches(nickname.as_deref(), &addresses)
            .into_iter()
            .filter(|h| {
                record
                    .and_then(|r| r.host.as_ref())
                    .map(|b| b.host.as_str())
                    != Some(&h.id)
                    && !obs.peers.iter().any(|(other, seen)| {
                        *other != name
                            && h.matches(
                                (!seen.nickname.is_empty()).then_some(seen.nickname.as_str()),
                                &seen.addresses,
                            )
                    })
            })
            .map(|h| h.id.as_str())
            .collect();
        if let Some(h) = free_live.first() {
            return Err((
                RefusalReason::NotGone,
                format!(
                    "{peer} ({}) may run on host {h} of inventory {}, which exists (its host \
                     name or address; unreachable but not gone: a partition, a stopped host)",
                    nickname.as_deref().unwrap_or(""),
                    hosts.source
                ),
            ));
        }
        if let Some(b) = record.and_then(|r| r.host.as_ref()) {
            return match hosts.get(&b.host) {
                Some(h) if h.gone => Ok(format!(
                    "its host {} is listed as gone by inventory {}",
                    h.id, hosts.source
                )),
                Some(h) => Err((
                    RefusalReason::NotGone,
                    format!(
                        "{peer}: its host {} is still in inventory {} (unreachable but not gone: \
                         a partition, or a stopped host)",
                        h.id, hosts.source
                    ),
                )),
                None if b.source == hosts.source => Ok(format!(
                    "its host {} is no longer in inventory {}",
                    b.host, hosts.source
                )),
                None => Err((
                    RefusalReason::Unbound,
                    format!(
                        "{peer}: it was seen on host {} of inventory {}, which inventory {} does \
                         not cover",
                        b.host, b.source, hosts.source
                    ),
                )),
            };
        }
        if let Some(h) = hosts.gone_matches(nickname.as_deref(), &addresses).first() {
            return Ok(format!(
                "it matches host {} listed as gone by inventory {}",
                h.id, hosts.source
            ));
        }
        Err((
            RefusalReason::Unbound,
            format!(
                "{peer} (nickname {:?}, addresses {addresses:?}) was never seen on a host of \
                 inventory {} and matches no host it lists as gone: its death cannot be proven \
                 (if it is dead, run `weave rmpeer {peer}` on one fixed peer by hand)",
                nickname.unwrap_or_default(),
                hosts.source
            ),
        ))
    }

    /// Judges `peer` on a fresh observation under the lock (the module docs' rules); an
    /// unfinished reclaim found to have taken effect comes back with the lines that record it.
    fn judge(
        &self,
        facts: &PassFacts<'_>,
        peer: PeerName,
        record: Option<&PeerRecord>,
    ) -> Result<Judgement, (RefusalReason, String)> {
        let obs = facts.obs;
        let name = peer.to_string();
        let d = self.config.designated;
        if self.is_fixed(peer) {
            return Err((RefusalReason::Fixed, format!("{peer} is a fixed peer")));
        }
        if !obs.has_quorum(self.config.fixed.len()) {
            let silent: Vec<String> = obs
                .silent
                .iter()
                .map(|(p, e)| format!("{p} ({e})"))
                .collect();
            return Err((
                RefusalReason::FixedQuorumMissing,
                format!(
                    "only {} of {} fixed peers answered (not answering: {}): a minority's view \
                     of the mesh is not enough",
                    obs.answered.len(),
                    self.config.fixed.len(),
                    silent.join("; ")
                ),
            ));
        }
        if !obs.designated_reachable {
            return Err((
                RefusalReason::DesignatedUnreachable,
                format!("designated reclaimer {d} did not answer"),
            ));
        }
        let owned = obs.owned(&name);
        let stage = record.and_then(|r| r.stage);
        let incarnation = record.map(|r| r.incarnation).unwrap_or(1);
        let sync = self.designated_in_sync(obs, &name);
        let resolve = |why: &str| -> Result<Judgement, (RefusalReason, String)> {
            let designated = record.and_then(|r| r.designated).unwrap_or(d);
            let mut lines = Vec::new();
            if stage == Some(ReclaimStage::Intent) {
                let mut e = LedgerEntry::reclaim(peer, LedgerState::Done, designated, incarnation);
                e.note = Some(why.to_string());
                lines.push(e);
            }
            lines.push(LedgerEntry::reclaim(
                peer,
                LedgerState::Verified,
                designated,
                incarnation,
            ));
            Ok(Judgement::Already { lines })
        };
        match stage {
            Some(ReclaimStage::Verified) => return Ok(Judgement::Already { lines: Vec::new() }),
            Some(ReclaimStage::Done) => {
                if owned == 0 && sync.is_ok() {
                    return resolve("verified on a later pass");
                }
                return Ok(Judgement::Already { lines: Vec::new() });
            }
            Some(ReclaimStage::Intent) => {
                if obs.reachable(&name) {
                    return Err((
                        RefusalReason::Reachable,
                        format!(
                            "unfinished reclaim of {peer}, but the peer is reachable: nothing is \
                             repeated"
                        ),
                    ));
                }
                if let Err(why) = &sync {
                    return Err((RefusalReason::DesignatedNotSynced, why.clone()));
                }
                if owned == 0 {
                    return resolve("recovered: the space had already moved");
                }
                let intent_on = record.and_then(|r| r.designated).unwrap_or(d);
                if intent_on != d {
                    return Err((
                        RefusalReason::IntentOnOtherPeer,
                        format!(
                            "unfinished reclaim of {peer} was on {intent_on}, now designated {d}: \
                             repeating it on another peer could duplicate ownership"
                        ),
                    ));
                }
            }
            None => {}
        }
        if owned == 0 {
            return Err((
                RefusalReason::OwnsNothing,
                format!("{peer} owns no IP space"),
            ));
        }
        if obs.reachable(&name) {
            return Err((
                RefusalReason::Reachable,
                format!("{peer} is reachable from the fixed cluster"),
            ));
        }
        if let Err(why) = sync {
            return Err((RefusalReason::DesignatedNotSynced, why));
        }
        let why_gone = self.evidence(facts, peer, record)?;
        let min = self.config.min_unreachable;
        let unreachable_for = self
            .memory()
            .unreachable
            .unreachable_for(peer, Instant::now());
        match unreachable_for {
            Some(t) if t >= min => {}
            _ if min.is_zero() => {}
            t => {
                return Err((
                    RefusalReason::TooRecentlyUnreachable,
                    format!(
                        "{peer} has been unreachable for {} (observed by this process), less than \
                         the minimum of {}",
                        humanize(t.unwrap_or_default()),
                        humanize(min)
                    ),
                ))
            }
        }
        Ok(Judgement::Reclaim {
            repeat: stage == Some(ReclaimStage::Intent),
            why_gone,
        })
    }

    /// One pass: read the configured inventory, survey, reclaim every peer that passes all
    /// rules, resolve unfinished reclaims.
    pub async fn run_once(&self) -> PassReport {
        let hosts = match &self.config.inventory {
            None => Err("no inventory configured: nothing can be shown gone".to_string()),
            Some(inv) => inv.hosts().await.map_err(|e| e.to_string()),
        };
        self.pass(hosts).await
    }

    /// One pass over a given inventory listing (`Err`: it could not be read; nothing is then
    /// reclaimed, but unfinished reclaims are still resolved and sightings recorded).
    pub async fn pass(&self, hosts: Result<HostSnapshot, String>) -> PassReport {
        let mut report = PassReport::default();
        ReclaimMetrics::add(&self.metrics.passes, 1);
        if let Err(e) = &hosts {
            tracing::warn!(error = %e, "reclaim pass: inventory unavailable");
            report.errors.push(format!("inventory: {e}"));
            ReclaimMetrics::add(&self.metrics.errors, 1);
        }
        let hosts = hosts.ok();
        let survey = match self.survey(hosts.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                match &e {
                    WeaveError::Refused { kind, .. } => self.metrics.refuse(*kind),
                    WeaveError::Locked { .. } => self.metrics.refuse(RefusalReason::LockHeld),
                    _ => ReclaimMetrics::add(&self.metrics.errors, 1),
                }
                tracing::warn!(error = %e, "reclaim pass failed");
                report.errors.push(e.to_string());
                return report;
            }
        };
        let obs = &survey.observation;
        report.silent_fixed = obs.silent.clone();
        if !obs.has_quorum(self.config.fixed.len()) {
            report.errors.push(format!(
                "only {} of {} fixed peers answered: no reclaim without a majority",
                obs.answered.len(),
                self.config.fixed.len()
            ));
        }
        let Some(ipam) = obs.ipam.clone() else {
            report.errors.push("no IPAM on the fixed peers".into());
            return report;
        };
        let mut targets: Vec<PeerName> = Vec::new();
        for o in ipam.owners() {
            if o.ips == 0 || obs.reachable(&o.peer) {
                continue;
            }
            let Ok(peer) = o.peer.parse::<PeerName>() else {
                report
                    .errors
                    .push(format!("bad peer name {:?} in IPAM", o.peer));
                continue;
            };
            report.unreachable.push((peer, o.nickname.clone(), o.ips));
            if !self.is_fixed(peer) {
                targets.push(peer);
            }
        }
        for (peer, r) in &survey.records {
            if matches!(
                r.stage,
                Some(ReclaimStage::Intent) | Some(ReclaimStage::Done)
            ) && !targets.contains(peer)
            {
                targets.push(*peer);
            }
        }
        for peer in targets {
            match self.reclaim_locked(peer, hosts.as_ref()).await {
                Ok(Attempt::Reclaimed(n)) => report.reclaimed.push((peer, n)),
                Ok(Attempt::Resolved { .. }) => report.resolved.push(peer),
                Ok(Attempt::Already { .. }) => {}
                Err(WeaveError::Refused { kind, reason }) => {
                    report.refused.push((peer, kind, reason));
                }
                Err(WeaveError::Locked { path }) => report.refused.push((
                    peer,
                    RefusalReason::LockHeld,
                    format!("{path} is locked"),
                )),
                Err(e) => report.errors.push(format!("{peer}: {e}")),
            }
        }
        report
    }

    /// Runs passes every [`ReclaimConfig::interval`] until `shutdown` is cancelled; the first
    /// pass runs at once. A pass in progress finishes its current step before stopping (the
    /// ledger keeps what it did).
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let report = tokio::select! {
                r = self.run_once() => r,
                _ = shutdown.cancelled() => return,
            };
            for e in &report.errors {
                tracing::warn!("reclaim pass: {e}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// Reclaims one peer if every rule holds, judging its death by `hosts` (the engine's tick
    /// inventory). Also resolves an unfinished reclaim of it.
    ///
    /// # Errors
    /// [`WeaveError::Refused`] when a rule forbids it (the reason says which),
    /// [`WeaveError::Locked`] when another reclaimer holds the ledger past
    /// [`ReclaimConfig::lock_wait`], router and ledger errors,
    /// [`WeaveError::NothingTakenOver`] when `rmpeer` took nothing, and
    /// [`WeaveError::StillOwned`] when the space was not seen moving in time (the ledger then
    /// says `done`; it is never repeated).
    pub async fn reclaim_peer(
        &self,
        peer: PeerName,
        hosts: &HostSnapshot,
    ) -> Result<ReclaimOutcome, WeaveError> {
        let designated = self.config.designated;
        Ok(match self.reclaim_locked(peer, Some(hosts)).await? {
            Attempt::Reclaimed(n) => ReclaimOutcome::reclaimed(n, designated.to_string()),
            Attempt::Already { by } | Attempt::Resolved { by } => {
                ReclaimOutcome::already(by.unwrap_or(designated).to_string())
            }
        })
    }

    async fn reclaim_locked(
        &self,
        peer: PeerName,
        hosts: Option<&HostSnapshot>,
    ) -> Result<Attempt, WeaveError> {
        let r = self.reclaim_inner(peer, hosts).await;
        match &r {
            Err(WeaveError::Refused { kind, reason }) => {
                self.metrics.refuse(*kind);
                if kind.needs_operator() {
                    tracing::warn!(%peer, reason = kind.as_str(), "not reclaiming: {reason}");
                } else {
                    tracing::info!(%peer, reason = kind.as_str(), "not reclaiming: {reason}");
                }
            }
            Err(WeaveError::Locked { .. }) => self.metrics.refuse(RefusalReason::LockHeld),
            Err(e) => {
                ReclaimMetrics::add(&self.metrics.errors, 1);
                tracing::warn!(%peer, error = %e, "reclaim failed");
            }
            Ok(_) => {}
        }
        r
    }

    async fn reclaim_inner(
        &self,
        peer: PeerName,
        hosts: Option<&HostSnapshot>,
    ) -> Result<Attempt, WeaveError> {
        if self.is_fixed(peer) {
            return Err(refused(
                RefusalReason::Fixed,
                format!("{peer} is a fixed peer"),
            ));
        }
        let guard = self.lock_ledger().await?;
        // Everything below is decided on fresh data, under the lock.
        let obs = self.observe().await?;
        let mut records = read_records(guard.as_ref(), &self.ledger_name).await?;
        let (lines, contradictions) = self.record_sightings(&obs, hosts, &records);
        self.write(guard.as_ref(), lines, &mut records).await?;
        let record = records.get(&peer).cloned();
        let incarnation = record.as_ref().map(|r| r.incarnation).unwrap_or(1);
        let name = peer.to_string();
        let designated = self.config.designated;
        let address = addresses_of(&obs, &name, record.as_ref())
            .into_iter()
            .next();
        match self
            .judge(
                &PassFacts {
                    obs: &obs,
                    hosts,
                    contradictions: &contradictions,
                },
                peer,
                record.as_ref(),
            )
            .map_err(|(k, w)| refused(k, w))?
        {
            Judgement::Already { lines } => {
                let resolved = !lines.is_empty();
                self.write(guard.as_ref(), lines, &mut records).await?;
                drop(guard);
                let by = record.as_ref().and_then(|r| r.designated);
                if !resolved {
                    return Ok(Attempt::Already { by });
                }
                tracing::info!(%peer, "an unfinished reclaim had already taken effect: recorded as done");
                self.forget(&obs, peer, address.as_deref()).await;
                Ok(Attempt::Resolved { by })
            }
            Judgement::Reclaim { repeat, why_gone } => {
                if repeat {
                    tracing::warn!(%peer, "repeating an unfinished rmpeer on the same designated peer");
                }
                let owned = obs.owned(&name);
                let nickname = obs.nickname(&name);
                let mut intent =
                    LedgerEntry::reclaim(peer, LedgerState::Intent, designated, incarnation);
                intent.nickname = nickname.clone();
                intent.ips = owned;
                intent.address = address.clone();
                intent.note = Some(why_gone.clone());
                append_entry(guard.as_ref(), &self.ledger_name, &intent).await?;

                let client = self.observer.client(designated).ok_or_else(|| {
                    WeaveError::config(format!("designated {designated} has no client"))
                })?;
                let outcome = client.rmpeer(&peer).await?;
                if outcome.taken_over == 0 {
                    let mut noop =
                        LedgerEntry::reclaim(peer, LedgerState::Noop, designated, incarnation);
                    noop.note = Some(format!(
                        "rmpeer took nothing; the designated view showed {owned} IPs"
                    ));
                    append_entry(guard.as_ref(), &self.ledger_name, &noop).await?;
                    ReclaimMetrics::add(&self.metrics.noops, 1);
                    tracing::warn!(%peer, owned, designated = %designated, "rmpeer took over nothing: not a reclaim");
                    return Err(WeaveError::NothingTakenOver {
                        peer: name,
                        designated: designated.to_string(),
                        owned,
                    });
                }
                let mut done =
                    LedgerEntry::reclaim(peer, LedgerState::Done, designated, incarnation);
                done.ips = outcome.taken_over;
                done.address = address.clone();
                append_entry(guard.as_ref(), &self.ledger_name, &done).await?;
                ReclaimMetrics::add(&self.metrics.reclaims, 1);
                ReclaimMetrics::add(&self.metrics.reclaimed_ips, outcome.taken_over);
                tracing::warn!(%peer, nickname = nickname.as_deref().unwrap_or(""), incarnation, ips = outcome.taken_over,
                    designated = %designated, evidence = %why_gone, "reclaimed the IP space of a vanished peer (rmpeer)");

                self.verify(peer).await?;
                append_entry(
                    guard.as_ref(),
                    &self.ledger_name,
                    &LedgerEntry::reclaim(peer, LedgerState::Verified, designated, incarnation),
                )
                .await?;
                drop(guard);
                self.forget(&obs, peer, address.as_deref()).await;
                Ok(Attempt::Reclaimed(outcome.taken_over))
            }
        }
    }

    /// `POST /forget` of the reclaimed peer's address on every answering fixed peer (stops
    /// their reconnection attempts; failures are only logged).
    async fn forget(&self, obs: &Observation, peer: PeerName, address: Option<&str>) {
        let Some(addr) = address else {
            return;
        };
        for fixed in &obs.answered {
            if let Some(c) = self.observer.client(*fixed) {
                if let Err(e) = c.forget(&[addr.to_string()]).await {
                    tracing::warn!(%peer, fixed = %fixed, error = %e, "forget failed");
                }
            }
        }
    }

    /// Polls the designated peer until `peer` owns nothing in its IPAM view.
    async fn verify(&self, peer: PeerName) -> Result<(), WeaveError> {
        let started = Instant::now();
        let name = peer.to_string();
        let client = self
            .observer
            .client(self.config.designated)
            .ok_or_else(|| WeaveError::config("designated peer has no client"))?;
        loop {
            let owned = match client.report().await {
                Ok(r) => r.ipam.map(|i| i.owned_by(&name)),
                Err(e) => {
                    tracing::debug!(error = %e, "verify: designated peer did not answer");
                    None
                }
            };
            if owned == Some(0) {
                return Ok(());
            }
            if started.elapsed() >= self.config.verify_timeout {
                return Err(WeaveError::StillOwned {
                    peer: name,
                    owned: owned.unwrap_or(0),
                    after: self.config.verify_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
