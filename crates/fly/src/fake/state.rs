//! The fake's state: apps, machines, leases, faults and the request log.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::pacing::Rate;
use crate::token::FlyToken;
use crate::types::{FlyMachine, FlyState, ImageRef};

/// How long each transition takes in the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    /// `created → starting` after a create without `skip_launch`.
    pub create: Duration,
    /// `starting → started`.
    pub start: Duration,
    /// `stopping → stopped`.
    pub stop: Duration,
    /// `suspending → suspended`.
    pub suspend: Duration,
    /// `destroying → destroyed`.
    pub destroy: Duration,
}

impl Delays {
    /// Every transition instant (the state still passes through `created`/`starting`/...
    /// in the API answer of the call itself).
    pub const ZERO: Delays = Delays {
        create: Duration::ZERO,
        start: Duration::ZERO,
        stop: Duration::ZERO,
        suspend: Duration::ZERO,
        destroy: Duration::ZERO,
    };

    /// Every transition takes `d`.
    pub fn uniform(d: Duration) -> Delays {
        Delays {
            create: d,
            start: d,
            stop: d,
            suspend: d,
            destroy: d,
        }
    }
}

impl Default for Delays {
    /// Short but visible transitions: 100 ms each.
    fn default() -> Self {
        Delays::uniform(Duration::from_millis(100))
    }
}

/// Server-side rate limits of the fake (Fly's documented numbers by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FakeRateLimits {
    /// Per action and machine (start, stop, suspend, destroy, wait, lease, cordon).
    pub machine_action: Rate,
    /// `GET` of one machine.
    pub get_machine: Rate,
    /// Creates per app.
    pub create: Rate,
    /// Listing machines per app, listing apps per org.
    pub app_action: Rate,
}

impl Default for FakeRateLimits {
    fn default() -> Self {
        FakeRateLimits {
            machine_action: Rate::new(1.0, 3),
            get_machine: Rate::new(5.0, 10),
            create: Rate::new(1.0, 3),
            app_action: Rate::new(1.0, 3),
        }
    }
}

/// Settings of the fake.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// When set, every call but `/metrics` must carry exactly the `Authorization` header this
    /// token produces (see [`FlyToken::authorization_header`]); otherwise 401. When `None`, any
    /// or no `Authorization` is accepted.
    pub token: Option<FlyToken>,
    /// Transition times.
    pub delays: Delays,
    /// Server-side rate limits; `None` disables them.
    pub rate_limits: Option<FakeRateLimits>,
    /// Region of machines created without one and without a template region.
    pub default_region: String,
}

impl Default for FakeConfig {
    /// No auth, 100 ms transitions, Fly's rate limits, region `iad`.
    fn default() -> Self {
        FakeConfig {
            token: None,
            delays: Delays::default(),
            rate_limits: Some(FakeRateLimits::default()),
            default_region: "iad".into(),
        }
    }
}

impl FakeConfig {
    /// For fast tests: instant transitions and no rate limits.
    pub fn instant() -> Self {
        FakeConfig {
            delays: Delays::ZERO,
            rate_limits: None,
            ..FakeConfig::default()
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status with this body (the request is not executed).
    Status {
        /// HTTP status.
        status: u16,
        /// Body (JSON or not).
        body: String,
    },
    /// Answer 429 with this `Retry-After` header value (`None`: no header).
    RateLimited {
        /// Raw header value: seconds or an HTTP date.
        retry_after: Option<String>,
    },
    /// Delay the request, then execute it normally.
    Latency(Duration),
    /// Never answer (until the server shuts down): the client's timeout must fire.
    Hang,
    /// Answer 200 with a body that is not valid JSON (the request is not executed).
    Malformed,
    /// Send 200 headers, then abort the connection before the body (the request is not
    /// executed). The client sees a transport error.
    DropConnection,
}

/// A fault applied to the next `times` requests matching `method` and `path_contains`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Only this method (`GET`, `POST`, ...), any when `None`.
    pub method: Option<String>,
    /// Only paths containing this, any when `None`.
    pub path_contains: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// How many matching requests it applies to.
    pub times: u32,
}

impl Fault {
    /// A fault for any request, once.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            method: None,
            path_contains: None,
            kind,
            times: 1,
        }
    }

    /// Only for this method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    /// Only for paths containing `p`.
    pub fn path(mut self, p: &str) -> Self {
        self.path_contains = Some(p.to_owned());
        self
    }

    /// For `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// Status answered (0 when the connection was dropped or hung).
    pub status: u16,
    /// When it arrived.
    pub at: SystemTime,
    /// The `fly-request-id` answered.
    pub request_id: String,
    /// The `fly-machine-lease-nonce` header sent, if any.
    pub nonce: Option<String>,
    /// The `User-Agent` header sent, if any: tells apart the clients of one fake (replicas of
    /// an autoscaler sharing it).
    pub user_agent: Option<String>,
}

/// An error answer: status and Fly-shaped JSON body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiErr {
    pub status: u16,
    pub body: Value,
}

impl ApiErr {
    pub(crate) fn new(status: u16, error: impl Into<String>) -> Self {
        ApiErr {
            status,
            body: json!({ "error": error.into(), "status": "unknown" }),
        }
    }

    fn with_status(status: u16, error: impl Into<String>, class: &str) -> Self {
        ApiErr {
            status,
            body: json!({ "error": error.into(), "status": class }),
        }
    }
}

pub(crate) type ApiResult = Result<(u16, Value), ApiErr>;

#[derive(Clone, Debug)]
struct FakeLease {
    nonce: String,
    owner: String,
    description: String,
    expires: SystemTime,
}

#[derive(Clone, Debug)]
struct FakeMachine {
    m: FlyMachine,
    pending: VecDeque<(FlyState, Instant)>,
    lease: Option<FakeLease>,
}

#[derive(Clone, Debug)]
struct FakeApp {
    id: String,
    name: String,
    org: String,
    machines: BTreeMap<String, FakeMachine>,
    /// The current release (`currentReleaseUnprocessed`); `None` until the first one.
    release: Option<FakeRelease>,
}

/// An app's current release as the fake's GraphQL API reports it
/// (`app { currentReleaseUnprocessed { … } }`). Set with [`FakeFly::set_release_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRelease {
    /// Release ID.
    pub id: String,
    /// Version, 1 for the app's first release.
    pub version: u64,
    /// `running` during a deploy; `complete`, `failed`, `interrupted` after (flyctl's values).
    pub status: String,
    /// Description.
    pub description: String,
    /// Reason (`deploy`).
    pub reason: String,
    /// Image.
    pub image_ref: String,
    /// Whether it is stable (`complete`).
    pub stable: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// What the GraphQL resolver sees of an app.
#[derive(Clone, Debug)]
pub(crate) struct GqlApp {
    pub id: String,
    pub name: String,
    pub org: String,
    pub release: Option<FakeRelease>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: FakeConfig,
    apps: BTreeMap<String, FakeApp>,
    log: Vec<RequestRecord>,
    faults: Vec<Fault>,
    capacity_failures: u32,
    next_id: u64,
    next_request: u64,
    buckets: HashMap<(String, String), Bucket>,
}

/// A handle on the fake's state, shared with its server: seed apps and machines, read state
/// directly, simulate the Fly Proxy, inject faults, read the request log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FakeFly {
    inner: Arc<Mutex<Inner>>,
}

fn random_hex(len: usize) -> String {
    let mut s = String::new();
    let mut n = 0u64;
    while s.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        n += 1;
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s.truncate(len);
    s
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses `registry/repository:tag@digest` into an [`ImageRef`]; a missing digest is made up
/// deterministically from the reference, as a registry would resolve a tag.
fn image_ref_of(image: &str) -> ImageRef {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, d.to_owned()),
        None => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(image.as_bytes());
            (
                image,
                format!("sha256:{:016x}{:016x}", h.finish(), h.finish() ^ 0x5a5a),
            )
        }
    };
    // The registry is the first component if it looks like a host.
    let (registry, path) = match rest.split_once('/') {
        Some((first, p)) if first.contains('.') || first.contains(':') => {
            (first.to_owned(), p.to_owned())
        }
        _ => ("docker.io".to_owned(), rest.to_owned()),
    };
    let (repository, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_owned(), t.to_owned()),
        _ => (path, "latest".to_owned()),
    };
    ImageRef {
        registry,
        repository,
        tag,
        digest,
        labels: BTreeMap::new(),
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl FakeFly {
    /// An empty fake (no apps).
    pub fn new(config: FakeConfig) -> Self {
        FakeFly {
            inner: Arc::new(Mutex::new(Inner {
                config,
                apps: BTreeMap::new(),
                log: Vec::new(),
                faults: Vec::new(),
                capacity_failures: 0,
                next_id: 0,
                next_request: 0,
                buckets: HashMap::new(),
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The configuration.
    pub fn config(&self) -> FakeConfig {
        self.lock().config.clone()
    }

    /// Changes transition times from now on.
    pub fn set_delays(&self, delays: Delays) {
        self.lock().config.delays = delays;
    }

    /// Turns server-side rate limits on (`Some`) or off.
    pub fn set_rate_limits(&self, limits: Option<FakeRateLimits>) {
        let mut g = self.lock();
        g.config.rate_limits = limits;
        g.buckets.clear();
    }

    /// Creates an app directly (as `POST /v1/apps` would). Idempotent.
    pub fn create_app(&self, name: &str, org_slug: &str) {
        let _ = self.lock().create_app(name, org_slug);
    }

    /// Adds a machine exactly as given (for unusual states: `host_status: unreachable`,
    /// `config: null`, unknown states). The app is created in org `personal` if missing.
    pub fn insert_machine(&self, app: &str, machine: FlyMachine) {
        let mut g = self.lock();
        if !g.apps.contains_key(app) {
            let _ = g.create_app(app, "personal");
        }
        if let Some(a) = g.apps.get_mut(app) {
            a.machines.insert(
                machine.id.clone(),
                FakeMachine {
                    m: machine,
                    pending: VecDeque::new(),
                    lease: None,
                },
            );
        }
    }

    /// A machine as the API would show it now (destroyed ones included), or `None`.
    pub fn machine(&self, app: &str, id: &str) -> Option<FlyMachine> {
        let mut g = self.lock();
        g.advance();
        g.apps.get(app)?.machines.get(id).map(|m| m.m.clone())
    }

    /// The machines of an app that are not destroyed, in id order.
    pub fn machines(&self, app: &str) -> Vec<FlyMachine> {
        let mut g = self.lock();
        g.advance();
        g.apps
            .get(app)
            .map(|a| {
                a.machines
                    .values()
                    .filter(|m| m.m.state != FlyState::Destroyed)
                    .map(|m| m.m.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state of a machine now.
    pub fn state(&self, app: &str, id: &str) -> Option<FlyState> {
        self.machine(app, id).map(|m| m.state)
    }

    /// Sets a machine's state directly, cancelling any transition in flight.
    pub fn set_state(&self, app: &str, id: &str, state: FlyState) -> bool {
        let mut g = self.lock();
        match g.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) {
            Some(m) => {
                m.m.state = state;
                m.pending.clear();
                true
            }
            None => false,
        }
    }

    /// Sets a machine's `host_status` (`ok`, `unknown`, `unreachable`); for anything but `ok`
    /// the config is reported as `null`, as Fly does for unreachable hosts.
    pub fn set_host_status(&self, app: &str, id: &str, status: &str) -> bool {
        let mut g = self.lock();
        match g.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) {
            Some(m) => {
                m.m.host_status = Some(status.to_owned());
                if status != "ok" {
                    if m.m.incomplete_config.is_none() {
                        m.m.incomplete_config = m.m.config.take();
                    }
                } else if m.m.config.is_none() {
                    m.m.config = m.m.incomplete_config.take();
                }
                true
            }
            None => false,
        }
    }

    /// Simulates the Fly Proxy autostarting a machine on incoming traffic: a `stopped`,
    /// `suspended` or `created` machine goes `starting → started`. Ignores leases, as the
    /// proxy does. Returns whether it started something.
    pub fn proxy_autostart(&self, app: &str, id: &str) -> bool {
        let mut g = self.lock();
        g.advance();
        let delays = g.config.delays;
        let now = Instant::now();
        match g.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) {
            Some(m)
                if matches!(
                    m.m.state,
                    FlyState::Stopped | FlyState::Suspended | FlyState::Created
                ) =>
            {
                m.m.state = FlyState::Starting;
                m.pending = VecDeque::from([(FlyState::Started, now + delays.start)]);
                push_event(&mut m.m, "start", "started", "proxy");
                true
            }
            _ => false,
        }
    }

    /// Simulates the Fly Proxy autostopping a started machine.
    pub fn proxy_autostop(&self, app: &str, id: &str) -> bool {
        let mut g = self.lock();
        g.advance();
        let delays = g.config.delays;
        let now = Instant::now();
        match g.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) {
            Some(m) if m.m.state == FlyState::Started => {
                m.m.state = FlyState::Stopping;
                m.pending = VecDeque::from([(FlyState::Stopped, now + delays.stop)]);
                push_event(&mut m.m, "exit", "stopped", "proxy");
                true
            }
            _ => false,
        }
    }

    /// Sets the status of `app`'s current release, as `fly deploy` does through the GraphQL API:
    /// - `None`: the app has no release (its machines were created with the Machines API
    ///   only); the API answers `currentReleaseUnprocessed: null`. This is the default.
    /// - `Some(status)`: with no release yet, release v1 gets `status`; when the current
    ///   release is `running` (or already has `status`), its status changes; otherwise (a
    ///   finished release and a new status) a new release, one version up, begins, as a new
    ///   deploy does. So `Some("running")` then `Some("complete")` is one deploy.
    ///
    /// Returns `false` when the app does not exist.
    pub fn set_release_status(&self, app: &str, status: Option<&str>) -> bool {
        let mut g = self.lock();
        let Some(a) = g.apps.get_mut(app) else {
            return false;
        };
        let Some(status) = status else {
            a.release = None;
            return true;
        };
        let image = a
            .machines
            .values()
            .filter_map(|m| m.m.config.as_ref()?.get("image")?.as_str())
            .next_back()
            .unwrap_or("registry.fly.io/app:deployment-1")
            .to_owned();
        match &mut a.release {
            Some(r) if r.status == "running" || r.status == status => {
                r.status = status.to_owned();
                r.stable = status == "complete";
            }
            current => {
                let version = current.as_ref().map_or(1, |r| r.version + 1);
                *current = Some(FakeRelease {
                    id: format!("rel_{}", random_hex(12)),
                    version,
                    status: status.to_owned(),
                    description: "Deploy image".into(),
                    reason: "deploy".into(),
                    image_ref: image,
                    stable: status == "complete",
                    created_at: crate::time::format_rfc3339(SystemTime::now()),
                });
            }
        }
        true
    }

    /// The current release of `app`, if any.
    pub fn release(&self, app: &str) -> Option<FakeRelease> {
        self.lock().apps.get(app)?.release.clone()
    }

    /// The next `n` creates fail with `insufficient_capacity`.
    pub fn fail_next_creates(&self, n: u32) {
        self.lock().capacity_failures = n;
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// A copy of the request log.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.lock().log.clear();
    }

    /// How many logged requests have this method and a path ending with `path_suffix`.
    pub fn count_requests(&self, method: &str, path_suffix: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(path_suffix))
            .count()
    }

    /// The `/metrics` page: `fly_instance_up{app,region,instance} 1` per started machine.
    pub fn metrics_text(&self) -> String {
        let mut g = self.lock();
        g.advance();
        let mut out = String::from(
            "# HELP fly_instance_up Whether the instance is up (fleetscale fake).\n# TYPE fly_instance_up gauge\n",
        );
        for app in g.apps.values() {
            for m in app.machines.values() {
                if m.m.state == FlyState::Started {
                    out.push_str(&format!(
                        "fly_instance_up{{app=\"{}\",region=\"{}\",instance=\"{}\"}} 1\n",
                        escape_label(&app.name),
                        escape_label(m.m.region.as_deref().unwrap_or("")),
                        escape_label(&m.m.id)
                    ));
                }
            }
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn push_event(m: &mut FlyMachine, kind: &str, status: &str, source: &str) {
    m.events.insert(
        0,
        crate::types::MachineEvent {
            id: Some(random_hex(26).to_ascii_uppercase()),
            kind: Some(kind.into()),
            status: Some(status.into()),
            source: Some(source.into()),
            timestamp: Some(millis(SystemTime::now())),
            request: None,
        },
    );
    m.events.truncate(10);
}

fn machine_json(m: &FlyMachine, summary: bool) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, val| !val.is_null());
        if m.config.is_none() {
            // Fly answers an explicit `config: null` for machines on unreachable hosts.
            obj.insert("config".into(), Value::Null);
        }
        if summary {
            for k in [
                "config",
                "checks",
                "events",
                "host_status",
                "nonce",
                "incomplete_config",
            ] {
                obj.remove(k);
            }
        }
    }
    v
}

impl Inner {
    /// Applies every transition whose time has come.
    pub(crate) fn advance(&mut self) {
        let now = Instant::now();
        for app in self.apps.values_mut() {
            for m in app.machines.values_mut() {
                while let Some((state, at)) = m.pending.front() {
                    if *at > now {
                        break;
                    }
                    m.m.state = state.clone();
                    if *state == FlyState::Destroyed {
                        m.lease = None;
                    }
                    m.m.updated_at = Some(crate::time::format_rfc3339(SystemTime::now()));
                    m.pending.pop_front();
                }
            }
        }
    }

    pub(crate) fn next_request_id(&mut self) -> String {
        self.next_request += 1;
        format!("fake-{:08}-{}", self.next_request, random_hex(8))
    }

    pub(crate) fn log(&mut self, record: RequestRecord) {
        self.log.push(record);
    }

    /// The fault for this request, if any (consumes one use).
    pub(crate) fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let idx = self.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| m == method)
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let f = &mut self.faults[idx];
        f.times -= 1;
        let kind = f.kind.clone();
        if f.times == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }

    /// Server-side rate limiting: `Some(retry_after_secs)` when over the limit.
    pub(crate) fn rate_limited(&mut self, method: &str, path: &str) -> Option<u64> {
        let limits = self.config.rate_limits?;
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (action, scope, rate) = match (method, segs.as_slice()) {
            ("GET", ["v1", "apps"]) => ("apps".to_owned(), "org".to_owned(), limits.app_action),
            ("GET", ["v1", "apps", app]) => {
                ("get_app".into(), (*app).to_owned(), limits.app_action)
            }
            ("GET", ["v1", "apps", app, "machines"]) => {
                ("list".into(), (*app).to_owned(), limits.app_action)
            }
            ("POST", ["v1", "apps", app, "machines"]) => {
                ("create".into(), (*app).to_owned(), limits.create)
            }
            ("GET", ["v1", "apps", _, "machines", id]) => {
                ("get".into(), (*id).to_owned(), limits.get_machine)
            }
            ("DELETE", ["v1", "apps", _, "machines", id]) => {
                ("destroy".into(), (*id).to_owned(), limits.machine_action)
            }
            (m, ["v1", "apps", _, "machines", id, action]) => (
                format!("{m} {action}"),
                (*id).to_owned(),
                limits.machine_action,
            ),
            _ => return None,
        };
        let now = Instant::now();
        let per_second = rate.per_second.max(0.001);
        let burst = f64::from(rate.burst.max(1));
        let b = self.buckets.entry((action, scope)).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Checks the `Authorization` header: the Machines API form of the token
    /// ([`FlyToken::authorization_header`]), or for `/graphql` the GraphQL form
    /// ([`FlyToken::graphql_authorization_header`]).
    pub(crate) fn check_auth(&self, header: Option<&str>, graphql: bool) -> Result<(), ApiErr> {
        match &self.config.token {
            None => Ok(()),
            Some(t) => {
                let want = if graphql {
                    t.graphql_authorization_header()
                } else {
                    t.authorization_header()
                };
                if header == Some(want.as_str()) {
                    Ok(())
                } else {
                    Err(ApiErr::new(401, "Authenticate: token validation error"))
                }
            }
        }
    }

    /// A snapshot of an app for the GraphQL resolver.
    pub(crate) fn gql_app(&self, name: &str) -> Option<GqlApp> {
        let a = self.apps.get(name)?;
        Some(GqlApp {
            id: a.id.clone(),
            name: a.name.clone(),
            org: a.org.clone(),
            release: a.release.clone(),
        })
    }

    fn create_app(&mut self, name: &str, org: &str) -> ApiResult {
        if name.is_empty() || org.is_empty() {
            return Err(ApiErr::new(422, "app_name and org_slug are required"));
        }
        if self.apps.contains_key(name) {
            return Err(ApiErr::with_status(
                422,
                "Validation failed: Name has already been taken",
                "name_taken",
            ));
        }
        let id = random_hex(12);
        self.apps.insert(
            name.to_owned(),
            FakeApp {
                id: id.clone(),
                name: name.to_owned(),
                org: org.to_owned(),
                machines: BTreeMap::new(),
                release: None,
            },
        );
        Ok((201, app_json(&id, name, org)))
    }

    pub(crate) fn api_create_app(&mut self, body: &Value) -> ApiResult {
        let name = body.get("app_name").and_then(Value::as_str).unwrap_or("");
        let org = body.get("org_slug").and_then(Value::as_str).unwrap_or("");
        self.create_app(name, org)
    }

    pub(crate) fn api_get_app(&mut self, app: &str) -> ApiResult {
        let a = self.app(app)?;
        Ok((200, app_json(&a.id, &a.name, &a.org)))
    }

    pub(crate) fn api_list_apps(&mut self, org: Option<&str>) -> ApiResult {
        let Some(org) = org.filter(|o| !o.is_empty()) else {
            return Err(ApiErr::new(400, "org_slug is required"));
        };
        self.advance();
        let apps: Vec<Value> = self
            .apps
            .values()
            .filter(|a| a.org == org)
            .map(|a| {
                json!({
                    "id": a.id,
                    "name": a.name,
                    "machine_count": a.machines.values().filter(|m| m.m.state != FlyState::Destroyed).count(),
                    "volume_count": 0,
                    "network": "default",
                })
            })
            .collect();
        Ok((200, json!({ "total_apps": apps.len(), "apps": apps })))
    }

    fn app(&self, app: &str) -> Result<&FakeApp, ApiErr> {
        self.apps
            .get(app)
            .ok_or_else(|| ApiErr::new(404, format!("app {app} not found")))
    }

    fn machine_mut(&mut self, app: &str, id: &str) -> Result<&mut FakeMachine, ApiErr> {
        self.advance();
        let a = self
            .apps
            .get_mut(app)
            .ok_or_else(|| ApiErr::new(404, format!("app {app} not found")))?;
        a.machines
            .get_mut(id)
            .ok_or_else(|| ApiErr::new(404, "machine not found"))
    }

    pub(crate) fn api_list_machines(
        &mut self,
        app: &str,
        q: &HashMap<String, String>,
    ) -> ApiResult {
        self.advance();
        let a = self.app(app)?;
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let include_deleted = flag("include_deleted");
        let summary = flag("summary");
        let states: Vec<&str> = q
            .get("state")
            .map(|s| s.split(',').filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        let region = q.get("region");
        let meta: Vec<(&str, &str)> = q
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k, v.as_str())))
            .collect();
        let list: Vec<Value> = a
            .machines
            .values()
            .filter(|m| include_deleted || m.m.state != FlyState::Destroyed)
            .filter(|m| states.is_empty() || states.contains(&m.m.state.as_str()))
            .filter(|m| region.is_none_or(|r| m.m.region.as_deref() == Some(r.as_str())))
            .filter(|m| meta.iter().all(|(k, v)| m.m.metadata(k) == Some(*v)))
            .map(|m| machine_json(&m.m, summary))
            .collect();
        Ok((200, Value::Array(list)))
    }

    pub(crate) fn api_get_machine(&mut self, app: &str, id: &str) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        Ok((200, machine_json(&m.m, false)))
    }

    pub(crate) fn api_create_machine(&mut self, app: &str, body: &Value) -> ApiResult {
        self.advance();
        self.app(app)?;
        let config = match body.get("config") {
            Some(c @ Value::Object(_)) => c.clone(),
            _ => return Err(ApiErr::new(422, "config is required")),
        };
        let image = config.get("image").and_then(Value::as_str).unwrap_or("");
        if image.is_empty() {
            return Err(ApiErr::new(422, "invalid config: image is required"));
        }
        let region = body
            .get("region")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| self.config.default_region.clone());
        if self.capacity_failures > 0 {
            self.capacity_failures -= 1;
            return Err(ApiErr::with_status(
                412,
                format!("insufficient resources to create machine in region {region}"),
                "insufficient_capacity",
            ));
        }
        let name = body.get("name").and_then(Value::as_str).map(str::to_owned);
        if let Some(n) = &name {
            let a = self.app(app)?;
            if a.machines
                .values()
                .any(|m| &m.m.name == n && m.m.state != FlyState::Destroyed)
            {
                return Err(ApiErr::with_status(
                    409,
                    format!("machine name {n:?} is already taken"),
                    "name_taken",
                ));
            }
        }
        let skip_launch = body
            .get("skip_launch")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let lease_ttl = body.get("lease_ttl").and_then(Value::as_u64);
        self.next_id += 1;
        let n = self.next_id;
        let id = format!("{:014x}", 0x003d_8d90_0000_0000_u64 + n);
        let now = SystemTime::now();
        let version = format!("01FAKE{:020}", n);
        let mut m = FlyMachine {
            id: id.clone(),
            name: name.unwrap_or_else(|| format!("fake-machine-{n}")),
            state: FlyState::Created,
            region: Some(region),
            instance_id: Some(version.clone()),
            version: Some(version),
            private_ip: Some(format!("fdaa:0:1:a7b:{:x}:{:x}::2", n / 0xffff, n % 0xffff)),
            created_at_raw: Some(humantime::format_rfc3339_millis(now).to_string()),
            updated_at: Some(humantime::format_rfc3339_millis(now).to_string()),
            image_ref: Some(image_ref_of(image)),
            config: Some(config),
            host_status: Some("ok".into()),
            ..FlyMachine::default()
        };
        push_event(&mut m, "launch", "created", "user");
        let mut fm = FakeMachine {
            m,
            pending: VecDeque::new(),
            lease: None,
        };
        if !skip_launch {
            let d = self.config.delays;
            let t = Instant::now();
            fm.pending = VecDeque::from([
                (FlyState::Starting, t + d.create),
                (FlyState::Started, t + d.create + d.start),
            ]);
        }
        if let Some(ttl) = lease_ttl {
            let lease = new_lease(ttl, "created with lease_ttl");
            fm.m.nonce = Some(lease.nonce.clone());
            fm.lease = Some(lease);
        }
        let answer = machine_json(&fm.m, false);
        fm.m.nonce = None;
        if let Some(a) = self.apps.get_mut(app) {
            a.machines.insert(id, fm);
        }
        Ok((200, answer))
    }

    fn check_lease(m: &FakeMachine, nonce: Option<&str>) -> Result<(), ApiErr> {
        match &m.lease {
            Some(l) if l.expires > SystemTime::now() && nonce != Some(l.nonce.as_str()) => {
                Err(ApiErr::new(
                    409,
                    format!(
                        "aborted: machine ID {} lease currently held by {}, expires at {}",
                        m.m.id,
                        l.owner,
                        crate::time::format_rfc3339(l.expires)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn precondition(op: &str, state: &FlyState) -> ApiErr {
        ApiErr::new(
            412,
            format!("failed_precondition: unable to {op} machine from current state: '{state}'"),
        )
    }

    pub(crate) fn api_start(&mut self, app: &str, id: &str, nonce: Option<&str>) -> ApiResult {
        let d = self.config.delays;
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        let prev = m.m.state.clone();
        match prev {
            FlyState::Created | FlyState::Stopped | FlyState::Suspended | FlyState::Failed => {
                m.m.state = FlyState::Starting;
                m.pending = VecDeque::from([(FlyState::Started, Instant::now() + d.start)]);
                push_event(&mut m.m, "start", "started", "user");
                Ok((
                    200,
                    json!({ "previous_state": prev.as_str(), "migrated": false, "new_host": "" }),
                ))
            }
            other => Err(Self::precondition("start", &other)),
        }
    }

    pub(crate) fn api_stop(&mut self, app: &str, id: &str, nonce: Option<&str>) -> ApiResult {
        let d = self.config.delays;
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        match m.m.state.clone() {
            FlyState::Started | FlyState::Starting | FlyState::Restarting => {
                m.m.state = FlyState::Stopping;
                m.pending = VecDeque::from([(FlyState::Stopped, Instant::now() + d.stop)]);
                push_event(&mut m.m, "exit", "stopped", "user");
                Ok((200, json!({ "ok": true })))
            }
            // Stopping a suspended machine discards its snapshot (Fly docs).
            FlyState::Suspended => {
                m.m.state = FlyState::Stopped;
                m.pending.clear();
                Ok((200, json!({ "ok": true })))
            }
            other => Err(Self::precondition("stop", &other)),
        }
    }

    pub(crate) fn api_suspend(&mut self, app: &str, id: &str, nonce: Option<&str>) -> ApiResult {
        let d = self.config.delays;
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        match m.m.state.clone() {
            FlyState::Started => {
                m.m.state = FlyState::Suspending;
                m.pending = VecDeque::from([(FlyState::Suspended, Instant::now() + d.suspend)]);
                push_event(&mut m.m, "suspend", "suspended", "user");
                Ok((200, json!({ "ok": true })))
            }
            other => Err(Self::precondition("suspend", &other)),
        }
    }

    pub(crate) fn api_destroy(
        &mut self,
        app: &str,
        id: &str,
        force: bool,
        nonce: Option<&str>,
    ) -> ApiResult {
        let d = self.config.delays;
        let m = self.machine_mut(app, id)?;
        if matches!(m.m.state, FlyState::Destroyed | FlyState::Destroying) {
            return Err(ApiErr::new(404, "machine not found"));
        }
        Self::check_lease(m, nonce)?;
        let running = matches!(
            m.m.state,
            FlyState::Started
                | FlyState::Starting
                | FlyState::Stopping
                | FlyState::Suspending
                | FlyState::Restarting
        );
        if running && !force {
            return Err(ApiErr::new(
                412,
                format!(
                    "failed_precondition: unable to destroy machine, not currently stopped or suspended (state '{}'); use force=true",
                    m.m.state
                ),
            ));
        }
        m.m.state = FlyState::Destroying;
        m.lease = None;
        m.pending = VecDeque::from([(FlyState::Destroyed, Instant::now() + d.destroy)]);
        push_event(&mut m.m, "destroy", "destroyed", "user");
        Ok((200, json!({ "ok": true })))
    }

    pub(crate) fn api_cordon(
        &mut self,
        app: &str,
        id: &str,
        cordoned: bool,
        nonce: Option<&str>,
    ) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        m.m.cordoned = Some(cordoned);
        Ok((200, json!({ "ok": true })))
    }

    /// `Ok(Some(answer))` when the wait is over, `Ok(None)` to keep waiting.
    pub(crate) fn api_wait_check(
        &mut self,
        app: &str,
        id: &str,
        state: &str,
    ) -> Result<Option<Value>, ApiErr> {
        if !matches!(state, "started" | "stopped" | "suspended" | "destroyed") {
            return Err(ApiErr::new(
                400,
                format!(
                    "invalid state {state:?}: expected started, stopped, suspended or destroyed"
                ),
            ));
        }
        let m = self.machine_mut(app, id)?;
        if m.m.state.as_str() == state {
            Ok(Some(json!({
                "ok": true,
                "state": state,
                "version": m.m.version,
                "event_id": m.m.events.first().and_then(|e| e.id.clone()),
            })))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn api_lease_acquire(
        &mut self,
        app: &str,
        id: &str,
        ttl: u64,
        description: &str,
        nonce: Option<&str>,
    ) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        if m.m.state == FlyState::Destroyed {
            return Err(ApiErr::new(404, "machine not found"));
        }
        Self::check_lease(m, nonce)?;
        let lease = match (&m.lease, nonce) {
            // Refresh of our live lease.
            (Some(l), Some(n)) if l.nonce == n && l.expires > SystemTime::now() => FakeLease {
                expires: SystemTime::now() + Duration::from_secs(ttl),
                ..l.clone()
            },
            _ => new_lease(ttl, description),
        };
        let answer = lease_json(&lease, m.m.version.as_deref());
        m.lease = Some(lease);
        Ok((200, answer))
    }

    pub(crate) fn api_lease_get(&mut self, app: &str, id: &str) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        match &m.lease {
            Some(l) if l.expires > SystemTime::now() => {
                let mut v = lease_json(l, m.m.version.as_deref());
                // Only the holder learns the nonce.
                if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
                    d.remove("nonce");
                }
                Ok((200, v))
            }
            _ => Err(ApiErr::new(404, "lease not found")),
        }
    }

    pub(crate) fn api_lease_release(
        &mut self,
        app: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> ApiResult {
        let m = self.machine_mut(app, id)?;
        Self::check_lease(m, nonce)?;
        m.lease = None;
        Ok((200, json!({ "status": "success" })))
    }
}

fn new_lease(ttl: u64, description: &str) -> FakeLease {
    FakeLease {
        nonce: random_hex(12),
        owner: "fleetscale-fake@tokens.fly.io".into(),
        description: description.to_owned(),
        expires: SystemTime::now() + Duration::from_secs(ttl.max(1)),
    }
}

fn lease_json(l: &FakeLease, version: Option<&str>) -> Value {
    json!({
        "status": "success",
        "data": {
            "nonce": l.nonce,
            "expires_at": l.expires.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "owner": l.owner,
            "description": l.description,
            "version": version,
        }
    })
}

fn app_json(id: &str, name: &str, org: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "organization": { "name": org, "slug": org },
        "status": "deployed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let r = image_ref_of("registry.fly.io/app:v1@sha256:abc");
        assert_eq!(r.full_ref().unwrap(), "registry.fly.io/app:v1@sha256:abc");
        let r = image_ref_of("nginx");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.tag, "latest");
        assert!(r.digest.starts_with("sha256:"));
        let r = image_ref_of("localhost:5000/x/y:2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("localhost:5000", "x/y", "2")
        );
    }

    #[test]
    fn faults_are_consumed() {
        let fake = FakeFly::new(FakeConfig::instant());
        fake.inject(
            Fault::new(FaultKind::Malformed)
                .method("get")
                .path("/machines")
                .times(2),
        );
        let mut g = fake.lock();
        assert!(g.take_fault("POST", "/v1/apps/a/machines").is_none());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_some());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_some());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_none());
    }
}
