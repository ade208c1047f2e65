//! The reclaim ledger: a write-ahead, append-only JSON-lines file keyed by peer **name**, with
//! an exclusive OS file lock.
//!
//! # Format
//! One JSON object per line, e.g.
//! `{"peer":"00:00:00:00:00:05","state":"intent","designated":"00:00:00:00:00:01",...}`.
//! A peer's state is its **last** line: `intent` (about to run `rmpeer` on `designated`),
//! `done` (`rmpeer` answered), `verified` (the designated peer's IPAM no longer lists it).
//! Lines are never rewritten. A torn last line (a crash in the middle of a write, no trailing
//! newline) is cut off under the lock: the action it announced never started, because every
//! line is written and `fsync`ed (file, then directory) **before** acting on it.
//! Any other malformed line is an error ([`WeaveError::LedgerCorrupt`]): the ledger is never
//! skipped over.
//!
//! # Lock
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

use serde::{Deserialize, Serialize};

use crate::{PeerName, WeaveError};

/// A peer's reclaim state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// `rmpeer` is about to be (or was being) run on the designated peer.
    Intent,
    /// `rmpeer` answered.
    Done,
    /// The space was seen to have moved.
    Verified,
}

/// One ledger line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The reclaimed peer's name (the key).
    pub peer: PeerName,
    /// The state this line records.
    pub state: LedgerState,
    /// The peer's nickname when seen (for humans only; never used to act).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// The designated peer that runs (ran) `rmpeer`.
    pub designated: PeerName,
    /// Addresses the peer owned when the intent was written / addresses taken over (done).
    #[serde(default)]
    pub ips: u64,
    /// The peer's last known address (for `forget`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The writing process.
    pub pid: u32,
    /// Free text (e.g. `recovered: space already moved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LedgerEntry {
    /// A line for `peer` in `state`, stamped now.
    pub fn new(peer: PeerName, state: LedgerState, designated: PeerName) -> Self {
        LedgerEntry {
            peer,
            state,
            nickname: None,
            designated,
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

    /// The ledger file.
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

    /// Each peer's last line.
    pub fn states(&self) -> Result<BTreeMap<PeerName, LedgerEntry>, WeaveError> {
        let mut m = BTreeMap::new();
        for e in self.entries()? {
            m.insert(e.peer, e);
        }
        Ok(m)
    }

    /// Appends one line and makes it durable: write, `fsync` the file, `fsync` the directory
    /// (so a newly created ledger's directory entry survives a crash too).
    pub fn append(&self, entry: &LedgerEntry) -> Result<(), WeaveError> {
        let path = &self.ledger.path;
        let mut line = serde_json::to_string(entry).map_err(|e| WeaveError::Ledger {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
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
        assert!(g.states().unwrap().is_empty());
        let mut e = LedgerEntry::new(p(5), LedgerState::Intent, p(1));
        e.ips = 262144;
        g.append(&e).unwrap();
        g.append(&LedgerEntry::new(p(5), LedgerState::Done, p(1)))
            .unwrap();
        let s = g.states().unwrap();
        assert_eq!(s[&p(5)].state, LedgerState::Done);
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
            g.append(&LedgerEntry::new(p(5), LedgerState::Intent, p(1)))
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
}
