//! [`WeaveMembership`]: [`ClusterMembership`] for the dynamic peers of a Weave Net cluster.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::{ClusterMembership, Machine, MachineId, Member, ReclaimOutcome, Scaler};

use crate::host::HostRunner;
use crate::launch::{FixedCluster, LaunchPlan};
use crate::reclaim::{FixedPeer, RefusalReason};
use crate::report::Report;
use crate::{PeerName, Reclaimer, RouterClient, WeaveError};

/// Maps a machine to something (its router API URL, its host, its nickname).
pub type MachineFn = Arc<dyn Fn(&Machine) -> Option<String> + Send + Sync>;

/// Settings of [`WeaveMembership`].
#[derive(Clone)]
pub struct WeaveMembershipConfig {
    /// The fixed cluster (peer names, `$PEERS` addresses, API URLs).
    pub fixed: Vec<FixedPeer>,
    /// Fixed peer addresses explicitly removed (excluded from `$PEERS`).
    pub removed: Vec<String>,
    /// Runs `weave launch` (join) and `weave reset` (leave) on the machine's host. `None`:
    /// joining machines launch Weave themselves (e.g. from [`LaunchPlan::bootstrap_script`])
    /// and `join` only waits; `leave` then needs [`WeaveMembershipConfig::router_url`].
    pub runner: Option<Arc<dyn HostRunner>>,
    /// A machine's router API URL, when reachable from here; `leave` then uses
    /// `DELETE /peer` and falls back to the runner when the call fails.
    pub router_url: Option<MachineFn>,
    /// The host to run commands on (default: the machine's address, else its name).
    pub host: Option<MachineFn>,
    /// The peer nickname a machine's router has (default: the machine's name; Weave sets the
    /// nickname to the host name).
    pub nickname: Option<MachineFn>,
    /// Extra `weave launch` flags for dynamic peers.
    pub launch_args: Vec<String>,
    /// The inventory used to map members to machines in [`ClusterMembership::members`].
    pub inventory: Option<Arc<dyn Scaler>>,
    /// The reclaimer behind [`ClusterMembership::reclaim`]; `None`: reclaim is unsupported.
    pub reclaimer: Option<Arc<Reclaimer>>,
    /// How long `join` waits for the peer to be seen by a fixed peer (default 120 s).
    pub join_deadline: Duration,
    /// How long `leave` waits for the leaver to own nothing (default 60 s).
    pub leave_deadline: Duration,
    /// Polling interval while waiting (default 500 ms).
    pub poll_interval: Duration,
    /// Per-call router timeout (default 10 s).
    pub http_timeout: Duration,
}

impl std::fmt::Debug for WeaveMembershipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeaveMembershipConfig")
            .field("fixed", &self.fixed)
            .field("removed", &self.removed)
            .field("runner", &self.runner.is_some())
            .field("reclaimer", &self.reclaimer.is_some())
            .field("join_deadline", &self.join_deadline)
            .field("leave_deadline", &self.leave_deadline)
            .finish_non_exhaustive()
    }
}

impl WeaveMembershipConfig {
    /// Settings with the defaults and no runner, inventory or reclaimer.
    pub fn new(fixed: Vec<FixedPeer>) -> Self {
        WeaveMembershipConfig {
            fixed,
            removed: Vec::new(),
            runner: None,
            router_url: None,
            host: None,
            nickname: None,
            launch_args: Vec::new(),
            inventory: None,
            reclaimer: None,
            join_deadline: Duration::from_secs(120),
            leave_deadline: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            http_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the host runner.
    pub fn with_runner(mut self, runner: Arc<dyn HostRunner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Sets the reclaimer.
    pub fn with_reclaimer(mut self, reclaimer: Arc<Reclaimer>) -> Self {
        self.reclaimer = Some(reclaimer);
        self
    }

    /// Sets the inventory.
    pub fn with_inventory(mut self, inventory: Arc<dyn Scaler>) -> Self {
        self.inventory = Some(inventory);
        self
    }
}

/// The Weave Net autoscaling procedure as a [`ClusterMembership`]:
///
/// - [`members`](ClusterMembership::members): every peer in the topology of any answering fixed
///   peer or in the IPAM ring, with `reachable` (in some fixed peer's topology), `owned` (IPs in
///   the ring), `fixed` (peer name in the configuration), the address learned from the fixed
///   peers' connections, and the machine (inventory: nickname = machine name or id, or address;
///   else machines joined through this value).
/// - [`join`](ClusterMembership::join): if no fixed peer sees a peer with the machine's
///   nickname yet, runs `weave launch --no-restart --ipalloc-init=observer $PEERS` (the fixed
///   cluster only) on the machine's host, then waits until a fixed peer sees it. Idempotent.
/// - [`leave`](ClusterMembership::leave): `DELETE /peer` on the machine's router (or
///   `weave reset` through the runner), then waits until the fixed peers' IPAM shows it owning
///   nothing; [`WeaveError::StillOwned`] after the deadline (the engine then does not stop the
///   machine). Leaving a non-member succeeds. Fixed peers are refused.
/// - [`reclaim`](ClusterMembership::reclaim): refuses fixed and reachable members, then the
///   [`Reclaimer`]'s single-peer path with all its checks (ledger, lock, designated peer). The
///   machine being gone is taken from the engine's contract (it only reclaims members whose
///   machine left the inventory). The reclaimer's minimum unreachable time
///   ([`crate::ReclaimConfig::min_unreachable`], default 60 s) still applies: the first call
///   for a member starts its clock and is refused with
///   [`RefusalReason::TooRecentlyUnreachable`]; a later tick reclaims it once the member has
///   stayed unreachable that long.
pub struct WeaveMembership {
    config: WeaveMembershipConfig,
    clients: Vec<(FixedPeer, RouterClient)>,
    plan: LaunchPlan,
    joined: Mutex<HashMap<String, MachineId>>,
}

impl std::fmt::Debug for WeaveMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeaveMembership")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct View {
    reports: Vec<(PeerName, Report)>,
}

impl View {
    fn alive(&self) -> HashSet<String> {
        self.reports
            .iter()
            .filter_map(|(_, r)| r.router.as_ref())
            .flat_map(|r| r.peers.iter().map(|p| p.name.clone()))
            .collect()
    }

    fn ipam(&self) -> Option<&crate::report::IpamReport> {
        self.reports.iter().find_map(|(_, r)| r.ipam.as_ref())
    }

    /// The peer name of the peer with this nickname (topology first, then IPAM).
    fn by_nickname(&self, nick: &str) -> Option<String> {
        self.reports
            .iter()
            .filter_map(|(_, r)| r.router.as_ref())
            .flat_map(|r| r.peers.iter())
            .find(|p| p.nick_name == nick)
            .map(|p| p.name.clone())
            .or_else(|| {
                self.ipam()?
                    .entries
                    .iter()
                    .find(|e| e.nickname == nick)
                    .map(|e| e.peer.clone())
            })
    }

    fn sees_nickname(&self, nick: &str) -> bool {
        self.reports
            .iter()
            .filter_map(|(_, r)| r.router.as_ref())
            .any(|r| r.peers.iter().any(|p| p.nick_name == nick))
    }

    fn owned_by(&self, peer: &str) -> u64 {
        self.reports
            .iter()
            .filter_map(|(_, r)| r.ipam.as_ref())
            .map(|i| i.owned_by(peer))
            .max()
            .unwrap_or(0)
    }
}

impl WeaveMembership {
    /// A membership.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for an empty or invalid fixed cluster or launch flags.
    pub fn new(config: WeaveMembershipConfig) -> Result<Self, WeaveError> {
        let mut cluster = FixedCluster::new(config.fixed.iter().map(|f| f.address.clone()))?;
        for r in &config.removed {
            cluster.remove(r);
        }
        let plan = LaunchPlan::dynamic(&cluster).with_extra_args(config.launch_args.clone())?;
        let clients = config
            .fixed
            .iter()
            .map(|f| {
                RouterClient::new(&f.api_url)
                    .map(|c| (f.clone(), c.with_timeout(config.http_timeout)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WeaveMembership {
            config,
            clients,
            plan,
            joined: Mutex::default(),
        })
    }

    /// The launch plan joining machines get.
    pub fn launch_plan(&self) -> &LaunchPlan {
        &self.plan
    }

    fn nickname(&self, m: &Machine) -> String {
        self.config
            .nickname
            .as_ref()
            .and_then(|f| f(m))
            .unwrap_or_else(|| m.name.clone())
    }

    fn host(&self, m: &Machine) -> String {
        self.config
            .host
            .as_ref()
            .and_then(|f| f(m))
            .or_else(|| m.address.clone())
            .unwrap_or_else(|| m.name.clone())
    }

    fn is_fixed(&self, name: &str) -> bool {
        name.parse::<PeerName>()
            .is_ok_and(|n| self.config.fixed.iter().any(|f| f.name == n))
    }

    async fn view(&self) -> Result<View, WeaveError> {
        let results = futures::future::join_all(self.clients.iter().map(|(_, c)| c.report())).await;
        let mut reports = Vec::new();
        let mut last_err = None;
        for ((f, _), r) in self.clients.iter().zip(results) {
            match r {
                Ok(r) => reports.push((f.name, r)),
                Err(e) => last_err = Some(e),
            }
        }
        if reports.is_empty() {
            return Err(last_err.unwrap_or_else(|| WeaveError::config("no fixed peers")));
        }
        Ok(View { reports })
    }

    async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&View) -> bool,
    ) -> Result<(), WeaveError> {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.view().await {
                if done(&v) {
                    return Ok(());
                }
            }
            if started.elapsed() >= deadline {
                return Err(WeaveError::Timeout {
                    operation: what.to_string(),
                    after: deadline,
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    async fn join_inner(&self, machine: &Machine) -> Result<(), WeaveError> {
        let nick = self.nickname(machine);
        if let Ok(mut j) = self.joined.lock() {
            j.insert(nick.clone(), machine.id.clone());
        }
        if self.view().await?.sees_nickname(&nick) {
            return Ok(());
        }
        if let Some(runner) = &self.config.runner {
            let host = self.host(machine);
            let argv = self.plan.launch_argv();
            let out = runner.run(&host, &argv).await?;
            if !out.success() && !self.view().await?.sees_nickname(&nick) {
                out.check(&host, &argv)?;
            }
        }
        self.wait_for(
            &format!("join of {} (peer {nick})", machine.id),
            self.config.join_deadline,
            |v| v.sees_nickname(&nick),
        )
        .await
    }

    async fn leave_inner(&self, machine: &Machine) -> Result<(), WeaveError> {
        let nick = self.nickname(machine);
        let view = self.view().await?;
        let Some(name) = view.by_nickname(&nick) else {
            return Ok(()); // not a member
        };
        if self.is_fixed(&name) {
            return Err(WeaveError::refused(
                RefusalReason::Fixed,
                format!(
                    "{} runs fixed peer {name}; fixed peers never leave",
                    machine.id
                ),
            ));
        }
        if view.owned_by(&name) == 0 && !view.alive().contains(&name) {
            return Ok(()); // already left
        }
        let mut via_api = false;
        if let Some(url) = self.config.router_url.as_ref().and_then(|f| f(machine)) {
            match RouterClient::new(&url)?
                .with_timeout(self.config.http_timeout)
                .reset()
                .await
            {
                Ok(()) => via_api = true,
                Err(e) if self.config.runner.is_some() => {
                    tracing::warn!(machine = %machine.id, error = %e, "DELETE /peer failed; using weave reset on the host");
                }
                Err(e) => return Err(e),
            }
        }
        if !via_api {
            let runner = self.config.runner.as_ref().ok_or_else(|| {
                WeaveError::config("leave needs a host runner or a router URL for the machine")
            })?;
            let host = self.host(machine);
            let argv = self.plan.reset_argv();
            runner.run(&host, &argv).await?.check(&host, &argv)?;
        }
        let deadline = self.config.leave_deadline;
        let mut last = 0;
        let r = self
            .wait_for(&format!("leave of {}", machine.id), deadline, |v| {
                last = v.owned_by(&name);
                last == 0
            })
            .await;
        match r {
            Err(WeaveError::Timeout { .. }) => Err(WeaveError::StillOwned {
                peer: name,
                owned: last,
                after: deadline,
            }),
            other => other,
        }
    }

    async fn members_inner(&self) -> Result<Vec<Member>, WeaveError> {
        let view = self.view().await?;
        let alive = view.alive();
        let mut names: Vec<(String, String)> = Vec::new();
        let mut addresses: HashMap<String, String> = HashMap::new();
        for (_, r) in &view.reports {
            let Some(router) = r.router.as_ref() else {
                continue;
            };
            for p in &router.peers {
                if !names.iter().any(|(n, _)| *n == p.name) {
                    names.push((p.name.clone(), p.nick_name.clone()));
                }
                if p.name == router.name {
                    for c in &p.connections {
                        let ip = c
                            .address
                            .rsplit_once(':')
                            .map(|(h, _)| h)
                            .unwrap_or(&c.address);
                        addresses
                            .entry(c.name.clone())
                            .or_insert_with(|| ip.to_string());
                    }
                }
            }
        }
        if let Some(ipam) = view.ipam() {
            for o in ipam.owners() {
                if !names.iter().any(|(n, _)| *n == o.peer) {
                    names.push((o.peer.clone(), o.nickname.clone()));
                }
            }
        }
        let machines = match &self.config.inventory {
            Some(inv) => Some(inv.list().await.map_err(|e| WeaveError::Config {
                message: format!("inventory: {e}"),
            })?),
            None => None,
        };
        let joined = self.joined.lock().map(|j| j.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for (name, nick) in names {
            let address = addresses.get(&name).cloned();
            let machine = machines
                .as_ref()
                .and_then(|ms| {
                    ms.iter()
                        .filter(|m| m.state.exists())
                        .find(|m| {
                            (!nick.is_empty()
                                && (self.nickname(m) == nick || m.id.as_str() == nick))
                                || (address.is_some() && m.address == address)
                        })
                        .map(|m| m.id.clone())
                })
                .or_else(|| joined.get(&nick).cloned());
            out.push(Member {
                reachable: alive.contains(&name),
                fixed: self.is_fixed(&name),
                owned: view.owned_by(&name),
                nickname: (!nick.is_empty()).then_some(nick),
                address,
                machine,
                name,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl ClusterMembership for WeaveMembership {
    /// Every peer the fixed cluster knows (topology or IPAM). Errors with `Unavailable` when
    /// no fixed peer answers.
    async fn members(&self) -> fleetscale_core::Result<Vec<Member>> {
        Ok(self.members_inner().await?)
    }

    /// Observer launch with the fixed list, then waits until a fixed peer sees the peer.
    /// Idempotent. `Timeout` when it does not show up within the join deadline.
    async fn join(&self, machine: &Machine) -> fleetscale_core::Result<()> {
        Ok(self.join_inner(machine).await?)
    }

    /// Reset, then verifies from the fixed peers that the leaver owns nothing. Idempotent;
    /// `Refused` for fixed peers; a retryable `Backend` error when it still owns space after
    /// the deadline.
    async fn leave(&self, machine: &Machine) -> fleetscale_core::Result<()> {
        Ok(self.leave_inner(machine).await?)
    }

    /// `Refused` for fixed or reachable members; otherwise the reclaimer's single-peer path
    /// (`Refused` too while the member has been unreachable for less than the reclaimer's
    /// minimum unreachable time: retry on a later tick). `Unsupported` when no reclaimer is
    /// configured.
    async fn reclaim(&self, member: &Member) -> fleetscale_core::Result<ReclaimOutcome> {
        if member.fixed || self.is_fixed(&member.name) {
            return Err(WeaveError::refused(
                RefusalReason::Fixed,
                format!("{} is a fixed peer", member.name),
            )
            .into());
        }
        if member.reachable {
            return Err(WeaveError::refused(
                RefusalReason::Reachable,
                format!("{} is reachable from the fixed cluster", member.name),
            )
            .into());
        }
        let peer: PeerName = member.name.parse()?;
        let Some(reclaimer) = &self.config.reclaimer else {
            return Err(fleetscale_core::Error::Unsupported {
                operation: "reclaim",
            });
        };
        Ok(reclaimer.reclaim_peer(peer, true).await?)
    }
}
