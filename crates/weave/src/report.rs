//! `GET /report` (`Accept: application/json`): the router's full status as JSON.
//!
//! Layout: `weave-net.md` §2.5 (`WeaveStatus` in `weave:prog/weaver/http.go`). Decoding is
//! tolerant: Go's nil slices arrive as `null` and become empty lists; unknown fields are
//! ignored; missing sections (`Router`, `IPAM`, ...) are `None`. Numbers such as peer `UID`s
//! exceed 2^53 and are decoded as `u64`, never through `f64`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Decodes `null` (Go's nil slice or map) as the type's default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The top-level `WeaveStatus` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    /// Whether the router is ready.
    #[serde(default)]
    pub ready: bool,
    /// The router's version string.
    #[serde(default)]
    pub version: String,
    /// The router section (absent in some configurations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterReport>,
    /// The IPAM section; absent when IPAM is disabled.
    #[serde(default, rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamReport>,
}

/// `Router`: the embedded `mesh.Status` plus weave's extras.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouterReport {
    /// Always `weave`.
    #[serde(default)]
    pub protocol: String,
    /// The answering router's peer name.
    #[serde(default)]
    pub name: String,
    /// The answering router's nickname.
    #[serde(default)]
    pub nick_name: String,
    /// The mesh port (6783).
    #[serde(default)]
    pub port: u16,
    /// Every peer in this router's topology (itself included). A peer absent here is what
    /// IPAM calls unreachable.
    #[serde(default, deserialize_with = "null_default")]
    pub peers: Vec<ReportPeer>,
    /// This router's own connections and connection attempts.
    #[serde(default, deserialize_with = "null_default")]
    pub connections: Vec<ReportConnection>,
    /// The addresses given to launch/connect.
    #[serde(default, deserialize_with = "null_default")]
    pub targets: Vec<String>,
    /// Trusted subnets.
    #[serde(default, deserialize_with = "null_default")]
    pub trusted_subnets: Vec<String>,
    /// How many connections were terminated.
    #[serde(default)]
    pub termination_count: u64,
}

/// One peer of the mesh topology.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportPeer {
    /// Peer name (MAC form).
    pub name: String,
    /// Nickname (host name).
    #[serde(default)]
    pub nick_name: String,
    /// Random non-zero id, new on every start; can exceed 2^53.
    #[serde(default, rename = "UID")]
    pub uid: u64,
    /// 12-bit short id.
    #[serde(default, rename = "ShortID")]
    pub short_id: u16,
    /// Topology version of this peer.
    #[serde(default)]
    pub version: u64,
    /// The peer's connections, as it announced them.
    #[serde(default, deserialize_with = "null_default")]
    pub connections: Vec<ReportPeerConnection>,
}

/// A connection in a peer's topology entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportPeerConnection {
    /// Remote peer name.
    #[serde(default)]
    pub name: String,
    /// Remote nickname.
    #[serde(default)]
    pub nick_name: String,
    /// `ip:port`.
    #[serde(default)]
    pub address: String,
    /// Whether the peer dialled.
    #[serde(default)]
    pub outbound: bool,
    /// Whether the connection is established.
    #[serde(default)]
    pub established: bool,
}

/// One of the answering router's own connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportConnection {
    /// `ip:port`.
    #[serde(default)]
    pub address: String,
    /// Whether this router dialled the connection (`false`: the remote peer did).
    #[serde(default)]
    pub outbound: bool,
    /// `established`, `failed`, ...
    #[serde(default)]
    pub state: String,
    /// Info text (see `status::ConnectionStatus::info`).
    #[serde(default)]
    pub info: String,
    /// Attributes (`mtu`, `name`, `encrypted`); `null` for failed attempts.
    #[serde(default)]
    pub attrs: Option<BTreeMap<String, serde_json::Value>>,
}

/// `IPAM`: the allocator status (`weave:ipam/status.go`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamReport {
    /// Non-null only while awaiting consensus.
    #[serde(default)]
    pub paxos: Option<PaxosReport>,
    /// The allocation range (CIDR).
    #[serde(default)]
    pub range: String,
    /// How many addresses the range has.
    #[serde(default, rename = "RangeNumIPs")]
    pub range_num_ips: u64,
    /// Addresses in use on the answering router.
    #[serde(default, rename = "ActiveIPs")]
    pub active_ips: u64,
    /// The subnet containers get when they ask for none (CIDR).
    #[serde(default)]
    pub default_subnet: String,
    /// One item per ring range (wrapping ranges split in two); empty when the ring is empty.
    #[serde(default, deserialize_with = "null_default")]
    pub entries: Vec<IpamEntry>,
    /// Pending claims.
    #[serde(default, deserialize_with = "null_default")]
    pub pending_claims: Vec<serde_json::Value>,
    /// Pending allocations (`"ident range"` strings).
    #[serde(default, deserialize_with = "null_default")]
    pub pending_allocates: Vec<String>,
}

/// `IPAM.Paxos`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaxosReport {
    /// Whether this peer votes (false for observers).
    #[serde(default)]
    pub elector: bool,
    /// Electors heard from.
    #[serde(default)]
    pub known_nodes: u32,
    /// How many electors must agree before the IPAM ring is created (Paxos quorum).
    #[serde(default)]
    pub quorum: u32,
}

/// One range of the IPAM ring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamEntry {
    /// The first address of the range (dotted quad).
    pub token: String,
    /// How many addresses.
    #[serde(default)]
    pub size: u64,
    /// The owner's peer name.
    pub peer: String,
    /// The owner's nickname as IPAM knows it.
    #[serde(default)]
    pub nickname: String,
    /// Whether the owner is in the answering router's topology (`false` = unreachable).
    #[serde(default)]
    pub is_known_peer: bool,
    /// Entry version (+1 per owner change, +100 on reset/rmpeer transfer).
    #[serde(default)]
    pub version: u64,
}

/// One peer's aggregate in the IPAM ring (what `weave status ipam` prints per line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamOwner {
    /// The peer name of the owner (`aa:bb:cc:dd:ee:ff`).
    pub peer: String,
    /// The nickname of its first entry.
    pub nickname: String,
    /// Total addresses owned.
    pub ips: u64,
    /// Whether the answering router knows the peer (first entry's `IsKnownPeer`).
    pub reachable: bool,
}

impl IpamReport {
    /// Aggregates the entries per owner, like `summariseIpamStats`: sums sizes and takes the
    /// nickname and reachability of the first entry seen. Ordered by first appearance.
    pub fn owners(&self) -> Vec<IpamOwner> {
        let mut out: Vec<IpamOwner> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|o| o.peer == e.peer) {
                Some(o) => o.ips += e.size,
                None => out.push(IpamOwner {
                    peer: e.peer.clone(),
                    nickname: e.nickname.clone(),
                    ips: e.size,
                    reachable: e.is_known_peer,
                }),
            }
        }
        out
    }

    /// How many addresses `peer` owns in the ring (0 when absent).
    pub fn owned_by(&self, peer: &str) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.peer == peer)
            .map(|e| e.size)
            .sum()
    }
}

impl Report {
    /// The names of every peer in the answering router's topology.
    pub fn topology_peers(&self) -> Vec<&str> {
        self.router
            .as_ref()
            .map(|r| r.peers.iter().map(|p| p.name.as_str()).collect())
            .unwrap_or_default()
    }
}
