//! The parsers, the reclaimer's decisions and the emulator, checked against what real Weave
//! Net 2.8.1 routers answered (`tests/fixtures/real-2/`, with its timed README): steady state,
//! a live peer partitioned (seen from both sides), a wrongful `rmpeer` of it and the heal that
//! never converges, a killed peer, a fixed peer owning nothing, one `/status/ipam` in three
//! line orders.
//!
//! The decisions run the real `Reclaimer` against a stand-in router that serves fixed1's
//! captured `/report` for each moment of the capture and applies an `rmpeer` to it the way a
//! router does (the peer's entries become fixed1's at version + 100).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec, Role};
use fleetscale_weave::inventory::{Host, HostInventory, HostSnapshot};
use fleetscale_weave::report::Report;
use fleetscale_weave::status::{
    parse_connections, parse_ipam, parse_peers, parse_status, IpamPeerState,
};
use fleetscale_weave::{
    client::parse_rmpeer, FixedPeer, PeerName, ReclaimConfig, Reclaimer, RefusalReason,
    RouterClient, WeaveError,
};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/real-2/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn pn(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

const REPORTS: [&str; 9] = [
    "steady-fixed1-report.json",
    "steady-dyn4-report.json",
    "partition-fixed1-report.json",
    "partition-dyn4-report.json",
    "healed-fixed1-report.json",
    "healed-dyn4-report.json",
    "killed-dyn5-fixed1-report.json",
    "steady-fixed1-report.json",
    "steady-dyn4-report.json",
];

#[test]
fn every_real_output_parses() {
    for name in REPORTS {
        let r: Report =
            serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.router.is_some() && r.ipam.is_some(), "{name}");
    }
    // UIDs above 2^53 survive decoding exactly.
    let r: Report = serde_json::from_str(&fixture("steady-fixed1-report.json")).unwrap();
    let fixed2 = r
        .router
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.nick_name == "fixed2")
        .unwrap();
    assert_eq!(fixed2.uid, 12_949_411_827_385_107_810);

    // One /status/ipam in three line orders: the same lines, the local one first.
    let orders: Vec<Vec<_>> = [
        "steady-fixed1-ipam-a.txt",
        "steady-fixed1-ipam-order2.txt",
        "steady-fixed1-ipam-order3.txt",
    ]
    .iter()
    .map(|f| parse_ipam(&fixture(f)).unwrap())
    .collect();
    let set = |v: &Vec<fleetscale_weave::status::IpamLine>| {
        v.iter()
            .map(|l| (l.peer, l.ips, format!("{:?}", l.state)))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(set(&orders[0]), set(&orders[1]));
    assert_eq!(set(&orders[0]), set(&orders[2]));
    assert_ne!(
        orders[0].iter().map(|l| l.peer).collect::<Vec<_>>(),
        orders[1].iter().map(|l| l.peer).collect::<Vec<_>>()
    );
    for o in &orders {
        assert!(matches!(o[0].state, IpamPeerState::Local { active: 3 }));
    }
    // A fixed peer that owns nothing has no line of its own.
    let nothing = parse_ipam(&fixture("fixed-owning-nothing-ipam.txt")).unwrap();
    assert_eq!(nothing.len(), 3);
    assert!(nothing
        .iter()
        .all(|l| !matches!(l.state, IpamPeerState::Local { .. })));
    assert!(nothing.iter().all(|l| l.peer != pn(2)));
    // The partitioned peer's own view: every other owner unreachable.
    let p = parse_ipam(&fixture("partition-dyn4-ipam.txt")).unwrap();
    assert_eq!(p[0].peer, pn(4));
    assert!(p[1..].iter().all(|l| l.state == IpamPeerState::Unreachable));

    for f in ["steady-fixed1-status.txt", "steady-dyn4-status.txt"] {
        let s = parse_status(&fixture(f)).unwrap();
        assert!(s.name().is_some(), "{f}");
        assert!(s.ipam_range().is_some(), "{f}");
    }
    for f in [
        "steady-fixed1-connections.txt",
        "steady-dyn4-connections.txt",
        "partition-dyn4-connections.txt",
        "healed-dyn4-connections.txt",
        "healed-fixed1-connections.txt",
    ] {
        assert!(!parse_connections(&fixture(f)).unwrap().is_empty(), "{f}");
    }
    let healed = parse_connections(&fixture("healed-dyn4-connections.txt")).unwrap();
    assert!(
        healed.iter().all(|c| c.state != "established"),
        "{healed:?}"
    );
    for f in [
        "steady-fixed1-peers.txt",
        "steady-dyn4-peers.txt",
        "partition-fixed1-peers.txt",
    ] {
        assert!(!parse_peers(&fixture(f)).unwrap().is_empty(), "{f}");
    }
    let partition_peers = parse_peers(&fixture("partition-fixed1-peers.txt")).unwrap();
    assert!(partition_peers.iter().all(|p| p.peer != pn(4)));
    let o = parse_rmpeer(&fixture("rmpeer-live-dyn4-response.txt")).unwrap();
    assert_eq!(
        (o.taken_over, o.from.as_str()),
        (131072, "00:00:00:00:00:04")
    );
}

/// A stand-in for fixed1: serves one captured `/report`, applies `rmpeer` as a router does.
#[derive(Clone, Default)]
struct Stand {
    report: Arc<Mutex<Value>>,
    rmpeers: Arc<Mutex<Vec<String>>>,
    forgets: Arc<Mutex<Vec<String>>>,
}

impl Stand {
    async fn start(first: &str) -> (Stand, String) {
        let stand = Stand::default();
        stand.serve(first);
        async fn report(State(s): State<Stand>, h: HeaderMap) -> axum::response::Response {
            if !h
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/json"))
            {
                return (
                    StatusCode::BAD_REQUEST,
                    "error: must supply one format parameter\n",
                )
                    .into_response();
            }
            let body = serde_json::to_string_pretty(&*s.report.lock().unwrap()).unwrap();
            ([("content-type", "application/json")], body).into_response()
        }
        async fn rmpeer(State(s): State<Stand>, Path(id): Path<String>) -> String {
            s.rmpeers.lock().unwrap().push(id.clone());
            let mut r = s.report.lock().unwrap();
            let me = r["Router"]["Name"].as_str().unwrap().to_string();
            let nick = r["Router"]["NickName"].as_str().unwrap().to_string();
            let mut taken = 0;
            if let Some(entries) = r["IPAM"]["Entries"].as_array_mut() {
                for e in entries.iter_mut().filter(|e| e["Peer"] == id.as_str()) {
                    taken += e["Size"].as_u64().unwrap();
                    e["Peer"] = Value::from(me.clone());
                    e["Nickname"] = Value::from(nick.clone());
                    e["IsKnownPeer"] = Value::from(true);
                    e["Version"] = Value::from(e["Version"].as_u64().unwrap() + 100);
                }
            }
            format!("{taken} IPs taken over from {id}\n")
        }
        async fn forget(State(s): State<Stand>, body: String) -> StatusCode {
            s.forgets.lock().unwrap().push(body);
            StatusCode::OK
        }
        let app = axum::Router::new()
            .route("/report", get(report))
            .route("/peer/{id}", delete(rmpeer))
            .route("/forget", post(forget))
            .with_state(stand.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (stand, url)
    }

    /// From now on, serves this captured report.
    fn serve(&self, report: &str) {
        *self.report.lock().unwrap() = json(report);
    }

    fn rmpeers(&self) -> Vec<String> {
        self.rmpeers.lock().unwrap().clone()
    }
}

/// The capture's hosts as an operator's inventory lists them.
#[derive(Default)]
struct Hosts(Mutex<Vec<Host>>);

impl Hosts {
    fn set(&self, nicks: &[&str]) {
        *self.0.lock().unwrap() = nicks
            .iter()
            .map(|n| {
                let last = n.trim_start_matches("dyn");
                Host::new(format!("h-{n}"))
                    .with_name(*n)
                    .with_address(format!("192.168.77.{last}"))
            })
            .collect();
    }
}

#[async_trait]
impl HostInventory for Hosts {
    fn source(&self) -> &str {
        "hosts"
    }
    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        Ok(HostSnapshot::new("hosts", self.0.lock().unwrap().clone()))
    }
}

/// A stand-in fixed1 serving its steady-state report, an inventory listing dyn4 and dyn5, and a
/// reclaimer that has made its first pass over them (both peers bound).
async fn watching() -> (Stand, Arc<Hosts>, tempfile::TempDir, Reclaimer) {
    let (stand, url) = Stand::start("steady-fixed1-report.json").await;
    let hosts = Arc::new(Hosts::default());
    hosts.set(&["dyn4", "dyn5"]);
    let dir = tempfile::tempdir().unwrap();
    let r = reclaimer(&url, hosts.clone(), &dir);
    let p = r.run_once().await;
    assert!(p.unreachable.is_empty() && p.errors.is_empty(), "{p:?}");
    (stand, hosts, dir, r)
}

fn reclaimer(url: &str, hosts: Arc<Hosts>, dir: &tempfile::TempDir) -> Reclaimer {
    // Only fixed1 was captured at every moment: it is the whole (answering) fixed cluster here.
    let c = ReclaimConfig::new(
        vec![FixedPeer::new(pn(1), "192.168.77.1", url)],
        pn(1),
        dir.path().join("ledger.jsonl"),
    )
    .with_inventory(hosts)
    .with_min_unreachable(Duration::ZERO);
    Reclaimer::new(c).unwrap()
}

/// Finding 1 on the real outputs: fixed1's view of the partitioned dyn4 is exactly that of a
/// dead peer; with dyn4's host in the inventory it is never reclaimed.
#[tokio::test]
async fn the_real_partition_is_never_taken_for_a_death() {
    let (stand, _hosts, dir, r) = watching().await;
    let ledger = std::fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap();
    for (peer, host, address) in [
        ("00:00:00:00:00:04", "h-dyn4", "192.168.77.4"),
        ("00:00:00:00:00:05", "h-dyn5", "192.168.77.5"),
    ] {
        let line = ledger.lines().find(|l| l.contains(peer)).unwrap();
        assert!(
            line.contains(&format!("\"host\":\"{host}\"")) && line.contains(address),
            "{line}"
        );
    }

    stand.serve("partition-fixed1-report.json");
    for _ in 0..3 {
        let p = r.run_once().await;
        assert_eq!(p.unreachable.len(), 1, "{p:?}");
        assert_eq!(p.unreachable[0].0, pn(4));
        assert_eq!(p.refused.len(), 1, "{p:?}");
        assert_eq!(p.refused[0].1, RefusalReason::NotGone, "{p:?}");
        assert!(p.refused[0].2.contains("h-dyn4"), "{p:?}");
    }
    assert!(stand.rmpeers().is_empty());
}

/// The killed dyn5 of the capture is reclaimed once its host leaves the inventory, by name,
/// on fixed1, and its address forgotten.
#[tokio::test]
async fn the_real_kill_is_reclaimed_once() {
    let (stand, hosts, _dir, r) = watching().await;
    stand.serve("killed-dyn5-fixed1-report.json");
    // Killed, but the inventory still lists its host (a stopped host, say): kept.
    let p = r.run_once().await;
    assert_eq!(p.refused[0].1, RefusalReason::NotGone, "{p:?}");
    hosts.set(&["dyn4"]);
    let p = r.run_once().await;
    assert_eq!(p.reclaimed, [(pn(5), 131072)], "{p:?}");
    assert_eq!(stand.rmpeers(), ["00:00:00:00:00:05"]);
    assert!(
        stand
            .forgets
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("192.168.77.5")),
        "{:?}",
        stand.forgets.lock().unwrap()
    );
    for _ in 0..2 {
        assert!(r.run_once().await.reclaimed.is_empty());
    }
    assert_eq!(stand.rmpeers().len(), 1);
}

/// What the field test saw after the wrongful reclaim, seen by the reclaimer: when an
/// inventory wrongly drops the partitioned dyn4's host, it is reclaimed (the inventory is
/// trusted); after the heal fixed1 lists dyn4 again with the same UID — the reclaimed router
/// itself, alive — which is reported as such and never taken for a new incarnation.
#[tokio::test]
async fn a_reclaimed_peer_back_with_the_same_uid_is_reported_not_reclaimed_again() {
    let (stand, hosts, _dir, r) = watching().await;
    stand.serve("partition-fixed1-report.json");
    hosts.set(&["dyn5"]);
    let p = r.run_once().await;
    assert_eq!(p.reclaimed, [(pn(4), 131072)], "{p:?}");
    stand.serve("healed-fixed1-report.json");
    for _ in 0..2 {
        let p = r.run_once().await;
        assert!(p.reclaimed.is_empty(), "{p:?}");
    }
    let s = r.metrics().snapshot();
    assert_eq!(s.reclaimed_alive, 1, "{s:?}");
    assert_eq!(s.incarnations, 0, "{s:?}");
    assert_eq!(stand.rmpeers().len(), 1);
}

/// Every key path of `real` exists in `emulated` (objects: the keys; lists: their first
/// item, when both have one).
fn assert_same_shape(real: &Value, emulated: &Value, path: &str) {
    match (real, emulated) {
        (Value::Object(r), Value::Object(e)) => {
            for (k, v) in r {
                let Some(ev) = e.get(k) else {
                    panic!("{path}.{k} missing in the emulator's /report");
                };
                assert_same_shape(v, ev, &format!("{path}.{k}"));
            }
        }
        (Value::Array(r), Value::Array(e)) => {
            if let (Some(r0), Some(e0)) = (r.first(), e.first()) {
                assert_same_shape(r0, e0, &format!("{path}[0]"));
            }
        }
        // A Go nil list is `null`: the emulator may have an empty or filled list there.
        (Value::Null, _) | (_, Value::Null) => {}
        (r, e) => assert_eq!(
            std::mem::discriminant(r),
            std::mem::discriminant(e),
            "{path}: real {r}, emulated {e}"
        ),
    }
}

async fn five_routers(config: EmulatorConfig) -> Emulator {
    let emu = Emulator::new(config);
    let targets: Vec<String> = (1..=3).map(|n| format!("192.168.77.{n}")).collect();
    for n in 1..=3 {
        emu.start_fixed(
            PeerSpec::new(pn(n), format!("fixed{n}"), format!("192.168.77.{n}")),
            targets.clone(),
        )
        .await
        .unwrap();
    }
    for n in 4..=5 {
        emu.add_peer(
            PeerSpec::new(pn(n), format!("dyn{n}"), format!("192.168.77.{n}")),
            Role::Observer,
        )
        .unwrap();
        emu.launch(pn(n), targets.clone()).await.unwrap();
    }
    // As in the capture: three allocations on fixed1, dyn4 and dyn5, none on fixed2 and fixed3.
    for n in [1, 4, 5] {
        for i in 0..3 {
            emu.allocate(pn(n), &format!("c-{n}-{i}")).unwrap();
        }
    }
    emu
}

#[tokio::test]
async fn the_emulator_answers_like_the_real_routers() {
    let emu = five_routers(EmulatorConfig {
        consensus_quorum_only: true,
        detection_delay: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await;
    // The /report of a fixed and of a dynamic peer have every field the real ones have.
    assert_same_shape(&json("steady-fixed1-report.json"), &emu.report(pn(1)), "");
    assert_same_shape(&json("steady-dyn4-report.json"), &emu.report(pn(4)), "");
    assert!(
        emu.report(pn(1))["Router"]["MACs"]
            .as_array()
            .unwrap()
            .len()
            >= 4
    );

    // Consensus among a quorum: one fixed peer owns nothing and has no line of its own.
    let no_space: Vec<u64> = (1..=3).filter(|n| emu.owned(pn(1), pn(*n)) == 0).collect();
    assert_eq!(no_space.len(), 1, "{no_space:?}");
    let lines = parse_ipam(&emu.ipam_text(pn(no_space[0]))).unwrap();
    assert!(lines
        .iter()
        .all(|l| !matches!(l.state, IpamPeerState::Local { .. })));

    // Go map order: repeated /status/ipam answers list the same lines in several orders.
    let url = emu.url(pn(1)).unwrap();
    let c = RouterClient::new(&url).unwrap();
    let mut orders = BTreeSet::new();
    let mut sets = BTreeSet::new();
    for _ in 0..30 {
        let l = parse_ipam(&c.status_ipam_text().await.unwrap()).unwrap();
        assert!(matches!(l[0].state, IpamPeerState::Local { .. }));
        orders.insert(l.iter().map(|x| x.peer).collect::<Vec<_>>());
        sets.insert(l.iter().map(|x| x.peer).collect::<BTreeSet<_>>());
    }
    assert!(orders.len() > 1, "always one order: {orders:?}");
    assert_eq!(sets.len(), 1);

    // A partition, from both sides, after the detection delay: fixed1 no longer lists dyn4
    // in its topology and marks its entries unknown; dyn4 sees only itself.
    emu.partition(pn(4)).unwrap();
    let r = emu.report(pn(1));
    assert!(
        r["Router"]["Peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["NickName"] == "dyn4"),
        "the loss is not seen at once"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let real = json("partition-fixed1-report.json");
    let emulated = emu.report(pn(1));
    for r in [&real, &emulated] {
        assert!(r["Router"]["Peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["NickName"] != "dyn4"));
        assert!(r["IPAM"]["Entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["Nickname"] == "dyn4")
            .all(|e| e["IsKnownPeer"] == false));
    }
    let own = emu.report(pn(4));
    assert_eq!(own["Router"]["Peers"].as_array().unwrap().len(), 1);
    assert!(own["IPAM"]["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["Nickname"] != "dyn4")
        .all(|e| e["IsKnownPeer"] == false));
    // It keeps allocating from its own space meanwhile.
    emu.allocate(pn(4), "c-4-part").unwrap();

    // The wrongful rmpeer and the heal: dyn4 refuses the ring with the real routers' error.
    assert!(emu.rmpeer(pn(1), "00:00:00:00:00:04").unwrap() > 0);
    emu.heal(pn(4)).unwrap();
    assert!(emu.conflicted(pn(4)));
    // The error itself, with versions, addresses and peer names blanked.
    let shape = |l: &str| {
        let from = l.find("Received update").unwrap_or(0);
        l[from..]
            .split_whitespace()
            .map(|w| {
                let w = w.trim_end_matches(':');
                if w.starts_with('v') && w.len() > 1 && w[1..].chars().all(|c| c.is_ascii_digit()) {
                    "vN".to_string()
                } else if w.parse::<PeerName>().is_ok() || w.parse::<std::net::Ipv4Addr>().is_ok() {
                    "X".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let real_line = fixture("healed-conflict-log.txt")
        .lines()
        .next()
        .unwrap()
        .to_string();
    let emulated_line = emu
        .merge_errors()
        .into_iter()
        .find(|e| e.contains("Received update for IP range I own"))
        .unwrap();
    assert_eq!(
        shape(&emulated_line),
        shape(&real_line),
        "{emulated_line}\n{real_line}"
    );
}
