//! A third-party backend: your own machines behind the `Scaler` trait, checked by the
//! conformance suite with one call, then scaled by the engine.
//!
//! `cargo run -p fleetscale-examples --example custom_backend`
//!
//! `TinyCloud` stands for any API you control (a hypervisor, a container scheduler, a pool
//! of bare-metal hosts): about 100 lines, and the engine's safety rules (bounds, transitions,
//! never the last machine, no retried creates) come for free.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::testing::{conformance, StaticMetric};
use fleetscale_core::{
    Capabilities, Counts, CreateRequest, Error, InitialState, Machine, MachineId, MachineState,
    Result, Scaler, Scope,
};

/// An in-memory "cloud": VMs with a state, created from an image, in a zone.
#[derive(Default)]
pub struct TinyCloud {
    vms: Mutex<BTreeMap<u64, (MachineState, SystemTime)>>,
    next: Mutex<u64>,
}

impl TinyCloud {
    fn with_vm(&self, id: &MachineId, f: impl FnOnce(&mut MachineState)) -> Result<()> {
        let n: u64 = id
            .as_str()
            .strip_prefix("vm-")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::not_found(format!("machine {id}")))?;
        let mut vms = self.vms.lock().map_err(|_| Error::config("poisoned"))?;
        let (state, _) = vms
            .get_mut(&n)
            .ok_or_else(|| Error::not_found(format!("machine {id}")))?;
        f(state);
        Ok(())
    }
}

#[async_trait]
impl Scaler for TinyCloud {
    /// No suspend; new VMs need no template; they can be created stopped.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_suspend(false)
            .with_create_needs_template(false)
            .with_create_stopped(true)
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        let vms = self.vms.lock().map_err(|_| Error::config("poisoned"))?;
        Ok(vms
            .iter()
            .map(|(n, (state, at))| {
                Machine::new(format!("vm-{n}"), *state)
                    .with_created_at(*at)
                    .with_region("zone-a")
            })
            .collect())
    }

    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        let state = match request.initial_state {
            InitialState::Started => MachineState::Started,
            _ => MachineState::Stopped,
        };
        let n = {
            let mut next = self.next.lock().map_err(|_| Error::config("poisoned"))?;
            *next += 1;
            *next
        };
        let at = SystemTime::now();
        self.vms
            .lock()
            .map_err(|_| Error::config("poisoned"))?
            .insert(n, (state, at));
        Ok(Machine::new(format!("vm-{n}"), state).with_created_at(at))
    }

    /// Idempotent: starting a started VM is a no-op.
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.with_vm(id, |s| *s = MachineState::Started)
    }

    /// Idempotent: stopping a stopped VM is a no-op.
    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.with_vm(id, |s| *s = MachineState::Stopped)
    }

    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.with_vm(id, |_| {})?;
        let n: u64 = id.as_str()[3..].parse().unwrap_or_default();
        self.vms
            .lock()
            .map_err(|_| Error::config("poisoned"))?
            .remove(&n);
        Ok(())
    }
}

/// Checks `TinyCloud` with the conformance suite, then lets the engine scale it to
/// `ceil(queue / 10)` started VMs and back. Returns the started count after each step.
pub async fn run() -> std::result::Result<Vec<u32>, Box<dyn std::error::Error>> {
    conformance::scaler(&TinyCloud::default()).await?;
    println!("TinyCloud passes the fleetscale Scaler conformance suite");

    let cloud = Arc::new(TinyCloud::default());
    let queue = Arc::new(StaticMetric::new("queue", 0.0));
    let policy = Policy {
        created: CountRule::from_settings("created", Some("max(1, ceil(queue / 10))"), None, None)?,
        started: CountRule::from_settings("started", Some("ceil(queue / 10)"), None, None)?,
        ..Policy::default()
    };
    let target =
        TargetSpec::new(Scope::new("tiny"), cloud.clone(), policy).with_source(queue.clone());
    target.validate()?;
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![target]));
    let mut started = Vec::new();
    for q in [0.0, 25.0, 60.0, 15.0, 0.0] {
        queue.set(q);
        engine.run_once().await?;
        let c = Counts::of(&cloud.list().await?);
        println!("queue {q:>4}: {} VMs, {} started", c.created, c.started);
        started.push(c.started);
    }
    Ok(started)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    run().await.map(|_| ())
}
