//! Wire types of the Fly Machines API, decoded tolerantly.
//!
//! Field lists follow `superfly/fly-go` (`machine_types.go`) and the Machines API docs (see
//! `shared/reference/fly-machines-and-fly-autoscaler.md`, section 6). Decoding rules:
//! - unknown fields are ignored everywhere;
//! - `null` is accepted wherever a list, map or string may appear (machines on unreachable
//!   hosts answer `config: null`);
//! - `autostop` is a boolean or `"off"`/`"stop"`/`"suspend"` (fly-autoscaler v0.3.1 crashed on
//!   the string form, superfly/fly-autoscaler#41);
//! - states outside the 17 documented ones are kept verbatim ([`FlyState::Other`]);
//! - numbers that could be large (timestamps) are `u64` and may also arrive as strings.
//!
//! A machine's `config` is kept as raw JSON ([`serde_json::Value`]) so that cloning it for a
//! new machine preserves every field, including ones this crate does not know; typed access
//! goes through [`FlyMachine::config_view`] and a few helpers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use fleetscale_core::MachineState;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `null` or a missing field decode as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `u64` that may arrive as a number (integer or float) or a numeric string; anything else
/// (negative, non-numeric) becomes `None` rather than failing the whole object.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A string that may arrive as a string or a number (Fly's `version` fields have been both).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// A Fly Machine state as the API reports it: the 17 documented states (Fly docs
/// `machines/machine-states`) plus any future one kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlyState {
    /// `created`: exists, never started (e.g. `skip_launch`). Persistent.
    Created,
    /// `creating`: being created. Transient.
    Creating,
    /// `starting`. Transient.
    Starting,
    /// `started`: running. Persistent.
    Started,
    /// `stopping`. Transient.
    Stopping,
    /// `stopped`. Persistent.
    Stopped,
    /// `suspending`. Transient.
    Suspending,
    /// `suspended`: stopped with a memory snapshot. Persistent.
    Suspended,
    /// `restarting`. Transient.
    Restarting,
    /// `updating`: its config is being updated. Transient.
    Updating,
    /// `replacing`: being replaced by a new version. Transient.
    Replacing,
    /// `destroying`. Transient.
    Destroying,
    /// `destroyed`. Terminal.
    Destroyed,
    /// `failed`. Persistent.
    Failed,
    /// `launch_failed`. Transient per the docs, effectively failed.
    LaunchFailed,
    /// `replaced`: an older version (seen in version queries). Terminal.
    Replaced,
    /// `migrated`: moved to another host. Terminal.
    Migrated,
    /// Any other value, kept verbatim (an empty string when the field was missing).
    Other(String),
}

impl FlyState {
    /// The 17 documented states, in the order of the docs' table.
    pub const KNOWN: [FlyState; 17] = [
        FlyState::Created,
        FlyState::Started,
        FlyState::Stopped,
        FlyState::Suspended,
        FlyState::Failed,
        FlyState::Creating,
        FlyState::Starting,
        FlyState::Stopping,
        FlyState::Restarting,
        FlyState::Suspending,
        FlyState::Destroying,
        FlyState::LaunchFailed,
        FlyState::Updating,
        FlyState::Replacing,
        FlyState::Destroyed,
        FlyState::Replaced,
        FlyState::Migrated,
    ];

    /// Parses a state name; unknown names become [`FlyState::Other`]. Never fails.
    pub fn parse(s: &str) -> FlyState {
        match s {
            "created" => FlyState::Created,
            "creating" => FlyState::Creating,
            "starting" => FlyState::Starting,
            "started" => FlyState::Started,
            "stopping" => FlyState::Stopping,
            "stopped" => FlyState::Stopped,
            "suspending" => FlyState::Suspending,
            "suspended" => FlyState::Suspended,
            "restarting" => FlyState::Restarting,
            "updating" => FlyState::Updating,
            "replacing" => FlyState::Replacing,
            "destroying" => FlyState::Destroying,
            "destroyed" => FlyState::Destroyed,
            "failed" => FlyState::Failed,
            "launch_failed" => FlyState::LaunchFailed,
            "replaced" => FlyState::Replaced,
            "migrated" => FlyState::Migrated,
            other => FlyState::Other(other.to_owned()),
        }
    }

    /// The state's name as the Machines API writes it (`started`; [`FlyState::Other`] verbatim).
    pub fn as_str(&self) -> &str {
        match self {
            FlyState::Created => "created",
            FlyState::Creating => "creating",
            FlyState::Starting => "starting",
            FlyState::Started => "started",
            FlyState::Stopping => "stopping",
            FlyState::Stopped => "stopped",
            FlyState::Suspending => "suspending",
            FlyState::Suspended => "suspended",
            FlyState::Restarting => "restarting",
            FlyState::Updating => "updating",
            FlyState::Replacing => "replacing",
            FlyState::Destroying => "destroying",
            FlyState::Destroyed => "destroyed",
            FlyState::Failed => "failed",
            FlyState::LaunchFailed => "launch_failed",
            FlyState::Replaced => "replaced",
            FlyState::Migrated => "migrated",
            FlyState::Other(s) => s,
        }
    }

    /// The normalised core state. The full table, and why:
    ///
    /// | Fly | core | why |
    /// |---|---|---|
    /// | `created`, `creating` | `Created` | exists, not yet running; `creating` is where every machine begins (the core docs map it to `Created`) |
    /// | `starting`, `restarting` | `Starting` | heading to `started` |
    /// | `started` | `Started` | |
    /// | `stopping` / `stopped` | `Stopping` / `Stopped` | |
    /// | `suspending` / `suspended` | `Suspending` / `Suspended` | |
    /// | `destroying` / `destroyed` | `Destroying` / `Destroyed` | |
    /// | `failed`, `launch_failed` | `Failed` | not running, will not run on its own |
    /// | `replaced`, `migrated` | `Destroyed` | terminal: this machine (version/host) is gone |
    /// | `updating`, `replacing` | `Unknown` | a deploy is changing the machine; it returns to its *previous* state, which the API does not say, so it is counted as existing but never acted on |
    /// | anything else | `Unknown` | a future state: counted, never acted on |
    pub fn to_core(&self) -> MachineState {
        match self {
            FlyState::Created | FlyState::Creating => MachineState::Created,
            FlyState::Starting | FlyState::Restarting => MachineState::Starting,
            FlyState::Started => MachineState::Started,
            FlyState::Stopping => MachineState::Stopping,
            FlyState::Stopped => MachineState::Stopped,
            FlyState::Suspending => MachineState::Suspending,
            FlyState::Suspended => MachineState::Suspended,
            FlyState::Destroying => MachineState::Destroying,
            FlyState::Destroyed | FlyState::Replaced | FlyState::Migrated => {
                MachineState::Destroyed
            }
            FlyState::Failed | FlyState::LaunchFailed => MachineState::Failed,
            FlyState::Updating | FlyState::Replacing | FlyState::Other(_) => MachineState::Unknown,
        }
    }
}

impl Default for FlyState {
    fn default() -> Self {
        FlyState::Other(String::new())
    }
}

impl fmt::Display for FlyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FlyState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FlyState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        Ok(FlyState::parse(s.as_deref().unwrap_or("")))
    }
}

/// `services[].autostop`: a boolean (old form: `false` = off, `true` = stop) or a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Autostop {
    /// `false` or `"off"`.
    Off,
    /// `true` or `"stop"`.
    Stop,
    /// `"suspend"`.
    Suspend,
    /// Any other string, kept verbatim.
    Other(String),
}

impl Serialize for Autostop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Autostop::Off => "off",
            Autostop::Stop => "stop",
            Autostop::Suspend => "suspend",
            Autostop::Other(o) => o,
        })
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(Autostop::Off),
            Value::Bool(true) => Ok(Autostop::Stop),
            Value::String(s) => Ok(match s.as_str() {
                "off" => Autostop::Off,
                "stop" => Autostop::Stop,
                "suspend" => Autostop::Suspend,
                _ => Autostop::Other(s),
            }),
            other => Err(de::Error::custom(format!(
                "autostop must be a boolean or a string, got {other}"
            ))),
        }
    }
}

/// `image_ref` of a machine: the exact image it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// e.g. `registry.fly.io`.
    #[serde(default, deserialize_with = "null_default")]
    pub registry: String,
    /// e.g. `my-app`.
    #[serde(default, deserialize_with = "null_default")]
    pub repository: String,
    /// e.g. `deployment-01H...`.
    #[serde(default, deserialize_with = "null_default")]
    pub tag: String,
    /// e.g. `sha256:...`.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// OCI labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

impl ImageRef {
    /// The full reference `registry/repository:tag@digest`, omitting empty parts, as
    /// fly-autoscaler pins clones to. `None` when there is no repository.
    ///
    /// ```
    /// use fleetscale_fly::ImageRef;
    /// let r = ImageRef { registry: "registry.fly.io".into(), repository: "app".into(),
    ///     tag: "v1".into(), digest: "sha256:ab".into(), ..Default::default() };
    /// assert_eq!(r.full_ref().unwrap(), "registry.fly.io/app:v1@sha256:ab");
    /// ```
    pub fn full_ref(&self) -> Option<String> {
        if self.repository.is_empty() {
            return None;
        }
        let mut s = String::new();
        if !self.registry.is_empty() {
            s.push_str(&self.registry);
            s.push('/');
        }
        s.push_str(&self.repository);
        if !self.tag.is_empty() {
            s.push(':');
            s.push_str(&self.tag);
        }
        if !self.digest.is_empty() {
            s.push('@');
            s.push_str(&self.digest);
        }
        Some(s)
    }
}

/// One machine event (`events[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineEvent {
    /// Event ID.
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// e.g. `launch`, `start`, `exit`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// e.g. `created`, `started`.
    #[serde(default)]
    pub status: Option<String>,
    /// `flyd`, `user` or `proxy`.
    #[serde(default)]
    pub source: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub timestamp: Option<u64>,
    /// Free-form request details (exit codes, restart counts), kept raw.
    #[serde(default)]
    pub request: Option<Value>,
}

/// One health check result (`checks[]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Check name.
    #[serde(default)]
    pub name: Option<String>,
    /// `passing`, `warning`, `critical`.
    #[serde(default)]
    pub status: Option<String>,
    /// Last output.
    #[serde(default)]
    pub output: Option<String>,
    /// RFC 3339 time of the last update.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A Fly Machine as the API returns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlyMachine {
    /// Machine ID (14 hex characters on Fly).
    pub id: String,
    /// Machine name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The machine's state (unknown states kept verbatim in [`FlyState::Other`]).
    #[serde(default)]
    pub state: FlyState,
    /// Region code, e.g. `iad`.
    #[serde(default)]
    pub region: Option<String>,
    /// Instance ID of the current version (needed by `wait?state=stopped`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub instance_id: Option<String>,
    /// Version ID.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// 6PN private IPv6 address.
    #[serde(default)]
    pub private_ip: Option<String>,
    /// RFC 3339 creation time, raw; see [`FlyMachine::created_at`].
    #[serde(default, rename = "created_at")]
    pub created_at_raw: Option<String>,
    /// RFC 3339 last update time, raw.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The machine config, raw (`null` for machines on unreachable hosts).
    #[serde(default)]
    pub config: Option<Value>,
    /// The partial config reported when the host is not ok.
    #[serde(default)]
    pub incomplete_config: Option<Value>,
    /// The exact image the machine runs.
    #[serde(default)]
    pub image_ref: Option<ImageRef>,
    /// Recent events.
    #[serde(default, deserialize_with = "null_default")]
    pub events: Vec<MachineEvent>,
    /// Health checks.
    #[serde(default, deserialize_with = "null_default")]
    pub checks: Vec<CheckStatus>,
    /// Lease nonce (present when created with `lease_ttl`).
    #[serde(default)]
    pub nonce: Option<String>,
    /// `ok`, `unknown` or `unreachable`; absent in summary listings.
    #[serde(default)]
    pub host_status: Option<String>,
    /// Whether the machine is cordoned (no proxy traffic).
    #[serde(default)]
    pub cordoned: Option<bool>,
}

impl FlyMachine {
    /// The creation time, parsed; `None` when missing or malformed.
    pub fn created_at(&self) -> Option<SystemTime> {
        self.created_at_raw
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
    }

    /// Whether the host answered normally: `host_status` is `ok`, or absent (summary
    /// listings omit it).
    pub fn host_ok(&self) -> bool {
        self.host_status.as_deref().is_none_or(|s| s == "ok")
    }

    /// A metadata value from `config.metadata`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.config.as_ref()?.get("metadata")?.get(key)?.as_str()
    }

    /// The process group label: `config.metadata.fly_process_group`, else the legacy
    /// `process_group`; `None` when neither is set (or is empty).
    pub fn process_group(&self) -> Option<&str> {
        self.metadata("fly_process_group")
            .or_else(|| self.metadata("process_group"))
            .filter(|g| !g.is_empty())
    }

    /// `config.image`.
    pub fn config_image(&self) -> Option<&str> {
        self.config.as_ref()?.get("image")?.as_str()
    }

    /// A typed view of the config. `Ok(None)` when the config is `null`.
    pub fn config_view(&self) -> Result<Option<MachineConfig>, serde_json::Error> {
        match &self.config {
            None | Some(Value::Null) => Ok(None),
            Some(v) => MachineConfig::deserialize(v).map(Some),
        }
    }
}

/// A typed view of the fields of a machine config this crate reads. Unknown fields are
/// ignored; use [`FlyMachine::config`] for the complete raw config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// The image reference the machine runs (`config.image`).
    #[serde(default)]
    pub image: Option<String>,
    /// Environment variables.
    #[serde(default, deserialize_with = "null_default")]
    pub env: BTreeMap<String, String>,
    /// The guest size: CPU kind, CPU count and memory.
    #[serde(default)]
    pub guest: Option<Guest>,
    /// Services (ports, autostop/autostart).
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<MachineService>,
    /// Metadata (`fly_process_group`, `fly_release_id`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, String>,
    /// Restart policy, raw.
    #[serde(default)]
    pub restart: Option<Value>,
    /// Destroy when the machine exits.
    #[serde(default)]
    pub auto_destroy: Option<bool>,
    /// Volume mounts, raw.
    #[serde(default, deserialize_with = "null_default")]
    pub mounts: Vec<Value>,
}

/// `config.guest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// `shared` or `performance`.
    #[serde(default)]
    pub cpu_kind: Option<String>,
    /// CPU count.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub cpus: Option<u64>,
    /// Memory in MB.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub memory_mb: Option<u64>,
}

/// `config.services[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineService {
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Port inside the machine.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub internal_port: Option<u64>,
    /// Autostop by the Fly Proxy.
    #[serde(default)]
    pub autostop: Option<Autostop>,
    /// Autostart by the Fly Proxy.
    #[serde(default)]
    pub autostart: Option<bool>,
    /// Minimum machines the proxy keeps running (primary region only).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub min_machines_running: Option<u64>,
}

/// Body of `POST /v1/apps/{app}/machines`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    /// The full machine config (raw, so clones keep unknown fields).
    pub config: Value,
    /// Region; `None` lets Fly choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Machine name; `None` lets Fly choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Create without starting (the machine stays `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    /// Do not register services with the proxy until started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    /// Create with a lease of this many seconds; the response then carries `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
}

/// Body of `POST …/stop`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Signal, e.g. `SIGTERM` (Fly's default is the config's `kill_signal`, else SIGINT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Time before a forced kill, as a Go duration (`"10s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Response of `POST …/start`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    /// State before the start.
    #[serde(default)]
    pub previous_state: Option<String>,
    /// Whether the machine moved host.
    #[serde(default)]
    pub migrated: Option<bool>,
    /// The new host, if migrated.
    #[serde(default)]
    pub new_host: Option<String>,
}

/// Response of `GET …/wait`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitResponse {
    /// `true` when the state was reached.
    #[serde(default)]
    pub ok: Option<bool>,
    /// The state reached (newer API versions).
    #[serde(default)]
    pub state: Option<String>,
    /// Event ID.
    #[serde(default, deserialize_with = "lenient_string")]
    pub event_id: Option<String>,
    /// Version.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
}

/// A lease on a machine; calls that change the leased machine send its nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The nonce to send as `fly-machine-lease-nonce`.
    #[serde(default, deserialize_with = "null_default")]
    pub nonce: String,
    /// Expiry, Unix seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub expires_at: Option<u64>,
    /// Who holds it.
    #[serde(default)]
    pub owner: Option<String>,
    /// The description the holder gave when taking the lease.
    #[serde(default)]
    pub description: Option<String>,
    /// Machine version the lease was taken on.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
}

/// Envelope of lease responses: `{"status":"success","data":{...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEnvelope {
    /// `success`.
    #[serde(default)]
    pub status: Option<String>,
    /// The lease acquired or refreshed (`None` when the answer had no `data`).
    #[serde(default)]
    pub data: Option<Lease>,
}

/// One app in `GET /v1/apps?org_slug=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    /// App ID.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// App name.
    pub name: String,
    /// How many machines the app has, when the list reports it.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub machine_count: Option<u64>,
    /// How many volumes the app has, when the list reports it.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub volume_count: Option<u64>,
    /// 6PN network name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub network: Option<String>,
}

/// Response of `GET /v1/apps?org_slug=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    /// Total number of apps.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_apps: Option<u64>,
    /// One entry per app of the organization (an empty list for `null`).
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Vec<AppSummary>,
}

/// The organization an app belongs to, as `GET /v1/apps/{app}` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The organization's slug, as used in `org_slug` (e.g. `personal`).
    #[serde(default)]
    pub slug: Option<String>,
}

/// Response of `GET /v1/apps/{app}` (and of `POST /v1/apps` on the fake).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// App ID.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// App name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Owning organization.
    #[serde(default)]
    pub organization: Option<Organization>,
    /// e.g. `deployed`, `pending`.
    #[serde(default)]
    pub status: Option<String>,
}

/// Body of `POST /v1/apps`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAppRequest {
    /// The new app's name.
    pub app_name: String,
    /// The slug of the organization that will own the app.
    pub org_slug: String,
    /// Optional custom 6PN network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// The error body of non-2xx answers: `{"error": "...", "status": "..."}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable error.
    #[serde(default)]
    pub error: Option<String>,
    /// Machine-readable class: `unknown`, `insufficient_capacity`, `name_taken`.
    #[serde(default)]
    pub status: Option<String>,
    /// Alternative message field read by fly-go.
    #[serde(default)]
    pub message: Option<String>,
}

/// Filters of `GET /v1/apps/{app}/machines`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Include destroyed machines.
    pub include_deleted: bool,
    /// Only this region.
    pub region: Option<String>,
    /// Only these states (the API accepts `created`, `started`, `stopped`, `suspended`).
    pub states: Vec<String>,
    /// Omit config, checks, events, host status and nonce.
    pub summary: bool,
    /// `metadata.{key}=value` filters.
    pub metadata: BTreeMap<String, String>,
}

impl ListOptions {
    /// The query pairs, in a stable order.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if self.include_deleted {
            q.push(("include_deleted".into(), "true".into()));
        }
        if let Some(r) = &self.region {
            q.push(("region".into(), r.clone()));
        }
        if !self.states.is_empty() {
            q.push(("state".into(), self.states.join(",")));
        }
        if self.summary {
            q.push(("summary".into(), "true".into()));
        }
        for (k, v) in &self.metadata {
            q.push((format!("metadata.{k}"), v.clone()));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_states_parse_and_round_trip() {
        for s in FlyState::KNOWN {
            assert_eq!(FlyState::parse(s.as_str()), s);
            assert!(!matches!(s, FlyState::Other(_)));
        }
        assert_eq!(
            FlyState::parse("hibernating"),
            FlyState::Other("hibernating".into())
        );
        assert_eq!(FlyState::Other("x".into()).to_core(), MachineState::Unknown);
    }

    #[test]
    fn tolerant_machine_decoding() {
        let json = r#"{
            "id": "148e21", "name": null, "state": "hibernating", "region": "iad",
            "instance_id": 123, "config": null, "host_status": "unreachable",
            "events": null, "checks": null, "brand_new_field": {"x": 1},
            "created_at": "2024-05-01T12:34:56Z",
            "image_ref": {"registry":"registry.fly.io","repository":"app","tag":null,"digest":"sha256:1"}
        }"#;
        let m: FlyMachine = serde_json::from_str(json).unwrap();
        assert_eq!(m.state, FlyState::Other("hibernating".into()));
        assert_eq!(m.config, None);
        assert_eq!(m.instance_id.as_deref(), Some("123"));
        assert!(!m.host_ok());
        assert!(m.created_at().is_some());
        assert_eq!(
            m.image_ref.unwrap().full_ref().unwrap(),
            "registry.fly.io/app@sha256:1"
        );
    }

    #[test]
    fn autostop_forms() {
        let cfg = serde_json::json!({
            "image": "x",
            "services": [
                {"autostop": "suspend", "internal_port": 8080},
                {"autostop": true},
                {"autostop": false},
                {"autostop": "off"},
                {"autostop": "stop"},
                {"autostop": "later"}
            ],
            "metadata": {"fly_process_group": "web"}
        });
        let m = FlyMachine {
            id: "a".into(),
            config: Some(cfg),
            ..Default::default()
        };
        let view = m.config_view().unwrap().unwrap();
        let stops: Vec<_> = view
            .services
            .iter()
            .map(|s| s.autostop.clone().unwrap())
            .collect();
        assert_eq!(
            stops,
            vec![
                Autostop::Suspend,
                Autostop::Stop,
                Autostop::Off,
                Autostop::Off,
                Autostop::Stop,
                Autostop::Other("later".into())
            ]
        );
        assert_eq!(m.process_group(), Some("web"));
    }

    #[test]
    fn list_query() {
        let mut o = ListOptions {
            include_deleted: true,
            region: Some("iad".into()),
            states: vec!["started".into(), "stopped".into()],
            summary: true,
            ..Default::default()
        };
        o.metadata.insert("fly_process_group".into(), "app".into());
        let q = o.query();
        assert_eq!(q.len(), 5);
        assert!(q.contains(&("state".into(), "started,stopped".into())));
        assert!(q.contains(&("metadata.fly_process_group".into(), "app".into())));
    }
}
