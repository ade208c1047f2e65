//! The cost per tick of a Prometheus metric source, against a REAL Prometheus server: one
//! per-app query per target ([`PrometheusSource`], `$APP_NAME` expanded per target) versus one
//! grouped query shared by every target ([`GroupedPrometheusSource`], `sum by (app) (…)`).
//!
//! ```text
//! cargo run --release -p fleetscale-metrics --example prom_bench -- [--apps 1,100,1000,10000]
//!     [--rounds 3] [--concurrency 16] [--short]
//! ```
//!
//! One Prometheus (the Debian binary, via the test harness) holds, from TSDB blocks written by
//! `promtool`, for each number of apps N a gauge `bench_load_<N>` with one series per app (a
//! sample a minute over the last 30 minutes; no scraping, so Prometheus' CPU is the queries'
//! alone). A pass reads every app once, as one engine tick does:
//! - per-app: `sum(last_over_time(bench_load_<N>{app="$APP_NAME"}[1h]))`, N requests, at most
//!   `--concurrency` in flight (the engine reads targets concurrently);
//! - grouped: `sum by (app) (last_over_time(bench_load_<N>[1h]))`, every target reading the
//!   shared answer (max age 1 s, passes 1 s apart).
//!
//! Measured per pass: the queries Prometheus counted (`prometheus_http_requests_total` of
//! `/api/v1/query`), the wall time (median of the rounds), Prometheus' CPU time (utime+stime
//! of its process from `/proc`) and this process' CPU time (HTTP client, JSON decoding).
//!
//! Its own checks (exit status 1 when one fails; no timing assertion lives in the tests):
//! both passes give every app the same value, which is the app's own; Prometheus counts N
//! queries per per-app pass and exactly 1 per grouped pass; and from 100 apps on, the grouped
//! pass costs at most a fifth of the per-app pass in Prometheus CPU + wall time. `--short`
//! (1 and 100 apps, 4 rounds) is the CI mode. Rounds: 4× `--rounds` up to 100 apps (CPU time
//! comes in 10 ms clock ticks), `--rounds` at 1,000, a third of it beyond.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetscale_core::{MetricSource, Scope};
use fleetscale_metrics::harness::PrometheusServer;
use fleetscale_metrics::{
    GroupedPrometheusConfig, GroupedPrometheusSource, PrometheusConfig, PrometheusSource,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The grouped source's max age: longer than one pass, shorter than the pause between passes.
const GROUPED_MAX_AGE: Duration = Duration::from_secs(1);

struct Args {
    apps: Vec<usize>,
    rounds: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        apps: vec![1, 100, 1_000, 10_000],
        rounds: 3,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--apps" => {
                args.apps = value("--apps")?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--apps: {e}"))?;
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?;
            }
            "--concurrency" => {
                args.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?;
            }
            "--short" => {
                args.apps = vec![1, 100];
                args.rounds = 1;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.apps.is_empty() || args.apps.contains(&0) || args.rounds == 0 || args.concurrency == 0 {
        return Err("--apps, --rounds and --concurrency must be positive".into());
    }
    Ok(args)
}

fn app(i: usize) -> String {
    format!("app-{i:05}")
}

/// The value app `i` holds (distinct per app).
fn value_of(i: usize) -> f64 {
    i as f64 + 0.5
}

/// The metric holding exactly `apps` series, so that the grouped query of an N-app pass
/// covers N apps, no more.
fn metric(apps: usize) -> String {
    format!("bench_load_{apps}")
}

/// For each N, a gauge with one series per app, a sample a minute over the last 30 minutes,
/// as OpenMetrics.
fn history(sizes: &[usize]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let total: usize = sizes.iter().sum();
    let mut text = String::with_capacity(total * 31 * 50);
    for &apps in sizes {
        let metric = metric(apps);
        let _ = writeln!(text, "# TYPE {metric} gauge");
        for i in 0..apps {
            let name = app(i);
            for minute in (0..=30).rev() {
                let _ = writeln!(
                    text,
                    "{metric}{{app=\"{name}\"}} {} {}",
                    value_of(i),
                    now - minute * 60
                );
            }
        }
    }
    text
}

/// The size of the grouped query's answer (JSON bytes).
async fn answer_bytes(prometheus: &PrometheusServer, query: &str) -> Result<usize, String> {
    let body = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus.url()))
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.len())
}

/// The pid of the Prometheus process whose storage is under `dir`.
fn prometheus_pid(dir: &Path) -> Option<u32> {
    let needle = format!("--storage.tsdb.path={}", dir.join("data").display());
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&needle.as_bytes())
            && args
                .first()
                .is_some_and(|a| String::from_utf8_lossy(a).ends_with("prometheus"))
        {
            return Some(pid);
        }
    }
    None
}

/// utime + stime of a process (`self` or a pid), from `/proc/<pid>/stat`.
fn cpu_time(pid: &str, ticks_per_second: f64) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `/api/v1/query` requests Prometheus has answered so far: its own counter
/// `prometheus_http_requests_total{handler="/api/v1/query"}`, read from its `/metrics` (it
/// scrapes nothing here, so the counter is not in its TSDB).
async fn queries_answered(prometheus: &PrometheusServer) -> Result<f64, String> {
    let text = reqwest::get(format!("{}/metrics", prometheus.url()))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let mut total = None;
    for line in text.lines() {
        if line.starts_with("prometheus_http_requests_total{")
            && line.contains("handler=\"/api/v1/query\"")
        {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad counter line {line:?}"))?;
            *total.get_or_insert(0.0) += value;
        }
    }
    total.ok_or_else(|| "no prometheus_http_requests_total for /api/v1/query".to_owned())
}

struct Pass {
    wall: Duration,
    prometheus_cpu: Duration,
    client_cpu: Duration,
    queries: f64,
    values: Vec<f64>,
}

struct Meter<'a> {
    prometheus: &'a PrometheusServer,
    pid: String,
    ticks: f64,
}

impl Meter<'_> {
    /// Runs one pass and measures it.
    async fn measure<F, Fut>(&self, pass: F) -> Result<Pass, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<f64>, String>>,
    {
        let q0 = queries_answered(self.prometheus).await?;
        let p0 = cpu_time(&self.pid, self.ticks);
        let c0 = cpu_time("self", self.ticks);
        let started = Instant::now();
        let values = pass().await?;
        let wall = started.elapsed();
        let p1 = cpu_time(&self.pid, self.ticks);
        let c1 = cpu_time("self", self.ticks);
        let queries = queries_answered(self.prometheus).await? - q0;
        Ok(Pass {
            wall,
            prometheus_cpu: p1.saturating_sub(p0),
            client_cpu: c1.saturating_sub(c0),
            queries,
            values,
        })
    }
}

async fn per_app_pass(
    source: &PrometheusSource,
    apps: usize,
    concurrency: usize,
) -> Result<Vec<f64>, String> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for i in 0..apps {
        let source = source.clone();
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            (i, source.collect(&Scope::new(app(i))).await)
        });
    }
    collect(set, apps).await
}

async fn grouped_pass(source: &GroupedPrometheusSource, apps: usize) -> Result<Vec<f64>, String> {
    let mut set = JoinSet::new();
    for i in 0..apps {
        let source = source.clone();
        set.spawn(async move { (i, source.collect(&Scope::new(app(i))).await) });
    }
    collect(set, apps).await
}

async fn collect(
    mut set: JoinSet<(usize, fleetscale_core::Result<f64>)>,
    apps: usize,
) -> Result<Vec<f64>, String> {
    let mut values = vec![f64::NAN; apps];
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.map_err(|e| e.to_string())?;
        values[i] = r.map_err(|e| format!("{}: {e}", app(i)))?;
    }
    Ok(values)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("prom_bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut sizes = args.apps.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let total: usize = sizes.iter().sum();
    eprintln!("writing {total} series into TSDB blocks and starting prometheus...");
    let prometheus = PrometheusServer::start_with_history(&history(&sizes))
        .await
        .map_err(|e| e.to_string())?;
    let pid = prometheus_pid(prometheus.dir())
        .ok_or("cannot find the prometheus process in /proc")?
        .to_string();
    let meter = Meter {
        prometheus: &prometheus,
        pid,
        ticks: clock_ticks(),
    };
    let per_app_query = |apps: usize| {
        format!(
            "sum(last_over_time({}{{app=\"$APP_NAME\"}}[1h]))",
            metric(apps)
        )
    };
    let grouped_query =
        |apps: usize| format!("sum by (app) (last_over_time({}[1h]))", metric(apps));
    // Reads of one pass share one request; the next pass starts after the max age (the
    // engine's tick interval is longer than the max age in the same way).
    let sources = |apps: usize| -> Result<(PrometheusSource, GroupedPrometheusSource), String> {
        let per_app = PrometheusSource::new(PrometheusConfig::new(
            "load",
            prometheus.url(),
            per_app_query(apps),
        ))
        .map_err(|e| e.to_string())?;
        let grouped = GroupedPrometheusSource::new(
            GroupedPrometheusConfig::new("load", prometheus.url(), grouped_query(apps))
                .with_max_age(GROUPED_MAX_AGE),
        )
        .map_err(|e| e.to_string())?;
        Ok((per_app, grouped))
    };

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for &apps in &args.apps {
        // CPU time comes in clock ticks (10 ms): small passes get more rounds.
        let rounds = match apps {
            0..=100 => args.rounds * 4,
            101..=1_000 => args.rounds,
            _ => args.rounds.div_ceil(3),
        };
        let (per_app, grouped) = sources(apps)?;
        let bytes = answer_bytes(&prometheus, &grouped_query(apps)).await?;
        // Warm up: connections, Prometheus' caches of the postings.
        per_app_pass(&per_app, apps.min(100), args.concurrency).await?;
        grouped_pass(&grouped, apps).await?;
        let mut kinds: BTreeMap<&str, Vec<Pass>> = BTreeMap::new();
        for _ in 0..rounds {
            tokio::time::sleep(GROUPED_MAX_AGE + Duration::from_millis(50)).await;
            let p = meter
                .measure(|| per_app_pass(&per_app, apps, args.concurrency))
                .await?;
            kinds.entry("per-app").or_default().push(p);
            tokio::time::sleep(GROUPED_MAX_AGE + Duration::from_millis(50)).await;
            let g = meter.measure(|| grouped_pass(&grouped, apps)).await?;
            kinds.entry("grouped").or_default().push(g);
        }
        let mut summary: BTreeMap<&str, (f64, Duration, Duration, Duration)> = BTreeMap::new();
        for (kind, passes) in &kinds {
            for p in passes {
                let own = (0..apps).all(|i| p.values[i] == value_of(i));
                if !own {
                    failures.push(format!(
                        "{apps} apps, {kind}: an app did not get its own value"
                    ));
                }
                let want = if *kind == "per-app" { apps as f64 } else { 1.0 };
                if p.queries != want {
                    failures.push(format!(
                        "{apps} apps, {kind}: Prometheus counted {} queries in a pass, expected {want}",
                        p.queries
                    ));
                }
            }
            let n = passes.len() as u32;
            summary.insert(
                kind,
                (
                    passes.iter().map(|p| p.queries).sum::<f64>() / f64::from(n),
                    median(passes.iter().map(|p| p.wall).collect()),
                    passes.iter().map(|p| p.prometheus_cpu).sum::<Duration>() / n,
                    passes.iter().map(|p| p.client_cpu).sum::<Duration>() / n,
                ),
            );
        }
        let (pq, pw, pc, pcl) = summary["per-app"];
        let (gq, gw, gc, gcl) = summary["grouped"];
        if apps >= 100 && (gw + gc) * 5 > pw + pc {
            failures.push(format!(
                "{apps} apps: grouped wall+CPU {} ms is more than a fifth of per-app {} ms",
                ms(gw + gc),
                ms(pw + pc)
            ));
        }
        rows.push((apps, rounds, pq, pw, pc, pcl, gq, gw, gc, gcl, bytes));
        eprintln!("{apps} apps done");
    }

    println!(
        "| apps | rounds | per-app queries/pass | per-app wall/pass (ms) | per-app Prometheus CPU/pass (ms) | per-app client CPU/pass (ms) | grouped queries/pass | grouped wall/pass (ms) | grouped Prometheus CPU/pass (ms) | grouped client CPU/pass (ms) | wall saving | Prometheus CPU saving | grouped answer (bytes) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (apps, rounds, pq, pw, pc, pcl, gq, gw, gc, gcl, bytes) in rows {
        let ratio = |a: Duration, b: Duration| {
            if b.is_zero() {
                "n/a (below clock tick)".to_owned()
            } else {
                format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64())
            }
        };
        println!(
            "| {apps} | {rounds} | {pq} | {} | {} | {} | {gq} | {} | {} | {} | {} | {} | {bytes} |",
            ms(pw),
            ms(pc),
            ms(pcl),
            ms(gw),
            ms(gc),
            ms(gcl),
            ratio(pw, gw),
            ratio(pc, gc)
        );
    }
    if failures.is_empty() {
        println!("\nchecks: ok (own values, query counts, grouped ≤ 1/5 of per-app from 100 apps)");
        Ok(())
    } else {
        Err(format!("checks failed:\n{}", failures.join("\n")))
    }
}
