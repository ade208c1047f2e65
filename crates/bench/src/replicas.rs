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
    /// Registers replica `name` in etcd, then starts its engine over `apps`.
    ///
    /// # Panics
    /// When the settings are invalid or etcd refuses the registration.
    pub async fn start(
        name: &str,
        etcd: &EtcdConfig,
        fly_url: &str,
        apps: &[String],
        loads: &Loads,
        options: &ReplicaOptions,
    ) -> Replica {
        let coordinator = Arc::new(
            EtcdCoordinator::new(etcd.clone().with_replica_name(name)).expect("valid settings"),
        );
        coordinator.register().await.expect("registered in etcd");
        let passes = Arc::new(PassCounter::default());
        let engine = Engine::new(
            EngineConfig {
                interval: options.interval,
                refresh_interval: Duration::from_secs(3600),
                tick_timeout: Duration::from_secs(20),
                concurrency: options.concurrency,
                ..EngineConfig::default()
            },
            Arc::new(targets(name, fly_url, apps, loads)),
        )
        .with_coordinator(coordinator.clone())
        .with_observer(passes.clone());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let _ = engine.run(c).await;
        });
        Replica {
            name: name.to_string(),
            coordinator,
            passes,
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
