//! Seeding the fake Machines API with apps, and summarising its request log.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetscale_fly::fake::RequestRecord;
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
use fleetscale_fly::{ClientConfig, FlyError, MachinesClient, PacingConfig};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The config of every seeded machine: a small web service in process group `app`, shaped
/// like the Machines API documentation's example.
pub fn app_config() -> Value {
    json!({
        "image": "registry.fly.io/bench-app:deployment-1",
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "stop", "autostart": true,
                      "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
        "env": {"APP_ENV": "bench"},
        "metadata": {"fly_process_group": "app", "fly_release_id": "rel-1", "fly_release_version": "1"}
    })
}

/// The name of app number `i`.
pub fn app_name(i: usize) -> String {
    format!("bench-app-{i:05}")
}

/// A client of the fake at `base_url` without token or pacing: the one that seeds fleets
/// (pacing would only slow the seeding down).
pub fn seeding_client(base_url: String) -> MachinesClient {
    MachinesClient::new(
        None,
        ClientConfig {
            base_url,
            pacing: PacingConfig::disabled(),
            ..ClientConfig::default()
        },
    )
    .expect("a client of the fake")
}

/// Creates `apps` apps with `machines` started machines each, through the API (as a user
/// would), at most `concurrency` apps at a time. Use a client without pacing and a fake
/// without latency or rate limits, or seeding takes as long as Fly would make it.
///
/// # Errors
/// The first failed API call.
pub async fn seed(
    client: &MachinesClient,
    apps: usize,
    machines: usize,
    concurrency: usize,
) -> Result<(), FlyError> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..apps {
        let client = client.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let app = app_name(i);
            client
                .create_app(&CreateAppRequest {
                    app_name: app.clone(),
                    org_slug: "bench-org".into(),
                    network: None,
                })
                .await?;
            for _ in 0..machines {
                client
                    .create_machine(
                        &app,
                        &CreateMachineRequest {
                            config: app_config(),
                            region: Some("ams".into()),
                            ..CreateMachineRequest::default()
                        },
                    )
                    .await?;
            }
            Ok::<(), FlyError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(FlyError::Config(format!("seeding task failed: {e}"))),
        }
    }
    Ok(())
}

/// The kind of a Machines API request, from its method and path.
pub fn request_kind(method: &str, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["v1", "apps", _, "machines"]) => "list",
        ("POST", ["v1", "apps", _, "machines"]) => "create",
        ("GET", ["v1", "apps", _, "machines", _]) => "get",
        ("DELETE", ["v1", "apps", _, "machines", _]) => "destroy",
        (_, ["v1", "apps", _, "machines", _, "start"]) => "start",
        (_, ["v1", "apps", _, "machines", _, "stop"]) => "stop",
        (_, ["v1", "apps", _, "machines", _, "suspend"]) => "suspend",
        (_, ["v1", "apps", _, "machines", _, "wait"]) => "wait",
        (_, ["v1", "apps", _, "machines", _, "lease"]) => "lease",
        (_, ["v1", "apps", _, "machines", _, "cordon" | "uncordon"]) => "cordon",
        (_, ["v1", "apps", ..]) => "app",
        _ => "other",
    }
}

/// Every kind [`request_kind`] returns.
pub const REQUEST_KINDS: [&str; 12] = [
    "list", "create", "get", "destroy", "start", "stop", "suspend", "wait", "lease", "cordon",
    "app", "other",
];

/// Counts of a request log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSummary {
    /// Requests by kind (see [`request_kind`]).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Every request.
    pub total: u64,
    /// Answers `429`.
    pub rate_limited: u64,
    /// Other answers `>= 400`, and dropped or hung requests (status 0).
    pub failed: u64,
}

impl RequestSummary {
    /// Summarises `log`.
    pub fn of(log: &[RequestRecord]) -> RequestSummary {
        let mut s = RequestSummary::default();
        for r in log {
            *s.by_kind
                .entry(request_kind(&r.method, &r.path))
                .or_default() += 1;
            s.total += 1;
            if r.status == 429 {
                s.rate_limited += 1;
            } else if r.status >= 400 || r.status == 0 {
                s.failed += 1;
            }
        }
        s
    }

    /// Requests of one kind.
    pub fn kind(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// `list=1000 create=5000 ...` in kind order.
    pub fn breakdown(&self) -> String {
        self.by_kind
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One line for a pipe: `total=T rate_limited=R failed=F` then [`RequestSummary::breakdown`].
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "total={} rate_limited={} failed={}",
            self.total, self.rate_limited, self.failed
        );
        for (k, v) in &self.by_kind {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    /// Reads what [`RequestSummary::to_line`] wrote.
    ///
    /// # Errors
    /// A word that is not `key=count` with a known key.
    pub fn from_line(line: &str) -> Result<RequestSummary, String> {
        let mut s = RequestSummary::default();
        for word in line.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not key=count"))?;
            let v: u64 = v.parse().map_err(|e| format!("{word:?}: {e}"))?;
            match k {
                "total" => s.total = v,
                "rate_limited" => s.rate_limited = v,
                "failed" => s.failed = v,
                _ => {
                    let kind = REQUEST_KINDS
                        .iter()
                        .find(|&&known| known == k)
                        .ok_or_else(|| format!("unknown request kind {k:?}"))?;
                    s.by_kind.insert(kind, v);
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_api_paths() {
        for (method, path, kind) in [
            ("GET", "/v1/apps/a/machines", "list"),
            ("POST", "/v1/apps/a/machines", "create"),
            ("GET", "/v1/apps/a/machines/m1", "get"),
            ("DELETE", "/v1/apps/a/machines/m1", "destroy"),
            ("POST", "/v1/apps/a/machines/m1/start", "start"),
            ("POST", "/v1/apps/a/machines/m1/lease", "lease"),
            ("DELETE", "/v1/apps/a/machines/m1/lease", "lease"),
            ("GET", "/v1/apps", "app"),
            ("GET", "/metrics", "other"),
        ] {
            assert_eq!(request_kind(method, path), kind, "{method} {path}");
        }
    }

    #[test]
    fn summaries_survive_the_pipe() {
        let mut s = RequestSummary {
            total: 7,
            rate_limited: 1,
            failed: 2,
            ..RequestSummary::default()
        };
        s.by_kind.insert("list", 3);
        s.by_kind.insert("create", 4);
        assert_eq!(RequestSummary::from_line(&s.to_line()), Ok(s));
        assert!(RequestSummary::from_line("total=1 bogus=2").is_err());
        assert!(RequestSummary::from_line("total=x").is_err());
    }
}
