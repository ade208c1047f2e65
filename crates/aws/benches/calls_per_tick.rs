//! EC2 API calls per engine tick for pools of growing size, counted by the fault proxy (and
//! checked against the scaler's own counters), with the real core engine driving an
//! `Ec2Scaler` against `moto_server`.
//!
//! ```text
//! cargo bench -p fleetscale-aws --bench calls_per_tick --profile dev
//! ```
//!
//! Per pool size and page size, three ticks: steady (the metric asks for the pool as it is),
//! scale out by 5, scale in by 5. Calls, not seconds, are the figure: they are what EC2's
//! request rate limits count, and moto's speed says nothing about EC2's. Pool instances are
//! launched one by one beforehand (moto pages `DescribeInstances` by reservation, EC2 by
//! instance: one instance per reservation makes moto page as EC2 does).

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use fleetscale_aws::harness::{FaultProxy, MotoServer};
use fleetscale_aws::{ApiCalls, Ec2Scaler};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::TickStatus;
use fleetscale_core::testing::StaticMetric;
use fleetscale_core::Scope;

struct Row {
    pool: usize,
    page_size: i32,
    steady: (usize, String),
    out: (usize, String),
    r#in: (usize, String),
    list_ms: u128,
}

fn describe(counts: &std::collections::BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

async fn tick(
    engine: &Engine,
    proxy: &FaultProxy,
    scaler: &Ec2Scaler,
    want: TickStatus,
) -> (usize, String) {
    proxy.reset_counts();
    let before: ApiCalls = scaler.api_calls();
    let record = engine.run_once().await.unwrap().remove(0);
    assert_eq!(record.status, want, "{record:?}");
    let counts = proxy.counts();
    let total: usize = counts.values().sum();
    assert_eq!(
        total as u64,
        scaler.api_calls().since(&before).total(),
        "proxy and scaler counters agree"
    );
    (total, describe(&counts))
}

#[tokio::main]
async fn main() {
    let moto = MotoServer::start().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint()).unwrap();
    let ec2 = moto.client().await;
    let image = moto.image_id().await.unwrap();
    let mut rows = Vec::new();
    let plan: [(usize, &[i32]); 4] = [
        (100, &[1000, 100, 20]),
        (200, &[1000, 100]),
        (500, &[1000, 100]),
        (1000, &[1000, 100]),
    ];
    for (size, page_sizes) in plan {
        let pool = format!("bench-{size}");
        let started = Instant::now();
        for _ in 0..size {
            ec2.run_instances()
                .image_id(&image)
                .instance_type(InstanceType::T3Micro)
                .min_count(1)
                .max_count(1)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Instance)
                        .tags(Tag::builder().key("fleetscale:pool").value(&pool).build())
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
        eprintln!("launched {size} instances in {:?}", started.elapsed());
        for &page_size in page_sizes {
            let mut config = moto.pool_config_for(&pool, &proxy.url()).await.unwrap();
            config.page_size = page_size;
            // moto renders a 1,000-instance page in Python: slow, and not what is measured.
            config.timeouts.attempt = std::time::Duration::from_secs(600);
            let scaler = Arc::new(
                Ec2Scaler::connect_with(config, MotoServer::config_loader_for(&proxy.url()))
                    .await
                    .unwrap(),
            );
            let load = Arc::new(StaticMetric::new("load", size as f64));
            let policy = Policy {
                created: CountRule::from_settings("created", Some("load"), None, None).unwrap(),
                ..Policy::default()
            };
            let target = TargetSpec::new(Scope::new(&pool), scaler.clone(), policy)
                .with_source(load.clone());
            target.validate().unwrap();
            let engine = Engine::new(
                EngineConfig {
                    tick_timeout: std::time::Duration::from_secs(1800),
                    ..EngineConfig::default()
                },
                Arc::new(vec![target]),
            );

            let t0 = Instant::now();
            let steady = tick(&engine, &proxy, &scaler, TickStatus::NoScale).await;
            let list_ms = t0.elapsed().as_millis();
            load.set(size as f64 + 5.0);
            let out = tick(&engine, &proxy, &scaler, TickStatus::Scaled).await;
            load.set(size as f64);
            let r#in = tick(&engine, &proxy, &scaler, TickStatus::Scaled).await;
            rows.push(Row {
                pool: size,
                page_size,
                steady,
                out,
                r#in,
                list_ms,
            });
        }
    }
    println!(
        "| pool | page size | steady tick | scale out +5 | scale in −5 | steady tick on moto |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | **{}** ({}) | **{}** ({}) | **{}** ({}) | {} ms |",
            r.pool,
            r.page_size,
            r.steady.0,
            r.steady.1,
            r.out.0,
            r.out.1,
            r.r#in.0,
            r.r#in.1,
            r.list_ms
        );
    }
}
