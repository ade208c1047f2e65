//! [`FlyScaler`]: the core [`Scaler`] for one Fly app and process group: a translation of the
//! trait's calls into Machines API calls. Its leased destroy is in [`destroy`].

mod destroy;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{
    Capabilities, CreateRequest, Detail, Error, InitialState, Machine, MachineId, MachineState,
    Result, Scaler,
};
use serde_json::Value;

use crate::client::{MachinesClient, WaitOptions};
use crate::error::FlyError;
use crate::graphql::FlyGraphql;
use crate::types::{CreateMachineRequest, FlyMachine, FlyState, ListOptions, StopRequest};
use destroy::LeftLeases;

/// The reason [`FlyScaler::paused`](Scaler::paused) gives while a deploy is in progress.
pub const RELEASE_IN_PROGRESS: &str = "release in progress";

/// The process group fly-autoscaler and `fly deploy` use by default.
pub const DEFAULT_PROCESS_GROUP: &str = "app";

/// Default of [`FlyScalerConfig::lease_ttl`]: 10 s, shorter than the default engine interval
/// (15 s), so a lease left behind by a destroy that failed and could not release it has expired
/// before the next tick. Destroys refresh it while they wait for a stop, so the TTL does not
/// bound how long a destroy may take.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

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
/// See [`FlyState::to_core`] for the full table of the 17 Fly states. States are reported as
/// the API lists them: right after `POST /v1/apps/{app}/machines` without `skip_launch`, Fly
/// lists the new machine as `created` before `starting`; the engine, which remembers the
/// creates it sent, counts it as starting meanwhile (see `fleetscale_core::engine::pending`).
///
/// # Manageable
/// Machines whose `host_status` is not `ok` (or whose config is `null`) are listed with
/// [`Machine::manageable`] `false`: reported, counted as unmanageable, and every operation
/// on them is refused ([`Error::Refused`]).
///
/// # Labels and detail
/// `process_group` (effective group), `image` (`registry/repository:tag@digest`),
/// `release_id`, `release_version` (from metadata), `fly_state` (the raw Fly state) and
/// `host_status`. The address is the 6PN `private_ip`. Each listed machine carries the
/// [`FlyMachine`] as read, as its [`Machine::detail`], so that a create cloning it needs no
/// second read.
///
/// # Operations
/// - `create` clones the template machine's config with `config.image` pinned to the exact
///   `image_ref` digest, so scale-ups never pick up a different image. The template is the
///   request's, as listed (its [`FlyMachine`] detail, no read), read once when the request
///   names a machine without that detail, or else the newest healthy machine of the group,
///   started ones first (one list). Region from the request, else the configured regions
///   round-robin, else the template's. Initial state `started`, `stopped` (`skip_launch`, the
///   machine stays `created`) or `suspended` (created started, waited for `started`, then
///   suspended; if that wait or suspend fails the machine is returned as it is, with a
///   warning). Retried only when answered 429 (not executed, see [`crate::client`]), never
///   after other errors.
/// - `start`/`stop`/`suspend` read the machine first and do nothing when it is already there
///   or on its way (idempotent); `stop` of a suspended, created or failed machine is a no-op
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
    /// Leases left by failed destroys whose release failed (see "Leases" above).
    leases: LeftLeases,
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

/// Whether a machine as read can be acted on or cloned: manageable, and not on its way out.
fn usable(m: &FlyMachine) -> bool {
    manageable(m)
        && !matches!(
            m.state,
            FlyState::Destroyed | FlyState::Destroying | FlyState::Replaced | FlyState::Migrated
        )
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
            leases: LeftLeases::default(),
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

    /// The Machines API client it calls (shared by clones, with their pacing).
    pub fn client(&self) -> &MachinesClient {
        &self.client
    }

    /// The app, process group, regions and destroy settings it was built with.
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

    /// [`FlyScaler::to_core`], carrying the machine as read as its detail.
    fn listed(&self, m: FlyMachine) -> Machine {
        self.to_core(&m).with_detail(Detail::new(m))
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

    /// The template of a create that names none: the newest started healthy machine, else the
    /// newest healthy one.
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

    /// The machine a create clones: the requested one as listed (its [`FlyMachine`] detail,
    /// when usable), else read once; with none requested, [`FlyScaler::default_template`] of a
    /// fresh listing.
    async fn template(&self, requested: Option<&Machine>) -> Result<FlyMachine> {
        if let Some(m) = requested {
            let listed = m
                .detail
                .as_ref()
                .and_then(Detail::downcast_ref::<FlyMachine>);
            return match listed {
                Some(fly) if fly.id == m.id.as_str() && usable(fly) => Ok(fly.clone()),
                _ => self.get_ours(&m.id).await,
            };
        }
        let group = self.list_fly().await?;
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
        Capabilities::default()
            .with_suspend(true)
            .with_create_needs_template(true)
            .with_create_stopped(true)
    }

    /// One `GET /v1/apps/{app}/machines`, filtered to the process group; each machine carries
    /// what was read as its detail.
    async fn list(&self) -> Result<Vec<Machine>> {
        let ms = self.list_fly().await?;
        Ok(ms.into_iter().map(|m| self.listed(m)).collect())
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

    /// Clones the template (see the type docs): as listed when the request carries it, else one
    /// read of it; then one create call, repeated only when answered 429 (the request was not
    /// executed; see [`crate::client`]), so at most one machine is created.
    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        let template = self.template(request.template.as_deref()).await?;
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
        let created = self.client.create_machine(self.app(), &body).await?;
        tracing::info!(app = %self.app(), id = %created.id, region = created.region.as_deref().unwrap_or(""),
            template = %template.id, initial_state = request.initial_state.as_str(), "machine created");
        if request.initial_state == InitialState::Suspended {
            if let Err(e) = self.suspend_after_create(&created).await {
                tracing::warn!(app = %self.app(), id = %created.id, error = %e,
                    "created machine could not be suspended; it is left as it is");
            }
            if let Ok(now) = self.client.get_machine(self.app(), &created.id).await {
                return Ok(self.listed(now));
            }
        }
        Ok(self.listed(created))
    }

    /// Starts (or resumes) a machine unless it is already started or starting.
    async fn start(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        if matches!(
            m.state,
            FlyState::Started | FlyState::Starting | FlyState::Restarting
        ) {
            return Ok(());
        }
        let nonce = self.leases.nonce(id.as_str(), self.config.lease_ttl);
        let result = self
            .client
            .start_machine(self.app(), id.as_str(), nonce.as_deref())
            .await
            .map(drop);
        self.settle(id, result, &["started", "starting"]).await
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
        let nonce = self.leases.nonce(id.as_str(), self.config.lease_ttl);
        let result = self
            .client
            .stop_machine(
                self.app(),
                id.as_str(),
                &StopRequest::default(),
                nonce.as_deref(),
            )
            .await;
        self.settle(id, result, &["stopped", "stopping"]).await
    }

    /// Suspends a started machine; a no-op when it is suspended or suspending.
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        let m = self.get_ours(id).await?;
        if matches!(m.state, FlyState::Suspended | FlyState::Suspending) {
            return Ok(());
        }
        let nonce = self.leases.nonce(id.as_str(), self.config.lease_ttl);
        let result = self
            .client
            .suspend_machine(self.app(), id.as_str(), nonce.as_deref())
            .await;
        self.settle(id, result, &["suspended", "suspending"]).await
    }

    /// Destroys exactly this machine under a lease (see the type docs).
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.destroy_leased(id).await
    }
}

impl FlyScaler {
    /// The outcome of a start, stop or suspend call: a 412 is success when the machine is now
    /// in one of `settled` (another actor got there first), a 404 names the machine, any other
    /// error maps to the core error.
    async fn settle(
        &self,
        id: &MachineId,
        result: std::result::Result<(), FlyError>,
        settled: &[&str],
    ) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(FlyError::PreconditionFailed { .. }) if self.now_in(id, settled).await => Ok(()),
            Err(e) if e.is_not_found() => Err(self.not_found(id.as_str())),
            Err(e) => Err(e.into()),
        }
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
fn release_check_failed(url: &url::Url, e: Error) -> Error {
    e.context(format!(
        "release check at {url} failed (its base URL is FLY_API_BASE_URL, default {})",
        crate::graphql::DEFAULT_GRAPHQL_BASE_URL
    ))
}
