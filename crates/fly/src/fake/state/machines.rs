//! The machine state machine: create, start, stop, suspend, destroy, wait, cordon, and the
//! timed transitions between states, plus what the Fly Proxy does on its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hasher;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::apps::FakeApp;
use super::leases::{new_lease, FakeLease};
use super::{millis, random_hex, ApiErr, ApiResult, Delays, FakeFly, Inner};
use crate::types::FlyState::{
    Created, Destroyed, Destroying, Started, Starting, Stopped, Stopping, Suspended, Suspending,
};
use crate::types::{FlyMachine, FlyState, ImageRef};

#[derive(Clone, Debug)]
pub(super) struct FakeMachine {
    pub(super) m: FlyMachine,
    pub(super) pending: VecDeque<(FlyState, Instant)>,
    pub(super) lease: Option<FakeLease>,
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

impl FakeFly {
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
        g.advance_app(app);
        g.apps.get(app)?.machines.get(id).map(|m| m.m.clone())
    }

    /// The machines of an app that are not destroyed, in id order.
    pub fn machines(&self, app: &str) -> Vec<FlyMachine> {
        let mut g = self.lock();
        g.advance_app(app);
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

    /// The machine's state at this moment (transitions applied), or `None` for an unknown id.
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
        self.proxy_transition(app, id, &[Stopped, Suspended, Created], Transition::START)
    }

    /// Simulates the Fly Proxy autostopping a started machine.
    pub fn proxy_autostop(&self, app: &str, id: &str) -> bool {
        self.proxy_transition(app, id, &[Started], Transition::STOP)
    }

    /// Begins `t` on machine `id` of `app` (ignoring leases, as the proxy does) if it is in
    /// one of the states `from`; whether it did.
    fn proxy_transition(&self, app: &str, id: &str, from: &[FlyState], t: Transition) -> bool {
        let mut g = self.lock();
        g.advance_app(app);
        let delays = g.config.delays;
        match g.apps.get_mut(app).and_then(|a| a.machines.get_mut(id)) {
            Some(m) if from.contains(&m.m.state) => {
                t.begin(m, &delays, "proxy");
                true
            }
            _ => false,
        }
    }

    /// The next `n` creates fail with `insufficient_capacity`.
    pub fn fail_next_creates(&self, n: u32) {
        self.lock().capacity_failures = n;
    }
}

/// A state change the fake plays out over time: into `via` at once, into `to` after its
/// delay, recorded as a machine event of type `event` whose status is `to` (as Fly's
/// events read: `start`/`started`, `exit`/`stopped`, ...).
struct Transition {
    via: FlyState,
    to: FlyState,
    delay: fn(&Delays) -> Duration,
    event: &'static str,
}

impl Transition {
    const START: Self = Self::new(Starting, Started, |d| d.start, "start");
    const STOP: Self = Self::new(Stopping, Stopped, |d| d.stop, "exit");
    const SUSPEND: Self = Self::new(Suspending, Suspended, |d| d.suspend, "suspend");
    const DESTROY: Self = Self::new(Destroying, Destroyed, |d| d.destroy, "destroy");

    const fn new(
        via: FlyState,
        to: FlyState,
        delay: fn(&Delays) -> Duration,
        event: &'static str,
    ) -> Self {
        Self {
            via,
            to,
            delay,
            event,
        }
    }

    /// Begins this transition on `m` now, the event coming from `source` (`user`, `proxy`).
    fn begin(&self, m: &mut FakeMachine, delays: &Delays, source: &str) {
        m.m.state = self.via.clone();
        m.pending = VecDeque::from([(self.to.clone(), Instant::now() + (self.delay)(delays))]);
        push_event(&mut m.m, self.event, self.to.as_str(), source);
    }
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
    /// Applies the transitions that are due, in every app (for answers that span apps).
    pub(crate) fn advance(&mut self) {
        let now = Instant::now();
        for app in self.apps.values_mut() {
            advance_machines(app, now);
        }
    }

    /// Applies the due transitions of one app only. Transitions depend on time alone and each
    /// app's machines only on their own, so a request about one app need not visit every
    /// machine of the fake: with 10,000 apps the global walk cost 2 ms per request.
    pub(crate) fn advance_app(&mut self, app: &str) {
        if let Some(a) = self.apps.get_mut(app) {
            advance_machines(a, Instant::now());
        }
    }

    pub(super) fn machine_mut(&mut self, app: &str, id: &str) -> Result<&mut FakeMachine, ApiErr> {
        self.advance_app(app);
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
        self.advance_app(app);
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
        self.advance_app(app);
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
                Transition::START.begin(m, &d, "user");
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
                Transition::STOP.begin(m, &d, "user");
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
                Transition::SUSPEND.begin(m, &d, "user");
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
        m.lease = None;
        Transition::DESTROY.begin(m, &d, "user");
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
}

/// Applies `app`'s transitions due at `now`.
fn advance_machines(app: &mut FakeApp, now: Instant) {
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
    fn a_request_about_one_app_advances_that_app_only() {
        let fake = FakeFly::new(super::super::FakeConfig::instant());
        for app in ["a", "b"] {
            fake.create_app(app, "org");
            fake.lock()
                .api_create_machine(app, &json!({"config": {"image": "nginx"}}))
                .expect("create");
        }
        // Every transition is due at once; reading `a` applies `a`'s and leaves `b`'s to the
        // next request about `b` (a request walked every app's machines before).
        assert_eq!(fake.machines("a")[0].state, FlyState::Started);
        let raw_b = |f: &FakeFly| {
            f.lock().apps["b"]
                .machines
                .values()
                .map(|m| m.m.state.clone())
                .collect::<Vec<_>>()
        };
        assert_ne!(raw_b(&fake), vec![FlyState::Started]);
        assert_eq!(fake.machines("b")[0].state, FlyState::Started);
        assert_eq!(raw_b(&fake), vec![FlyState::Started]);
    }
}
