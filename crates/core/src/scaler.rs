//! The [`Scaler`] trait: the machines of one target, and the five things done to them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{CreateRequest, Error, Machine, MachineId, Result};

/// What a [`Scaler`] can do beyond the required operations. The planner, the policy and the
/// engine consult it so they never plan what the backend cannot execute.
///
/// ```
/// use fleetscale_core::Capabilities;
/// let pool = Capabilities::default().with_create_needs_template(false).with_create_stopped(true);
/// assert!(!pool.suspend && pool.create_stopped);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// `suspend` works and suspended machines can be resumed with `start`; the planner then
    /// suspends instead of stopping where the target asks ([`crate::plan::ScaleIn::Suspend`]).
    pub suspend: bool,
    /// `create` needs a template machine to clone (Fly does); with none, scale-up from zero is
    /// impossible and the planner reports it instead of planning a create. The policy then
    /// keeps at least one machine created (nothing could be created again from zero).
    pub create_needs_template: bool,
    /// `create` can leave a machine stopped ([`crate::InitialState::Stopped`]).
    pub create_stopped: bool,
}

impl Default for Capabilities {
    /// [`Capabilities::DEFAULT`].
    fn default() -> Self {
        Capabilities::DEFAULT
    }
}

impl Capabilities {
    /// The safe defaults: no suspend, creates need a template, no stopped creates.
    pub const DEFAULT: Capabilities = Capabilities {
        suspend: false,
        create_needs_template: true,
        create_stopped: false,
    };

    /// Sets [`Capabilities::suspend`].
    pub const fn with_suspend(mut self, suspend: bool) -> Self {
        self.suspend = suspend;
        self
    }

    /// Sets [`Capabilities::create_needs_template`].
    pub const fn with_create_needs_template(mut self, needs: bool) -> Self {
        self.create_needs_template = needs;
        self
    }

    /// Sets [`Capabilities::create_stopped`].
    pub const fn with_create_stopped(mut self, stopped: bool) -> Self {
        self.create_stopped = stopped;
        self
    }
}

/// The machines of **one target** (a Fly app and process group, a pool of hosts) and the
/// operations that change them.
///
/// The engine calls [`Scaler::list`] once per tick, plans, then calls the mutating operations
/// only for machines the plan named.
///
/// Implement it with `#[fleetscale_core::async_trait]` on the `impl` block (re-exported from
/// the `async-trait` crate): every method is `async` except [`Scaler::capabilities`].
/// Check an implementation with the conformance suite, `fleetscale_core::testing::conformance::
/// scaler` (feature `testing`).
///
/// # Guarantees the engine gives
/// - It never calls `destroy` on the last machine of a target, nor on a machine that was not in
///   the `list` result of the same tick.
/// - It never retries `create` within a tick (a create that failed may have half-succeeded);
///   the next tick re-reads the inventory and re-plans.
/// - Concurrent calls for *different* machines may happen (bounded by the engine's
///   concurrency); calls for the same machine are never concurrent within one engine.
/// - It remembers the creates it sent (like the ReplicaSet controller's expectations): a
///   machine created to start that `list` still shows as `created` counts as starting, and one
///   `list` does not show yet counts toward its destination too, until `list` shows it on its
///   way or [`EngineConfig::pending_create_timeout`](crate::engine::EngineConfig::pending_create_timeout)
///   passes. A backend reports states as its API does; it keeps no memory of its own creates.
/// - `create` receives the template as the same tick's `list` returned it, with the
///   [`Machine::detail`] the backend put there, so a clone needs no second read.
///
/// # Assumptions about implementations
/// - `list` returns every machine of the target, including ones in transition, with
///   [`Machine::manageable`] `false` for those it cannot act on. It is read-only.
/// - `start`, `stop`, `suspend` are **idempotent**: starting a started or starting machine,
///   stopping a stopped one, succeeds without effect.
/// - `destroy` of a machine that is already gone returns [`Error::NotFound`] (the engine treats
///   it as done), never destroys another machine.
/// - `create` returns the new machine as listed right after creation (its state may still be
///   `created` or `starting`). A later `list` shows it, possibly after a delay.
/// - Operations may return before the transition ends (the machine is then `starting`,
///   `stopping`, ...); the planner counts transitions toward their destination.
/// - Every call is **cancellation-safe** in the sense that dropping the future never leaves the
///   backend in a state that `list` does not describe.
/// - Implementations may retry retryable failures internally (429, 5xx) but must not retry
///   `create` unless the backend makes it idempotent (e.g. with a request ID).
///
/// # Errors
/// - [`Error::NotFound`]: the machine does not exist.
/// - [`Error::Unsupported`]: optional operation not implemented (see [`Scaler::capabilities`]).
/// - [`Error::Capacity`]: no room to create or start; the next tick may try again.
/// - [`Error::RateLimited`], [`Error::Unavailable`], [`Error::Timeout`]: temporary.
/// - [`Error::Conflict`]: another actor holds the machine (e.g. a Fly lease).
/// - [`Error::Unauthorized`]: credentials refused; nothing else will work either.
///
/// # Example
/// An in-memory pool, checked by the conformance suite
/// (`fleetscale_core::testing::conformance::scaler`, feature `testing`):
/// ```
/// use std::sync::Mutex;
/// use fleetscale_core::async_trait;
/// use fleetscale_core::{
///     Capabilities, CreateRequest, Error, InitialState, Machine, MachineId, MachineState,
///     Result, Scaler,
/// };
///
/// #[derive(Default)]
/// struct Pool {
///     machines: Mutex<Vec<Machine>>,
///     next_id: Mutex<u32>,
/// }
///
/// impl Pool {
///     fn set_state(&self, id: &MachineId, state: MachineState) -> Result<()> {
///         let mut ms = self.machines.lock().unwrap();
///         let m = ms.iter_mut().find(|m| &m.id == id).ok_or_else(|| Error::not_found(format!("machine {id}")))?;
///         m.state = state;
///         Ok(())
///     }
/// }
///
/// #[async_trait]
/// impl Scaler for Pool {
///     fn capabilities(&self) -> Capabilities {
///         Capabilities::default().with_create_needs_template(false).with_create_stopped(true)
///     }
///     async fn list(&self) -> Result<Vec<Machine>> {
///         Ok(self.machines.lock().unwrap().clone())
///     }
///     async fn create(&self, req: &CreateRequest) -> Result<Machine> {
///         let mut n = self.next_id.lock().unwrap();
///         *n += 1;
///         let state = match req.initial_state {
///             InitialState::Started => MachineState::Started,
///             _ => MachineState::Stopped,
///         };
///         let m = Machine::new(format!("m{n}"), state);
///         self.machines.lock().unwrap().push(m.clone());
///         Ok(m)
///     }
///     async fn start(&self, id: &MachineId) -> Result<()> {
///         self.set_state(id, MachineState::Started)
///     }
///     async fn stop(&self, id: &MachineId) -> Result<()> {
///         self.set_state(id, MachineState::Stopped)
///     }
///     async fn destroy(&self, id: &MachineId) -> Result<()> {
///         let mut ms = self.machines.lock().unwrap();
///         let before = ms.len();
///         ms.retain(|m| &m.id != id);
///         if ms.len() == before { Err(Error::not_found(format!("machine {id}"))) } else { Ok(()) }
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let pool = Pool::default();
/// let m = pool.create(&CreateRequest::default()).await.unwrap();
/// pool.stop(&m.id).await.unwrap();
/// assert_eq!(pool.list().await.unwrap()[0].state, MachineState::Stopped);
/// # });
/// ```
#[async_trait]
pub trait Scaler: Send + Sync {
    /// What this backend supports beyond the required operations. Defaults to
    /// [`Capabilities::default`] (the most conservative).
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Every machine of the target, in any state.
    async fn list(&self) -> Result<Vec<Machine>>;

    /// Creates one machine. Not retried by the engine.
    async fn create(&self, request: &CreateRequest) -> Result<Machine>;

    /// Starts (or resumes) a machine. Idempotent.
    async fn start(&self, id: &MachineId) -> Result<()>;

    /// Stops a machine gracefully. Idempotent.
    async fn stop(&self, id: &MachineId) -> Result<()>;

    /// Suspends a started machine. Idempotent. The planner asks for it only when
    /// [`Capabilities::suspend`] says it works. Defaults to [`Error::Unsupported`].
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        let _ = id;
        Err(Error::Unsupported {
            operation: "suspend",
        })
    }

    /// Destroys a machine. [`Error::NotFound`] if it is already gone.
    async fn destroy(&self, id: &MachineId) -> Result<()>;

    /// Whether the backend asks the engine to leave the target alone this tick, and why: e.g.
    /// a Fly deploy in progress, during which scaling would fight the deployer. Called once per
    /// tick, concurrently with [`Scaler::list`] and the metric reads (a pause is rare, so the
    /// tick does not pay a sequential round trip for it; the metric reads of a paused tick are
    /// discarded).
    ///
    /// `Ok(Some(reason))` skips the tick (recorded as
    /// [`TickStatus::Paused`](crate::record::TickStatus::Paused)); an error skips it too (stage
    /// `paused`), since the check could not rule a deploy out. Read-only and idempotent.
    /// Defaults to `Ok(None)`: never paused.
    async fn paused(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

#[async_trait]
impl<T: Scaler + ?Sized> Scaler for std::sync::Arc<T> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        (**self).list().await
    }
    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        (**self).create(request).await
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        (**self).start(id).await
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        (**self).stop(id).await
    }
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        (**self).suspend(id).await
    }
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        (**self).destroy(id).await
    }
    async fn paused(&self) -> Result<Option<String>> {
        (**self).paused().await
    }
}
