//! # fleetscale-sim
//!
//! "What would this policy have done yesterday?" A backtest replays a fleetscale policy over
//! metric history, tick by tick, against a simulated fleet, and measures what it would have
//! cost and how well it would have served.
//!
//! - [`Trace`]: the history, from a CSV file or built from range queries.
//! - [`replay()`]: the policy's own [`Policy::decide`](fleetscale_core::policy::Policy::decide)
//!   and the planner's [`plan_actions`](fleetscale_core::plan::plan_actions) — limits,
//!   cooldowns, stabilization and caps included, nothing re-implemented — against a
//!   [`SimFleet`] whose machines take time to create, start, stop and be destroyed, and for
//!   Fly apps the [Fly Proxy model](proxy) that starts spares under load and stops idle
//!   machines.
//! - [`Summary`]: machine-seconds by state, actions, peaks, time without a spare, time outside
//!   the targets, waits for a spare; `summary.json` is byte-identical for the same inputs.
//! - [`plot`]: `plot.svg` and `plot.png` with `plotters`, pure Rust, no system library.
//! - [`shapes`]: the demo's traffic curve and a day of diurnal load.
//! - `history` (feature `history`): the inputs of `fleetscale backtest`: subjects with their
//!   metric sources, and their history read from Prometheus (the one module that does I/O
//!   beyond [`write_outputs`]).
//!
//! Everything here but `history` is a plain function over data: no I/O but
//! [`write_outputs`], no clock, no randomness.
//!
//! ```
//! use fleetscale_core::policy::{CountRule, Policy};
//! use fleetscale_core::InitialState;
//! use fleetscale_sim::{replay, FleetQuantity, ProxyConfig, ReplayConfig, shapes};
//!
//! // Fly's "Autoscale Machines" blueprint: one stopped spare beyond the running machines.
//! let policy = Policy {
//!     created: CountRule::from_settings("created", Some("min(running_machines + 1, 10)"), None, None).unwrap(),
//!     ..Policy::default()
//! };
//! let mut config = ReplayConfig::new("blueprint", "my-app", policy);
//! config.plan_options.initial_state = InitialState::Stopped;
//! config.fleet_metrics.insert("running_machines".into(), FleetQuantity::Started);
//! config.proxy = Some(ProxyConfig::new("load"));
//! let day = shapes::diurnal_trace(shapes::SHIPPED_DAY, 15);
//! let r = replay(&day, &config).unwrap();
//! assert!(r.summary.peak_machines > 5 && r.summary.peak_machines <= 10);
//! ```

mod error;
pub mod fleet;
#[cfg(feature = "history")]
pub mod history;
pub mod plot;
pub mod proxy;
pub mod replay;
pub mod shapes;
pub mod summary;
mod trace;

use std::path::{Path, PathBuf};

pub use error::{Result, SimError};
pub use fleet::{FleetConfig, FleetQuantity, Latencies, SimFleet, SimState};
pub use proxy::{FlyProxy, ProxyAction, ProxyConfig};
pub use replay::{replay, ActionEvent, Actor, Frame, Replay, ReplayConfig};
pub use summary::{table, Summary};
pub use trace::{format_time, unix_ms, Trace};

/// The files [`write_outputs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// `summary.json` of the first replay.
    pub summary: PathBuf,
    /// `summary.compare.json` of the second, when there is one.
    pub compare: Option<PathBuf>,
    /// `table.txt`: the printed table.
    pub table: PathBuf,
    /// `plot.svg`.
    pub svg: PathBuf,
    /// `plot.png`.
    pub png: PathBuf,
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| SimError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Writes the outputs of one replay, or two side by side, into `dir` (created if needed):
/// `summary.json` (and `summary.compare.json`), `table.txt`, `plot.svg`, `plot.png`.
///
/// # Errors
/// [`SimError::Io`] when the directory or a file cannot be written; [`SimError::Plot`] when
/// drawing fails. Everything is rendered before the first file is written.
pub fn write_outputs(dir: &Path, replays: &[&Replay]) -> Result<Outputs> {
    let svg = plot::svg(replays)?;
    let summaries: Vec<&Summary> = replays.iter().map(|r| &r.summary).collect();
    let table = table(&summaries);
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        action: "create",
        path: dir.to_owned(),
        source,
    })?;
    let out = Outputs {
        summary: dir.join("summary.json"),
        compare: (replays.len() > 1).then(|| dir.join("summary.compare.json")),
        table: dir.join("table.txt"),
        svg: dir.join("plot.svg"),
        png: dir.join("plot.png"),
    };
    write(&out.summary, summaries[0].to_json().as_bytes())?;
    if let (Some(path), Some(s)) = (&out.compare, summaries.get(1)) {
        write(path, s.to_json().as_bytes())?;
    }
    write(&out.table, table.as_bytes())?;
    write(&out.svg, svg.as_bytes())?;
    plot::write_png(replays, &out.png)?;
    Ok(out)
}
