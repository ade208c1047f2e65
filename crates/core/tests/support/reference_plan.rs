//! The specification `tests/planner.rs` holds `fleetscale_core::plan::plan_actions` to, action
//! for action and note for note.
//!
//! It is written to be obviously right, not fast, and shares nothing with the planner but the
//! public types: it works on a copy of the inventory, takes one action at a time (the best
//! remaining candidate by one preference list and age, found by a scan), applies each action to
//! the copy at once, and recounts the copy with `Counts::of` whenever it needs a count, so that
//! the projected counts are simply the copy's counts at the end. It is quadratic in the fleet
//! (a scan per action), which is why the benchmarks measure only the planner.

use std::cmp::Ordering;

use fleetscale_core::plan::{Action, Plan, PlanOptions, ScaleIn};
use fleetscale_core::{
    Counts, CreateRequest, Destination, InitialState, Machine, MachineId, MachineState, Targets,
};

/// The states a destroy takes machines from, most expendable first (transitions never).
const DESTROY_PREFERENCE: [MachineState; 5] = [
    MachineState::Failed,
    MachineState::Stopped,
    MachineState::Suspended,
    MachineState::Created,
    MachineState::Started,
];

/// The states a start takes machines from, quickest to serve first; failed machines last, as
/// a start is how they recover.
const START_PREFERENCE: [MachineState; 4] = [
    MachineState::Stopped,
    MachineState::Suspended,
    MachineState::Created,
    MachineState::Failed,
];

/// Stops and suspends take only started machines (not starting ones, not new ones).
const STOP_PREFERENCE: [MachineState; 1] = [MachineState::Started];

/// Which machine of a preference's state goes first.
#[derive(Clone, Copy)]
enum Age {
    /// The latest created (ties: the greatest id); no creation time counts as oldest.
    Newest,
    /// The earliest created (ties: the smallest id).
    Oldest,
}

/// The inventory as the plan leaves it: the listed machines (a destroyed one kept in place
/// with the state `Destroyed`, which `Counts::of` skips), then the machines the plan creates.
struct Fleet {
    machines: Vec<Machine>,
    listed: usize,
}

impl Fleet {
    fn counts(&self) -> Counts {
        Counts::of(&self.machines)
    }

    /// Listed machines the backend may act on that are in one of `states`.
    fn eligible<'a>(&'a self, states: &'a [MachineState]) -> impl Iterator<Item = usize> + 'a {
        (0..self.listed).filter(move |&i| {
            let m = &self.machines[i];
            m.manageable && states.contains(&m.state)
        })
    }

    /// The first eligible machine by the order of `states`, then by `age`.
    fn best(&self, states: &[MachineState], age: Age) -> Option<usize> {
        let key = |i: usize| {
            let m = &self.machines[i];
            let rank = states.iter().position(|s| *s == m.state);
            (rank, m.created_at, &m.id)
        };
        self.eligible(states).min_by(|&a, &b| {
            let ((rank_a, at_a, id_a), (rank_b, at_b, id_b)) = (key(a), key(b));
            rank_a.cmp(&rank_b).then_with(|| {
                let by_age: Ordering = (at_a, id_a).cmp(&(at_b, id_b));
                match age {
                    Age::Oldest => by_age,
                    Age::Newest => by_age.reverse(),
                }
            })
        })
    }

    /// The action `action` builds from machine `i`'s id and state, which it then leaves in
    /// the state `after`.
    fn act(
        &mut self,
        i: usize,
        after: MachineState,
        action: impl FnOnce(MachineId, MachineState) -> Action,
    ) -> Action {
        let m = &mut self.machines[i];
        let taken = action(m.id.clone(), m.state);
        m.state = after;
        taken
    }

    /// The machines the plan creates.
    fn created_by_plan(&mut self) -> &mut [Machine] {
        &mut self.machines[self.listed..]
    }
}

/// The state a machine created as `initial` is listed in once created (a machine created
/// without being launched reports `created`).
fn listed_as(initial: InitialState) -> MachineState {
    match initial {
        InitialState::Started => MachineState::Started,
        InitialState::Stopped => MachineState::Created,
        InitialState::Suspended => MachineState::Suspended,
    }
}

/// How a machine listed in `state` was created (the inverse of [`listed_as`]).
fn created_as(state: MachineState) -> InitialState {
    match state {
        MachineState::Started => InitialState::Started,
        MachineState::Created => InitialState::Stopped,
        MachineState::Suspended => InitialState::Suspended,
        other => unreachable!("new machines are never {other}"),
    }
}

/// `wanted`, or `limit` with a note when that is less.
fn at_most(wanted: u32, limit: Option<u32>, what: &str, notes: &mut Vec<String>) -> u32 {
    match limit {
        Some(limit) if limit < wanted => {
            notes.push(format!("{what} capped at {limit} of {wanted} this tick"));
            limit
        }
        _ => wanted,
    }
}

/// The machine new ones clone: the configured one (as listed when the backend may act on it,
/// else by bare id), or else the newest machine the backend may act on that is neither failed
/// nor of unknown state.
fn template(inventory: &[Machine], options: &PlanOptions) -> Option<Machine> {
    let actionable = || {
        inventory
            .iter()
            .filter(|m| m.manageable && m.state.exists())
    };
    match &options.template {
        Some(id) => Some(
            actionable()
                .find(|m| &m.id == id)
                .cloned()
                .unwrap_or_else(|| Machine::new(id.clone(), MachineState::Unknown)),
        ),
        None => actionable()
            .filter(|m| {
                !matches!(
                    m.state.destination(),
                    Destination::Failed | Destination::Unknown
                )
            })
            .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .cloned(),
    }
}

/// How new machines not needed started are created: suspended when so configured and the
/// backend can suspend, else stopped when the backend can create stopped machines, else not at
/// all (`None`: the backend only creates started machines).
fn parked_state(options: &PlanOptions) -> Option<InitialState> {
    let caps = options.capabilities;
    if options.initial_state == InitialState::Suspended && caps.suspend {
        Some(InitialState::Suspended)
    } else if caps.create_stopped {
        Some(InitialState::Stopped)
    } else {
        None
    }
}

/// The reference planner (see the module documentation).
pub fn reference_plan(inventory: &[Machine], targets: &Targets, options: &PlanOptions) -> Plan {
    let mut fleet = Fleet {
        machines: inventory.to_vec(),
        listed: inventory.len(),
    };
    let before = fleet.counts();
    let parked = parked_state(options);
    let mut notes = Vec::new();
    let mut destroys = Vec::new();
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    let mut clone_of = None;

    // Created below min: add the missing machines, started unless they can be parked.
    if let Some(min) = targets.created.min.filter(|&min| before.created < min) {
        let missing = min - before.created;
        clone_of = template(inventory, options);
        if clone_of.is_none() && options.capabilities.create_needs_template {
            notes.push(format!(
                "cannot create {missing} machine(s): no machine available to clone"
            ));
        } else {
            let initial = match parked {
                Some(parked) if options.initial_state != InitialState::Started => parked,
                _ => InitialState::Started,
            };
            for i in 0..at_most(missing, options.max_creates, "creates", &mut notes) {
                fleet
                    .machines
                    .push(Machine::new(format!("new-{i}"), listed_as(initial)));
            }
        }
    }
    // Created above max: destroy one machine at a time, keeping the last one the backend may
    // act on.
    else if let Some(max) = targets.created.max.filter(|&max| before.created > max) {
        let excess = before.created - max;
        let actionable = inventory
            .iter()
            .filter(|m| m.manageable && m.state.exists())
            .count() as u32;
        let mut allowed = excess;
        // Destroying `excess` machines would leave none the backend may act on.
        if actionable <= excess {
            allowed = actionable.saturating_sub(1);
            notes.push(if before.unmanageable > 0 && excess < before.created {
                format!(
                    "{} unmanageable machine(s) count toward created max {max} but cannot be destroyed: keeping the last manageable one",
                    before.unmanageable
                )
            } else {
                format!("created max {max} would destroy the last machine: keeping one")
            });
        }
        let allowed = at_most(allowed, options.max_destroys, "destroys", &mut notes);
        let reason = format!("created {} > max {max}", before.created);
        while fleet.counts().created > max && destroys.len() < allowed as usize {
            let Some(i) = fleet.best(&DESTROY_PREFERENCE, Age::Newest) else {
                notes.push(format!(
                    "only {} of {allowed} machine(s) can be destroyed now (others are in transition)",
                    destroys.len()
                ));
                break;
            };
            destroys.push(
                fleet.act(i, MachineState::Destroyed, |id, from| Action::Destroy {
                    id,
                    from,
                    reason: reason.clone(),
                }),
            );
        }
    }

    let started = fleet.counts().started;
    // Started below min: start listed machines one at a time, then launch parked new ones.
    if let Some(min) = targets.started.min.filter(|&min| started < min) {
        let reason = format!("started {started} < min {min}");
        let startable = fleet.eligible(&START_PREFERENCE).count() as u32;
        let allowed = at_most(
            (min - started).min(startable),
            options.max_starts,
            "starts",
            &mut notes,
        );
        while fleet.counts().started < min {
            if starts.len() < allowed as usize {
                let i = fleet
                    .best(&START_PREFERENCE, Age::Oldest)
                    .expect("fewer starts allowed than machines to start");
                starts.push(
                    fleet.act(i, MachineState::Started, |id, from| Action::Start {
                        id,
                        from,
                        reason: reason.clone(),
                    }),
                );
            } else if let Some(new) = fleet
                .created_by_plan()
                .iter_mut()
                .find(|m| m.state != MachineState::Started)
            {
                new.state = MachineState::Started;
            } else {
                notes.push(format!(
                    "not enough stopped machines to reach started min {min}: {} short",
                    min - fleet.counts().started
                ));
                break;
            }
        }
    }
    // Started above max: park new machines where the backend can, then stop (or suspend) the
    // newest started machines one at a time.
    else if let Some(max) = targets.started.max.filter(|&max| started > max) {
        let reason = format!("started {started} > max {max}");
        let new_started = fleet
            .created_by_plan()
            .iter()
            .filter(|m| m.state == MachineState::Started)
            .count();
        if new_started > 0 && parked.is_none() {
            notes.push(format!(
                "backend cannot create stopped machines: {new_started} new machine(s) start and are stopped by a later tick"
            ));
        }
        let suspend = options.scale_in == ScaleIn::Suspend;
        let suspend = suspend && options.capabilities.suspend;
        if options.scale_in == ScaleIn::Suspend && !suspend {
            notes.push("backend cannot suspend: stopping instead".into());
        }
        if let Some(parked) = parked {
            while fleet.counts().started > max {
                let Some(new) = fleet
                    .created_by_plan()
                    .iter_mut()
                    .find(|m| m.state == MachineState::Started)
                else {
                    break;
                };
                new.state = listed_as(parked);
            }
        }
        let excess = fleet.counts().started - max;
        let stoppable = fleet.eligible(&STOP_PREFERENCE).count() as u32;
        let allowed = at_most(
            excess.min(stoppable),
            options.max_stops,
            "stops",
            &mut notes,
        );
        if stoppable < excess {
            notes.push(format!(
                "only {stoppable} of {excess} machine(s) can be stopped now (others are starting or new)"
            ));
        }
        while fleet.counts().started > max && stops.len() < allowed as usize {
            let i = fleet
                .best(&STOP_PREFERENCE, Age::Newest)
                .expect("fewer stops allowed than started machines");
            let reason = reason.clone();
            stops.push(if suspend {
                fleet.act(i, MachineState::Suspended, |id, _| Action::Suspend {
                    id,
                    reason,
                })
            } else {
                fleet.act(i, MachineState::Stopped, |id, _| Action::Stop {
                    id,
                    reason,
                })
            });
        }
    }

    // The order of execution: destroys, stops, creates (those to start first), starts.
    let mut created: Vec<InitialState> = fleet
        .created_by_plan()
        .iter()
        .map(|m| created_as(m.state))
        .collect();
    created.sort_by_key(|&initial| initial != InitialState::Started);
    let create_reason = format!(
        "created {} < min {}",
        before.created,
        targets.created.min.unwrap_or_default()
    );
    let creates = created.into_iter().map(|initial| {
        let mut request = CreateRequest::new(initial);
        request.template = clone_of.clone().map(Box::new);
        Action::Create {
            request,
            reason: create_reason.clone(),
        }
    });
    let actions = destroys
        .into_iter()
        .chain(stops)
        .chain(creates)
        .chain(starts)
        .collect();
    Plan {
        actions,
        before,
        after: fleet.counts(),
        notes,
    }
}
