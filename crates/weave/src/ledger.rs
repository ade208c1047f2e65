//! The reclaim ledger: a write-ahead, append-only JSON-lines file keyed by peer **name** and
//! **incarnation**, with an exclusive OS file lock. It holds everything a reclaimer must not
//! forget across restarts: which host each peer was seen on, and what was reclaimed.
//!
//! # Format
//! One JSON object per line, e.g.
//! `{"peer":"00:00:00:00:00:05","state":"intent","incarnation":1,"designated":"00:00:00:00:00:01",...}`.
//! A peer's record is the fold of its lines in order ([`fold`]):
//! - `seen`: the peer was seen reachable: its per-start `uid` (Weave's `/report` gives every
//!   peer a random UID on each start), nickname, address, and the host it runs on
//!   (`host` + `source`: a host id of the inventory named `source`), or no host when none
//!   matched. Each `seen` line is complete (it replaces the previous one).
//! - `intent` (about to run `rmpeer` on `designated`), `done` (`rmpeer` answered and took
//!   space), `noop` (`rmpeer` answered that it took nothing: no reclaim happened),
//!   `verified` (the designated peer's IPAM no longer lists the peer).
//! - `incarnation` numbers a peer name's lives: it starts at 1 and grows by one when a name
//!   that was reclaimed comes back (seen reachable with another UID, or owning space again). A
//!   line with a higher number starts a new, empty record; a line with a lower one is stale
//!   and ignored. Reclaims are exactly once **per incarnation**.
//!
//! Lines are never rewritten. A torn last line (a crash in the middle of a write, no trailing
//! newline) is cut off under the lock: the action it announced never started, because every
//! line is written and `fsync`ed (file, then directory) **before** acting on it.
//! Any other malformed line is an error ([`WeaveError::LedgerCorrupt`]): the ledger is never
//! skipped over. Lines written before incarnations and bindings existed (no `incarnation`)
//! read as incarnation 1.
//!
//! # Storage
//! The reclaimer keeps the ledger in any [`LedgerStore`] (`fleetscale_core::coordination`):
//! the file below for one host (the default), or a shared store such as etcd's for
//! reclaimers on several hosts. [`read_records`] and [`append_entry`] read and write the lines
//! of any store.
//!
//! # Lock (the file ledger)
//! `<ledger>.lock` is locked with `flock(LOCK_EX)` (the `fs4` crate). The OS releases the lock
//! when the holder exits or crashes, so there is no stale lock to clean up; the lock file is
//! never deleted (deleting a lock file while another process waits on it would let two
//! processes lock two different files). `flock` is only reliable on a local filesystem: keep
//! the ledger off NFS.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fleetscale_core::coordination::{LedgerLock, LedgerStore};
use serde::{Deserialize, Serialize};

use crate::{PeerName, WeaveError};

/// What a ledger line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// The peer was seen reachable (its UID, nickname, address and host binding).
    Seen,
    /// `rmpeer` is about to be (or was being) run on the designated peer.
    Intent,
    /// `rmpeer` answered and took space over.
    Done,
    /// `rmpeer` answered that it took nothing over: no reclaim happened.
    Noop,
    /// The space was seen to have moved.
    Verified,
}

fn first_incarnation() -> u32 {
    1
}

fn is_first(n: &u32) -> bool {
    *n == 1
}

/// One ledger line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The peer's name (the key).
    pub peer: PeerName,
    /// What this line records.
    pub state: LedgerState,
    /// Which life of the peer name this line is about (1 = the first).
    #[serde(default = "first_incarnation", skip_serializing_if = "is_first")]
    pub incarnation: u32,
    /// The peer's per-start UID, when seen (`seen` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u64>,
    /// The id of the host the peer runs on (`seen` lines; `None`: no host matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The inventory `host` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The peer's nickname when seen (for matching and for humans; never used to act).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// The designated peer that runs (ran) `rmpeer` (reclaim lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub designated: Option<PeerName>,
    /// Addresses the peer owned when the intent was written / addresses taken over (done).
    #[serde(default)]
    pub ips: u64,
    /// The peer's last known address (for matching and `forget`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The id of the process that wrote the line.
    pub pid: u32,
    /// Free text (e.g. `recovered: space already moved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LedgerEntry {
    /// A line for `peer` in `state` about its first incarnation, stamped now.
    pub fn new(peer: PeerName, state: LedgerState) -> Self {
        LedgerEntry {
            peer,
            state,
            incarnation: 1,
            uid: None,
            host: None,
            source: None,
            nickname: None,
            designated: None,
            ips: 0,
            address: None,
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            pid: std::process::id(),
            note: None,
        }
    }

    /// A reclaim line (`intent`, `done`, `noop`, `verified`) run on `designated`.
    pub fn reclaim(
        peer: PeerName,
        state: LedgerState,
        designated: PeerName,
        incarnation: u32,
    ) -> Self {
        LedgerEntry {
            designated: Some(designated),
            incarnation,
            ..LedgerEntry::new(peer, state)
        }
    }
}

/// Where a peer's current incarnation stands in its reclaim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReclaimStage {
    /// `rmpeer` may have run; its answer was not recorded.
    Intent,
    /// `rmpeer` took the space over; not yet seen moved.
    Done,
    /// The designated peer's IPAM was seen no longer listing the peer: the reclaim is complete.
    Verified,
}

impl ReclaimStage {
    /// Whether `rmpeer` is known to have taken the space (done or verified).
    pub fn finished(self) -> bool {
        matches!(self, ReclaimStage::Done | ReclaimStage::Verified)
    }
}

/// The host a peer incarnation was seen running on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBinding {
    /// The host's id in its inventory.
    pub host: String,
    /// The inventory ([`crate::inventory::HostSnapshot::source`]).
    pub source: String,
}

/// A peer name's current incarnation, folded from its ledger lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer name whose lines this record folds.
    pub peer: PeerName,
    /// Which life (1 = the first).
    pub incarnation: u32,
    /// Its UID when last seen reachable in this incarnation.
    pub uid: Option<u64>,
    /// Its nickname, when known.
    pub nickname: Option<String>,
    /// Its last known address, when known.
    pub address: Option<String>,
    /// The host it was seen on in this incarnation.
    pub host: Option<HostBinding>,
    /// The reclaim of this incarnation, if one started.
    pub stage: Option<ReclaimStage>,
    /// The designated peer of that reclaim.
    pub designated: Option<PeerName>,
    /// What the intent recorded as owned, or what `rmpeer` took over.
    pub ips: u64,
}

impl PeerRecord {
    /// An empty record of `peer`'s incarnation `incarnation`.
    pub fn new(peer: PeerName, incarnation: u32) -> Self {
        PeerRecord {
            peer,
            incarnation,
            uid: None,
            nickname: None,
            address: None,
            host: None,
            stage: None,
            designated: None,
            ips: 0,
        }
    }

    /// Applies one more line of this peer (in file order): a line of a later incarnation
    /// starts a new record, a line of an earlier one is ignored.
    pub fn absorb(&mut self, e: &LedgerEntry) {
        if e.peer != self.peer || e.incarnation < self.incarnation {
            return;
        }
        if e.incarnation > self.incarnation {
            *self = PeerRecord::new(e.peer, e.incarnation);
        }
        match e.state {
            LedgerState::Seen => {
                self.uid = e.uid.or(self.uid);
                if e.nickname.is_some() {
                    self.nickname = e.nickname.clone();
                }
                if e.address.is_some() {
                    self.address = e.address.clone();
                }
                self.host = match (&e.host, &e.source) {
                    (Some(host), Some(source)) => Some(HostBinding {
                        host: host.clone(),
                        source: source.clone(),
                    }),
                    _ => None,
                };
            }
            LedgerState::Intent => {
                self.stage = Some(ReclaimStage::Intent);
                self.designated = e.designated;
                self.ips = e.ips;
                if e.address.is_some() {
                    self.address = e.address.clone();
                }
                if e.nickname.is_some() {
                    self.nickname = e.nickname.clone();
                }
            }
            LedgerState::Done => {
                self.stage = Some(ReclaimStage::Done);
                self.designated = e.designated.or(self.designated);
                self.ips = e.ips;
            }
            LedgerState::Noop => {
                self.stage = None;
                self.designated = None;
            }
            LedgerState::Verified => {
                self.stage = Some(ReclaimStage::Verified);
                self.designated = e.designated.or(self.designated);
            }
        }
    }
}

/// Folds ledger lines (in file order) into each peer's current incarnation.
pub fn fold(entries: &[LedgerEntry]) -> BTreeMap<PeerName, PeerRecord> {
    let mut m: BTreeMap<PeerName, PeerRecord> = BTreeMap::new();
    for e in entries {
        m.entry(e.peer)
            .or_insert_with(|| PeerRecord::new(e.peer, e.incarnation))
            .absorb(e);
    }
    m
}

/// Each peer's current incarnation, from the records of any store.
///
/// # Errors
/// [`WeaveError::LedgerCorrupt`] naming the first record that is not a ledger line (a store
/// is never skipped over), or the store's error.
pub async fn read_records(
    lock: &dyn LedgerLock,
    store: &str,
) -> Result<BTreeMap<PeerName, PeerRecord>, WeaveError> {
    let lines = lock.records().await.map_err(|e| WeaveError::LedgerStore {
        store: store.to_string(),
        source: Box::new(e),
    })?;
    let mut entries = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        entries.push(
            serde_json::from_str(l).map_err(|e| WeaveError::LedgerCorrupt {
                path: store.to_string(),
                line_no: i + 1,
                line: l.clone(),
                message: e.to_string(),
            })?,
        );
    }
    Ok(fold(&entries))
}

/// Appends one line durably to any store (nothing when its lock was lost).
///
/// # Errors
/// The store's error.
pub async fn append_entry(
    lock: &dyn LedgerLock,
    store: &str,
    entry: &LedgerEntry,
) -> Result<(), WeaveError> {
    let line = serde_json::to_string(entry).map_err(|e| WeaveError::LedgerStore {
        store: store.to_string(),
        source: Box::new(fleetscale_core::Error::config(e.to_string())),
    })?;
    lock.append(&line)
        .await
        .map_err(|e| WeaveError::LedgerStore {
            store: store.to_string(),
            source: Box::new(e),
        })
}

/// The ledger file and its lock file.
#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
    lock_path: PathBuf,
}

/// Holds the exclusive lock; reading and appending happen through it. Dropping it unlocks.
#[derive(Debug)]
pub struct LedgerGuard {
    ledger: Ledger,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeaveError + '_ {
    move |source| WeaveError::Ledger {
        path: path.display().to_string(),
        source,
    }
}

impl Ledger {
    /// The ledger at `path`; the lock file is `path` + `.lock`. Nothing is created yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        Ledger {
            path,
            lock_path: PathBuf::from(lock),
        }
    }

    /// The path of the ledger file (its lock file is this path plus `.lock`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock, retrying for up to `wait`.
    ///
    /// # Errors
    /// [`WeaveError::Locked`] if another process (or another guard in this process) still
    /// holds it after `wait`; [`WeaveError::Ledger`] on I/O errors.
    pub async fn lock(&self, wait: Duration) -> Result<LedgerGuard, WeaveError> {
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_err(&self.lock_path))?;
        let started = Instant::now();
        loop {
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => break,
                Err(fs4::TryLockError::WouldBlock) => {
                    if started.elapsed() >= wait {
                        return Err(WeaveError::Locked {
                            path: self.lock_path.display().to_string(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(fs4::TryLockError::Error(e)) => return Err(io_err(&self.lock_path)(e)),
            }
        }
        let guard = LedgerGuard {
            ledger: self.clone(),
            _lock: file,
        };
        guard.repair_torn_tail()?;
        Ok(guard)
    }
}

impl LedgerGuard {
    fn repair_torn_tail(&self) -> Result<(), WeaveError> {
        let path = &self.ledger.path;
        let mut f = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(path)(e)),
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io_err(path))?;
        if buf.is_empty() || buf.ends_with(b"\n") {
            return Ok(());
        }
        let keep = buf
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        tracing::warn!(
            ledger = %path.display(),
            torn = %String::from_utf8_lossy(&buf[keep..]),
            "cutting a torn last ledger line (a crash during a write; its action never started)"
        );
        f.set_len(keep as u64).map_err(io_err(path))?;
        f.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        Ok(())
    }

    /// Every line, in order.
    pub fn entries(&self) -> Result<Vec<LedgerEntry>, WeaveError> {
        let path = &self.ledger.path;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(path)(e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| WeaveError::LedgerCorrupt {
                    path: path.display().to_string(),
                    line_no: i + 1,
                    line: l.to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Each peer's current incarnation ([`fold`] of every line).
    pub fn records(&self) -> Result<BTreeMap<PeerName, PeerRecord>, WeaveError> {
        Ok(fold(&self.entries()?))
    }

    /// Appends one line and makes it durable: write, `fsync` the file, `fsync` the directory
    /// (so a newly created ledger's directory entry survives a crash too).
    pub fn append(&self, entry: &LedgerEntry) -> Result<(), WeaveError> {
        let line = serde_json::to_string(entry).map_err(|e| WeaveError::Ledger {
            path: self.ledger.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        self.append_line(&line)
    }

    /// Appends one line (no newline in it) and makes it durable, as [`LedgerGuard::append`].
    fn append_line(&self, line: &str) -> Result<(), WeaveError> {
        let path = &self.ledger.path;
        if line.contains('\n') {
            return Err(WeaveError::Ledger {
                path: path.display().to_string(),
                source: std::io::Error::other("a ledger record must be one line"),
            });
        }
        let line = format!("{line}\n");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        f.write_all(line.as_bytes()).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for Ledger {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn lock(&self, wait: Duration) -> fleetscale_core::Result<Box<dyn LedgerLock>> {
        Ok(Box::new(Ledger::lock(self, wait).await?))
    }
}

#[async_trait]
impl LedgerLock for LedgerGuard {
    async fn records(&self) -> fleetscale_core::Result<Vec<String>> {
        let path = &self.ledger.path;
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(t.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(path)(e).into()),
        }
    }

    async fn append(&self, record: &str) -> fleetscale_core::Result<()> {
        Ok(self.append_line(record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerName {
        PeerName::from_u64(n).unwrap()
    }

    #[tokio::test]
    async fn append_read_and_lock_exclusion() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("sub/reclaim.jsonl"));
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        assert!(g.records().unwrap().is_empty());
        let mut e = LedgerEntry::reclaim(p(5), LedgerState::Intent, p(1), 1);
        e.ips = 262144;
        g.append(&e).unwrap();
        g.append(&LedgerEntry::reclaim(p(5), LedgerState::Done, p(1), 1))
            .unwrap();
        let s = g.records().unwrap();
        assert_eq!(s[&p(5)].stage, Some(ReclaimStage::Done));
        assert_eq!(g.entries().unwrap()[0].ips, 262144);
        // A second lock (even from this process: flock locks are per open file) waits, then
        // gives up.
        let e2 = ledger.lock(Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e2, WeaveError::Locked { .. }), "{e2:?}");
        drop(g);
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        assert_eq!(g.entries().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.jsonl");
        let ledger = Ledger::new(&path);
        {
            let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
            g.append(&LedgerEntry::reclaim(p(5), LedgerState::Intent, p(1), 1))
                .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"peer\":\"00:00:00:00:00:05\",\"sta")
            .unwrap();
        drop(f);
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        assert_eq!(g.entries().unwrap().len(), 1);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        drop(g);
        std::fs::write(&path, "not json\n").unwrap();
        let g = ledger.lock(Duration::from_secs(5)).await.unwrap();
        match g.entries() {
            Err(WeaveError::LedgerCorrupt { line_no, line, .. }) => {
                assert_eq!(line_no, 1);
                assert_eq!(line, "not json");
            }
            other => panic!("{other:?}"),
        }
    }

    fn seen(peer: u64, inc: u32, uid: u64, host: Option<&str>) -> LedgerEntry {
        let mut e = LedgerEntry::new(p(peer), LedgerState::Seen);
        e.incarnation = inc;
        e.uid = Some(uid);
        e.host = host.map(str::to_string);
        e.source = host.map(|_| "inv".to_string());
        e.nickname = Some(format!("dyn{peer}"));
        e
    }

    #[test]
    fn fold_tracks_bindings_reclaims_and_incarnations() {
        let r = |state, inc| LedgerEntry::reclaim(p(4), state, p(1), inc);
        let lines = vec![
            seen(4, 1, 11, Some("m-4")),
            seen(5, 1, 55, None),
            r(LedgerState::Intent, 1),
            r(LedgerState::Done, 1),
            r(LedgerState::Verified, 1),
        ];
        let m = fold(&lines);
        let d4 = &m[&p(4)];
        assert_eq!(d4.incarnation, 1);
        assert_eq!(d4.stage, Some(ReclaimStage::Verified));
        assert_eq!(d4.uid, Some(11));
        assert_eq!(
            d4.host,
            Some(HostBinding {
                host: "m-4".into(),
                source: "inv".into()
            })
        );
        assert_eq!(m[&p(5)].host, None, "seen without a matching host");

        // The name comes back: a new incarnation starts empty (no binding, no reclaim).
        let mut more = lines.clone();
        more.push(seen(4, 2, 12, None));
        let d4 = &fold(&more)[&p(4)];
        assert_eq!((d4.incarnation, d4.stage, d4.uid), (2, None, Some(12)));
        assert_eq!(d4.host, None);
        // A stale line of incarnation 1 written later changes nothing.
        more.push(r(LedgerState::Verified, 1));
        assert_eq!(fold(&more)[&p(4)].stage, None);
        // A no-op rmpeer clears the stage: nothing was reclaimed.
        more.push(r(LedgerState::Intent, 2));
        more.push(r(LedgerState::Noop, 2));
        let d4 = &fold(&more)[&p(4)];
        assert_eq!((d4.incarnation, d4.stage), (2, None));
    }

    #[test]
    fn lines_without_incarnation_read_as_the_first() {
        let old = r#"{"peer":"00:00:00:00:00:05","state":"intent","designated":"00:00:00:00:00:01","ips":262144,"at_unix_ms":1,"pid":7}"#;
        let e: LedgerEntry = serde_json::from_str(old).unwrap();
        assert_eq!(e.incarnation, 1);
        assert_eq!(e.designated, Some(p(1)));
        // And the first incarnation is written without the field.
        let line = serde_json::to_string(&LedgerEntry::new(p(5), LedgerState::Seen)).unwrap();
        assert!(!line.contains("incarnation"), "{line}");
    }
}
