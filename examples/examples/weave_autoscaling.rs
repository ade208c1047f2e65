//! Weave Net autoscaling on the router emulator, driven by the engine: a fixed cluster of 3
//! (`weave launch` + `weave prime`), dynamic peers that join as IPAM observers when their
//! host starts, leave with `weave reset` before it stops, and a spot host that vanishes
//! without notice and has its IP space reclaimed (`rmpeer`) exactly once.
//!
//! `cargo run -p fleetscale-examples --example weave_autoscaling`
//!
//! The procedure is Weave's operational guide "Autoscaling"; the emulator serves the real
//! router HTTP APIs on loopback and `EmulatedHosts` plays the hosts' `weave` script.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::testing::StaticMetric;
use fleetscale_core::{
    Capabilities, CreateRequest, Error, Machine, MachineId, MachineState, Result, Scaler, Scope,
};
use fleetscale_weave::fake::{EmulatedHosts, Emulator, EmulatorConfig, PeerSpec, Role};
use fleetscale_weave::{
    FixedPeer, PeerName, ReclaimConfig, Reclaimer, RouterClient, WeaveMembership,
    WeaveMembershipConfig,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn pn(n: u64) -> PeerName {
    PeerName::from_u64(n).expect("small peer names are valid")
}

fn addr(n: u64) -> String {
    format!("192.168.77.{n}")
}

/// A pool of spot hosts that can be powered on and off (no creates): the inventory the
/// engine scales and the membership maps peers to.
#[derive(Default)]
pub struct HostPool {
    hosts: Mutex<BTreeMap<String, Machine>>,
}

impl HostPool {
    fn add(&self, n: u64) {
        let mut m = Machine::new(format!("host-{n}"), MachineState::Stopped).with_address(addr(n));
        m.name = format!("dyn{n}"); // Weave's nickname is the host name
        m.created_at = Some(std::time::UNIX_EPOCH + Duration::from_secs(n));
        if let Ok(mut h) = self.hosts.lock() {
            h.insert(m.id.to_string(), m);
        }
    }
    /// The host vanishes (a reclaimed spot instance): gone from the inventory.
    fn vanish(&self, n: u64) {
        if let Ok(mut h) = self.hosts.lock() {
            h.remove(&format!("host-{n}"));
        }
    }
    fn set(&self, id: &MachineId, state: MachineState) -> Result<()> {
        let mut h = self.hosts.lock().map_err(|_| Error::config("poisoned"))?;
        let m = h
            .get_mut(id.as_str())
            .ok_or_else(|| Error::not_found(format!("host {id}")))?;
        m.state = state;
        Ok(())
    }
    fn started(&self) -> Vec<String> {
        self.hosts
            .lock()
            .map(|h| {
                h.values()
                    .filter(|m| m.state == MachineState::Started)
                    .map(|m| m.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl Scaler for HostPool {
    /// A fixed pool: no creates.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_suspend(false)
            .with_create_needs_template(true)
            .with_create_stopped(false)
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        Ok(self
            .hosts
            .lock()
            .map_err(|_| Error::config("poisoned"))?
            .values()
            .cloned()
            .collect())
    }
    async fn create(&self, _: &CreateRequest) -> Result<Machine> {
        Err(Error::Unsupported {
            operation: "create",
        })
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.set(id, MachineState::Started)
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.set(id, MachineState::Stopped)
    }
    async fn destroy(&self, _: &MachineId) -> Result<()> {
        Err(Error::Unsupported {
            operation: "destroy",
        })
    }
}

/// What the scenario saw.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Dynamic peers running after scaling out.
    pub joined: Vec<String>,
    /// Addresses the peers that left with reset still own (must be 0).
    pub owned_after_leave: u64,
    /// `rmpeer` calls for the vanished host (must be 1).
    pub rmpeers_of_vanished: usize,
    /// Ranges owned twice (must be none).
    pub duplicates: usize,
}

/// Runs the scenario.
pub async fn run() -> std::result::Result<Outcome, BoxError> {
    let emu = Emulator::new(EmulatorConfig::default());
    let peers: Vec<String> = (1..=3).map(addr).collect();
    let mut fixed = Vec::new();
    for n in 1..=3 {
        let spec = PeerSpec::new(pn(n), format!("fixed{n}"), addr(n));
        let url = emu.start_fixed(spec, peers.clone()).await?;
        fixed.push(FixedPeer::new(pn(n), addr(n), url));
    }
    RouterClient::new(&fixed[0].api_url)?
        .prime(Duration::from_secs(60))
        .await?;
    println!("fixed cluster of 3 launched and primed");

    let pool = Arc::new(HostPool::default());
    for n in 4..=6 {
        emu.add_peer(
            PeerSpec::new(pn(n), format!("dyn{n}"), addr(n)),
            Role::Observer,
        )?;
        pool.add(n);
    }
    let dir = std::env::temp_dir().join(format!("fleetscale-weave-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The engine hands each tick's inventory (the pool's machines) to the membership: peers are
    // bound to their hosts while they live, and a host that leaves the inventory is the
    // evidence that its peer is dead.
    let reclaimer = Reclaimer::new(
        ReclaimConfig::new(fixed.clone(), pn(1), dir.join("ledger.jsonl"))
            // The emulator's gossip is instant, so reclaim at first sight; on a real cluster
            // keep the default (60 s: two of Weave's gossip intervals).
            .with_min_unreachable(Duration::ZERO),
    )?;
    let mut mc = WeaveMembershipConfig::new(fixed.clone())
        .with_runner(Arc::new(EmulatedHosts::new(emu.clone())))
        .with_inventory_source("weave-pool")
        .with_reclaimer(Arc::new(reclaimer));
    mc.poll_interval = Duration::from_millis(50);
    mc.leave_deadline = Duration::from_secs(20);
    let membership = Arc::new(WeaveMembership::new(mc)?);

    let load = Arc::new(StaticMetric::new("load", 250.0));
    let policy = Policy {
        started: CountRule::from_settings("started", Some("ceil(load / 100)"), None, None)?,
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new("weave-pool"), pool.clone(), policy)
        .with_source(load.clone())
        .with_membership(membership);
    target.validate()?;
    let engine = Engine::new(
        EngineConfig::default()
            .with_reclaim_lost_members(true)
            .with_tick_timeout(Duration::from_secs(120)),
        Arc::new(vec![target]),
    );

    // Scale out: 3 hosts start, each peer joins as an observer and gets addresses.
    engine.run_once().await?;
    let mut outcome = Outcome {
        joined: pool.started(),
        ..Outcome::default()
    };
    for n in 4..=6 {
        emu.allocate(pn(n), &format!("container-{n}"))?;
    }
    println!(
        "load 250: started {:?}, each owns part of the range",
        outcome.joined
    );

    // Scale in: two peers leave with `weave reset` (space handed over) before their hosts stop.
    load.set(100.0);
    engine.run_once().await?;
    let left: Vec<u64> = (4..=6)
        .filter(|n| !pool.started().contains(&format!("dyn{n}")))
        .collect();
    outcome.owned_after_leave = left.iter().map(|n| emu.owned(pn(1), pn(*n))).sum();
    println!(
        "load 100: {:?} still running; {left:?} left and own {} addresses",
        pool.started(),
        outcome.owned_after_leave
    );

    // The last running spot host vanishes without a reset.
    let survivor: u64 = pool.started()[0].trim_start_matches("dyn").parse()?;
    let owned = emu.owned(pn(1), pn(survivor));
    emu.kill(pn(survivor))?;
    pool.vanish(survivor);
    println!("host dyn{survivor} vanished owning {owned} addresses");
    // Next ticks: the lost member is reclaimed once, and another host starts in its place.
    engine.run_once().await?;
    engine.run_once().await?;
    outcome.rmpeers_of_vanished = emu
        .rmpeer_log()
        .iter()
        .filter(|r| r.target == Some(pn(survivor)))
        .count();
    outcome.duplicates = emu.duplicate_ownership().len();
    println!(
        "reclaimed with {} rmpeer; now running {:?}; {} duplicate ranges",
        outcome.rmpeers_of_vanished,
        pool.started(),
        outcome.duplicates
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome)
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    run().await.map(|_| ())
}
