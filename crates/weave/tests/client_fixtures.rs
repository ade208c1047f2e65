//! The client parses every captured fixture, offline and over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::Router;
use fleetscale_weave::report::Report;
use fleetscale_weave::status::{
    parse_connections, parse_ipam, parse_peers, parse_status, Direction, IpamPeerState, IpamStatus,
};
use fleetscale_weave::{PeerName, RouterClient, WeaveError};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pn(s: &str) -> PeerName {
    s.parse().unwrap()
}

#[test]
fn ipam_1_dyn5_killed() {
    let l = parse_ipam(&fixture("status-ipam-1-dyn5-killed.txt")).unwrap();
    assert_eq!(l.len(), 5);
    assert_eq!(l[0].peer, pn("00:00:00:00:00:01"));
    assert_eq!(l[0].nickname.as_deref(), Some("fixed1"));
    assert_eq!(l[0].ips, 65536);
    assert_eq!(l[0].percent, 6.2);
    assert_eq!(l[0].state, IpamPeerState::Local { active: 1 });
    assert_eq!(l[1].state, IpamPeerState::Reachable);
    assert_eq!(l[2].nickname.as_deref(), Some("dyn4"));
    assert_eq!(l[2].ips, 196608);
    assert_eq!(l[2].percent, 18.8);
    assert_eq!(l[4].peer, pn("::5"));
    assert_eq!(l[4].state, IpamPeerState::Unreachable);
    assert!(!l[4].is_reachable());
    assert_eq!(l.iter().map(|x| x.ips).sum::<u64>(), 1 << 20);
}

#[test]
fn ipam_2_and_3() {
    let l = parse_ipam(&fixture("status-ipam-2-after-reset-of-dyn4.txt")).unwrap();
    assert_eq!(l.len(), 4);
    assert!(l.iter().all(|x| x.nickname.as_deref() != Some("dyn4")));
    assert_eq!(l[2].ips, 458752);
    assert_eq!(l[2].percent, 43.8);
    assert_eq!(l[1].state, IpamPeerState::Unreachable);
    let l = parse_ipam(&fixture("status-ipam-3-after-rmpeer-dyn5.txt")).unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].ips, 327680);
    assert_eq!(l[0].percent, 31.2);
    assert!(l.iter().all(|x| x.is_reachable()));
}

#[test]
fn status_fixed1() {
    let s = parse_status(&fixture("status-fixed1.txt")).unwrap();
    assert!(s
        .version
        .as_deref()
        .unwrap()
        .starts_with("unreleased (failed"));
    assert_eq!(s.name(), Some((pn("::1"), Some("fixed1".into()))));
    assert_eq!(s.get("router", "Targets"), Some("3"));
    assert_eq!(
        s.get("router", "Connections"),
        Some("4 (3 established, 1 failed)")
    );
    assert_eq!(s.ipam_status(), Some(IpamStatus::Ready));
    assert_eq!(s.ipam_range(), Some("10.32.0.0/12"));
}

#[test]
fn status_peers() {
    let p = parse_peers(&fixture("status-peers.txt")).unwrap();
    assert_eq!(p.len(), 4);
    assert_eq!(p[0].peer, pn("::2"));
    assert_eq!(p[0].connections.len(), 3);
    assert_eq!(p[0].connections[0].direction, Direction::Inbound);
    assert_eq!(p[0].connections[0].address, "192.168.77.1:47009");
    assert_eq!(p[0].connections[0].nickname.as_deref(), Some("fixed1"));
    assert!(p[0].connections[0].established);
    assert_eq!(p[3].nickname.as_deref(), Some("fixed1"));
    assert_eq!(p[3].connections[2].direction, Direction::Inbound);
    assert_eq!(p[3].connections[2].peer, pn("::4"));
}

#[test]
fn status_connections() {
    let c = parse_connections(&fixture("status-connections.txt")).unwrap();
    assert_eq!(c.len(), 4);
    assert_eq!(c[0].direction, Direction::Outbound);
    assert_eq!(c[0].address, "192.168.77.2:6783");
    assert_eq!(c[0].state, "established");
    assert_eq!(c[0].info, "sleeve 00:00:00:00:00:02(fixed2)");
    assert_eq!(c[0].attrs, "mtu=1438");
    assert_eq!(c[0].remote(), Some((pn("::2"), Some("fixed2".into()))));
    assert_eq!(c[2].direction, Direction::Inbound);
    assert_eq!(c[3].state, "failed");
    assert_eq!(c[3].info, "cannot connect to ourself, retry: never");
    assert_eq!(c[3].attrs, "");
    assert_eq!(c[3].remote(), None);
}

#[test]
fn reports_decode_with_big_uids_and_nulls() {
    let r: Report = serde_json::from_str(&fixture("report-with-dynamic-peers.json")).unwrap();
    assert!(r.ready);
    let router = r.router.as_ref().unwrap();
    assert_eq!(router.name, "00:00:00:00:00:01");
    assert_eq!(router.peers.len(), 5);
    // 18159662741680847194 > 2^53: must survive exactly.
    assert_eq!(router.peers[0].uid, 18159662741680847194);
    assert_eq!(router.connections[4].attrs, None);
    assert_eq!(
        router.targets,
        ["192.168.77.1", "192.168.77.2", "192.168.77.3"]
    );
    let ipam = r.ipam.as_ref().unwrap();
    assert_eq!(ipam.range_num_ips, 1 << 20);
    assert!(ipam.pending_claims.is_empty() && ipam.pending_allocates.is_empty());
    assert_eq!(ipam.entries.len(), 5);
    assert_eq!(ipam.owned_by("00:00:00:00:00:05"), 262144);
    let owners = ipam.owners();
    assert_eq!(owners.len(), 5);
    assert!(owners.iter().all(|o| o.reachable));

    let r: Report = serde_json::from_str(&fixture("report-after-reclaim.json")).unwrap();
    let ipam = r.ipam.unwrap();
    assert_eq!(ipam.owned_by("00:00:00:00:00:05"), 0);
    assert_eq!(ipam.owned_by("00:00:00:00:00:04"), 0);
    assert_eq!(ipam.owned_by("00:00:00:00:00:01"), 327680);
    assert_eq!(ipam.entries[4].version, 100);
    assert_eq!(ipam.entries[1].version, 104);
    assert!(!r
        .router
        .unwrap()
        .peers
        .iter()
        .any(|p| p.name == "00:00:00:00:00:05"));
}

#[test]
fn report_tolerates_null_lists_and_unknown_fields() {
    let r: Report = serde_json::from_str(
        r#"{"Ready":false,"Version":"2.8.1","Whatever":{"x":1},
            "Router":{"Peers":null,"Connections":null,"Targets":null,"TrustedSubnets":null,"NewField":[1]},
            "IPAM":{"Paxos":{"Elector":false,"KnownNodes":1,"Quorum":2},"Range":"10.32.0.0/12",
                    "RangeNumIPs":1048576,"ActiveIPs":0,"DefaultSubnet":"10.32.0.0/12",
                    "Entries":null,"PendingClaims":null,"PendingAllocates":null}}"#,
    )
    .unwrap();
    assert!(r.router.unwrap().peers.is_empty());
    let ipam = r.ipam.unwrap();
    assert!(ipam.entries.is_empty());
    assert_eq!(ipam.paxos.unwrap().quorum, 2);
}

// ---- over real HTTP ---------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    accept: Vec<String>,
    rmpeer_paths: Vec<String>,
    forms: Vec<String>,
}

/// Records the form a `POST /connect` or `/forget` sent.
async fn record_form(State(seen): State<Arc<Mutex<Seen>>>, body: String) -> StatusCode {
    seen.lock().unwrap().forms.push(body);
    StatusCode::OK
}

async fn serve(ready: bool) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route(
            "/status",
            get(move || async move {
                let body = fixture("status-fixed1.txt");
                if ready {
                    (StatusCode::OK, body)
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, body)
                }
            }),
        )
        .route(
            "/status/ipam",
            get(|| async { fixture("status-ipam-1-dyn5-killed.txt") }),
        )
        .route(
            "/status/peers",
            get(|| async { fixture("status-peers.txt") }),
        )
        .route(
            "/status/connections",
            get(|| async { fixture("status-connections.txt") }),
        )
        .route(
            "/report",
            get(
                |State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap| async move {
                    let accept = headers
                        .get("accept")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().accept.push(accept.clone());
                    if accept == "application/json" {
                        (StatusCode::OK, fixture("report-with-dynamic-peers.json"))
                    } else {
                        (
                            StatusCode::BAD_REQUEST,
                            "error: must supply one format parameter".into(),
                        )
                    }
                },
            ),
        )
        .route("/peer", delete(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/peer/{id}",
            delete(
                |State(seen): State<Arc<Mutex<Seen>>>, Path(id): Path<String>| async move {
                    seen.lock().unwrap().rmpeer_paths.push(id.clone());
                    if id == "00:00:00:00:00:05" {
                        format!("262144 IPs taken over from {id}\n")
                    } else {
                        format!("0 IPs taken over from {id}\n")
                    }
                },
            ),
        )
        .route("/connect", post(record_form))
        .route("/forget", post(record_form))
        .route(
            "/ring",
            get(|| async {
                // Never primes: a cluster without quorum.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn client_over_http() {
    let (url, seen) = serve(true).await;
    let c = RouterClient::new(&url).unwrap();
    assert!(c.is_ready().await.unwrap());
    assert_eq!(
        c.status().await.unwrap().ipam_status(),
        Some(IpamStatus::Ready)
    );
    assert_eq!(c.status_ipam().await.unwrap().len(), 5);
    assert_eq!(c.status_peers().await.unwrap().len(), 4);
    assert_eq!(c.status_connections().await.unwrap().len(), 4);
    let r = c.report().await.unwrap();
    assert_eq!(r.ipam.unwrap().entries.len(), 5);
    assert_eq!(seen.lock().unwrap().accept, ["application/json"]);
    c.reset().await.unwrap();

    let o = c.rmpeer(&pn("::5")).await.unwrap();
    assert_eq!(o.taken_over, 262144);
    assert_eq!(o.from, "00:00:00:00:00:05");
    // The colons travelled percent-encoded and the server decoded them.
    assert_eq!(seen.lock().unwrap().rmpeer_paths, ["00:00:00:00:00:05"]);

    c.connect(&["10.0.0.1".into(), "10.0.0.2:6783".into()], true)
        .await
        .unwrap();
    c.forget(&["10.0.0.9".into()]).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().forms,
        [
            "peer=10.0.0.1&peer=10.0.0.2%3A6783&replace=true",
            "peer=10.0.0.9"
        ]
    );

    match c.prime(Duration::from_millis(300)).await {
        Err(WeaveError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("prime should time out: {other:?}"),
    }
}

#[tokio::test]
async fn not_ready_is_unavailable() {
    let (url, _) = serve(false).await;
    let c = RouterClient::new(&url).unwrap();
    assert!(!c.is_ready().await.unwrap());
    let e = c.status().await.unwrap_err();
    assert!(matches!(e, WeaveError::NotReady { .. }), "{e:?}");
    let core: fleetscale_core::Error = e.into();
    assert!(matches!(core, fleetscale_core::Error::Unavailable { .. }));
    assert!(core.is_retryable());
}

#[tokio::test]
async fn unreachable_router_is_an_http_error() {
    // Bind then drop to get a port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = RouterClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let e = c.status_ipam().await.unwrap_err();
    assert!(matches!(e, WeaveError::Http { .. }), "{e:?}");
    assert!(c.is_ready().await.is_err());
}
