//! Parser micro-benchmarks: `GET /report` JSON and the `/status/ipam` and `/status/peers`
//! texts of a cluster with 3 fixed peers and many dynamic ones (50 and 500 peers in all), as
//! the fixed peer `fixed1` would report them. The documents are built from the real capture
//! in `tests/fixtures/report-with-dynamic-peers.json` with the peer lists grown.
//!
//! Run: `cargo bench -p fleetscale-weave --bench parse -- --sample-size 20 --measurement-time 3`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use fleetscale_weave::report::Report;
use fleetscale_weave::status::{parse_ipam, parse_peers, render_ipam_line, IpamPeerState};
use fleetscale_weave::PeerName;
use serde_json::{json, Value};

#[path = "../../shared/criterion_config.rs"]
mod criterion_config;

const FIXTURE: &str = include_str!("../tests/fixtures/report-with-dynamic-peers.json");
const FIXED: u64 = 3;
const RANGE: u64 = 1 << 20;

fn name(i: u64) -> PeerName {
    PeerName::from_u64(i + 1).expect("small peer names are valid")
}

fn nick(i: u64) -> String {
    if i < FIXED {
        format!("fixed{}", i + 1)
    } else {
        format!("dyn{}", i + 1)
    }
}

fn connection(i: u64, outbound: bool) -> Value {
    json!({
        "Name": name(i).to_string(),
        "NickName": nick(i),
        "Address": format!("192.168.{}.{}:{}", 77 + i / 250, i % 250 + 1, 40000 + i % 20000),
        "Outbound": outbound,
        "Established": true
    })
}

/// The fixture's report with `peers` peers: fixed peers connect to everyone, dynamic peers to
/// the fixed ones; every peer owns an equal share of the range.
fn report(peers: u64) -> String {
    let mut doc: Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    let all: Vec<Value> = (0..peers)
        .map(|i| {
            let conns: Vec<Value> = if i < FIXED {
                (0..peers)
                    .filter(|&j| j != i)
                    .map(|j| connection(j, j < i))
                    .collect()
            } else {
                (0..FIXED).map(|j| connection(j, true)).collect()
            };
            json!({
                "Name": name(i).to_string(),
                "NickName": nick(i),
                "UID": 18_159_662_741_680_847_194u64 - i,
                "ShortID": 1000 + i,
                "Version": 8 + i % 5,
                "Connections": conns
            })
        })
        .collect();
    let own: Vec<Value> = (1..peers)
        .map(|j| {
            json!({
                "Address": format!("192.168.{}.{}:6783", 77 + j / 250, j % 250 + 1),
                "Outbound": j < FIXED,
                "State": "established",
                "Info": format!("encrypted=false name={}({})", name(j), nick(j)),
                "Attrs": {"name": "fastdp", "mtu": 1376}
            })
        })
        .collect();
    let share = RANGE / peers;
    let entries: Vec<Value> = (0..peers)
        .map(|i| {
            let token = 0x0A20_0000 + i * share;
            json!({
                "Token": format!("{}.{}.{}.{}", token >> 24, (token >> 16) & 255, (token >> 8) & 255, token & 255),
                "Size": share,
                "Peer": name(i).to_string(),
                "Nickname": nick(i),
                "IsKnownPeer": true,
                "Version": i % 4
            })
        })
        .collect();
    doc["Router"]["Peers"] = Value::Array(all);
    doc["Router"]["Connections"] = Value::Array(own);
    doc["IPAM"]["Entries"] = Value::Array(entries);
    serde_json::to_string_pretty(&doc).expect("serialise")
}

fn ipam_text(peers: u64) -> String {
    let share = RANGE / peers;
    (0..peers)
        .map(|i| {
            let state = match i {
                0 => IpamPeerState::Local { active: 1 },
                i if i % 50 == 7 => IpamPeerState::Unreachable,
                _ => IpamPeerState::Reachable,
            };
            render_ipam_line(name(i), Some(&nick(i)), share, RANGE, state)
        })
        .collect()
}

fn peers_text(peers: u64) -> String {
    let mut out = String::new();
    for i in 0..peers {
        out.push_str(&format!("{}({})\n", name(i), nick(i)));
        let others: Vec<u64> = if i < FIXED {
            (0..peers).filter(|&j| j != i).collect()
        } else {
            (0..FIXED).collect()
        };
        for j in others {
            let arrow = if j < i { "<-" } else { "->" };
            let addr = format!("192.168.{}.{}:6783", 77 + j / 250, j % 250 + 1);
            out.push_str(&format!(
                "   {arrow} {addr:<21} {:<37} established\n",
                format!("{}({})", name(j), nick(j))
            ));
        }
    }
    out
}

/// Benchmarks `parse` on `input` as `name`, after checking that it reads `peers` peers (a
/// parser that failed or dropped peers would otherwise be timed as fast).
fn bench_parser<T, E: std::fmt::Debug>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    peers: u64,
    input: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    peers_read: impl Fn(&T) -> usize,
) {
    let parsed = parse(input).unwrap_or_else(|e| panic!("{name} parses: {e:?}"));
    assert_eq!(peers_read(&parsed), peers as usize, "{name}: peers read");
    group.bench_with_input(BenchmarkId::new(name, peers), input, |b, s| {
        b.iter(|| parse(black_box(s)))
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("weave_parse");
    for peers in [50u64, 500] {
        group.throughput(Throughput::Elements(peers));
        bench_parser(
            &mut group,
            "report_json",
            peers,
            &report(peers),
            |s| serde_json::from_str::<Report>(s),
            |r| r.router.as_ref().map_or(0, |r| r.peers.len()),
        );
        bench_parser(
            &mut group,
            "status_ipam",
            peers,
            &ipam_text(peers),
            parse_ipam,
            Vec::len,
        );
        bench_parser(
            &mut group,
            "status_peers",
            peers,
            &peers_text(peers),
            parse_peers,
            Vec::len,
        );
    }
    group.finish();
}

fn main() {
    criterion_config::run(bench);
}
