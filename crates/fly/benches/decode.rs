//! Machines API decoding micro-benchmarks: `GET /v1/apps/{app}/machines` answers of 10, 100
//! and 1,000 machines (each shaped like the Machines API documentation's full example, with
//! events, checks and unknown fields), decoded into `Vec<FlyMachine>`, and converted to the
//! core view as `FlyScaler::list` does.
//!
//! Run: `cargo bench -p fleetscale-fly --bench decode -- --sample-size 20 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use fleetscale_fly::{ClientConfig, FlyMachine, FlyScaler, FlyScalerConfig, MachinesClient};
use serde_json::{json, Value};

#[path = "../../shared/criterion_config.rs"]
mod criterion_config;

const STATES: [&str; 8] = [
    "started",
    "started",
    "started",
    "stopped",
    "stopped",
    "created",
    "starting",
    "suspended",
];

const REGIONS: [&str; 4] = ["ams", "iad", "sin", "syd"];

fn machine(i: usize) -> Value {
    json!({
        "id": format!("{:014x}", 0x1781_1953_c92e_u64 + i as u64),
        "name": format!("sparkling-rain-{i}"),
        "state": STATES[i % STATES.len()],
        "region": REGIONS[i % REGIONS.len()],
        "instance_id": format!("01HBP4HXQ6JPP4GDHH6J{i:06}"),
        "private_ip": format!("fdaa:2:45b:a7b:19c:bbd4:{:x}:2", i),
        "config": {
            "init": {},
            "env": {"APP_ENV": "production"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "metadata": {"fly_platform_version": "v2", "fly_process_group": "app",
                         "fly_release_id": "Zx3", "fly_release_version": "12"},
            "services": [{
                "protocol": "tcp", "internal_port": 8080,
                "autostop": "stop", "autostart": true, "min_machines_running": 0,
                "ports": [{"port": 80, "handlers": ["http"], "force_https": true},
                          {"port": 443, "handlers": ["http", "tls"]}],
                "concurrency": {"type": "connections", "hard_limit": 25, "soft_limit": 20}
            }],
            "image": "registry.fly.io/my-app:deployment-01HBP4",
            "restart": {"policy": "on-failure", "max_retries": 10},
            "checks": {"alive": {"type": "tcp", "port": 8080, "interval": "15s"}},
            "some_future_setting": {"nested": [1, 2, 3]}
        },
        "image_ref": {
            "registry": "registry.fly.io",
            "repository": "my-app",
            "tag": "deployment-01HBP4",
            "digest": "sha256:e9d7c1b5c5c4fcf6c4a1b8dcb0c1b6b2c7f1f0c7e8b4c3d1e2a3b4c5d6e7f8a9",
            "labels": {}
        },
        "created_at": format!("2023-10-31T02:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        "updated_at": "2023-10-31T02:30:12.5Z",
        "events": [
            {"id": "01HBP4J1X5N6K8JQ", "type": "start", "status": "started", "source": "flyd",
             "timestamp": 1_698_719_410_123_u64 + i as u64},
            {"type": "launch", "status": "created", "source": "user", "timestamp": 1_698_719_400_000_u64}
        ],
        "checks": [{"name": "alive", "status": "passing", "output": "ok",
                    "updated_at": "2023-10-31T02:31:10Z"}],
        "host_status": "ok",
        "incomplete_config": null
    })
}

fn list_body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&Value::Array((0..n).map(machine).collect())).expect("serialise")
}

fn bench(c: &mut Criterion) {
    let scaler = FlyScaler::new(
        MachinesClient::new(None, ClientConfig::default()).expect("client"),
        FlyScalerConfig::new("my-app"),
    )
    .expect("scaler");
    let mut group = c.benchmark_group("fly_machines_list");
    for n in [10usize, 100, 1_000] {
        let body = list_body(n);
        let decoded: Vec<FlyMachine> = serde_json::from_slice(&body).expect("decodes");
        assert_eq!(decoded.len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("decode", n), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<Vec<FlyMachine>>(black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("decode_to_core", n), &body, |b, body| {
            b.iter(|| {
                let ms: Vec<FlyMachine> = serde_json::from_slice(black_box(body)).expect("decodes");
                ms.iter().map(|m| scaler.to_core(m)).collect::<Vec<_>>()
            })
        });
    }
    group.finish();
}

fn main() {
    criterion_config::run(bench);
}
