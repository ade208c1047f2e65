//! The `fleetscale` command line (clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;

use crate::error::{BinError, Result};
use crate::logging::LogFormat;

const EXAMPLES: &str = "\
Examples:
  # See it work, no account or server needed: the Fly blueprint on the built-in fakes
  fleetscale demo
  fleetscale demo --duration 10s --speed 2

  # What would the autoscaler do now, and why? (one tick, no changes)
  fleetscale eval --config fleetscale.toml

  # Run it (add --dry-run to only log the plans)
  FLY_API_TOKEN=$(fly tokens create deploy -a my-app) fleetscale run --config fleetscale.toml

  # Local experiments: a fake Fly Machines API, a cluster of emulated Weave routers
  fleetscale fake fly --listen 127.0.0.1:4280
  fleetscale fake weave --listen-base 16784 --fixed 3

  # Reclaim the IP space of Weave peers that vanished (daemon, or one pass)
  fleetscale weave reclaim --fixed NAME=ADDR=http://10.0.0.1:6784 ... --once

The configuration file is described in `fleetscale run --help`.";

const RUN_HELP: &str = "\
Runs the autoscaler on every target of a TOML file until SIGINT or SIGTERM, serving
/metrics and /healthz. A minimal file, Fly's \"Autoscale Machines\" blueprint:

  [server]
  listen = \"127.0.0.1:9090\"

  [[target]]
  name = \"web\"
  backend = { type = \"fly\", app = \"my-app\" }   # or app = \"my-app-*\", org = \"my-org\"
  initial_state = \"stopped\"

  [target.policy]
  created = \"min(running_machines + 1, 10)\"   # or created_min/created_max, started...
  on_error = { mode = \"hold\" }

  [target.policy.limits]
  created = { min = 1, max = 10 }
  max_step_up = 3
  cooldown_after_scale_down = \"2m\"
  scale_in_stabilization = \"5m\"

  [[target.source]]
  type = \"prometheus\"
  name = \"running_machines\"
  address = \"https://api.fly.io/prometheus/my-org\"
  query = \"count(fly_instance_up{app='$APP_NAME'})\"
  token = \"${FLY_PROMETHEUS_TOKEN}\"

Expressions may use every source by name and created_machines, started_machines,
stopped_machines, suspended_machines, app_name. The Fly token is read from the variable
named by backend.token_env (default FLY_API_TOKEN; required); FLY_FLAPS_BASE_URL overrides
the API. An empty result of count(...) or sum(...) without grouping reads as 0; set
empty = \"error\" (or \"zero\") on a source to change that.
[engine] also takes shutdown_grace (default \"3s\": ticks in flight after SIGTERM, a second
signal exits at once) and max_actions_per_tick (default 100 creates, starts, stops and
destroys per target and tick). Counts saturate at 10,000. Two targets may not manage the
same machines (same app and overlapping process groups).
Ticks of an app are skipped while a deploy of it runs (backend.release_guard, default true;
Fly's GraphQL API, FLY_API_BASE_URL overrides it).
`${VAR}` in the file is replaced by the environment variable VAR. An optional [target.weave]
table makes dynamic peers of a Weave Net cluster join and leave with their machines.
Replicas: with a [coordination] table (or --etcd URLS) several processes on the same file
share the targets through etcd, each acting only on the targets it owns, every action fenced:

  [coordination]
  type = \"etcd\"
  endpoints = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\", \"https://10.0.0.3:2379\"]
  prefix = \"/fleetscale/\"     # keys of this deployment
  lease_ttl = \"10s\"           # a dead replica's targets are taken over after about this long
  username = \"fleetscale\"     # optional: etcd authentication
  password_file = \"/run/secrets/etcd-password\"   # or password = \"${ETCD_PASSWORD}\"
  ca_file = \"/etc/etcd/ca.pem\"   # optional TLS: cert_file, key_file, tls_server_name";

/// fleetscale: metric-driven autoscaling of Fly.io Machines and Weave Net memberships.
#[derive(Debug, Parser)]
#[command(name = "fleetscale", version, after_long_help = EXAMPLES, after_help = EXAMPLES)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: LevelFilter,
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the autoscaler on a configuration file (see `run --help` for the format).
    #[command(after_long_help = RUN_HELP)]
    Run(RunArgs),
    /// One tick of every target, without changing anything: what would be done and why.
    Eval(EvalArgs),
    /// A complete scaling scenario on the built-in fakes (no account, no server).
    #[cfg(feature = "fakes")]
    Demo(DemoArgs),
    /// What a policy would have done over past metrics (Prometheus or a CSV trace), replayed
    /// against a simulated fleet: summary.json, a table, plot.svg and plot.png.
    Backtest(Box<crate::backtest::BacktestArgs>),
    /// Start a fake as a server for local experiments.
    #[cfg(feature = "fakes")]
    #[command(subcommand)]
    Fake(FakeCommands),
    /// Weave Net tools.
    #[command(subcommand)]
    Weave(WeaveCommands),
    /// Print the version.
    Version,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Plan and log every tick, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Share the targets with other replicas through these etcd members (client URLs,
    /// comma separated): the `endpoints` of `[coordination]`, whose other settings apply.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd: Vec<String>,
}

/// `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON decision records instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The fastest `demo --speed`: every period of the scenario is divided by it, and below a few
/// milliseconds the fake's transitions and the tick interval stop meaning anything.
pub const MAX_DEMO_SPEED: f64 = 100.0;
/// The slowest `demo --speed`.
pub const MIN_DEMO_SPEED: f64 = 0.01;
/// The longest `demo --duration`.
pub const MAX_DEMO_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `--speed`: a finite number from [`MIN_DEMO_SPEED`] to [`MAX_DEMO_SPEED`].
///
/// # Errors
/// A message naming the accepted range (clap prints it with the flag).
pub fn parse_demo_speed(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || !(MIN_DEMO_SPEED..=MAX_DEMO_SPEED).contains(&v) {
        return Err(format!(
            "{s} is not a speed from {MIN_DEMO_SPEED} to {MAX_DEMO_SPEED} (times faster than real time)"
        ));
    }
    Ok(v)
}

/// Parses `--duration`: from 1 s to [`MAX_DEMO_DURATION`].
///
/// # Errors
/// A message naming the accepted range.
pub fn parse_demo_duration(s: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_secs(1) || d > MAX_DEMO_DURATION {
        return Err(format!("{s} is not a duration from 1s to 24h"));
    }
    Ok(d)
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Length of the scenario, from 1s to 24h, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_demo_duration)]
    pub duration: Duration,
    /// Play the scenario N times faster (0.01 to 100).
    #[arg(long, default_value_t = 1.0, value_parser = parse_demo_speed)]
    pub speed: f64,
    /// Plain lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// `fake …`.
#[derive(Debug, Subcommand)]
pub enum FakeCommands {
    /// A fake Fly Machines API (point FLY_FLAPS_BASE_URL at it).
    Fly(FakeFlyArgs),
    /// Emulated Weave Net routers with their HTTP APIs, one port each.
    Weave(FakeWeaveArgs),
}

/// `fake fly`.
#[derive(Debug, Args)]
pub struct FakeFlyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4280")]
    pub listen: SocketAddr,
    /// Require this token (`Authorization` as Fly clients send it); default: accept any.
    #[arg(long, env = "FAKE_FLY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Create this app with one started machine (repeatable), as `fly launch` would.
    #[arg(long)]
    pub app: Vec<String>,
    /// Transition time of machines (created→started, stopping→stopped, ...).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Turn off Fly's rate limits.
    #[arg(long)]
    pub no_rate_limits: bool,
}

/// `fake weave`.
#[derive(Debug, Args)]
pub struct FakeWeaveArgs {
    /// First port: router i listens on 127.0.0.1:(PORT + i).
    #[arg(long, default_value_t = 16784)]
    pub listen_base: u16,
    /// Fixed peers to launch (the fixed cluster; 3 or 5 in the Weave guide).
    #[arg(long, default_value_t = 3)]
    pub fixed: u32,
    /// Dynamic peers to launch as IPAM observers.
    #[arg(long, default_value_t = 0)]
    pub dynamic: u32,
}

/// `weave …`.
#[derive(Debug, Subcommand)]
pub enum WeaveCommands {
    /// Reclaim the IP space of peers that vanished without `weave reset` (rmpeer, exactly
    /// once, on the designated fixed peer; never for a reachable peer).
    Reclaim(ReclaimArgs),
}

/// `weave reclaim`.
#[derive(Debug, Args)]
pub struct ReclaimArgs {
    /// A fixed peer as NAME=ADDRESS=API_URL (peer name as `weave status` shows it, the
    /// address in $PEERS, the router API URL); repeat for each fixed peer.
    #[arg(long, required = true)]
    pub fixed: Vec<String>,
    /// The designated reclaimer peer (a fixed peer name); default: the first --fixed.
    #[arg(long)]
    pub designated: Option<String>,
    /// The reclaim ledger file (write-ahead, locked).
    #[arg(long, default_value = "/var/lib/fleetscale/weave-reclaim.ledger")]
    pub ledger: PathBuf,
    /// Keep the reclaim ledger in etcd instead of --ledger (client URLs of the members,
    /// comma separated), so that reclaimers on any hosts reclaim each dead peer once. The
    /// other etcd settings come from FLEETSCALE_ETCD_PREFIX, _USERNAME, _PASSWORD_FILE,
    /// _CA_FILE, _CERT_FILE, _KEY_FILE, _LEASE_TTL (see the README).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URLS",
        env = "FLEETSCALE_ETCD_ENDPOINTS"
    )]
    pub etcd: Vec<String>,
    /// Where the hosts that exist are listed: a peer is reclaimed only when its host is gone
    /// from it (required). `fly:APP[/GROUP]` (the app's machines; FLY_API_TOKEN),
    /// `http(s)://HOST/PATH` (an endpoint answering the hosts) or `command:PROGRAM ARGS`
    /// (a program printing them, run without a shell). A listing: one host per line, its id
    /// first, then its host names and addresses; or JSON
    /// `[{"id", "names", "addresses", "state": "live"|"gone"}]`.
    #[arg(long, value_name = "SPEC")]
    pub inventory: Option<String>,
    /// Deadline of one inventory read.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub inventory_timeout: Duration,
    /// No longer accepted (refused with the reason): time alone never proves that a peer is
    /// dead. Use --inventory.
    #[arg(long, value_parser = humantime::parse_duration, hide = true)]
    pub grace: Option<Duration>,
    /// Never reclaim a peer before it has been seen unreachable, continuously, for this long
    /// (two of Weave's 30 s gossip intervals by default, so that gossip and the mesh settle and
    /// a flapping link is not taken for a dead peer). The clock is kept in memory: a restart
    /// restarts it. 0s reclaims at first sight.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub min_unreachable: Duration,
    /// Time between passes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// One pass, then exit (status 1 if a reclaim failed).
    #[arg(long)]
    pub once: bool,
    /// Serve /metrics and /healthz here.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Runs `fleetscale` with `args` (including the program name) and returns the exit status.
pub async fn main_with_args(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // The demo's view is on stdout; the libraries' INFO lines would only clutter it.
    let level = match cli.command {
        #[cfg(feature = "fakes")]
        Commands::Demo(_) => cli.log_level.min(LevelFilter::WARN),
        _ => cli.log_level,
    };
    crate::logging::init_cli(cli.log_format, level);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            fleetscale_fas::redact::eprint_line(&format!("error: {e}"));
            1
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Commands::Version => {
            println!("fleetscale {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        #[cfg(feature = "fakes")]
        Commands::Demo(a) => {
            let opts = crate::demo::DemoOptions {
                duration: a.duration,
                speed: a.speed,
                live: !a.plain && std::io::IsTerminal::is_terminal(&std::io::stdout()),
            };
            let mut out = std::io::stdout();
            let s = crate::demo::run_demo(&opts, &mut out).await?;
            Ok(if s.scaled_out_and_in() { 0 } else { 1 })
        }
        Commands::Backtest(a) => crate::backtest::backtest(&a).await,
        Commands::Run(a) => crate::native::run(&a.config, a.dry_run, &a.etcd)
            .await
            .map(|()| 0),
        Commands::Eval(a) => crate::native::eval(&a.config, a.json).await,
        #[cfg(feature = "fakes")]
        Commands::Fake(FakeCommands::Fly(a)) => crate::fakes::fake_fly(a).await.map(|()| 0),
        #[cfg(feature = "fakes")]
        Commands::Fake(FakeCommands::Weave(a)) => crate::fakes::fake_weave(a).await.map(|()| 0),
        Commands::Weave(WeaveCommands::Reclaim(a)) => crate::weave::weave_reclaim(a).await,
    }
}

/// Parses a duration for config files and flags (`humantime`: `15s`, `1m30s`, `500ms`).
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| BinError::config(format!("invalid duration {s:?}: {e}")))
}
