//! `engine_bench`: the engine with `FlyScaler` against the fake Machines API on loopback.
//!
//! ```text
//! cargo run --release -p fleetscale-bench --bin engine_bench -- --apps 1,100,1000
//! cargo run --release -p fleetscale-bench --bin engine_bench -- --apps 10000 --scale-by 0
//! cargo run --release -p fleetscale-bench --bin engine_bench -- --apps 0 --reaction-runs 20
//! cargo run -p fleetscale-bench --bin engine_bench -- --check
//! ```
//!
//! For each app count N (each in its own child process, so RSS and CPU are per size) a
//! third process serves the fake Machines API (this binary with `--serve-fake`, see
//! `fleetscale_bench::remote`), so the measuring process holds the engine alone. The fake is
//! seeded through the API with N apps of `--machines` started machines, then gets a per-call
//! latency (`--latency-ms`, injected by the fake before it handles each request) and Fly's
//! documented rate limits (server side; the client paces itself to the same limits). The
//! engine (one `FlyScaler` per app, `created-machine-count = load`) then runs:
//! 1. a cold pass (connections are opened) and a steady pass (nothing to do);
//! 2. a scale pass after every app's `load` rose by `--scale-by` (skipped when 0);
//! 3. a settle pass (nothing to do again).
//!
//! For each pass: wall time, API calls from the fake's request log (by kind), CPU time of the
//! engine's threads and of the fake's, the lower bounds the work allows (see
//! `BENCHMARKS.md`), and where the time went (time inside `list` and inside the actions,
//! summed over targets, from a timing wrapper around each scaler; the rest of each tick is
//! the engine's own). Memory of the engine's process (`VmRSS`, and the bytes live on the heap
//! from a counting global allocator) before the scalers are built, after, and after each
//! pass; and the heap the latest decision records hold.
//!
//! `--check`: a short run (20 apps unless `--apps` says otherwise, debug build is fine) that
//! exits non-zero when a count or ratio is off: API calls per steady pass other than one list
//! per app, creates other than one per planned machine plus the refused ones, more than
//! `--check-max-429-percent` of creates refused, failed actions, machines missing after the
//! scale pass, or more than `--check-max-heap-per-app` bytes of heap per app. No wall-clock
//! limit is checked.
//!
//! Reaction time (`--reaction-runs`): one app, `started-machine-count = load`; the load
//! crosses the threshold at a random moment and the time until the first `start` call
//! reaches the fake is measured, with the interval timer (`--reaction-interval-ms`) and with
//! `Engine::trigger()` right after the change. The fake runs in the measuring process here.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use fleetscale_bench::alloc_count::{live_bytes, peak_bytes, reset_peak, CountingAlloc};
use fleetscale_bench::fleet::{self, RequestSummary};
use fleetscale_bench::procstat::{thread_cpu, ProcStats};
use fleetscale_bench::remote::{realistic, serve_stdio, RemoteFake};
use fleetscale_bench::runtime;
use fleetscale_bench::stages::{StageSnapshot, StageTimes, TimedScaler};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::record::DecisionRecord;
use fleetscale_core::testing::StaticMetric;
use fleetscale_core::Scope;
use fleetscale_fly::fake::{FakeConfig, FakeFlyServer, FakeRateLimits};
use fleetscale_fly::{
    ClientConfig, FlyScaler, FlyScalerConfig, FlyState, MachinesClient, PacingConfig, RetryConfig,
};
use tokio_util::sync::CancellationToken;

/// Counts the bytes live on the heap, for the per-app memory figures.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Benchmark of the engine against the fake Fly Machines API.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// App counts to benchmark, comma separated; each runs in its own process. 0 skips.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    apps: Vec<usize>,
    /// Started machines per app before scaling.
    #[arg(long, default_value_t = 2)]
    machines: usize,
    /// Machines added to every app in the scale pass (0 skips the scale pass).
    #[arg(long, default_value_t = 5)]
    scale_by: usize,
    /// Latency the fake adds to every request, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Targets ticking at once (`EngineConfig::concurrency`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Backend calls in flight per tick (`EngineConfig::action_concurrency`).
    #[arg(long, default_value_t = 4)]
    action_concurrency: usize,
    /// Worker threads of the engine's runtime.
    #[arg(long, default_value_t = 2)]
    engine_threads: usize,
    /// Worker threads of the fake server's runtime.
    #[arg(long, default_value_t = 1)]
    fake_threads: usize,
    /// Pacing margin below the documented rates (`PacingConfig::margin`); the default is
    /// `PacingConfig::default()`'s.
    #[arg(long)]
    pacing_margin: Option<f64>,
    /// Reaction-time runs per mode (interval, trigger); 0 skips.
    #[arg(long, default_value_t = 0)]
    reaction_runs: usize,
    /// Engine interval for the reaction-time runs, in milliseconds (the default interval is
    /// 15 s; results are also reported scaled to it).
    #[arg(long, default_value_t = 1000)]
    reaction_interval_ms: u64,
    /// Short regression run: fails (exit status 1) when a count or ratio is off. Uses 20 apps
    /// unless `--apps` is given.
    #[arg(long)]
    check: bool,
    /// `--check`: most creates answered 429, in percent of creates. The share depends on
    /// the machine's load (request jitter), so the default only catches pacing gone wrong:
    /// without client pacing, 2 of every 5 creates of an app are refused (Fly's burst is 3);
    /// with it, up to 14 % were on a 2-core machine at load 8.
    #[arg(long, default_value_t = 25.0)]
    check_max_429_percent: f64,
    /// `--check`: most heap bytes per app held by the engine, its targets and the client after
    /// the steady pass.
    #[arg(long, default_value_t = 64 * 1024)]
    check_max_heap_per_app: u64,
    /// Internal: run exactly one measurement in this process.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: serve the fake Machines API, controlled through stdin and stdout.
    #[arg(long, hide = true)]
    serve_fake: bool,
}

fn main() {
    let mut args = Args::parse();
    if args.serve_fake {
        if let Err(e) = serve_stdio(args.fake_threads) {
            eprintln!("engine_bench --serve-fake: {e}");
            std::process::exit(1);
        }
        return;
    }
    if !args.child {
        if args.check && args.apps == [1, 100, 1000] {
            args.apps = vec![20];
        }
        print_machine();
        let exe = std::env::current_exe().expect("own executable path");
        let sizes: Vec<usize> = args.apps.iter().copied().filter(|&n| n > 0).collect();
        let mut ok = true;
        for n in sizes {
            ok &= run_child(
                &exe,
                &args,
                &[format!("--apps={n}"), "--reaction-runs=0".into()],
            );
        }
        if args.reaction_runs > 0 {
            ok &= run_child(
                &exe,
                &args,
                &[
                    "--apps=0".into(),
                    format!("--reaction-runs={}", args.reaction_runs),
                ],
            );
        }
        if !ok {
            eprintln!("engine_bench: a measurement failed (see above)");
            std::process::exit(1);
        }
        if args.check {
            println!("# check passed");
        }
        return;
    }
    let engine_rt = runtime(args.engine_threads, "engine-worker").expect("engine runtime");
    if let Some(&n) = args.apps.first().filter(|&&n| n > 0) {
        let exe = std::env::current_exe().expect("own executable path");
        let mut cmd = Command::new(exe);
        cmd.arg("--serve-fake")
            .arg(format!("--fake-threads={}", args.fake_threads));
        let mut fake = RemoteFake::spawn(cmd).expect("start the fake's process");
        let failures = engine_rt.block_on(bench_apps(&args, &mut fake, n));
        fake.quit();
        if !failures.is_empty() {
            for f in &failures {
                eprintln!("check failed: {f}");
            }
            std::process::exit(1);
        }
    }
    if args.reaction_runs > 0 {
        let fake_rt = runtime(args.fake_threads, "fake-fly").expect("fake runtime");
        let server = fake_rt
            .block_on(FakeFlyServer::bind(
                "127.0.0.1:0".parse().expect("loopback address"),
                FakeConfig::instant(),
            ))
            .expect("bind the fake");
        engine_rt.block_on(bench_reaction(&args, &server));
        fake_rt.block_on(server.shutdown());
    }
}

fn run_child(exe: &std::path::Path, args: &Args, extra: &[String]) -> bool {
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(format!("--machines={}", args.machines))
        .arg(format!("--scale-by={}", args.scale_by))
        .arg(format!("--latency-ms={}", args.latency_ms))
        .arg(format!("--concurrency={}", args.concurrency))
        .arg(format!("--action-concurrency={}", args.action_concurrency))
        .arg(format!("--engine-threads={}", args.engine_threads))
        .arg(format!("--fake-threads={}", args.fake_threads))
        .arg(format!(
            "--reaction-interval-ms={}",
            args.reaction_interval_ms
        ))
        .arg(format!(
            "--check-max-429-percent={}",
            args.check_max_429_percent
        ))
        .arg(format!(
            "--check-max-heap-per-app={}",
            args.check_max_heap_per_app
        ))
        .args(extra);
    if let Some(m) = args.pacing_margin {
        cmd.arg(format!("--pacing-margin={m}"));
    }
    if args.check {
        cmd.arg("--check");
    }
    let status = cmd.status().expect("run a child measurement");
    if !status.success() {
        eprintln!("child measurement {extra:?} failed: {status}");
    }
    status.success()
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo.lines().next().unwrap_or("MemTotal: ?").to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# machine: {cpus} CPUs, {model}, {mem}; load average {}",
        load.trim()
    );
}

fn client_for(url: &str, pacing: PacingConfig) -> MachinesClient {
    MachinesClient::new(
        None,
        ClientConfig {
            base_url: url.to_owned(),
            timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            pacing,
            ..ClientConfig::default()
        },
    )
    .expect("client for the fake")
}

fn client(server: &FakeFlyServer, paced: bool) -> MachinesClient {
    client_for(
        &server.url(),
        if paced {
            PacingConfig::default()
        } else {
            PacingConfig::disabled()
        },
    )
}

fn policy(created: Option<&str>, started: Option<&str>) -> Policy {
    Policy {
        created: CountRule::from_settings("created", created, None, None).expect("rule"),
        started: CountRule::from_settings("started", started, None, None).expect("rule"),
        ..Policy::default()
    }
}

struct PassResult {
    wall: Duration,
    calls: RequestSummary,
    engine_cpu: Duration,
    fake_cpu: Duration,
    ok_actions: usize,
    failed_actions: usize,
    failed_ticks: usize,
    /// Time inside the scaler's calls during the pass.
    stages: StageSnapshot,
    /// The ticks' durations, summed over the targets.
    ticks: Duration,
    /// Lists the engine made (from the timing wrapper), to compare with the fake's count.
    ticks_seen: usize,
}

async fn measured_pass(engine: &Engine, fake: &mut RemoteFake, times: &StageTimes) -> PassResult {
    fake.call("clear").expect("clear the fake's log");
    let (_, f0) = fake.summary().expect("fake summary");
    let (e0, s0) = (thread_cpu("engine"), times.snapshot());
    let t0 = Instant::now();
    let records: Vec<DecisionRecord> = engine.run_once().await.expect("a pass");
    let wall = t0.elapsed();
    let (e1, s1) = (thread_cpu("engine"), times.snapshot());
    let (calls, f1) = fake.summary().expect("fake summary");
    PassResult {
        wall,
        calls,
        engine_cpu: e1.saturating_sub(e0),
        fake_cpu: f1.saturating_sub(f0),
        ok_actions: records
            .iter()
            .map(|r| r.outcomes.iter().filter(|o| o.ok()).count())
            .sum(),
        failed_actions: records
            .iter()
            .map(|r| r.outcomes.iter().filter(|o| !o.ok()).count())
            .sum(),
        failed_ticks: records
            .iter()
            .filter(|r| r.status.as_str() == "failed")
            .count(),
        stages: s1 - s0,
        ticks: records.iter().map(|r| r.duration).sum(),
        ticks_seen: records.len(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(label: &str, r: &PassResult, min_calls: u64, lb_formula: Duration, lb_rate: Duration) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{label:<8} wall {:>9.1} ms | calls {:>6} (min {:>6}, ratio {:.2}) [{}] 429s {} failed {} | \
         lower bound {:>8.1} ms (ratio {:.2}), rate-aware {:>8.1} ms (ratio {:.2}) | \
         CPU engine {:>7.1} ms fake {:>7.1} ms ({:.1} us engine CPU per call) | \
         actions ok {} failed {}, failed ticks {} | load {}",
        ms(r.wall),
        r.calls.total,
        min_calls,
        r.calls.total as f64 / min_calls.max(1) as f64,
        r.calls.breakdown(),
        r.calls.rate_limited,
        r.calls.failed,
        ms(lb_formula),
        r.wall.as_secs_f64() / lb_formula.as_secs_f64().max(1e-9),
        ms(lb_rate),
        r.wall.as_secs_f64() / lb_rate.as_secs_f64().max(1e-9),
        ms(r.engine_cpu),
        ms(r.fake_cpu),
        r.engine_cpu.as_secs_f64() * 1e6 / r.calls.total.max(1) as f64,
        r.ok_actions,
        r.failed_actions,
        r.failed_ticks,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    // Where the time went, summed over the targets (they overlap: divide by the targets
    // ticking at once for wall time).
    let other = r
        .ticks
        .saturating_sub(r.stages.list)
        .saturating_sub(r.stages.action);
    println!(
        "{label:<8} stages (summed over {} ticks): tick {:.1} ms = list {:.1} ms ({} calls, {:.2} ms each) \
         + actions {:.1} ms ({} calls) + engine's own (metrics, plan, records, waiting for a slot) {:.1} ms ({:.3} ms per tick)",
        r.ticks_seen,
        ms(r.ticks),
        ms(r.stages.list),
        r.stages.lists,
        ms(r.stages.list) / r.stages.lists.max(1) as f64,
        ms(r.stages.action),
        r.stages.actions,
        ms(other),
        ms(other) / r.ticks_seen.max(1) as f64,
    );
}

/// A memory reading of the engine's process.
#[derive(Clone, Copy)]
struct Mem {
    rss_kib: u64,
    heap: u64,
    /// The most heap live at once since the previous reading.
    peak_heap: u64,
}

impl Mem {
    fn now() -> Mem {
        let m = Mem {
            rss_kib: ProcStats::read().rss_kib,
            heap: live_bytes(),
            peak_heap: peak_bytes(),
        };
        reset_peak();
        m
    }
}

fn mem_line(n: usize, label: &str, m: Mem, base: Mem) {
    let per_app = |a: u64, b: u64| a.saturating_sub(b) as f64 / n.max(1) as f64;
    println!(
        "memory {label:<16} RSS {:>8.1} MiB heap {:>8.1} MiB (peak since the previous {:>8.1} MiB) | since the start: RSS {:>8.1} KiB/app heap {:>8.0} B/app",
        m.rss_kib as f64 / 1024.0,
        m.heap as f64 / 1048576.0,
        m.peak_heap as f64 / 1048576.0,
        per_app(m.rss_kib, base.rss_kib),
        per_app(m.heap, base.heap),
    );
}

/// Runs the passes for `n` apps; returns the `--check` failures (empty without `--check`).
async fn bench_apps(args: &Args, fake: &mut RemoteFake, n: usize) -> Vec<String> {
    let mut failures = Vec::new();
    let latency = Duration::from_millis(args.latency_ms);
    let seeded = fake
        .call(&format!("seed {n} {}", args.machines))
        .expect("seed the fake");
    fake.call(&format!("realistic {}", args.latency_ms))
        .expect("realistic conditions");
    let start = Mem::now();

    let mut pacing = PacingConfig::default();
    if let Some(m) = args.pacing_margin {
        pacing.margin = m;
    }
    let margin = pacing.margin;
    let client = client_for(fake.url(), pacing);
    let times = Arc::new(StageTimes::default());
    let mut metrics = Vec::new();
    let targets: Vec<TargetSpec> = (0..n)
        .map(|i| {
            let app = fleet::app_name(i);
            let scaler =
                FlyScaler::new(client.clone(), FlyScalerConfig::new(app.clone())).expect("scaler");
            let load = Arc::new(StaticMetric::new("load", args.machines as f64));
            metrics.push(load.clone());
            let t = TargetSpec::new(
                Scope::new(app),
                Arc::new(TimedScaler::new(scaler, times.clone())),
                policy(Some("load"), None),
            )
            .with_source(load);
            t.validate().expect("valid target");
            t
        })
        .collect();
    let config = EngineConfig::default()
        .with_concurrency(args.concurrency)
        .with_action_concurrency(args.action_concurrency);
    let engine = Engine::new(config, Arc::new(targets));
    let built = Mem::now();

    let c = args.concurrency.max(1).min(n) as u64;
    let a = args.action_concurrency.max(1) as u64;
    let waves = (n as u64).div_ceil(c);
    let s = args.scale_by as u64;
    println!(
        "# apps {n}: {} machines each, +{s} in the scale pass, latency {} ms, engine concurrency {} x {} actions, \
         Fly rate limits (server and client, pacing margin {}), fake in its own process, seeded in {seeded} s",
        args.machines,
        args.latency_ms,
        args.concurrency,
        args.action_concurrency,
        margin,
    );

    // Steady state: one list per app.
    let min_steady = n as u64;
    let lb_steady = latency * u32::try_from(min_steady.div_ceil(c)).unwrap_or(u32::MAX);
    let cold = measured_pass(&engine, fake, &times).await;
    report("cold", &cold, min_steady, lb_steady, lb_steady);
    let after_cold = Mem::now();
    let steady = measured_pass(&engine, fake, &times).await;
    report("steady", &steady, min_steady, lb_steady, lb_steady);
    let after_steady = Mem::now();
    // The latest records, as the status page reads them: a copy of each, so the heap they add
    // is what the engine's own copies hold.
    let records = engine.last_decisions();
    let records_heap = live_bytes().saturating_sub(after_steady.heap);
    drop(records);
    for (label, p) in [("cold", &cold), ("steady", &steady)] {
        steady_checks(&mut failures, label, p, n as u64);
    }

    let mut scale = None;
    if s > 0 {
        // Scale every app by +s: a list and s creates per app at the least.
        for m in &metrics {
            m.set((args.machines + args.scale_by) as f64);
        }
        let min_scale = n as u64 * (1 + s);
        // The brief's bound: minimum calls x latency / allowed concurrency, where up to c
        // targets tick at once and each has at most a actions in flight.
        let lb_scale = Duration::from_secs_f64(
            (min_scale as f64 * latency.as_secs_f64() / (c * a) as f64)
                .max(waves as f64 * latency.as_secs_f64() * (1 + s.div_ceil(a)) as f64),
        );
        // Fly's create limit (1/s, burst 3, per app) makes the s-th create wait
        // (s - burst) / rate seconds after the first: a per-app floor no concurrency removes.
        let create = FakeRateLimits::default().create;
        let pacing_floor = (s.saturating_sub(u64::from(create.burst)) as f64) / create.per_second;
        let lb_scale_rate =
            Duration::from_secs_f64(waves as f64 * (2.0 * latency.as_secs_f64() + pacing_floor))
                .max(lb_scale);
        let p = measured_pass(&engine, fake, &times).await;
        report("scale+5", &p, min_scale, lb_scale, lb_scale_rate);
        let creates = p.calls.kind("create");
        println!(
            "scale+5  creates {creates}, answered 429: {} ({:.2} % of creates); rate-aware ratio {:.3}",
            p.calls.rate_limited,
            p.calls.rate_limited as f64 * 100.0 / creates.max(1) as f64,
            p.wall.as_secs_f64() / lb_scale_rate.as_secs_f64().max(1e-9),
        );
        let want = n as u64 * s;
        if p.calls.kind("list") != n as u64 {
            failures.push(format!(
                "scale: {} lists for {n} apps",
                p.calls.kind("list")
            ));
        }
        if creates != want + p.calls.rate_limited {
            failures.push(format!(
                "scale: {creates} creates, expected {want} + {} refused",
                p.calls.rate_limited
            ));
        }
        if p.ok_actions as u64 != want || p.failed_actions > 0 || p.failed_ticks > 0 {
            failures.push(format!(
                "scale: {} actions ok, {} failed, {} failed ticks (expected {want} ok)",
                p.ok_actions, p.failed_actions, p.failed_ticks
            ));
        }
        let pct = p.calls.rate_limited as f64 * 100.0 / creates.max(1) as f64;
        if pct > args.check_max_429_percent {
            failures.push(format!(
                "scale: {pct:.1} % of creates answered 429 (at most {} %)",
                args.check_max_429_percent
            ));
        }
        scale = Some(p);
        // Let transitions end, then a pass that must do nothing again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let settle = measured_pass(&engine, fake, &times).await;
        report("settle", &settle, min_steady, lb_steady, lb_steady);
        steady_checks(&mut failures, "settle", &settle, n as u64);
    }
    let after_scale = Mem::now();
    let machines: usize = fake
        .call(&format!("machines {n}"))
        .expect("count machines")
        .parse()
        .expect("a count");
    let expected = n * (args.machines + args.scale_by);
    if machines != expected {
        failures.push(format!(
            "{machines} machines after the run, expected {expected}"
        ));
    }
    let end = ProcStats::read();
    println!(
        "# apps {n}: machines after {machines} (expected {expected}); engine process: peak RSS {:.1} MiB, \
         process CPU {:.2} s",
        end.peak_rss_kib as f64 / 1024.0,
        end.cpu().as_secs_f64()
    );
    mem_line(n, "start", start, start);
    mem_line(n, "scalers built", built, start);
    mem_line(n, "after cold", after_cold, start);
    mem_line(n, "after steady", after_steady, start);
    if scale.is_some() {
        mem_line(n, "after settle", after_scale, start);
    }
    println!(
        "memory parts per app (heap bytes): targets (FlyScaler, policy, metric, spec) {:.0}, \
         first pass (engine state, records, scaler templates, pacing buckets, connections) {:.0}, \
         of which the latest records {:.0}; steady pass adds {:.0}",
        built.heap.saturating_sub(start.heap) as f64 / n as f64,
        after_cold.heap.saturating_sub(built.heap) as f64 / n as f64,
        records_heap as f64 / n as f64,
        after_steady.heap as f64 / n as f64 - after_cold.heap as f64 / n as f64,
    );
    let heap_per_app = after_steady.heap.saturating_sub(start.heap) / n.max(1) as u64;
    if heap_per_app > args.check_max_heap_per_app {
        failures.push(format!(
            "{heap_per_app} heap bytes per app after the steady pass (at most {})",
            args.check_max_heap_per_app
        ));
    }
    drop(engine);
    drop(client);
    if args.check {
        failures
    } else {
        if !failures.is_empty() {
            println!("# not checked (no --check), but off: {failures:?}");
        }
        Vec::new()
    }
}

/// A pass with nothing to do: one list per app and nothing else, every tick fine.
fn steady_checks(failures: &mut Vec<String>, label: &str, p: &PassResult, n: u64) {
    if p.calls.total != n || p.calls.kind("list") != n {
        failures.push(format!(
            "{label}: {} API calls [{}] for {n} apps, expected {n} lists",
            p.calls.total,
            p.calls.breakdown()
        ));
    }
    if p.stages.lists != n || p.ticks_seen as u64 != n {
        failures.push(format!(
            "{label}: the engine listed {} times in {} ticks for {n} apps",
            p.stages.lists, p.ticks_seen
        ));
    }
    if p.calls.rate_limited > 0 || p.calls.failed > 0 || p.failed_ticks > 0 || p.stages.actions > 0
    {
        failures.push(format!(
            "{label}: {} answered 429, {} failed, {} failed ticks, {} actions",
            p.calls.rate_limited, p.calls.failed, p.failed_ticks, p.stages.actions
        ));
    }
}

/// A random moment before `below`, for the crossing times.
fn jitter(rng: &mut ChaCha8Rng, below: Duration) -> Duration {
    let nanos = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(rng.random_range(0..nanos))
}

async fn wait_started(server: &FakeFlyServer, app: &str, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ms = server.fake().machines(app);
        let started = ms.iter().filter(|m| m.state == FlyState::Started).count();
        let moving = ms
            .iter()
            .any(|m| matches!(m.state, FlyState::Starting | FlyState::Stopping));
        if started == want && !moving {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "app {app} never settled at {want} started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn first_start_after(server: &FakeFlyServer, t0: SystemTime) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let hit = server
            .fake()
            .request_log()
            .into_iter()
            .filter(|r| r.at >= t0)
            .filter(|r| matches!(fleet::request_kind(&r.method, &r.path), "start" | "create"))
            .map(|r| r.at)
            .min();
        if let Some(at) = hit {
            return at.duration_since(t0).unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no start call within 120 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn stats(v: &[Duration]) -> (f64, f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    let pct = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    (mean, pct(0.5), pct(0.95), s[s.len() - 1])
}

async fn bench_reaction(args: &Args, server: &FakeFlyServer) {
    let latency = Duration::from_millis(args.latency_ms);
    let interval = Duration::from_millis(args.reaction_interval_ms);
    fleet::seed(&client(server, false), 1, 3, 1)
        .await
        .expect("seed the fake");
    realistic(server.fake(), latency);
    let app = fleet::app_name(0);
    println!(
        "# reaction: 1 app of 3 machines, started-machine-count = load, latency {} ms, interval {} ms \
         (trigger mode: interval 1 h, passes only on trigger), {} runs per mode",
        args.latency_ms, args.reaction_interval_ms, args.reaction_runs
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    let mut results = Vec::new();
    for trigger in [false, true] {
        // A fresh engine per mode. In trigger mode the interval is long so that every pass is
        // event-driven: with a short interval the timer's passes would spend the app's list
        // budget (1/s, burst 3) and the client's pacing would delay triggered passes.
        let load = Arc::new(StaticMetric::new("load", 1.0));
        let target = TargetSpec::new(
            Scope::new(app.clone()),
            Arc::new(
                FlyScaler::new(client(server, true), FlyScalerConfig::new(app.clone()))
                    .expect("scaler"),
            ),
            policy(None, Some("load")),
        )
        .with_source(load.clone());
        target.validate().expect("valid target");
        let engine = Arc::new(Engine::new(
            EngineConfig::default().with_interval(if trigger {
                Duration::from_secs(3600)
            } else {
                interval
            }),
            Arc::new(vec![target]),
        ));
        let cancel = CancellationToken::new();
        let runner = {
            let engine = engine.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { engine.run(cancel.cancelled_owned()).await })
        };
        let mut times = Vec::new();
        for _ in 0..args.reaction_runs {
            load.set(1.0);
            if trigger {
                engine.trigger();
            }
            wait_started(server, &app, 1).await;
            // Let the client's token buckets refill (per app list 1/s burst 3; per machine
            // start and stop 1/s burst 3) so pacing never delays the measured call.
            tokio::time::sleep(Duration::from_millis(2100)).await;
            if !trigger {
                tokio::time::sleep(jitter(&mut rng, interval)).await;
            }
            let t0 = SystemTime::now();
            load.set(2.0);
            if trigger {
                engine.trigger();
            }
            times.push(first_start_after(server, t0).await);
            wait_started(server, &app, 2).await;
        }
        cancel.cancel();
        let _ = runner.await;
        let (mean, p50, p95, max) = stats(&times);
        let mode = if trigger { "trigger" } else { "interval" };
        println!(
            "reaction {mode:<8} mean {mean:>8.1} ms  p50 {p50:>8.1} ms  p95 {p95:>8.1} ms  max {max:>8.1} ms"
        );
        results.push(mean);
    }
    // Scale the interval-mode figure to the default 15 s interval: the waiting part grows with
    // the interval, the work part (what the trigger mode measures) does not.
    let default = EngineConfig::default().interval;
    let work = results[1];
    let waiting = (results[0] - work).max(0.0);
    let scaled = waiting * default.as_secs_f64() / interval.as_secs_f64() + work;
    println!(
        "reaction interval scaled to the default {} s interval: mean {:.0} ms (expected interval/2 + work = {:.0} ms)",
        default.as_secs(),
        scaled,
        default.as_secs_f64() * 500.0 + work
    );
}
