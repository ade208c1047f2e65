//! The creates the engine sent and still expects to see: the engine's memory of its own
//! actions, so that the planner counts a machine it created toward where it was sent even
//! while the backend's listing lags behind.
//!
//! It follows the ReplicaSet controller's "expectations" (Kubernetes,
//! `pkg/controller/controller_utils.go`: a create counts as expected until the informer shows
//! it or `ExpectationsTimeout`, 5 minutes, passes): a backend's `list` may show a machine
//! created to start as `created` for a while (Fly lists it `created` before `starting`), or not
//! at all for a moment, and the planner, counting by destination, would otherwise start or
//! create another one on the next tick.
//!
//! [`expected_inventory`] is a pure function of the listing, the pending creates and the time,
//! so the rules can be tested without I/O.

use std::time::Duration;

use tokio::time::Instant;

use crate::{Destination, Machine, MachineState};

/// The default [`EngineConfig::pending_create_timeout`](super::EngineConfig::pending_create_timeout):
/// 5 minutes, the ReplicaSet controller's `ExpectationsTimeout`, and the time after which Fly's
/// machine-states documentation suggests treating a machine as stuck in a transition.
pub const DEFAULT_PENDING_CREATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A create the engine sent and whose machine the inventory does not show on its way yet.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCreate {
    /// The machine as `create` returned it, without its [`Machine::detail`]: a pending
    /// machine is counted, never acted on, so the backend's record is not kept.
    pub machine: Machine,
    /// Where the create sent it: [`Destination::Started`], [`Destination::Created`] (a
    /// stopped create) or [`Destination::Suspended`].
    pub destination: Destination,
    /// When the create returned.
    pub sent: Instant,
}

/// The state a machine on its way to `destination` is counted in while the inventory does not
/// show it so.
fn heading_to(destination: Destination) -> MachineState {
    match destination {
        Destination::Started => MachineState::Starting,
        Destination::Suspended => MachineState::Suspending,
        Destination::Stopped => MachineState::Stopping,
        Destination::Created => MachineState::Created,
        Destination::Failed => MachineState::Failed,
        Destination::Gone => MachineState::Destroying,
        Destination::Unknown => MachineState::Unknown,
    }
}

/// The inventory as the planner sees it, given what `list` returned and the creates still
/// pending; forgets the pending creates that are settled.
///
/// For each pending create (dropped once `timeout` has passed since it was sent):
/// - listed as `created` while sent elsewhere: counted as on its way there (`starting`,
///   `suspending`) and kept pending;
/// - listed in any other state: the inventory has spoken; forgotten;
/// - not listed: added as on its way, **not manageable** (never started, stopped, destroyed
///   or cloned: the backend has not shown it), and kept pending.
///
/// Every other machine is passed through unchanged, in its order.
///
/// ```
/// use std::time::Duration;
/// use fleetscale_core::engine::pending::{expected_inventory, PendingCreate};
/// use fleetscale_core::{Destination, Machine, MachineState};
///
/// let now = tokio::time::Instant::now();
/// let listed = vec![Machine::new("old", MachineState::Started), Machine::new("new", MachineState::Created)];
/// let mut pending = vec![PendingCreate {
///     machine: Machine::new("new", MachineState::Created),
///     destination: Destination::Started,
///     sent: now,
/// }];
/// let seen = expected_inventory(&listed, &mut pending, now, Duration::from_secs(300));
/// assert_eq!(seen[1].state, MachineState::Starting);
/// assert_eq!(pending.len(), 1, "still expected: the listing does not show it starting yet");
/// ```
pub fn expected_inventory(
    listed: &[Machine],
    pending: &mut Vec<PendingCreate>,
    now: Instant,
    timeout: Duration,
) -> Vec<Machine> {
    pending.retain(|p| now.saturating_duration_since(p.sent) < timeout);
    if pending.is_empty() {
        return listed.to_vec();
    }
    let mut seen = listed.to_vec();
    pending.retain(|p| match seen.iter_mut().find(|m| m.id == p.machine.id) {
        Some(m) if m.state == MachineState::Created && p.destination != Destination::Created => {
            m.state = heading_to(p.destination);
            true
        }
        Some(_) => false,
        None => {
            let mut m = p.machine.clone();
            m.state = heading_to(p.destination);
            m.manageable = false;
            m.detail = None;
            seen.push(m);
            true
        }
    });
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counts;

    fn pending(id: &str, destination: Destination, sent: Instant) -> PendingCreate {
        PendingCreate {
            machine: Machine::new(id, MachineState::Created),
            destination,
            sent,
        }
    }

    const T: Duration = Duration::from_secs(300);

    #[test]
    fn a_started_create_listed_created_counts_as_started_until_it_moves_on() {
        let now = Instant::now();
        let mut p = vec![pending("n", Destination::Started, now)];
        let listed = vec![Machine::new("n", MachineState::Created)];
        let seen = expected_inventory(&listed, &mut p, now, T);
        assert_eq!(Counts::of(&seen).started, 1);
        assert_eq!(Counts::of(&seen).never_started, 0);
        assert_eq!(p.len(), 1);
        // It starts: the inventory shows it, the expectation is met.
        let listed = vec![Machine::new("n", MachineState::Starting)];
        let seen = expected_inventory(&listed, &mut p, now, T);
        assert_eq!(seen, listed);
        assert!(p.is_empty());
    }

    #[test]
    fn an_unlisted_create_counts_but_is_never_acted_on() {
        let now = Instant::now();
        let mut p = vec![pending("n", Destination::Started, now)];
        let listed = vec![Machine::new("a", MachineState::Started)];
        let seen = expected_inventory(&listed, &mut p, now, T);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].state, MachineState::Starting);
        assert!(!seen[1].manageable);
        assert_eq!(Counts::of(&seen).created, 2);
    }

    #[test]
    fn a_stopped_create_listed_created_is_settled() {
        let now = Instant::now();
        let mut p = vec![pending("n", Destination::Created, now)];
        let listed = vec![Machine::new("n", MachineState::Created)];
        assert_eq!(expected_inventory(&listed, &mut p, now, T), listed);
        assert!(p.is_empty());
    }

    #[test]
    fn an_expectation_ends_at_the_timeout() {
        let now = Instant::now();
        let mut p = vec![pending("n", Destination::Started, now)];
        let listed = vec![Machine::new("n", MachineState::Created)];
        let later = now + T;
        let seen = expected_inventory(&listed, &mut p, later, T);
        assert_eq!(
            seen[0].state,
            MachineState::Created,
            "never started after all"
        );
        assert!(p.is_empty());
    }
}
