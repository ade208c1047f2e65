//! [`MemoryLedger`]: a [`LedgerStore`] in memory, shared by clones, with a real exclusive
//! lock: several reclaimers in one test process share it as replicas on several hosts share
//! etcd.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;

use crate::coordination::{LedgerLock, LedgerStore};
use crate::{Error, Result};

/// A shared in-memory ledger store: clones see the same records and contend for the same lock.
#[derive(Clone, Debug, Default)]
pub struct MemoryLedger {
    records: Arc<Mutex<Vec<String>>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryLedger {
    /// A store with no records and its lock free; clones of it share both.
    pub fn new() -> Self {
        MemoryLedger::default()
    }

    /// Every record, in append order (without taking the lock).
    pub fn snapshot(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Held {
    records: Arc<Mutex<Vec<String>>>,
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl LedgerStore for MemoryLedger {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn lock(&self, wait: Duration) -> Result<Box<dyn LedgerLock>> {
        let guard = tokio::time::timeout(wait, self.lock.clone().lock_owned())
            .await
            .map_err(|_| Error::conflict("the memory ledger's lock is held by another holder"))?;
        Ok(Box::new(Held {
            records: self.records.clone(),
            _guard: guard,
        }))
    }
}

#[async_trait]
impl LedgerLock for Held {
    async fn records(&self) -> Result<Vec<String>> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn append(&self, record: &str) -> Result<()> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_records_and_the_lock() {
        let a = MemoryLedger::new();
        let b = a.clone();
        let held = a.lock(Duration::from_secs(1)).await.unwrap();
        held.append("one").await.unwrap();
        let e = b.lock(Duration::from_millis(50)).await.err().unwrap();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        drop(held);
        let held = b.lock(Duration::from_secs(1)).await.unwrap();
        assert_eq!(held.records().await.unwrap(), ["one"]);
        assert_eq!(a.snapshot(), ["one"]);
    }
}
