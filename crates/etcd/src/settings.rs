//! The etcd settings as the binaries take them: a `[coordination]` table of a configuration
//! file ([`CoordinationSection`]) and environment variables with a common prefix
//! ([`EtcdConfig::from_env`], e.g. `FAS_ETCD_ENDPOINTS`). Both end in an [`EtcdConfig`] checked
//! by [`EtcdConfig::validate`]; passwords may come from a file and never appear in errors or
//! `Debug`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{EtcdConfig, EtcdError, Secret};

/// Which coordination a `[coordination]` table asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordinationKind {
    /// This process owns every target (the default; no store).
    #[default]
    Single,
    /// Replicas share the targets through etcd.
    Etcd,
}

/// The `[coordination]` table of `fleetscale run`'s configuration file.
///
/// `type = "etcd"` (implied when endpoints are given) with the fields of [`EtcdConfig`],
/// `endpoints` also spelled `etcd`, and `password_file` as another way to the password (its
/// contents, a trailing newline removed). `type = "single"` (or no table) keeps one process
/// owning every target.
///
/// ```
/// use std::time::Duration;
/// use fleetscale_etcd::CoordinationSection;
///
/// let section: CoordinationSection = serde_json::from_str(
///     r#"{"type": "etcd", "endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
///         "lease_ttl": "6s", "prefix": "/autoscaler/"}"#,
/// ).unwrap();
/// let config = section.etcd_config().unwrap().expect("etcd");
/// assert_eq!(config.lease_ttl, Duration::from_secs(6));
///
/// let single: CoordinationSection = serde_json::from_str(r#"{"type": "single"}"#).unwrap();
/// assert!(single.etcd_config().unwrap().is_none());
///
/// let bad: CoordinationSection = serde_json::from_str(r#"{"type": "etcd"}"#).unwrap();
/// assert!(bad.etcd_config().unwrap_err().to_string().contains("endpoints"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationSection {
    /// `single` or `etcd` (default: `etcd` when endpoints are given, else `single`).
    #[serde(rename = "type")]
    pub kind: Option<CoordinationKind>,
    /// Client URLs of the etcd members ([`EtcdConfig::endpoints`]).
    #[serde(default, alias = "etcd")]
    pub endpoints: Vec<String>,
    /// [`EtcdConfig::prefix`].
    pub prefix: Option<String>,
    /// [`EtcdConfig::lease_ttl`].
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// [`EtcdConfig::fence_margin`].
    #[serde(default, with = "humantime_serde")]
    pub fence_margin: Option<Duration>,
    /// [`EtcdConfig::request_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// [`EtcdConfig::connect_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// [`EtcdConfig::replica_name`].
    pub replica_name: Option<String>,
    /// [`EtcdConfig::username`].
    pub username: Option<String>,
    /// [`EtcdConfig::password`] (use `${VAR}` in the file, or `password_file`).
    pub password: Option<Secret>,
    /// A file whose content (one trailing newline dropped) is the password; not with `password`.
    pub password_file: Option<PathBuf>,
    /// [`EtcdConfig::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// [`EtcdConfig::cert_file`].
    pub cert_file: Option<PathBuf>,
    /// [`EtcdConfig::key_file`].
    pub key_file: Option<PathBuf>,
    /// [`EtcdConfig::tls_server_name`].
    pub tls_server_name: Option<String>,
}

/// Reads a password file: its contents without the trailing newline.
fn read_password(path: &Path, setting: &str) -> Result<Secret, EtcdError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EtcdError::config(format!(
            "{setting} {}: cannot read the password file: {e}",
            path.display()
        ))
    })?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(EtcdError::config(format!(
            "{setting} {}: the password file is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

impl CoordinationSection {
    /// The etcd settings this table asks for (`None` for a single process), checked.
    ///
    /// # Errors
    /// [`EtcdError::Config`] naming the setting (endpoints with `type = "single"`, no
    /// endpoints with `type = "etcd"`, both `password` and `password_file`, an unreadable
    /// password file, and everything [`EtcdConfig::validate`] refuses); [`EtcdError::TlsFile`].
    pub fn etcd_config(&self) -> Result<Option<EtcdConfig>, EtcdError> {
        let kind = self.kind.unwrap_or(if self.endpoints.is_empty() {
            CoordinationKind::Single
        } else {
            CoordinationKind::Etcd
        });
        if kind == CoordinationKind::Single {
            if !self.endpoints.is_empty() {
                return Err(EtcdError::config(
                    "endpoints are given but type = \"single\": use type = \"etcd\" to share the targets through etcd",
                ));
            }
            return Ok(None);
        }
        if self.endpoints.is_empty() {
            return Err(EtcdError::config(
                "type = \"etcd\" needs endpoints, e.g. endpoints = [\"http://10.0.0.1:2379\"]",
            ));
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(EtcdError::config(
                    "password and password_file are both set: give one",
                ))
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(read_password(f, "password_file")?),
            (None, None) => None,
        };
        let d = EtcdConfig::default();
        let config = EtcdConfig {
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone().unwrap_or(d.prefix),
            lease_ttl: self.lease_ttl.unwrap_or(d.lease_ttl),
            fence_margin: self.fence_margin,
            request_timeout: self.request_timeout.unwrap_or(d.request_timeout),
            connect_timeout: self.connect_timeout.unwrap_or(d.connect_timeout),
            replica_name: self.replica_name.clone(),
            username: self.username.clone(),
            password,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
        };
        config.validate()?;
        Ok(Some(config))
    }
}

/// The names [`EtcdConfig::from_env`] reads, after the prefix, and what each sets.
pub const ENV_SETTINGS: [(&str, &str); 14] = [
    (
        "ENDPOINTS",
        "client URLs of the etcd members, comma separated (turns coordination on)",
    ),
    ("PREFIX", "key prefix (default /fleetscale/)"),
    (
        "LEASE_TTL",
        "lease TTL, whole seconds (default 10s): takeover after a replica's death",
    ),
    (
        "FENCE_MARGIN",
        "how long before the lease could expire a replica stops acting (default TTL/4)",
    ),
    (
        "REQUEST_TIMEOUT",
        "deadline of one etcd request (default 2s)",
    ),
    ("CONNECT_TIMEOUT", "deadline of connecting (default 3s)"),
    (
        "REPLICA_NAME",
        "this replica's name (default host name and a random suffix)",
    ),
    ("USERNAME", "etcd user"),
    ("PASSWORD", "its password"),
    ("PASSWORD_FILE", "a file holding the password"),
    ("CA_FILE", "CA certificate (PEM) to trust"),
    ("CERT_FILE", "client certificate (PEM)"),
    ("KEY_FILE", "its private key (PEM)"),
    (
        "SERVER_NAME",
        "name the server certificate must carry, when not the endpoint's host",
    ),
];

impl EtcdConfig {
    /// The etcd settings from environment variables named `prefix` + one of
    /// [`ENV_SETTINGS`] (e.g. `FAS_ETCD_ENDPOINTS`, `FAS_ETCD_LEASE_TTL=6s`), read through
    /// `getenv`; `None` when `<prefix>ENDPOINTS` is unset or empty and no other is set.
    /// Durations as `10s`, `1500ms`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use fleetscale_etcd::EtcdConfig;
    ///
    /// let env = HashMap::from([
    ///     ("FAS_ETCD_ENDPOINTS", "http://10.0.0.1:2379, http://10.0.0.2:2379"),
    ///     ("FAS_ETCD_LEASE_TTL", "6s"),
    /// ]);
    /// let getenv = |k: &str| env.get(k).map(|v| v.to_string());
    /// let config = EtcdConfig::from_env("FAS_ETCD_", &getenv).unwrap().unwrap();
    /// assert_eq!(config.endpoints.len(), 2);
    /// assert!(EtcdConfig::from_env("OTHER_", &getenv).unwrap().is_none());
    /// ```
    ///
    /// # Errors
    /// [`EtcdError::Config`] naming the variable (never showing a password): a setting without
    /// `<prefix>ENDPOINTS`, a malformed duration, both `PASSWORD` and `PASSWORD_FILE`, and
    /// everything [`EtcdConfig::validate`] refuses (prefixed with the variable names);
    /// [`EtcdError::TlsFile`].
    pub fn from_env(
        prefix: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<EtcdConfig>, EtcdError> {
        let get = |name: &str| {
            getenv(&format!("{prefix}{name}"))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoints: Vec<String> = get("ENDPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if endpoints.is_empty() {
            if let Some((name, _)) = ENV_SETTINGS.iter().find(|(n, _)| get(n).is_some()) {
                return Err(EtcdError::config(format!(
                    "{prefix}{name} is set but {prefix}ENDPOINTS is not: list the etcd members to share the work through etcd"
                )));
            }
            return Ok(None);
        }
        let duration = |name: &str| -> Result<Option<Duration>, EtcdError> {
            get(name)
                .map(|v| {
                    humantime_serde::re::humantime::parse_duration(&v).map_err(|e| {
                        EtcdError::config(format!(
                            "{prefix}{name}={v:?}: {e} (expected a duration like 10s or 1500ms)"
                        ))
                    })
                })
                .transpose()
        };
        let password = match (getenv(&format!("{prefix}PASSWORD")), get("PASSWORD_FILE")) {
            (Some(_), Some(_)) => {
                return Err(EtcdError::config(format!(
                    "{prefix}PASSWORD and {prefix}PASSWORD_FILE are both set: give one"
                )))
            }
            (Some(p), None) if !p.is_empty() => Some(Secret::new(p)),
            (None, Some(f)) => Some(read_password(
                Path::new(&f),
                &format!("{prefix}PASSWORD_FILE"),
            )?),
            _ => None,
        };
        let d = EtcdConfig::default();
        let config = EtcdConfig {
            endpoints,
            prefix: get("PREFIX").unwrap_or(d.prefix),
            lease_ttl: duration("LEASE_TTL")?.unwrap_or(d.lease_ttl),
            fence_margin: duration("FENCE_MARGIN")?,
            request_timeout: duration("REQUEST_TIMEOUT")?.unwrap_or(d.request_timeout),
            connect_timeout: duration("CONNECT_TIMEOUT")?.unwrap_or(d.connect_timeout),
            replica_name: get("REPLICA_NAME"),
            username: get("USERNAME"),
            password,
            ca_file: get("CA_FILE").map(PathBuf::from),
            cert_file: get("CERT_FILE").map(PathBuf::from),
            key_file: get("KEY_FILE").map(PathBuf::from),
            tls_server_name: get("SERVER_NAME"),
        };
        config.validate().map_err(|e| match e {
            EtcdError::Config { message } => EtcdError::config(format!(
                "{} (from the {prefix}* variables)",
                env_names(&message, prefix)
            )),
            other => other,
        })?;
        Ok(Some(config))
    }
}

/// A validation message with the settings' field names replaced by the variables' names.
fn env_names(message: &str, prefix: &str) -> String {
    let mut out = message.to_string();
    for (field, var) in [
        ("endpoints", "ENDPOINTS"),
        ("lease_ttl", "LEASE_TTL"),
        ("fence_margin", "FENCE_MARGIN"),
        ("request_timeout", "REQUEST_TIMEOUT"),
        ("connect_timeout", "CONNECT_TIMEOUT"),
        ("replica_name", "REPLICA_NAME"),
        ("username", "USERNAME"),
        ("password", "PASSWORD"),
        ("ca_file", "CA_FILE"),
        ("cert_file", "CERT_FILE"),
        ("key_file", "KEY_FILE"),
        ("prefix", "PREFIX"),
    ] {
        if out.starts_with(field) {
            out = format!("{prefix}{var}{}", &out[field.len()..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn env_settings_are_read_with_their_prefix() {
        let dir = tempfile_dir();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret-from-file\n").unwrap();
        let getenv = env(&[
            ("FAS_ETCD_ENDPOINTS", "http://a:2379,http://b:2379"),
            ("FAS_ETCD_PREFIX", "/fas/"),
            ("FAS_ETCD_LEASE_TTL", "6s"),
            ("FAS_ETCD_FENCE_MARGIN", "1500ms"),
            ("FAS_ETCD_REPLICA_NAME", "fas-1"),
            ("FAS_ETCD_USERNAME", "autoscaler"),
            ("FAS_ETCD_PASSWORD_FILE", pw.to_str().unwrap()),
        ]);
        let c = EtcdConfig::from_env("FAS_ETCD_", &getenv).unwrap().unwrap();
        assert_eq!(c.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.prefix, "/fas/");
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
        assert_eq!(c.fence_margin, Some(Duration::from_millis(1500)));
        assert_eq!(c.replica_name.as_deref(), Some("fas-1"));
        assert_eq!(c.password.unwrap().expose(), "s3cret-from-file");
        assert!(EtcdConfig::from_env("FAS_ETCD_", &env(&[]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_env_settings_name_the_variable_and_never_the_password() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("X_LEASE_TTL", "6s")],
                "X_LEASE_TTL is set but X_ENDPOINTS is not",
            ),
            (
                vec![("X_ENDPOINTS", "a:1"), ("X_LEASE_TTL", "six")],
                "X_LEASE_TTL=\"six\"",
            ),
            (
                vec![("X_ENDPOINTS", "a:1"), ("X_LEASE_TTL", "1s")],
                "X_LEASE_TTL must be a whole number of seconds, at least 2 s",
            ),
            (vec![("X_ENDPOINTS", "ftp://a:1")], "endpoint ftp://a:1"),
            (
                vec![("X_ENDPOINTS", "a:1"), ("X_PASSWORD", "hunter2-secret")],
                "X_PASSWORD is set but username is not",
            ),
            (
                vec![
                    ("X_ENDPOINTS", "a:1"),
                    ("X_PASSWORD", "hunter2-secret"),
                    ("X_PASSWORD_FILE", "/nonexistent"),
                ],
                "X_PASSWORD and X_PASSWORD_FILE are both set",
            ),
            (
                vec![
                    ("X_ENDPOINTS", "a:1"),
                    ("X_USERNAME", "u"),
                    ("X_PASSWORD_FILE", "/nonexistent/pw"),
                ],
                "X_PASSWORD_FILE /nonexistent/pw: cannot read the password file",
            ),
        ];
        for (pairs, want) in cases {
            let e = EtcdConfig::from_env("X_", &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{pairs:?}: {e} (wanted {want})");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_section_reads_etcd_alias_password_file_and_refuses_mixtures() {
        let dir = tempfile_dir();
        let pw = dir.join("pw");
        std::fs::write(&pw, "pw-from-file\r\n").unwrap();
        let s: CoordinationSection = serde_json::from_value(serde_json::json!({
            "etcd": ["http://127.0.0.1:2379"],
            "username": "root",
            "password_file": pw,
        }))
        .unwrap();
        let c = s.etcd_config().unwrap().unwrap();
        assert_eq!(c.password.unwrap().expose(), "pw-from-file");
        assert_eq!(c.lease_ttl, crate::DEFAULT_LEASE_TTL);

        let bad = |v: serde_json::Value, want: &str| {
            let s: CoordinationSection = serde_json::from_value(v.clone()).unwrap();
            let e = s.etcd_config().unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e} (wanted {want})");
            assert!(!e.contains("hunter2"), "{e}");
        };
        bad(
            serde_json::json!({"type": "single", "endpoints": ["a:1"]}),
            "type = \"single\"",
        );
        bad(
            serde_json::json!({"endpoints": ["a:1"], "username": "u", "password": "hunter2", "password_file": "/x"}),
            "password and password_file are both set",
        );
        bad(
            serde_json::json!({"endpoints": ["a:1"], "lease_ttl": "1s"}),
            "lease_ttl",
        );
        let unknown = serde_json::from_value::<CoordinationSection>(
            serde_json::json!({"type": "etcd", "endpoint": ["a:1"]}),
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("unknown field `endpoint`"));
        let kind = serde_json::from_value::<CoordinationSection>(serde_json::json!({"type": "zk"}))
            .unwrap_err();
        assert!(kind.to_string().contains("zk"), "{kind}");
    }

    /// A fresh directory under the system's temporary directory (removed with the process's
    /// temporary files; tests run without the optional `tempfile` dependency).
    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fleetscale-etcd-settings-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
