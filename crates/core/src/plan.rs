//! The planner: a pure function from an inventory and targets to the actions that reach them.
//!
//! [`plan_actions`] never does I/O. Given the same inventory, targets and options it always
//! returns the same [`Plan`], so dry runs and tests are reproducible.
//!
//! # Rules
//! - Machines are counted by [`Destination`]: a `starting` machine already counts as started, a
//!   `stopping` one as stopped, a `destroying` one as gone. Consecutive ticks therefore never
//!   overshoot while transitions are in flight.
//! - Every machine that exists is counted, [`Machine::manageable`] or not (see [`Counts`]): a
//!   machine the backend cannot act on still occupies its place under `max`, so a backend that
//!   lists new machines as unmanageable for a while never makes consecutive plans create past
//!   `max`. Machines that are not manageable are never touched (started, stopped, destroyed)
//!   nor cloned.
//! - **Created** below `min`: create the difference, cloning [`PlanOptions::template`] or else
//!   the newest healthy machine. Above `max`: destroy the difference in the order
//!   failed → stopped → suspended → created (never started) → started, newest first within a
//!   state; machines in transition are never destroyed; **the last manageable machine is never
//!   destroyed** (so neither is the last machine).
//! - **Started** below `min`: start stopped, then suspended, then never-started, then failed
//!   machines (oldest first), then let creates of this plan start. Above `max`: first turn this plan's creates
//!   into stopped creates (when the backend can create stopped), then stop the newest started
//!   machines, or suspend them with [`ScaleIn::Suspend`] where the backend can. A plan never
//!   both starts and stops.
//! - Per-action caps ([`PlanOptions::max_creates`], ...) bound each kind of action, by default to
//!   [`DEFAULT_MAX_ACTIONS_PER_KIND`] per plan, so that no number (a metric spike, a typo in an
//!   expression) makes one tick do or allocate work in proportion to it; what a cap or a
//!   missing candidate leaves undone is explained in [`Plan::notes`].

use std::cmp::{Ordering, Reverse};
use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{
    Capabilities, Counts, CreateRequest, Destination, InitialState, Machine, MachineId,
    MachineState, Targets,
};

/// The default cap on actions of each kind (creates, starts, stops, destroys) in one plan.
///
/// A plan is one tick's work: 100 creates is far beyond what a paced backend does in a tick
/// (Fly allows one create per second per app, sustained), while any count a policy may produce
/// ([`crate::expr::MAX_MACHINE_COUNT`] at most) is reached in a bounded number of ticks.
/// Override it per target with [`PlanOptions`] (both binaries have a setting).
pub const DEFAULT_MAX_ACTIONS_PER_KIND: u32 = 100;

/// How started machines above the started maximum are taken out of service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleIn {
    /// Stop them (the default): a later start boots them afresh.
    #[default]
    Stop,
    /// Suspend them, where the backend can ([`Capabilities::suspend`]): a later start resumes
    /// them from their memory snapshot, faster than a boot. A backend that cannot suspend
    /// stops them instead, and the plan notes it.
    Suspend,
}

/// What the planner may do, besides the targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanOptions {
    /// The state new machines are left in, unless the started bounds need otherwise.
    pub initial_state: InitialState,
    /// The machine new ones clone; `None` picks the newest healthy machine. A machine of that
    /// id in the inventory is handed to the backend as listed; otherwise the backend gets the
    /// bare id and reads the machine itself.
    pub template: Option<MachineId>,
    /// How machines above the started maximum are taken out of service.
    pub scale_in: ScaleIn,
    /// What the backend can do.
    pub capabilities: Capabilities,
    /// At most this many creates (default [`DEFAULT_MAX_ACTIONS_PER_KIND`]; `None`: only the
    /// targets bound them).
    pub max_creates: Option<u32>,
    /// At most this many destroys (default [`DEFAULT_MAX_ACTIONS_PER_KIND`]).
    pub max_destroys: Option<u32>,
    /// At most this many starts (default [`DEFAULT_MAX_ACTIONS_PER_KIND`]).
    pub max_starts: Option<u32>,
    /// At most this many stops, or suspends with [`ScaleIn::Suspend`] (default
    /// [`DEFAULT_MAX_ACTIONS_PER_KIND`]).
    pub max_stops: Option<u32>,
}

impl Default for PlanOptions {
    /// Started creates, the newest healthy machine as template, the most conservative
    /// capabilities, and [`DEFAULT_MAX_ACTIONS_PER_KIND`] actions of each kind.
    fn default() -> Self {
        PlanOptions {
            initial_state: InitialState::default(),
            template: None,
            scale_in: ScaleIn::default(),
            capabilities: Capabilities::default(),
            max_creates: Some(DEFAULT_MAX_ACTIONS_PER_KIND),
            max_destroys: Some(DEFAULT_MAX_ACTIONS_PER_KIND),
            max_starts: Some(DEFAULT_MAX_ACTIONS_PER_KIND),
            max_stops: Some(DEFAULT_MAX_ACTIONS_PER_KIND),
        }
    }
}

impl PlanOptions {
    /// Sets the state new machines are left in.
    pub fn with_initial_state(mut self, state: InitialState) -> Self {
        self.initial_state = state;
        self
    }

    /// Sets the machine new ones clone.
    pub fn with_template(mut self, template: Option<MachineId>) -> Self {
        self.template = template;
        self
    }

    /// Sets how machines above the started maximum are taken out of service.
    pub fn with_scale_in(mut self, scale_in: ScaleIn) -> Self {
        self.scale_in = scale_in;
        self
    }

    /// Sets what the backend can do (the engine sets it from the scaler at every tick).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Caps the creates of one plan (`None`: only the targets bound them).
    pub fn with_max_creates(mut self, cap: Option<u32>) -> Self {
        self.max_creates = cap;
        self
    }

    /// Caps the destroys of one plan.
    pub fn with_max_destroys(mut self, cap: Option<u32>) -> Self {
        self.max_destroys = cap;
        self
    }

    /// Caps the starts of one plan.
    pub fn with_max_starts(mut self, cap: Option<u32>) -> Self {
        self.max_starts = cap;
        self
    }

    /// Caps the stops (or suspends) of one plan.
    pub fn with_max_stops(mut self, cap: Option<u32>) -> Self {
        self.max_stops = cap;
        self
    }

    /// Sets the same cap on every kind of action (`None`: uncapped).
    pub fn with_max_actions_per_kind(mut self, cap: Option<u32>) -> Self {
        self.max_creates = cap;
        self.max_destroys = cap;
        self.max_starts = cap;
        self.max_stops = cap;
        self
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a machine.
    Create {
        /// The machine to create (template, region, initial state, labels).
        request: CreateRequest,
        /// Why the planner chose it, for logs and decision records.
        reason: String,
    },
    /// Start (or resume) a machine.
    Start {
        /// The machine to start.
        id: MachineId,
        /// Its state when planned.
        from: MachineState,
        /// Why the planner chose it, for logs and decision records.
        reason: String,
    },
    /// Stop a started machine.
    Stop {
        /// The machine to stop.
        id: MachineId,
        /// Why the planner chose it, for logs and decision records.
        reason: String,
    },
    /// Suspend a started machine ([`ScaleIn::Suspend`]).
    Suspend {
        /// The machine to suspend.
        id: MachineId,
        /// Why the planner chose it, for logs and decision records.
        reason: String,
    },
    /// Destroy a machine.
    Destroy {
        /// The machine to destroy.
        id: MachineId,
        /// Its state when planned.
        from: MachineState,
        /// Why the planner chose it, for logs and decision records.
        reason: String,
    },
}

/// The kind of an [`Action`], without its data; used for counting and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// [`Action::Create`].
    Create,
    /// [`Action::Start`].
    Start,
    /// [`Action::Stop`].
    Stop,
    /// [`Action::Suspend`].
    Suspend,
    /// [`Action::Destroy`].
    Destroy,
}

impl ActionKind {
    /// Every kind, in the order a plan runs them after destroys (destroy, stop, suspend,
    /// create, start are the plan's order; this is declaration order).
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Create,
        ActionKind::Start,
        ActionKind::Stop,
        ActionKind::Suspend,
        ActionKind::Destroy,
    ];

    /// `create`, `start`, `stop`, `suspend` or `destroy`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Create => "create",
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Suspend => "suspend",
            ActionKind::Destroy => "destroy",
        }
    }

    /// Whether the action adds capacity (create, start).
    pub fn is_scale_up(self) -> bool {
        matches!(self, ActionKind::Create | ActionKind::Start)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    /// The action's kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Create { .. } => ActionKind::Create,
            Action::Start { .. } => ActionKind::Start,
            Action::Stop { .. } => ActionKind::Stop,
            Action::Suspend { .. } => ActionKind::Suspend,
            Action::Destroy { .. } => ActionKind::Destroy,
        }
    }

    /// The machine acted on (`None` for a create).
    pub fn machine(&self) -> Option<&MachineId> {
        match self {
            Action::Create { .. } => None,
            Action::Start { id, .. }
            | Action::Stop { id, .. }
            | Action::Suspend { id, .. }
            | Action::Destroy { id, .. } => Some(id),
        }
    }

    /// Why the planner chose it.
    pub fn reason(&self) -> &str {
        match self {
            Action::Create { reason, .. }
            | Action::Start { reason, .. }
            | Action::Stop { reason, .. }
            | Action::Suspend { reason, .. }
            | Action::Destroy { reason, .. } => reason,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create { request, reason } => write!(
                f,
                "create ({}{}): {reason}",
                request.initial_state.as_str(),
                request
                    .template_id()
                    .map(|t| format!(", clone of {t}"))
                    .unwrap_or_default()
            ),
            Action::Start { id, from, reason } => write!(f, "start {id} ({from}): {reason}"),
            Action::Stop { id, reason } => write!(f, "stop {id}: {reason}"),
            Action::Suspend { id, reason } => write!(f, "suspend {id}: {reason}"),
            Action::Destroy { id, from, reason } => write!(f, "destroy {id} ({from}): {reason}"),
        }
    }
}

/// The outcome of planning: the actions, and the counts before and (projected) after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The actions in execution order: destroys, stops (or suspends), creates, starts.
    pub actions: Vec<Action>,
    /// Counts of the inventory planned from.
    pub before: Counts,
    /// Counts once every action has taken effect.
    pub after: Counts,
    /// What could not be done and why (no template, caps, too few candidates, last machine).
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether the plan does nothing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// How many actions of `kind` the plan holds.
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind() == kind).count()
    }
}

/// A candidate for a destroy, start or stop, with its sort key read out of the machine once.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    created_at: Option<SystemTime>,
    /// Position in `live`, so that destroyed machines are marked without hashing their ids.
    live_index: usize,
    machine: &'a Machine,
}

impl Candidate<'_> {
    /// Oldest first (ties by id), within a rank.
    fn oldest_first(&self, other: &Self) -> Ordering {
        self.created_at
            .cmp(&other.created_at)
            .then_with(|| self.machine.id.cmp(&other.machine.id))
    }

    /// Newest first (ties by id, reversed), within a rank: the order of [`newest_first`].
    fn newest_first(&self, other: &Self) -> Ordering {
        other
            .created_at
            .cmp(&self.created_at)
            .then_with(|| other.machine.id.cmp(&self.machine.id))
    }
}

/// Candidates bucketed by rank (lower first), each bucket in inventory order.
struct Ranked<'a> {
    buckets: Vec<Vec<Candidate<'a>>>,
    len: usize,
}

/// The candidates among `live` that `rank` gives a rank (it sees each machine's position in
/// `live`). Ranks are a handful of states; buckets are sized exactly by a first counting pass.
fn ranked<'a>(live: &[&'a Machine], rank: impl Fn(usize, &Machine) -> Option<u8>) -> Ranked<'a> {
    let mut sizes: Vec<usize> = Vec::new();
    for (i, m) in live.iter().enumerate() {
        if let Some(r) = rank(i, m) {
            let r = usize::from(r);
            if sizes.len() <= r {
                sizes.resize(r + 1, 0);
            }
            sizes[r] += 1;
        }
    }
    let mut buckets: Vec<Vec<Candidate<'a>>> =
        sizes.iter().map(|&n| Vec::with_capacity(n)).collect();
    for (live_index, &machine) in live.iter().enumerate() {
        if let Some(rank) = rank(live_index, machine) {
            buckets[usize::from(rank)].push(Candidate {
                created_at: machine.created_at,
                live_index,
                machine,
            });
        }
    }
    Ranked {
        len: sizes.iter().sum(),
        buckets,
    }
}

/// The first `k` candidates ordered by rank, then by `within_rank`, as buckets to read in
/// order.
///
/// Equal to a stable sort by (rank, `within_rank`) followed by `take(k)` whenever no two
/// candidates compare equal, which holds because `within_rank` ends with the machine id (ids
/// are unique in an inventory); candidates that did compare equal would yield the same
/// actions in either order. The work is linear in the candidates plus a sort of the `k`
/// kept: whole buckets are sorted, and a bucket that is already in order (or in reverse
/// order), as inventories listed by creation time are, sorts in one pass; only the last
/// bucket taken is cut, by a selection unless it is in order already.
fn first_ranked<'a>(
    ranked: Ranked<'a>,
    k: usize,
    within_rank: fn(&Candidate<'a>, &Candidate<'a>) -> Ordering,
) -> Vec<Vec<Candidate<'a>>> {
    let mut out = Vec::new();
    let mut taken = 0;
    for mut bucket in ranked.buckets {
        if taken == k {
            break;
        }
        let room = k - taken;
        if bucket.len() > room {
            let in_order = bucket.is_sorted_by(|a, b| within_rank(a, b) != Ordering::Greater)
                || bucket.is_sorted_by(|a, b| within_rank(a, b) != Ordering::Less);
            if !in_order {
                bucket.select_nth_unstable_by(room - 1, within_rank);
                bucket.truncate(room);
            }
        }
        bucket.sort_unstable_by(within_rank);
        bucket.truncate(room);
        taken += bucket.len();
        out.push(bucket);
    }
    out
}

/// Newest first by creation time, then by id (reversed): the order of destroys and stops
/// within a state, and of template choice.
fn newest_first(a: &&Machine, b: &&Machine) -> Ordering {
    (Reverse(a.created_at), Reverse(&a.id)).cmp(&(Reverse(b.created_at), Reverse(&b.id)))
}

fn cap(n: u32, limit: Option<u32>, what: &str, notes: &mut Vec<String>) -> u32 {
    match limit {
        Some(l) if n > l => {
            notes.push(format!("{what} capped at {l} of {n} this tick"));
            l
        }
        _ => n,
    }
}

/// What one machine in `state` adds to [`Counts`], by [`Counts::of`] itself so that the
/// projection and the inventory are counted by the same rules.
fn counted(state: MachineState, manageable: bool) -> Counts {
    let mut m = Machine::new(MachineId::new(String::new()), state);
    m.manageable = manageable;
    Counts::of(std::slice::from_ref(&m))
}

/// Adds `n` machines counted as `c`.
fn add_counts(total: &mut Counts, c: Counts, n: u32) {
    total.created += c.created * n;
    total.started += c.started * n;
    total.stopped += c.stopped * n;
    total.suspended += c.suspended * n;
    total.never_started += c.never_started * n;
    total.failed += c.failed * n;
    total.transitioning += c.transitioning * n;
    total.unmanageable += c.unmanageable * n;
}

/// Removes `n` machines counted as `c` that `total` counted (so it cannot underflow).
fn sub_counts(total: &mut Counts, c: Counts, n: u32) {
    total.created -= c.created * n;
    total.started -= c.started * n;
    total.stopped -= c.stopped * n;
    total.suspended -= c.suspended * n;
    total.never_started -= c.never_started * n;
    total.failed -= c.failed * n;
    total.transitioning -= c.transitioning * n;
    total.unmanageable -= c.unmanageable * n;
}

/// Plans the actions that bring `inventory` inside `targets`. Pure and deterministic.
///
/// ```
/// use fleetscale_core::{Bounds, Machine, MachineState, Targets};
/// use fleetscale_core::plan::{plan_actions, ActionKind, PlanOptions};
///
/// let inventory = vec![Machine::new("a", MachineState::Started)];
/// let targets = Targets { created: Bounds::exactly(3), started: Bounds::NONE };
/// let plan = plan_actions(&inventory, &targets, &PlanOptions::default());
/// assert_eq!(plan.count(ActionKind::Create), 2);
/// assert_eq!(plan.after.created, 3);
/// ```
pub fn plan_actions(inventory: &[Machine], targets: &Targets, options: &PlanOptions) -> Plan {
    let before = Counts::of(inventory);
    let mut notes = Vec::new();
    let live: Vec<&Machine> = inventory
        .iter()
        .filter(|m| m.manageable && m.state.exists())
        .collect();

    let mut created = before.created;
    let mut started = before.started;
    // The machines this plan acts on and the state each is left in (`None`: destroyed); the
    // projected counts are derived from them.
    let mut changes: Vec<(MachineState, Option<MachineState>)> = Vec::new();
    let mut destroys: Vec<Action> = Vec::new();
    // Indexed like `live`; left empty unless the plan destroys.
    let mut destroyed: Vec<bool> = Vec::new();
    let mut create_count: u32 = 0;
    let mut template: Option<Machine> = None;

    // --- created bounds -------------------------------------------------------------------
    if let Some(min) = targets.created.min.filter(|&min| created < min) {
        let want = min - created;
        template = match &options.template {
            Some(id) => Some(live.iter().find(|m| &m.id == id).map_or_else(
                || Machine::new(id.clone(), MachineState::Unknown),
                |m| (*m).clone(),
            )),
            // `min_by` keeps the first of equal machines, as a stable sort would.
            None => live
                .iter()
                .copied()
                .filter(|m| {
                    !matches!(
                        m.state.destination(),
                        Destination::Failed | Destination::Unknown
                    )
                })
                .min_by(newest_first)
                .map(|m| (*m).clone()),
        };
        if template.is_none() && options.capabilities.create_needs_template {
            notes.push(format!(
                "cannot create {want} machine(s): no machine available to clone"
            ));
        } else {
            create_count = cap(want, options.max_creates, "creates", &mut notes);
            created += create_count;
        }
    } else if let Some(max) = targets.created.max.filter(|&max| created > max) {
        let mut want = created - max;
        // Destroys can only take manageable machines, and never the last one of those: an app
        // left with only machines the backend cannot act on has nothing to clone or start.
        let destroyable = live.len().saturating_sub(1) as u32;
        if want > destroyable {
            notes.push(if before.unmanageable > 0 && want < created {
                format!(
                    "{} unmanageable machine(s) count toward created max {max} but cannot be destroyed: keeping the last manageable one",
                    before.unmanageable
                )
            } else {
                format!("created max {max} would destroy the last machine: keeping one")
            });
            want = destroyable;
        }
        let want = cap(want, options.max_destroys, "destroys", &mut notes) as usize;
        let rank = |s: MachineState| match s {
            MachineState::Failed => Some(0),
            MachineState::Stopped => Some(1),
            MachineState::Suspended => Some(2),
            MachineState::Created => Some(3),
            MachineState::Started => Some(4),
            _ => None,
        };
        let candidates = ranked(&live, |_, m| rank(m.state));
        if candidates.len < want {
            notes.push(format!(
                "only {} of {want} machine(s) can be destroyed now (others are in transition)",
                candidates.len
            ));
        }
        let candidates = first_ranked(candidates, want, Candidate::newest_first);
        if want > 0 {
            destroyed = vec![false; live.len()];
        }
        let reason = format!("created {} > max {max}", before.created);
        destroys.reserve(want);
        for c in candidates.iter().flatten() {
            let m = c.machine;
            destroys.push(Action::Destroy {
                id: m.id.clone(),
                from: m.state,
                reason: reason.clone(),
            });
            destroyed[c.live_index] = true;
            changes.push((m.state, None));
            created -= 1;
            if m.state.destination() == Destination::Started {
                started -= 1;
            }
        }
    }
    let is_destroyed = |i: usize| destroyed.get(i).copied().unwrap_or(false);

    // --- started bounds -------------------------------------------------------------------
    // The state creates not needed as started are left in; a backend that cannot create
    // stopped (or suspended) machines only creates started ones.
    let caps = options.capabilities;
    let not_started = match options.initial_state {
        InitialState::Suspended if caps.suspend => Some(InitialState::Suspended),
        _ if caps.create_stopped => Some(InitialState::Stopped),
        _ => None,
    };
    let creates_can_stop = not_started.is_some();
    let mut creates_started =
        if options.initial_state == InitialState::Started || not_started.is_none() {
            create_count
        } else {
            0
        };
    let mut starts: Vec<Action> = Vec::new();
    let mut stops: Vec<Action> = Vec::new();
    let projected = started + creates_started;

    if let Some(min) = targets.started.min.filter(|&min| projected < min) {
        let need = min - projected;
        // Failed machines come last: a start is how they recover (Fly restarts a failed
        // machine on `start`); without them a fleet with failed machines stays short forever.
        let rank = |s: MachineState| match s {
            MachineState::Stopped => Some(0),
            MachineState::Suspended => Some(1),
            MachineState::Created => Some(2),
            MachineState::Failed => Some(3),
            _ => None,
        };
        let candidates = ranked(&live, |i, m| rank(m.state).filter(|_| !is_destroyed(i)));
        let from_existing = cap(
            need.min(candidates.len as u32),
            options.max_starts,
            "starts",
            &mut notes,
        );
        let candidates = first_ranked(candidates, from_existing as usize, Candidate::oldest_first);
        let reason = format!("started {projected} < min {min}");
        starts.reserve(from_existing as usize);
        for c in candidates.iter().flatten() {
            let m = c.machine;
            starts.push(Action::Start {
                id: m.id.clone(),
                from: m.state,
                reason: reason.clone(),
            });
            changes.push((m.state, Some(MachineState::Started)));
        }
        started += from_existing;
        let remaining = need - from_existing;
        let convertible = create_count - creates_started;
        let converted = remaining.min(convertible);
        creates_started += converted;
        if remaining > converted {
            notes.push(format!(
                "not enough stopped machines to reach started min {min}: {} short",
                remaining - converted
            ));
        }
    } else if let Some(max) = targets.started.max.filter(|&max| projected > max) {
        let mut excess = projected - max;
        if creates_started > 0 {
            if creates_can_stop {
                let converted = excess.min(creates_started);
                creates_started -= converted;
                excess -= converted;
            } else {
                notes.push(format!(
                    "backend cannot create stopped machines: {creates_started} new machine(s) start and are stopped by a later tick"
                ));
            }
        }
        let suspend = options.scale_in == ScaleIn::Suspend && caps.suspend;
        if options.scale_in == ScaleIn::Suspend && !caps.suspend {
            notes.push("backend cannot suspend: stopping instead".into());
        }
        let candidates = ranked(&live, |i, m| {
            (m.state == MachineState::Started && !is_destroyed(i)).then_some(0)
        });
        let want = cap(
            excess.min(candidates.len as u32),
            options.max_stops,
            "stops",
            &mut notes,
        );
        if (candidates.len as u32) < excess {
            notes.push(format!(
                "only {} of {excess} machine(s) can be stopped now (others are starting or new)",
                candidates.len
            ));
        }
        let candidates = first_ranked(candidates, want as usize, Candidate::newest_first);
        let reason = format!("started {projected} > max {max}");
        let left_in = if suspend {
            MachineState::Suspended
        } else {
            MachineState::Stopped
        };
        stops.reserve(want as usize);
        for c in candidates.iter().flatten() {
            let id = c.machine.id.clone();
            let reason = reason.clone();
            stops.push(if suspend {
                Action::Suspend { id, reason }
            } else {
                Action::Stop { id, reason }
            });
            changes.push((c.machine.state, Some(left_in)));
        }
        started -= want;
    }

    // --- assemble -------------------------------------------------------------------------
    // Scale-down first: stops and destroys free capacity before creates claim it, and a failed
    // create then never leaves the target above its started max for a tick.
    let mut actions = destroys;
    actions.reserve(stops.len() + create_count as usize + starts.len());
    actions.extend(stops);
    let default_not_started = not_started.unwrap_or(InitialState::Started);
    let create_reason = format!(
        "created {} < min {}",
        before.created,
        targets.created.min.unwrap_or_default()
    );
    for i in 0..create_count {
        let initial_state = if i < creates_started {
            InitialState::Started
        } else {
            default_not_started
        };
        changes.push((MachineState::Destroyed, Some(created_state(initial_state))));
        actions.push(Action::Create {
            request: CreateRequest {
                template: template.clone().map(Box::new),
                initial_state,
                ..CreateRequest::default()
            },
            reason: create_reason.clone(),
        });
    }
    actions.extend(starts);

    let after = project(before, &changes);
    debug_assert_eq!(after.created, created);
    debug_assert_eq!(after.started, started + creates_started);
    Plan {
        actions,
        before,
        after,
        notes,
    }
}

/// The counts once every change has taken effect: each acted-on machine moves from its old
/// state's counts to its new one's (a create moves from `Destroyed`, which counts nothing; a
/// destroy to nothing). Every change names a different machine and ids are unique in an
/// inventory, so this equals `Counts::of(&apply_plan(..))` without copying the inventory.
fn project(before: Counts, changes: &[(MachineState, Option<MachineState>)]) -> Counts {
    // A plan touches at most a handful of distinct (from, to) pairs: count each pair once.
    let mut per_pair: Vec<((MachineState, Option<MachineState>), u32)> = Vec::new();
    for &change in changes {
        match per_pair.iter_mut().find(|(pair, _)| *pair == change) {
            Some((_, n)) => *n += 1,
            None => per_pair.push((change, 1)),
        }
    }
    let mut after = before;
    for ((from, to), n) in per_pair {
        sub_counts(&mut after, counted(from, true), n);
        if let Some(to) = to {
            add_counts(&mut after, counted(to, true), n);
        }
    }
    after
}

/// The state a machine created with `initial_state` is listed in once the create has taken
/// effect (as [`apply_plan`] projects it).
fn created_state(initial_state: InitialState) -> MachineState {
    match initial_state {
        InitialState::Started => MachineState::Started,
        InitialState::Stopped => MachineState::Created,
        InitialState::Suspended => MachineState::Suspended,
    }
}

/// Applies a plan to an inventory as if every action succeeded and every transition ended.
///
/// Created machines get ids `new-0`, `new-1`, ... This is what the property tests and dry runs
/// use to show the result of a plan.
pub fn apply_plan(inventory: &[Machine], plan: &Plan) -> Vec<Machine> {
    apply_actions(inventory, &plan.actions)
}

/// [`apply_plan`] over a slice of actions, in O(machines + actions): the changes are keyed by
/// id (a map as large as the plan, not the fleet) and applied in one pass.
fn apply_actions(inventory: &[Machine], actions: &[Action]) -> Vec<Machine> {
    let mut changes: HashMap<&MachineId, Option<MachineState>> = HashMap::new();
    let mut fresh = Vec::new();
    for action in actions {
        match action {
            Action::Create { request, .. } => {
                let mut m = Machine::new(
                    format!("new-{}", fresh.len()),
                    created_state(request.initial_state),
                );
                m.region = request.region.clone();
                fresh.push(m);
            }
            Action::Start { id, .. } => {
                changes.insert(id, Some(MachineState::Started));
            }
            Action::Stop { id, .. } => {
                changes.insert(id, Some(MachineState::Stopped));
            }
            Action::Suspend { id, .. } => {
                changes.insert(id, Some(MachineState::Suspended));
            }
            Action::Destroy { id, .. } => {
                changes.insert(id, None);
            }
        }
    }
    let mut out: Vec<Machine> = Vec::with_capacity(inventory.len() + fresh.len());
    for m in inventory {
        match changes.get(&m.id) {
            None => out.push(m.clone()),
            Some(None) => {}
            Some(Some(state)) => {
                let mut m = m.clone();
                m.state = *state;
                out.push(m);
            }
        }
    }
    out.extend(fresh);
    out
}
