//! The engine: runs ticks for many targets, with deadlines, bounded concurrency, per-target
//! state, membership hooks, dry runs and graceful shutdown.
//!
//! One **tick** of one target:
//! 1. list the inventory (one [`Scaler::list`] call) and ask the backend whether the target is
//!    paused ([`Scaler::paused`], e.g. a deploy in progress: the tick is then skipped);
//! 2. collect every metric concurrently, each within [`EngineConfig::metric_timeout`];
//! 3. count the creates it sent earlier that the inventory does not show on their way yet
//!    ([`pending`]);
//! 4. let the [`Policy`] decide the [`Targets`](crate::Targets);
//! 5. [`plan_actions`];
//! 6. execute the plan (unless dry run) with at most [`EngineConfig::action_concurrency`] calls
//!    in flight: `leave` before each stop, suspend or destroy (a failed leave skips the action),
//!    `join` after each successful start or started create; a create is never retried;
//! 7. optionally reclaim lost members ([`EngineConfig::reclaim_lost_members`]), handing the
//!    membership the tick's inventory as listed (nothing lists the machines twice);
//! 8. build a [`DecisionRecord`], hand it to every [`DecisionObserver`], keep it for
//!    [`Engine::last_decisions`].
//!
//! Everything in a tick shares one deadline ([`EngineConfig::tick_timeout`]); a call still
//! running at the deadline is dropped and reported as a timeout in the record.
//!
//! # Guarantees
//! - The first pass runs immediately; later passes every [`EngineConfig::interval`] (a pass
//!   that overruns delays the next one, it never piles up), or at once after
//!   [`Engine::trigger`].
//! - At most [`EngineConfig::concurrency`] targets tick at once; a target never ticks twice at
//!   once.
//! - Once the shutdown future given to [`Engine::run`] completes, no new tick or action starts; ticks in flight get
//!   [`EngineConfig::shutdown_grace`] to finish (their actions are then recorded as usual);
//!   after the grace they are dropped, which cancels their calls, and every action that was
//!   already sent is logged at WARN as sent with an unknown outcome (the next run re-reads the
//!   inventory); then [`Engine::run`] returns.
//! - Every pass ends with [`DecisionObserver::pass_finished`], also a pass over no target, so
//!   a health check can tell a live loop from a dead one.
//! - Only machines named by the plan are touched.

pub mod pending;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::coordination::{ActionNote, Coordinator, SingleProcess};
use crate::plan::{plan_actions, Action, ActionKind, PlanOptions};
use crate::policy::{MetricReadings, Policy, PolicyState};
use crate::record::{
    ActionError, ActionOutcome, ActionStep, DecisionObserver, DecisionRecord, MetricReading,
    TickStage, TickStatus,
};
use crate::{
    ClusterMembership, Counts, Error, InitialState, Machine, MetricSource, Result, Scaler, Scope,
};
use pending::{expected_inventory, PendingCreate, DEFAULT_PENDING_CREATE_TIMEOUT};

/// Everything the engine needs to scale one target.
#[derive(Clone)]
#[non_exhaustive]
pub struct TargetSpec {
    /// The target's scope (name, group, variables).
    pub scope: Scope,
    /// The backend that lists and changes this target's machines.
    pub scaler: Arc<dyn Scaler>,
    /// Its metrics, by [`MetricSource::name`].
    pub sources: Vec<Arc<dyn MetricSource>>,
    /// The policy that turns the readings into this target's counts.
    pub policy: Arc<Policy>,
    /// Planner options (initial state, per-action caps). Capabilities are read from the scaler
    /// at every tick.
    pub plan_options: PlanOptions,
    /// An optional cluster living on the machines.
    pub membership: Option<Arc<dyn ClusterMembership>>,
}

impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("scope", &self.scope)
            .field(
                "sources",
                &self.sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .field("plan_options", &self.plan_options)
            .field("membership", &self.membership.is_some())
            .finish()
    }
}

impl TargetSpec {
    /// A target with no metrics and no membership.
    pub fn new(scope: Scope, scaler: Arc<dyn Scaler>, policy: Policy) -> Self {
        TargetSpec {
            scope,
            scaler,
            sources: Vec::new(),
            policy: Arc::new(policy),
            plan_options: PlanOptions::default(),
            membership: None,
        }
    }

    /// Adds a metric source.
    pub fn with_source(mut self, source: Arc<dyn MetricSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Sets the cluster membership.
    pub fn with_membership(mut self, membership: Arc<dyn ClusterMembership>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Adds metric sources.
    pub fn with_sources(
        mut self,
        sources: impl IntoIterator<Item = Arc<dyn MetricSource>>,
    ) -> Self {
        self.sources.extend(sources);
        self
    }

    /// Uses a policy shared with other targets.
    pub fn with_shared_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the initial state of new machines.
    pub fn with_initial_state(mut self, state: InitialState) -> Self {
        self.plan_options.initial_state = state;
        self
    }

    /// Sets the planner options (initial state, scale-in, per-action caps).
    pub fn with_plan_options(mut self, options: PlanOptions) -> Self {
        self.plan_options = options;
        self
    }

    /// The target's name (the scope's target).
    pub fn name(&self) -> &str {
        &self.scope.target
    }

    /// Load-time checks: metric names are unique, do not shadow built-in variables, and every
    /// variable the rules use is known.
    pub fn validate(&self) -> Result<()> {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Error::config(format!(
                    "target `{}`: metric name `{n}` is used twice",
                    self.name()
                )));
            }
        }
        self.policy.check(&names)
    }
}

/// Where the engine gets its targets from; called at start and every
/// [`EngineConfig::refresh_interval`]. On error the engine keeps the last good list.
///
/// # Example
/// ```
/// use async_trait::async_trait;
/// use fleetscale_core::engine::{TargetProvider, TargetSpec};
/// use fleetscale_core::Result;
///
/// struct Nothing;
/// #[async_trait]
/// impl TargetProvider for Nothing {
///     async fn targets(&self) -> Result<Vec<TargetSpec>> {
///         Ok(vec![])
///     }
/// }
/// ```
#[async_trait]
pub trait TargetProvider: Send + Sync {
    /// The current targets. Names must be unique.
    async fn targets(&self) -> Result<Vec<TargetSpec>>;
}

#[async_trait]
impl TargetProvider for Vec<TargetSpec> {
    async fn targets(&self) -> Result<Vec<TargetSpec>> {
        Ok(self.clone())
    }
}

/// Engine settings. The defaults are fly-autoscaler's (interval 15 s, timeout 30 s).
///
/// ```
/// use std::time::Duration;
/// use fleetscale_core::engine::EngineConfig;
/// let config = EngineConfig::default().with_interval(Duration::from_secs(30)).with_dry_run(true);
/// assert_eq!(config.tick_timeout, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Deadline of one tick of one target.
    pub tick_timeout: Duration,
    /// Deadline of one metric read (capped by what is left of the tick).
    pub metric_timeout: Duration,
    /// Targets ticking at once.
    pub concurrency: usize,
    /// Backend calls in flight at once within one tick.
    pub action_concurrency: usize,
    /// How often the target list is refreshed.
    pub refresh_interval: Duration,
    /// Plan but execute nothing.
    pub dry_run: bool,
    /// Reclaim members that are unreachable, own something, and whose machine is gone.
    pub reclaim_lost_members: bool,
    /// How long ticks in flight may go on once [`Engine::run`] is cancelled, before they are
    /// dropped (default [`DEFAULT_SHUTDOWN_GRACE`]).
    pub shutdown_grace: Duration,
    /// How long a create the engine sent counts toward its destination while the inventory
    /// does not show it on its way (see [`pending`]; default
    /// [`DEFAULT_PENDING_CREATE_TIMEOUT`], 5 minutes).
    pub pending_create_timeout: Duration,
}

/// The default [`EngineConfig::shutdown_grace`]: 3 s, so that a process asked to stop ends
/// well within the 5 s Fly gives a Machine between its stop signal and the kill.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            interval: Duration::from_secs(15),
            tick_timeout: Duration::from_secs(30),
            metric_timeout: Duration::from_secs(10),
            concurrency: 4,
            action_concurrency: 4,
            refresh_interval: Duration::from_secs(60),
            dry_run: false,
            reclaim_lost_members: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            pending_create_timeout: DEFAULT_PENDING_CREATE_TIMEOUT,
        }
    }
}

impl EngineConfig {
    /// Sets [`EngineConfig::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`EngineConfig::tick_timeout`].
    pub fn with_tick_timeout(mut self, timeout: Duration) -> Self {
        self.tick_timeout = timeout;
        self
    }

    /// Sets [`EngineConfig::metric_timeout`].
    pub fn with_metric_timeout(mut self, timeout: Duration) -> Self {
        self.metric_timeout = timeout;
        self
    }

    /// Sets [`EngineConfig::concurrency`].
    pub fn with_concurrency(mut self, targets: usize) -> Self {
        self.concurrency = targets;
        self
    }

    /// Sets [`EngineConfig::action_concurrency`].
    pub fn with_action_concurrency(mut self, calls: usize) -> Self {
        self.action_concurrency = calls;
        self
    }

    /// Sets [`EngineConfig::refresh_interval`].
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets [`EngineConfig::dry_run`].
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets [`EngineConfig::reclaim_lost_members`].
    pub fn with_reclaim_lost_members(mut self, reclaim: bool) -> Self {
        self.reclaim_lost_members = reclaim;
        self
    }

    /// Sets [`EngineConfig::shutdown_grace`].
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets [`EngineConfig::pending_create_timeout`].
    pub fn with_pending_create_timeout(mut self, timeout: Duration) -> Self {
        self.pending_create_timeout = timeout;
        self
    }
}

#[derive(Default)]
struct TargetState {
    ticks: u64,
    policy: PolicyState,
    /// Creates sent and not yet shown on their way by the inventory.
    pending: Vec<PendingCreate>,
}

/// Runs ticks for the targets of a [`TargetProvider`]. See the [module docs](self).
pub struct Engine {
    config: EngineConfig,
    provider: Arc<dyn TargetProvider>,
    coordinator: Arc<dyn Coordinator>,
    observers: Vec<Arc<dyn DecisionObserver>>,
    states: StdMutex<HashMap<String, Arc<Mutex<TargetState>>>>,
    last: RwLock<BTreeMap<String, DecisionRecord>>,
    trigger: Notify,
    ticks_in_flight: AtomicUsize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An action handed to the backend. Dropped before its call returned (the tick was cancelled
/// at shutdown), it logs that the action was sent and its outcome is unknown: the backend may
/// have carried it out, and the next run re-reads the inventory before planning anything.
struct SentAction<'a> {
    target: &'a str,
    action: &'a Action,
    done: bool,
}

impl Drop for SentAction<'_> {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                app = %self.target,
                action = %self.action,
                "shutdown: {} was sent and cancelled before it answered; its outcome is unknown",
                self.action.kind()
            );
        }
    }
}

/// An executed action: its outcome for the record, and the machine a create returned (a
/// create that failed in its `join` still created it, and the engine expects it).
struct Executed {
    outcome: ActionOutcome,
    created_machine: Option<Machine>,
}

/// Counts a tick as in flight while alive.
struct TickInFlight<'a>(&'a AtomicUsize);

impl Drop for TickInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The message of a failed metric without a leading ``metric `name`: `` (the name is shown
/// beside it wherever the message goes, and the policy prefixes it once).
fn metric_failure(name: &str, e: &Error) -> String {
    let text = e.to_string();
    let prefix = format!("metric `{name}`: ");
    match text.strip_prefix(&prefix) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

async fn with_deadline<T>(
    deadline: Instant,
    operation: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::timeout(operation, left)),
    }
}

impl Engine {
    /// An engine over `provider`'s targets.
    pub fn new(config: EngineConfig, provider: Arc<dyn TargetProvider>) -> Self {
        Engine {
            config,
            provider,
            coordinator: Arc::new(SingleProcess),
            observers: Vec::new(),
            states: StdMutex::new(HashMap::new()),
            last: RwLock::new(BTreeMap::new()),
            trigger: Notify::new(),
            ticks_in_flight: AtomicUsize::new(0),
        }
    }

    /// Shares the targets with other replicas through `coordinator` (default
    /// [`SingleProcess`]: this engine owns every target): each pass acts only on the targets
    /// [`Coordinator::acquire`] returns, and every create, start, stop, destroy and leave is
    /// sent only after [`Coordinator::fence`] allowed it, and only while that fence is valid.
    pub fn with_coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = coordinator;
        self
    }

    /// Adds an observer of decision records.
    pub fn with_observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The settings this engine was built with (interval, deadlines, concurrency, dry run).
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs a pass now instead of at the next interval (event-driven scaling). Coalesces: many
    /// triggers while a pass runs cause one more pass.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// The latest record of every target.
    pub fn last_decisions(&self) -> Vec<DecisionRecord> {
        self.last
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs passes until `shutdown` completes (a signal, a [`CancellationToken`]'s
    /// `cancelled_owned()`, a timer), then gives the ticks in flight
    /// [`EngineConfig::shutdown_grace`] to finish, drops those that did not, and returns.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
    /// let engine = Engine::new(EngineConfig::default(), Arc::new(Vec::<TargetSpec>::new()));
    /// engine.run(std::future::ready(())).await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when [`EngineConfig::interval`] is zero (a timer cannot tick every
    /// 0 s); nothing else: tick failures are recorded, not returned.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        if self.config.interval.is_zero() {
            return Err(Error::config("engine interval must be greater than zero"));
        }
        let cancel = CancellationToken::new();
        let passes = self.run_passes(&cancel);
        tokio::pin!(passes, shutdown);
        tokio::select! {
            biased;
            r = &mut passes => return r,
            () = &mut shutdown => cancel.cancel(),
        }
        passes.await
    }

    async fn run_passes(&self, cancel: &CancellationToken) -> Result<()> {
        let mut targets: Vec<TargetSpec> = Vec::new();
        let mut last_refresh: Option<Instant> = None;
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
                _ = self.trigger.notified() => {}
            }
            if last_refresh.is_none_or(|at| at.elapsed() >= self.config.refresh_interval) {
                let listing =
                    tokio::time::timeout(self.config.tick_timeout, self.provider.targets());
                let refreshed = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    r = listing => r,
                };
                match refreshed {
                    Ok(Ok(t)) => {
                        self.forget_missing(&t);
                        targets = t;
                        last_refresh = Some(Instant::now());
                    }
                    // Retry at the next pass rather than waiting a whole refresh interval.
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "app list update failed; keeping the last good list");
                    }
                    Err(_) => tracing::error!(
                        "app list update failed: no answer within {}; keeping the last good list",
                        crate::format_seconds(self.config.tick_timeout)
                    ),
                }
            }
            let pass = self.run_pass(&targets, cancel, false);
            tokio::pin!(pass);
            let finished = tokio::select! {
                _ = &mut pass => true,
                _ = cancel.cancelled() => false,
            };
            if !finished {
                let grace = self.config.shutdown_grace;
                if tokio::time::timeout(grace, &mut pass).await.is_err() {
                    tracing::warn!(
                        ticks = self.ticks_in_flight.load(Ordering::Relaxed) as u64,
                        "shutdown: ticks still in flight after the grace of {}; cancelling them",
                        crate::format_seconds(grace)
                    );
                }
                // Dropping the pass (here, if it did not finish) cancels its calls; actions
                // already sent log themselves as such (see `SentAction`).
                break;
            }
            for o in &self.observers {
                o.pass_finished(targets.len());
            }
        }
        Ok(())
    }

    /// One pass over the provider's current targets (refreshing them first). Used by `eval`
    /// and tests.
    pub async fn run_once(&self) -> Result<Vec<DecisionRecord>> {
        let targets = self.provider.targets().await?;
        Ok(self
            .run_pass(&targets, &CancellationToken::new(), true)
            .await)
    }

    fn forget_missing(&self, targets: &[TargetSpec]) {
        if let Ok(mut states) = self.states.lock() {
            states.retain(|k, _| targets.iter().any(|t| t.name() == k));
        }
        if let Ok(mut last) = self.last.write() {
            last.retain(|k, _| targets.iter().any(|t| t.name() == k));
        }
    }

    /// One pass over `targets`, `concurrency` ticks at a time; returns the records only when
    /// `keep_records` (the loop does not need them: each tick already went to the observers
    /// and to [`Engine::last_decisions`]).
    async fn run_pass(
        &self,
        targets: &[TargetSpec],
        cancel: &CancellationToken,
        keep_records: bool,
    ) -> Vec<DecisionRecord> {
        let names: Vec<String> = targets.iter().map(|t| t.name().to_owned()).collect();
        let owned: std::collections::HashSet<String> = match self.coordinator.acquire(&names).await
        {
            Ok(owned) => owned.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "coordination unavailable: acting on no target this pass");
                return Vec::new();
            }
        };
        // At most `concurrency` tick futures exist at once: a pass over 10,000 targets must not
        // hold 10,000 suspended ticks. The loop indexes the targets instead of mapping a stream
        // over them, because a `map` closure over borrowed targets makes the pass's future lose
        // `Send` (rust-lang/rust#102211), and `Engine::run` must be spawnable.
        let limit = self.config.concurrency.max(1);
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        let mut records = Vec::new();
        loop {
            while running.len() < limit && next < targets.len() {
                let target = &targets[next];
                next += 1;
                if owned.contains(target.name()) {
                    running.push(self.tick_inner(target, self.config.dry_run, cancel));
                }
            }
            match running.next().await {
                Some(record) if keep_records => records.push(record),
                Some(_) => {}
                None => break,
            }
        }
        records
    }

    /// One tick of one target, honouring the engine's dry-run setting or forcing one.
    pub async fn tick(&self, target: &TargetSpec, force_dry_run: bool) -> DecisionRecord {
        self.tick_inner(
            target,
            force_dry_run || self.config.dry_run,
            &CancellationToken::new(),
        )
        .await
    }

    async fn tick_inner(
        &self,
        target: &TargetSpec,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> DecisionRecord {
        let state = {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            states.entry(target.name().to_owned()).or_default().clone()
        };
        let mut state = state.lock().await;
        state.ticks += 1;
        self.ticks_in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = TickInFlight(&self.ticks_in_flight);
        let record = self.tick_locked(target, dry_run, cancel, &mut state).await;
        for o in &self.observers {
            o.observe(&record);
        }
        if let Ok(mut last) = self.last.write() {
            last.insert(target.name().to_owned(), record.clone());
        }
        record
    }

    async fn tick_locked(
        &self,
        target: &TargetSpec,
        dry_run: bool,
        cancel: &CancellationToken,
        state: &mut TargetState,
    ) -> DecisionRecord {
        let started = Instant::now();
        let deadline = started + self.config.tick_timeout;
        let mut record = DecisionRecord::new(target.name(), state.ticks, SystemTime::now());
        let finish = |mut r: DecisionRecord| {
            r.duration = started.elapsed();
            r
        };

        // 1 + 2: inventory and metrics, concurrently.
        let list = with_deadline(deadline, "listing the machines", target.scaler.list());
        let metrics = futures::future::join_all(target.sources.iter().map(|s| {
            let metric_deadline = deadline.min(Instant::now() + self.config.metric_timeout);
            let name = s.name().to_owned();
            async move {
                let r = with_deadline(
                    metric_deadline,
                    &format!("reading metric `{name}`"),
                    async {
                        let v = s.collect(&target.scope).await?;
                        if v.is_finite() {
                            Ok(v)
                        } else {
                            Err(Error::metric(
                                &name,
                                format!("value is not a finite number: {v}"),
                            ))
                        }
                    },
                )
                .await;
                (name, r)
            }
        }));
        let paused = with_deadline(
            deadline,
            "checking whether the target is paused",
            target.scaler.paused(),
        );
        let (inventory, readings, paused) = tokio::join!(list, metrics, paused);
        match paused {
            Ok(None) => {}
            Ok(Some(reason)) => {
                record.status = TickStatus::Paused { reason };
                return finish(record);
            }
            Err(e) => {
                record.status = TickStatus::failed(TickStage::Paused, &e);
                return finish(record);
            }
        }
        let mut policy_readings = MetricReadings::new();
        for (name, r) in readings {
            match r {
                Ok(v) => {
                    record.metrics.insert(name.clone(), MetricReading::Value(v));
                    policy_readings.insert(name, Ok(v));
                }
                Err(e) => {
                    let message = metric_failure(&name, &e);
                    record.metrics.insert(
                        name.clone(),
                        MetricReading::Failed {
                            kind: e.kind(),
                            message: message.clone(),
                        },
                    );
                    policy_readings.insert(name, Err(message));
                }
            }
        }
        let listed: Vec<Machine> = match inventory {
            Ok(i) => i,
            Err(e) => {
                record.status = TickStatus::failed(TickStage::List, &e);
                return finish(record);
            }
        };
        // 3: the creates of earlier ticks count where they are going.
        let inventory = expected_inventory(
            &listed,
            &mut state.pending,
            Instant::now(),
            self.config.pending_create_timeout,
        );
        let counts = Counts::of(&inventory);
        record.counts = Some(counts);

        // 4 + 5: decide and plan.
        let capabilities = target.scaler.capabilities();
        let now = Instant::now().into_std();
        let decision = target.policy.decide(
            &target.scope,
            &counts,
            &policy_readings,
            capabilities,
            &mut state.policy,
            now,
        );
        let mut options = target.plan_options.clone();
        options.capabilities = capabilities;
        let plan = plan_actions(&inventory, &decision.targets, &options);
        let held = decision.held;
        record.decision = Some(decision);

        if plan.is_empty() {
            record.status = if held {
                TickStatus::Held
            } else {
                TickStatus::NoScale
            };
        } else if dry_run {
            record.status = TickStatus::DryRun;
        } else {
            // 6: execute.
            let by_id: HashMap<_, _> = inventory.iter().map(|m| (&m.id, m)).collect();
            // In plan order, `action_concurrency` calls at a time, and only that many call
            // futures alive at once (a plan of thousands of creates builds them as it goes).
            let limit = self.config.action_concurrency.max(1);
            let mut running = FuturesOrdered::new();
            let mut next = 0;
            let mut outcomes: Vec<Executed> = Vec::with_capacity(plan.actions.len());
            loop {
                while running.len() < limit && next < plan.actions.len() {
                    let action = &plan.actions[next];
                    next += 1;
                    let machine = action.machine().and_then(|id| by_id.get(id).copied());
                    running.push_back(self.execute(target, action, machine, deadline, cancel));
                }
                match running.next().await {
                    Some(executed) => outcomes.push(executed),
                    None => break,
                }
            }
            let up = outcomes
                .iter()
                .any(|o| o.outcome.ok() && o.outcome.action.kind().is_scale_up());
            let down = outcomes
                .iter()
                .any(|o| o.outcome.ok() && !o.outcome.action.kind().is_scale_up());
            state
                .policy
                .record_actions(Instant::now().into_std(), up, down);
            let sent = Instant::now();
            let mut executed = Vec::with_capacity(outcomes.len());
            for o in outcomes {
                if let (Action::Create { request, .. }, Some(mut machine), true) =
                    (&o.outcome.action, o.created_machine, o.outcome.ok())
                {
                    // A pending machine is only counted, never acted on or cloned (see
                    // `pending`), so the backend's record of it (a whole decoded machine
                    // config for Fly) need not be kept until the inventory shows it.
                    machine.detail = None;
                    state.pending.push(PendingCreate {
                        machine,
                        destination: request.initial_state.destination(),
                        sent,
                    });
                }
                executed.push(o.outcome);
            }
            record.outcomes = executed;
            record.status = TickStatus::Scaled;
        }
        record.plan = Some(plan);

        // 7: reclaim lost members, on the evidence of the inventory as listed.
        if let (Some(membership), true, false) = (
            &target.membership,
            self.config.reclaim_lost_members,
            dry_run || cancel.is_cancelled(),
        ) {
            record.reclaims = self
                .reclaim_lost(target.name(), membership.as_ref(), &listed, deadline)
                .await;
        }
        finish(record)
    }

    async fn reclaim_lost(
        &self,
        target: &str,
        membership: &dyn ClusterMembership,
        inventory: &[Machine],
        deadline: Instant,
    ) -> Vec<(String, std::result::Result<u64, String>)> {
        let members = match with_deadline(deadline, "members", membership.members(inventory)).await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reclaim: listing members failed");
                return vec![("*".into(), Err(format!("listing members failed: {e}")))];
            }
        };
        let mut out = Vec::new();
        for member in members {
            if member.fixed || member.reachable || member.owned == 0 {
                continue;
            }
            // A member no machine is known for cannot be shown gone by this inventory; the
            // membership says so itself when asked (it may know more), so it is logged here.
            let Some(id) = member.machine.as_ref() else {
                tracing::debug!(member = %member.name, owned = member.owned, "unreachable member not tied to a machine: not a reclaim candidate");
                continue;
            };
            let gone = !inventory.iter().any(|m| &m.id == id && m.state.exists());
            if !gone {
                continue;
            }
            // A reclaim is destructive: fenced like a destroy of the member's (gone) machine.
            let note = ActionNote::new(target, ActionKind::Destroy, Some(id.clone()));
            match with_deadline(
                deadline,
                "proving ownership of the target",
                self.coordinator.fence(&note),
            )
            .await
            {
                Ok(f) if f.valid() => {}
                Ok(_) => {
                    tracing::warn!(member = %member.name, machine = %id, "reclaim not sent: the fence expired first");
                    out.push((
                        member.name.clone(),
                        Err("the fence expired before the reclaim was sent".into()),
                    ));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(member = %member.name, machine = %id, error = %e, "reclaim not sent: ownership not proven");
                    out.push((member.name.clone(), Err(format!("fence: {e}"))));
                    continue;
                }
            }
            let r =
                with_deadline(deadline, "reclaim", membership.reclaim(&member, inventory)).await;
            match &r {
                Ok(o) if o.already_reclaimed => {
                    tracing::info!(member = %member.name, "lost member was already reclaimed")
                }
                Ok(o) => tracing::warn!(
                    member = %member.name, machine = %id, reclaimed = o.reclaimed, by = %o.by,
                    "reclaimed lost member"
                ),
                Err(e @ Error::Refused { .. }) => {
                    tracing::info!(member = %member.name, machine = %id, "reclaim of lost member refused: {e}")
                }
                Err(e) => {
                    tracing::warn!(member = %member.name, machine = %id, error = %e, "reclaim of lost member failed")
                }
            }
            out.push((
                member.name.clone(),
                r.map(|o| o.reclaimed).map_err(|e| e.to_string()),
            ));
        }
        out
    }

    async fn execute(
        &self,
        target: &TargetSpec,
        action: &Action,
        machine: Option<&Machine>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Executed {
        let t0 = Instant::now();
        let mut outcome = ActionOutcome::new(action.clone());
        outcome.region = machine.and_then(|m| m.region.clone());
        let mut created_machine = None;
        if cancel.is_cancelled() {
            outcome.error = Some(ActionError::new(ActionStep::Skipped, &Error::Cancelled));
            return Executed {
                outcome,
                created_machine,
            };
        }
        let scaler = &target.scaler;
        let membership = target.membership.as_deref();
        // Every mutating call goes out only under a valid fence (see `with_coordinator`).
        let fence = |kind: ActionKind, machine: Option<&crate::MachineId>| {
            let note = ActionNote::new(target.name(), kind, machine.cloned());
            async move {
                let f = with_deadline(
                    deadline,
                    "proving ownership of the target",
                    self.coordinator.fence(&note),
                )
                .await
                .map_err(|e| ActionError::new(ActionStep::Fence, &e))?;
                if f.valid() {
                    Ok(())
                } else {
                    Err(ActionError::new(
                        ActionStep::Fence,
                        &Error::refused(format!(
                            "the fence on target {} expired before the call was sent",
                            note.target
                        )),
                    ))
                }
            }
        };
        let mut sent = SentAction {
            target: target.name(),
            action,
            done: false,
        };
        let step = |step: ActionStep| move |e: Error| ActionError::new(step, &e);
        let result: std::result::Result<(), ActionError> = async {
            match action {
                Action::Stop { id, .. }
                | Action::Suspend { id, .. }
                | Action::Destroy { id, .. } => {
                    if let (Some(ms), Some(m)) = (membership, machine) {
                        fence(action.kind(), Some(id)).await?;
                        with_deadline(
                            deadline,
                            &format!("leaving the cluster before acting on {id}"),
                            ms.leave(m),
                        )
                        .await
                        .map_err(step(ActionStep::Leave))?;
                    }
                    fence(action.kind(), Some(id)).await?;
                    match action {
                        Action::Stop { .. } => {
                            with_deadline(deadline, &format!("stopping {id}"), scaler.stop(id))
                                .await
                                .map_err(step(ActionStep::Stop))
                        }
                        Action::Suspend { .. } => {
                            with_deadline(deadline, &format!("suspending {id}"), scaler.suspend(id))
                                .await
                                .map_err(step(ActionStep::Suspend))
                        }
                        _ => match with_deadline(
                            deadline,
                            &format!("destroying {id}"),
                            scaler.destroy(id),
                        )
                        .await
                        {
                            Err(e) if e.is_not_found() => Ok(()),
                            r => r.map_err(step(ActionStep::Destroy)),
                        },
                    }
                }
                Action::Create { request, .. } => {
                    fence(ActionKind::Create, None).await?;
                    let m = with_deadline(deadline, "creating a machine", scaler.create(request))
                        .await
                        .map_err(step(ActionStep::Create))?;
                    outcome.created = Some(m.id.clone());
                    outcome.region = m.region.clone().or_else(|| request.region.clone());
                    let joined = if let (Some(ms), InitialState::Started) =
                        (membership, request.initial_state)
                    {
                        with_deadline(
                            deadline,
                            &format!("joining the cluster with {}", m.id),
                            ms.join(&m),
                        )
                        .await
                        .map_err(step(ActionStep::Join))
                    } else {
                        Ok(())
                    };
                    created_machine = Some(m);
                    joined
                }
                Action::Start { id, .. } => {
                    fence(ActionKind::Start, Some(id)).await?;
                    with_deadline(deadline, &format!("starting {id}"), scaler.start(id))
                        .await
                        .map_err(step(ActionStep::Start))?;
                    if let (Some(ms), Some(m)) = (membership, machine) {
                        with_deadline(
                            deadline,
                            &format!("joining the cluster with {id}"),
                            ms.join(m),
                        )
                        .await
                        .map_err(step(ActionStep::Join))?;
                    }
                    Ok(())
                }
            }
        }
        .await;
        sent.done = true;
        outcome.error = result.err();
        outcome.duration = t0.elapsed();
        Executed {
            outcome,
            created_machine,
        }
    }
}
