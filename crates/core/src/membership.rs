//! The [`ClusterMembership`] trait: clusters that live on the machines (Weave Net, ...).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Machine, MachineId, Result};

/// One member of a cluster, as the cluster itself reports it.
///
/// ```
/// use fleetscale_core::Member;
/// let lost = Member::new("ce:3a:4f:1b:00:07").with_machine("host-7").with_owned(1024);
/// assert!(!lost.reachable && !lost.fixed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// The member's unique name in the cluster (Weave: the peer name, a MAC-like string).
    /// Forced removal always goes by this name, never by [`Member::nickname`].
    pub name: String,
    /// A human-friendly, possibly non-unique name (Weave: the host's nickname).
    pub nickname: Option<String>,
    /// The address the member is reached at, when known.
    pub address: Option<String>,
    /// The machine this member runs on, when the membership can tell.
    pub machine: Option<MachineId>,
    /// Whether the cluster's fixed/seed members currently reach it.
    pub reachable: bool,
    /// Whether this is a fixed (seed, consensus) member. Fixed members are never left or
    /// reclaimed by the autoscaler.
    pub fixed: bool,
    /// How much shared resource the member owns (Weave: IP addresses). Reclaiming a member
    /// that owns nothing is a no-op.
    pub owned: u64,
}

impl Member {
    /// A member called `name`: unreachable, not fixed, owning nothing, tied to no machine,
    /// until the builder methods say otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        Member {
            name: name.into(),
            nickname: None,
            address: None,
            machine: None,
            reachable: false,
            fixed: false,
            owned: 0,
        }
    }

    /// Sets [`Member::nickname`].
    pub fn with_nickname(mut self, nickname: impl Into<String>) -> Self {
        self.nickname = Some(nickname.into());
        self
    }

    /// Sets [`Member::address`].
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sets [`Member::machine`].
    pub fn with_machine(mut self, machine: impl Into<MachineId>) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// Sets [`Member::reachable`].
    pub fn with_reachable(mut self, reachable: bool) -> Self {
        self.reachable = reachable;
        self
    }

    /// Sets [`Member::fixed`].
    pub fn with_fixed(mut self, fixed: bool) -> Self {
        self.fixed = fixed;
        self
    }

    /// Sets [`Member::owned`].
    pub fn with_owned(mut self, owned: u64) -> Self {
        self.owned = owned;
        self
    }
}

/// The result of [`ClusterMembership::reclaim`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReclaimOutcome {
    /// How much of the shared resource moved (Weave: IPs taken over).
    pub reclaimed: u64,
    /// The name ([`Member::name`]) of the member that took the resource over.
    pub by: String,
    /// `true` when this member had already been reclaimed before (by this or another actor,
    /// as recorded in the membership's ledger) and nothing was done this time.
    pub already_reclaimed: bool,
}

impl ReclaimOutcome {
    /// `reclaimed` of the shared resource taken over by member `by`, this time.
    pub fn reclaimed(reclaimed: u64, by: impl Into<String>) -> Self {
        ReclaimOutcome {
            reclaimed,
            by: by.into(),
            already_reclaimed: false,
        }
    }

    /// Nothing done: member `by` (or another actor) had reclaimed it before.
    pub fn already(by: impl Into<String>) -> Self {
        ReclaimOutcome {
            reclaimed: 0,
            by: by.into(),
            already_reclaimed: true,
        }
    }
}

/// A cluster whose membership follows the machines: machines join after they come up, leave
/// before they go down, and members whose machine vanished without leaving are reclaimed.
///
/// # Guarantees the engine gives
/// - `join` is called after a machine was created started, or started; the machine may still
///   be booting.
/// - `leave` is called **before** a machine is stopped or destroyed; if `leave` fails, the stop
///   or destroy is skipped for this tick (a member that did not hand off is never killed).
/// - `members` and `reclaim` receive the inventory the engine listed in the same tick (one
///   [`crate::Scaler::list`] per tick: the membership never lists the machines itself). It is
///   the target's whole inventory, machines in every state, as the backend reported it.
/// - `reclaim` is only called by the engine when reclaiming is switched on, for members that are
///   not fixed, not reachable, own something, and whose [`Member::machine`] is absent from that
///   inventory or listed there as no longer existing ([`crate::MachineState::exists`]).
///
/// # Assumptions about implementations
/// - `members` is read-only.
/// - `join` and `leave` are **idempotent**: joining a member that is already in, or leaving a
///   machine that is not a member, succeeds. They may wait (within the caller's deadline) for
///   the machine to become reachable.
/// - `reclaim` is **at most once per member, across processes and restarts**: the
///   implementation keeps a persisted record (ledger) and, when the member was already
///   reclaimed, returns `already_reclaimed: true` without acting. It refuses with
///   [`crate::Error::Refused`] a member that is fixed or still reachable, and makes its own
///   judgement of the evidence (the engine's pre-selection is a filter, not a proof): a
///   membership whose safety needs more than the engine checks (Weave: the mesh must agree
///   for a minimum time, the member's host must be tied to the inventory) refuses until it
///   has it.
/// - `reclaim` has a default that answers [`crate::Error::Unsupported`]: a membership without
///   forced removal implements only `members`, `join` and `leave`.
/// - All calls are cancellation-safe: a dropped `reclaim` either did nothing, or recorded its
///   intent first so that no later call repeats it.
///
/// # Errors
/// - [`crate::Error::Refused`]: a safety rule forbade the operation (live or fixed member).
/// - [`crate::Error::NotFound`]: the member is unknown to the cluster.
/// - [`crate::Error::Unavailable`], [`crate::Error::Timeout`]: the cluster could not be reached.
///
/// # Example
/// ```
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use fleetscale_core::{ClusterMembership, Error, Machine, MachineState, Member, ReclaimOutcome, Result};
///
/// /// A membership list kept in memory.
/// #[derive(Default)]
/// struct Roster(Mutex<Vec<Member>>);
///
/// #[async_trait]
/// impl ClusterMembership for Roster {
///     async fn members(&self, _inventory: &[Machine]) -> Result<Vec<Member>> {
///         Ok(self.0.lock().unwrap().clone())
///     }
///     async fn join(&self, machine: &Machine) -> Result<()> {
///         let mut ms = self.0.lock().unwrap();
///         if !ms.iter().any(|m| m.machine.as_ref() == Some(&machine.id)) {
///             ms.push(Member::new(machine.id.to_string()).with_machine(machine.id.clone()).with_reachable(true));
///         }
///         Ok(())
///     }
///     async fn leave(&self, machine: &Machine) -> Result<()> {
///         self.0.lock().unwrap().retain(|m| m.machine.as_ref() != Some(&machine.id));
///         Ok(())
///     }
///     async fn reclaim(&self, member: &Member, _inventory: &[Machine]) -> Result<ReclaimOutcome> {
///         if member.reachable || member.fixed {
///             return Err(Error::refused(format!("{} is alive or fixed", member.name)));
///         }
///         let mut ms = self.0.lock().unwrap();
///         let before = ms.len();
///         ms.retain(|m| m.name != member.name);
///         Ok(if ms.len() == before { ReclaimOutcome::already("roster") } else { ReclaimOutcome::reclaimed(member.owned, "roster") })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let roster = Roster::default();
/// roster.join(&Machine::new("m1", MachineState::Started)).await.unwrap();
/// roster.join(&Machine::new("m1", MachineState::Started)).await.unwrap();
/// assert_eq!(roster.members(&[]).await.unwrap().len(), 1);
/// # });
/// ```
#[async_trait]
pub trait ClusterMembership: Send + Sync {
    /// Every member the cluster knows, reachable or not, with [`Member::machine`] resolved
    /// against `inventory` (the machines the engine listed this tick) where the membership can
    /// tell. Read-only as far as the cluster is concerned (an implementation may persist what
    /// it learned, e.g. which member runs on which machine).
    async fn members(&self, inventory: &[Machine]) -> Result<Vec<Member>>;

    /// Adds the machine to the cluster. Idempotent.
    async fn join(&self, machine: &Machine) -> Result<()>;

    /// Removes the machine from the cluster gracefully, handing its share to the others.
    /// Idempotent.
    async fn leave(&self, machine: &Machine) -> Result<()>;

    /// Forcibly takes over what a vanished member owned. At most once per member (per
    /// incarnation of a member name that can come back), ever. `inventory` is the tick's
    /// inventory, the evidence that the member's machine is gone. The default refuses with
    /// [`crate::Error::Unsupported`].
    async fn reclaim(&self, member: &Member, inventory: &[Machine]) -> Result<ReclaimOutcome> {
        let _ = (member, inventory);
        Err(crate::Error::Unsupported {
            operation: "reclaim",
        })
    }
}

#[async_trait]
impl<T: ClusterMembership + ?Sized> ClusterMembership for std::sync::Arc<T> {
    async fn members(&self, inventory: &[Machine]) -> Result<Vec<Member>> {
        (**self).members(inventory).await
    }
    async fn join(&self, machine: &Machine) -> Result<()> {
        (**self).join(machine).await
    }
    async fn leave(&self, machine: &Machine) -> Result<()> {
        (**self).leave(machine).await
    }
    async fn reclaim(&self, member: &Member, inventory: &[Machine]) -> Result<ReclaimOutcome> {
        (**self).reclaim(member, inventory).await
    }
}
