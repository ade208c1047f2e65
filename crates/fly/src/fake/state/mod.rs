//! The fake's state: apps, machines, leases, faults, rate limits and the request log.

mod apps;
mod faults;
mod leases;
mod machines;
mod metrics;
mod rate_limit;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use fleetscale_core::Token;

pub use apps::FakeRelease;
pub(crate) use apps::GqlApp;
pub use faults::{Fault, FaultKind};
pub(crate) use metrics::METRICS_CONTENT_TYPE;
pub use rate_limit::FakeRateLimits;

use apps::FakeApp;
use rate_limit::Bucket;

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

/// Settings of the fake.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// When set, every call but `/metrics` must carry exactly the `Authorization` header this
    /// token produces (see [`crate::token::authorization_header`]); otherwise 401. When `None`, any
    /// or no `Authorization` is accepted.
    pub token: Option<Token>,
    /// How long each machine state transition takes on the fake.
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

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method, upper case (`GET`, `POST`, ...).
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

    pub(super) fn with_status(status: u16, error: impl Into<String>, class: &str) -> Self {
        ApiErr {
            status,
            body: json!({ "error": error.into(), "status": class }),
        }
    }
}

pub(crate) type ApiResult = Result<(u16, Value), ApiErr>;

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

pub(super) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

    /// A copy of the fake's current settings (token, delays, rate limits, default region).
    pub fn config(&self) -> FakeConfig {
        self.lock().config.clone()
    }

    /// Changes transition times from now on.
    pub fn set_delays(&self, delays: Delays) {
        self.lock().config.delays = delays;
    }

    /// Every request the fake has seen since the log was last cleared, oldest first.
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
}

impl Inner {
    pub(crate) fn next_request_id(&mut self) -> String {
        self.next_request += 1;
        format!("fake-{:08}-{}", self.next_request, random_hex(8))
    }

    pub(crate) fn log(&mut self, record: RequestRecord) {
        self.log.push(record);
    }

    /// Checks the `Authorization` header: the Machines API form of the token
    /// ([`crate::token::authorization_header`]), or for `/graphql` the GraphQL form
    /// ([`crate::token::graphql_authorization_header`]).
    pub(crate) fn check_auth(&self, header: Option<&str>, graphql: bool) -> Result<(), ApiErr> {
        match &self.config.token {
            None => Ok(()),
            Some(t) => {
                let want = if graphql {
                    crate::token::graphql_authorization_header(t)
                } else {
                    crate::token::authorization_header(t)
                };
                if header == Some(want.as_str()) {
                    Ok(())
                } else {
                    Err(ApiErr::new(401, "Authenticate: token validation error"))
                }
            }
        }
    }
}
