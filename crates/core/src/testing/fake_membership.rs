use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{ClusterMembership, Error, Machine, Member, ReclaimOutcome, Result};

/// One call made to a [`FakeMembership`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipCall {
    /// `join` of a machine (by id).
    Join(String),
    /// `leave` of a machine (by id).
    Leave(String),
    /// `reclaim` of a member (by name) and whether it acted.
    Reclaim(String, bool),
}

type ErrorFactory = Arc<dyn Fn() -> Error + Send + Sync>;

#[derive(Default)]
struct Inner {
    members: Vec<Member>,
    ledger: BTreeSet<String>,
    calls: Vec<MembershipCall>,
    fail_join: Option<(u32, ErrorFactory)>,
    fail_leave: Option<(u32, ErrorFactory)>,
}

/// An in-memory [`ClusterMembership`]: fixed and dynamic members, reachability, owned shares,
/// and a reclaim ledger that makes `reclaim` act at most once per member name.
///
/// Joining gives the machine a member named `peer-<machine id>` that owns 1 unit; leaving hands
/// its share to the first fixed member.
///
/// ```
/// use fleetscale_core::testing::FakeMembership;
/// use fleetscale_core::{ClusterMembership, Machine, MachineState};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cluster = FakeMembership::with_fixed(["fixed1", "fixed2"]);
/// let m = Machine::new("m1", MachineState::Started);
/// cluster.join(&m).await.unwrap();
/// cluster.set_reachable("peer-m1", false);
/// let lost = cluster.member("peer-m1").unwrap();
/// assert_eq!(cluster.reclaim(&lost, &[]).await.unwrap().reclaimed, 1);
/// assert!(cluster.reclaim(&lost, &[]).await.unwrap().already_reclaimed);
/// # });
/// ```
#[derive(Default)]
pub struct FakeMembership {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FakeMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMembership")
            .field("members", &self.lock().members)
            .finish_non_exhaustive()
    }
}

impl FakeMembership {
    /// A cluster of fixed, reachable members with the given names, each owning 1 unit.
    pub fn with_fixed<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        let fake = FakeMembership::default();
        fake.lock().members = names
            .into_iter()
            .map(|n| Member {
                name: n.into(),
                nickname: None,
                address: None,
                machine: None,
                reachable: true,
                fixed: true,
                owned: 1,
            })
            .collect();
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.lock().members.iter().find(|m| m.name == name).cloned()
    }

    /// Adds or replaces a member.
    pub fn upsert(&self, member: Member) {
        let mut inner = self.lock();
        inner.members.retain(|m| m.name != member.name);
        inner.members.push(member);
    }

    /// Marks a member reachable or not (a partition or a vanished host).
    pub fn set_reachable(&self, name: &str, reachable: bool) {
        if let Some(m) = self.lock().members.iter_mut().find(|m| m.name == name) {
            m.reachable = reachable;
        }
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<MembershipCall> {
        self.lock().calls.clone()
    }

    /// How many reclaims actually acted.
    pub fn reclaims_done(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, MembershipCall::Reclaim(_, true)))
            .count()
    }

    /// Makes the next `times` joins fail.
    pub fn fail_joins(&self, times: u32, make: impl Fn() -> Error + Send + Sync + 'static) {
        self.lock().fail_join = Some((times, Arc::new(make)));
    }

    /// Makes the next `times` leaves fail.
    pub fn fail_leaves(&self, times: u32, make: impl Fn() -> Error + Send + Sync + 'static) {
        self.lock().fail_leave = Some((times, Arc::new(make)));
    }

    /// Records `call` and fails it when the test asked for a fault in the slot `fault` picks;
    /// else the locked state, for the call to go on with.
    fn called(
        &self,
        call: MembershipCall,
        fault: fn(&mut Inner) -> &mut Option<(u32, ErrorFactory)>,
    ) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.lock();
        inner.calls.push(call);
        match Self::take_fault(fault(&mut inner)) {
            Some(e) => Err(e),
            None => Ok(inner),
        }
    }

    fn take_fault(slot: &mut Option<(u32, ErrorFactory)>) -> Option<Error> {
        let (n, make) = slot.as_mut()?;
        if *n == 0 {
            return None;
        }
        *n -= 1;
        Some(make())
    }
}

#[async_trait]
impl ClusterMembership for FakeMembership {
    async fn members(&self, _inventory: &[Machine]) -> Result<Vec<Member>> {
        Ok(self.lock().members.clone())
    }

    async fn join(&self, machine: &Machine) -> Result<()> {
        let mut inner = self.called(MembershipCall::Join(machine.id.to_string()), |i| {
            &mut i.fail_join
        })?;
        let name = format!("peer-{}", machine.id);
        if let Some(m) = inner.members.iter_mut().find(|m| m.name == name) {
            m.reachable = true;
            return Ok(());
        }
        inner.members.push(Member {
            name,
            nickname: Some(machine.name.clone()),
            address: machine.address.clone(),
            machine: Some(machine.id.clone()),
            reachable: true,
            fixed: false,
            owned: 1,
        });
        Ok(())
    }

    async fn leave(&self, machine: &Machine) -> Result<()> {
        let mut inner = self.called(MembershipCall::Leave(machine.id.to_string()), |i| {
            &mut i.fail_leave
        })?;
        let mut handed = 0;
        inner.members.retain(|m| {
            if m.machine.as_ref() == Some(&machine.id) && !m.fixed {
                handed += m.owned;
                false
            } else {
                true
            }
        });
        if let Some(heir) = inner.members.iter_mut().find(|m| m.fixed && m.reachable) {
            heir.owned += handed;
        }
        Ok(())
    }

    async fn reclaim(&self, member: &Member, _inventory: &[Machine]) -> Result<ReclaimOutcome> {
        let mut inner = self.lock();
        if inner.ledger.contains(&member.name) {
            inner
                .calls
                .push(MembershipCall::Reclaim(member.name.clone(), false));
            return Ok(ReclaimOutcome {
                reclaimed: 0,
                by: String::new(),
                already_reclaimed: true,
            });
        }
        // Judge by the cluster's current view, not by the caller's (possibly stale) copy.
        let current = inner
            .members
            .iter()
            .find(|m| m.name == member.name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("member {}", member.name)))?;
        if current.fixed || current.reachable {
            return Err(Error::Refused {
                reason: format!(
                    "member {} is {}",
                    current.name,
                    if current.fixed { "fixed" } else { "reachable" }
                ),
                source: None,
            });
        }
        let heir = inner
            .members
            .iter()
            .position(|m| m.fixed && m.reachable)
            .ok_or_else(|| Error::Unavailable {
                message: "no reachable fixed member to take over".into(),
                source: None,
            })?;
        inner.ledger.insert(current.name.clone());
        inner.members[heir].owned += current.owned;
        let by = inner.members[heir].name.clone();
        inner.members.retain(|m| m.name != current.name);
        inner
            .calls
            .push(MembershipCall::Reclaim(current.name.clone(), true));
        Ok(ReclaimOutcome {
            reclaimed: current.owned,
            by,
            already_reclaimed: false,
        })
    }
}
