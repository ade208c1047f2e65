//! A lease kept alive in the background, and how long it is *known* to live.
//!
//! etcd deletes a lease (and every key attached to it) when no keep-alive reached it for the
//! lease's TTL, counted from when it processed the last one. The holder cannot see that
//! instant, but it knows when it *sent* each keep-alive that etcd acknowledged: etcd
//! processed it afterwards, so the lease lives at least until `sent + TTL`. A holder acts only
//! before `sent + TTL - margin` ([`Lease::valid_until`]), which ends before etcd could delete
//! the lease whatever happened since (a partition, a dead etcd, this process frozen: a frozen
//! process reads the monotonic clock when it resumes and finds the deadline passed).
//!
//! etcd never shortens a lease: a leader change or a restart of etcd renews every lease to its
//! full TTL (etcd's lessor `Promote`), so the bound holds across them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio_util::sync::CancellationToken;

use crate::{EtcdConfig, EtcdError};

/// Requests sent to etcd, by kind.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub range: AtomicU64,
    pub txn: AtomicU64,
    pub lease_grant: AtomicU64,
    pub keep_alive: AtomicU64,
    pub lease_revoke: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            range: self.range.load(Ordering::Relaxed),
            txn: self.txn.load(Ordering::Relaxed),
            lease_grant: self.lease_grant.load(Ordering::Relaxed),
            keep_alive: self.keep_alive.load(Ordering::Relaxed),
            lease_revoke: self.lease_revoke.load(Ordering::Relaxed),
        }
    }
}

/// Requests sent to etcd since start, by kind (each attempt counts, answered or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Reads (`Range`).
    pub range: u64,
    /// Transactions (every write of this crate is one).
    pub txn: u64,
    /// Leases granted.
    pub lease_grant: u64,
    /// Keep-alive requests (each opening of a keep-alive stream counts as one too: it sends
    /// the first keep-alive).
    pub keep_alive: u64,
    /// Leases revoked.
    pub lease_revoke: u64,
}

impl RequestCounts {
    /// The counts by kind, named as etcd's gRPC methods are (`range`, `txn`, `lease_grant`,
    /// `keep_alive`, `lease_revoke`), for metrics.
    pub fn by_kind(&self) -> [(&'static str, u64); 5] {
        [
            ("range", self.range),
            ("txn", self.txn),
            ("lease_grant", self.lease_grant),
            ("keep_alive", self.keep_alive),
            ("lease_revoke", self.lease_revoke),
        ]
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.range + self.txn + self.lease_grant + self.keep_alive + self.lease_revoke
    }

    /// The requests between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            range: self.range.saturating_sub(earlier.range),
            txn: self.txn.saturating_sub(earlier.txn),
            lease_grant: self.lease_grant.saturating_sub(earlier.lease_grant),
            keep_alive: self.keep_alive.saturating_sub(earlier.keep_alive),
            lease_revoke: self.lease_revoke.saturating_sub(earlier.lease_revoke),
        }
    }
}

#[derive(Debug)]
struct Status {
    /// When the last acknowledged keep-alive (or the grant) was sent.
    confirmed_sent: Instant,
    /// Why the lease is gone, once it is.
    gone: Option<String>,
    /// Consecutive failed keep-alives.
    failures: u32,
}

/// A granted lease with its keep-alive task (stopped on drop).
#[derive(Debug)]
pub(crate) struct Lease {
    id: i64,
    ttl: Duration,
    margin: Duration,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Lease {
    /// Grants a lease of the configured TTL and starts keeping it alive; `purpose` names it in
    /// logs.
    pub(crate) async fn grant(
        client: &Client,
        config: &EtcdConfig,
        counters: &Arc<Counters>,
        purpose: &str,
    ) -> Result<Lease, EtcdError> {
        let asked = config.lease_ttl.as_secs() as i64;
        let sent = Instant::now();
        let resp = crate::call::retry(
            "lease grant",
            config.request_timeout,
            &counters.lease_grant,
            || {
                let mut lc = client.lease_client();
                async move { lc.grant(asked, None).await }
            },
        )
        .await?;
        if !resp.error().is_empty() {
            return Err(EtcdError::Unavailable {
                operation: "lease grant".into(),
                message: resp.error().to_string(),
                source: None,
            });
        }
        // etcd may grant more than asked (its minimum TTL is 1.5 election timeouts); it
        // expires the lease by what it granted.
        let granted = resp.ttl();
        if granted != asked {
            tracing::info!(
                lease = format_args!("{:x}", resp.id()),
                asked,
                granted,
                "etcd granted a lease TTL other than asked"
            );
        }
        let ttl = Duration::from_secs(granted.max(1) as u64);
        let status = Arc::new(Mutex::new(Status {
            confirmed_sent: sent,
            gone: None,
            failures: 0,
        }));
        let lease = Lease {
            id: resp.id(),
            ttl,
            margin: config.effective_fence_margin().min(ttl / 2),
            status: status.clone(),
            cancel: CancellationToken::new(),
        };
        tokio::spawn(keep_alive_loop(KeepAlive {
            client: client.clone(),
            id: lease.id,
            interval: ttl / 3,
            request_timeout: config.request_timeout.min(ttl / 3),
            status,
            counters: counters.clone(),
            cancel: lease.cancel.clone(),
            purpose: purpose.to_string(),
        }));
        tracing::debug!(
            lease = format_args!("{:x}", lease.id),
            ttl = granted,
            purpose,
            "etcd lease granted"
        );
        Ok(lease)
    }

    /// The lease ID.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when the lease is known to live, minus the margin; `Err` when that moment passed
    /// or the lease is gone.
    pub(crate) fn valid_until(&self) -> Result<Instant, EtcdError> {
        let s = self.status();
        if let Some(why) = &s.gone {
            return Err(EtcdError::LeaseLost {
                lease: self.id,
                message: why.clone(),
            });
        }
        let until = s.confirmed_sent + self.ttl - self.margin;
        if Instant::now() < until {
            Ok(until)
        } else {
            Err(EtcdError::NotConfirmed {
                lease: self.id,
                since: s.confirmed_sent.elapsed(),
            })
        }
    }

    /// Whether etcd said the lease is gone (or it was revoked).
    pub(crate) fn gone(&self) -> Option<String> {
        self.status().gone.clone()
    }

    /// Marks the lease gone (an ownership key attached to it vanished, so it expired).
    pub(crate) fn mark_gone(&self, why: &str) {
        let mut s = self.status();
        if s.gone.is_none() {
            s.gone = Some(why.to_string());
        }
        self.cancel.cancel();
    }

    /// Stops the keep-alives and revokes the lease: etcd deletes every key attached to it at
    /// once. Best effort: when etcd does not answer, the lease expires after its TTL anyway.
    pub(crate) async fn revoke(&self, client: &Client, counters: &Counters, timeout: Duration) {
        self.mark_gone("revoked");
        let id = self.id;
        let revoked = crate::call::retry("lease revoke", timeout, &counters.lease_revoke, || {
            let mut lc = client.lease_client();
            async move { lc.revoke(id).await }
        })
        .await;
        match revoked {
            Ok(_) => tracing::debug!(lease = format_args!("{:x}", id), "etcd lease revoked"),
            Err(e) => tracing::warn!(
                lease = format_args!("{:x}", id),
                error = %e,
                "revoking the etcd lease failed; it expires after its TTL"
            ),
        }
    }
}

struct KeepAlive {
    client: Client,
    id: i64,
    interval: Duration,
    request_timeout: Duration,
    status: Arc<Mutex<Status>>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    purpose: String,
}

/// One keep-alive round trip on `stream` (opened first when there is none). Returns the TTL
/// etcd answered (0: the lease is gone).
async fn round(
    k: &KeepAlive,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<i64, EtcdError> {
    Counters::add(&k.counters.keep_alive);
    match stream {
        None => {
            // Opening the stream sends a first keep-alive and reads its answer; the client
            // turns a TTL of 0 into "lease not found".
            let mut lc = k.client.lease_client();
            let opened = lc
                .keep_alive(k.id)
                .await
                .map_err(|e| EtcdError::client("lease keep-alive", e))?;
            *stream = Some(opened);
            Ok(i64::MAX)
        }
        Some((keeper, responses)) => {
            keeper
                .keep_alive()
                .await
                .map_err(|e| EtcdError::client("lease keep-alive", e))?;
            match responses.message().await {
                Ok(Some(r)) => Ok(r.ttl()),
                Ok(None) => Err(EtcdError::Unavailable {
                    operation: "lease keep-alive".into(),
                    message: "the keep-alive stream was closed".into(),
                    source: None,
                }),
                Err(e) => Err(EtcdError::client("lease keep-alive", e)),
            }
        }
    }
}

async fn keep_alive_loop(k: KeepAlive) {
    let lease = format!("{:x}", k.id);
    let mut stream = None;
    let mut next = Instant::now() + k.interval;
    let min_backoff = (k.interval / 8).max(Duration::from_millis(50));
    let mut backoff = min_backoff;
    loop {
        tokio::select! {
            _ = k.cancel.cancelled() => return,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout(k.request_timeout, round(&k, &mut stream)).await;
        let result = match answer {
            Ok(r) => r,
            Err(_) => Err(EtcdError::timeout("lease keep-alive", k.request_timeout)),
        };
        if k.cancel.is_cancelled() {
            return;
        }
        let mut s = k.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(ttl) if ttl > 0 => {
                if s.failures > 0 {
                    tracing::info!(%lease, purpose = %k.purpose, failures = s.failures, "etcd keep-alive acknowledged again");
                }
                // Only ever later: a late answer to an earlier request cannot move it back.
                s.confirmed_sent = s.confirmed_sent.max(sent);
                s.failures = 0;
                backoff = min_backoff;
                next = sent + k.interval;
            }
            Ok(_) | Err(EtcdError::LeaseLost { .. }) => {
                let why = "etcd answered that the lease no longer exists (it expired: no keep-alive reached etcd within its TTL)";
                tracing::warn!(%lease, purpose = %k.purpose, "{why}");
                s.gone = Some(why.to_string());
                return;
            }
            Err(e) => {
                // A stream that missed an answer is dropped: an answer arriving later must not
                // be taken for the answer to a later request.
                stream = None;
                s.failures += 1;
                let left = (s.confirmed_sent + Duration::ZERO).elapsed();
                tracing::warn!(%lease, purpose = %k.purpose, error = %e, failures = s.failures,
                    since_confirmed = %fleetscale_core::format_seconds(left),
                    "etcd keep-alive failed; retrying");
                next = Instant::now() + backoff;
                backoff = (backoff * 2).min(k.interval / 2);
            }
        }
    }
}
