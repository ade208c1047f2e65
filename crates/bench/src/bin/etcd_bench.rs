//! `etcd_bench`: replicas of the engine sharing apps through real etcd (the Debian
//! `etcd-server`, started on loopback) on the fake Machines API.
//!
//! ```text
//! cargo run --release -p fleetscale-bench --bin etcd_bench -- scale --apps 10000 --replicas 1,2,4
//! cargo run --release -p fleetscale-bench --bin etcd_bench -- takeover --runs 20
//! ```
//!
//! `scale`: for each replica count k, a fresh one-member etcd and a fake seeded with `--apps`
//! apps of one started machine each, every app's load set to 2; the k replicas register, then
//! start their engines at once. Measured per replica: its share of the apps, the wall time of
//! its first pass (taking ownership of its share in etcd, then one tick per app: list, and one
//! create each) and the etcd requests it sent; then, over `--steady-passes` passes with
//! nothing to do, the etcd requests per pass by kind.
//!
//! `takeover`: two replicas over `--apps` apps; at a random moment one is killed (engine
//! dropped, lease left to expire, as `kill -9` leaves it) and every app's load goes up by one.
//! Measured: the time from the kill until the survivor sends its first create on one of the
//! dead replica's apps, and until all of them are done. The bound is the lease TTL plus one
//! interval.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use fleetscale_bench::fleet;
use fleetscale_bench::replicas::{mutations, FenceLog, Loads, Replica, ReplicaOptions};
use fleetscale_etcd::harness::EtcdCluster;
use fleetscale_etcd::RequestCounts;
use fleetscale_fly::fake::{FakeConfig, FakeFlyServer, Fault, FaultKind};

/// Benchmarks of replicas coordinated through etcd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A pass over many apps with 1, 2, 4 replicas; steady-state etcd requests.
    Scale {
        /// Apps.
        #[arg(long, default_value_t = 10_000)]
        apps: usize,
        /// Replica counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        replicas: Vec<usize>,
        /// Targets ticking at once per replica.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Latency the fake adds to every request, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Passes with nothing to do, for the steady-state request counts.
        #[arg(long, default_value_t = 10)]
        steady_passes: u64,
        /// Engine interval for the steady passes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Takeover time after a replica dies.
    Takeover {
        /// Runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Apps.
        #[arg(long, default_value_t = 20)]
        apps: usize,
        /// Lease TTL in seconds (default: the crate's default, 10 s).
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        /// Engine interval in milliseconds.
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
    },
}

fn main() {
    let args = Args::parse();
    print_machine();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match args.command {
        Cmd::Scale {
            apps,
            replicas,
            concurrency,
            latency_ms,
            steady_passes,
            interval_ms,
        } => {
            for k in replicas {
                rt.block_on(scale(
                    apps,
                    k,
                    concurrency,
                    Duration::from_millis(latency_ms),
                    steady_passes,
                    Duration::from_millis(interval_ms),
                ));
            }
        }
        Cmd::Takeover {
            runs,
            apps,
            ttl,
            interval_ms,
        } => rt.block_on(takeover(
            runs,
            apps,
            Duration::from_secs(ttl),
            Duration::from_millis(interval_ms),
        )),
    }
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let etcd = std::process::Command::new(
        fleetscale_etcd::harness::etcd_binary().expect("etcd installed"),
    )
    .arg("--version")
    .output()
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .unwrap_or_default();
    println!("machine: {cpus} CPUs ({model}); {etcd}");
}

async fn fake_with_apps(apps: usize) -> FakeFlyServer {
    let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::instant())
        .await
        .expect("fake");
    let client = fleet::seeding_client(server.url());
    fleet::seed(&client, apps, 1, 64).await.expect("seeded");
    server.fake().clear_request_log();
    server
}

fn per_pass(r: &RequestCounts, passes: u64) -> String {
    let p = passes.max(1) as f64;
    format!(
        "range {:.2}, txn {:.2}, keep-alive {:.2}, grant {:.2} (total {:.2})",
        r.range as f64 / p,
        r.txn as f64 / p,
        r.keep_alive as f64 / p,
        r.lease_grant as f64 / p,
        r.total() as f64 / p
    )
}

async fn scale(
    apps: usize,
    k: usize,
    concurrency: usize,
    latency: Duration,
    steady_passes: u64,
    interval: Duration,
) {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let config = etcd.config();
    let server = fake_with_apps(apps).await;
    let fake = server.fake().clone();
    let names: Vec<String> = (0..apps).map(fleet::app_name).collect();
    let loads = Loads::new(&names, 2.0);
    let fences = FenceLog::default();
    let options = ReplicaOptions {
        interval,
        concurrency,
    };
    // All register first (as replicas that are up together), then start their engines at
    // once: each one's first pass takes its share and ticks it.
    let mut registered = Vec::new();
    for i in 0..k {
        let name = format!("r{i}");
        let c = Replica::register(&name, &config).await;
        registered.push((name, c));
    }
    if !latency.is_zero() {
        fake.inject(Fault::new(FaultKind::Latency(latency)).times(u32::MAX));
    }
    fake.clear_request_log();
    let t0 = Instant::now();
    let replicas: Vec<Replica> = registered
        .into_iter()
        .map(|(name, c)| Replica::run(&name, c, &server.url(), &names, &loads, &options, &fences))
        .collect();
    let mut first: Vec<Option<(Duration, RequestCounts)>> = vec![None; k];
    while first.iter().any(Option::is_none) {
        for (i, r) in replicas.iter().enumerate() {
            if first[i].is_none() && r.passes.passes() >= 1 {
                first[i] = Some((t0.elapsed(), r.coordinator.status().requests));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_done = first
        .iter()
        .flatten()
        .map(|(d, _)| *d)
        .max()
        .unwrap_or_default();
    let done = names
        .iter()
        .filter(|a| {
            fake.machines(a)
                .iter()
                .filter(|m| m.state.to_core().exists())
                .count()
                == 2
        })
        .count();
    let log = fake.request_log();
    let by_replica = mutations(&log);
    println!(
        "\n== {apps} apps, {k} replica(s), latency {} ms, concurrency {concurrency} per replica ==",
        latency.as_millis()
    );
    println!(
        "first pass of all replicas: {:.2} s wall; apps at their load after it: {done}/{apps}; Machines API requests: {}",
        all_done.as_secs_f64(),
        log.len()
    );
    for (i, r) in replicas.iter().enumerate() {
        let (wall, req) = first[i].unwrap_or_default();
        let share = r.coordinator.owned_targets().len();
        let creates = by_replica
            .values()
            .flatten()
            .filter(|m| m.actor == r.name && m.kind == "create")
            .count();
        println!(
            "  {}: share {share} apps ({:.1} %), first pass {:.2} s, creates {creates}, etcd requests {} (range {}, txn {}, grant {}, keep-alive {})",
            r.name,
            share as f64 * 100.0 / apps as f64,
            wall.as_secs_f64(),
            req.total(),
            req.range,
            req.txn,
            req.lease_grant,
            req.keep_alive
        );
    }
    // Steady state: nothing to do; count etcd requests per pass.
    let before: Vec<(u64, RequestCounts)> = replicas
        .iter()
        .map(|r| (r.passes.passes(), r.coordinator.status().requests))
        .collect();
    let ts = Instant::now();
    while replicas
        .iter()
        .zip(&before)
        .any(|(r, (p, _))| r.passes.passes() < p + steady_passes)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = ts.elapsed();
    println!(
        "steady state ({steady_passes} passes, interval {} ms, lease TTL {} s), etcd requests per pass per replica:",
        interval.as_millis(),
        config.lease_ttl.as_secs()
    );
    for (r, (p0, q0)) in replicas.iter().zip(&before) {
        let passes = r.passes.passes() - p0;
        let q = r.coordinator.status().requests.since(q0);
        println!(
            "  {}: {} over {passes} passes in {:.1} s",
            r.name,
            per_pass(&q, passes),
            elapsed.as_secs_f64()
        );
    }
    for r in replicas {
        r.stop().await;
    }
    drop(etcd);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn takeover(runs: usize, apps: usize, ttl: Duration, interval: Duration) {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let config = etcd.config().with_lease_ttl(ttl);
    let server = fake_with_apps(apps).await;
    let fake = server.fake().clone();
    let names: Vec<String> = (0..apps).map(fleet::app_name).collect();
    let mut load = 1.0;
    let loads = Loads::new(&names, load);
    let fences = FenceLog::default();
    let options = ReplicaOptions {
        interval,
        concurrency: 16,
    };
    println!(
        "\n== takeover: {runs} runs, {apps} apps, 2 replicas, lease TTL {} s, interval {} ms ==",
        ttl.as_secs(),
        interval.as_millis()
    );
    let mut first_action = Vec::new();
    let mut all_done = Vec::new();
    for run in 0..runs {
        let (na, nb) = (format!("a{run}"), format!("b{run}"));
        let ca = Replica::register(&na, &config).await;
        let cb = Replica::register(&nb, &config).await;
        let a = Replica::run(&na, ca, &server.url(), &names, &loads, &options, &fences);
        let b = Replica::run(&nb, cb, &server.url(), &names, &loads, &options, &fences);
        let live = vec![na.clone(), nb.clone()];
        let of_a: Vec<String> = names
            .iter()
            .filter(|t| fleetscale_etcd::rendezvous::owner(t, &live) == Some(na.as_str()))
            .cloned()
            .collect();
        while a.coordinator.owned_targets() != of_a {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A random moment relative to the keep-alives and the passes.
        let jitter = Duration::from_millis(rand::random_range(0..ttl.as_millis() as u64 / 3));
        tokio::time::sleep(jitter).await;
        a.kill().await;
        let t_kill = std::time::SystemTime::now();
        let t0 = Instant::now();
        load += 1.0;
        loads.set_all(load);
        let want = load as usize;
        while !of_a.iter().all(|app| {
            fake.machines(app)
                .iter()
                .filter(|m| m.state.to_core().exists())
                .count()
                == want
        }) {
            assert!(t0.elapsed() < ttl * 4 + interval * 4, "no takeover");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = t0.elapsed();
        let log = fake.request_log();
        let first = mutations(&log)
            .into_iter()
            .filter(|(app, _)| of_a.contains(app))
            .flat_map(|(_, ms)| ms)
            .filter(|m| m.actor == nb && m.at >= t_kill)
            .map(|m| m.at.duration_since(t_kill).unwrap_or_default())
            .min()
            .unwrap_or_default();
        println!(
            "run {run}: first action on the dead replica's {} apps after {:.2} s, all done after {:.2} s",
            of_a.len(),
            first.as_secs_f64(),
            done.as_secs_f64()
        );
        first_action.push(first);
        all_done.push(done);
        b.stop().await;
        fake.clear_request_log();
    }
    first_action.sort();
    all_done.sort();
    let show = |v: &[Duration]| {
        format!(
            "min {:.2} s, median {:.2} s, p90 {:.2} s, max {:.2} s",
            v.first().copied().unwrap_or_default().as_secs_f64(),
            percentile(v, 0.5).as_secs_f64(),
            percentile(v, 0.9).as_secs_f64(),
            v.last().copied().unwrap_or_default().as_secs_f64()
        )
    };
    println!("first action: {}", show(&first_action));
    println!("all done:     {}", show(&all_done));
    println!(
        "bound (TTL + one interval): {:.2} s",
        (ttl + interval).as_secs_f64()
    );
}
