//! What the fixed cluster says right now: every fixed peer's `/report`, read concurrently and
//! combined into one [`Observation`]. Shared by [`WeaveMembership`](crate::WeaveMembership)
//! and the [`Reclaimer`](crate::Reclaimer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inventory::strip_port;
use crate::reclaim::{FixedPeer, RefusalReason};
use crate::report::{IpamReport, Report};
use crate::{PeerName, RouterClient, WeaveError};

/// A peer in the topology of at least one answering fixed peer: reachable from the fixed
/// cluster, so alive (maybe behind a partial partition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenPeer {
    /// Its per-start UID (new on every start of its router).
    pub uid: u64,
    /// Its nickname (Weave sets it to the host name).
    pub nickname: String,
    /// Its IP addresses, as the ends of connections other peers have to it (no ports).
    pub addresses: Vec<String>,
}

/// What the fixed cluster looks like at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// Fixed peers that answered (and are who the configuration says), in configuration order.
    pub answered: Vec<PeerName>,
    /// Fixed peers that did not answer, with the error.
    pub silent: Vec<(PeerName, String)>,
    /// Every peer in the topology of any answering fixed peer, by peer name.
    pub peers: BTreeMap<String, SeenPeer>,
    /// The IPAM view of the designated peer, or, when it did not answer, of the first fixed
    /// peer that did (then nothing is acted on).
    pub ipam: Option<IpamReport>,
    /// Whether the designated peer answered.
    pub designated_reachable: bool,
    /// The designated peer's UID (changes when its router restarts).
    pub designated_uid: Option<u64>,
    /// Whether the designated peer said it is ready.
    pub designated_ready: bool,
    /// The peers the designated peer has established connections to (its own topology entry).
    pub designated_links: HashSet<String>,
    /// Per owner, the most addresses any answering fixed peer's IPAM view gives it.
    pub owned_max: HashMap<String, u64>,
    /// Nicknames from the IPAM entries (known even for peers no longer in any topology).
    pub ipam_nicknames: HashMap<String, String>,
}

impl Observation {
    /// Whether `name` is in some answering fixed peer's topology.
    pub fn reachable(&self, name: &str) -> bool {
        self.peers.contains_key(name)
    }

    /// How many addresses `name` owns in the designated peer's view (0 when absent).
    pub fn owned(&self, name: &str) -> u64 {
        self.ipam.as_ref().map(|i| i.owned_by(name)).unwrap_or(0)
    }

    /// Whether a strict majority of the `configured` fixed peers answered.
    pub fn has_quorum(&self, configured: usize) -> bool {
        self.answered.len() * 2 > configured
    }

    /// The peer name of the peer with this nickname (topology first, then IPAM).
    pub fn by_nickname(&self, nick: &str) -> Option<String> {
        self.peers
            .iter()
            .find(|(_, p)| p.nickname == nick)
            .map(|(n, _)| n.clone())
            .or_else(|| {
                self.ipam_nicknames
                    .iter()
                    .find(|(_, n)| *n == nick)
                    .map(|(p, _)| p.clone())
            })
    }

    /// The nickname of `name`, from the topology or IPAM.
    pub fn nickname(&self, name: &str) -> Option<String> {
        self.peers
            .get(name)
            .map(|p| p.nickname.clone())
            .or_else(|| self.ipam_nicknames.get(name).cloned())
            .filter(|n| !n.is_empty())
    }
}

/// Reads the fixed peers.
#[derive(Clone, Debug)]
pub struct Observer {
    clients: Vec<(FixedPeer, RouterClient)>,
    designated: Option<PeerName>,
}

impl Observer {
    /// An observer of `fixed`, whose IPAM view comes from `designated` when it answers.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for an empty list, a peer listed twice or an invalid API URL.
    pub fn new(
        fixed: &[FixedPeer],
        designated: Option<PeerName>,
        http_timeout: Duration,
    ) -> Result<Self, WeaveError> {
        if fixed.is_empty() {
            return Err(WeaveError::config("no fixed peers configured"));
        }
        let mut clients = Vec::new();
        for (i, f) in fixed.iter().enumerate() {
            if fixed[..i].iter().any(|g| g.name == f.name) {
                return Err(WeaveError::config(format!(
                    "fixed peer {} listed twice",
                    f.name
                )));
            }
            clients.push((
                f.clone(),
                RouterClient::new(&f.api_url)?.with_timeout(http_timeout),
            ));
        }
        Ok(Observer {
            clients,
            designated,
        })
    }

    /// The client of fixed peer `name`.
    pub fn client(&self, name: PeerName) -> Option<&RouterClient> {
        self.clients
            .iter()
            .find(|(f, _)| f.name == name)
            .map(|(_, c)| c)
    }

    /// Every configured fixed peer.
    pub fn fixed(&self) -> impl Iterator<Item = &FixedPeer> {
        self.clients.iter().map(|(f, _)| f)
    }

    /// Reads every fixed peer's `/report` concurrently and combines them.
    ///
    /// # Errors
    /// [`WeaveError::Refused`] ([`RefusalReason::NoFixedPeerReachable`]) when none answers;
    /// [`WeaveError::Config`] when an answering router's name is not the configured one (a
    /// wrong URL must never make a fixed peer look unreachable, nor make another router's
    /// view count as this one's).
    pub async fn observe(&self) -> Result<Observation, WeaveError> {
        let reports: Vec<Result<Report, WeaveError>> =
            futures::future::join_all(self.clients.iter().map(|(_, c)| c.report())).await;
        let mut obs = Observation::default();
        let mut fallback_ipam = None;
        for ((fixed, client), r) in self.clients.iter().zip(reports) {
            let report = match r {
                Ok(r) => r,
                Err(e) => {
                    obs.silent.push((fixed.name, e.to_string()));
                    continue;
                }
            };
            let router = report.router.as_ref();
            let name = router.map(|r| r.name.as_str()).unwrap_or("");
            if name.parse::<PeerName>().ok() != Some(fixed.name) {
                return Err(WeaveError::config(format!(
                    "router at {} says it is {name:?}, configured as fixed peer {}",
                    client.base_url(),
                    fixed.name
                )));
            }
            obs.answered.push(fixed.name);
            if let Some(router) = router {
                for p in &router.peers {
                    let seen = obs.peers.entry(p.name.clone()).or_default();
                    seen.uid = p.uid;
                    seen.nickname = p.nick_name.clone();
                }
                // A connection's address is the remote end: the other peer's host.
                for p in &router.peers {
                    for c in &p.connections {
                        if c.address.is_empty() || c.name.is_empty() {
                            continue;
                        }
                        if let Some(seen) = obs.peers.get_mut(&c.name) {
                            let ip = strip_port(&c.address);
                            if !seen.addresses.contains(&ip) {
                                seen.addresses.push(ip);
                            }
                        }
                    }
                }
            }
            if let Some(ipam) = &report.ipam {
                for o in ipam.owners() {
                    let m = obs.owned_max.entry(o.peer.clone()).or_default();
                    *m = (*m).max(o.ips);
                    if !o.nickname.is_empty() {
                        obs.ipam_nicknames.insert(o.peer, o.nickname);
                    }
                }
            }
            if Some(fixed.name) == self.designated {
                obs.designated_reachable = true;
                obs.designated_ready = report.ready;
                let me = fixed.name.to_string();
                if let Some(own) = router.and_then(|r| r.peers.iter().find(|p| p.name == me)) {
                    obs.designated_uid = Some(own.uid);
                    obs.designated_links = own
                        .connections
                        .iter()
                        .filter(|c| c.established)
                        .map(|c| c.name.clone())
                        .collect();
                }
                obs.ipam = report.ipam.clone();
            } else if fallback_ipam.is_none() {
                fallback_ipam = report.ipam.clone();
            }
        }
        if obs.answered.is_empty() {
            let why = obs
                .silent
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(WeaveError::refused(
                RefusalReason::NoFixedPeerReachable,
                format!("no fixed peer answered ({why})"),
            ));
        }
        if obs.ipam.is_none() {
            obs.ipam = fallback_ipam;
        }
        Ok(obs)
    }
}
