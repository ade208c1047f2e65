//! [`FlyScaler`]: the core [`Scaler`] for one Fly app and process group.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{
    Capabilities, CreateRequest, Destination, Error, InitialState, Machine, MachineId,
    MachineState, Result, Scaler,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{DestroyOptions, MachinesClient, WaitOptions, MAX_WAIT};
use crate::error::FlyError;
use crate::graphql::FlyGraphql;
use crate::types::{CreateMachineRequest, FlyMachine, FlyState, ListOptions, StopRequest};

/// The reason [`FlyScaler::paused`](Scaler::paused) gives while a deploy is in progress.
pub const RELEASE_IN_PROGRESS: &str = "release in progress";

/// The process group fly-autoscaler and `fly deploy` use by default.
pub const DEFAULT_PROCESS_GROUP: &str = "app";

/// Default of [`FlyScalerConfig::launch_grace`]: 5 minutes, the time after which Fly's machine
/// states documentation (`machines/machine-states`) suggests treating a machine as stuck in a
/// transitional state.
pub const DEFAULT_LAUNCH_GRACE: Duration = Duration::from_secs(5 * 60);

/// Default of [`FlyScalerConfig::lease_ttl`]: 10 s, shorter than the default engine interval
/// (15 s), so a lease left behind by a destroy that failed and could not release it has expired
/// before the next tick. Destroys refresh it while they wait for a stop, so the TTL does not
/// bound how long a destroy may take.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Default of [`FlyScalerConfig::template_max_age`]: 30 s, two default engine intervals
/// (15 s): long enough for every create of a tick, short enough that a `create` long after
/// the last `list` reads the template afresh.
pub const DEFAULT_TEMPLATE_MAX_AGE: Duration = Duration::from_secs(30);

/// How [`FlyScaler::destroy`] takes a machine down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestroyPolicy {
    /// Cordon a running machine first, so the proxy stops sending it traffic. Default `true`.
    pub cordon: bool,
    /// Stop a running machine gracefully and wait until it is stopped before destroying it.
    /// Default `true`. With `false` (and `force` false) destroying a running machine fails
    /// with a conflict, as on Fly.
    pub stop_first: bool,
    /// Signal for the graceful stop; `None` uses the machine's configured kill signal.
    pub stop_signal: Option<String>,
    /// Time the machine gets to exit before Fly kills it; `None` uses its kill timeout.
    pub stop_timeout: Option<Duration>,
    /// How long to wait for `stopped` (clamped to 60 s, the API maximum). Default 30 s.
    pub stop_wait: Duration,
    /// Send `?force=true` (kill if running). Default `false`: only configured force kills.
    pub force: bool,
}

impl Default for DestroyPolicy {
    fn default() -> Self {
        DestroyPolicy {
            cordon: true,
            stop_first: true,
            stop_signal: None,
            stop_timeout: None,
            stop_wait: Duration::from_secs(30),
            force: false,
        }
    }
}

/// Settings of a [`FlyScaler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlyScalerConfig {
    /// The Fly app.
    pub app: String,
    /// Only machines of this process group (`config.metadata.fly_process_group`, legacy
    /// `process_group`); `None` for every machine of the app. Default `Some("app")`.
    pub process_group: Option<String>,
    /// Regions for new machines, used round-robin; empty: the template's region.
    pub regions: Vec<String>,
    /// How machines are destroyed.
    pub destroy: DestroyPolicy,
    /// TTL of the lease a destroy takes. Default [`DEFAULT_LEASE_TTL`] (10 s). The destroy
    /// refreshes it whenever half of it has passed (so a slow stop keeps the machine leased);
    /// a lease left behind (cancelled destroy, failed release) blocks other clients for at
    /// most this long. Values below 2 s cannot be refreshed in time (the API counts in
    /// seconds).
    pub lease_ttl: Duration,
    /// For [`InitialState::Suspended`] creates: how long to wait for `started` before
    /// suspending (clamped to 60 s). Default 60 s.
    pub suspend_wait: Duration,
    /// How long a machine this scaler created to be started may still list as `created` and be
    /// reported as [`MachineState::Starting`] (see [`FlyScaler`], "Launching creates").
    /// Default [`DEFAULT_LAUNCH_GRACE`] (5 minutes).
    pub launch_grace: Duration,
    /// How long a template kept from a [`list`](Scaler::list) or an earlier read may be
    /// cloned by `create` without reading it again (see [`FlyScaler`], "Templates").
    /// Default [`DEFAULT_TEMPLATE_MAX_AGE`] (30 s); `Duration::ZERO` reads the template for
    /// every create.
    pub template_max_age: Duration,
}

impl FlyScalerConfig {
    /// Defaults for `app`: process group `app`, template regions, safe destroys.
    pub fn new(app: impl Into<String>) -> Self {
        FlyScalerConfig {
            app: app.into(),
            process_group: Some(DEFAULT_PROCESS_GROUP.to_owned()),
            regions: Vec::new(),
            destroy: DestroyPolicy::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            suspend_wait: Duration::from_secs(60),
            launch_grace: DEFAULT_LAUNCH_GRACE,
            template_max_age: DEFAULT_TEMPLATE_MAX_AGE,
        }
    }

    /// Sets the process group (`None`: all machines).
    pub fn with_process_group(mut self, group: Option<String>) -> Self {
        self.process_group = group;
        self
    }

    /// Sets the regions for new machines.
    pub fn with_regions(mut self, regions: Vec<String>) -> Self {
        self.regions = regions;
        self
    }
}

/// The machines of one Fly app (and process group) as a core [`Scaler`].
///
/// # Which machines
/// Those whose process group (`config.metadata.fly_process_group`, else the legacy
/// `process_group`) is the configured one. Machines **without** a group label are in Fly's
/// default group `app`: they are included when the configured group is `app` and no machine
/// of the app is labelled with another group (the app has a single group). fly-autoscaler
/// ignores them, so apps whose machines were created directly through the API were never
/// scaled (a known bug). With a second group present, unlabelled machines are ambiguous
/// and left out. For unreachable hosts (`config: null`) the
/// label is read from `incomplete_config`.
///
/// # States
/// See [`FlyState::to_core`] for the full table of the 17 Fly states, with one exception:
///
/// **Launching creates.** Right after `POST /v1/apps/{app}/machines` without `skip_launch`,
/// Fly lists the new machine as `created` before `starting`, and `created` means "never
/// started" to the planner, which would count it as not started and start *another* machine
/// on the next tick (an overshoot the soak test found). So the scaler remembers the machines it
/// created to be started (id and time) and [`list`](Scaler::list) reports them as
/// [`MachineState::Starting`] while they are still `created`, until they leave `created` or
/// [`FlyScalerConfig::launch_grace`] (default 5 minutes) has passed; after that a machine still
/// `created` is reported as `created` again (its launch evidently did not happen) and may be
/// started. The `fly_state` label always shows the raw Fly state. The memory is per scaler
/// value (not shared between processes or restarts) and holds only machines still listed
/// `created`, so it stays as small as the number of launches in flight. A create whose answer
/// was lost is not remembered (its id is unknown); the planner may then start one more machine,
/// which a later tick stops. Starts need no such care: the API (and the fake) show `starting`
/// as soon as a start is accepted.
///
/// # Manageable
/// Machines whose `host_status` is not `ok` (or whose config is `null`) are listed with
/// [`Machine::manageable`] `false`: reported, counted as unmanageable, and every operation
/// on them is refused ([`Error::Refused`]).
///
/// # Labels
/// `process_group` (effective group), `image` (`registry/repository:tag@digest`),
/// `release_id`, `release_version` (from metadata), `fly_state` (the raw Fly state) and
/// `host_status`. The address is the 6PN `private_ip`.
///
/// # Operations
/// - `create` clones the template machine's config (the request's template, else the newest
///   healthy machine of the group, started ones first) with `config.image` pinned to the
///   exact `image_ref` digest, so scale-ups never pick up a different image; region from the
///   request, else the configured regions round-robin, else the template's. Initial state
///   `started` (returned and listed as `starting` while Fly still shows `created`, see
///   "Launching creates"), `stopped` (`skip_launch`, the machine stays `created`) or `suspended` (created
///   started, waited for `started`, then suspended; if that wait or suspend fails the machine
///   is returned as it is, with a warning). Retried only when answered 429 (not executed, see
///   [`crate::client`]), never after other errors. The template comes from the last
///   list when recent (see "Templates").
/// - `start`/`stop`/`suspend` read the machine first and do nothing when it is already there
///   or on its way (idempotent; a launching create is on its way to started); `stop` of a suspended, created or failed machine is a no-op
///   (it is not running, and stopping a suspended machine would discard its snapshot).
/// - `destroy` takes a lease, cordons and gracefully stops a running machine and waits for
///   `stopped` (per [`DestroyPolicy`]), then deletes it with the lease nonce (`force` only
///   when configured). On failure the lease is released. Only the named machine is touched;
///   a machine of another group is refused. See "Leases".
///
/// # Leases
/// A destroy holds a lease of [`FlyScalerConfig::lease_ttl`] (10 s by default), refreshed
/// whenever half of it has passed, so the machine stays leased however long the stop takes.
/// While a lease is held, the API refuses every other client's mutations of the machine with
/// 409, which the scaler reports as [`Error::Conflict`] (not retried: one refused call per
/// operation, and the engine's next tick may try again). A lease outlives its destroy only
/// when the destroy is cancelled or fails and its release fails too; it then expires after
/// at most the TTL, before the next tick at the default 15 s interval. This scaler remembers
/// such a lease (nonce and time, until it expires) and sends its nonce with its own `start`,
/// `stop` and `suspend` of that machine and refreshes it for the next `destroy`, so a lease
/// it left does not block it; other clients and other scaler values meet the 409 until it
/// expires. A 409 answered to the release means the lease is not ours any more: nothing is
/// remembered.
///
/// # Templates
/// The engine lists the machines right before it plans, and the planner names a listed machine
/// as the template of its creates (the newest healthy one, unless configured otherwise). So
/// each [`list`](Scaler::list) keeps, from what it read, the machines a create is likely to
/// clone: the one the core planner picks by default and the one `create` picks when no
/// template is named (newest started, else newest healthy); at most two machines, not the
/// whole listing. A template that is neither is read once (`GET`) and kept too. `create`
/// uses a kept template (its config, `image_ref` and region as read) while it is younger than
/// [`FlyScalerConfig::template_max_age`] (30 s by default) and usable (not destroyed or
/// destroying, healthy host); otherwise it reads the template as before. A scale-up of N
/// machines then costs the tick's list and N creates, instead of a `GET` of the template
/// (and, for apps whose machines carry no process-group label, another list) before every
/// create. A failed create forgets every kept template, so the creates after it read the
/// template afresh. A template changed between the read and the create (a deploy that
/// updates it; the deploy guard skips such ticks) is cloned as read, as it would have been a
/// moment earlier.
///
/// # Deploy guard
/// With [`FlyScaler::with_release_guard`], [`Scaler::paused`] asks Fly's GraphQL API for the
/// app's current release once per tick and answers `Some("release in progress")`
/// ([`RELEASE_IN_PROGRESS`]) while its status is `running`, so the engine leaves the app alone
/// while `fly deploy` replaces its machines, as fly-autoscaler does (see [`crate::graphql`]).
/// An app without any release is not paused; a failed query is an error (the engine skips the
/// tick: a deploy cannot be ruled out). Without a guard, `paused` is always `Ok(None)`.
///
/// Every operation is cancel-safe: dropping the future leaves nothing that the next `list`
/// does not show (see [`crate::client`]).
#[derive(Debug)]
pub struct FlyScaler {
    client: MachinesClient,
    config: FlyScalerConfig,
    next_region: AtomicUsize,
    release_guard: Option<FlyGraphql>,
    /// Machines created to be started, by id, with the time of the create (see "Launching
    /// creates" above). Never held across an `.await`.
    launching: Mutex<HashMap<String, Instant>>,
    /// Templates for `create` (see "Templates" above). Never held across an `.await`.
    templates: Mutex<TemplateCache>,
    /// Leases left by failed destroys whose release failed, by machine id, until they expire
    /// (see "Leases" above). Never held across an `.await`.
    leases: Mutex<HashMap<String, HeldLease>>,
}

/// Templates kept for `create` (see "Templates" in the [`FlyScaler`] docs).
#[derive(Debug, Default)]
struct TemplateCache {
    /// From the last list: the machines a create is likely to clone, and when listed.
    listed: Option<(Instant, Vec<FlyMachine>)>,
    /// Templates read by id, and when.
    fetched: HashMap<String, (Instant, FlyMachine)>,
}

/// What [`FlyScaler::cached_template`] found.
enum CachedTemplate {
    /// The requested template.
    One(Box<FlyMachine>),
    /// The last listing's picks (no template requested).
    Picks(Vec<FlyMachine>),
    /// Nothing usable.
    None,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn group_in(cfg: &Option<Value>) -> Option<&str> {
    let meta = cfg.as_ref()?.get("metadata")?;
    meta.get("fly_process_group")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .or_else(|| meta.get("process_group").and_then(Value::as_str))
        .filter(|g| !g.is_empty())
}

fn group_of(m: &FlyMachine) -> Option<&str> {
    group_in(&m.config).or_else(|| group_in(&m.incomplete_config))
}

fn manageable(m: &FlyMachine) -> bool {
    m.host_ok() && m.config.as_ref().is_some_and(|c| !c.is_null())
}

impl FlyScaler {
    /// A scaler for `config.app` using `client`.
    ///
    /// # Errors
    /// [`FlyError::Config`] when the app name is empty.
    pub fn new(
        client: MachinesClient,
        config: FlyScalerConfig,
    ) -> std::result::Result<Self, FlyError> {
        if config.app.trim().is_empty() {
            return Err(FlyError::Config("app name is empty".into()));
        }
        Ok(FlyScaler {
            client,
            config,
            next_region: AtomicUsize::new(0),
            release_guard: None,
            launching: Mutex::new(HashMap::new()),
            templates: Mutex::new(TemplateCache::default()),
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// Enables the deploy guard: [`Scaler::paused`] skips ticks while the app's current release
    /// is `running` (see the type docs), using `graphql` (same token as the Machines API).
    pub fn with_release_guard(mut self, graphql: FlyGraphql) -> Self {
        self.release_guard = Some(graphql);
        self
    }

    /// The GraphQL client of the deploy guard, when enabled.
    pub fn release_guard(&self) -> Option<&FlyGraphql> {
        self.release_guard.as_ref()
    }

    /// The client.
    pub fn client(&self) -> &MachinesClient {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &FlyScalerConfig {
        &self.config
    }

    fn app(&self) -> &str {
        &self.config.app
    }

    /// Whether unlabelled machines count as the configured group, given the whole app.
    fn unlabelled_belong(&self, all: &[FlyMachine]) -> bool {
        match &self.config.process_group {
            None => true,
            Some(g) if g == DEFAULT_PROCESS_GROUP => {
                let groups: BTreeSet<&str> = all.iter().filter_map(group_of).collect();
                groups.iter().all(|x| x == g)
            }
            Some(_) => false,
        }
    }

    fn in_group(&self, m: &FlyMachine, unlabelled_belong: bool) -> bool {
        match (&self.config.process_group, group_of(m)) {
            (None, _) => true,
            (Some(g), Some(mg)) => g == mg,
            (Some(_), None) => unlabelled_belong,
        }
    }

    /// The machines of the app in the configured process group, as Fly reports them.
    ///
    /// # Errors
    /// Any [`FlyError`] of the list call.
    pub async fn list_fly(&self) -> std::result::Result<Vec<FlyMachine>, FlyError> {
        let all = self
            .client
            .list_machines(self.app(), &ListOptions::default())
            .await?;
        let unlabelled = self.unlabelled_belong(&all);
        Ok(all
            .into_iter()
            .filter(|m| self.in_group(m, unlabelled))
            .collect())
    }

    /// Converts a Fly machine to the core view (see the type docs for labels).
    pub fn to_core(&self, m: &FlyMachine) -> Machine {
        let mut out = Machine::new(m.id.as_str(), m.state.to_core());
        if !m.name.is_empty() {
            out.name = m.name.clone();
        }
        out.region = m.region.clone();
        out.created_at = m.created_at();
        out.address = m.private_ip.clone();
        out.manageable = manageable(m);
        let group = group_of(m)
            .map(str::to_owned)
            .or_else(|| self.config.process_group.clone());
        if let Some(g) = group {
            out.labels.insert("process_group".into(), g);
        }
        if let Some(image) = m.image_ref.as_ref().and_then(|r| r.full_ref()) {
            out.labels.insert("image".into(), image);
        }
        for (key, label) in [
            ("fly_release_id", "release_id"),
            ("fly_release_version", "release_version"),
        ] {
            if let Some(v) = m.metadata(key) {
                out.labels.insert(label.into(), v.to_owned());
            }
        }
        out.labels
            .insert("fly_state".into(), m.state.as_str().to_owned());
        if let Some(h) = &m.host_status {
            out.labels.insert("host_status".into(), h.clone());
        }
        out
    }

    fn not_found(&self, id: &str) -> Error {
        Error::not_found(format!("machine {id} of app {}", self.app()))
    }

    /// Reads one machine, mapping 404 and destroyed machines to `NotFound`, and refusing
    /// machines of other groups and unmanageable ones.
    async fn get_ours(&self, id: &MachineId) -> Result<FlyMachine> {
        let m = match self.client.get_machine(self.app(), id.as_str()).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Err(self.not_found(id.as_str())),
            Err(e) => return Err(e.into()),
        };
        if matches!(
            m.state,
            FlyState::Destroyed | FlyState::Destroying | FlyState::Replaced | FlyState::Migrated
        ) {
            return Err(self.not_found(id.as_str()));
        }
        let ours = match (&self.config.process_group, group_of(&m)) {
            (None, _) => true,
            (Some(g), Some(mg)) => g == mg,
            (Some(_), None) => {
                let all = self
                    .client
                    .list_machines(self.app(), &ListOptions::default())
                    .await
                    .map_err(Error::from)?;
                self.unlabelled_belong(&all)
            }
        };
        if !ours {
            return Err(FlyError::Refused {
                id: id.to_string(),
                reason: format!(
                    "it is in process group {:?}, not {:?}",
                    group_of(&m),
                    self.config.process_group
                ),
            }
            .into());
        }
        if !manageable(&m) {
            return Err(FlyError::Refused {
                id: id.to_string(),
                reason: format!(
                    "host_status is {:?} (only machines on healthy hosts are managed)",
                    m.host_status.as_deref().unwrap_or("?")
                ),
            }
            .into());
        }
        Ok(m)
    }

    fn pick_region(&self, template: &FlyMachine, requested: Option<&str>) -> Option<String> {
        if let Some(r) = requested {
            return Some(r.to_owned());
        }
        if !self.config.regions.is_empty() {
            let i = self.next_region.fetch_add(1, Ordering::Relaxed) % self.config.regions.len();
            return Some(self.config.regions[i].clone());
        }
        template.region.clone()
    }

    /// The machines a create is likely to clone, from a listing of the group and its core
    /// view (same order): the core planner's default template (the newest healthy machine)
    /// and [`FlyScaler::default_template`]'s pick. At most two.
    fn template_picks(ms: &[FlyMachine], core: &[Machine]) -> Vec<FlyMachine> {
        // The planner's rule (`fleetscale_core::plan`): manageable, existing, not heading to
        // failed or unknown; newest by creation time, then id.
        let planner = ms
            .iter()
            .zip(core)
            .filter(|(_, c)| {
                c.manageable
                    && c.state.exists()
                    && !matches!(
                        c.state.destination(),
                        Destination::Failed | Destination::Unknown
                    )
            })
            .max_by(|(_, a), (_, b)| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .map(|(m, _)| m);
        let mut picks: Vec<FlyMachine> = planner.into_iter().cloned().collect();
        if let Some(own) = Self::default_template(ms) {
            if picks.iter().all(|p| p.id != own.id) {
                picks.push(own.clone());
            }
        }
        picks
    }

    /// The template of a create that names none: the newest started healthy machine, else the
    /// newest healthy one. Over [`FlyScaler::template_picks`] it picks what it picks over the
    /// whole listing (that pick is one of them and the maximum of this rule).
    fn default_template(group: &[FlyMachine]) -> Option<&FlyMachine> {
        let healthy = |m: &&FlyMachine| {
            manageable(m)
                && !matches!(
                    m.state.to_core(),
                    MachineState::Destroying | MachineState::Destroyed | MachineState::Failed
                )
        };
        let newest = |a: &&FlyMachine, b: &&FlyMachine| {
            a.created_at().cmp(&b.created_at()).then(a.id.cmp(&b.id))
        };
        group
            .iter()
            .filter(healthy)
            .filter(|m| m.state == FlyState::Started)
            .max_by(newest)
            .or_else(|| group.iter().filter(healthy).max_by(newest))
    }

    /// Keeps the template picks of a fresh listing.
    fn remember_listing(&self, ms: &[FlyMachine], core: &[Machine]) {
        let picks = Self::template_picks(ms, core);
        lock(&self.templates).listed = Some((Instant::now(), picks));
    }

    /// Forgets every cached template (after a failed create).
    fn forget_templates(&self) {
        let mut cache = lock(&self.templates);
        cache.listed = None;
        cache.fetched.clear();
    }

    /// A usable cached template: `id` from the last listing's picks or from an earlier read,
    /// younger than the configured maximum age; with `id` `None`, the listing's picks.
    fn cached_template(&self, id: Option<&str>) -> CachedTemplate {
        let max_age = self.config.template_max_age;
        let mut cache = lock(&self.templates);
        if cache
            .listed
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= max_age)
        {
            cache.listed = None;
        }
        cache.fetched.retain(|_, (at, _)| at.elapsed() < max_age);
        let Some(id) = id else {
            return match &cache.listed {
                Some((_, picks)) => CachedTemplate::Picks(picks.clone()),
                None => CachedTemplate::None,
            };
        };
        // The same checks as `get_ours`; anything unusual is read afresh.
        let usable = |m: &FlyMachine| {
            m.id == id
                && manageable(m)
                && !matches!(
                    m.state,
                    FlyState::Destroyed
                        | FlyState::Destroying
                        | FlyState::Replaced
                        | FlyState::Migrated
                )
        };
        cache
            .listed
            .iter()
            .flat_map(|(_, picks)| picks.iter())
            .chain(cache.fetched.get(id).map(|(_, m)| m))
            .find(|m| usable(m))
            .map_or(CachedTemplate::None, |m| {
                CachedTemplate::One(Box::new(m.clone()))
            })
    }

    async fn template(&self, requested: Option<&MachineId>) -> Result<FlyMachine> {
        if let Some(id) = requested {
            if let CachedTemplate::One(m) = self.cached_template(Some(id.as_str())) {
                return Ok(*m);
            }
            let m = self.get_ours(id).await?;
            lock(&self.templates)
                .fetched
                .insert(m.id.clone(), (Instant::now(), m.clone()));
            return Ok(m);
        }
        let group = match self.cached_template(None) {
            CachedTemplate::Picks(picks) => picks,
            _ => {
                let ms = self.list_fly().await?;
                let core: Vec<Machine> = ms.iter().map(|m| self.to_core(m)).collect();
                self.remember_listing(&ms, &core);
                ms
            }
        };
        Self::default_template(&group).cloned().ok_or_else(|| {
            FlyError::NoTemplate {
                app: self.app().to_owned(),
                group: self
                    .config
                    .process_group
                    .clone()
                    .unwrap_or_else(|| "*".into()),
            }
            .into()
        })
    }

    /// Remembers a machine created to be started (see "Launching creates").
    fn note_launching(&self, id: &str) {
        let now = Instant::now();
        let grace = self.config.launch_grace;
        let mut launching = lock(&self.launching);
        launching.retain(|_, since| now.duration_since(*since) < grace);
        launching.insert(id.to_owned(), now);
    }

    /// Whether `id` is a machine created to be started that may still list as `created`.
    fn is_launching(&self, id: &str) -> bool {
        let grace = self.config.launch_grace;
        lock(&self.launching)
            .get(id)
            .is_some_and(|since| since.elapsed() < grace)
    }

    /// Forgets launching machines that left `created`, are gone or are past the grace time,
    /// given a fresh list of the group; returns the ids still launching.
    fn prune_launching(&self, listed: &[FlyMachine]) -> HashSet<String> {
        let mut launching = lock(&self.launching);
        if launching.is_empty() {
            return HashSet::new();
        }
        let created: HashSet<&str> = listed
            .iter()
            .filter(|m| m.state == FlyState::Created)
            .map(|m| m.id.as_str())
            .collect();
        let grace = self.config.launch_grace;
        launching.retain(|id, since| since.elapsed() < grace && created.contains(id.as_str()));
        launching.keys().cloned().collect()
    }

    /// [`FlyScaler::to_core`], with a launching machine reported as starting.
    fn to_core_launching(&self, m: &FlyMachine, launching: bool) -> Machine {
        let mut out = self.to_core(m);
        if launching && m.state == FlyState::Created {
            out.state = MachineState::Starting;
        }
        out
    }

    async fn suspend_after_create(&self, m: &FlyMachine) -> std::result::Result<(), FlyError> {
        let wait = WaitOptions::new("started", self.config.suspend_wait)
            .with_instance_id(m.instance_id.clone());
        self.client.wait_machine(self.app(), &m.id, &wait).await?;
        self.client.suspend_machine(self.app(), &m.id, None).await
    }
}

#[async_trait]
impl Scaler for FlyScaler {
    /// Suspend works; creates need a template; stopped creates use `skip_launch`.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            suspend: true,
            create_needs_template: true,
            create_stopped: true,
        }
    }

    /// One `GET /v1/apps/{app}/machines`, filtered to the process group. Machines this scaler
    /// created to be started that still list as `created` are reported as `starting` (see
    /// "Launching creates" in the type docs).
    async fn list(&self) -> Result<Vec<Machine>> {
        let ms = self.list_fly().await?;
        let launching = self.prune_launching(&ms);
        let out: Vec<Machine> = ms
            .iter()
            .map(|m| self.to_core_launching(m, launching.contains(&m.id)))
            .collect();
        self.remember_listing(&ms, &out);
        Ok(out)
    }

    /// With the deploy guard: one GraphQL query of the app's current release;
    /// `Some("release in progress")` while its status is `running`, `None` for any other
    /// status or when the app has no release. Without a guard: `None`, no call.
    ///
    /// # Errors
    /// The query's [`FlyError`] mapped onto the core classes (GraphQL errors by their
    /// `extensions.code`, e.g. an unknown app → `NotFound`), its message saying that the
    /// release check failed, at which URL, and that `FLY_API_BASE_URL` sets it.
    async fn paused(&self) -> Result<Option<String>> {
        let Some(guard) = &self.release_guard else {
            return Ok(None);
        };
        let release = guard
            .current_release(self.app())
            .await
            .map_err(|e| release_check_failed(guard.url(), e.into()))?;
        match release {
            Some(r) if r.is_running() => {
                tracing::debug!(app = %self.app(), version = ?r.version, "release in progress");
                Ok(Some(RELEASE_IN_PROGRESS.to_owned()))
            }
            _ => Ok(None),
        }
    }

    /// Clones the template (see the type docs): the template from the last list when it is
    /// recent, else one read of it; then one create call, repeated only when answered 429 (the
    /// request was not executed; see [`crate::client`]), so at most one machine is created.
    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        let template = self.template(request.template.as_ref()).await?;
        let mut config = template.config.clone().unwrap_or(Value::Null);
        let Some(obj) = config.as_object_mut() else {
            return Err(FlyError::Refused {
                id: template.id.clone(),
                reason: "its config is not an object and cannot be cloned".into(),
            }
            .into());
        };
        if let Some(pinned) = template
            .image_ref
            .as_ref()
            .filter(|r| !r.digest.is_empty())
            .and_then(|r| r.full_ref())
        {
            obj.insert("image".into(), Value::String(pinned));
        }
        if !request.labels.is_empty() {
            let meta = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if !meta.is_object() {
                *meta = Value::Object(Default::default());
            }
            if let Some(meta) = meta.as_object_mut() {
                for (k, v) in &request.labels {
                    meta.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let body = CreateMachineRequest {
            config,
            region: self.pick_region(&template, request.region.as_deref()),
            name: request.name.clone(),
            skip_launch: (request.initial_state == InitialState::Stopped).then_some(true),
            ..CreateMachineRequest::default()
        };
        let created = match self.client.create_machine(self.app(), &body).await {
            Ok(m) => m,
            Err(e) => {
                self.forget_templates();
                return Err(e.into());
            }
        };
        tracing::info!(app = %self.app(), id = %created.id, region = created.region.as_deref().unwrap_or(""),
            template = %template.id, initial_state = request.initial_state.as_str(), "machine created");
        let launching =
            request.initial_state == InitialState::Started && created.state == FlyState::Created;
        if launching {
            self.note_launching(&created.id);
        }
        if request.initial_state == InitialState::Suspended {
            if let Err(e) = self.suspend_after_create(&created).await {
                tracing::warn!(app = %self.app(), id = %created.id, error = %e,
                    "created machine could not be suspended; it is left as it is");
            }
            if let Ok(now) = self.client.get_machine(self.app(), &created.id).await {
                return Ok(self.to_core(&now));
            }
        }
        Ok(self.to_core_launching(&created, launching))
    }

    /// Starts (or resumes) a machine unless it is already started or starting (a machine this
    /// scaler created to be started that still lists `created` counts as starting).
    async fn start(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        if matches!(
            m.state,
            FlyState::Started | FlyState::Starting | FlyState::Restarting
        ) || (m.state == FlyState::Created && self.is_launching(id.as_str()))
        {
            return Ok(());
        }
        let nonce = self.held_lease(id.as_str());
        match self
            .client
            .start_machine(self.app(), id.as_str(), nonce.as_deref())
            .await
        {
            Ok(_) => Ok(()),
            Err(FlyError::PreconditionFailed { .. })
                if self.now_in(id, &["started", "starting"]).await =>
            {
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(self.not_found(id.as_str())),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops a running machine; a no-op for machines that are not running.
    async fn stop(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        match m.state {
            FlyState::Stopped
            | FlyState::Stopping
            | FlyState::Created
            | FlyState::Suspended
            | FlyState::Suspending
            | FlyState::Failed
            | FlyState::LaunchFailed => return Ok(()),
            _ => {}
        }
        let nonce = self.held_lease(id.as_str());
        match self
            .client
            .stop_machine(
                self.app(),
                id.as_str(),
                &StopRequest::default(),
                nonce.as_deref(),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(FlyError::PreconditionFailed { .. })
                if self.now_in(id, &["stopped", "stopping"]).await =>
            {
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(self.not_found(id.as_str())),
            Err(e) => Err(e.into()),
        }
    }

    /// Suspends a started machine; a no-op when it is suspended or suspending.
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        if matches!(m.state, FlyState::Suspended | FlyState::Suspending) {
            return Ok(());
        }
        let nonce = self.held_lease(id.as_str());
        match self
            .client
            .suspend_machine(self.app(), id.as_str(), nonce.as_deref())
            .await
        {
            Ok(()) => Ok(()),
            Err(FlyError::PreconditionFailed { .. })
                if self.now_in(id, &["suspended", "suspending"]).await =>
            {
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(self.not_found(id.as_str())),
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys exactly this machine under a lease (see the type docs).
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        let app = self.app();
        let ttl = self.config.lease_ttl;
        // Our own lease left by an earlier failed destroy is refreshed, not fought.
        let since = Instant::now();
        let acquired = match self.held_lease(id.as_str()) {
            Some(nonce) => {
                self.client
                    .refresh_lease(app, id.as_str(), &nonce, ttl)
                    .await
            }
            None => {
                self.client
                    .acquire_lease(app, id.as_str(), ttl, Some("fleetscale destroy"))
                    .await
            }
        };
        let mut lease = match acquired {
            Ok(l) if !l.nonce.is_empty() => HeldLease {
                nonce: l.nonce,
                since,
            },
            Ok(_) => {
                return Err(FlyError::UnexpectedState {
                    id: id.to_string(),
                    message: "the lease answer carries no nonce".into(),
                }
                .into())
            }
            Err(e) => {
                self.forget_lease(id.as_str());
                return Err(if e.is_not_found() {
                    self.not_found(id.as_str())
                } else {
                    e.into()
                });
            }
        };
        let result = self.destroy_leased(&m, &mut lease).await;
        match result {
            Ok(()) => {
                self.forget_lease(id.as_str());
                tracing::info!(app, id = %id, "machine destroyed");
                Ok(())
            }
            Err(e) => {
                match self
                    .client
                    .release_lease(app, id.as_str(), &lease.nonce)
                    .await
                {
                    Ok(()) => self.forget_lease(id.as_str()),
                    // Not (or no longer) ours: someone else holds the machine.
                    Err(FlyError::LeaseConflict { .. }) => self.forget_lease(id.as_str()),
                    Err(release) => {
                        tracing::warn!(app, id = %id, error = %release, ttl_seconds = ttl.as_secs_f64(),
                            "could not release lease after failed destroy; it expires by itself, and this scaler uses it until then");
                        self.keep_lease(id.as_str(), lease);
                    }
                }
                if e.is_not_found() {
                    Err(self.not_found(id.as_str()))
                } else {
                    Err(e.into())
                }
            }
        }
    }
}

/// A lease this scaler holds: its nonce and when it was (re)acquired (the request was sent at
/// or after this instant, so the lease lives at least `lease_ttl` from it).
#[derive(Clone, Debug)]
struct HeldLease {
    nonce: String,
    since: Instant,
}

impl FlyScaler {
    /// The steps of a destroy under `lease`: cordon, graceful stop and wait (refreshing the
    /// lease whenever half its TTL has passed), delete with the nonce.
    async fn destroy_leased(
        &self,
        m: &FlyMachine,
        lease: &mut HeldLease,
    ) -> std::result::Result<(), FlyError> {
        let app = self.app();
        let id = m.id.as_str();
        let policy = &self.config.destroy;
        let running = matches!(
            m.state,
            FlyState::Started | FlyState::Starting | FlyState::Restarting | FlyState::Stopping
        );
        if running && policy.cordon {
            self.client.cordon(app, id, Some(&lease.nonce)).await?;
        }
        if running && policy.stop_first {
            if m.state != FlyState::Stopping {
                self.keep_alive(id, lease).await?;
                let stop = StopRequest {
                    signal: policy.stop_signal.clone(),
                    timeout: policy
                        .stop_timeout
                        .map(|d| format!("{}s", d.as_secs().max(1))),
                };
                match self
                    .client
                    .stop_machine(app, id, &stop, Some(&lease.nonce))
                    .await
                {
                    Ok(()) | Err(FlyError::PreconditionFailed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            // Wait in chunks of half the lease TTL (at least 1 s, the API's unit), refreshing
            // the lease in between, so a stop slower than the TTL keeps the machine leased.
            let deadline = Instant::now() + policy.stop_wait.min(MAX_WAIT);
            let chunk = Duration::from_secs((self.config.lease_ttl.as_secs() / 2).max(1));
            loop {
                self.keep_alive(id, lease).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = WaitOptions::new("stopped", left.min(chunk))
                    .with_instance_id(m.instance_id.clone());
                match self.client.wait_machine(app, id, &wait).await {
                    Ok(_) => break,
                    Err(FlyError::WaitTimeout { .. }) if Instant::now() < deadline => {}
                    Err(FlyError::WaitTimeout { .. }) if policy.force => break,
                    Err(e) => return Err(e),
                }
            }
        }
        self.keep_alive(id, lease).await?;
        let options = DestroyOptions {
            force: policy.force,
            kill: false,
        };
        self.client
            .destroy_machine(app, id, options, Some(&lease.nonce))
            .await
    }

    /// Refreshes `lease` when half its TTL has passed (no call otherwise).
    async fn keep_alive(
        &self,
        id: &str,
        lease: &mut HeldLease,
    ) -> std::result::Result<(), FlyError> {
        let ttl = self.config.lease_ttl;
        if lease.since.elapsed() < ttl / 2 {
            return Ok(());
        }
        let since = Instant::now();
        let fresh = self
            .client
            .refresh_lease(self.app(), id, &lease.nonce, ttl)
            .await?;
        if !fresh.nonce.is_empty() {
            lease.nonce = fresh.nonce;
        }
        lease.since = since;
        Ok(())
    }

    /// The nonce of a lease this scaler still holds on `id` (left by a failed destroy whose
    /// release failed), while it has not expired.
    fn held_lease(&self, id: &str) -> Option<String> {
        let ttl = self.config.lease_ttl;
        let mut leases = lock(&self.leases);
        leases.retain(|_, l| l.since.elapsed() < ttl);
        leases.get(id).map(|l| l.nonce.clone())
    }

    fn keep_lease(&self, id: &str, lease: HeldLease) {
        lock(&self.leases).insert(id.to_owned(), lease);
    }

    fn forget_lease(&self, id: &str) {
        lock(&self.leases).remove(id);
    }

    /// Whether the machine is now in one of `states` (used after a 412 race).
    async fn now_in(&self, id: &MachineId, states: &[&str]) -> bool {
        match self.client.get_machine(self.app(), id.as_str()).await {
            Ok(m) => states.contains(&m.state.as_str()),
            Err(_) => false,
        }
    }
}
/// The error of a failed release check, with what was checked and how to point it elsewhere;
/// the class (and so the metric label) is kept.
fn release_check_failed(url: &url::Url, e: fleetscale_core::Error) -> fleetscale_core::Error {
    use fleetscale_core::Error as E;
    let hint = format!(
        "release check at {url} failed (its base URL is FLY_API_BASE_URL, default {})",
        crate::graphql::DEFAULT_GRAPHQL_BASE_URL
    );
    match e {
        E::Unavailable { message, source } => E::Unavailable {
            message: format!("{hint}: {message}"),
            source,
        },
        E::Unauthorized { message } => E::Unauthorized {
            message: format!("{hint}: {message}"),
        },
        E::NotFound { what } => E::NotFound {
            what: format!("{what} ({hint})"),
        },
        E::Timeout { operation, after } => E::Timeout {
            operation: format!("{hint}: {operation}"),
            after,
        },
        E::InvalidResponse {
            context,
            message,
            source,
        } => E::InvalidResponse {
            context,
            message: format!("{hint}: {message}"),
            source,
        },
        E::InvalidRequest { message } => E::InvalidRequest {
            message: format!("{hint}: {message}"),
        },
        E::Backend {
            message,
            retryable,
            source,
        } => E::Backend {
            message: format!("{hint}: {message}"),
            retryable,
            source,
        },
        other => E::Backend {
            message: format!("{hint}: {other}"),
            retryable: other.is_retryable(),
            source: Some(Box::new(other)),
        },
    }
}
