//! `fleetscale fake fly` and `fleetscale fake weave`: the fakes as servers for local
//! experiments.

use std::fmt::Write as _;
use std::net::SocketAddr;

use fleetscale_fly::fake::{Delays, FakeConfig, FakeFlyServer};
use fleetscale_fly::{ClientConfig, MachinesClient, Token};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec};
use fleetscale_weave::{PeerName, RouterClient};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{FakeFlyArgs, FakeWeaveArgs};
use crate::error::{BinError, Result};
use crate::fas::wait_for_signal;

/// `fake fly`: the fake Machines API until SIGINT/SIGTERM, optionally with apps seeded by
/// the same requests a user sends to Fly (`POST /v1/apps`, then a first machine).
///
/// # Errors
/// When the address cannot be bound or seeding fails.
pub async fn fake_fly(a: FakeFlyArgs) -> Result<()> {
    if let Some(t) = &a.token {
        fleetscale_fas::redact::register(t);
    }
    let server = FakeFlyServer::bind(
        a.listen,
        FakeConfig {
            token: a.token.as_deref().map(Token::new),
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
        a.token.as_deref().map(Token::new),
        ClientConfig::default().with_base_url(server.url()),
    )?;
    for app in &a.app {
        let config = json!({
            "image": format!("registry.fly.io/{app}:deployment-1"),
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "services": [{"protocol": "tcp", "internal_port": 8080,
                "autostop": "stop", "autostart": true,
                "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
            "metadata": {"fly_process_group": "app"}
        });
        fleetscale_fly::fake::seed_app(&client, "personal", app, config, "iad").await?;
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
    // The emulated hosts as an inventory: the reclaimer needs one to prove a host is gone.
    println!(
        "reclaimer: fleetscale weave reclaim{fixed_flags} --inventory 'command:printf %s\\n dyn4 dyn5' --min-unreachable 10s --ledger /tmp/reclaim.ledger"
    );
    let signal = wait_for_signal().await;
    println!("{signal}: shutting down");
    stop.cancel();
    Ok(())
}
