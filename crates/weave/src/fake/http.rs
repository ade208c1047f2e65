//! The HTTP API of one emulated router (the routes of `weave-net.md` §3 that the backend uses,
//! plus `POST /ip/{id}`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router as AxumRouter;
use serde_json::{json, Value};

use super::ring::fmt_ip;
use super::{lock, Emulator, FakeError, Role, World};
use crate::PeerName;

#[derive(Clone)]
struct Ctx {
    emu: Emulator,
    me: PeerName,
}

pub(super) fn app(emu: Emulator, me: PeerName) -> AxumRouter {
    AxumRouter::new()
        .route("/status", get(status))
        .route("/status/ipam", get(status_ipam))
        .route("/status/peers", get(status_peers))
        .route("/status/connections", get(status_connections))
        .route("/status/targets", get(status_targets))
        .route("/report", get(report))
        .route("/peer", delete(reset))
        .route("/peer/{id}", delete(rmpeer))
        .route("/connect", post(connect))
        .route("/forget", post(forget))
        .route("/ring", get(prime))
        .route("/ip/{id}", post(allocate))
        .with_state(Ctx { emu, me })
}

fn stopped() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "router stopped\n").into_response()
}

/// Runs `f` with the world locked, unless this router is dead.
fn with_world<T>(
    ctx: &Ctx,
    f: impl FnOnce(&mut World, &Arc<std::sync::Mutex<World>>) -> T,
) -> Option<T> {
    let world = Arc::clone(&ctx.emu.world);
    let mut w = lock(&world);
    if !w.routers.get(&ctx.me).is_some_and(|r| r.alive) {
        return None;
    }
    Some(f(&mut w, &world))
}

fn name_nick(w: &World, p: PeerName) -> String {
    let nick = w
        .routers
        .get(&p)
        .map(|r| r.spec.nickname.clone())
        .unwrap_or_default();
    format!("{p}({nick})")
}

fn ephemeral_port(a: PeerName, b: PeerName) -> u64 {
    32768 + (a.as_u64().wrapping_mul(7919) ^ b.as_u64().wrapping_mul(104729)) % 28000
}

/// One connection of `of` to `other` as `of` sees it: (outbound, address).
fn connection(w: &World, of: PeerName, other: PeerName) -> (bool, String) {
    let (Some(a), Some(b)) = (w.routers.get(&of), w.routers.get(&other)) else {
        return (false, String::new());
    };
    // Who dialled: the only one targeting the other; when both or neither do (discovery),
    // the connection of the lower peer name is the one that stays.
    let a_targets = a
        .targets
        .iter()
        .any(|t| t.split(':').next() == Some(b.spec.address.as_str()));
    let b_targets = b
        .targets
        .iter()
        .any(|t| t.split(':').next() == Some(a.spec.address.as_str()));
    let outbound = match (a_targets, b_targets) {
        (true, false) => true,
        (false, true) => false,
        _ => of < other,
    };
    if outbound {
        (true, format!("{}:6783", b.spec.address))
    } else {
        (
            false,
            format!("{}:{}", b.spec.address, ephemeral_port(other, of)),
        )
    }
}

/// The local connection list: (outbound, address, state, info, attrs).
fn local_connections(w: &World, me: PeerName) -> Vec<(bool, String, String, String, String)> {
    let mut out = Vec::new();
    let peers: Vec<PeerName> = w.seen_group(me).into_iter().filter(|p| *p != me).collect();
    for p in &peers {
        let (outbound, addr) = connection(w, me, *p);
        out.push((
            outbound,
            addr,
            "established".to_string(),
            format!("{:<6} {}", "sleeve", name_nick(w, *p)),
            "mtu=1438".to_string(),
        ));
    }
    let Some(r) = w.routers.get(&me) else {
        return out;
    };
    for t in &r.targets {
        let host = t.split(':').next().unwrap_or(t);
        if host == r.spec.address {
            out.push((
                true,
                format!("{host}:6783"),
                "failed".into(),
                "cannot connect to ourself, retry: never".into(),
                String::new(),
            ));
        } else if !peers
            .iter()
            .any(|p| w.routers.get(p).is_some_and(|x| x.spec.address == host))
        {
            out.push((
                true,
                format!("{host}:6783"),
                "retrying".into(),
                "dial tcp4 :0->".to_string() + host + ":6783: connect: no route to host",
                String::new(),
            ));
        }
    }
    out
}

fn ipam_status_line(w: &World, me: PeerName) -> String {
    let Some(r) = w.routers.get(&me) else {
        return String::new();
    };
    if r.ring.is_empty() {
        if r.waiting == 0 {
            return "idle".into();
        }
        return match r.role {
            Role::Observer => "priming".into(),
            Role::Fixed => {
                let known = w
                    .group_of(me)
                    .iter()
                    .filter(|p| w.routers.get(p).is_some_and(|x| x.role == Role::Fixed))
                    .count();
                format!(
                    "awaiting consensus (quorum: {}, known: {known})",
                    w.quorum()
                )
            }
        };
    }
    let all_unreachable = r
        .ring
        .ranges()
        .iter()
        .filter(|(_, s, _)| *s > 0)
        .all(|(_, _, e)| e.peer != me && !w.sees(me, e.peer));
    if all_unreachable {
        "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead".into()
    } else if r.waiting > 0 {
        "waiting for IP(s) to become available".into()
    } else {
        "ready".into()
    }
}

fn cidr(w: &World) -> String {
    format!("{}/{}", fmt_ip(w.start), w.config.range_prefix)
}

fn status_text(w: &World, me: PeerName) -> String {
    let Some(r) = w.routers.get(&me) else {
        return String::new();
    };
    let conns = local_connections(w, me);
    let established = conns.iter().filter(|c| c.2 == "established").count();
    let mut states: Vec<String> = vec![format!("{established} established")];
    for s in ["failed", "retrying"] {
        let n = conns.iter().filter(|c| c.2 == s).count();
        if n > 0 {
            states.push(format!("{n} {s}"));
        }
    }
    let group = w.seen_group(me);
    let n = group.len();
    let line = |k: &str, v: &str| format!("{k:>15}: {v}\n");
    let mut s = String::new();
    s.push_str(&line(
        "Version",
        "fleetscale-weave emulator (version check disabled)",
    ));
    s.push('\n');
    s.push_str(&line("Service", "router"));
    s.push_str(&line("Protocol", "weave 1..2"));
    s.push_str(&line("Name", &name_nick(w, me)));
    s.push_str(&line("Encryption", "disabled"));
    s.push_str(&line("PeerDiscovery", "enabled"));
    s.push_str(&line("Targets", &r.targets.len().to_string()));
    s.push_str(&line(
        "Connections",
        &format!("{} ({})", conns.len(), states.join(", ")),
    ));
    s.push_str(&line(
        "Peers",
        &format!(
            "{n} (with {} established connections)",
            n * n.saturating_sub(1)
        ),
    ));
    s.push_str(&line("TrustedSubnets", "none"));
    s.push('\n');
    s.push_str(&line("Service", "ipam"));
    s.push_str(&line("Status", &ipam_status_line(w, me)));
    s.push_str(&line("Range", &cidr(w)));
    s.push_str(&line("DefaultSubnet", &cidr(w)));
    s
}

async fn status(State(ctx): State<Ctx>) -> Response {
    match with_world(&ctx, |w, _| {
        let ready = w.routers.get(&ctx.me).is_some_and(|r| r.ready);
        (ready, status_text(w, ctx.me))
    }) {
        None => stopped(),
        Some((true, text)) => text.into_response(),
        Some((false, text)) => (StatusCode::SERVICE_UNAVAILABLE, text).into_response(),
    }
}

async fn status_ipam(State(ctx): State<Ctx>) -> Response {
    with_world(&ctx, |w, _| w.ipam_text(ctx.me))
        .map(IntoResponse::into_response)
        .unwrap_or_else(stopped)
}

fn peers_text(w: &World, me: PeerName) -> String {
    let mut s = String::new();
    let group = w.seen_group(me);
    for p in &group {
        let p = *p;
        s.push_str(&name_nick(w, p));
        s.push('\n');
        for q in w.seen_group(me).into_iter().filter(|q| *q != p) {
            let (outbound, addr) = connection(w, p, q);
            let dir = if outbound { "->" } else { "<-" };
            s.push_str(&format!(
                "   {dir} {addr:<21} {:<37} established\n",
                name_nick(w, q)
            ));
        }
    }
    s
}

async fn status_peers(State(ctx): State<Ctx>) -> Response {
    with_world(&ctx, |w, _| peers_text(w, ctx.me))
        .map(IntoResponse::into_response)
        .unwrap_or_else(stopped)
}

async fn status_connections(State(ctx): State<Ctx>) -> Response {
    with_world(&ctx, |w, _| {
        let mut s = String::new();
        for (outbound, addr, state, info, attrs) in local_connections(w, ctx.me) {
            let dir = if outbound { "->" } else { "<-" };
            s.push_str(&format!("{dir} {addr:<21} {state:<11} {info} {attrs}\n"));
        }
        s
    })
    .map(IntoResponse::into_response)
    .unwrap_or_else(stopped)
}

async fn status_targets(State(ctx): State<Ctx>) -> Response {
    with_world(&ctx, |w, _| {
        w.routers
            .get(&ctx.me)
            .map(|r| {
                r.targets
                    .iter()
                    .map(|t| format!("{t}\n"))
                    .collect::<String>()
            })
            .unwrap_or_default()
    })
    .map(IntoResponse::into_response)
    .unwrap_or_else(stopped)
}

fn report_json(w: &World, me: PeerName) -> Value {
    let Some(r) = w.routers.get(&me) else {
        return Value::Null;
    };
    let group = w.seen_group(me);
    let peers: Vec<Value> = group
        .iter()
        .map(|p| {
            let pr = &w.routers[p];
            let conns: Vec<Value> = group
                .iter()
                .filter(|q| *q != p && w.sees(*p, **q))
                .map(|q| {
                    let (outbound, addr) = connection(w, *p, *q);
                    json!({"Name": q.to_string(), "NickName": w.routers[q].spec.nickname,
                           "Address": addr, "Outbound": outbound, "Established": true})
                })
                .collect();
            json!({"Name": p.to_string(), "NickName": pr.spec.nickname, "UID": pr.uid,
                   "ShortID": pr.uid & 0xfff, "Version": 8, "Connections": conns})
        })
        .collect();
    let connections: Vec<Value> = local_connections(w, me)
        .into_iter()
        .map(|(outbound, addr, state, info, attrs)| {
            let attrs = if attrs.is_empty() {
                Value::Null
            } else {
                json!({"mtu": 1438, "name": "sleeve"})
            };
            json!({"Address": addr, "Outbound": outbound, "State": state, "Info": info, "Attrs": attrs})
        })
        .collect();
    let entries: Vec<Value> = r
        .ring
        .ranges()
        .into_iter()
        .map(|(t, s, e)| {
            let nick = w
                .routers
                .get(&e.peer)
                .map(|x| x.spec.nickname.clone())
                .unwrap_or_default();
            json!({"Token": fmt_ip(t), "Size": s, "Peer": e.peer.to_string(), "Nickname": nick,
                   "IsKnownPeer": w.sees(me, e.peer), "Version": e.version})
        })
        .collect();
    let paxos = if r.ring.is_empty() && r.waiting > 0 {
        let known = group
            .iter()
            .filter(|p| w.routers[p].role == Role::Fixed)
            .count();
        json!({"Elector": r.role == Role::Fixed, "KnownNodes": known, "Quorum": w.quorum()})
    } else {
        Value::Null
    };
    // Routes and MACs as real 2.8 routers list them (`tests/fixtures/real-2/`).
    let unicast: Vec<Value> = group
        .iter()
        .map(|p| {
            let via = if *p == me {
                PeerName::from_u64(0)
            } else {
                Some(*p)
            };
            json!({"Dest": p.to_string(), "Via": via.map(|v| v.to_string()).unwrap_or_default()})
        })
        .collect();
    let broadcast: Vec<Value> = group
        .iter()
        .map(|p| {
            let via: Value = if *p == me {
                group
                    .iter()
                    .filter(|q| **q != me)
                    .map(|q| q.to_string())
                    .collect()
            } else {
                Value::Null
            };
            json!({"Source": p.to_string(), "Via": via})
        })
        .collect();
    let macs: Vec<Value> = group
        .iter()
        .filter(|p| **p != me)
        .map(|p| {
            let x = p.as_u64().wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mac: Vec<String> = (0..6)
                .map(|i| {
                    let b = (x >> (8 * i)) as u8;
                    format!("{:02x}", if i == 0 { (b | 0x02) & 0xfe } else { b })
                })
                .collect();
            json!({"Mac": mac.join(":"), "Name": p.to_string(),
                   "NickName": w.routers[p].spec.nickname,
                   "LastSeen": rfc3339(w.routers[p].started_at)})
        })
        .collect();
    json!({
        "Ready": r.ready,
        "Version": "unreleased",
        "VersionCheck": {"Enabled": true, "Success": false, "NewVersion": "",
                         "NextCheckAt": rfc3339(r.started_at + Duration::from_secs(5 * 3600))},
        "Router": {
            "Protocol": "weave", "ProtocolMinVersion": 1, "ProtocolMaxVersion": 2,
            "Encryption": false, "PeerDiscovery": true,
            "Name": me.to_string(), "NickName": r.spec.nickname, "Port": 6783,
            "Peers": peers, "UnicastRoutes": unicast, "BroadcastRoutes": broadcast,
            "Connections": connections, "TerminationCount": 0, "Targets": r.targets,
            "OverlayDiagnostics": {"sleeve": null}, "TrustedSubnets": [],
            "Interface": "vethwe-pcap (via pcap)",
            "CaptureStats": {"PacketsDropped": 0, "PacketsIfDropped": 0, "PacketsReceived": 9},
            "MACs": macs,
        },
        "IPAM": {
            "Paxos": paxos, "Range": cidr(w), "RangeNumIPs": w.end - w.start,
            "ActiveIPs": r.allocated.len(), "DefaultSubnet": cidr(w),
            "Entries": if entries.is_empty() { Value::Null } else { Value::Array(entries) },
            "PendingClaims": null, "PendingAllocates": null,
        }
    })
}

/// `2026-12-01T09:42:18.270465811Z`, as Go's `time.Time` marshals.
fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// The `/report` JSON of `viewer`, as the router would serve it.
pub(super) fn report_value(emu: &Emulator, viewer: PeerName) -> Value {
    report_json(&lock(&emu.world), viewer)
}

async fn report(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let json_wanted = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json_wanted {
        return (
            StatusCode::BAD_REQUEST,
            "error: must supply one format parameter\n",
        )
            .into_response();
    }
    with_world(&ctx, |w, _| report_json(w, ctx.me))
        .map(|v| {
            let body = serde_json::to_string_pretty(&v).unwrap_or_default();
            ([("content-type", "application/json")], body).into_response()
        })
        .unwrap_or_else(stopped)
}

async fn reset(State(ctx): State<Ctx>) -> Response {
    match with_world(&ctx, |w, world| w.reset(ctx.me, world)) {
        None => stopped(),
        Some(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn rmpeer(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match with_world(&ctx, |w, world| w.rmpeer(ctx.me, &id, world)) {
        None => stopped(),
        Some(Ok(n)) => format!("{n} IPs taken over from {id}\n").into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn form_peers(body: &str) -> (Vec<String>, bool) {
    let mut peers = Vec::new();
    let mut replace = false;
    for (k, v) in url_pairs(body) {
        match k.as_str() {
            "peer" => peers.push(v),
            "replace" => replace = v == "true",
            _ => {}
        }
    }
    (peers, replace)
}

fn url_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn connect(State(ctx): State<Ctx>, body: String) -> Response {
    let (peers, replace) = form_peers(&body);
    with_world(&ctx, |w, _| {
        if let Some(r) = w.routers.get_mut(&ctx.me) {
            if replace {
                r.targets.clear();
            }
            for p in peers {
                if !r.targets.contains(&p) {
                    r.targets.push(p);
                }
            }
        }
    })
    .map(|_| StatusCode::OK.into_response())
    .unwrap_or_else(stopped)
}

async fn forget(State(ctx): State<Ctx>, body: String) -> Response {
    let (peers, _) = form_peers(&body);
    with_world(&ctx, |w, _| {
        if let Some(r) = w.routers.get_mut(&ctx.me) {
            r.targets.retain(|t| !peers.contains(t));
        }
        w.forget_log.push((ctx.me, peers));
    })
    .map(|_| StatusCode::OK.into_response())
    .unwrap_or_else(stopped)
}

/// Retries `op` until it stops saying `WouldBlock`, the router dies, or the block limit.
async fn blocking<T>(
    ctx: &Ctx,
    op: impl Fn(&mut World, &Arc<std::sync::Mutex<World>>) -> Result<T, FakeError>,
) -> Result<T, Response> {
    let limit = lock(&ctx.emu.world).config.block_limit;
    let started = Instant::now();
    let _ = with_world(ctx, |w, _| {
        if let Some(r) = w.routers.get_mut(&ctx.me) {
            r.waiting += 1;
        }
    });
    let result = loop {
        match with_world(ctx, |w, world| op(w, world)) {
            None => break Err(stopped()),
            Some(Ok(v)) => break Ok(v),
            Some(Err(FakeError::WouldBlock(why))) => {
                if started.elapsed() >= limit {
                    break Err((StatusCode::SERVICE_UNAVAILABLE, why).into_response());
                }
            }
            Some(Err(e)) => {
                break Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = with_world(ctx, |w, _| {
        if let Some(r) = w.routers.get_mut(&ctx.me) {
            r.waiting = r.waiting.saturating_sub(1);
        }
    });
    result
}

async fn prime(State(ctx): State<Ctx>) -> Response {
    match blocking(&ctx, |w, world| w.ensure_ring(ctx.me, world)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

async fn allocate(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match blocking(&ctx, |w, world| w.try_allocate(ctx.me, &id, None, world)).await {
        Ok(a) => a.into_response(),
        Err(r) => r,
    }
}
