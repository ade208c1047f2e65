//! `fleetscale fake fly`, `fleetscale fake weave` and `fleetscale weave reclaim`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use fleetscale_fly::fake::{Delays, FakeConfig, FakeFlyServer};
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
use fleetscale_fly::{ClientConfig, FlyToken, MachinesClient};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec};
use fleetscale_weave::{FixedPeer, PeerName, ReclaimConfig, Reclaimer, RouterClient};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{FakeFlyArgs, FakeWeaveArgs, ReclaimArgs};
use crate::error::{BinError, Result};
use crate::fas::wait_for_signal;

/// `fake fly`: the fake Machines API until SIGINT/SIGTERM, optionally with apps seeded by
/// the same requests a user sends to Fly (`POST /v1/apps`, then a first machine).
///
/// # Errors
/// When the address cannot be bound or seeding fails.
pub async fn fake_fly(a: FakeFlyArgs) -> Result<()> {
    if let Some(t) = &a.token {
        crate::redact::register(t);
    }
    let server = FakeFlyServer::bind(
        a.listen,
        FakeConfig {
            token: a.token.as_deref().map(FlyToken::new),
            delays: Delays::uniform(a.delay),
            rate_limits: if a.no_rate_limits {
                None
            } else {
                FakeConfig::default().rate_limits
            },
            ..FakeConfig::default()
        },
    )
    .await
    .map_err(|e| BinError::io(format!("listen on {}", a.listen), e))?;
    let client = MachinesClient::new(
        a.token.as_deref().map(FlyToken::new),
        ClientConfig::default().with_base_url(server.url()),
    )?;
    for app in &a.app {
        client
            .create_app(&CreateAppRequest {
                app_name: app.clone(),
                org_slug: "personal".into(),
                network: None,
            })
            .await?;
        client
            .create_machine(
                app,
                &CreateMachineRequest {
                    config: json!({
                        "image": format!("registry.fly.io/{app}:deployment-1"),
                        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                        "services": [{"protocol": "tcp", "internal_port": 8080,
                            "autostop": "stop", "autostart": true,
                            "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
                        "metadata": {"fly_process_group": "app"}
                    }),
                    region: Some("iad".into()),
                    ..Default::default()
                },
            )
            .await?;
    }
    println!("fake Fly Machines API listening on {}", server.url());
    println!("  export FLY_FLAPS_BASE_URL={}", server.url());
    println!(
        "  export FLY_API_BASE_URL={}   # its GraphQL API (release status)",
        server.url()
    );
    println!("  metrics (fly_instance_up): {}/metrics", server.url());
    for app in &a.app {
        println!("  app {app}: 1 started machine");
    }
    let signal = wait_for_signal().await;
    println!("{signal}: shutting down");
    server.shutdown().await;
    Ok(())
}

/// Forwards every connection to `127.0.0.1:port` to `target` (the emulator binds its
/// routers on free ports; this gives them predictable ones).
async fn forward(listen: SocketAddr, target: SocketAddr, stop: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| BinError::io(format!("listen on {listen}"), e))?;
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(())
}

fn socket_of(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// `fake weave`: emulated routers (fixed peers primed, dynamic peers as IPAM observers), each
/// API on `127.0.0.1:(listen_base + i)`, until SIGINT/SIGTERM.
///
/// # Errors
/// When a router cannot start or a port cannot be bound.
pub async fn fake_weave(a: FakeWeaveArgs) -> Result<()> {
    if a.fixed == 0 {
        return Err(BinError::config("--fixed must be at least 1"));
    }
    let emu = Emulator::new(EmulatorConfig::default());
    let fail = |e: fleetscale_weave::fake::FakeError| BinError::Failed(e.to_string());
    let fixed_addrs: Vec<String> = (1..=a.fixed).map(|i| format!("192.168.77.{i}")).collect();
    let stop = CancellationToken::new();
    let mut rows = Vec::new();
    for i in 1..=(a.fixed + a.dynamic) {
        let name = PeerName::from_u64(u64::from(i))
            .ok_or_else(|| BinError::Failed(format!("no peer name for {i}")))?;
        let fixed = i <= a.fixed;
        let nick = if fixed {
            format!("fixed{i}")
        } else {
            format!("dyn{i}")
        };
        let spec = PeerSpec::new(name, nick.clone(), format!("192.168.77.{i}"));
        let url = if fixed {
            emu.start_fixed(spec, fixed_addrs.clone())
                .await
                .map_err(fail)?
        } else {
            emu.start_observer(spec, fixed_addrs.clone())
                .await
                .map_err(fail)?
        };
        if i == a.fixed {
            // `weave prime` on the last fixed peer: the ring exists once a quorum is up.
            RouterClient::new(&url)?
                .prime(std::time::Duration::from_secs(30))
                .await?;
        }
        let port = u32::from(a.listen_base) + i - 1;
        let port = u16::try_from(port).map_err(|_| BinError::config("--listen-base too high"))?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let target = socket_of(&url)
            .ok_or_else(|| BinError::Failed(format!("unexpected router URL {url}")))?;
        forward(listen, target, stop.clone()).await?;
        rows.push((name, nick, fixed, format!("http://{listen}")));
    }
    println!("emulated Weave Net routers (Weave 2.8 API):");
    let mut fixed_flags = String::new();
    for (name, nick, fixed, url) in &rows {
        println!(
            "  {name}({nick})  {}  {url}",
            if *fixed { "fixed   " } else { "observer" }
        );
        if *fixed {
            let _ = write!(
                fixed_flags,
                " --fixed {name}=192.168.77.{}={url}",
                nick.trim_start_matches("fixed")
            );
        }
    }
    println!("try: curl {}/status/ipam", rows[0].3);
    println!(
        "reclaimer: fleetscale weave reclaim{fixed_flags} --min-unreachable 10s --grace 30s --ledger /tmp/reclaim.ledger"
    );
    let signal = wait_for_signal().await;
    println!("{signal}: shutting down");
    stop.cancel();
    Ok(())
}

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
    Ok(FixedPeer::new(name, addr, url))
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
    put(
        "unreachable_peers",
        "gauge",
        "Peers owning space that no fixed peer reaches.",
        s.unreachable_peers.to_string(),
    );
    put(
        "unreachable_ips",
        "gauge",
        "Addresses owned by unreachable peers.",
        s.unreachable_ips.to_string(),
    );
    put(
        "ipam_unreachable_percentage",
        "gauge",
        "Share of the range owned by unreachable peers.",
        s.unreachable_percentage.to_string(),
    );
    put(
        "reclaims_count",
        "counter",
        "Successful rmpeer calls.",
        s.reclaims.to_string(),
    );
    put(
        "reclaimed_ips_count",
        "counter",
        "Addresses taken over.",
        s.reclaimed_ips.to_string(),
    );
    put(
        "passes_count",
        "counter",
        "Reclaim passes run.",
        s.passes.to_string(),
    );
    put(
        "errors_count",
        "counter",
        "Failed passes or reclaims.",
        s.errors.to_string(),
    );
    let _ = writeln!(out, "# HELP fleetscale_weave_refusals_count Reclaims refused, by reason.\n# TYPE fleetscale_weave_refusals_count counter");
    for (reason, n) in &s.refusals {
        let _ = writeln!(
            out,
            "fleetscale_weave_refusals_count{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    out
}

/// `weave reclaim`: the reclaim daemon (or one pass with `--once`). Returns the exit status:
/// with `--once`, 1 when the pass had errors.
///
/// # Errors
/// Invalid flags, an invalid fixed-peer list, a metrics address that cannot be bound.
pub async fn weave_reclaim(a: ReclaimArgs) -> Result<i32> {
    let fixed: Vec<FixedPeer> = a
        .fixed
        .iter()
        .map(|s| parse_fixed(s))
        .collect::<Result<_>>()?;
    let designated = match &a.designated {
        Some(d) => d
            .parse()
            .map_err(|e| BinError::config(format!("--designated {d:?}: {e}")))?,
        None => fixed[0].name,
    };
    if let Some(dir) = a.ledger.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BinError::io(format!("create {}", dir.display()), e))?;
        }
    }
    let mut config = ReclaimConfig::new(fixed, designated, a.ledger.clone());
    config.interval = a.interval;
    config.grace = a.grace;
    config.min_unreachable = a.min_unreachable;
    let reclaimer = Arc::new(Reclaimer::new(config)?);
    if a.once {
        let report = reclaimer.run_once().await;
        println!(
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
        );
        for (p, n) in &report.reclaimed {
            tracing::warn!(peer = %p, ips = n, "reclaimed IP space of a vanished peer");
        }
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
    tracing::info!(ledger = %a.ledger.display(), designated = %designated, "weave reclaimer running");
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
        assert!(parse_fixed("nope").is_err());
        assert!(parse_fixed("zz=a=b").is_err());
    }
}
