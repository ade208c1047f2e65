//! [`EtcdCoordinator`]: replicas of an autoscaler sharing targets through etcd.
//!
//! The contract is documented on the type, where it is published.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use fleetscale_core::coordination::{ActionNote, Coordinator, Fence};

use crate::call::retry;
use crate::lease::{Counters, Lease, RequestCounts};
use crate::rendezvous;
use crate::{EtcdConfig, EtcdError};

/// Targets per transaction when taking or giving up ownership: two operations per target
/// stay within etcd's default `--max-txn-ops` of 128.
const BATCH: usize = 50;

/// At most this many targets are named one by one in an INFO line; the rest are counted.
const NAMED_IN_LOGS: usize = 20;

/// A snapshot of a replica's coordination state, for `/metrics` and status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinationStatus {
    /// This replica's name.
    pub replica: String,
    /// Live replicas seen at the last pass (this one included).
    pub replicas: usize,
    /// Targets this replica owns now.
    pub owned: usize,
    /// Whether this replica may act now (its lease is confirmed).
    pub acting: bool,
    /// Targets taken over since start.
    pub gained_total: u64,
    /// Targets given up or lost since start.
    pub lost_total: u64,
    /// Requests sent to etcd since start.
    pub requests: RequestCounts,
}

#[derive(Debug, Default)]
struct PassState {
    /// The live replicas of the previous pass.
    replicas: Vec<String>,
    /// The targets of the previous pass.
    targets: HashSet<String>,
    /// Targets this replica wanted at the previous pass but another replica held.
    waiting: BTreeMap<String, String>,
    /// Ownership keys given up but not yet deleted in etcd (a failed delete), with tokens.
    releasing: BTreeMap<String, i64>,
    /// Whether a pass ran since the current lease was granted.
    passed: bool,
    /// Whether the last pass found the lease unconfirmed (logged once per episode).
    stalled: bool,
}

/// Replicas sharing targets through etcd (the [crate docs](crate) say what is guaranteed).
///
/// # Keys (under the prefix, default `/fleetscale/`)
/// | key | value | lease |
/// |---|---|---|
/// | `replicas/<replica>` | JSON: replica, host, pid, start time, version | the replica's |
/// | `owners/<target>` | the owning replica's name | the owner's |
/// | `actions/<target>` | JSON: the last fenced action (replica, token, kind, machine, time) | the owner's |
///
/// # How it works
/// - **Membership**: a replica grants itself a lease (TTL [`EtcdConfig::lease_ttl`]), registers
///   `replicas/<name>` under it (compare-and-set: a name a live replica holds is refused) and
///   keeps the lease alive every third of the TTL. It acts only while
///   [`a keep-alive it sent was acknowledged`](crate#timing) recently enough.
/// - **Sharding**: each pass ([`Coordinator::acquire`]) reads the live replicas (one range
///   read) and computes each target's owner by [rendezvous hashing](crate::rendezvous). A
///   target that should be this replica's is taken by creating `owners/<target>` under its
///   lease, in a transaction that succeeds only if the key does not exist (its
///   `create_revision` is 0); the key's revision is the **fencing token**. A target that should
///   no longer be this replica's (a replica joined, the target left the list) is given up by
///   deleting its key if its revision is still the token. A target whose key another replica
///   still holds is left alone until that replica gives it up or its lease expires.
/// - **Fencing**: [`Coordinator::fence`] is one transaction that compares the ownership key's
///   `create_revision` with the token and, only if equal, writes `actions/<target>`. The
///   returned [`Fence`] is valid until the lease's validity ends.
/// - **Leaving**: [`EtcdCoordinator::resign`] revokes the lease; etcd deletes the registration
///   and every ownership key at once, and the others take the targets over at their next pass.
///
/// # Requests
/// In the steady state a pass costs one range read; each action one transaction; the lease
/// one keep-alive every third of the TTL. Taking over or giving up targets costs one
/// transaction per 50 targets (more when keys are contended). See
/// [`EtcdCoordinator::status`] for the counts.
///
/// ```no_run
/// use std::sync::Arc;
/// use fleetscale_core::coordination::Coordinator;
/// use fleetscale_etcd::{EtcdConfig, EtcdCoordinator};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let coordinator = Arc::new(EtcdCoordinator::new(EtcdConfig::new(["http://127.0.0.1:2379"]))?);
/// // Hand it to the engine: `Engine::new(..).with_coordinator(coordinator.clone())`.
/// let mine = coordinator.acquire(&["app-1".into(), "app-2".into()]).await?;
/// println!("this replica acts on {mine:?}");
/// coordinator.resign().await; // at shutdown, after the engine stopped
/// # Ok(()) }
/// ```
pub struct EtcdCoordinator {
    config: EtcdConfig,
    prefix: String,
    replica: String,
    client: tokio::sync::Mutex<Option<Client>>,
    lease: RwLock<Option<Arc<Lease>>>,
    owned: RwLock<BTreeMap<String, i64>>,
    pass: tokio::sync::Mutex<PassState>,
    counters: Arc<Counters>,
    gained: AtomicU64,
    lost: AtomicU64,
    replicas_seen: AtomicUsize,
    resigned: AtomicBool,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("replica", &self.replica)
            .field("prefix", &self.prefix)
            .field("endpoints", &self.config.endpoints)
            .finish_non_exhaustive()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "replica".into())
}

/// A replica name for this process: the host name and a random suffix (new at every start,
/// so a restarted process never collides with its own previous registration).
pub fn default_replica_name() -> String {
    format!("{}-{:08x}", host_name(), rand::random::<u32>())
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `names` for a log line: the first few, then how many more.
fn sample(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(NAMED_IN_LOGS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED_IN_LOGS {
        s.push_str(&format!(" and {} more", names.len() - NAMED_IN_LOGS));
    }
    s
}

/// The key-values of the `i`-th operation of a transaction answer, when it was a read.
fn get_response(resp: &TxnResponse, i: usize) -> Option<Vec<etcd_client::KeyValue>> {
    match resp.op_responses().into_iter().nth(i)? {
        TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
        _ => None,
    }
}

/// Who holds an ownership key, as found in a transaction's `else` reads.
enum Holder {
    /// Nobody (the key is gone now).
    Free,
    /// This replica, under its current lease: adopt it with this token.
    Mine(i64),
    /// Another replica (by name) or another lease of ours.
    Other(String),
}

impl EtcdCoordinator {
    /// A coordinator for these settings (checked here, TLS files read). Nothing is sent to
    /// etcd yet: the replica registers at its first [`Coordinator::acquire`] (or
    /// [`EtcdCoordinator::register`]), and while etcd cannot be reached it acts on nothing.
    ///
    /// # Errors
    /// [`EtcdError::Config`] and [`EtcdError::TlsFile`] from [`EtcdConfig::validate`].
    pub fn new(config: EtcdConfig) -> Result<Self, EtcdError> {
        config.validate()?;
        let replica = config
            .replica_name
            .clone()
            .unwrap_or_else(default_replica_name);
        Ok(EtcdCoordinator {
            prefix: config.normalized_prefix(),
            config,
            replica,
            client: tokio::sync::Mutex::new(None),
            lease: RwLock::new(None),
            owned: RwLock::new(BTreeMap::new()),
            pass: tokio::sync::Mutex::new(PassState::default()),
            counters: Arc::default(),
            gained: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            replicas_seen: AtomicUsize::new(0),
            resigned: AtomicBool::new(false),
        })
    }

    /// This replica's name in etcd.
    pub fn replica_name(&self) -> &str {
        &self.replica
    }

    /// The settings this coordinator was built with (endpoints, prefix, lease TTL, timeouts).
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The targets this replica owns now, sorted.
    pub fn owned_targets(&self) -> Vec<String> {
        self.owned_map().keys().cloned().collect()
    }

    /// Counts and state for `/metrics`.
    pub fn status(&self) -> CoordinationStatus {
        let acting = self
            .current_lease()
            .is_some_and(|l| l.valid_until().is_ok())
            && !self.resigned.load(Ordering::Relaxed);
        CoordinationStatus {
            replica: self.replica.clone(),
            replicas: self.replicas_seen.load(Ordering::Relaxed),
            owned: self.owned_map().len(),
            acting,
            gained_total: self.gained.load(Ordering::Relaxed),
            lost_total: self.lost.load(Ordering::Relaxed),
            requests: self.counters.snapshot(),
        }
    }

    /// Registers this replica now (the first [`Coordinator::acquire`] does it otherwise), so
    /// that the others start handing targets over at once.
    ///
    /// # Errors
    /// etcd unreachable, credentials refused, [`EtcdError::DuplicateReplica`].
    pub async fn register(&self) -> Result<(), EtcdError> {
        let mut pass = self.pass.lock().await;
        let client = self.client().await?;
        self.session(&client, &mut pass).await.map(|_| ())
    }

    /// Leaves the cluster: gives up every target and revokes the lease, so that etcd deletes
    /// this replica's registration and ownership keys at once and the others take over at
    /// their next pass (instead of after the TTL). Call it after the engine stopped (no
    /// action in flight); afterwards [`Coordinator::acquire`] returns nothing. Best effort:
    /// if etcd does not answer, the lease expires after its TTL.
    pub async fn resign(&self) {
        let _pass = self.pass.lock().await;
        self.resigned.store(true, Ordering::Relaxed);
        let given_up: Vec<String> = std::mem::take(&mut *self.owned_mut()).into_keys().collect();
        if !given_up.is_empty() {
            self.lost
                .fetch_add(given_up.len() as u64, Ordering::Relaxed);
            let names: Vec<&str> = given_up.iter().map(String::as_str).collect();
            tracing::info!(replica = %self.replica, count = names.len(), targets = %sample(&names),
                reason = "this replica is shutting down", "ownership given up");
        }
        let lease = self.lease_mut().take();
        let client = self.client.lock().await.clone();
        if let (Some(lease), Some(client)) = (lease, client) {
            lease
                .revoke(&client, &self.counters, self.config.request_timeout)
                .await;
        }
    }

    fn owned_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, i64>> {
        self.owned.read().unwrap_or_else(|e| e.into_inner())
    }

    fn owned_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, i64>> {
        self.owned.write().unwrap_or_else(|e| e.into_inner())
    }

    fn current_lease(&self) -> Option<Arc<Lease>> {
        self.lease.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lease_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Lease>>> {
        self.lease.write().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    /// The connected client (connecting first when needed).
    async fn client(&self) -> Result<Client, EtcdError> {
        self.config.connect_once(&self.client).await
    }

    async fn txn(&self, client: &Client, txn: Txn, what: &str) -> Result<TxnResponse, EtcdError> {
        retry(
            what,
            self.config.request_timeout,
            &self.counters.txn,
            || {
                let mut kv = client.kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            },
        )
        .await
    }

    /// Gives up every target because the lease is gone.
    fn drop_all(&self, pass: &mut PassState, reason: &str) {
        let dropped: Vec<String> = std::mem::take(&mut *self.owned_mut()).into_keys().collect();
        pass.releasing.clear();
        pass.passed = false;
        if !dropped.is_empty() {
            self.lost.fetch_add(dropped.len() as u64, Ordering::Relaxed);
            let names: Vec<&str> = dropped.iter().map(String::as_str).collect();
            tracing::warn!(replica = %self.replica, count = names.len(), targets = %sample(&names),
                reason, "ownership lost");
        }
    }

    /// The current lease, granting a new one and registering when there is none or it is
    /// gone.
    async fn session(
        &self,
        client: &Client,
        pass: &mut PassState,
    ) -> Result<Arc<Lease>, EtcdError> {
        if let Some(lease) = self.current_lease() {
            match lease.gone() {
                None => return Ok(lease),
                Some(why) => {
                    self.drop_all(pass, &format!("the lease is gone: {why}"));
                    self.lease_mut().take();
                }
            }
        }
        let lease = Arc::new(Lease::grant(client, &self.config, &self.counters, "replica").await?);
        if let Err(e) = self.register_key(client, &lease).await {
            lease
                .revoke(client, &self.counters, self.config.request_timeout)
                .await;
            return Err(e);
        }
        tracing::info!(replica = %self.replica, lease = format_args!("{:x}", lease.id()),
            ttl = %fleetscale_core::format_seconds(lease.ttl()), prefix = %self.prefix,
            "registered in etcd");
        *self.lease_mut() = Some(lease.clone());
        pass.passed = false;
        Ok(lease)
    }

    /// Writes `replicas/<name>` under `lease`, refusing a name a live replica holds.
    async fn register_key(&self, client: &Client, lease: &Lease) -> Result<(), EtcdError> {
        let key = self.key("replicas", &self.replica);
        let value = serde_json::json!({
            "replica": self.replica,
            "host": host_name(),
            "pid": std::process::id(),
            "started_unix_ms": unix_ms() as u64,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease.id())),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn(client, txn, "registering the replica").await?;
        if resp.succeeded() {
            return Ok(());
        }
        let existing = get_response(&resp, 0).unwrap_or_default();
        match existing.first() {
            Some(kv) if kv.lease() == lease.id() => Ok(()),
            Some(kv) => Err(EtcdError::DuplicateReplica {
                name: self.replica.clone(),
                holder: String::from_utf8_lossy(kv.value()).into_owned(),
            }),
            None => Err(EtcdError::InvalidResponse {
                context: "registering the replica".into(),
                message: "the transaction failed but the key does not exist".into(),
            }),
        }
    }

    /// The names of the live replicas.
    async fn live_replicas(&self, client: &Client) -> Result<Vec<String>, EtcdError> {
        let prefix = self.key("replicas", "");
        let resp = retry(
            "listing the replicas",
            self.config.request_timeout,
            &self.counters.range,
            || {
                let mut kv = client.kv_client();
                let prefix = prefix.clone();
                async move {
                    kv.get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                }
            },
        )
        .await?;
        let mut names = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let name = kv.key_str().map_err(|e| EtcdError::InvalidResponse {
                context: "listing the replicas".into(),
                message: format!("a key is not UTF-8: {e}"),
            })?;
            if let Some(n) = name.strip_prefix(&prefix) {
                names.push(n.to_string());
            }
        }
        Ok(names)
    }

    fn holder(&self, kvs: &[etcd_client::KeyValue], lease: &Lease) -> Holder {
        match kvs.first() {
            None => Holder::Free,
            Some(kv) if kv.lease() == lease.id() => Holder::Mine(kv.create_revision()),
            Some(kv) => Holder::Other(String::from_utf8_lossy(kv.value()).into_owned()),
        }
    }

    /// Tries to create the ownership keys of `targets`; returns the gained ones with their
    /// tokens and the ones another replica holds, with its name.
    async fn take(
        &self,
        client: &Client,
        lease: &Lease,
        targets: &[String],
    ) -> Result<(Vec<(String, i64)>, Vec<(String, String)>), EtcdError> {
        let mut gained = Vec::new();
        let mut held = Vec::new();
        for chunk in targets.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|t| self.key("owners", t)).collect();
            let txn = Txn::new()
                .when(
                    keys.iter()
                        .map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0))
                        .collect::<Vec<_>>(),
                )
                .and_then(
                    keys.iter()
                        .map(|k| {
                            TxnOp::put(
                                k.clone(),
                                self.replica.clone(),
                                Some(PutOptions::new().with_lease(lease.id())),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
                .or_else(
                    keys.iter()
                        .map(|k| TxnOp::get(k.clone(), None))
                        .collect::<Vec<_>>(),
                );
            let what = format!("taking ownership of {} targets", chunk.len());
            let resp = self.txn(client, txn, &what).await?;
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                if rev <= 0 {
                    return Err(EtcdError::InvalidResponse {
                        context: what,
                        message: "no revision in the answer".into(),
                    });
                }
                gained.extend(chunk.iter().map(|t| (t.clone(), rev)));
                continue;
            }
            for (i, t) in chunk.iter().enumerate() {
                let kvs = get_response(&resp, i).unwrap_or_default();
                match self.holder(&kvs, lease) {
                    Holder::Mine(rev) => gained.push((t.clone(), rev)),
                    Holder::Other(who) => held.push((t.clone(), who)),
                    Holder::Free => match self.take_one(client, lease, t).await? {
                        Ok(rev) => gained.push((t.clone(), rev)),
                        Err(who) => held.push((t.clone(), who)),
                    },
                }
            }
        }
        Ok((gained, held))
    }

    /// Tries to create one ownership key: `Ok(Ok(token))`, or `Ok(Err(holder))`.
    async fn take_one(
        &self,
        client: &Client,
        lease: &Lease,
        target: &str,
    ) -> Result<Result<i64, String>, EtcdError> {
        let key = self.key("owners", target);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.replica.clone(),
                Some(PutOptions::new().with_lease(lease.id())),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let what = format!("taking ownership of {target}");
        let resp = self.txn(client, txn, &what).await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        let kvs = get_response(&resp, 0).unwrap_or_default();
        Ok(match self.holder(&kvs, lease) {
            Holder::Mine(rev) => Ok(rev),
            Holder::Other(who) => Err(who),
            // Deleted between the compare and now: the next pass tries again.
            Holder::Free => Err("nobody (released just now)".into()),
        })
    }

    /// Deletes the ownership keys of `targets` whose revision is still the token; returns the
    /// ones whose delete could not be sent (to retry at the next pass).
    async fn release(&self, client: &Client, targets: Vec<(String, i64)>) -> Vec<(String, i64)> {
        let mut failed = Vec::new();
        for chunk in targets.chunks(BATCH) {
            let compares: Vec<Compare> = chunk
                .iter()
                .map(|(t, tok)| {
                    Compare::create_revision(self.key("owners", t), CompareOp::Equal, *tok)
                })
                .collect();
            let deletes: Vec<TxnOp> = chunk
                .iter()
                .flat_map(|(t, _)| {
                    [
                        TxnOp::delete(self.key("owners", t), None),
                        TxnOp::delete(self.key("actions", t), None),
                    ]
                })
                .collect();
            let what = format!("giving up {} targets", chunk.len());
            match self
                .txn(client, Txn::new().when(compares).and_then(deletes), &what)
                .await
            {
                Ok(r) if r.succeeded() => {}
                // Some key is not ours any more (already gone): delete one by one.
                Ok(_) => {
                    for (t, tok) in chunk {
                        let key = self.key("owners", t);
                        let txn = Txn::new()
                            .when([Compare::create_revision(
                                key.clone(),
                                CompareOp::Equal,
                                *tok,
                            )])
                            .and_then([
                                TxnOp::delete(key, None),
                                TxnOp::delete(self.key("actions", t), None),
                            ]);
                        if let Err(e) = self.txn(client, txn, &format!("giving up {t}")).await {
                            tracing::warn!(target_name = %t, error = %e, "giving up ownership failed; retrying at the next pass");
                            failed.push((t.clone(), *tok));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(count = chunk.len(), error = %e, "giving up ownership failed; retrying at the next pass");
                    failed.extend(chunk.iter().cloned());
                }
            }
        }
        failed
    }

    async fn acquire_inner(&self, targets: &[String]) -> Result<Vec<String>, EtcdError> {
        let mut pass = self.pass.lock().await;
        if self.resigned.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let lease = self.session(&client, &mut pass).await?;
        if let Err(e) = lease.valid_until() {
            // Not acting until a keep-alive is acknowledged. The keys stay in etcd while the
            // lease lives: they are re-adopted (those still this replica's) or deleted (the
            // others) at the first pass after it is confirmed again.
            let held: Vec<(String, i64)> =
                std::mem::take(&mut *self.owned_mut()).into_iter().collect();
            if !held.is_empty() {
                self.lost.fetch_add(held.len() as u64, Ordering::Relaxed);
                let names: Vec<&str> = held.iter().map(|(t, _)| t.as_str()).collect();
                tracing::warn!(replica = %self.replica, count = names.len(), targets = %sample(&names),
                    reason = %e, "ownership suspended");
            }
            pass.releasing.extend(held);
            if !pass.stalled {
                tracing::warn!(replica = %self.replica, error = %e, "not acting: the lease is not confirmed");
                pass.stalled = true;
            }
            return Err(e);
        }
        let mut replicas = self.live_replicas(&client).await?;
        if !replicas.contains(&self.replica) {
            // The registration vanished under a lease still acknowledged: it was deleted by
            // hand, or the lease expired between two keep-alives (then the next keep-alive
            // says so). Registering again refuses a name taken meanwhile.
            tracing::warn!(replica = %self.replica, "this replica's registration is missing in etcd; registering again");
            self.register_key(&client, &lease).await?;
            replicas.push(self.replica.clone());
        }
        replicas.sort();
        if pass.stalled {
            tracing::info!(replica = %self.replica, "acting again: the lease is confirmed");
            pass.stalled = false;
        }
        let joined: Vec<&str> = replicas
            .iter()
            .filter(|r| !pass.replicas.contains(r))
            .map(String::as_str)
            .collect();
        let left: Vec<&str> = pass
            .replicas
            .iter()
            .filter(|r| !replicas.contains(r))
            .map(String::as_str)
            .collect();
        if pass.passed && (!joined.is_empty() || !left.is_empty()) {
            tracing::info!(replica = %self.replica, joined = ?joined, left = ?left, live = replicas.len(), "replicas changed");
        }
        let ring_reason = {
            let mut parts = Vec::new();
            if !joined.is_empty() && pass.passed {
                parts.push(format!("replicas joined: {}", joined.join(", ")));
            }
            if !left.is_empty() {
                parts.push(format!("replicas left: {}", left.join(", ")));
            }
            parts.join("; ")
        };
        self.replicas_seen.store(replicas.len(), Ordering::Relaxed);

        let desired: BTreeSet<&str> = targets
            .iter()
            .filter(|t| rendezvous::owner(t, &replicas) == Some(self.replica.as_str()))
            .map(String::as_str)
            .collect();

        // Give up what is no longer ours: out of the map first, so no fence succeeds on it.
        let mut given_up: Vec<(String, i64, String)> = Vec::new();
        {
            let mut owned = self.owned_mut();
            let gone: Vec<String> = owned
                .keys()
                .filter(|t| !desired.contains(t.as_str()))
                .cloned()
                .collect();
            for t in gone {
                let tok = owned.remove(&t).unwrap_or(0);
                let why = if !targets.contains(&t) {
                    "the target is no longer listed".to_string()
                } else {
                    let to = rendezvous::owner(&t, &replicas).unwrap_or("?");
                    format!("it now belongs to replica {to} ({ring_reason})")
                };
                given_up.push((t, tok, why));
            }
        }
        if !given_up.is_empty() {
            self.lost
                .fetch_add(given_up.len() as u64, Ordering::Relaxed);
            let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (t, _, why) in &given_up {
                by_reason.entry(why.as_str()).or_default().push(t.as_str());
                tracing::debug!(replica = %self.replica, target_name = %t, reason = %why, "ownership given up");
            }
            for (why, names) in by_reason {
                tracing::info!(replica = %self.replica, count = names.len(), targets = %sample(&names), reason = why, "ownership given up");
            }
        }
        let mut to_release: Vec<(String, i64)> = std::mem::take(&mut pass.releasing)
            .into_iter()
            .filter(|(t, _)| !desired.contains(t.as_str()))
            .collect();
        to_release.extend(given_up.into_iter().map(|(t, tok, _)| (t, tok)));
        if !to_release.is_empty() {
            pass.releasing = self
                .release(&client, to_release)
                .await
                .into_iter()
                .collect();
        }

        // Take what should be ours.
        let wanted: Vec<String> = {
            let owned = self.owned_map();
            desired
                .iter()
                .filter(|t| !owned.contains_key(**t))
                .map(|t| t.to_string())
                .collect()
        };
        if !wanted.is_empty() {
            let (gained, held) = self.take(&client, &lease, &wanted).await?;
            let mut by_reason: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            {
                let mut owned = self.owned_mut();
                for (t, tok) in &gained {
                    owned.insert(t.clone(), *tok);
                    pass.releasing.remove(t);
                    let why = if let Some(prev) = pass.waiting.get(t) {
                        format!("replica {prev} gave it up or its lease expired")
                    } else if !pass.passed {
                        "this replica started or renewed its lease".to_string()
                    } else if !pass.targets.contains(t) {
                        "new target".to_string()
                    } else if !ring_reason.is_empty() {
                        ring_reason.clone()
                    } else {
                        "its ownership key was free".to_string()
                    };
                    tracing::debug!(replica = %self.replica, target_name = %t, token = tok, reason = %why, "ownership gained");
                    by_reason.entry(why).or_default().push(t.as_str());
                }
            }
            self.gained
                .fetch_add(gained.len() as u64, Ordering::Relaxed);
            for (why, names) in by_reason {
                tracing::info!(replica = %self.replica, count = names.len(), targets = %sample(&names), reason = %why, "ownership gained");
            }
            let mut waiting = BTreeMap::new();
            for (t, who) in held {
                if !pass.waiting.contains_key(&t) {
                    tracing::info!(replica = %self.replica, target_name = %t, holder = %who, "waiting for the previous owner to give the target up");
                }
                waiting.insert(t, who);
            }
            pass.waiting = waiting;
        } else {
            pass.waiting.clear();
        }
        pass.replicas = replicas;
        pass.targets = targets.iter().cloned().collect();
        pass.passed = true;

        let owned = self.owned_map();
        Ok(targets
            .iter()
            .filter(|t| owned.contains_key(*t))
            .cloned()
            .collect())
    }

    async fn fence_inner(&self, note: &ActionNote) -> Result<Fence, EtcdError> {
        let not_owner = |reason: String| EtcdError::NotOwner {
            target: note.target.clone(),
            reason,
        };
        if self.resigned.load(Ordering::Relaxed) {
            return Err(not_owner("this replica has resigned".into()));
        }
        let token = self
            .owned_map()
            .get(&note.target)
            .copied()
            .ok_or_else(|| not_owner(format!("not owned by replica {}", self.replica)))?;
        let lease = self
            .current_lease()
            .ok_or_else(|| not_owner(format!("replica {} holds no lease", self.replica)))?;
        let until = lease.valid_until()?;
        let client = self
            .client
            .lock()
            .await
            .clone()
            .ok_or_else(|| not_owner("not connected".into()))?;
        let owner_key = self.key("owners", &note.target);
        let record = serde_json::json!({
            "replica": self.replica,
            "token": token,
            "kind": note.kind.to_string(),
            "machine": note.machine.as_ref().map(|m| m.to_string()),
            "unix_ms": unix_ms() as u64,
        })
        .to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(
                owner_key.clone(),
                CompareOp::Equal,
                token,
            )])
            .and_then([TxnOp::put(
                self.key("actions", &note.target),
                record,
                Some(PutOptions::new().with_lease(lease.id())),
            )])
            .or_else([TxnOp::get(owner_key, None)]);
        let what = format!("fencing {} on {}", note.kind, note.target);
        // Never wait past the lease's validity: an answer after it is useless.
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(self.config.request_timeout);
        let resp = retry(&what, wait, &self.counters.txn, || {
            let mut kv = client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        if !resp.succeeded() {
            let now = get_response(&resp, 0).unwrap_or_default();
            let reason = match now.first() {
                None => "its ownership key is gone from etcd".to_string(),
                Some(kv) => format!(
                    "its ownership key changed (now held by {} at revision {}, token was {token})",
                    String::from_utf8_lossy(kv.value()),
                    kv.create_revision()
                ),
            };
            let removed = {
                let mut owned = self.owned_mut();
                if owned.get(&note.target) == Some(&token) {
                    owned.remove(&note.target);
                    true
                } else {
                    false
                }
            };
            if removed {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(replica = %self.replica, target_name = %note.target, reason = %reason, "ownership lost");
            }
            return Err(not_owner(reason));
        }
        // Checked again: the answer may have come late.
        let until = lease.valid_until()?;
        Ok(Fence::new(token as u64, Some(until)))
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn acquire(&self, targets: &[String]) -> fleetscale_core::Result<Vec<String>> {
        Ok(self.acquire_inner(targets).await?)
    }

    async fn fence(&self, note: &ActionNote) -> fleetscale_core::Result<Fence> {
        Ok(self.fence_inner(note).await?)
    }
}

impl Drop for EtcdCoordinator {
    fn drop(&mut self) {
        // The keep-alive task ends with the lease; the lease then expires after its TTL.
        if let Some(lease) = self.lease.get_mut().ok().and_then(|l| l.take()) {
            lease.mark_gone("the coordinator was dropped");
        }
    }
}

/// How long after the last acknowledged keep-alive a replica of `config` stops acting, and
/// when the others may take its targets over at the latest: (`ttl - margin`, `ttl`).
pub fn timing(config: &EtcdConfig) -> (Duration, Duration) {
    (
        config.lease_ttl - config.effective_fence_margin(),
        config.lease_ttl,
    )
}
