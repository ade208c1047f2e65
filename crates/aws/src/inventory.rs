//! Pure decisions of the EC2 scaler: state mapping, instances as machines, subnet choice and
//! the merge of recent launches into a listing.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use aws_sdk_ec2::types::Instance;
use fleetscale_core::{Machine, MachineState};

/// Label: the instance type (`t3.small`).
pub const LABEL_INSTANCE_TYPE: &str = "instance-type";
/// Label: `spot`, `on-demand` (or EC2's other lifecycles, `scheduled`, `capacity-block`).
pub const LABEL_LIFECYCLE: &str = "lifecycle";
/// Label: the availability zone (`us-east-1a`).
pub const LABEL_AZ: &str = "az";

/// How EC2's instance states map to the core's [`MachineState`]:
///
/// | EC2 | core | counted as |
/// |---|---|---|
/// | `pending` | [`MachineState::Starting`] | started |
/// | `running` | [`MachineState::Started`] | started |
/// | `stopping` | [`MachineState::Stopping`] | stopped |
/// | `stopped` | [`MachineState::Stopped`] | stopped |
/// | `shutting-down` | [`MachineState::Destroying`] | gone |
/// | `terminated` | [`MachineState::Destroyed`] | gone (never counted, never acted on) |
/// | anything else | [`MachineState::Unknown`] | existing, never acted on |
pub fn map_state(ec2_state: &str) -> MachineState {
    match ec2_state {
        "pending" => MachineState::Starting,
        "running" => MachineState::Started,
        "stopping" => MachineState::Stopping,
        "stopped" => MachineState::Stopped,
        "shutting-down" => MachineState::Destroying,
        "terminated" => MachineState::Destroyed,
        _ => MachineState::Unknown,
    }
}

/// The EC2 state name of an instance (`""` when the answer had none).
pub fn state_name(i: &Instance) -> &str {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str())
        .unwrap_or("")
}

/// An instance as a [`Machine`]: id = instance id; name = the private DNS name (the host name
/// Weave uses as the peer's nickname), the id when EC2 gives none; address = the private IP;
/// region = the availability zone; created = launch time (EC2 sets it again at every start);
/// labels = the instance's tags plus [`LABEL_INSTANCE_TYPE`], [`LABEL_LIFECYCLE`] and
/// [`LABEL_AZ`] (these three win over tags of the same name). A state fleetscale does not know
/// is [`MachineState::Unknown`] and not manageable.
///
/// `None` when the answer has no instance id (a malformed answer; the caller reports it).
pub fn to_machine(i: &Instance) -> Option<Machine> {
    let id = i.instance_id().filter(|s| !s.is_empty())?;
    let state = map_state(state_name(i));
    let name = i
        .private_dns_name()
        .filter(|n| !n.is_empty())
        .unwrap_or(id)
        .to_string();
    let mut labels = BTreeMap::new();
    for t in i.tags() {
        if let (Some(k), Some(v)) = (t.key(), t.value()) {
            labels.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(t) = i.instance_type() {
        labels.insert(LABEL_INSTANCE_TYPE.to_string(), t.as_str().to_string());
    }
    let lifecycle = i
        .instance_lifecycle()
        .map(|l| l.as_str().to_string())
        .unwrap_or_else(|| "on-demand".to_string());
    labels.insert(LABEL_LIFECYCLE.to_string(), lifecycle);
    let az = i
        .placement()
        .and_then(|p| p.availability_zone())
        .filter(|z| !z.is_empty());
    if let Some(z) = az {
        labels.insert(LABEL_AZ.to_string(), z.to_string());
    }
    let mut machine = Machine::new(id, state).with_manageable(state != MachineState::Unknown);
    machine.name = name;
    machine.region = az.map(str::to_string);
    machine.created_at = i.launch_time().and_then(|t| SystemTime::try_from(*t).ok());
    machine.address = i
        .private_ip_address()
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    machine.labels = labels;
    Some(machine)
}

/// The spot request to cancel before terminating `i`: its `SpotInstanceRequestId`, when it has
/// one. EC2 relaunches the instance of a *persistent* request whose instance is terminated
/// unless the request is cancelled first (EC2 user guide, "Terminate a Spot Instance");
/// cancelling a fulfilled one-time request is harmless, so every request is cancelled.
pub fn spot_request_to_cancel(i: &Instance) -> Option<&str> {
    i.spot_instance_request_id().filter(|r| !r.is_empty())
}

/// The subnet for the next launch: among `subnets` (in configuration order), those not
/// `avoided` (a recent capacity error), the one with the fewest pool instances (`counts`);
/// ties go to the earlier one. When every subnet is avoided, all are candidates again.
/// `None` for an empty list.
pub fn pick_subnet(
    subnets: &[String],
    counts: &BTreeMap<String, u32>,
    avoided: &[&str],
) -> Option<usize> {
    let candidates: Vec<usize> = (0..subnets.len())
        .filter(|&i| !avoided.contains(&subnets[i].as_str()))
        .collect();
    let candidates = if candidates.is_empty() {
        (0..subnets.len()).collect()
    } else {
        candidates
    };
    candidates
        .into_iter()
        .min_by_key(|&i| (counts.get(&subnets[i]).copied().unwrap_or(0), i))
}

/// A machine this scaler launched, remembered until a listing shows it.
#[derive(Clone, Debug)]
pub struct RecentLaunch {
    /// The machine as `RunInstances` answered.
    pub machine: Machine,
    /// The subnet it went to, when known.
    pub subnet: Option<String>,
    /// When it was launched.
    pub at: Instant,
}

/// Adds to `listed` the recent launches it does not show yet (EC2's API is eventually
/// consistent: an instance may be missing from `DescribeInstances` for a while after
/// `RunInstances`), as [`MachineState::Starting`], while younger than `grace`. Returns the
/// launches still to remember (the others are listed or expired).
pub fn merge_recent(
    listed: &mut Vec<Machine>,
    recent: Vec<RecentLaunch>,
    now: Instant,
    grace: std::time::Duration,
) -> Vec<RecentLaunch> {
    let mut keep = Vec::new();
    for r in recent {
        if listed.iter().any(|m| m.id == r.machine.id) {
            continue;
        }
        if now.saturating_duration_since(r.at) >= grace {
            continue;
        }
        let mut m = r.machine.clone();
        if m.state.exists() {
            m.state = match m.state {
                MachineState::Stopping | MachineState::Stopped => m.state,
                _ => MachineState::Starting,
            };
            listed.push(m);
        }
        keep.push(r);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::primitives::DateTime;
    use aws_sdk_ec2::types::{
        InstanceLifecycleType, InstanceState, InstanceStateName, InstanceType, Placement, Tag,
    };
    use std::time::Duration;

    #[test]
    fn every_ec2_state_maps_as_the_issue_says() {
        use MachineState::*;
        let table = [
            ("pending", Starting),
            ("running", Started),
            ("stopping", Stopping),
            ("stopped", Stopped),
            ("shutting-down", Destroying),
            ("terminated", Destroyed),
            ("rebooting", Unknown),
            ("", Unknown),
        ];
        for (ec2, core) in table {
            assert_eq!(map_state(ec2), core, "{ec2}");
        }
        // Gone states are never counted.
        assert!(!map_state("shutting-down").exists());
        assert!(!map_state("terminated").exists());
        assert!(map_state("pending").exists());
    }

    fn instance(state: InstanceStateName) -> Instance {
        Instance::builder()
            .instance_id("i-0abc")
            .state(InstanceState::builder().name(state).build())
            .private_dns_name("ip-10-0-1-23.ec2.internal")
            .private_ip_address("10.0.1.23")
            .instance_type(InstanceType::T3Small)
            .instance_lifecycle(InstanceLifecycleType::Spot)
            .placement(Placement::builder().availability_zone("us-east-1b").build())
            .launch_time(DateTime::from_secs(1_700_000_000))
            .tags(Tag::builder().key("fleetscale:pool").value("weave").build())
            .tags(Tag::builder().key("az").value("tag loses").build())
            .build()
    }

    #[test]
    fn instance_maps_to_machine() {
        let m = to_machine(&instance(InstanceStateName::Running)).unwrap();
        assert_eq!(m.id.as_str(), "i-0abc");
        assert_eq!(m.name, "ip-10-0-1-23.ec2.internal");
        assert_eq!(m.address.as_deref(), Some("10.0.1.23"));
        assert_eq!(m.state, MachineState::Started);
        assert_eq!(m.region.as_deref(), Some("us-east-1b"));
        assert!(m.manageable);
        assert_eq!(
            m.created_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(m.labels["fleetscale:pool"], "weave");
        assert_eq!(m.labels["instance-type"], "t3.small");
        assert_eq!(m.labels["lifecycle"], "spot");
        assert_eq!(m.labels["az"], "us-east-1b");

        let on_demand = Instance::builder()
            .instance_id("i-2")
            .state(
                InstanceState::builder()
                    .name(InstanceStateName::from("hibernating"))
                    .build(),
            )
            .build();
        let m = to_machine(&on_demand).unwrap();
        assert_eq!(m.name, "i-2", "no DNS name: the id");
        assert_eq!(m.labels["lifecycle"], "on-demand");
        assert_eq!(m.state, MachineState::Unknown);
        assert!(!m.manageable);
        assert!(to_machine(&Instance::builder().build()).is_none());
    }

    #[test]
    fn spot_requests_are_cancelled_before_termination() {
        let spot = Instance::builder()
            .instance_id("i-1")
            .spot_instance_request_id("sir-123")
            .build();
        assert_eq!(spot_request_to_cancel(&spot), Some("sir-123"));
        let on_demand = Instance::builder().instance_id("i-2").build();
        assert_eq!(spot_request_to_cancel(&on_demand), None);
        let empty = Instance::builder()
            .instance_id("i-3")
            .spot_instance_request_id("")
            .build();
        assert_eq!(spot_request_to_cancel(&empty), None);
    }

    #[test]
    fn subnet_choice_balances_and_avoids() {
        let s: Vec<String> = ["a", "b", "c"].iter().map(|x| x.to_string()).collect();
        let mut counts = BTreeMap::new();
        assert_eq!(pick_subnet(&s, &counts, &[]), Some(0));
        counts.insert("a".to_string(), 2);
        counts.insert("b".to_string(), 1);
        assert_eq!(pick_subnet(&s, &counts, &[]), Some(2));
        counts.insert("c".to_string(), 1);
        assert_eq!(pick_subnet(&s, &counts, &[]), Some(1), "tie: the earlier");
        assert_eq!(pick_subnet(&s, &counts, &["b"]), Some(2));
        assert_eq!(pick_subnet(&s, &counts, &["a", "b", "c"]), Some(1));
        assert_eq!(pick_subnet(&[], &counts, &[]), None);
    }

    #[test]
    fn recent_launches_fill_in_until_listed_or_expired() {
        let now = Instant::now();
        let grace = Duration::from_secs(120);
        let recent = |id: &str, age: u64, state: MachineState| RecentLaunch {
            machine: Machine::new(id, state),
            subnet: None,
            at: now - Duration::from_secs(age),
        };
        let mut listed = vec![Machine::new("i-listed", MachineState::Started)];
        let keep = merge_recent(
            &mut listed,
            vec![
                recent("i-listed", 1, MachineState::Starting),
                recent("i-young", 5, MachineState::Started),
                recent("i-old", 500, MachineState::Starting),
                recent("i-stopping", 5, MachineState::Stopping),
            ],
            now,
            grace,
        );
        let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["i-listed", "i-young", "i-stopping"]);
        assert_eq!(listed[1].state, MachineState::Starting);
        assert_eq!(listed[2].state, MachineState::Stopping);
        let kept: Vec<&str> = keep.iter().map(|r| r.machine.id.as_str()).collect();
        assert_eq!(kept, ["i-young", "i-stopping"]);
    }
}
