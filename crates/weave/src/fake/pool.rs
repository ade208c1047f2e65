//! [`MachinePool`]: the machines of an autoscaled pool as a test sets them, listed as a
//! [`HostInventory`] (what the pool's backend would answer).

use std::sync::Mutex;

use async_trait::async_trait;
use fleetscale_core::{Machine, MachineState};

use crate::inventory::{HostInventory, HostSnapshot};
use crate::WeaveError;

/// An in-memory pool of machines: a test adds, removes and changes them; every listing is a
/// complete snapshot of what is there at that moment.
///
/// ```
/// use fleetscale_core::{Machine, MachineState};
/// use fleetscale_weave::fake::MachinePool;
/// let pool = MachinePool::new("pool");
/// pool.add(Machine::new("m-1", MachineState::Started));
/// pool.set_state("m-1", MachineState::Stopped);
/// assert_eq!(pool.machines()[0].state, MachineState::Stopped);
/// pool.remove("m-1");
/// assert!(pool.machines().is_empty());
/// ```
#[derive(Debug)]
pub struct MachinePool {
    source: String,
    machines: Mutex<Vec<Machine>>,
}

impl MachinePool {
    /// An empty pool whose listings are from the inventory `source`.
    pub fn new(source: impl Into<String>) -> Self {
        MachinePool {
            source: source.into(),
            machines: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Machine>> {
        self.machines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a machine.
    pub fn add(&self, machine: Machine) {
        self.lock().push(machine);
    }

    /// Removes every machine named `name`.
    pub fn remove(&self, name: &str) {
        self.lock().retain(|m| m.name != name);
    }

    /// Sets the state of every machine named `name`.
    pub fn set_state(&self, name: &str, state: MachineState) {
        for m in self.lock().iter_mut().filter(|m| m.name == name) {
            m.state = state;
        }
    }

    /// The machines now.
    pub fn machines(&self) -> Vec<Machine> {
        self.lock().clone()
    }
}

#[async_trait]
impl HostInventory for MachinePool {
    fn source(&self) -> &str {
        &self.source
    }

    async fn hosts(&self) -> Result<HostSnapshot, WeaveError> {
        Ok(HostSnapshot::from_machines(
            self.source.clone(),
            &self.machines(),
        ))
    }
}
