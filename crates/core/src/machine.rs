//! Machines as the engine sees them: identity, lifecycle state, and what to create.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The backend's identifier of a machine (a Fly Machine ID, a host name, an instance ID).
///
/// Opaque to the core: compared and printed, never parsed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MachineId(pub String);

impl MachineId {
    /// Wraps a backend identifier.
    pub fn new(id: impl Into<String>) -> Self {
        MachineId(id.into())
    }

    /// The identifier as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MachineId {
    fn from(s: &str) -> Self {
        MachineId(s.to_owned())
    }
}

impl From<String> for MachineId {
    fn from(s: String) -> Self {
        MachineId(s)
    }
}

/// The lifecycle state of a machine, normalised across backends.
///
/// Backends map their own states onto these (see each backend's table, e.g. Fly's
/// `FlyState::to_core`); a state with no safe equivalent (Fly's `updating`, `replacing`) or one
/// the backend does not know becomes [`MachineState::Unknown`]: counted as existing, never acted
/// on by the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    /// Exists, has never been started (e.g. created with Fly's `skip_launch`).
    Created,
    /// On its way to [`MachineState::Started`].
    Starting,
    /// Running.
    Started,
    /// On its way to [`MachineState::Stopped`].
    Stopping,
    /// Exists, not running; can be started.
    Stopped,
    /// On its way to [`MachineState::Suspended`].
    Suspending,
    /// Exists with a memory snapshot; starting it resumes from the snapshot.
    Suspended,
    /// On its way to [`MachineState::Destroyed`].
    Destroying,
    /// Gone; kept only in listings that include deleted machines.
    Destroyed,
    /// Exists but failed; not running.
    Failed,
    /// A state the backend reported that fleetscale does not know.
    Unknown,
}

/// Where a machine is going: the state it will be in once its transition (if any) ends.
///
/// The planner counts machines by destination, so that consecutive ticks never overshoot
/// while a start or stop is still in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// Will exist but never ran (`created`).
    Created,
    /// Will be running.
    Started,
    /// Will be stopped.
    Stopped,
    /// Will be suspended.
    Suspended,
    /// Will be failed (exists, not running).
    Failed,
    /// Will be gone.
    Gone,
    /// Unknown: counted as existing, never acted on.
    Unknown,
}

impl MachineState {
    /// Every state, in declaration order.
    pub const ALL: [MachineState; 11] = [
        MachineState::Created,
        MachineState::Starting,
        MachineState::Started,
        MachineState::Stopping,
        MachineState::Stopped,
        MachineState::Suspending,
        MachineState::Suspended,
        MachineState::Destroying,
        MachineState::Destroyed,
        MachineState::Failed,
        MachineState::Unknown,
    ];

    /// The state this machine is heading to.
    pub fn destination(self) -> Destination {
        match self {
            MachineState::Created => Destination::Created,
            MachineState::Starting | MachineState::Started => Destination::Started,
            MachineState::Stopping | MachineState::Stopped => Destination::Stopped,
            MachineState::Suspending | MachineState::Suspended => Destination::Suspended,
            MachineState::Destroying | MachineState::Destroyed => Destination::Gone,
            MachineState::Failed => Destination::Failed,
            MachineState::Unknown => Destination::Unknown,
        }
    }

    /// Whether the machine is in a transition (starting, stopping, suspending, destroying).
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            MachineState::Starting
                | MachineState::Stopping
                | MachineState::Suspending
                | MachineState::Destroying
        )
    }

    /// Whether the machine exists (or will keep existing): everything but destroying/destroyed.
    pub fn exists(self) -> bool {
        self.destination() != Destination::Gone
    }

    /// The lower-case name used in logs, metrics labels and JSON (`started`, `stopped`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Starting => "starting",
            MachineState::Started => "started",
            MachineState::Stopping => "stopping",
            MachineState::Stopped => "stopped",
            MachineState::Suspending => "suspending",
            MachineState::Suspended => "suspended",
            MachineState::Destroying => "destroying",
            MachineState::Destroyed => "destroyed",
            MachineState::Failed => "failed",
            MachineState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend's own record of a machine, carried opaquely by the core: what a backend needs
/// to act on the machine again without asking its API (Fly: the machine's configuration, to
/// clone it). The planner hands it back in [`CreateRequest::template`].
///
/// It is neither serialized (JSON of machines and plans stays what the core sees) nor
/// compared: two [`Machine`]s that differ only in their detail are equal.
///
/// ```
/// use fleetscale_core::{Detail, Machine, MachineState};
/// let m = Machine::new("m1", MachineState::Started).with_detail(Detail::new(String::from("config")));
/// let detail = m.detail.as_ref().unwrap();
/// assert_eq!(detail.downcast_ref::<String>().map(String::as_str), Some("config"));
/// assert_eq!(m, Machine::new("m1", MachineState::Started));
/// ```
#[derive(Clone)]
pub struct Detail(Arc<dyn Any + Send + Sync>);

impl Detail {
    /// Wraps a backend's record.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Detail(Arc::new(value))
    }

    /// The record, when it is a `T` (a backend reads back only what it stored).
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Detail(..)")
    }
}

/// One machine of a target, as listed by a [`crate::Scaler`]. Machines compare by what the
/// core sees: every field but [`Machine::detail`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Machine {
    /// The backend's identifier.
    pub id: MachineId,
    /// A human-readable name (may equal the id).
    pub name: String,
    /// The normalised lifecycle state.
    pub state: MachineState,
    /// The region or zone, when the backend has one.
    pub region: Option<String>,
    /// When the machine was created; used for "newest first" choices. `None` sorts oldest.
    pub created_at: Option<SystemTime>,
    /// An address other systems reach the machine at (private IP, host name), used by
    /// cluster memberships such as Weave Net.
    pub address: Option<String>,
    /// Whether fleetscale may act on this machine. `false` for machines the backend cannot
    /// manage right now (e.g. Fly `host_status != ok`): they still exist, so they are counted
    /// (against the hard maximum and step limits too), but never started, stopped, destroyed
    /// or cloned.
    pub manageable: bool,
    /// Free-form labels (process group, release, image); the planner ignores them.
    pub labels: BTreeMap<String, String>,
    /// The backend's own record of the machine (see [`Detail`]); `None` for machines not
    /// built by a backend's `list` or `create`.
    #[serde(skip)]
    pub detail: Option<Detail>,
}

impl PartialEq for Machine {
    fn eq(&self, other: &Machine) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.state == other.state
            && self.region == other.region
            && self.created_at == other.created_at
            && self.address == other.address
            && self.manageable == other.manageable
            && self.labels == other.labels
    }
}

impl Eq for Machine {}

impl Machine {
    /// A manageable machine with only an id and a state; the builder-style setters fill in the
    /// rest. Handy in tests and in simple backends.
    pub fn new(id: impl Into<MachineId>, state: MachineState) -> Self {
        let id = id.into();
        Machine {
            name: id.0.clone(),
            id,
            state,
            region: None,
            created_at: None,
            address: None,
            manageable: true,
            labels: BTreeMap::new(),
            detail: None,
        }
    }

    /// Sets whether fleetscale may act on the machine.
    pub fn with_manageable(mut self, manageable: bool) -> Self {
        self.manageable = manageable;
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the backend's record of the machine.
    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Sets the creation time.
    pub fn with_created_at(mut self, at: SystemTime) -> Self {
        self.created_at = Some(at);
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the address.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// How many machines a target has, by destination, as the planner and expressions see it.
///
/// Every machine that exists is counted, manageable or not: a machine the backend cannot act
/// on right now still exists, costs money and may come back, so it occupies its place under
/// every maximum (a backend whose new machines are briefly unmanageable must not make the
/// engine create more every tick). `unmanageable` says how many of the counted machines may
/// not be acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Machines that exist (every destination but gone; unknown and unmanageable included).
    pub created: u32,
    /// Machines started or starting.
    pub started: u32,
    /// Machines stopped or stopping.
    pub stopped: u32,
    /// Machines suspended or suspending.
    pub suspended: u32,
    /// Machines created but never started.
    pub never_started: u32,
    /// Machines failed.
    pub failed: u32,
    /// Machines in any transition (starting, stopping, suspending).
    pub transitioning: u32,
    /// Machines counted above that may not be acted on ([`Machine::manageable`] `false`).
    pub unmanageable: u32,
}

impl Counts {
    /// Counts an inventory.
    pub fn of(machines: &[Machine]) -> Counts {
        let mut c = Counts::default();
        for m in machines {
            if !m.state.exists() {
                continue;
            }
            if !m.manageable {
                c.unmanageable += 1;
            }
            c.created += 1;
            if m.state.is_transitional() {
                c.transitioning += 1;
            }
            match m.state.destination() {
                Destination::Started => c.started += 1,
                Destination::Stopped => c.stopped += 1,
                Destination::Suspended => c.suspended += 1,
                Destination::Created => c.never_started += 1,
                Destination::Failed => c.failed += 1,
                Destination::Gone | Destination::Unknown => {}
            }
        }
        c
    }
}

/// The state a newly created machine should be left in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    /// Started right away (the default).
    #[default]
    Started,
    /// Created but not started (Fly `skip_launch`), so a proxy can start it on demand.
    Stopped,
    /// Started, then suspended once up, so a proxy can resume it fast.
    Suspended,
}

impl InitialState {
    /// The destination a machine created this way counts toward.
    pub fn destination(self) -> Destination {
        match self {
            InitialState::Started => Destination::Started,
            // A machine created with skip_launch reports `created` (Fly docs) or `stopped`;
            // either way it is not running and can be started.
            InitialState::Stopped => Destination::Created,
            InitialState::Suspended => Destination::Suspended,
        }
    }

    /// The lower-case name (`started`, `stopped`, `suspended`).
    pub fn as_str(self) -> &'static str {
        match self {
            InitialState::Started => "started",
            InitialState::Stopped => "stopped",
            InitialState::Suspended => "suspended",
        }
    }
}

impl std::str::FromStr for InitialState {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "started" => Ok(InitialState::Started),
            "stopped" => Ok(InitialState::Stopped),
            "suspended" => Ok(InitialState::Suspended),
            other => Err(crate::Error::config(format!(
                "invalid initial machine state {other:?}: expected started, stopped or suspended"
            ))),
        }
    }
}

/// What to create: the engine fills it from the plan; the backend decides the rest
/// (image, size, region when `None`).
///
/// In JSON the template is its id alone (`"template": "148e21"`); read back, it is a bare
/// machine of that id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateRequest {
    /// The machine whose configuration the new one clones, when the backend clones: as the
    /// tick's inventory listed it (with the backend's [`Detail`], so the backend need not read
    /// it again), or a bare machine of a configured id that was not listed.
    #[serde(default, with = "template_id")]
    pub template: Option<Box<Machine>>,
    /// The region to create in; `None` lets the backend choose (round-robin, template's).
    pub region: Option<String>,
    /// The state to leave the new machine in.
    pub initial_state: InitialState,
    /// A name for the new machine; `None` lets the backend choose.
    pub name: Option<String>,
    /// Labels to set on the new machine.
    pub labels: BTreeMap<String, String>,
}

impl CreateRequest {
    /// A request for a machine left in `initial_state`, the backend choosing the rest.
    pub fn new(initial_state: InitialState) -> Self {
        CreateRequest {
            initial_state,
            ..CreateRequest::default()
        }
    }

    /// Sets the machine to clone.
    pub fn with_template(mut self, template: Machine) -> Self {
        self.template = Some(Box::new(template));
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The id of the template, if any.
    pub fn template_id(&self) -> Option<&MachineId> {
        self.template.as_ref().map(|m| &m.id)
    }
}

/// [`CreateRequest::template`] as its id in JSON.
mod template_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Machine, MachineId, MachineState};

    pub fn serialize<S: Serializer>(t: &Option<Box<Machine>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(m) => s.serialize_some(&m.id),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Machine>>, D::Error> {
        Ok(Option::<MachineId>::deserialize(d)?
            .map(|id| Box::new(Machine::new(id, MachineState::Unknown))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_count_toward_destination() {
        let inv = vec![
            Machine::new("a", MachineState::Starting),
            Machine::new("b", MachineState::Started),
            Machine::new("c", MachineState::Stopping),
            Machine::new("d", MachineState::Destroying),
            Machine::new("e", MachineState::Created),
            Machine {
                manageable: false,
                ..Machine::new("f", MachineState::Started)
            },
        ];
        let c = Counts::of(&inv);
        assert_eq!(
            c.created, 5,
            "the unmanageable machine exists and is counted"
        );
        assert_eq!(c.started, 3);
        assert_eq!(c.stopped, 1);
        assert_eq!(c.never_started, 1);
        assert_eq!(c.transitioning, 2);
        assert_eq!(c.unmanageable, 1);
    }

    #[test]
    fn initial_state_parses() {
        assert_eq!(
            "stopped".parse::<InitialState>().unwrap(),
            InitialState::Stopped
        );
        let err = "running".parse::<InitialState>().unwrap_err().to_string();
        assert!(err.contains("\"running\""), "{err}");
    }
}
