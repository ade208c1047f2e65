//! `EtcdLedger` against real etcd: one lock holder at a time across processes' clients,
//! records durable and in append order, and a holder that lost its lock appends nothing.

use std::sync::Arc;
use std::time::Duration;

use fleetscale_core::coordination::LedgerStore;
use fleetscale_core::Error;
use fleetscale_etcd::harness::{EtcdCluster, TcpProxy};
use fleetscale_etcd::{EtcdConfig, EtcdLedger};

fn tuned(config: &EtcdConfig) -> EtcdConfig {
    config
        .clone()
        .with_lease_ttl(Duration::from_secs(2))
        .with_fence_margin(Duration::from_millis(500))
        .with_request_timeout(Duration::from_millis(500))
}

/// A store with its own client, as another host would have.
fn store(config: &EtcdConfig) -> EtcdLedger {
    EtcdLedger::new(tuned(config), "weave-reclaim").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_exclusive_and_records_come_back_in_order() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let config = cluster.config();
    let (one, two) = (store(&config), store(&config));
    assert!(one.describe().contains("ledger/weave-reclaim/"));

    let held = one.lock(Duration::from_secs(5)).await.unwrap();
    assert!(held.records().await.unwrap().is_empty());
    for r in ["first", "second", "third"] {
        held.append(r).await.unwrap();
    }
    // The other host waits, then gives up with the holder's name.
    let e = two.lock(Duration::from_millis(400)).await.err().unwrap();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().contains("pid"), "{e}");

    // Dropping releases at once (the lease is revoked): the other gets it well within its wait.
    drop(held);
    let held = two.lock(Duration::from_secs(5)).await.unwrap();
    assert_eq!(held.records().await.unwrap(), ["first", "second", "third"]);
    held.append("{\"peer\":\"00:00:00:00:00:05\",\"state\":\"intent\"}")
        .await
        .unwrap();
    drop(held);
    let held = one.lock(Duration::from_secs(5)).await.unwrap();
    let records = held.records().await.unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[3],
        "{\"peer\":\"00:00:00:00:00:05\",\"state\":\"intent\"}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_records_are_read_back_across_pages() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let ledger = store(&cluster.config());
    let held = ledger.lock(Duration::from_secs(5)).await.unwrap();
    for i in 0..1203 {
        held.append(&format!("record {i}")).await.unwrap();
    }
    drop(held);
    let held = ledger.lock(Duration::from_secs(5)).await.unwrap();
    let records = held.records().await.unwrap();
    assert_eq!(records.len(), 1203);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| *r == format!("record {i}")));
    held.append("after").await.unwrap();
    assert_eq!(held.records().await.unwrap().last().unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lock_was_deleted_appends_nothing() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let config = cluster.config();
    let (one, two) = (store(&config), store(&config));
    let held = one.lock(Duration::from_secs(5)).await.unwrap();
    held.append("kept").await.unwrap();
    let mut c = cluster.client().await.unwrap();
    c.delete(one.lock_key(), None).await.unwrap();

    let e = held.append("must not land").await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("nothing appended"), "{e}");
    // Another holder takes the lock; the old one still cannot append.
    let other = two.lock(Duration::from_secs(5)).await.unwrap();
    assert!(held.append("nor this").await.is_err());
    assert_eq!(other.records().await.unwrap(), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_loses_the_lock_when_its_lease_expires_and_appends_nothing_late() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let config = cluster.config();
    let proxy = TcpProxy::start(cluster.endpoint(0).trim_start_matches("http://"))
        .await
        .unwrap();
    let mut via_proxy = config.clone();
    via_proxy.endpoints = vec![proxy.url(false)];
    let (cut_off, other) = (store(&via_proxy), store(&config));
    let held = cut_off.lock(Duration::from_secs(5)).await.unwrap();
    held.append("before the partition").await.unwrap();

    proxy.cut();
    // The other host gets the lock once the cut-off holder's lease expires.
    let taken = other.lock(Duration::from_secs(30)).await.unwrap();
    taken.append("by the new holder").await.unwrap();
    // The old holder's append, sent during the partition and delivered after it heals, is
    // refused by etcd: the lock it compares with is not its own any more.
    let (late, ()) = tokio::join!(held.append("late"), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.heal();
    });
    let e = late.unwrap_err();
    assert!(
        matches!(e, Error::Refused { .. } | Error::Unavailable { .. }),
        "{e}"
    );
    let again = held.append("late again").await.unwrap_err();
    assert!(matches!(again, Error::Refused { .. }), "{again}");
    assert_eq!(
        taken.records().await.unwrap(),
        ["before the partition", "by the new holder"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holders_on_several_clients_never_interleave() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let config = cluster.config();
    let stores: Vec<Arc<EtcdLedger>> = (0..3).map(|_| Arc::new(store(&config))).collect();
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let s = stores[worker % 3].clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..4 {
                let held = s.lock(Duration::from_secs(30)).await.unwrap();
                let n = held.records().await.unwrap().len();
                // Read, think, write: without exclusion another holder would append between.
                tokio::time::sleep(Duration::from_millis(5)).await;
                held.append(&format!("{worker}:{round}:{n}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let held = stores[0].lock(Duration::from_secs(5)).await.unwrap();
    let records = held.records().await.unwrap();
    assert_eq!(records.len(), 24);
    for (i, r) in records.iter().enumerate() {
        assert!(
            r.ends_with(&format!(":{i}")),
            "record {i} is {r}: appended without exclusion"
        );
    }
}
