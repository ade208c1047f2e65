//! [`SimFleet`]: machines that take time to create, start, stop and be destroyed, on a
//! simulated clock, with exact accounting of how long every machine spent in every state.
//!
//! Time is Unix milliseconds (`i64`) throughout, so sums are exact and a replay is
//! byte-for-byte reproducible. Every change goes through [`SimFleet::advance`] first: pending
//! transitions complete at their own instant (not at the next sample), and the time between
//! two changes is added to the [`Ledger`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, UNIX_EPOCH};

use fleetscale_core::plan::Action;
use fleetscale_core::{InitialState, Machine, MachineId, MachineState, Targets};
use serde::{Deserialize, Serialize};

/// The state of a simulated machine.
///
/// `Creating` is listed to the planner as [`MachineState::Created`] (as Fly lists a `creating`
/// machine) but is neither a spare nor visible to Fly Proxy: nothing can start it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimState {
    /// Being created.
    Creating,
    /// Created, never started (Fly's `created`, e.g. a machine created stopped).
    Created,
    /// Heading to started.
    Starting,
    /// Running.
    Started,
    /// Heading to stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// Suspended.
    Suspended,
    /// Heading to gone.
    Destroying,
}

impl SimState {
    /// Every state, in display order.
    pub const ALL: [SimState; 8] = [
        SimState::Creating,
        SimState::Created,
        SimState::Starting,
        SimState::Started,
        SimState::Stopping,
        SimState::Stopped,
        SimState::Suspended,
        SimState::Destroying,
    ];

    /// The lowercase name (`started`, …), as in `summary.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            SimState::Creating => "creating",
            SimState::Created => "created",
            SimState::Starting => "starting",
            SimState::Started => "started",
            SimState::Stopping => "stopping",
            SimState::Stopped => "stopped",
            SimState::Suspended => "suspended",
            SimState::Destroying => "destroying",
        }
    }

    /// How the machine is listed to the planner.
    pub fn listed(self) -> MachineState {
        match self {
            SimState::Creating | SimState::Created => MachineState::Created,
            SimState::Starting => MachineState::Starting,
            SimState::Started => MachineState::Started,
            SimState::Stopping => MachineState::Stopping,
            SimState::Stopped => MachineState::Stopped,
            SimState::Suspended => MachineState::Suspended,
            SimState::Destroying => MachineState::Destroying,
        }
    }

    /// Whether it is a spare ready to be started at once (created, stopped, suspended).
    pub fn is_spare(self) -> bool {
        matches!(
            self,
            SimState::Created | SimState::Stopped | SimState::Suspended
        )
    }

    /// Whether it runs or is about to (started, starting): what serves load.
    pub fn is_running(self) -> bool {
        matches!(self, SimState::Started | SimState::Starting)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How long each transition takes. The defaults are assumptions, not Fly's measured figures:
/// set them from your own `fly machine` event timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latencies {
    /// From a create call to the machine existing in its initial state (default 10 s).
    #[serde(with = "fleetscale_core::record::seconds")]
    pub create: Duration,
    /// From a start (or the proxy's autostart) to `started` (default 2 s).
    #[serde(with = "fleetscale_core::record::seconds")]
    pub start: Duration,
    /// From a stop to `stopped` (default 5 s, Fly's default `kill_timeout`).
    #[serde(with = "fleetscale_core::record::seconds")]
    pub stop: Duration,
    /// From a destroy to gone (default 5 s).
    #[serde(with = "fleetscale_core::record::seconds")]
    pub destroy: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            create: Duration::from_secs(10),
            start: Duration::from_secs(2),
            stop: Duration::from_secs(5),
            destroy: Duration::from_secs(5),
        }
    }
}

/// The simulated fleet's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// Transition times.
    pub latencies: Latencies,
    /// Machines started at the beginning (default 1: an app as `fly launch` leaves it).
    pub initial_started: u32,
    /// Machines stopped at the beginning (default 0).
    pub initial_stopped: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            latencies: Latencies::default(),
            initial_started: 1,
            initial_stopped: 0,
        }
    }
}

/// A count of the fleet that a metric may stand for, so that a metric about the fleet itself
/// (`count(fly_instance_up{app=…})`) follows the simulated fleet instead of replaying the
/// recorded one, which the policy under test did not produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetQuantity {
    /// Machines in `started` (what `fly_instance_up` counts: a VM that reports).
    Started,
    /// Machines started or starting.
    Running,
    /// Every machine that exists.
    Machines,
    /// Spares ready to start (created, stopped, suspended).
    Spare,
}

impl std::str::FromStr for FleetQuantity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "started" => Ok(FleetQuantity::Started),
            "running" => Ok(FleetQuantity::Running),
            "machines" => Ok(FleetQuantity::Machines),
            "spare" => Ok(FleetQuantity::Spare),
            other => Err(format!(
                "{other:?} is not a fleet quantity: expected started, running, machines or spare"
            )),
        }
    }
}

#[derive(Clone, Debug)]
struct SimMachine {
    id: String,
    state: SimState,
    created_ms: i64,
    /// Transitions still to happen: at this time, this state (`None`: gone).
    pending: VecDeque<(i64, Option<SimState>)>,
}

/// Everything measured over the replay, integrated exactly between changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// Milliseconds × machines spent in each state.
    pub state_ms: BTreeMap<SimState, i64>,
    /// Most machines existing at once (any state).
    pub peak_machines: u32,
    /// Most machines in `started` at once.
    pub peak_started: u32,
    /// Time with no spare ready.
    pub no_spare_ms: i64,
    /// Time with more machines than the targets' created max (counting every machine that
    /// exists).
    pub created_above_max_ms: i64,
    /// Time with fewer ready machines (not creating or destroying) than the created min.
    pub created_below_min_ms: i64,
    /// Time with more machines started or in transition to or from started than the started
    /// max.
    pub started_above_max_ms: i64,
    /// Time with fewer machines in `started` than the started min.
    pub started_below_min_ms: i64,
    /// Each wait from Fly Proxy consuming the last spare to a spare being ready again.
    pub spare_waits_ms: Vec<i64>,
    /// Actions that could not apply to the simulated machine (never expected: the planner
    /// only plans for machines in a state that allows the action).
    pub ignored_actions: u32,
    open_wait: Option<i64>,
    targets: Option<Targets>,
}

/// Machines on a simulated clock. See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use fleetscale_sim::{FleetConfig, SimFleet, SimState};
///
/// let mut fleet = SimFleet::new(FleetConfig::default(), 0);
/// let id = fleet.machines()[0].0.clone();
/// fleet.stop(&id, 1_000);
/// assert_eq!(fleet.count(SimState::Stopping), 1);
/// fleet.advance(6_000); // the stop takes 5 s
/// assert_eq!(fleet.count(SimState::Stopped), 1);
/// assert_eq!(fleet.ledger().state_ms[&SimState::Started], 1_000);
/// assert_eq!(fleet.ledger().state_ms[&SimState::Stopping], 5_000);
/// ```
#[derive(Clone, Debug)]
pub struct SimFleet {
    machines: Vec<SimMachine>,
    latencies: Latencies,
    next_id: u64,
    clock: i64,
    ledger: Ledger,
}

impl SimFleet {
    /// A fleet at time `start_ms` with the initial machines of `config`.
    pub fn new(config: FleetConfig, start_ms: i64) -> SimFleet {
        let mut fleet = SimFleet {
            machines: Vec::new(),
            latencies: config.latencies,
            next_id: 1,
            clock: start_ms,
            ledger: Ledger::default(),
        };
        for state in std::iter::repeat_n(SimState::Started, config.initial_started as usize).chain(
            std::iter::repeat_n(SimState::Stopped, config.initial_stopped as usize),
        ) {
            let id = fleet.new_id();
            fleet.machines.push(SimMachine {
                id,
                state,
                created_ms: start_ms,
                pending: VecDeque::new(),
            });
        }
        fleet.after_change(start_ms);
        fleet
    }

    fn new_id(&mut self) -> String {
        let id = format!("m{:04}", self.next_id);
        self.next_id += 1;
        id
    }

    /// The simulated time now, in Unix milliseconds (the trace's time axis).
    pub fn clock(&self) -> i64 {
        self.clock
    }

    /// What was measured so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The machines as `(id, state)`, oldest first.
    pub fn machines(&self) -> Vec<(String, SimState)> {
        self.machines
            .iter()
            .map(|m| (m.id.clone(), m.state))
            .collect()
    }

    /// How many machines are in `state`.
    pub fn count(&self, state: SimState) -> u32 {
        self.machines.iter().filter(|m| m.state == state).count() as u32
    }

    /// Machines in each state (every state present, zeros included).
    pub fn census(&self) -> BTreeMap<SimState, u32> {
        let mut c: BTreeMap<SimState, u32> = SimState::ALL.iter().map(|s| (*s, 0)).collect();
        for m in &self.machines {
            *c.entry(m.state).or_default() += 1;
        }
        c
    }

    /// The value of a fleet quantity now.
    pub fn quantity(&self, q: FleetQuantity) -> u32 {
        let n = |f: fn(SimState) -> bool| self.machines.iter().filter(|m| f(m.state)).count();
        (match q {
            FleetQuantity::Started => n(|s| s == SimState::Started),
            FleetQuantity::Running => n(SimState::is_running),
            FleetQuantity::Machines => self.machines.len(),
            FleetQuantity::Spare => n(SimState::is_spare),
        }) as u32
    }

    /// The inventory as a `Scaler` would list it: creation times on the simulated clock, so
    /// the planner's newest-first choices follow the simulation.
    pub fn inventory(&self) -> Vec<Machine> {
        self.machines
            .iter()
            .map(|m| {
                let at = if m.created_ms >= 0 {
                    UNIX_EPOCH + Duration::from_millis(m.created_ms as u64)
                } else {
                    UNIX_EPOCH - Duration::from_millis(m.created_ms.unsigned_abs())
                };
                Machine::new(m.id.as_str(), m.state.listed()).with_created_at(at)
            })
            .collect()
    }

    /// What Fly Proxy sees: every machine but those still being created.
    pub fn proxy_view(&self) -> Vec<Machine> {
        self.inventory()
            .into_iter()
            .zip(&self.machines)
            .filter(|(_, m)| m.state != SimState::Creating)
            .map(|(v, _)| v)
            .collect()
    }

    /// The targets the time outside the bounds is measured against, from now on.
    pub fn set_targets(&mut self, now: i64, targets: Targets) {
        self.advance(now);
        self.ledger.targets = Some(targets);
    }

    /// Moves the clock to `now`, completing every transition due by then at its own time.
    /// A `now` in the past is ignored.
    pub fn advance(&mut self, now: i64) {
        loop {
            let next = self
                .machines
                .iter()
                .filter_map(|m| m.pending.front().map(|(at, _)| *at))
                .filter(|at| *at <= now)
                .min();
            let Some(at) = next else { break };
            let at = at.max(self.clock);
            self.integrate(at);
            let mut i = 0;
            while i < self.machines.len() {
                let m = &mut self.machines[i];
                if m.pending.front().is_some_and(|(t, _)| *t <= at) {
                    let (_, next) = m.pending.pop_front().unwrap_or((at, None));
                    match next {
                        Some(s) => m.state = s,
                        None => {
                            self.machines.remove(i);
                            continue;
                        }
                    }
                }
                i += 1;
            }
            self.after_change(at);
        }
        self.integrate(now);
    }

    fn integrate(&mut self, until: i64) {
        let dt = until - self.clock;
        if dt <= 0 {
            return;
        }
        let census = self.census();
        for (state, n) in &census {
            if *n > 0 {
                *self.ledger.state_ms.entry(*state).or_default() += dt * i64::from(*n);
            }
        }
        let c = |s: SimState| i64::from(census[&s]);
        if SimState::ALL
            .iter()
            .all(|s| !s.is_spare() || census[s] == 0)
        {
            self.ledger.no_spare_ms += dt;
        }
        if let Some(t) = self.ledger.targets {
            let all = self.machines.len() as i64;
            let ready = all - c(SimState::Creating) - c(SimState::Destroying);
            let running = c(SimState::Started) + c(SimState::Starting) + c(SimState::Stopping);
            let started = c(SimState::Started);
            if t.created.max.is_some_and(|m| all > i64::from(m)) {
                self.ledger.created_above_max_ms += dt;
            }
            if t.created.min.is_some_and(|m| ready < i64::from(m)) {
                self.ledger.created_below_min_ms += dt;
            }
            if t.started.max.is_some_and(|m| running > i64::from(m)) {
                self.ledger.started_above_max_ms += dt;
            }
            if t.started.min.is_some_and(|m| started < i64::from(m)) {
                self.ledger.started_below_min_ms += dt;
            }
        }
        self.clock = until;
    }

    fn after_change(&mut self, now: i64) {
        self.ledger.peak_machines = self.ledger.peak_machines.max(self.machines.len() as u32);
        self.ledger.peak_started = self.ledger.peak_started.max(self.count(SimState::Started));
        if self.quantity(FleetQuantity::Spare) > 0 {
            if let Some(since) = self.ledger.open_wait.take() {
                self.ledger.spare_waits_ms.push(now - since);
            }
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut SimMachine> {
        self.machines.iter_mut().find(|m| m.id == id)
    }

    fn schedule(&mut self, id: &str, now: i64, via: SimState, steps: &[(i64, Option<SimState>)]) {
        if let Some(m) = self.find(id) {
            m.state = via;
            m.pending = steps.iter().map(|(d, s)| (now + d, *s)).collect();
        }
        self.after_change(now);
        // Zero latencies complete at once.
        self.advance(now);
    }

    /// Starts a spare (created, stopped or suspended) at `now`. Returns whether it applied.
    pub fn start(&mut self, id: &str, now: i64) -> bool {
        self.advance(now);
        if self.find(id).is_none_or(|m| !m.state.is_spare()) {
            return false;
        }
        let start = ms(self.latencies.start);
        self.schedule(
            id,
            now,
            SimState::Starting,
            &[(start, Some(SimState::Started))],
        );
        true
    }

    /// Starts a spare for Fly Proxy: like [`SimFleet::start`], and if no spare is left, a
    /// wait for the next spare begins.
    pub fn proxy_start(&mut self, id: &str, now: i64) -> bool {
        let ok = self.start(id, now);
        if ok && self.quantity(FleetQuantity::Spare) == 0 && self.ledger.open_wait.is_none() {
            self.ledger.open_wait = Some(now);
        }
        ok
    }

    /// Stops a started machine at `now`. Returns whether it applied.
    pub fn stop(&mut self, id: &str, now: i64) -> bool {
        self.halt(id, now, SimState::Stopped)
    }

    /// Suspends a started machine at `now` (the stop latency, ending suspended). Returns
    /// whether it applied.
    pub fn suspend(&mut self, id: &str, now: i64) -> bool {
        self.halt(id, now, SimState::Suspended)
    }

    /// Takes a started machine through `Stopping` to `end` (stopped or suspended).
    fn halt(&mut self, id: &str, now: i64, end: SimState) -> bool {
        self.advance(now);
        if self.find(id).is_none_or(|m| m.state != SimState::Started) {
            return false;
        }
        let stop = ms(self.latencies.stop);
        self.schedule(id, now, SimState::Stopping, &[(stop, Some(end))]);
        true
    }

    /// Creates a machine at `now`; it exists in its initial state after the create latency
    /// (and, for `started`, the start latency). Returns its id.
    pub fn create(&mut self, initial: InitialState, now: i64) -> String {
        self.advance(now);
        let id = self.new_id();
        self.machines.push(SimMachine {
            id: id.clone(),
            state: SimState::Creating,
            created_ms: now,
            pending: VecDeque::new(),
        });
        let create = ms(self.latencies.create);
        let steps: Vec<(i64, Option<SimState>)> = match initial {
            InitialState::Started => vec![
                (create, Some(SimState::Starting)),
                (create + ms(self.latencies.start), Some(SimState::Started)),
            ],
            InitialState::Stopped => vec![(create, Some(SimState::Created))],
            InitialState::Suspended => vec![(create, Some(SimState::Suspended))],
        };
        self.schedule(&id, now, SimState::Creating, &steps);
        id
    }

    /// Destroys a machine that is not in transition at `now`. Returns whether it applied.
    pub fn destroy(&mut self, id: &str, now: i64) -> bool {
        self.advance(now);
        // Never a machine in transition: being created, started, stopped or destroyed.
        if self.find(id).is_none_or(|m| {
            !m.pending.is_empty() || matches!(m.state, SimState::Creating | SimState::Destroying)
        }) {
            return false;
        }
        let destroy = ms(self.latencies.destroy);
        self.schedule(id, now, SimState::Destroying, &[(destroy, None)]);
        true
    }

    /// Applies one planned action at `now`; returns the machine acted on (the new one for a
    /// create), or `None` when the action could not apply (counted in
    /// [`Ledger::ignored_actions`]).
    pub fn apply(&mut self, action: &Action, now: i64) -> Option<String> {
        let done = match action {
            Action::Create { request, .. } => Some(self.create(request.initial_state, now)),
            Action::Start { id, .. } => self.start(id.as_str(), now).then(|| id.0.clone()),
            Action::Stop { id, .. } => self.stop(id.as_str(), now).then(|| id.0.clone()),
            Action::Suspend { id, .. } => self.suspend(id.as_str(), now).then(|| id.0.clone()),
            Action::Destroy { id, .. } => self.destroy(id.as_str(), now).then(|| id.0.clone()),
        };
        if done.is_none() {
            self.ledger.ignored_actions += 1;
        }
        done
    }

    /// Closes the replay at `end`: integrates up to it and ends an open spare wait there.
    pub fn finish(&mut self, end: i64) -> Ledger {
        self.advance(end);
        if let Some(since) = self.ledger.open_wait.take() {
            self.ledger.spare_waits_ms.push(end - since);
        }
        self.ledger.clone()
    }
}

/// A machine id of the simulated fleet, as the planner's actions name it.
pub fn machine_id(id: &str) -> MachineId {
    MachineId::new(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(started: u32, stopped: u32) -> SimFleet {
        SimFleet::new(
            FleetConfig {
                initial_started: started,
                initial_stopped: stopped,
                ..FleetConfig::default()
            },
            0,
        )
    }

    #[test]
    fn transitions_complete_at_their_own_time() {
        let mut f = fleet(1, 1);
        assert!(f.start("m0002", 10_000));
        assert_eq!(f.count(SimState::Starting), 1);
        assert!(!f.start("m0002", 10_500), "already starting");
        f.advance(60_000);
        assert_eq!(f.count(SimState::Started), 2);
        let l = f.ledger();
        // m0001: started 0..60 s; m0002: stopped 0..10, starting 10..12, started 12..60.
        assert_eq!(l.state_ms[&SimState::Started], 60_000 + 48_000);
        assert_eq!(l.state_ms[&SimState::Stopped], 10_000);
        assert_eq!(l.state_ms[&SimState::Starting], 2_000);
        assert_eq!(l.no_spare_ms, 50_000);
        assert_eq!(l.peak_started, 2);
    }

    #[test]
    fn creates_and_destroys() {
        let mut f = fleet(1, 0);
        let id = f.create(InitialState::Stopped, 0);
        assert_eq!(f.count(SimState::Creating), 1);
        assert!(
            f.proxy_view().len() == 1,
            "creating is invisible to the proxy"
        );
        assert_eq!(f.inventory()[1].state, MachineState::Created);
        f.advance(10_000);
        assert_eq!(f.count(SimState::Created), 1);
        assert!(f.destroy(&id, 20_000));
        assert!(!f.destroy(&id, 21_000), "already destroying");
        let l = f.finish(30_000);
        assert_eq!(f.machines().len(), 1);
        assert_eq!(l.state_ms[&SimState::Creating], 10_000);
        assert_eq!(l.state_ms[&SimState::Created], 10_000);
        assert_eq!(l.state_ms[&SimState::Destroying], 5_000);
        assert_eq!(l.peak_machines, 2);
        let started = f.create(InitialState::Started, 30_000);
        f.advance(42_000);
        assert_eq!(f.machines().last().unwrap(), &(started, SimState::Started));
    }

    #[test]
    fn zero_latencies_apply_at_once() {
        let mut f = SimFleet::new(
            FleetConfig {
                latencies: Latencies {
                    create: Duration::ZERO,
                    start: Duration::ZERO,
                    stop: Duration::ZERO,
                    destroy: Duration::ZERO,
                },
                ..FleetConfig::default()
            },
            0,
        );
        let id = f.create(InitialState::Started, 0);
        assert_eq!(f.count(SimState::Started), 2);
        assert!(f.stop(&id, 0));
        assert_eq!(f.count(SimState::Stopped), 1);
        assert!(f.destroy(&id, 0));
        assert_eq!(f.machines().len(), 1);
    }

    #[test]
    fn a_spare_wait_runs_from_the_last_spare_consumed_to_the_next_ready() {
        let mut f = fleet(1, 1);
        assert!(f.proxy_start("m0002", 1_000));
        assert_eq!(f.ledger().spare_waits_ms, Vec::<i64>::new());
        f.create(InitialState::Stopped, 4_000);
        f.advance(20_000);
        assert_eq!(f.ledger().spare_waits_ms, vec![13_000]);
        assert_eq!(f.ledger().no_spare_ms, 13_000);
    }

    #[test]
    fn time_outside_the_targets() {
        use fleetscale_core::Bounds;
        let mut f = fleet(3, 0);
        f.set_targets(
            0,
            Targets {
                created: Bounds::between(4, 5),
                started: Bounds::between(1, 2),
            },
        );
        f.advance(10_000);
        f.create(InitialState::Stopped, 10_000);
        f.advance(30_000);
        let l = f.ledger();
        assert_eq!(l.created_below_min_ms, 20_000, "ready from 20 s");
        assert_eq!(l.started_above_max_ms, 30_000);
        assert_eq!(l.created_above_max_ms, 0);
        assert_eq!(l.started_below_min_ms, 0);
    }
}
