//! A model of Fly Proxy's autostart and autostop, as plain functions over a machine listing.
//!
//! What Fly documents (docs `reference/fly-proxy-autostop-autostart`):
//! - **Autostart**: on a request, if all running machines are above their `soft_limit`, the
//!   proxy starts a stopped or suspended machine (if there is one).
//! - **Autostop**: every few minutes, per region: with more than one machine, `excess =
//!   machines - (machines over soft_limit + 1)`, and if `excess >= 1` it stops exactly one;
//!   with one machine, it stops it when its load is 0. `min_machines_running` machines are
//!   kept running. The proxy never creates or destroys machines.
//!
//! What this model assumes, since Fly does not document it:
//! - One region; the load is a single number (concurrent requests or connections, whatever
//!   the service's `concurrency.type` counts) for the whole app.
//! - The load is **packed**: the proxy routes to machines below their soft limit first, so
//!   `floor(load / soft_limit)` machines are at or above it. Autostart then starts
//!   `ceil(load / soft_limit) - running` spares when `load > running × soft_limit`.
//! - Machines still being created are invisible to the proxy; `created` machines (never
//!   started) are started like stopped ones, as Fly starts a machine created with
//!   `skip_launch`.
//! - Autostart picks the oldest spare, autostop the newest started machine.

use std::time::Duration;

use fleetscale_core::{Machine, MachineId, MachineState};
use serde::{Deserialize, Serialize};

/// Fly's default concurrency `soft_limit` (docs `reference/configuration`).
pub const DEFAULT_SOFT_LIMIT: f64 = 20.0;

/// The settings of the proxy model: those of the app's service in `fly.toml`, and the period
/// of the autostop pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// The trace column holding the load the proxy balances (e.g. the sum of
    /// `fly_app_concurrency` over the app's machines).
    pub load_metric: String,
    /// `concurrency.soft_limit` per machine (Fly's default: 20).
    pub soft_limit: f64,
    /// `auto_start_machines` (Fly's default: true).
    pub autostart: bool,
    /// `auto_stop_machines = "stop"` (the `fly launch` default) or off.
    pub autostop: bool,
    /// `min_machines_running` (default 0).
    pub min_machines_running: u32,
    /// Time between autostop passes: Fly says "every few minutes"; 5 minutes by default.
    #[serde(with = "fleetscale_core::record::seconds")]
    pub autostop_every: Duration,
    /// At most this many autostarts per pass (`None`: as many as the load needs).
    pub max_starts_per_pass: Option<u32>,
}

impl ProxyConfig {
    /// The `fly launch` defaults (autostart, autostop `stop`, minimum 0, soft limit 20) with
    /// the load read from `load_metric`.
    pub fn new(load_metric: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            load_metric: load_metric.into(),
            soft_limit: DEFAULT_SOFT_LIMIT,
            autostart: true,
            autostop: true,
            min_machines_running: 0,
            autostop_every: Duration::from_secs(300),
            max_starts_per_pass: None,
        }
    }
}

/// What the proxy does to one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyAction {
    /// Start a spare.
    Autostart(MachineId),
    /// Stop a started machine.
    Autostop(MachineId),
}

fn running(machines: &[Machine]) -> usize {
    machines
        .iter()
        .filter(|m| matches!(m.state, MachineState::Started | MachineState::Starting))
        .count()
}

/// The spares autostart starts for `load`, oldest first (empty when the running machines
/// absorb it, or when autostart is off).
///
/// ```
/// use fleetscale_core::{Machine, MachineState};
/// use fleetscale_sim::proxy::{autostart, ProxyConfig};
///
/// let m = |id: &str, s| Machine::new(id, s);
/// let fleet = [m("a", MachineState::Started), m("b", MachineState::Stopped), m("c", MachineState::Stopped)];
/// let cfg = ProxyConfig::new("load"); // soft limit 20
/// assert!(autostart(&cfg, 20.0, &fleet).is_empty());
/// assert_eq!(autostart(&cfg, 21.0, &fleet).len(), 1);
/// assert_eq!(autostart(&cfg, 95.0, &fleet).len(), 2, "only two spares");
/// ```
pub fn autostart(config: &ProxyConfig, load: f64, machines: &[Machine]) -> Vec<MachineId> {
    if !config.autostart || !load.is_finite() || load <= 0.0 || config.soft_limit <= 0.0 {
        return Vec::new();
    }
    let running = running(machines);
    if load <= running as f64 * config.soft_limit {
        return Vec::new();
    }
    let needed = ((load / config.soft_limit).ceil() as usize).saturating_sub(running);
    let needed = config
        .max_starts_per_pass
        .map_or(needed, |cap| needed.min(cap as usize));
    let mut spares: Vec<&Machine> = machines
        .iter()
        .filter(|m| {
            matches!(
                m.state,
                MachineState::Created | MachineState::Stopped | MachineState::Suspended
            )
        })
        .collect();
    spares.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    spares
        .into_iter()
        .take(needed)
        .map(|m| m.id.clone())
        .collect()
}

/// The machine one autostop pass stops for `load`, if any: the newest started one.
///
/// ```
/// use fleetscale_core::{Machine, MachineState};
/// use fleetscale_sim::proxy::{autostop, ProxyConfig};
///
/// let fleet: Vec<Machine> = ["a", "b", "c"].iter().map(|id| Machine::new(*id, MachineState::Started)).collect();
/// let cfg = ProxyConfig::new("load");
/// // 45 requests: two machines at the soft limit, the third below it: no excess.
/// assert_eq!(autostop(&cfg, 45.0, &fleet), None);
/// // 30 requests: one at the limit, so excess = 3 - (1 + 1) = 1: stop one.
/// assert_eq!(autostop(&cfg, 30.0, &fleet).unwrap().as_str(), "c");
/// ```
pub fn autostop(config: &ProxyConfig, load: f64, machines: &[Machine]) -> Option<MachineId> {
    if !config.autostop || !load.is_finite() || config.soft_limit <= 0.0 {
        return None;
    }
    let running = running(machines);
    if running <= config.min_machines_running as usize {
        return None;
    }
    let stop = if running > 1 {
        let over = ((load.max(0.0) / config.soft_limit).floor() as usize).min(running);
        running >= over + 2
    } else {
        running == 1 && load <= 0.0
    };
    if !stop {
        return None;
    }
    machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
        .map(|m| m.id.clone())
}

/// Fly Proxy over time: autostart at every pass, autostop every
/// [`ProxyConfig::autostop_every`].
#[derive(Clone, Debug)]
pub struct FlyProxy {
    config: ProxyConfig,
    last_stop_pass: Option<i64>,
}

impl FlyProxy {
    /// A proxy that has not run a pass yet (its first autostop pass comes one period after
    /// its first pass).
    pub fn new(config: ProxyConfig) -> FlyProxy {
        FlyProxy {
            config,
            last_stop_pass: None,
        }
    }

    /// The settings this proxy model was built with (load metric, soft limit, autostart/stop).
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// One pass at `now_ms` (any clock in milliseconds) with the current `load` over
    /// `machines` (without the ones still being created): the autostarts, or the autostop
    /// when its period has come.
    pub fn pass(&mut self, now_ms: i64, load: f64, machines: &[Machine]) -> Vec<ProxyAction> {
        let mut actions: Vec<ProxyAction> = autostart(&self.config, load, machines)
            .into_iter()
            .map(ProxyAction::Autostart)
            .collect();
        let every = i64::try_from(self.config.autostop_every.as_millis()).unwrap_or(i64::MAX);
        let last = *self.last_stop_pass.get_or_insert(now_ms);
        if actions.is_empty() && now_ms.saturating_sub(last) >= every {
            self.last_stop_pass = Some(now_ms);
            actions.extend(autostop(&self.config, load, machines).map(ProxyAction::Autostop));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(states: &[MachineState]) -> Vec<Machine> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| Machine::new(format!("m{i}"), *s))
            .collect()
    }

    #[test]
    fn autostart_counts_starting_machines_as_running() {
        use MachineState::*;
        let cfg = ProxyConfig::new("load");
        let f = fleet(&[Started, Starting, Stopped, Suspended, Created, Stopping]);
        assert!(autostart(&cfg, 40.0, &f).is_empty());
        assert_eq!(autostart(&cfg, 41.0, &f), vec![MachineId::new("m2")]);
        assert_eq!(autostart(&cfg, 1000.0, &f).len(), 3);
        // No machine running: any request starts one.
        let idle = fleet(&[Stopped, Stopped]);
        assert_eq!(autostart(&cfg, 0.5, &idle).len(), 1);
        assert!(autostart(&cfg, 0.0, &idle).is_empty());
        let capped = ProxyConfig {
            max_starts_per_pass: Some(1),
            ..cfg.clone()
        };
        assert_eq!(autostart(&capped, 1000.0, &f).len(), 1);
        let off = ProxyConfig {
            autostart: false,
            ..cfg
        };
        assert!(autostart(&off, 1000.0, &f).is_empty());
    }

    #[test]
    fn autostop_follows_the_documented_excess_rule() {
        use MachineState::*;
        let cfg = ProxyConfig::new("load");
        let two = fleet(&[Started, Started]);
        assert_eq!(autostop(&cfg, 19.0, &two), Some(MachineId::new("m1")));
        assert_eq!(autostop(&cfg, 20.0, &two), None, "one at the soft limit");
        let one = fleet(&[Started, Stopped]);
        assert_eq!(
            autostop(&cfg, 0.5, &one),
            None,
            "a single machine with traffic"
        );
        assert_eq!(autostop(&cfg, 0.0, &one), Some(MachineId::new("m0")));
        let keep = ProxyConfig {
            min_machines_running: 1,
            ..cfg.clone()
        };
        assert_eq!(autostop(&keep, 0.0, &one), None);
        // Stopping after a stop never triggers an autostart at the same load.
        for load in [0.0, 7.0, 20.0, 33.0, 59.0, 60.0, 61.0] {
            let mut f = fleet(&[Started; 6]);
            while let Some(id) = autostop(&cfg, load, &f) {
                f.iter_mut().find(|m| m.id == id).unwrap().state = Stopped;
            }
            assert!(autostart(&cfg, load, &f).is_empty(), "load {load}");
        }
    }

    #[test]
    fn passes_stop_at_most_once_per_period() {
        use MachineState::*;
        let mut p = FlyProxy::new(ProxyConfig::new("load"));
        let f = fleet(&[Started, Started, Started]);
        assert!(
            p.pass(0, 0.0, &f).is_empty(),
            "first pass starts the period"
        );
        assert!(p.pass(299_999, 0.0, &f).is_empty());
        assert_eq!(
            p.pass(300_000, 0.0, &f),
            vec![ProxyAction::Autostop(MachineId::new("m2"))]
        );
        assert!(p.pass(300_001, 0.0, &f).is_empty());
    }
}
