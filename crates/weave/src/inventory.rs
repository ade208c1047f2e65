//! Host inventories: the evidence, from outside the mesh, that a peer's host is gone.
//!
//! The mesh cannot tell a dead peer from a live one behind a partition: both are absent from
//! every fixed peer's topology (`weave-net.md` §2.1). Only something that knows which hosts
//! exist — the cloud API that runs them, the autoscaler's own backend, an operator's list —
//! can. The [`Reclaimer`](crate::Reclaimer) therefore reclaims a peer only when an inventory
//! says its host is gone (see the reclaim module docs for the whole rule).
//!
//! - [`Host`]: one host as an inventory lists it: a stable id (never reused: a machine id, an
//!   EC2 instance id), the names it may carry as a Weave nickname (Weave sets the nickname to
//!   the host name), its addresses, and whether it is listed as gone (destroyed, terminated).
//! - [`HostSnapshot`]: one complete listing of one inventory (named by its `source`).
//! - [`HostInventory`]: where snapshots come from. Implementations here: [`ScalerInventory`]
//!   (any [`Scaler`]: Fly machines, EC2 instances, ...), [`CommandInventory`] (a program that
//!   prints the hosts) and [`HttpInventory`] (an HTTP endpoint that answers them). The engine
//!   path needs none: it hands the tick's inventory over
//!   ([`HostSnapshot::from_machines`]).
//!
//! # The listing format of commands and HTTP endpoints ([`parse_hosts`])
//! Either **text**, one live host per line — its id first, then any names and addresses it is
//! known by, separated by white space (`#` starts a comment):
//!
//! ```text
//! # id              names and addresses
//! i-0abc12          ip-10-0-1-23.ec2.internal 10.0.1.23
//! worker-7          10.0.1.24
//! ```
//!
//! or **JSON**: an array of hosts, or an object with a `hosts` array, each host
//! `{"id": "...", "names": [...], "addresses": [...], "state": "live" | "gone"}` (`names`,
//! `addresses` and `state` optional; `state` defaults to `live`). Words that parse as IP
//! addresses are addresses; every other word is a name. The id is always also a name.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{Machine, MachineState, Scaler};
use serde::{Deserialize, Serialize};

use crate::error::truncate;
use crate::host::{HostRunner, LocalRunner};
use crate::WeaveError;

/// One host as an inventory lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// A stable, never reused identity (machine id, instance id). Peers are bound to it.
    pub id: String,
    /// Names the host may carry as its Weave nickname (its host name, the machine name).
    #[serde(default)]
    pub names: Vec<String>,
    /// Its IP addresses (no ports).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Listed as gone: destroyed or terminated. A stopped host is not gone (it keeps its
    /// Weave database and comes back with it).
    #[serde(default)]
    pub gone: bool,
}

impl Host {
    /// A live host with this id (also its first name).
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Host {
            names: vec![id.clone()],
            id,
            addresses: Vec::new(),
            gone: false,
        }
    }

    /// Adds a name the host may carry as a nickname.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// Adds an address (a port, if any, is dropped).
    pub fn with_address(mut self, address: impl AsRef<str>) -> Self {
        let a = strip_port(address.as_ref());
        if !a.is_empty() && !self.addresses.contains(&a) {
            self.addresses.push(a);
        }
        self
    }

    /// Marks the host as gone (destroyed, terminated).
    pub fn into_gone(mut self) -> Self {
        self.gone = true;
        self
    }

    /// The host of a [`Machine`]: id = machine id; names = the id, the machine name and its
    /// first DNS label (EC2 names instances `ip-10-0-1-23.ec2.internal`, and a host's name
    /// may be either form), and the `hostname` label when set; address = the machine's
    /// address; gone = [`MachineState::Destroyed`]. A machine that is being destroyed is not
    /// gone yet: its router may still run.
    pub fn from_machine(m: &Machine) -> Host {
        let mut h = Host::new(m.id.as_str()).with_name(m.name.clone());
        for name in [
            Some(m.name.as_str()),
            m.labels.get("hostname").map(String::as_str),
        ]
        .into_iter()
        .flatten()
        {
            h = h.with_name(name);
            if let Some((first, _)) = name.split_once('.') {
                h = h.with_name(first);
            }
        }
        if let Some(a) = &m.address {
            h = h.with_address(a);
        }
        if m.state == MachineState::Destroyed {
            h.gone = true;
        }
        h
    }

    /// Whether a peer with this nickname and these addresses may run on this host: the
    /// nickname is one of its names (also comparing first DNS labels), or an address is one
    /// of its addresses.
    pub fn matches(&self, nickname: Option<&str>, addresses: &[String]) -> bool {
        let by_name = nickname.filter(|n| !n.is_empty()).is_some_and(|n| {
            let first = n.split_once('.').map(|(f, _)| f).unwrap_or(n);
            self.names.iter().any(|name| name == n || name == first)
        });
        by_name
            || addresses
                .iter()
                .any(|a| self.addresses.iter().any(|b| *b == strip_port(a)))
    }
}

/// One complete listing of one inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// Which inventory this is (`fly:my-app`, `ec2:workers`, `command:/usr/local/bin/hosts`,
    /// a target name). A host is shown gone by its *absence* only from a listing of the same
    /// source its peer was bound with: another source's listing does not cover it.
    pub source: String,
    /// Every host listed, live or gone.
    pub hosts: Vec<Host>,
}

impl HostSnapshot {
    /// A listing of `hosts` taken from the inventory named `source`.
    pub fn new(source: impl Into<String>, hosts: Vec<Host>) -> Self {
        HostSnapshot {
            source: source.into(),
            hosts,
        }
    }

    /// The snapshot of a backend's machines (the engine's tick inventory).
    pub fn from_machines(source: impl Into<String>, machines: &[Machine]) -> Self {
        HostSnapshot::new(source, machines.iter().map(Host::from_machine).collect())
    }

    /// Hosts not listed as gone.
    pub fn live(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| !h.gone)
    }

    /// The listed host whose id is `id` (live or gone), or `None`.
    pub fn get(&self, id: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// Live hosts a peer with this nickname and these addresses may run on.
    pub fn live_matches(&self, nickname: Option<&str>, addresses: &[String]) -> Vec<&Host> {
        self.live()
            .filter(|h| h.matches(nickname, addresses))
            .collect()
    }

    /// Hosts listed as gone that a peer with this nickname and these addresses may have run on.
    pub fn gone_matches(&self, nickname: Option<&str>, addresses: &[String]) -> Vec<&Host> {
        self.hosts
            .iter()
            .filter(|h| h.gone && h.matches(nickname, addresses))
            .collect()
    }
}

/// Where a standalone reclaimer gets its host listings from.
///
/// # Contract
/// - [`hosts`](Self::hosts) returns one **complete** listing of the inventory (every host that
///   exists, whatever its state; hosts listed as gone where the inventory still shows them):
///   a host it leaves out is taken as gone. A partial answer must be an error.
/// - Read-only and idempotent; cancellation-safe (dropping the future abandons the read).
/// - [`source`](Self::source) names the inventory and never changes for one value.
///
/// # Errors
/// Any failure to read the inventory ([`WeaveError::Inventory`]); the reclaimer then reclaims
/// nothing that pass.
///
/// # Example
/// ```
/// use async_trait::async_trait;
/// use fleetscale_weave::inventory::{Host, HostInventory, HostSnapshot};
/// use fleetscale_weave::WeaveError;
///
/// /// Two hosts known at build time.
/// struct Fixed;
///
/// #[async_trait]
/// impl HostInventory for Fixed {
///     fn source(&self) -> &str {
///         "fixed-list"
///     }
///     async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
///         Ok(HostSnapshot::new(
///             self.source(),
///             vec![Host::new("h1").with_address("10.0.0.4"), Host::new("h2")],
///         ))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let s = Fixed.hosts().await.unwrap();
/// assert_eq!(s.live_matches(Some("h2"), &[]).len(), 1);
/// assert_eq!(s.live_matches(None, &["10.0.0.4:6783".into()]).len(), 1);
/// # });
/// ```
#[async_trait]
pub trait HostInventory: Send + Sync {
    /// The inventory's name, recorded with every peer bound to one of its hosts.
    fn source(&self) -> &str;

    /// One complete listing.
    async fn hosts(&self) -> Result<HostSnapshot, WeaveError>;
}

/// Any [`Scaler`] as an inventory: its [`Scaler::list`], through [`Host::from_machine`].
pub struct ScalerInventory<S> {
    scaler: S,
    source: String,
}

impl<S> std::fmt::Debug for ScalerInventory<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScalerInventory")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<S: Scaler> ScalerInventory<S> {
    /// The machines of `scaler`, named `source` (e.g. `fly:my-app`).
    pub fn new(scaler: S, source: impl Into<String>) -> Self {
        ScalerInventory {
            scaler,
            source: source.into(),
        }
    }
}

#[async_trait]
impl<S: Scaler> HostInventory for ScalerInventory<S> {
    fn source(&self) -> &str {
        &self.source
    }

    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        let machines = self
            .scaler
            .list()
            .await
            .map_err(|e| WeaveError::Inventory {
                source_name: self.source.clone(),
                message: e.to_string(),
            })?;
        Ok(HostSnapshot::from_machines(self.source.clone(), &machines))
    }
}

/// A program that prints the hosts ([`parse_hosts`] format) and exits 0. Run without a
/// shell, with a timeout; a non-zero exit, a timeout or an unparsable listing is an error.
#[derive(Clone, Debug)]
pub struct CommandInventory {
    argv: Vec<String>,
    source: String,
    runner: LocalRunner,
}

impl CommandInventory {
    /// Runs `argv` (program first) with a `timeout`.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when `argv` is empty.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Result<Self, WeaveError> {
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(WeaveError::config("the inventory command is empty"));
        }
        Ok(CommandInventory {
            source: format!("command:{}", crate::host::shell_join(&argv)),
            argv,
            runner: LocalRunner::new(timeout),
        })
    }
}

#[async_trait]
impl HostInventory for CommandInventory {
    fn source(&self) -> &str {
        &self.source
    }

    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        let err = inventory_error(&self.source);
        let out = self
            .runner
            .run("localhost", &self.argv)
            .await
            .map_err(|e| err(e.to_string()))?;
        if !out.success() {
            return Err(err(format!(
                "exited with {}: {}",
                out.code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "a signal".into()),
                truncate(&out.stderr)
            )));
        }
        let hosts = parse_hosts(&out.stdout).map_err(err)?;
        Ok(HostSnapshot::new(self.source.clone(), hosts))
    }
}

/// An HTTP(S) endpoint that answers the hosts ([`parse_hosts`] format) with a 2xx status.
#[derive(Clone, Debug)]
pub struct HttpInventory {
    url: reqwest::Url,
    source: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl HttpInventory {
    /// `GET url` with a `timeout`.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when `url` is not an `http://` or `https://` URL, or is
    /// `https://` in a build without the crate's `tls` feature.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, WeaveError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| WeaveError::config(format!("inventory URL {url:?}: {e}")))?;
        crate::client::check_http_url("inventory URL", "http://host[:port]/path", url, &parsed)?;
        let mut shown = parsed.clone();
        // Never record credentials in the source name (it is logged and written to the ledger).
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        shown.set_query(None);
        Ok(HttpInventory {
            source: format!("http:{shown}"),
            url: parsed,
            http: reqwest::Client::new(),
            timeout,
        })
    }
}

#[async_trait]
impl HostInventory for HttpInventory {
    fn source(&self) -> &str {
        &self.source
    }

    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        let err = inventory_error(&self.source);
        let call = async {
            let resp = self
                .http
                .get(self.url.clone())
                .send()
                .await
                .map_err(|e| err(crate::error::transport_cause(&e)))?;
            let status = resp.status();
            let body = resp
                .text()
                .await
                .map_err(|e| err(crate::error::transport_cause(&e)))?;
            if !status.is_success() {
                return Err(err(format!("HTTP {status}: {}", truncate(&body))));
            }
            parse_hosts(&body).map_err(err)
        };
        let hosts = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.timeout)))??;
        Ok(HostSnapshot::new(self.source.clone(), hosts))
    }
}

/// Builds the [`WeaveError::Inventory`] of the inventory named `source`.
fn inventory_error(source: &str) -> impl Fn(String) -> WeaveError + Copy + '_ {
    move |message| WeaveError::Inventory {
        source_name: source.to_string(),
        message,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonListing {
    List(Vec<JsonHost>),
    Object { hosts: Vec<JsonHost> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHost {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    state: JsonState,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonState {
    #[default]
    Live,
    Gone,
}

/// Parses a host listing (the module docs give the format). Ids must be unique and
/// non-empty.
///
/// ```
/// use fleetscale_weave::inventory::parse_hosts;
/// let hosts = parse_hosts("i-1 ip-10-0-1-23 10.0.1.23\n# a comment\n\ni-2\n").unwrap();
/// assert_eq!(hosts.len(), 2);
/// assert_eq!(hosts[0].addresses, vec!["10.0.1.23".to_string()]);
/// assert!(hosts[0].names.contains(&"ip-10-0-1-23".to_string()));
/// assert!(parse_hosts("[{\"id\": \"i-3\", \"state\": \"gone\"}]").unwrap()[0].gone);
/// ```
///
/// # Errors
/// A message naming the line (text) or the position (JSON) at fault.
pub fn parse_hosts(text: &str) -> Result<Vec<Host>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let hosts = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let listing: JsonListing =
            serde_json::from_str(text).map_err(|e| format!("JSON host listing: {e}"))?;
        let list = match listing {
            JsonListing::List(l) | JsonListing::Object { hosts: l } => l,
        };
        let mut out = Vec::new();
        for (i, j) in list.into_iter().enumerate() {
            if j.id.trim().is_empty() {
                return Err(format!(
                    "JSON host listing: host #{} has an empty id",
                    i + 1
                ));
            }
            let mut h = Host::new(j.id.trim());
            for n in j.names {
                h = h.with_name(n.trim());
            }
            for a in j.addresses {
                let a = a.trim();
                if strip_port(a).parse::<IpAddr>().is_err() {
                    return Err(format!(
                        "JSON host listing: host {:?}: {a:?} is not an IP address",
                        h.id
                    ));
                }
                h = h.with_address(a);
            }
            h.gone = matches!(j.state, JsonState::Gone);
            out.push(h);
        }
        out
    } else {
        let mut out = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(id) = words.next() else {
                continue;
            };
            let mut h = Host::new(id);
            for w in words {
                h = if w.parse::<IpAddr>().is_ok() {
                    h.with_address(w)
                } else {
                    h.with_name(w)
                };
            }
            if id.parse::<IpAddr>().is_ok() {
                h = h.with_address(id);
            }
            out.push(h);
        }
        out
    };
    for (i, h) in hosts.iter().enumerate() {
        if hosts[..i].iter().any(|g| g.id == h.id) {
            return Err(format!("host id {:?} is listed twice", h.id));
        }
    }
    Ok(hosts)
}

/// `10.0.0.4:6783` → `10.0.0.4`; `[fe80::1]:6783` → `fe80::1`; anything else unchanged.
pub(crate) fn strip_port(addr: &str) -> String {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((ip, _)) = rest.split_once(']') {
            return ip.to_string();
        }
    }
    if addr.parse::<IpAddr>().is_ok() {
        return addr.to_string();
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_listings() {
        let hosts = parse_hosts(
            "\u{feff}i-1  ip-10-0-1-23.ec2.internal 10.0.1.23  # comment\n\
             10.0.1.24\n   \n# only a comment\n",
        )
        .unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].id, "i-1");
        assert_eq!(
            hosts[0].names,
            vec!["i-1".to_string(), "ip-10-0-1-23.ec2.internal".to_string()]
        );
        assert_eq!(hosts[1].addresses, vec!["10.0.1.24".to_string()]);
        assert!(hosts.iter().all(|h| !h.gone));

        let json = r#"{"hosts": [{"id": "m1", "names": ["web-1"], "addresses": ["10.0.0.1"]},
                                 {"id": "m2", "state": "gone"}]}"#;
        let hosts = parse_hosts(json).unwrap();
        assert!(hosts[1].gone && !hosts[0].gone);
        assert_eq!(parse_hosts("[]").unwrap(), vec![]);
        assert_eq!(parse_hosts("").unwrap(), vec![]);

        for (bad, want) in [
            ("a\na\n", "listed twice"),
            (r#"[{"id": ""}]"#, "empty id"),
            (
                r#"[{"id": "x", "addresses": ["nope"]}]"#,
                "not an IP address",
            ),
            (r#"[{"id": "x", "colour": "red"}]"#, "JSON host listing"),
            (r#"[{"id": "x", "state": "dead"}]"#, "JSON host listing"),
            ("{", "JSON host listing"),
        ] {
            let e = parse_hosts(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn matching_by_name_first_label_and_address() {
        let h = Host::new("i-1")
            .with_name("ip-10-0-1-23.ec2.internal")
            .with_name("ip-10-0-1-23")
            .with_address("10.0.1.23");
        assert!(h.matches(Some("ip-10-0-1-23"), &[]));
        assert!(h.matches(Some("ip-10-0-1-23.eu-west-1.compute.internal"), &[]));
        assert!(h.matches(Some("i-1"), &[]));
        assert!(h.matches(None, &["10.0.1.23:47000".into()]));
        assert!(!h.matches(Some(""), &[]));
        assert!(!h.matches(Some("ip-10-0-1-2"), &["10.0.1.2".into()]));
        assert!(!h.matches(None, &[]));
    }

    #[test]
    fn machines_become_hosts() {
        let mut m = Machine::new("i-9", MachineState::Stopped)
            .with_address("10.0.0.9")
            .with_label("hostname", "box-9.internal");
        m.name = "ip-10-0-0-9.ec2.internal".into();
        let h = Host::from_machine(&m);
        assert!(!h.gone, "a stopped machine is not gone");
        for n in [
            "i-9",
            "ip-10-0-0-9.ec2.internal",
            "ip-10-0-0-9",
            "box-9.internal",
            "box-9",
        ] {
            assert!(h.names.contains(&n.to_string()), "{n}: {:?}", h.names);
        }
        m.state = MachineState::Destroyed;
        assert!(Host::from_machine(&m).gone);
        m.state = MachineState::Destroying;
        assert!(
            !Host::from_machine(&m).gone,
            "being destroyed is not gone yet"
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("10.0.0.1:6783"), "10.0.0.1");
        assert_eq!(strip_port("10.0.0.1"), "10.0.0.1");
        assert_eq!(strip_port("[fe80::1]:6783"), "fe80::1");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
        assert_eq!(strip_port("host:80"), "host");
    }

    #[tokio::test]
    async fn command_inventory_runs_without_a_shell_and_reports_failures() {
        let inv = CommandInventory::new(
            vec!["printf".into(), "h1 10.0.0.1\\nh2\\n".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        let s = inv.hosts().await.unwrap();
        assert_eq!(s.hosts.len(), 2);
        assert!(s.source.starts_with("command:printf"));
        let failing = CommandInventory::new(
            vec!["sh".into(), "-c".into(), "echo boom >&2; exit 3".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        let e = failing.hosts().await.unwrap_err().to_string();
        assert!(e.contains("exited with 3") && e.contains("boom"), "{e}");
        let missing =
            CommandInventory::new(vec!["/nonexistent/list".into()], Duration::from_secs(10))
                .unwrap();
        assert!(missing.hosts().await.is_err());
        assert!(CommandInventory::new(vec![], Duration::from_secs(1)).is_err());
    }
}
