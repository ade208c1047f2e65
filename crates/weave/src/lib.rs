//! # fleetscale-weave
//!
//! The Weave Net backend of fleetscale, following the Weave Net *autoscaling* procedure
//! (`weave:site/operational-guide/autoscaling.md`): a fixed cluster of 3 or 5 peers launched
//! with `weave launch --no-restart $PEERS` and primed with `weave prime`, plus dynamic peers
//! that join as IPAM observers (`weave launch --no-restart --ipalloc-init=observer $PEERS`,
//! `$PEERS` = the fixed cluster only), leave with `weave reset`, and, when they vanish without
//! leaving, have their IP space reclaimed with `rmpeer` on exactly one surviving fixed peer.
//!
//! - [`RouterClient`]: the router's HTTP API (`/status*`, `/report`, `DELETE /peer`,
//!   `DELETE /peer/{name}`, `/connect`, `/forget`, `/ring`), with parsers for every text
//!   format ([`status`]) and the typed JSON report ([`report`]).
//! - [`launch`]: exact `weave launch` argument lists, `/etc/sysconfig/weave`, the systemd unit
//!   and a bootstrap script, for fixed and dynamic peers.
//! - [`host`]: running `weave launch`/`weave reset` on a host, locally or over `ssh`.
//! - [`WeaveMembership`]: [`fleetscale_core::ClusterMembership`] for the dynamic peers.
//! - [`Reclaimer`]: the asynchronous reclaim process: reclaims a peer only when an inventory
//!   of hosts ([`inventory`]) says its host is gone and the mesh agrees, once per incarnation,
//!   with a write-ahead ledger, an exclusive lock and a single designated reclaimer peer.
//! - `fake` (feature `fake`): a router emulator with real HTTP APIs on loopback.

mod error;
mod peer;

#[cfg(feature = "fake")]
pub mod fake;

pub mod client;
pub mod host;
pub mod inventory;
pub mod launch;
pub mod ledger;
pub mod membership;
pub mod observe;
pub mod reclaim;
pub mod report;
pub mod status;
pub mod target;

pub use client::{RmpeerOutcome, RouterClient, DEFAULT_ROUTER_URL};
pub use error::WeaveError;
pub use host::{HostRunner, LocalRunner, Output, SshRunner};
pub use inventory::{
    CommandInventory, Host, HostInventory, HostSnapshot, HttpInventory, ScalerInventory,
};
pub use launch::{FixedCluster, LaunchPlan, PeerRole};
pub use membership::{WeaveMembership, WeaveMembershipConfig};
pub use observe::{Observation, Observer, SeenPeer};
pub use peer::PeerName;
pub use reclaim::{
    FixedPeer, PassReport, ReclaimConfig, ReclaimMetrics, ReclaimMetricsSnapshot, Reclaimer,
    RefusalReason, Survey, DEFAULT_MIN_UNREACHABLE,
};
