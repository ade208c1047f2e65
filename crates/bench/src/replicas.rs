//! Replicas of the real engine sharing apps on the fake Machines API through etcd, and checks
//! of the fake's request log for overlapping actors. Shared by the replica scenarios, the
//! coordination soak and the `etcd_bench` binary.
//!
//! Each replica is an [`Engine`] with its own [`EtcdCoordinator`], its own Machines API
//! client whose `User-Agent` names the replica ([`user_agent`]), and a [`FlyScaler`] per app;
//! every replica lists every app (as app discovery would). The fake records the `User-Agent`
//! of every request, so the log says which replica did what.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetscale_core::coordination::{ActionNote, Coordinator, Fence};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::{DecisionObserver, DecisionRecord};
use fleetscale_core::testing::StaticMetric;
use fleetscale_core::Scope;
use fleetscale_etcd::{EtcdConfig, EtcdCoordinator};
use fleetscale_fly::fake::RequestRecord;
use fleetscale_fly::{ClientConfig, FlyScaler, FlyScalerConfig, MachinesClient, PacingConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fleet;

/// The `User-Agent` of replica `name`'s Machines API client.
pub fn user_agent(name: &str) -> String {
    format!("fleetscale-replica/{name}")
}

/// The replica that sent `r`, from its `User-Agent`.
pub fn actor(r: &RequestRecord) -> Option<&str> {
    r.user_agent.as_deref()?.strip_prefix("fleetscale-replica/")
}

/// The `load` of every app, shared by all replicas (as one Prometheus would be).
#[derive(Clone, Debug)]
pub struct Loads(pub BTreeMap<String, Arc<StaticMetric>>);

impl Loads {
    /// `load = value` for each app.
    pub fn new(apps: &[String], value: f64) -> Loads {
        Loads(
            apps.iter()
                .map(|a| (a.clone(), Arc::new(StaticMetric::new("load", value))))
                .collect(),
        )
    }

    /// Sets every app's load.
    pub fn set_all(&self, value: f64) {
        for m in self.0.values() {
            m.set(value);
        }
    }
}

/// Timing of one replica.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The engine's interval.
    pub interval: Duration,
    /// Targets ticking at once.
    pub concurrency: usize,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            interval: Duration::from_millis(250),
            concurrency: 16,
        }
    }
}

/// A fence granted to a replica: the replica, the target, the token, and when it was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRecord {
    /// The replica.
    pub replica: String,
    /// The target (app).
    pub target: String,
    /// The fencing token (the ownership key's revision in etcd).
    pub token: u64,
    /// When the fence was granted (before the action was sent).
    pub at: SystemTime,
}

/// Every fence granted to the replicas of a test, in one list.
pub type FenceLog = Arc<std::sync::Mutex<Vec<FenceRecord>>>;

/// A coordinator that records every fence it grants.
pub struct RecordingCoordinator {
    name: String,
    inner: Arc<EtcdCoordinator>,
    log: FenceLog,
}

#[async_trait::async_trait]
impl Coordinator for RecordingCoordinator {
    async fn acquire(&self, targets: &[String]) -> fleetscale_core::Result<Vec<String>> {
        self.inner.acquire(targets).await
    }

    async fn fence(&self, note: &ActionNote) -> fleetscale_core::Result<Fence> {
        let f = self.inner.fence(note).await?;
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FenceRecord {
                replica: self.name.clone(),
                target: note.target.clone(),
                token: f.token,
                at: SystemTime::now(),
            });
        Ok(f)
    }
}

/// Stale actions: a mutating request that reached the Machines API *after* a request on the
/// same app sent under a newer ownership (a higher fencing token). Each request's token is
/// that of the last fence its replica got on the app before the request arrived. Empty when
/// fencing held: per app, tokens never go down in arrival order.
pub fn stale_actions(log: &[RequestRecord], fences: &[FenceRecord]) -> Vec<String> {
    let mut bad = Vec::new();
    for (app, ms) in mutations(log) {
        let mut highest: Option<(u64, &Mutation)> = None;
        for m in &ms {
            let token = fences
                .iter()
                .filter(|f| f.target == app && f.replica == m.actor && f.at <= m.at)
                .map(|f| f.token)
                .max();
            let Some(token) = token else {
                bad.push(format!(
                    "{app}: {} {} by {} with no fence before it",
                    m.kind,
                    m.machine.as_deref().unwrap_or(""),
                    m.actor
                ));
                continue;
            };
            if let Some((h, by)) = highest {
                if token < h {
                    bad.push(format!(
                        "{app}: {} by {} under token {token} arrived after {} by {} under token {h}",
                        m.kind, m.actor, by.kind, by.actor
                    ));
                }
            }
            if highest.is_none_or(|(h, _)| token >= h) {
                highest = Some((token, m));
            }
        }
    }
    bad
}

/// Counts the passes of an engine.
#[derive(Debug, Default)]
pub struct PassCounter {
    passes: AtomicU64,
    ticks: AtomicU64,
}

impl PassCounter {
    /// Passes finished.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Ticks finished.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

impl DecisionObserver for PassCounter {
    fn observe(&self, _record: &DecisionRecord) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    fn pass_finished(&self, _targets: usize) {
        self.passes.fetch_add(1, Ordering::Relaxed);
    }
}

/// One running replica.
pub struct Replica {
    /// Its name (in etcd and in the `User-Agent`).
    pub name: String,
    /// Its coordinator.
    pub coordinator: Arc<EtcdCoordinator>,
    /// Its passes.
    pub passes: Arc<PassCounter>,
    /// Every fence of every replica sharing this log.
    pub fences: FenceLog,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The policy of every app: `created = load`.
pub fn policy() -> Policy {
    Policy {
        created: CountRule::from_settings("created", Some("load"), None, None)
            .expect("a valid rule"),
        ..Policy::default()
    }
}

/// The engine targets of `apps` on the Machines API at `fly_url`, as replica `name` sees
/// them.
///
/// # Panics
/// When the client cannot be built (a malformed URL).
pub fn targets(name: &str, fly_url: &str, apps: &[String], loads: &Loads) -> Vec<TargetSpec> {
    let client = MachinesClient::new(
        None,
        ClientConfig {
            base_url: fly_url.to_string(),
            pacing: PacingConfig::disabled(),
            user_agent: user_agent(name),
            ..ClientConfig::default()
        },
    )
    .expect("a Machines API client");
    apps.iter()
        .map(|app| {
            let scaler = FlyScaler::new(client.clone(), FlyScalerConfig::new(app.clone()))
                .expect("a FlyScaler");
            TargetSpec::new(Scope::new(app.clone()), Arc::new(scaler), policy())
                .with_source(loads.0[app].clone())
        })
        .collect()
}

impl Replica {
    /// Registers replica `name` in etcd (so that the others count it from their next pass).
    ///
    /// # Panics
    /// When the settings are invalid or etcd refuses the registration.
    pub async fn register(name: &str, etcd: &EtcdConfig) -> Arc<EtcdCoordinator> {
        let coordinator = Arc::new(
            EtcdCoordinator::new(etcd.clone().with_replica_name(name)).expect("valid settings"),
        );
        coordinator.register().await.expect("registered in etcd");
        coordinator
    }

    /// Starts the engine of a replica over `apps`, once [`Replica::register`] has registered
    /// it.
    pub fn run(
        name: &str,
        coordinator: Arc<EtcdCoordinator>,
        fly_url: &str,
        apps: &[String],
        loads: &Loads,
        options: &ReplicaOptions,
        fences: &FenceLog,
    ) -> Replica {
        let passes = Arc::new(PassCounter::default());
        let engine = Engine::new(
            EngineConfig::default()
                .with_interval(options.interval)
                .with_refresh_interval(Duration::from_secs(3600))
                .with_tick_timeout(Duration::from_secs(60))
                .with_concurrency(options.concurrency),
            Arc::new(targets(name, fly_url, apps, loads)),
        )
        .with_coordinator(Arc::new(RecordingCoordinator {
            name: name.to_string(),
            inner: coordinator.clone(),
            log: fences.clone(),
        }))
        .with_observer(passes.clone());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let _ = engine.run(c.cancelled_owned()).await;
        });
        Replica {
            name: name.to_string(),
            coordinator,
            passes,
            fences: fences.clone(),
            cancel,
            task: Some(task),
        }
    }

    /// Dies as `kill -9` would: the engine stops at once (calls in flight are dropped), the
    /// lease is neither revoked nor kept alive any more.
    pub async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Stops cleanly: the engine finishes its pass, then the replica resigns.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.coordinator.resign().await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A mutating request of the log: create, start, stop, destroy (the calls a fence allows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// When the fake received it.
    pub at: SystemTime,
    /// The replica that sent it.
    pub actor: String,
    /// `create`, `start`, `stop` or `destroy`.
    pub kind: &'static str,
    /// The machine, for all but creates.
    pub machine: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// The mutating requests of `log`, by app, in arrival order.
pub fn mutations(log: &[RequestRecord]) -> BTreeMap<String, Vec<Mutation>> {
    let mut out: BTreeMap<String, Vec<Mutation>> = BTreeMap::new();
    for r in log {
        let kind = fleet::request_kind(&r.method, &r.path);
        if !matches!(kind, "create" | "start" | "stop" | "destroy") {
            continue;
        }
        let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let (Some(app), machine) = (segs.get(2), segs.get(4)) else {
            continue;
        };
        out.entry(app.to_string()).or_default().push(Mutation {
            at: r.at,
            actor: actor(r).unwrap_or("?").to_string(),
            kind,
            machine: machine.map(|m| m.to_string()),
            status: r.status,
        });
    }
    for v in out.values_mut() {
        v.sort_by_key(|m| m.at);
    }
    out
}

/// Overlapping actors: apps on which a replica acted again after another replica had acted
/// (ownership went back and forth, or two acted in the same period). Each entry names the
/// app and the sequence of actors.
pub fn overlapping_actors(log: &[RequestRecord]) -> Vec<String> {
    let mut bad = Vec::new();
    for (app, ms) in mutations(log) {
        let mut sequence: Vec<&str> = Vec::new();
        for m in &ms {
            if sequence.last() != Some(&m.actor.as_str()) {
                sequence.push(&m.actor);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if sequence.iter().any(|a| !seen.insert(*a)) {
            bad.push(format!("{app}: {}", sequence.join(" -> ")));
        }
    }
    bad
}

/// Machines destroyed more than once (successful `DELETE`s per machine).
pub fn destroyed_twice(log: &[RequestRecord]) -> Vec<String> {
    let mut count: BTreeMap<String, u32> = BTreeMap::new();
    for ms in mutations(log).values() {
        for m in ms.iter().filter(|m| m.kind == "destroy" && m.status < 300) {
            *count
                .entry(m.machine.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(m, n)| format!("{m} destroyed {n} times"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(secs: u64, actor: &str, method: &str, path: &str) -> RequestRecord {
        RequestRecord {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            status: 200,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            request_id: String::new(),
            nonce: None,
            user_agent: Some(user_agent(actor)),
        }
    }

    fn fence(secs: u64, replica: &str, token: u64) -> FenceRecord {
        FenceRecord {
            replica: replica.into(),
            target: "app".into(),
            token,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_request_under_an_older_token_after_a_newer_one_is_stale() {
        let log = vec![
            request(2, "a", "POST", "/v1/apps/app/machines"),
            request(6, "b", "POST", "/v1/apps/app/machines"),
            request(8, "a", "DELETE", "/v1/apps/app/machines/m1"),
        ];
        let fences = vec![fence(1, "a", 10), fence(5, "b", 20), fence(7, "a", 10)];
        let stale = stale_actions(&log, &fences);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(
            stale[0].contains("destroy by a under token 10"),
            "{stale:?}"
        );
        // a regained the app under a newer token: fine.
        let fences = vec![fence(1, "a", 10), fence(5, "b", 20), fence(7, "a", 30)];
        assert!(stale_actions(&log, &fences).is_empty());
        // A request with no fence before it at all.
        let stale = stale_actions(&log[..1], &[fence(3, "a", 10)]);
        assert!(stale[0].contains("no fence"), "{stale:?}");
        assert_eq!(overlapping_actors(&log), ["app: a -> b -> a"]);
        assert!(destroyed_twice(&log).is_empty());
    }
}
