//! [`EtcdLedger`]: a [`LedgerStore`] in etcd, shared by processes on any number of hosts (the
//! Weave reclaim ledger of reclaimers on several admin hosts).
//!
//! The contract is documented on the type, where it is published.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use fleetscale_core::coordination::{LedgerLock, LedgerStore};

use crate::call::retry;
use crate::lease::{Counters, Lease, RequestCounts};
use crate::{EtcdConfig, EtcdError};

/// Records read per request.
const PAGE: i64 = 500;

/// A [`LedgerStore`] in etcd, shared by processes on any number of hosts (the Weave reclaim
/// ledger of reclaimers on several admin hosts).
///
/// # Keys (under `<prefix>ledger/<name>/`)
/// | key | value | lease |
/// |---|---|---|
/// | `lock` | JSON: the holder's host, process and start of holding | the holder's |
/// | `records/<sequence>` | one record, as appended | none (durable) |
///
/// Sequences are 20-digit, zero-padded decimals from 1, so etcd's key order is append order.
///
/// # Guarantees
/// - **One holder**: the lock is taken by creating `lock` under a fresh lease in a transaction
///   that succeeds only when the key does not exist. A holder that crashes or is cut off
///   loses it when its lease expires ([`EtcdConfig::lease_ttl`]); dropping the held lock
///   revokes the lease at once.
/// - **Fenced appends**: each append is one transaction comparing `lock`'s `create_revision`
///   with the one this holder created and `records/<next>`'s with 0 (absent), and writing the
///   record only if both hold. A holder whose lock was lost (lease expired, key deleted)
///   appends nothing ([`EtcdError::LockLost`]); a record never overwrites another.
/// - **Durable, ordered, linearizable**: etcd answers a write once a quorum has it on disk;
///   reads are linearizable (etcd's default), so every later holder reads every record, in
///   append order.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use fleetscale_core::coordination::{LedgerLock, LedgerStore};
/// use fleetscale_etcd::{EtcdConfig, EtcdLedger};
///
/// # async fn demo() -> fleetscale_core::Result<()> {
/// let store = EtcdLedger::new(EtcdConfig::new(["http://127.0.0.1:2379"]), "weave-reclaim")?;
/// let held = store.lock(Duration::from_secs(30)).await?;
/// held.append(r#"{"peer":"00:00:00:00:00:05","state":"intent"}"#).await?;
/// assert!(!held.records().await?.is_empty());
/// drop(held); // releases the lock
/// // The Weave reclaimer: ReclaimConfig::with_ledger_store(Arc::new(store))
/// # Ok(()) }
/// ```
pub struct EtcdLedger {
    config: EtcdConfig,
    base: String,
    client: tokio::sync::Mutex<Option<Client>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for EtcdLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLedger")
            .field("base", &self.base)
            .field("endpoints", &self.config.endpoints)
            .finish_non_exhaustive()
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    // The smallest key after every key starting with `prefix` (etcd's `clientv3.GetPrefixRangeEnd`).
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn get_kvs(resp: &TxnResponse, i: usize) -> Vec<etcd_client::KeyValue> {
    match resp.op_responses().into_iter().nth(i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().to_vec(),
        _ => Vec::new(),
    }
}

impl EtcdLedger {
    /// A ledger named `name` (a path segment: `weave-reclaim`, one per cluster) in etcd.
    /// Nothing is sent to etcd until the first lock.
    ///
    /// # Errors
    /// The settings' errors ([`EtcdConfig::validate`]); a name that is empty or holds `/`.
    pub fn new(config: EtcdConfig, name: &str) -> Result<Self, EtcdError> {
        config.validate()?;
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(EtcdError::config(format!(
                "ledger name {name:?} must be non-empty, without `/` or control characters"
            )));
        }
        Ok(EtcdLedger {
            base: format!("{}ledger/{name}/", config.normalized_prefix()),
            config,
            client: tokio::sync::Mutex::new(None),
            counters: Arc::default(),
        })
    }

    /// The etcd key of this ledger's lock (`<prefix>ledger/<name>/lock`).
    pub fn lock_key(&self) -> String {
        format!("{}lock", self.base)
    }

    /// The key prefix of this ledger's records (`<prefix>ledger/<name>/records/`).
    pub fn records_prefix(&self) -> String {
        format!("{}records/", self.base)
    }

    /// Requests sent to etcd since start.
    pub fn requests(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    async fn client(&self) -> Result<Client, EtcdError> {
        self.config.connect_once(&self.client).await
    }

    async fn lock_inner(&self, wait: Duration) -> Result<EtcdLedgerLock, EtcdError> {
        let deadline = Instant::now() + wait;
        let client = self.client().await?;
        let lease = Lease::grant(&client, &self.config, &self.counters, "ledger lock").await?;
        let result = self.take_lock(&client, &lease, deadline, wait).await;
        match result {
            Ok((lock_rev, next)) => Ok(EtcdLedgerLock {
                client,
                lease: Some(lease),
                lock_key: self.lock_key(),
                lock_rev,
                records_prefix: self.records_prefix(),
                next: tokio::sync::Mutex::new(Some(next)),
                counters: self.counters.clone(),
                request_timeout: self.config.request_timeout,
            }),
            Err(e) => {
                lease
                    .revoke(&client, &self.counters, self.config.request_timeout)
                    .await;
                Err(e)
            }
        }
    }

    async fn take_lock(
        &self,
        client: &Client,
        lease: &Lease,
        deadline: Instant,
        wait: Duration,
    ) -> Result<(i64, u64), EtcdError> {
        let key = self.lock_key();
        let holder = serde_json::json!({
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
            "pid": std::process::id(),
            "since_unix_ms": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "lease": format!("{:x}", lease.id()),
        })
        .to_string();
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    holder.clone(),
                    Some(PutOptions::new().with_lease(lease.id())),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = txn_call(
                client,
                &self.counters,
                self.config.request_timeout,
                txn,
                "taking the ledger lock",
            )
            .await?;
            let rev = if resp.succeeded() {
                resp.header().map(|h| h.revision()).unwrap_or(0)
            } else {
                match get_kvs(&resp, 0).first() {
                    // Our own earlier attempt, whose answer was lost.
                    Some(kv) if kv.lease() == lease.id() => kv.create_revision(),
                    Some(kv) => {
                        if Instant::now() >= deadline {
                            return Err(EtcdError::LockBusy {
                                key,
                                holder: String::from_utf8_lossy(kv.value()).into_owned(),
                                waited: wait,
                            });
                        }
                        let pause = Duration::from_millis(rand::random_range(100..=300));
                        tokio::time::sleep(pause.min(deadline - Instant::now())).await;
                        continue;
                    }
                    // Released between the compare and the read: try again at once.
                    None => continue,
                }
            };
            let next = last_sequence(
                client,
                &self.counters,
                self.config.request_timeout,
                &self.records_prefix(),
            )
            .await?
                + 1;
            return Ok((rev, next));
        }
    }
}

async fn txn_call(
    client: &Client,
    counters: &Counters,
    timeout: Duration,
    txn: Txn,
    what: &str,
) -> Result<TxnResponse, EtcdError> {
    retry(what, timeout, &counters.txn, || {
        let mut kv = client.kv_client();
        let txn = txn.clone();
        async move { kv.txn(txn).await }
    })
    .await
}

/// The highest record sequence (0 when there is none).
async fn last_sequence(
    client: &Client,
    counters: &Counters,
    timeout: Duration,
    prefix: &str,
) -> Result<u64, EtcdError> {
    let what = "reading the last ledger record";
    let resp = retry(what, timeout, &counters.range, || {
        let mut kv = client.kv_client();
        let prefix = prefix.to_string();
        async move {
            kv.get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
        }
    })
    .await?;
    match resp.kvs().first() {
        None => Ok(0),
        Some(kv) => {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            key.strip_prefix(prefix)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| EtcdError::InvalidResponse {
                    context: what.into(),
                    message: format!("{key} is not a ledger record key"),
                })
        }
    }
}

#[async_trait]
impl LedgerStore for EtcdLedger {
    fn describe(&self) -> String {
        format!("etcd {} {}", self.config.endpoints.join(","), self.base)
    }

    async fn lock(&self, wait: Duration) -> fleetscale_core::Result<Box<dyn LedgerLock>> {
        Ok(Box::new(self.lock_inner(wait).await?))
    }
}

/// The held lock of an [`EtcdLedger`]; dropping it revokes its lease (releasing the lock).
struct EtcdLedgerLock {
    client: Client,
    lease: Option<Lease>,
    lock_key: String,
    lock_rev: i64,
    records_prefix: String,
    /// The next sequence; `None` after an append whose outcome is unknown (read again).
    next: tokio::sync::Mutex<Option<u64>>,
    counters: Arc<Counters>,
    request_timeout: Duration,
}

impl Drop for EtcdLedgerLock {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let client = self.client.clone();
        let counters = self.counters.clone();
        let timeout = self.request_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { lease.revoke(&client, &counters, timeout).await });
            }
            // No runtime: the lease expires after its TTL.
            Err(_) => lease.mark_gone("dropped outside a runtime"),
        }
    }
}

impl EtcdLedgerLock {
    async fn records_inner(&self) -> Result<Vec<String>, EtcdError> {
        let what = "reading the ledger records";
        let end = prefix_end(&self.records_prefix);
        let mut start = self.records_prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let resp = retry(what, self.request_timeout, &self.counters.range, || {
                let mut kv = self.client.kv_client();
                let (start, end) = (start.clone(), end.clone());
                async move {
                    kv.get(
                        start,
                        Some(GetOptions::new().with_range(end).with_limit(PAGE)),
                    )
                    .await
                }
            })
            .await?;
            for kv in resp.kvs() {
                let v = kv.value_str().map_err(|e| EtcdError::InvalidResponse {
                    context: what.into(),
                    message: format!(
                        "record {} is not UTF-8: {e}",
                        String::from_utf8_lossy(kv.key())
                    ),
                })?;
                out.push(v.to_string());
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn append_inner(&self, record: &str) -> Result<(), EtcdError> {
        let mut next = self.next.lock().await;
        let seq = match *next {
            Some(n) => n,
            None => {
                last_sequence(
                    &self.client,
                    &self.counters,
                    self.request_timeout,
                    &self.records_prefix,
                )
                .await?
                    + 1
            }
        };
        let key = format!("{}{seq:020}", self.records_prefix);
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.lock_key.clone(), CompareOp::Equal, self.lock_rev),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key.clone(), record, None)])
            .or_else([
                TxnOp::get(self.lock_key.clone(), None),
                TxnOp::get(key.clone(), None),
            ]);
        let resp = match txn_call(
            &self.client,
            &self.counters,
            self.request_timeout,
            txn,
            "appending a ledger record",
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                // The record may have been written: read the sequence again next time.
                *next = None;
                return Err(e);
            }
        };
        if resp.succeeded() {
            *next = Some(seq + 1);
            return Ok(());
        }
        let lock_now = get_kvs(&resp, 0);
        if lock_now.first().map(|kv| kv.create_revision()) != Some(self.lock_rev) {
            *next = None;
            return Err(EtcdError::LockLost {
                key: self.lock_key.clone(),
            });
        }
        match get_kvs(&resp, 1).first() {
            // The same record, written by an attempt whose answer was lost.
            Some(kv) if kv.value() == record.as_bytes() => {
                *next = Some(seq + 1);
                Ok(())
            }
            _ => {
                *next = None;
                Err(EtcdError::InvalidResponse {
                    context: "appending a ledger record".into(),
                    message: format!("{key} already holds another record"),
                })
            }
        }
    }
}

#[async_trait]
impl LedgerLock for EtcdLedgerLock {
    async fn records(&self) -> fleetscale_core::Result<Vec<String>> {
        Ok(self.records_inner().await?)
    }

    async fn append(&self, record: &str) -> fleetscale_core::Result<()> {
        Ok(self.append_inner(record).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn names_are_checked() {
        let c = EtcdConfig::new(["127.0.0.1:2379"]);
        assert!(EtcdLedger::new(c.clone(), "a/b").is_err());
        assert!(EtcdLedger::new(c.clone(), "").is_err());
        let l = EtcdLedger::new(c.with_prefix("/x"), "weave").unwrap();
        assert_eq!(l.lock_key(), "/x/ledger/weave/lock");
        assert_eq!(l.records_prefix(), "/x/ledger/weave/records/");
    }
}
