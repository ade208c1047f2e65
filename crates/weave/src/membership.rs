//! [`WeaveMembership`]: [`ClusterMembership`] for the dynamic peers of a Weave Net cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::{ClusterMembership, Machine, Member, ReclaimOutcome};

use crate::host::HostRunner;
use crate::inventory::HostSnapshot;
use crate::launch::{FixedCluster, LaunchPlan};
use crate::observe::{Observation, Observer};
use crate::reclaim::{FixedPeer, RefusalReason, Survey};
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
    /// The name of the inventory the engine hands over (recorded with every peer bound to one
    /// of its machines; see [`crate::inventory::HostSnapshot::source`]). Give each target its
    /// own, stable name (default `engine`).
    pub inventory_source: String,
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
            inventory_source: "engine".into(),
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

    /// Sets the name of the engine's inventory.
    pub fn with_inventory_source(mut self, source: impl Into<String>) -> Self {
        self.inventory_source = source.into();
        self
    }
}

/// The Weave Net autoscaling procedure as a [`ClusterMembership`]:
///
/// - [`members`](ClusterMembership::members): every peer in the topology of any answering fixed
///   peer or in the IPAM ring, with `reachable` (in some fixed peer's topology), `owned` (the
///   most IPs any fixed peer's ring view gives it), `fixed` (peer name in the configuration),
///   the address learned from the fixed peers' connections, and the machine of the tick's
///   inventory it runs on: with a reclaimer, the host it was bound to (persisted in the
///   reclaim ledger, so a restarted process, or one that never joined the peer, still knows
///   it); otherwise the one machine whose name, id or address matches the peer's nickname or
///   address.
/// - [`join`](ClusterMembership::join): if no fixed peer sees a peer with the machine's
///   nickname yet, runs `weave launch --no-restart --ipalloc-init=observer $PEERS` (the fixed
///   cluster only) on the machine's host, then waits until a fixed peer sees it. Idempotent.
/// - [`leave`](ClusterMembership::leave): `DELETE /peer` on the machine's router (or
///   `weave reset` through the runner), then waits until the fixed peers' IPAM shows it owning
///   nothing; [`WeaveError::StillOwned`] after the deadline (the engine then does not stop the
///   machine). Leaving a non-member succeeds. Fixed peers are refused.
/// - [`reclaim`](ClusterMembership::reclaim): refuses fixed and reachable members, then the
///   [`Reclaimer`]'s single-peer path with every rule of [`crate::reclaim`], judging the
///   host's death by the tick's inventory itself (the engine's pre-selection is not trusted
///   as proof). The reclaimer's minimum unreachable time
///   ([`crate::ReclaimConfig::min_unreachable`], default 60 s) applies: the first call for a
///   member starts its clock and is refused with [`RefusalReason::TooRecentlyUnreachable`]; a
///   later tick reclaims it once the member has stayed unreachable that long.
pub struct WeaveMembership {
    config: WeaveMembershipConfig,
    observer: Observer,
    plan: LaunchPlan,
}

impl std::fmt::Debug for WeaveMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeaveMembership")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn sees_nickname(obs: &Observation, nick: &str) -> bool {
    obs.peers.values().any(|p| p.nickname == nick)
}

impl WeaveMembership {
    /// A membership of the fixed cluster in `config`, launching joining machines as dynamic peers.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for an empty or invalid fixed cluster or launch flags.
    pub fn new(config: WeaveMembershipConfig) -> Result<Self, WeaveError> {
        let mut cluster = FixedCluster::new(config.fixed.iter().map(|f| f.address.clone()))?;
        for r in &config.removed {
            cluster.remove(r);
        }
        let plan = LaunchPlan::dynamic(&cluster).with_extra_args(config.launch_args.clone())?;
        let observer = Observer::new(&config.fixed, None, config.http_timeout)?;
        Ok(WeaveMembership {
            config,
            observer,
            plan,
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

    async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&Observation) -> bool,
    ) -> Result<(), WeaveError> {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.observer.observe().await {
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
        if sees_nickname(&self.observer.observe().await?, &nick) {
            return Ok(());
        }
        if let Some(runner) = &self.config.runner {
            let host = self.host(machine);
            let argv = self.plan.launch_argv();
            let out = runner.run(&host, &argv).await?;
            if !out.success() && !sees_nickname(&self.observer.observe().await?, &nick) {
                out.check(&host, &argv)?;
            }
        }
        self.wait_for(
            &format!("join of {} (peer {nick})", machine.id),
            self.config.join_deadline,
            |v| sees_nickname(v, &nick),
        )
        .await
    }

    async fn leave_inner(&self, machine: &Machine) -> Result<(), WeaveError> {
        let nick = self.nickname(machine);
        let view = self.observer.observe().await?;
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
        if view.owned_max.get(&name).copied().unwrap_or(0) == 0 && !view.reachable(&name) {
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
                last = v.owned_max.get(&name).copied().unwrap_or(0);
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

    async fn members_inner(&self, inventory: &[Machine]) -> Result<Vec<Member>, WeaveError> {
        let hosts = HostSnapshot::from_machines(self.config.inventory_source.clone(), inventory);
        let survey = match &self.config.reclaimer {
            Some(r) => r.survey(Some(&hosts)).await?,
            None => Survey {
                observation: self.observer.observe().await?,
                records: BTreeMap::new(),
            },
        };
        let obs = &survey.observation;
        let mut names: Vec<String> = obs.peers.keys().cloned().collect();
        if let Some(ipam) = &obs.ipam {
            for o in ipam.owners() {
                if !names.contains(&o.peer) {
                    names.push(o.peer);
                }
            }
        }
        let mut out = Vec::new();
        for name in names {
            let record = name
                .parse::<PeerName>()
                .ok()
                .and_then(|p| survey.records.get(&p));
            let address = obs
                .peers
                .get(&name)
                .and_then(|p| p.addresses.first().cloned())
                .or_else(|| record.and_then(|r| r.address.clone()));
            let mut member = Member::new(name.clone());
            member.reachable = obs.reachable(&name);
            member.fixed = self.is_fixed(&name);
            member.owned = obs.owned_max.get(&name).copied().unwrap_or(0);
            member.nickname = obs.nickname(&name);
            member.address = address;
            member.machine = survey
                .host_of(&name, &hosts)
                .map(fleetscale_core::MachineId::new);
            out.push(member);
        }
        Ok(out)
    }
}

#[async_trait]
impl ClusterMembership for WeaveMembership {
    /// Every peer the fixed cluster knows (topology or IPAM), tied to the machines of
    /// `inventory`. Errors with `Refused` when no fixed peer answers.
    async fn members(&self, inventory: &[Machine]) -> fleetscale_core::Result<Vec<Member>> {
        Ok(self.members_inner(inventory).await?)
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
    /// (`Refused` too whenever a rule does not hold yet, e.g. while the member has been
    /// unreachable for less than the reclaimer's minimum unreachable time: a later tick
    /// retries). `Unsupported` when no reclaimer is configured.
    async fn reclaim(
        &self,
        member: &Member,
        inventory: &[Machine],
    ) -> fleetscale_core::Result<ReclaimOutcome> {
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
        let hosts = HostSnapshot::from_machines(self.config.inventory_source.clone(), inventory);
        Ok(reclaimer.reclaim_peer(peer, &hosts).await?)
    }
}
