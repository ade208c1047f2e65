//! # fleetscale-etcd
//!
//! Coordination of autoscaler replicas on [etcd](https://etcd.io) (v3 API, etcd 3.4 or
//! later), implementing `fleetscale_core::coordination`:
//!
//! - [`EtcdCoordinator`] ([`Coordinator`](fleetscale_core::coordination::Coordinator)):
//!   replicas register under leases, share the targets by rendezvous hashing of their names
//!   over the live replicas, own each target through a key created by compare-and-set under
//!   their lease, and send every mutating action only after a transaction that checks the
//!   ownership key's revision (the fencing token) and records the action.
//! - [`EtcdLedger`] ([`LedgerStore`](fleetscale_core::coordination::LedgerStore)): durable
//!   records with one lock across hosts, appends fenced by the lock: the Weave reclaim ledger
//!   of reclaimers on several hosts, whatever their designated peers.
//! - [`rendezvous`]: the hashing, as pure functions.
//! - `harness` (feature `test-harness`): real etcd servers (one member or a cluster) started on
//!   loopback by tests, with kill, freeze and restart of members, and a test PKI.
//!
//! # Timing
//! With a lease TTL `T` (default 10 s) and a fence margin `M` (default `T/4`):
//! - a replica keeps its lease alive every `T/3`;
//! - it acts (its fences are valid) only until `M` before `T` has passed since it *sent* the
//!   last keep-alive etcd acknowledged, so a replica cut off from etcd, or frozen, stops
//!   acting at least `M` before etcd can expire its lease and hand its targets to another
//!   replica;
//! - a replica that dies loses its targets when its lease expires, at most `T` after its last
//!   keep-alive; the others take them over at their next pass: **takeover within `T` plus one
//!   engine interval**;
//! - a replica that stops cleanly ([`EtcdCoordinator::resign`]) revokes its lease: the others
//!   take over at their next pass.
//!
//! # What etcd must provide
//! - The v3 API (etcd 3.4 or later) reachable from every replica: KV (range, transactions
//!   comparing `create_revision`), leases (grant, keep-alive, revoke). Nothing else (no watch,
//!   no election or lock service).
//! - A quorum: with 3 members one may be down, with 5 two. Without a quorum every request
//!   fails and every replica stops acting until it returns (the leases of all replicas are
//!   renewed by etcd when a leader is elected again, so nobody loses targets to the outage).
//! - With authentication on, a user whose role may read and write the key prefix (default
//!   `/fleetscale/`), e.g. `etcdctl role grant-permission fleetscale readwrite --prefix=true
//!   /fleetscale/`.
//! - Requests: per replica, one keep-alive every `T/3`, one range read per engine pass, one
//!   transaction per action; taking over targets costs one transaction per 50 targets.
//!
//! # What it does not protect against
//! An action already on its way to the backend when the fence's deadline passes is not
//! recalled (the margin `M` is there for that); a host suspended (not just a process frozen)
//! between its deadline check and the send may not count the suspended time (Linux's
//! monotonic clock stops during suspend), which a margin cannot cover either.

mod call;
mod config;
mod coordinator;
mod error;
#[cfg(feature = "test-harness")]
pub mod harness;
mod lease;
mod ledger;
pub mod rendezvous;
mod settings;

pub use config::{
    EtcdConfig, Secret, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE_TTL, DEFAULT_PREFIX,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use coordinator::{default_replica_name, timing, CoordinationStatus, EtcdCoordinator};
pub use error::EtcdError;
pub use lease::RequestCounts;
pub use ledger::EtcdLedger;
pub use settings::{CoordinationKind, CoordinationSection, ENV_SETTINGS};
