//! `weave_reaction`: how long a spot loss takes to reach its `rmpeer` on the Weave path, and
//! how much of it is Weave's failure detection and how much is the reclaimer's.
//!
//! ```text
//! cargo run --release -p fleetscale-bench --bin weave_reaction -- --runs 20 --scale 100
//! ```
//!
//! Each run starts the router emulator ([`fleetscale_weave::fake`], real HTTP APIs on
//! loopback) with 3 fixed peers and one observer (dynamic) peer holding addresses, an
//! inventory listing every host (the observer's among them), and a standalone
//! [`Reclaimer`] whose passes run every `--interval-s` as [`Reclaimer::run`] runs them (a pass,
//! then the interval). Once a pass has bound the observer to its host, at a moment uniform
//! over one interval the observer's host is lost: killed in the emulator (its router vanishes
//! without notice; each fixed peer drops it after the detection delay plus its own uniform
//! jitter, as mesh drops a silent connection after its heartbeat timeout) and, after
//! `--listing-delay-s`, listed by the inventory as terminated (or left out, `--listing
//! absent`). Measured from the loss to the `rmpeer` the emulator serves, split into:
//!
//! - **detection** (Weave): loss → the observer is gone from every fixed peer's topology (what
//!   the reclaimer's rule 5 needs; the designated peer's own detection is shown apart);
//! - **wait** (ours): → the start of the first reclaimer pass after that;
//! - **hold** (ours, the `min_unreachable` safety margin): → the start of the pass that
//!   reclaims (the first whose observation is at least `min_unreachable` after the first
//!   observation that saw the peer unreachable);
//! - **work** (ours): → the `rmpeer` is served (inventory, observation of the 3 fixed peers,
//!   ledger lock, write-ahead `intent` with `fsync`, the call).
//!
//! Instants are taken by a thread polling the emulator's state (`sees`, `rmpeer_log`) and the
//! reclaimer's pass counter every `--poll-us`.
//!
//! Delays are real-router delays divided by `--scale` (default 100: detection 360–530 ms,
//! interval and `min_unreachable` 600 ms, a run takes about 2 s). The emulator keeps its
//! clocks with `std::time::Instant` and serves real sockets, so tokio's paused clock cannot
//! stand in for real time; the table is printed as measured and scaled back up (detection,
//! wait and hold × scale; work as measured: it does not shrink with the delays).
//! [`Reclaimer::run`] accepts intervals of 1 s and more only; below that (`--loop driver`,
//! the default when the scaled interval is under 1 s) the binary runs the same loop itself:
//! `run_once`, then sleep the interval.
//!
//! Checks (exit 1 when one fails): every run ends in exactly one `rmpeer`, by the designated
//! peer, by peer name, of the lost observer, taking its addresses; the hold is never shorter
//! than `min_unreachable`; the components add up to the total; the total is within its bound
//! (maximum detection + one period of wait + the hold's whole periods + 1 s of work, real
//! time).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::{Parser, ValueEnum};
use fleetscale_bench::weave_cluster::{
    fixed_peer_addresses, peer_address, peer_name, start_fixed_peers, FIXED_PEERS,
};
use fleetscale_weave::fake::{Emulator, EmulatorConfig, PeerSpec};
use fleetscale_weave::inventory::{Host, HostInventory, HostSnapshot};
use fleetscale_weave::{ReclaimConfig, Reclaimer, WeaveError};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

/// Reaction time from a lost Weave host to its `rmpeer`, on the router emulator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Runs (one loss each).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Every delay below is divided by this (1 = real time: about 2.5 minutes a run).
    #[arg(long, default_value_t = 100.0)]
    scale: f64,
    /// Reclaimer interval, real seconds (the default of `ReclaimConfig`).
    #[arg(long, default_value_t = 60.0)]
    interval_s: f64,
    /// Reclaimer minimum unreachable time, real seconds (the default of `ReclaimConfig`).
    #[arg(long, default_value_t = 60.0)]
    min_unreachable_s: f64,
    /// Weave's failure detection delay, real seconds: a fixed peer keeps listing a killed
    /// peer this long at least (real Weave 2.8 routers: 36 s for a partition).
    #[arg(long, default_value_t = 36.0)]
    detection_s: f64,
    /// Uniform extra detection delay per fixed peer, up to this, real seconds (a killed peer
    /// was dropped after 53 s on real routers: 36 + 17).
    #[arg(long, default_value_t = 17.0)]
    jitter_s: f64,
    /// Delay of ring gossip between routers, real seconds.
    #[arg(long, default_value_t = 0.5)]
    gossip_s: f64,
    /// How long after the loss the cloud's listing shows it, real seconds.
    #[arg(long, default_value_t = 5.0)]
    listing_delay_s: f64,
    /// How the inventory shows the lost host.
    #[arg(long, value_enum, default_value_t = Listing::Terminated)]
    listing: Listing,
    /// Who runs the passes (default: `run` when the scaled interval is at least 1 s, which
    /// `Reclaimer::run` requires, else `driver`).
    #[arg(long = "loop", value_enum)]
    pass_loop: Option<PassLoop>,
    /// Polling period of the measuring thread, microseconds.
    #[arg(long, default_value_t = 250)]
    poll_us: u64,
    /// Seed of the loss moments and the emulator's jitter.
    #[arg(long, default_value_t = 0x5107)]
    seed: u64,
}

/// How the inventory lists a lost host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Listing {
    /// Listed as terminated (EC2 lists terminated instances for about an hour).
    Terminated,
    /// Left out of the listing (Fly drops a destroyed machine from its list).
    Absent,
}

/// Who runs the reclaimer's passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PassLoop {
    /// `Reclaimer::run` (interval of 1 s or more).
    Run,
    /// The same loop in this binary: `run_once`, then sleep the interval.
    Driver,
}

/// An inventory whose listing the benchmark changes: the cloud's view of the hosts.
struct CloudListing {
    hosts: Mutex<Vec<Host>>,
}

#[async_trait]
impl HostInventory for CloudListing {
    fn source(&self) -> &str {
        "cloud"
    }

    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(HostSnapshot::new("cloud", hosts))
    }
}

const DESIGNATED: u64 = 1;
const OBSERVER: u64 = 10;

fn host(n: u64, name: &str) -> Host {
    Host::new(format!("i-{name}"))
        .with_name(name)
        .with_address(peer_address(n))
}

/// What the polling thread saw, as instants.
#[derive(Default)]
struct Seen {
    /// Start of every reclaimer pass (its pass counter going up).
    pass_starts: Vec<Instant>,
    /// When each fixed peer first no longer listed the observer.
    dropped_by: BTreeMap<u64, Instant>,
    /// When the first `rmpeer` was seen served.
    rmpeer_at: Option<Instant>,
}

/// One run's components.
#[derive(Clone, Copy, Debug, Default)]
struct Components {
    designated: Duration,
    detection: Duration,
    wait: Duration,
    hold: Duration,
    work: Duration,
    total: Duration,
    /// Mean pass-to-pass period seen in this run.
    period: Duration,
}

fn secs(s: f64, scale: f64) -> Duration {
    Duration::from_secs_f64(s / scale)
}

fn main() {
    let args = Args::parse();
    assert!(args.scale >= 1.0, "--scale must be at least 1");
    let interval = secs(args.interval_s, args.scale);
    let pass_loop = args
        .pass_loop
        .unwrap_or(if interval >= Duration::from_secs(1) {
            PassLoop::Run
        } else {
            PassLoop::Driver
        });
    if pass_loop == PassLoop::Run && interval < Duration::from_secs(1) {
        eprintln!(
            "--loop run needs a scaled interval of at least 1 s (Reclaimer::run's minimum); \
             use a smaller --scale or --loop driver"
        );
        std::process::exit(2);
    }
    print_machine();
    println!(
        "weave_reaction: {} runs, scale {}, {:?} loop; real-time settings: interval {} s, \
         min_unreachable {} s, detection {}–{} s, gossip {} s, listing {:?} after {} s; seed {:#x}",
        args.runs,
        args.scale,
        pass_loop,
        args.interval_s,
        args.min_unreachable_s,
        args.detection_s,
        args.detection_s + args.jitter_s,
        args.gossip_s,
        args.listing,
        args.listing_delay_s,
        args.seed
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for run in 0..args.runs {
        let seed = rng.random::<u64>();
        let phase = rng.random_range(0.0..1.0);
        match rt.block_on(one_run(&args, pass_loop, run, seed, phase)) {
            Ok(c) => {
                println!(
                    "run {run:>3}: designated {:>7.1} ms, detection {:>7.1} ms, wait {:>7.1} ms, \
                     hold {:>7.1} ms, work {:>6.2} ms, total {:>7.1} ms",
                    ms(c.designated),
                    ms(c.detection),
                    ms(c.wait),
                    ms(c.hold),
                    ms(c.work),
                    ms(c.total)
                );
                if let Err(e) = check_bound(&args, &c) {
                    failures.push(format!("run {run}: {e}"));
                }
                results.push(c);
            }
            Err(e) => {
                println!("run {run:>3}: FAILED: {e}");
                failures.push(format!("run {run}: {e}"));
            }
        }
    }
    report(&args, &results);
    if !failures.is_empty() {
        eprintln!("{} check(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The run's total against its bound, in real time.
fn check_bound(args: &Args, c: &Components) -> Result<(), String> {
    let scaled = |d: Duration| d.as_secs_f64() * args.scale;
    let period = scaled(c.period).max(args.interval_s);
    let hold_periods = (args.min_unreachable_s / period).ceil().max(0.0);
    let bound = args.detection_s + args.jitter_s + period + hold_periods * period + 1.0;
    let total = scaled(c.detection + c.wait + c.hold) + c.work.as_secs_f64();
    if total > bound * 1.05 {
        return Err(format!(
            "total {total:.1} s (real time) over its bound {bound:.1} s"
        ));
    }
    Ok(())
}

async fn one_run(
    args: &Args,
    pass_loop: PassLoop,
    run: usize,
    seed: u64,
    phase: f64,
) -> Result<Components, String> {
    let s = |v: f64| secs(v, args.scale);
    let interval = s(args.interval_s);
    let min_unreachable = s(args.min_unreachable_s);
    let emu = Emulator::new(EmulatorConfig {
        gossip_delay: s(args.gossip_s),
        block_limit: Duration::from_secs(10),
        detection_delay: s(args.detection_s),
        detection_jitter: s(args.jitter_s),
        seed,
        ..EmulatorConfig::default()
    });
    let fixed = start_fixed_peers(&emu)
        .await
        .map_err(|e| format!("fixed cluster: {e}"))?;
    emu.start_observer(
        PeerSpec::new(peer_name(OBSERVER), "spot10", peer_address(OBSERVER)),
        fixed_peer_addresses(),
    )
    .await
    .map_err(|e| format!("observer: {e}"))?;
    let mut allocated = 0;
    for i in 0..500 {
        if allocated == 4 {
            break;
        }
        match emu.allocate(peer_name(OBSERVER), &format!("c{allocated}")) {
            Ok(_) => allocated += 1,
            Err(_) if i < 499 => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(format!("observer allocation: {e}")),
        }
    }
    let owned = emu.owned(peer_name(DESIGNATED), peer_name(OBSERVER));
    if owned == 0 {
        return Err("the observer owns no space in the designated peer's view".into());
    }

    let mut listed: Vec<Host> = FIXED_PEERS
        .iter()
        .map(|&n| host(n, &format!("fixed{n}")))
        .collect();
    listed.push(host(OBSERVER, "spot10"));
    let cloud = Arc::new(CloudListing {
        hosts: Mutex::new(listed),
    });
    let dir = std::env::temp_dir().join(format!(
        "weave_reaction-{}-{run}-{seed:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut config = ReclaimConfig::new(fixed, peer_name(DESIGNATED), dir.join("ledger.jsonl"))
        .with_inventory(cloud.clone())
        .with_min_unreachable(min_unreachable);
    // `Reclaimer::new` accepts intervals of 1 s and more; the driver keeps its own.
    config.interval = interval.max(Duration::from_secs(1));
    config.http_timeout = Duration::from_secs(5);
    config.verify_timeout = Duration::from_secs(10);
    config.lock_wait = Duration::from_secs(10);
    let reclaimer = Arc::new(Reclaimer::new(config).map_err(|e| e.to_string())?);

    // The measuring thread.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (emu, seen, stop, metrics) =
            (emu.clone(), seen.clone(), stop.clone(), reclaimer.metrics());
        let period = Duration::from_micros(args.poll_us);
        std::thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let p = metrics.snapshot().passes;
                let dropped: Vec<u64> = FIXED_PEERS
                    .iter()
                    .copied()
                    .filter(|&f| !emu.sees(peer_name(f), peer_name(OBSERVER)))
                    .collect();
                let served = !emu.rmpeer_log().is_empty();
                {
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for _ in passes..p {
                        s.pass_starts.push(now);
                    }
                    passes = p;
                    for f in dropped {
                        s.dropped_by.entry(f).or_insert(now);
                    }
                    if served && s.rmpeer_at.is_none() {
                        s.rmpeer_at = Some(now);
                    }
                }
                std::thread::sleep(period);
            }
        })
    };

    let shutdown = CancellationToken::new();
    let passes = {
        let (r, token) = (reclaimer.clone(), shutdown.clone());
        tokio::spawn(async move {
            match pass_loop {
                PassLoop::Run => r.run(token).await,
                PassLoop::Driver => loop {
                    tokio::select! {
                        _ = r.run_once() => {}
                        _ = token.cancelled() => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = token.cancelled() => return,
                    }
                },
            }
        })
    };

    let result = measure(args, &emu, &cloud, &seen, interval, phase, owned).await;
    shutdown.cancel();
    let _ = passes.await;
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    for f in FIXED_PEERS {
        let _ = emu.kill(peer_name(f));
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Waits for the observer to be bound, loses its host at `phase` of an interval, and splits
/// the time to its `rmpeer`.
async fn measure(
    args: &Args,
    emu: &Emulator,
    cloud: &CloudListing,
    seen: &Mutex<Seen>,
    interval: Duration,
    phase: f64,
    owned: u64,
) -> Result<Components, String> {
    let starts = |s: &Mutex<Seen>| {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .pass_starts
            .clone()
    };
    // The first pass has bound the observer to its host once the second one starts.
    let deadline = Instant::now() + Duration::from_secs(30) + 3 * interval;
    while starts(seen).len() < 2 {
        if Instant::now() > deadline {
            return Err("the reclaimer did not start two passes".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if let Some(f) = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .dropped_by
        .keys()
        .next()
    {
        return Err(format!("fixed peer {f} lost the observer before the kill"));
    }
    tokio::time::sleep(interval.mul_f64(phase)).await;

    let lost_at = Instant::now();
    emu.kill(peer_name(OBSERVER)).map_err(|e| e.to_string())?;
    let listing_delay = secs(args.listing_delay_s, args.scale);
    let relist = async {
        tokio::time::sleep(listing_delay).await;
        let mut hosts = cloud.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let id = "i-spot10";
        match args.listing {
            Listing::Terminated => {
                for h in hosts.iter_mut().filter(|h| h.id == id) {
                    h.gone = true;
                }
            }
            Listing::Absent => hosts.retain(|h| h.id != id),
        }
    };
    let bound = secs(
        args.detection_s + args.jitter_s + 3.0 * args.interval_s + args.min_unreachable_s,
        args.scale,
    ) + Duration::from_secs(10);
    let wait_rmpeer = async {
        loop {
            if seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rmpeer_at
                .is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let (_, done) = tokio::join!(relist, tokio::time::timeout(bound, wait_rmpeer));
    if done.is_err() {
        return Err(format!("no rmpeer within {bound:?} of the loss"));
    }
    // Let anything else the reclaimer would do show up in the log.
    tokio::time::sleep(interval * 2).await;

    let log = emu.rmpeer_log();
    let [r] = log.as_slice() else {
        return Err(format!("expected one rmpeer, the emulator served {log:?}"));
    };
    if r.by != peer_name(DESIGNATED)
        || r.target != Some(peer_name(OBSERVER))
        || r.id != peer_name(OBSERVER).to_string()
        || r.taken_over != owned
    {
        return Err(format!(
            "rmpeer not by the designated peer, by peer name, of the observer's {owned} \
             addresses: {r:?}"
        ));
    }
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let rmpeer_at = s.rmpeer_at.ok_or("no rmpeer instant")?;
    let designated_at = *s
        .dropped_by
        .get(&DESIGNATED)
        .ok_or("designated never dropped it")?;
    let detected_at = FIXED_PEERS
        .iter()
        .map(|f| s.dropped_by.get(f).copied())
        .collect::<Option<Vec<Instant>>>()
        .and_then(|v| v.into_iter().max())
        .ok_or("not every fixed peer dropped the observer")?;
    let first = s
        .pass_starts
        .iter()
        .copied()
        .find(|t| *t >= detected_at)
        .ok_or("no pass after the detection")?;
    let reclaiming = s
        .pass_starts
        .iter()
        .copied()
        .filter(|t| *t <= rmpeer_at)
        .max()
        .ok_or("no pass before the rmpeer")?;
    if reclaiming < first {
        return Err("the rmpeer came before any pass after the detection".into());
    }
    let hold = reclaiming - first;
    let min = secs(args.min_unreachable_s, args.scale);
    // A pass's observation comes a little after its start; allow the poller's resolution.
    if hold + Duration::from_millis(2) < min {
        return Err(format!(
            "held only {hold:?}, less than min_unreachable {min:?}"
        ));
    }
    let periods: Vec<Duration> = s.pass_starts.windows(2).map(|w| w[1] - w[0]).collect();
    let period = periods.iter().sum::<Duration>() / periods.len().max(1) as u32;
    let c = Components {
        designated: designated_at - lost_at,
        detection: detected_at - lost_at,
        wait: first - detected_at,
        hold,
        work: rmpeer_at - reclaiming,
        total: rmpeer_at - lost_at,
        period,
    };
    let sum = c.detection + c.wait + c.hold + c.work;
    if sum != c.total {
        return Err(format!("components add up to {sum:?}, not {:?}", c.total));
    }
    Ok(c)
}

/// mean, p50, p95, max.
fn stats(mut v: Vec<f64>) -> [f64; 4] {
    if v.is_empty() {
        return [0.0; 4];
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    [
        v.iter().sum::<f64>() / v.len() as f64,
        at(0.5),
        at(0.95),
        v[v.len() - 1],
    ]
}

fn report(args: &Args, results: &[Components]) {
    if results.is_empty() {
        return;
    }
    let k = args.scale;
    type Pick = fn(&Components) -> Duration;
    let rows: [(&str, &str, Pick, bool); 6] = [
        (
            "detection (designated peer alone)",
            "Weave",
            |c| c.designated,
            true,
        ),
        (
            "detection (all fixed peers)",
            "Weave",
            |c| c.detection,
            true,
        ),
        ("wait for our next pass", "ours", |c| c.wait, true),
        ("min_unreachable hold", "ours", |c| c.hold, true),
        ("our work (pass start → rmpeer)", "ours", |c| c.work, false),
        ("total (loss → rmpeer)", "", |c| c.total, true),
    ];
    println!();
    println!(
        "| component | whose | measured mean / p50 / p95 / max (ms) | real time mean / p50 / p95 / max (s) |"
    );
    println!("|---|---|---|---|");
    for (name, whose, pick, scales) in rows {
        let measured = stats(results.iter().map(|c| ms(pick(c))).collect());
        // Real time: the delays × scale; our work as measured (it does not shrink with them).
        let real: Vec<f64> = results
            .iter()
            .map(|c| {
                if name.starts_with("total") {
                    (c.detection + c.wait + c.hold).as_secs_f64() * k + c.work.as_secs_f64()
                } else if scales {
                    pick(c).as_secs_f64() * k
                } else {
                    pick(c).as_secs_f64()
                }
            })
            .collect();
        let real = stats(real);
        println!(
            "| {name} | {whose} | {:.1} / {:.1} / {:.1} / {:.1} | {:.3} / {:.3} / {:.3} / {:.3} |",
            measured[0], measured[1], measured[2], measured[3], real[0], real[1], real[2], real[3]
        );
    }
    let mean = |f: fn(&Components) -> Duration| {
        results.iter().map(|c| f(c).as_secs_f64()).sum::<f64>() / results.len() as f64
    };
    let period = mean(|c| c.period) * k;
    let work = mean(|c| c.work);
    let detection = args.detection_s + args.jitter_s * 3.0 / 4.0;
    let designated = args.detection_s + args.jitter_s / 2.0;
    let wait = period / 2.0;
    let hold = (args.min_unreachable_s / period).ceil() * period;
    let ours = mean(|c| c.wait + c.hold) * k + work;
    let total = mean(|c| c.detection + c.wait + c.hold) * k + work;
    println!();
    println!(
        "expected (real time): detection {detection:.2} s (the last of 3 fixed peers, each \
         {}–{} s uniform; the designated alone {designated:.2} s) + wait {wait:.2} s (half a \
         pass period of {period:.3} s = interval + pass) + hold {hold:.2} s (whole periods ≥ \
         min_unreachable {} s) + work {:.1} ms = {:.2} s",
        args.detection_s,
        args.detection_s + args.jitter_s,
        args.min_unreachable_s,
        work * 1e3,
        detection + wait + hold + work
    );
    println!(
        "measured (real time): total {total:.2} s mean, of which Weave's detection {:.2} s \
         ({:.0} %) and ours {ours:.2} s ({:.0} %: wait {:.2} s, hold {:.2} s, work {:.1} ms)",
        mean(|c| c.detection) * k,
        mean(|c| c.detection) * k / total * 100.0,
        ours / total * 100.0,
        mean(|c| c.wait) * k,
        mean(|c| c.hold) * k,
        work * 1e3
    );
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine: {cpus} CPUs, loadavg {}", load.trim());
}
