//! [`EtcdConfig`]: where etcd is, how to reach it (TLS, user and password) and the timing of
//! leases, checked before any request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Deserialize;

use crate::EtcdError;

/// The default key prefix: every key this crate writes starts with it.
pub const DEFAULT_PREFIX: &str = "/fleetscale/";

/// The default lease TTL of a replica (and of a ledger lock): 10 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The default deadline of one etcd request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The default deadline of connecting to an endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A password (`fleetscale_core::Secret`): `Debug`, `Display` and serialised form print
/// `<redacted>`.
pub use fleetscale_core::Secret;

/// How to reach etcd and how long leases live.
///
/// The settings etcd users know from `etcdctl`: endpoints (`--endpoints`), user and password
/// (`--user`, etcd's own authentication), a CA to trust (`--cacert`), a client certificate and
/// key for client-certificate authentication (`--cert`, `--key`), the server name to check
/// in the server's certificate when it differs from the endpoint's host
/// (`--discovery-srv`-less deployments behind an address), plus the timing of leases.
///
/// Deserializes from a table with these field names (durations as `"10s"`), unknown fields
/// refused, every field optional but `endpoints`.
///
/// ```
/// use std::time::Duration;
/// use fleetscale_etcd::EtcdConfig;
///
/// let config = EtcdConfig::new(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
///     .with_lease_ttl(Duration::from_secs(5));
/// config.validate().unwrap();
/// assert_eq!(config.keep_alive_interval(), Duration::from_secs(5) / 3);
///
/// let bad = EtcdConfig::new(["ftp://127.0.0.1:2379"]);
/// assert!(bad.validate().unwrap_err().to_string().contains("ftp://"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members: `http://host:2379`, `https://host:2379`, or
    /// `host:2379` (https when TLS settings are given). All members should be listed: the
    /// client spreads requests over them and goes on with the others when one is down.
    pub endpoints: Vec<String>,
    /// Prefix of every key written (default [`DEFAULT_PREFIX`]); replicas sharing targets
    /// must use the same one, unrelated deployments different ones.
    pub prefix: String,
    /// TTL of the lease each replica and each ledger lock holder registers under (whole
    /// seconds, at least 2 s; default 10 s). A replica that dies is replaced after about this
    /// long; a replica that cannot reach etcd stops acting before it ends.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long before the lease could expire in etcd a replica stops acting when its
    /// keep-alives are not acknowledged (default a quarter of the TTL). It covers the time an
    /// action takes to reach the backend after its fence was checked, and clock-rate drift.
    #[serde(with = "humantime_serde")]
    pub fence_margin: Option<Duration>,
    /// Deadline of one etcd request (default 2 s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Deadline of connecting to one endpoint (default 3 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// This replica's name in etcd (default: the host name and a random suffix, new at every
    /// start). Two live replicas with the same name are refused.
    pub replica_name: Option<String>,
    /// User for etcd's authentication (`etcdctl --user`).
    pub username: Option<String>,
    /// The password of `username` (redacted in `Debug`, `Display` and serialised form).
    pub password: Option<Secret>,
    /// CA certificate (PEM) to trust instead of the system's roots. A server certificate this
    /// CA did not sign makes every request [`EtcdError::Unavailable`], usually with the
    /// handshake's words (`invalid peer certificate: UnknownIssuer`), sometimes only as `no
    /// answer within` the request timeout (the client's balanced channel can hold a request
    /// for a ready endpoint instead of returning the handshake error).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the endpoint's host.
    pub tls_server_name: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
            fence_margin: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            replica_name: None,
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_server_name: None,
        }
    }
}

impl EtcdConfig {
    /// The defaults with these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the lease TTL.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets the fence margin.
    pub fn with_fence_margin(mut self, margin: Duration) -> Self {
        self.fence_margin = Some(margin);
        self
    }

    /// Sets the request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the replica's name.
    pub fn with_replica_name(mut self, name: impl Into<String>) -> Self {
        self.replica_name = Some(name.into());
        self
    }

    /// Sets user and password.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(Secret::new(password));
        self
    }

    /// Sets the CA certificate file.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the client certificate and key files.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Whether TLS is used (a TLS file is set, or an endpoint says `https://`).
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.tls_server_name.is_some()
            || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The fence margin in effect (the setting, or a quarter of the TTL).
    pub fn effective_fence_margin(&self) -> Duration {
        self.fence_margin.unwrap_or(self.lease_ttl / 4)
    }

    /// How often a lease is kept alive: a third of its TTL, so that two keep-alives in a row
    /// can fail before the replica stops acting.
    pub fn keep_alive_interval(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// The prefix, ending with `/`.
    pub fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim();
        if p.ends_with('/') {
            p.to_string()
        } else {
            format!("{p}/")
        }
    }

    /// Checks every setting, reading the TLS files, without contacting etcd.
    ///
    /// # Errors
    /// [`EtcdError::Config`] naming the setting; [`EtcdError::TlsFile`] for a file that cannot
    /// be read.
    pub fn validate(&self) -> Result<(), EtcdError> {
        self.endpoint_urls()?;
        if self.prefix.trim().is_empty() {
            return Err(EtcdError::config(
                "prefix must not be empty (default /fleetscale/)",
            ));
        }
        let ttl = self.lease_ttl;
        if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
            return Err(EtcdError::config(format!(
                "lease_ttl must be a whole number of seconds, at least 2 s (etcd grants leases in seconds); got {}",
                fleetscale_core::format_seconds(ttl)
            )));
        }
        let margin = self.effective_fence_margin();
        if margin.is_zero() || margin > ttl / 2 {
            return Err(EtcdError::config(format!(
                "fence_margin must be above 0 and at most half the lease TTL ({}); got {}",
                fleetscale_core::format_seconds(ttl / 2),
                fleetscale_core::format_seconds(margin)
            )));
        }
        if self.request_timeout.is_zero() || self.request_timeout >= ttl {
            return Err(EtcdError::config(format!(
                "request_timeout must be above 0 and below the lease TTL ({}); got {}",
                fleetscale_core::format_seconds(ttl),
                fleetscale_core::format_seconds(self.request_timeout)
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(EtcdError::config("connect_timeout must be above 0"));
        }
        if let Some(name) = &self.replica_name {
            if name.trim().is_empty() || name.contains('/') || name.chars().any(char::is_control) {
                return Err(EtcdError::config(format!(
                    "replica_name {name:?} must be non-empty, without `/` or control characters"
                )));
            }
        }
        match (&self.username, &self.password) {
            (Some(u), Some(_)) if u.trim().is_empty() => {
                return Err(EtcdError::config("username must not be empty"))
            }
            (Some(_), None) => {
                return Err(EtcdError::config(
                    "username is set but password is not (etcd authenticates with both)",
                ))
            }
            (None, Some(_)) => {
                return Err(EtcdError::config(
                    "password is set but username is not (etcd authenticates with both)",
                ))
            }
            _ => {}
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(EtcdError::config(
                "cert_file and key_file go together (a client certificate needs its key)",
            ));
        }
        self.tls_options()?;
        Ok(())
    }

    /// The endpoints as URLs with a scheme.
    fn endpoint_urls(&self) -> Result<Vec<String>, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::config(
                "endpoints is empty: list the client URLs of the etcd members, e.g. [\"http://10.0.0.1:2379\"]",
            ));
        }
        let tls_files =
            self.ca_file.is_some() || self.cert_file.is_some() || self.tls_server_name.is_some();
        let mut schemes = Vec::new();
        let mut out = Vec::new();
        for e in &self.endpoints {
            let e = e.trim();
            let (scheme, rest) = match e.split_once("://") {
                Some((s, rest)) => (s.to_ascii_lowercase(), rest),
                None => (if tls_files { "https" } else { "http" }.to_string(), e),
            };
            if scheme != "http" && scheme != "https" {
                return Err(EtcdError::config(format!(
                    "endpoint {e}: the scheme must be http:// or https://"
                )));
            }
            let hostport = rest.trim_end_matches('/');
            let bad = || {
                EtcdError::config(format!(
                    "endpoint {e}: expected host:port (e.g. http://10.0.0.1:2379)"
                ))
            };
            if hostport.contains('/') || hostport.contains('@') {
                return Err(bad());
            }
            let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad());
            }
            schemes.push(scheme.clone());
            out.push(format!("{scheme}://{hostport}"));
        }
        schemes.dedup();
        if schemes.len() > 1 {
            return Err(EtcdError::config(
                "endpoints mix http:// and https://: use one scheme for all members",
            ));
        }
        if schemes[0] == "http" && tls_files {
            return Err(EtcdError::config(
                "TLS settings are given but the endpoints say http://: use https:// (or leave the scheme out)",
            ));
        }
        Ok(out)
    }

    fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
        std::fs::read(path).map_err(|source| EtcdError::TlsFile {
            what,
            path: path.display().to_string(),
            source,
        })
    }

    /// TLS options, reading the files; `None` when TLS is not used.
    fn tls_options(&self) -> Result<Option<TlsOptions>, EtcdError> {
        if !self.uses_tls() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        match &self.ca_file {
            Some(ca) => {
                let pem = Self::read("CA certificate", ca)?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(EtcdError::config(format!(
                        "ca_file {}: not a PEM certificate",
                        ca.display()
                    )));
                }
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let cert_pem = Self::read("client certificate", cert)?;
            let key_pem = Self::read("client key", key)?;
            if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(EtcdError::config(format!(
                    "cert_file {}: not a PEM certificate",
                    cert.display()
                )));
            }
            if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                return Err(EtcdError::config(format!(
                    "key_file {}: not a PEM private key",
                    key.display()
                )));
            }
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// Connects a client (checking the settings first). Without user and password this does
    /// not contact etcd (connections are made on the first request); with them it
    /// authenticates, so etcd must answer.
    ///
    /// # Errors
    /// Settings errors as [`EtcdConfig::validate`]; [`EtcdError::Unauthorized`] for refused
    /// credentials; [`EtcdError::Unavailable`] when etcd cannot be reached to authenticate.
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        self.validate()?;
        let urls = self.endpoint_urls()?;
        let mut options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            // HTTP/2 pings find a dead connection (a member killed without a FIN) well
            // before the lease could expire.
            .with_keep_alive(self.keep_alive_interval(), self.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader answers "no leader" at once instead of
            // holding the request.
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            options = options
                .with_user(u.clone(), p.expose().to_string())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = self.tls_options()? {
            options = options.with_tls(tls);
        }
        let connect = Client::connect(urls, Some(options));
        match tokio::time::timeout(self.connect_timeout + self.request_timeout, connect).await {
            Ok(r) => r.map_err(|e| EtcdError::client("connecting", e)),
            Err(_) => Err(EtcdError::timeout(
                "connecting",
                self.connect_timeout + self.request_timeout,
            )),
        }
    }

    /// The client kept in `slot`, connecting (as [`EtcdConfig::connect`]) and keeping it there
    /// first when there is none yet: the coordinator and the ledger connect on first use and
    /// share one connection after. A failed connect leaves the slot empty, so the next call
    /// tries again.
    pub(crate) async fn connect_once(
        &self,
        slot: &tokio::sync::Mutex<Option<Client>>,
    ) -> Result<Client, EtcdError> {
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_with_an_endpoint() {
        let c = EtcdConfig::new(["127.0.0.1:2379"]);
        c.validate().unwrap();
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.effective_fence_margin(), Duration::from_millis(2500));
        assert_eq!(c.endpoint_urls().unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(c.normalized_prefix(), "/fleetscale/");
        assert!(!c.uses_tls());
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let cases: Vec<(EtcdConfig, &str)> = vec![
            (EtcdConfig::default(), "endpoints is empty"),
            (EtcdConfig::new(["http://h"]), "expected host:port"),
            (EtcdConfig::new(["http://h:0"]), "expected host:port"),
            (EtcdConfig::new(["http://u:p@h:1"]), "expected host:port"),
            (
                EtcdConfig::new(["http://a:1", "https://b:1"]),
                "mix http:// and https://",
            ),
            (
                EtcdConfig::new(["a:1"]).with_lease_ttl(Duration::from_millis(2500)),
                "whole number of seconds",
            ),
            (
                EtcdConfig::new(["a:1"]).with_lease_ttl(Duration::from_secs(1)),
                "at least 2 s",
            ),
            (
                EtcdConfig::new(["a:1"]).with_fence_margin(Duration::from_secs(6)),
                "fence_margin",
            ),
            (
                EtcdConfig::new(["a:1"]).with_request_timeout(Duration::from_secs(10)),
                "request_timeout",
            ),
            (
                EtcdConfig::new(["a:1"]).with_replica_name("a/b"),
                "replica_name",
            ),
            (
                EtcdConfig {
                    username: Some("root".into()),
                    ..EtcdConfig::new(["a:1"])
                },
                "password is not",
            ),
            (
                EtcdConfig {
                    cert_file: Some("c.pem".into()),
                    ..EtcdConfig::new(["a:1"])
                },
                "cert_file and key_file",
            ),
            (
                EtcdConfig::new(["http://a:1"]).with_ca_file("/nonexistent/ca.pem"),
                "use https://",
            ),
            (
                EtcdConfig::new(["a:1"]).with_ca_file("/nonexistent/ca.pem"),
                "cannot read the CA certificate /nonexistent/ca.pem",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{c:?}: {e} (wanted {want})");
        }
    }

    #[test]
    fn the_password_never_prints() {
        let c = EtcdConfig::new(["a:1"]).with_user("root", "hunter2-very-secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn deserializes_with_durations_and_refuses_unknown_fields() {
        let c: EtcdConfig = serde_json::from_str(
            r#"{"endpoints":["http://127.0.0.1:2379"],"lease_ttl":"4s","fence_margin":"500ms","password":"pw","username":"u"}"#,
        )
        .unwrap();
        assert_eq!(c.lease_ttl, Duration::from_secs(4));
        assert_eq!(c.fence_margin, Some(Duration::from_millis(500)));
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        c.validate().unwrap();
        let e = serde_json::from_str::<EtcdConfig>(r#"{"endpoint":["x:1"]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `endpoint`"), "{e}");
    }
}
