//! The leased destroy of [`FlyScaler`]: take a lease, cordon and gracefully stop a running
//! machine, wait for `stopped` while keeping the lease alive, delete with the lease nonce;
//! release the lease on failure, and remember one whose release failed until it expires (see
//! "Leases" in the [`FlyScaler`] docs).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fleetscale_core::{MachineId, Result};
use tokio::time::Instant;

use super::FlyScaler;
use crate::client::{DestroyOptions, WaitOptions, MAX_WAIT};
use crate::error::FlyError;
use crate::types::{FlyMachine, FlyState, StopRequest};

/// A lease this scaler holds: its nonce and when it was (re)acquired (the request was sent at
/// or after this instant, so the lease lives at least `lease_ttl` from it).
#[derive(Clone, Debug)]
struct HeldLease {
    nonce: String,
    since: Instant,
}

/// Leases left by failed destroys whose release failed too, by machine id, until they expire:
/// the scaler's own operations on the machine send the nonce instead of meeting a 409.
#[derive(Debug, Default)]
pub(super) struct LeftLeases(Mutex<HashMap<String, HeldLease>>);

impl LeftLeases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HeldLease>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The nonce of a lease left on `id` that has not expired (`ttl` after it was taken).
    pub(super) fn nonce(&self, id: &str, ttl: Duration) -> Option<String> {
        let mut leases = self.lock();
        leases.retain(|_, l| l.since.elapsed() < ttl);
        leases.get(id).map(|l| l.nonce.clone())
    }

    fn keep(&self, id: &str, lease: HeldLease) {
        self.lock().insert(id.to_owned(), lease);
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}

impl FlyScaler {
    /// Destroys exactly `id` under a lease; see the module docs.
    pub(super) async fn destroy_leased(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        let app = self.app();
        let ttl = self.config.lease_ttl;
        // Our own lease left by an earlier failed destroy is refreshed, not fought.
        let since = Instant::now();
        let acquired = match self.leases.nonce(id.as_str(), ttl) {
            Some(nonce) => {
                self.client
                    .refresh_lease(app, id.as_str(), &nonce, ttl)
                    .await
            }
            None => {
                self.client
                    .acquire_lease(app, id.as_str(), ttl, Some("fleetscale destroy"))
                    .await
            }
        };
        let mut lease = match acquired {
            Ok(l) if !l.nonce.is_empty() => HeldLease {
                nonce: l.nonce,
                since,
            },
            Ok(_) => {
                return Err(FlyError::UnexpectedState {
                    id: id.to_string(),
                    message: "the lease answer carries no nonce".into(),
                }
                .into())
            }
            Err(e) => {
                self.leases.forget(id.as_str());
                return Err(if e.is_not_found() {
                    self.not_found(id.as_str())
                } else {
                    e.into()
                });
            }
        };
        match self.destroy_steps(&m, &mut lease).await {
            Ok(()) => {
                self.leases.forget(id.as_str());
                tracing::info!(app, id = %id, "machine destroyed");
                Ok(())
            }
            Err(e) => {
                match self
                    .client
                    .release_lease(app, id.as_str(), &lease.nonce)
                    .await
                {
                    Ok(()) => self.leases.forget(id.as_str()),
                    // Not (or no longer) ours: someone else holds the machine.
                    Err(FlyError::LeaseConflict { .. }) => self.leases.forget(id.as_str()),
                    Err(release) => {
                        tracing::warn!(app, id = %id, error = %release, ttl_seconds = ttl.as_secs_f64(),
                            "could not release lease after failed destroy; it expires by itself, and this scaler uses it until then");
                        self.leases.keep(id.as_str(), lease);
                    }
                }
                if e.is_not_found() {
                    Err(self.not_found(id.as_str()))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// The steps of a destroy under `lease`: cordon, graceful stop and wait (refreshing the
    /// lease whenever half its TTL has passed), delete with the nonce.
    async fn destroy_steps(
        &self,
        m: &FlyMachine,
        lease: &mut HeldLease,
    ) -> std::result::Result<(), FlyError> {
        let app = self.app();
        let id = m.id.as_str();
        let policy = &self.config.destroy;
        let running = matches!(
            m.state,
            FlyState::Started | FlyState::Starting | FlyState::Restarting | FlyState::Stopping
        );
        if running && policy.cordon {
            self.client.cordon(app, id, Some(&lease.nonce)).await?;
        }
        if running && policy.stop_first {
            if m.state != FlyState::Stopping {
                self.keep_alive(id, lease).await?;
                let stop = StopRequest {
                    signal: policy.stop_signal.clone(),
                    timeout: policy
                        .stop_timeout
                        .map(|d| format!("{}s", d.as_secs().max(1))),
                };
                match self
                    .client
                    .stop_machine(app, id, &stop, Some(&lease.nonce))
                    .await
                {
                    Ok(()) | Err(FlyError::PreconditionFailed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            // Wait in chunks of half the lease TTL (at least 1 s, the API's unit), refreshing
            // the lease in between, so a stop slower than the TTL keeps the machine leased.
            let deadline = Instant::now() + policy.stop_wait.min(MAX_WAIT);
            let chunk = Duration::from_secs((self.config.lease_ttl.as_secs() / 2).max(1));
            loop {
                self.keep_alive(id, lease).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = WaitOptions::new("stopped", left.min(chunk))
                    .with_instance_id(m.instance_id.clone());
                match self.client.wait_machine(app, id, &wait).await {
                    Ok(_) => break,
                    Err(FlyError::WaitTimeout { .. }) if Instant::now() < deadline => {}
                    Err(FlyError::WaitTimeout { .. }) if policy.force => break,
                    Err(e) => return Err(e),
                }
            }
        }
        self.keep_alive(id, lease).await?;
        let options = DestroyOptions {
            force: policy.force,
            kill: false,
        };
        self.client
            .destroy_machine(app, id, options, Some(&lease.nonce))
            .await
    }

    /// Refreshes `lease` when half its TTL has passed (no call otherwise).
    async fn keep_alive(
        &self,
        id: &str,
        lease: &mut HeldLease,
    ) -> std::result::Result<(), FlyError> {
        let ttl = self.config.lease_ttl;
        if lease.since.elapsed() < ttl / 2 {
            return Ok(());
        }
        let since = Instant::now();
        let fresh = self
            .client
            .refresh_lease(self.app(), id, &lease.nonce, ttl)
            .await?;
        if !fresh.nonce.is_empty() {
            lease.nonce = fresh.nonce;
        }
        lease.since = since;
        Ok(())
    }
}
