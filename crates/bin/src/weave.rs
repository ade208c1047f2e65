//! `fleetscale weave reclaim`: the asynchronous reclaim process of Weave's autoscaling guide,
//! as a daemon (or one pass with `--once`), over a host inventory.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use fleetscale_fly::{ClientConfig, FlyScaler, FlyScalerConfig, MachinesClient, Token};
use fleetscale_weave::inventory::{CommandInventory, HostInventory, HttpInventory};
use fleetscale_weave::{FixedPeer, PeerName, ReclaimConfig, Reclaimer, ScalerInventory};
use tokio_util::sync::CancellationToken;

use crate::cli::ReclaimArgs;
use crate::error::{BinError, Result};
use crate::fas::wait_for_signal;

/// Why a reclaim needs an inventory, and the ways to give one (the refusal of `--grace` and of
/// a missing `--inventory`).
const NEEDS_INVENTORY: &str = "\
unreachability alone, however long, never proves that a peer is dead: a live peer behind a \
network partition looks exactly the same to the fixed peers, and `rmpeer` on it hands its \
addresses out a second time (duplicate IPs on two live hosts) and leaves it unable to ever \
rejoin the cluster. Give an inventory that says which hosts exist, so that a peer is reclaimed \
only once its host is gone:
  --inventory fly:APP[/GROUP]          the machines of a Fly app (FLY_API_TOKEN; FLY_FLAPS_BASE_URL)
  --inventory ec2:POOL                 the EC2 instances tagged fleetscale:pool=POOL (the standard AWS chain: AWS_REGION, credentials, AWS_ENDPOINT_URL_EC2)
  --inventory http(s)://HOST/PATH      an endpoint answering the live hosts (text or JSON)
  --inventory 'command:PROGRAM ARGS'   a program printing them (run without a shell)
A listing has one host per line: its id, then its host names and addresses (JSON: \
[{\"id\", \"names\", \"addresses\", \"state\": \"live\"|\"gone\"}]).";

/// Parses `NAME=ADDRESS=API_URL`.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_fixed(s: &str) -> Result<FixedPeer> {
    let mut parts = s.splitn(3, '=');
    let (Some(name), Some(addr), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BinError::config(format!(
            "--fixed {s:?}: expected NAME=ADDRESS=API_URL"
        )));
    };
    let name: PeerName = name
        .parse()
        .map_err(|e| BinError::config(format!("--fixed {s:?}: peer name: {e}")))?;
    if addr.trim().is_empty() {
        return Err(BinError::config(format!("--fixed {s:?}: empty address")));
    }
    fleetscale_weave::RouterClient::new(url)
        .map_err(|e| BinError::config(format!("--fixed {s:?}: {e}")))?;
    Ok(FixedPeer::new(name, addr, url))
}

/// Builds the inventory named by `--inventory`.
///
/// # Errors
/// An unknown scheme, an empty command, an invalid URL, a Fly app without a token, an EC2
/// pool without a region.
pub async fn parse_inventory(
    spec: &str,
    timeout: Duration,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn HostInventory>> {
    let bad = |why: &str| BinError::config(format!("--inventory {spec:?}: {why}"));
    if let Some(cmd) = spec.strip_prefix("command:") {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        return Ok(Arc::new(
            CommandInventory::new(argv, timeout).map_err(|e| bad(&e.to_string()))?,
        ));
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Arc::new(
            HttpInventory::new(spec, timeout).map_err(|e| bad(&e.to_string()))?,
        ));
    }
    if let Some(app) = spec.strip_prefix("fly:") {
        let (app, group) = match app.split_once('/') {
            Some((a, g)) => (a, Some(g.to_string()).filter(|g| !g.is_empty())),
            None => (app, None),
        };
        if app.is_empty() || app.contains('*') {
            return Err(bad(
                "expected fly:APP or fly:APP/GROUP (one app, no wildcard)",
            ));
        }
        let token = getenv("FLY_API_TOKEN")
            .filter(|t| !t.trim().is_empty())
            .map(Token::new)
            .ok_or_else(|| bad("FLY_API_TOKEN is not set"))?;
        let mut cc = ClientConfig {
            timeout,
            ..ClientConfig::default()
        };
        if let Some(url) = getenv(fleetscale_fly::client::BASE_URL_ENV).filter(|u| !u.is_empty()) {
            cc.base_url = url;
        }
        let client = MachinesClient::new(Some(token), cc)?;
        let scaler = FlyScaler::new(
            client,
            FlyScalerConfig::new(app).with_process_group(group.clone()),
        )?;
        let source = match group {
            Some(g) => format!("fly:{app}/{g}"),
            None => format!("fly:{app}"),
        };
        return Ok(Arc::new(ScalerInventory::new(scaler, source)));
    }
    if let Some(pool) = spec.strip_prefix("ec2:") {
        if pool.trim().is_empty() {
            return Err(bad(
                "expected ec2:POOL (the value of the fleetscale:pool tag)",
            ));
        }
        let mut config = fleetscale_aws::Ec2PoolConfig::new(pool);
        config.timeouts.attempt = timeout;
        // Instances are named by their private DNS name, which is the host name (and so the
        // Weave nickname) the dynamic-peer bootstrap leaves in place.
        let scaler = fleetscale_aws::Ec2Scaler::connect_listing(config)
            .await
            .map_err(|e| bad(&e.to_string()))?;
        return Ok(Arc::new(ScalerInventory::new(
            scaler,
            format!("ec2:{pool}"),
        )));
    }
    Err(bad(
        "expected fly:APP[/GROUP], ec2:POOL, http(s)://..., or command:PROGRAM [ARGS]",
    ))
}

fn render_reclaim_metrics(r: &Reclaimer) -> String {
    let s = r.metrics().snapshot();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: String| {
        let _ = writeln!(
            out,
            "# HELP fleetscale_weave_{name} {help}\n# TYPE fleetscale_weave_{name} {kind}\nfleetscale_weave_{name} {v}"
        );
    };
    let gauges = [
        (
            "unreachable_peers",
            "Peers owning space that no fixed peer reaches.",
            s.unreachable_peers.to_string(),
        ),
        (
            "unreachable_ips",
            "Addresses owned by unreachable peers.",
            s.unreachable_ips.to_string(),
        ),
        (
            "ipam_unreachable_percentage",
            "Share of the range owned by unreachable peers.",
            s.unreachable_percentage.to_string(),
        ),
        (
            "silent_fixed_peers",
            "Configured fixed peers that did not answer the last observation.",
            s.silent_fixed_peers.to_string(),
        ),
    ];
    for (name, help, v) in gauges {
        put(name, "gauge", help, v);
    }
    let counters = [
        (
            "reclaims_total",
            "rmpeer calls that took IP space over.",
            s.reclaims,
        ),
        (
            "reclaimed_ips_total",
            "Addresses taken over.",
            s.reclaimed_ips,
        ),
        (
            "noop_rmpeers_total",
            "rmpeer calls that took nothing over (not reclaims).",
            s.noops,
        ),
        (
            "incarnations_total",
            "Reclaimed peer names seen back as a new incarnation.",
            s.incarnations,
        ),
        (
            "reclaimed_alive_total",
            "Reclaimed peers seen reachable again with the same UID (should stay 0).",
            s.reclaimed_alive,
        ),
        ("passes_total", "Reclaim passes run.", s.passes),
        ("errors_total", "Failed passes or reclaims.", s.errors),
    ];
    for (name, help, v) in counters {
        put(name, "counter", help, v.to_string());
    }
    let _ = writeln!(out, "# HELP fleetscale_weave_refusals_total Reclaims refused, by reason.\n# TYPE fleetscale_weave_refusals_total counter");
    for (reason, n) in &s.refusals {
        let _ = writeln!(
            out,
            "fleetscale_weave_refusals_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    out
}

/// The reclaimer `a` describes, checked before anything touches a router.
///
/// # Errors
/// `--grace` (refused: unreachability never proves a peer dead), no `--inventory`, invalid
/// fixed peers, inventory or durations.
pub async fn reclaimer_from_args(
    a: &ReclaimArgs,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Reclaimer> {
    if let Some(g) = a.grace {
        return Err(BinError::config(format!(
            "--grace {} is refused: {NEEDS_INVENTORY}",
            humantime::format_duration(g)
        )));
    }
    let Some(spec) = &a.inventory else {
        return Err(BinError::config(format!(
            "--inventory is required: {NEEDS_INVENTORY}"
        )));
    };
    if a.inventory_timeout.is_zero() || a.inventory_timeout > Duration::from_secs(600) {
        return Err(BinError::config(format!(
            "--inventory-timeout {}: it must be between 1ms and 10m",
            humantime::format_duration(a.inventory_timeout)
        )));
    }
    let fixed: Vec<FixedPeer> = a
        .fixed
        .iter()
        .map(|s| parse_fixed(s))
        .collect::<Result<_>>()?;
    let designated = match &a.designated {
        Some(d) => d
            .parse()
            .map_err(|e| BinError::config(format!("--designated {d:?}: {e}")))?,
        None => fixed
            .first()
            .map(|f| f.name)
            .ok_or_else(|| BinError::config("--fixed is required"))?,
    };
    let etcd = etcd_ledger(a, &getenv)?;
    let mut config = ReclaimConfig::new(fixed, designated, a.ledger.clone())
        .with_inventory(parse_inventory(spec, a.inventory_timeout, getenv).await?)
        .with_min_unreachable(a.min_unreachable);
    if let Some(store) = etcd {
        config = config.with_ledger_store(store);
    }
    config.interval = a.interval;
    config
        .validate()
        .map_err(|e| BinError::config(e.to_string()))?;
    Ok(Reclaimer::new(config)?)
}

/// The reclaim ledger in etcd when `--etcd` is given (the other settings from
/// `FLEETSCALE_ETCD_*`), named `weave-reclaim` under the prefix.
fn etcd_ledger(
    a: &ReclaimArgs,
    getenv: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Arc<dyn fleetscale_core::coordination::LedgerStore>>> {
    if a.etcd.is_empty() {
        return Ok(None);
    }
    let endpoints = a.etcd.join(",");
    let env = |k: &str| {
        if k == "FLEETSCALE_ETCD_ENDPOINTS" {
            Some(endpoints.clone())
        } else {
            getenv(k)
        }
    };
    let config = fleetscale_etcd::EtcdConfig::from_env("FLEETSCALE_ETCD_", &env)
        .map_err(|e| BinError::config(format!("--etcd: {e}")))?
        .ok_or_else(|| BinError::config("--etcd: no endpoint given"))?;
    let store = fleetscale_etcd::EtcdLedger::new(config, "weave-reclaim")
        .map_err(|e| BinError::config(format!("--etcd: {e}")))?;
    Ok(Some(Arc::new(store)))
}

/// `weave reclaim`: the reclaim daemon (or one pass with `--once`). Returns the exit status:
/// with `--once`, 1 when the pass had errors (a failed reclaim, an unreadable inventory, fewer
/// than a majority of fixed peers answering).
///
/// # Errors
/// Invalid flags (before any router is contacted), a ledger directory that cannot be made, a
/// metrics address that cannot be bound.
pub async fn weave_reclaim(a: ReclaimArgs) -> Result<i32> {
    let reclaimer = Arc::new(reclaimer_from_args(&a, |k| std::env::var(k).ok()).await?);
    if a.min_unreachable < Duration::from_secs(30) {
        tracing::warn!(min_unreachable = %humantime::format_duration(a.min_unreachable),
            "--min-unreachable is below 30s: real routers take 30-60s to notice a lost peer; keep the 60s default outside tests");
    }
    if let Some(dir) = a.ledger.parent().filter(|_| a.etcd.is_empty()) {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BinError::io(format!("create {}", dir.display()), e))?;
        }
    }
    if a.once {
        let report = reclaimer.run_once().await;
        println!(
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
        );
        return Ok(if report.errors.is_empty() { 0 } else { 1 });
    }
    let stop = CancellationToken::new();
    if let Some(listen) = a.listen {
        let r = reclaimer.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let r = r.clone();
                    async move { render_reclaim_metrics(&r) }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| BinError::io(format!("listen on {listen}"), e))?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics");
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
    }
    let ledger = if a.etcd.is_empty() {
        a.ledger.display().to_string()
    } else {
        format!("etcd {} (weave-reclaim)", a.etcd.join(","))
    };
    tracing::info!(%ledger, designated = %reclaimer.config().designated,
        inventory = reclaimer.config().inventory.as_ref().map(|i| i.source().to_string()).unwrap_or_default(),
        "weave reclaimer running");
    let run = {
        let r = reclaimer.clone();
        let stop = stop.clone();
        tokio::spawn(async move { r.run(stop).await })
    };
    let signal = wait_for_signal().await;
    tracing::info!(signal, "signal received, shutting down");
    stop.cancel();
    let _ = run.await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_peer_flags() {
        let f = parse_fixed("00:00:00:00:00:01=192.168.77.1=http://127.0.0.1:16784").unwrap();
        assert_eq!(f.address, "192.168.77.1");
        assert_eq!(f.api_url, "http://127.0.0.1:16784");
        for bad in [
            "nope",
            "zz=a=b",
            "00:00:00:00:00:01==http://h:1",
            "00:00:00:00:00:01=a=http://h:1/weave",
            "00:00:00:00:00:01=a=ftp://h:1",
        ] {
            assert!(parse_fixed(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn inventory_specs() {
        let t = Duration::from_secs(5);
        let none = |_: &str| None;
        let inv = parse_inventory("command:printf %s\\n h1", t, none)
            .await
            .unwrap();
        assert!(inv.source().starts_with("command:printf"));
        let inv = parse_inventory("http://127.0.0.1:9/hosts", t, none)
            .await
            .unwrap();
        assert_eq!(inv.source(), "http:http://127.0.0.1:9/hosts");
        let e = parse_inventory("fly:app", t, none)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("FLY_API_TOKEN"), "{e}");
        let env = |k: &str| (k == "FLY_API_TOKEN").then(|| "t0k3n".to_string());
        assert_eq!(
            parse_inventory("fly:app/worker", t, env)
                .await
                .unwrap()
                .source(),
            "fly:app/worker"
        );
        for bad in [
            "command:",
            "fly:",
            "fly:a*",
            "ec3:x",
            "ec2:",
            "ec2: ",
            "/etc/hosts",
            "http://",
        ] {
            assert!(parse_inventory(bad, t, none).await.is_err(), "{bad}");
        }
    }
}
