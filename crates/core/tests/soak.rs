//! Chaos soak of the engine on the in-memory fakes.
//!
//! Four targets (with different policies, error rules, initial states and backend
//! capabilities) run thousands of engine passes on [`FakeScaler`]s whose transitions take two
//! `list` calls to settle. The test alternates **fault phases**, where a seeded RNG injects
//! faults into every backend call and metric read, with **calm phases**, where faults stop and
//! the metric holds still.
//!
//! Faults, per call: `429` ([`Error::RateLimited`] with `retry_after`), `503`
//! ([`Error::Unavailable`]), hangs past the tick deadline (before or after the call took
//! effect: a lost response), failures after the call took effect (a dropped connection), slow
//! answers, machines that fail to boot (a start or started create that lands `stopped`, as a
//! Fly machine whose process exits does); and for metrics: failures, NaN, hangs past the metric
//! deadline, slow reads.
//!
//! Checked after **every** tick of every target:
//! - only machines named by the tick's plan were destroyed, stopped or started, and a tick
//!   that failed before planning touched nothing;
//! - no more creates reached the backend than the plan held;
//! - never more than the hard maximum (created and started), even during faults; never zero
//!   machines (the last machine is never destroyed);
//! - once faults stop, the counts reach the rule's targets within a bound derived from the
//!   policy (stabilization window, step sizes, cooldowns, transition time) and stay there;
//! - memory is flat: one record per target, bounded records, bounded fleets, and the test's own
//!   per-tick call logs drained.
//!
//! `FLEETSCALE_SOAK_TICKS` sets the number of passes (default 3,000);
//! `FLEETSCALE_SOAK_SEED` the RNG seed. Time is tokio's paused clock, so hangs and slow calls
//! cost no wall time. A summary line (ticks, faults injected, worst convergence, peak sizes)
//! is printed with `--nocapture`.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::{Action, ActionKind};
use fleetscale_core::policy::{CountRule, ErrorPolicy, Limits, Policy};
use fleetscale_core::record::DecisionRecord;
use fleetscale_core::testing::{FakeScaler, Transitions};
use fleetscale_core::{
    Bounds, Capabilities, Counts, CreateRequest, Error, InitialState, Machine, MachineId,
    MachineState, MetricSource, Result, Scaler, Scope,
};

/// Longer than any deadline: a call that "hangs" is always cut off by the engine.
const HANG: Duration = Duration::from_secs(3_600);
const TICK_TIMEOUT: Duration = Duration::from_secs(5);
const METRIC_TIMEOUT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_secs(15);
/// Transitions settle after this many `list` calls.
const SETTLE_LISTS: u32 = 2;

/// What happens to one backend call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pass,
    RateLimited,
    Unavailable,
    /// Never answers (cut off by the deadline) and never takes effect.
    Hang,
    /// Takes effect, then the connection drops: the caller sees an error.
    ApplyThenFail,
    /// Takes effect, then the answer never comes.
    ApplyThenHang,
    /// Answers (and takes effect) after a delay.
    Slow(Duration),
}

#[derive(Clone, Copy, Debug, Default)]
struct FaultCounts {
    rate_limited: u64,
    unavailable: u64,
    hang: u64,
    apply_then_fail: u64,
    apply_then_hang: u64,
    slow: u64,
    boot_failures: u64,
    metric_faults: u64,
}

/// A mutating call that took effect on the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    Create(MachineId),
    Start(MachineId),
    Stop(MachineId),
    Destroy(MachineId),
}

/// A [`Scaler`] wrapper that injects faults in front of (and behind) a [`FakeScaler`] and logs
/// every mutating call that took effect.
struct ChaosScaler {
    inner: RwLock<Arc<FakeScaler>>,
    rng: Mutex<ChaCha8Rng>,
    faults_on: Mutex<bool>,
    applied: Mutex<Vec<Applied>>,
    stats: Mutex<FaultCounts>,
}

impl ChaosScaler {
    fn new(inner: FakeScaler, seed: u64) -> Self {
        ChaosScaler {
            inner: RwLock::new(Arc::new(inner)),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            faults_on: Mutex::new(false),
            applied: Mutex::new(Vec::new()),
            stats: Mutex::new(FaultCounts::default()),
        }
    }

    fn inner(&self) -> Arc<FakeScaler> {
        self.inner.read().unwrap().clone()
    }

    fn set_faults(&self, on: bool) {
        *self.faults_on.lock().unwrap() = on;
    }

    fn take_applied(&self) -> Vec<Applied> {
        std::mem::take(&mut *self.applied.lock().unwrap())
    }

    fn fate(&self) -> Fate {
        if !*self.faults_on.lock().unwrap() {
            return Fate::Pass;
        }
        let mut rng = self.rng.lock().unwrap();
        let mut stats = self.stats.lock().unwrap();
        let roll = rng.random_range(0..1000);
        let (fate, count) = match roll {
            0..=79 => (Fate::RateLimited, &mut stats.rate_limited),
            80..=139 => (Fate::Unavailable, &mut stats.unavailable),
            140..=169 => (Fate::Hang, &mut stats.hang),
            170..=219 => (Fate::ApplyThenFail, &mut stats.apply_then_fail),
            220..=239 => (Fate::ApplyThenHang, &mut stats.apply_then_hang),
            240..=339 => {
                let slow = Duration::from_millis(50 + rng.random_range(0..1_500));
                (Fate::Slow(slow), &mut stats.slow)
            }
            _ => return Fate::Pass,
        };
        *count += 1;
        fate
    }

    /// Whether a machine that was just started fails to boot (lands `stopped`).
    fn boot_fails(&self) -> bool {
        if !*self.faults_on.lock().unwrap() {
            return false;
        }
        let fails = self.rng.lock().unwrap().random_bool(0.15);
        if fails {
            self.stats.lock().unwrap().boot_failures += 1;
        }
        fails
    }

    /// Runs `call` under `fate`; `call` returns the result and what took effect.
    async fn run<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = (Result<T>, Option<Applied>)>,
    ) -> Result<T> {
        let fate = self.fate();
        match fate {
            Fate::RateLimited => {
                return Err(Error::RateLimited {
                    retry_after: Some(Duration::from_secs(1)),
                    message: String::new(),
                    request_id: None,
                    source: None,
                })
            }
            Fate::Unavailable => {
                return Err(Error::Unavailable {
                    message: format!("injected 503 on {operation}"),
                    source: None,
                })
            }
            Fate::Hang => {
                tokio::time::sleep(HANG).await;
                return Err(Error::Unavailable {
                    message: "hang outlived its deadline".into(),
                    source: None,
                });
            }
            Fate::Slow(d) => tokio::time::sleep(d).await,
            Fate::Pass | Fate::ApplyThenFail | Fate::ApplyThenHang => {}
        }
        let (result, applied) = call.await;
        if let Some(a) = applied {
            self.applied.lock().unwrap().push(a);
        }
        match fate {
            Fate::ApplyThenFail => Err(Error::Unavailable {
                message: format!("injected connection reset after {operation} took effect"),
                source: None,
            }),
            Fate::ApplyThenHang => {
                tokio::time::sleep(HANG).await;
                result
            }
            _ => result,
        }
    }

    /// [`run`](Self::run) of a call on one machine, which records `applied` when it succeeds.
    async fn run_on(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<()>>,
        applied: Applied,
    ) -> Result<()> {
        self.run(operation, async {
            let r = call.await;
            let applied = r.is_ok().then_some(applied);
            (r, applied)
        })
        .await
    }

    fn boot(&self, inner: &FakeScaler, id: &MachineId) {
        if self.boot_fails() {
            inner.set_state(id, MachineState::Stopped);
        }
    }
}

#[async_trait]
impl Scaler for ChaosScaler {
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        let inner = self.inner();
        self.run("list", async { (inner.list().await, None) }).await
    }

    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        let inner = self.inner();
        self.run("create", async {
            let r = inner.create(request).await;
            let applied = r.as_ref().ok().map(|m| Applied::Create(m.id.clone()));
            if let (Ok(m), InitialState::Started) = (&r, request.initial_state) {
                self.boot(&inner, &m.id);
            }
            (r, applied)
        })
        .await
    }

    async fn start(&self, id: &MachineId) -> Result<()> {
        let inner = self.inner();
        let call = async {
            let r = inner.start(id).await;
            if r.is_ok() {
                self.boot(&inner, id);
            }
            r
        };
        self.run_on("start", call, Applied::Start(id.clone())).await
    }

    async fn stop(&self, id: &MachineId) -> Result<()> {
        let inner = self.inner();
        self.run_on("stop", inner.stop(id), Applied::Stop(id.clone()))
            .await
    }

    async fn destroy(&self, id: &MachineId) -> Result<()> {
        let inner = self.inner();
        self.run_on("destroy", inner.destroy(id), Applied::Destroy(id.clone()))
            .await
    }
}

/// What the soak measured over its cycles, printed at the end.
#[derive(Debug, Default)]
struct SoakTally {
    /// Fault/calm cycles run.
    cycles: u64,
    /// The most calm ticks a target took to converge.
    worst_convergence: u64,
    /// The most items a kept decision record held.
    peak_record_items: usize,
    /// The most fleet entries a fake held.
    peak_machines: usize,
    /// The most record items in the first cycle.
    record_items_first_cycle: usize,
    /// Target-ticks with started above its max after a failed tick.
    started_over_max_after_failed_tick: u64,
}

/// A metric the test sets, read through the same fault dice.
struct ChaosMetric {
    value: Mutex<f64>,
    rng: Mutex<ChaCha8Rng>,
    faults_on: Mutex<bool>,
    faults: Mutex<u64>,
}

impl ChaosMetric {
    fn new(seed: u64) -> Self {
        ChaosMetric {
            value: Mutex::new(0.0),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            faults_on: Mutex::new(false),
            faults: Mutex::new(0),
        }
    }
}

#[async_trait]
impl MetricSource for ChaosMetric {
    fn name(&self) -> &str {
        "load"
    }

    async fn collect(&self, _scope: &Scope) -> Result<f64> {
        let roll = if *self.faults_on.lock().unwrap() {
            self.rng.lock().unwrap().random_range(0..100)
        } else {
            99
        };
        if roll < 25 {
            *self.faults.lock().unwrap() += 1;
        }
        match roll {
            0..=9 => Err(Error::metric("load", "injected: query failed")),
            10..=14 => Ok(f64::NAN),
            15..=19 => {
                tokio::time::sleep(HANG).await;
                Err(Error::metric("load", "hang outlived its deadline"))
            }
            20..=24 => {
                tokio::time::sleep(METRIC_TIMEOUT / 2).await;
                Ok(*self.value.lock().unwrap())
            }
            _ => Ok(*self.value.lock().unwrap()),
        }
    }
}

/// Hard limits shared by every target.
const CREATED_HARD: (u32, u32) = (1, 22);
const STARTED_HARD: (u32, u32) = (0, 18);
const MAX_LOAD: u64 = 24;
const STEP_UP: u32 = 5;
const STEP_DOWN: u32 = 3;
const COOLDOWN_UP: Duration = Duration::from_secs(15);
const COOLDOWN_DOWN: Duration = Duration::from_secs(30);
const STABILIZATION: Duration = Duration::from_secs(45);

fn policy(on_error: ErrorPolicy) -> Policy {
    Policy {
        created: CountRule::from_settings("created", Some("load + 2"), None, None).unwrap(),
        started: CountRule::from_settings("started", Some("load"), None, None).unwrap(),
        limits: Limits {
            created: Bounds::between(CREATED_HARD.0, CREATED_HARD.1),
            started: Bounds::between(STARTED_HARD.0, STARTED_HARD.1),
            max_step_up: Some(STEP_UP),
            max_step_down: Some(STEP_DOWN),
            cooldown_after_scale_up: COOLDOWN_UP,
            cooldown_after_scale_down: COOLDOWN_DOWN,
            scale_in_stabilization: STABILIZATION,
        },
        on_error,
    }
}

/// What the rules want for a load, clamped to the hard limits (the test's own computation,
/// independent of the engine's).
fn wanted(load: f64) -> (u32, u32) {
    let l = load as u32;
    (
        (l + 2).clamp(CREATED_HARD.0, CREATED_HARD.1),
        l.clamp(STARTED_HARD.0, STARTED_HARD.1),
    )
}

/// Ticks within which calm targets must converge, from the policy: the scale-in window must
/// first forget higher recommendations, then each step moves at most `STEP_*` machines and is
/// followed by a cooldown; transitions take `SETTLE_LISTS` lists. Started and created move in
/// the same ticks, so the larger of the two distances counts.
fn convergence_bound() -> u64 {
    let ticks = |d: Duration| d.as_secs().div_ceil(INTERVAL.as_secs());
    let span = u64::from(CREATED_HARD.1.max(STARTED_HARD.1));
    let down_steps = span.div_ceil(u64::from(STEP_DOWN));
    let up_steps = span.div_ceil(u64::from(STEP_UP));
    // A tick that scaled, then the cooldown ticks, then the next step.
    let down = ticks(STABILIZATION) + 1 + down_steps * (ticks(COOLDOWN_DOWN) + 1);
    let up = up_steps * (ticks(COOLDOWN_UP) + 1);
    // A scale-up and a scale-down can both be needed (started up, created down) and cooldowns
    // of one delay the other; transitions add their settling lists; slack of a few ticks for
    // the fallback/hold state carried out of the fault phase.
    down + up + u64::from(SETTLE_LISTS) + 4
}

struct Target {
    name: String,
    scaler: Arc<ChaosScaler>,
    metric: Arc<ChaosMetric>,
    initial_state: InitialState,
}

fn counts(t: &Target) -> Counts {
    Counts::of(&t.scaler.inner().machines())
}

/// The per-tick safety checks. Returns a description of the first violation.
fn check_tick(
    t: &Target,
    record: &DecisionRecord,
    applied: &[Applied],
) -> std::result::Result<(), String> {
    let named = |kind: ActionKind| -> Vec<&MachineId> {
        record
            .plan
            .iter()
            .flat_map(|p| p.actions.iter())
            .filter(|a| a.kind() == kind)
            .filter_map(Action::machine)
            .collect()
    };
    let planned_creates = record
        .plan
        .as_ref()
        .map_or(0, |p| p.count(ActionKind::Create));
    if record.plan.is_none() && !applied.is_empty() {
        return Err(format!(
            "tick without a plan changed the fleet: {applied:?}"
        ));
    }
    let mut creates = 0;
    for a in applied {
        let (kind, id) = match a {
            Applied::Create(_) => {
                creates += 1;
                continue;
            }
            Applied::Start(id) => (ActionKind::Start, id),
            Applied::Stop(id) => (ActionKind::Stop, id),
            Applied::Destroy(id) => (ActionKind::Destroy, id),
        };
        if !named(kind).contains(&id) {
            return Err(format!("{kind} of {id} which the plan did not name"));
        }
    }
    if creates > planned_creates {
        return Err(format!(
            "{creates} creates reached the backend, {planned_creates} planned"
        ));
    }
    let c = counts(t);
    if c.created > CREATED_HARD.1 {
        return Err(format!("created above the hard maximum: {c:?}"));
    }
    // Started may exceed its maximum after a tick whose stop failed while a create that must
    // start (the backend cannot create stopped machines) succeeded: creates run before stops.
    // The engine's guarantee is for ticks that succeeded.
    let succeeded = record.plan.is_some() && record.outcomes.iter().all(|o| o.ok());
    if c.started > STARTED_HARD.1 && succeeded {
        return Err(format!(
            "started above the hard maximum after a successful tick: {c:?}"
        ));
    }
    if c.created == 0 {
        return Err("the last machine was destroyed".into());
    }
    Ok(())
}

/// One engine pass, then the clock moves on by one interval.
async fn pass(engine: &Engine) -> Vec<DecisionRecord> {
    let records = engine.run_once().await.unwrap();
    tokio::time::advance(INTERVAL).await;
    records
}

/// One [`pass`], each target's record checked against what its scaler applied ([`check_tick`];
/// a violation panics naming the seed, the tick and the `phase`): the records by target.
async fn checked_pass(
    engine: &Engine,
    targets: &[Target],
    seed: u64,
    tick: u64,
    phase: &str,
) -> BTreeMap<String, DecisionRecord> {
    let records = pass(engine).await;
    let by_name: BTreeMap<String, DecisionRecord> =
        records.into_iter().map(|r| (r.target.clone(), r)).collect();
    for t in targets {
        let r = &by_name[&t.name];
        if let Err(e) = check_tick(t, r, &t.scaler.take_applied()) {
            panic!(
                "seed {seed}, tick {tick}, target {} ({phase} phase): {e}\nrecord: {r:#?}",
                t.name
            );
        }
    }
    by_name
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::test(start_paused = true)]
async fn chaos_soak_keeps_safety_invariants_and_converges() {
    let total_ticks = env_u64("FLEETSCALE_SOAK_TICKS", 3_000);
    let seed = env_u64("FLEETSCALE_SOAK_SEED", 0x5EED_F1EE_7001);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let fly_like = Capabilities::default()
        .with_suspend(false)
        .with_create_needs_template(true)
        .with_create_stopped(true);
    let setups = [
        (
            "hold-started",
            ErrorPolicy::Hold,
            InitialState::Started,
            None,
        ),
        (
            "hold-stopped",
            ErrorPolicy::Hold,
            InitialState::Stopped,
            Some(fly_like),
        ),
        (
            "fallback",
            ErrorPolicy::Fallback {
                after_failures: 3,
                count: 4,
            },
            InitialState::Started,
            Some(fly_like.with_create_stopped(false)),
        ),
        (
            "hold-started-2",
            ErrorPolicy::Hold,
            InitialState::Started,
            Some(fly_like),
        ),
    ];
    let fleet = |caps: Option<Capabilities>, machines: &[(usize, MachineState)]| {
        let mut f = FakeScaler::new().with_transitions(Transitions::AfterLists(SETTLE_LISTS));
        if let Some(c) = caps {
            f = f.with_capabilities(c);
        }
        for &(n, state) in machines {
            f = f.with_machines(n, state);
        }
        f
    };
    let mut targets = Vec::new();
    let mut specs = Vec::new();
    for (i, (name, on_error, initial_state, caps)) in setups.into_iter().enumerate() {
        let scaler = Arc::new(ChaosScaler::new(
            fleet(
                caps,
                &[(2, MachineState::Started), (1, MachineState::Stopped)],
            ),
            seed ^ ((i as u64 + 1) * 0x1000),
        ));
        let metric = Arc::new(ChaosMetric::new(seed ^ ((i as u64 + 1) * 0x10_0000)));
        let spec = TargetSpec::new(Scope::new(name), scaler.clone(), policy(on_error))
            .with_source(metric.clone())
            .with_initial_state(initial_state);
        spec.validate().unwrap();
        specs.push(spec);
        targets.push(Target {
            name: name.to_owned(),
            scaler,
            metric,
            initial_state,
        });
    }
    let engine = Engine::new(
        EngineConfig::default()
            .with_interval(INTERVAL)
            .with_tick_timeout(TICK_TIMEOUT)
            .with_metric_timeout(METRIC_TIMEOUT)
            .with_concurrency(4)
            .with_action_concurrency(4),
        Arc::new(specs),
    );

    let bound = convergence_bound();
    let hold = 5u64;
    let mut ticks = 0u64;
    let mut tally = SoakTally::default();

    while ticks < total_ticks {
        tally.cycles += 1;
        // Fault phase: faults on, the load wanders.
        let fault_ticks = 40 + rng.random_range(0..160);
        for t in &targets {
            t.scaler.set_faults(true);
            *t.metric.faults_on.lock().unwrap() = true;
        }
        for _ in 0..fault_ticks {
            for t in &targets {
                if rng.random_bool(0.15) {
                    *t.metric.value.lock().unwrap() = rng.random_range(0..MAX_LOAD + 1) as f64;
                }
            }
            ticks += 1;
            checked_pass(&engine, &targets, seed, ticks, "fault").await;
            for t in &targets {
                if counts(t).started > STARTED_HARD.1 {
                    tally.started_over_max_after_failed_tick += 1;
                }
            }
        }

        // Calm phase: faults off, the load holds still; convergence within the bound.
        for t in &targets {
            t.scaler.set_faults(false);
            *t.metric.faults_on.lock().unwrap() = false;
            *t.metric.value.lock().unwrap() = rng.random_range(0..MAX_LOAD + 1) as f64;
        }
        let mut converged_at: BTreeMap<String, u64> = BTreeMap::new();
        for i in 1..=bound + hold {
            ticks += 1;
            let by_name = checked_pass(&engine, &targets, seed, ticks, "calm").await;
            let mut record_items = 0;
            for t in &targets {
                let r = &by_name[&t.name];
                let c = counts(t);
                let want = wanted(*t.metric.value.lock().unwrap());
                let on_target = (c.created, c.started) == want && c.transitioning == 0;
                match converged_at.get(&t.name) {
                    None if on_target => {
                        converged_at.insert(t.name.clone(), i);
                        tally.worst_convergence = tally.worst_convergence.max(i);
                    }
                    Some(at) if !on_target => panic!(
                        "seed {seed}, tick {ticks}, target {}: left its target {want:?} after converging at calm tick {at}: {c:?}\nrecord: {r:#?}",
                        t.name
                    ),
                    _ => {}
                }
                if c.created < CREATED_HARD.0 && converged_at.contains_key(&t.name) {
                    panic!(
                        "seed {seed}, tick {ticks}, target {}: below the hard minimum: {c:?}",
                        t.name
                    );
                }
                // Memory: bounded records and fleets.
                record_items += r.outcomes.len()
                    + r.plan
                        .as_ref()
                        .map_or(0, |p| p.actions.len() + p.notes.len())
                    + r.decision.as_ref().map_or(0, |d| d.notes.len())
                    + r.metrics.len()
                    + r.reclaims.len();
                let machines = t.scaler.inner().machines().len();
                tally.peak_machines = tally.peak_machines.max(machines);
                assert!(
                    machines <= 2 * CREATED_HARD.1 as usize,
                    "seed {seed}: fleet of {} grew to {machines} entries",
                    t.name
                );
            }
            tally.peak_record_items = tally.peak_record_items.max(record_items);
            if tally.cycles == 1 {
                tally.record_items_first_cycle = tally.record_items_first_cycle.max(record_items);
            }
            assert_eq!(
                engine.last_decisions().len(),
                targets.len(),
                "one kept record per target"
            );
        }
        for t in &targets {
            assert!(
                converged_at.contains_key(&t.name),
                "seed {seed}, cycle {}: target {} did not reach {:?} within {bound} calm ticks: {:?} (initial state {:?})",
                tally.cycles,
                t.name,
                wanted(*t.metric.value.lock().unwrap()),
                counts(t),
                t.initial_state,
            );
        }

        // Start the next cycle on fresh fakes holding the same fleet, so the fakes' own call
        // logs (which only grow) stay small in long runs. Every transition has settled here.
        for (t, (_, _, _, caps)) in targets.iter().zip(setups) {
            let c = counts(t);
            let fresh = fleet(
                caps,
                &[
                    (c.started as usize, MachineState::Started),
                    (c.stopped as usize, MachineState::Stopped),
                    (c.never_started as usize, MachineState::Created),
                ],
            );
            assert_eq!(Counts::of(&fresh.machines()).created, c.created);
            *t.scaler.inner.write().unwrap() = Arc::new(fresh);
        }
    }

    let mut faults = FaultCounts::default();
    for t in &targets {
        let s = *t.scaler.stats.lock().unwrap();
        faults.rate_limited += s.rate_limited;
        faults.unavailable += s.unavailable;
        faults.hang += s.hang;
        faults.apply_then_fail += s.apply_then_fail;
        faults.apply_then_hang += s.apply_then_hang;
        faults.slow += s.slow;
        faults.boot_failures += s.boot_failures;
        faults.metric_faults += *t.metric.faults.lock().unwrap();
    }
    eprintln!(
        "soak: seed {seed}, {ticks} passes x {} targets, {} fault/calm tally.cycles, faults {faults:?}, \
         worst convergence {} ticks (bound {bound}), peak record items {} \
         (first cycle {}), peak fleet entries {}, \
         target-ticks with started above its max after a failed tick {}",
        targets.len(),
        tally.cycles,
        tally.worst_convergence,
        tally.peak_record_items,
        tally.record_items_first_cycle,
        tally.peak_machines,
        tally.started_over_max_after_failed_tick,
    );
    // The dice really rolled: every kind of fault happened.
    assert!(faults.rate_limited > 0 && faults.unavailable > 0 && faults.hang > 0);
    assert!(faults.apply_then_fail > 0 && faults.apply_then_hang > 0 && faults.slow > 0);
    assert!(faults.boot_failures > 0 && faults.metric_faults > 0);
    assert!(
        tally.cycles >= 2,
        "at least two fault/calm tally.cycles ran"
    );
}
