//! The planner as first written, kept as the specification the optimised
//! `fleetscale_core::plan::plan_actions` must match action for action: every candidate list
//! is sorted in full with a stable sort, and the projected counts come from a copy of the
//! inventory with the plan applied. `tests/planner.rs` compares the two on random
//! inventories; `benches/plan.rs` measures both.

use std::cmp::Reverse;
use std::collections::HashSet;

use fleetscale_core::plan::{apply_plan, Action, Plan, PlanOptions, ScaleIn};
use fleetscale_core::{
    Counts, CreateRequest, Destination, InitialState, Machine, MachineId, MachineState, Targets,
};

fn newest_first(a: &&Machine, b: &&Machine) -> std::cmp::Ordering {
    (Reverse(a.created_at), Reverse(&a.id)).cmp(&(Reverse(b.created_at), Reverse(&b.id)))
}

fn oldest_first(a: &&Machine, b: &&Machine) -> std::cmp::Ordering {
    (a.created_at, &a.id).cmp(&(b.created_at, &b.id))
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

/// The reference planner: every candidate list sorted in full (stably), the projection
/// counted from a copy of the inventory with the plan applied.
pub fn reference_plan(inventory: &[Machine], targets: &Targets, options: &PlanOptions) -> Plan {
    let before = Counts::of(inventory);
    let mut notes = Vec::new();
    let live: Vec<&Machine> = inventory
        .iter()
        .filter(|m| m.manageable && m.state.exists())
        .collect();

    let mut created = before.created;
    let mut started = before.started;
    let mut destroys: Vec<Action> = Vec::new();
    let mut destroyed: HashSet<&MachineId> = HashSet::new();
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
            None => {
                let mut healthy: Vec<&Machine> = live
                    .iter()
                    .copied()
                    .filter(|m| {
                        !matches!(
                            m.state.destination(),
                            Destination::Failed | Destination::Unknown
                        )
                    })
                    .collect();
                healthy.sort_by(newest_first);
                healthy.first().map(|m| (*m).clone())
            }
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
        let mut candidates: Vec<&Machine> = live
            .iter()
            .copied()
            .filter(|m| rank(m.state).is_some())
            .collect();
        candidates.sort_by(|a, b| rank(a.state).cmp(&rank(b.state)).then(newest_first(a, b)));
        if candidates.len() < want {
            notes.push(format!(
                "only {} of {want} machine(s) can be destroyed now (others are in transition)",
                candidates.len()
            ));
        }
        for m in candidates.into_iter().take(want) {
            destroys.push(Action::Destroy {
                id: m.id.clone(),
                from: m.state,
                reason: format!("created {} > max {max}", before.created),
            });
            destroyed.insert(&m.id);
            created -= 1;
            if m.state.destination() == Destination::Started {
                started -= 1;
            }
        }
    }

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
        let mut candidates: Vec<&Machine> = live
            .iter()
            .copied()
            .filter(|m| rank(m.state).is_some() && !destroyed.contains(&m.id))
            .collect();
        candidates.sort_by(|a, b| rank(a.state).cmp(&rank(b.state)).then(oldest_first(a, b)));
        let from_existing = cap(
            need.min(candidates.len() as u32),
            options.max_starts,
            "starts",
            &mut notes,
        );
        for m in candidates.into_iter().take(from_existing as usize) {
            starts.push(Action::Start {
                id: m.id.clone(),
                from: m.state,
                reason: format!("started {projected} < min {min}"),
            });
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
        let mut candidates: Vec<&Machine> = live
            .iter()
            .copied()
            .filter(|m| m.state == MachineState::Started && !destroyed.contains(&m.id))
            .collect();
        candidates.sort_by(newest_first);
        let want = cap(
            excess.min(candidates.len() as u32),
            options.max_stops,
            "stops",
            &mut notes,
        );
        if (candidates.len() as u32) < excess {
            notes.push(format!(
                "only {} of {excess} machine(s) can be stopped now (others are starting or new)",
                candidates.len()
            ));
        }
        for m in candidates.into_iter().take(want as usize) {
            let id = m.id.clone();
            let reason = format!("started {projected} > max {max}");
            stops.push(if suspend {
                Action::Suspend { id, reason }
            } else {
                Action::Stop { id, reason }
            });
        }
        started -= want;
    }

    // --- assemble -------------------------------------------------------------------------
    // Scale-down first: stops and destroys free capacity before creates claim it, and a failed
    // create then never leaves the target above its started max for a tick.
    let mut actions = destroys;
    actions.extend(stops);
    let default_not_started = not_started.unwrap_or(InitialState::Started);
    for i in 0..create_count {
        let initial_state = if i < creates_started {
            InitialState::Started
        } else {
            default_not_started
        };
        let mut request = CreateRequest::new(initial_state);
        request.template = template.clone().map(Box::new);
        actions.push(Action::Create {
            request,
            reason: format!(
                "created {} < min {}",
                before.created,
                targets.created.min.unwrap_or_default()
            ),
        });
    }
    actions.extend(starts);

    let mut plan = Plan {
        actions,
        before,
        ..Plan::default()
    };
    // An empty plan is counted without a copy, as the planner did.
    let after = if plan.actions.is_empty() {
        Counts::of(inventory)
    } else {
        Counts::of(&apply_plan(inventory, &plan))
    };
    debug_assert_eq!(after.created, created);
    debug_assert_eq!(after.started, started + creates_started);
    plan.after = after;
    plan.notes = notes;
    plan
}
