//! Replicas of either binary sharing the targets through etcd: the engine's coordinator from
//! the etcd settings (parsed and checked in `fleetscale_etcd`), its state on `/metrics`, and
//! leaving etcd at shutdown so that the others take over at once.

use std::sync::Arc;
use std::time::Duration;

use fleetscale_core::engine::Engine;
use fleetscale_etcd::{EtcdConfig, EtcdCoordinator};
use fleetscale_metrics::{AutoscalerMetrics, CoordinationSample};
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigError, Result};

/// How often the coordination series of `/metrics` are refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// This process as one replica: its coordinator and the task keeping `/metrics` current.
#[derive(Debug)]
pub struct Replication {
    coordinator: Arc<EtcdCoordinator>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The series of [`AutoscalerMetrics::set_coordination`] from the coordinator's state.
fn sample(c: &EtcdCoordinator) -> CoordinationSample {
    let status = c.status();
    CoordinationSample {
        replica: status.replica.clone(),
        replicas: status.replicas as u64,
        acting: status.acting,
        owned: c.owned_targets(),
        gained_total: status.gained_total,
        lost_total: status.lost_total,
        store_requests: status.requests.by_kind().to_vec(),
    }
}

impl Replication {
    /// A coordinator for `config` (nothing sent to etcd yet: the replica registers at the
    /// engine's first pass and acts on nothing while etcd cannot be reached) and the task
    /// refreshing its series in `metrics`.
    ///
    /// # Errors
    /// Invalid settings (already checked when the configuration was loaded).
    pub fn start(config: EtcdConfig, metrics: Arc<AutoscalerMetrics>) -> Result<Self> {
        let coordinator =
            Arc::new(EtcdCoordinator::new(config).map_err(|e| ConfigError::config(e.to_string()))?);
        tracing::info!(replica = %coordinator.replica_name(),
            endpoints = %coordinator.config().endpoints.join(","),
            prefix = %coordinator.config().normalized_prefix(),
            lease_ttl = %fleetscale_core::format_seconds(coordinator.config().lease_ttl),
            "sharing the targets with other replicas through etcd");
        metrics.set_coordination(&sample(&coordinator));
        let stop = CancellationToken::new();
        let task = {
            let coordinator = coordinator.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(METRICS_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => metrics.set_coordination(&sample(&coordinator)),
                    }
                }
            })
        };
        Ok(Replication {
            coordinator,
            stop,
            task,
        })
    }

    /// `engine`, acting only on the targets this replica owns, every action fenced.
    pub fn attach(&self, engine: Engine) -> Engine {
        engine.with_coordinator(self.coordinator.clone())
    }

    /// Leaves etcd (after the engine stopped): the lease is revoked, so the other replicas
    /// take this one's targets over at their next pass instead of after the lease TTL.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.coordinator.resign().await;
        tracing::info!(replica = %self.coordinator.replica_name(), "left etcd");
    }
}

/// `engine` with `replication` attached when there is one.
pub fn attach(engine: Engine, replication: Option<&Replication>) -> Engine {
    match replication {
        Some(r) => r.attach(engine),
        None => engine,
    }
}
