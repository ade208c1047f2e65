use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{
    Capabilities, CreateRequest, Error, InitialState, Machine, MachineId, MachineState, Result,
    Scaler,
};

/// An operation of [`FakeScaler`], for fault injection and the call log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Scaler::list`].
    List,
    /// [`Scaler::create`].
    Create,
    /// [`Scaler::start`].
    Start,
    /// [`Scaler::stop`].
    Stop,
    /// [`Scaler::suspend`].
    Suspend,
    /// [`Scaler::destroy`].
    Destroy,
}

/// One call made to a [`FakeScaler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalerCall {
    /// Which [`Scaler`] method was called.
    pub op: Op,
    /// The machine (`None` for list; the new machine for a successful create).
    pub machine: Option<MachineId>,
    /// Whether it succeeded.
    pub ok: bool,
}

/// How long transitions take in a [`FakeScaler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transitions {
    /// Every operation lands in its final state at once.
    #[default]
    Instant,
    /// Machines stay `starting`/`stopping`/`suspending`/`destroying` until this many `list`
    /// calls have seen them in transition (so consecutive ticks observe the transition).
    AfterLists(u32),
}

type ErrorFactory = Arc<dyn Fn() -> Error + Send + Sync>;

struct Fault {
    op: Op,
    remaining: u32,
    make: ErrorFactory,
}

struct Inner {
    machines: Vec<(Machine, u32)>,
    next_id: u64,
    calls: Vec<ScalerCall>,
    faults: Vec<Fault>,
    /// Calls that never answer: the operation and how many more of its calls hang.
    hangs: Vec<(Op, u32)>,
    paused: Option<String>,
}

/// An in-memory [`Scaler`] following the lifecycle state machine, with fault injection.
///
/// New machines get ids `m1`, `m2`, ... and increasing `created_at` times, so "newest" is
/// well defined.
///
/// ```
/// use fleetscale_core::testing::{FakeScaler, Op};
/// use fleetscale_core::{Error, MachineState, Scaler};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let fake = FakeScaler::new().with_machines(2, MachineState::Started);
/// fake.fail_next(Op::Stop, 1, || Error::Unavailable { message: "injected".into(), source: None });
/// assert!(fake.stop(&"m1".into()).await.is_err());
/// assert!(fake.stop(&"m1".into()).await.is_ok());
/// assert_eq!(fake.machine(&"m1".into()).unwrap().state, MachineState::Stopped);
/// # });
/// ```
pub struct FakeScaler {
    inner: Mutex<Inner>,
    capabilities: Capabilities,
    transitions: Transitions,
}

impl Default for FakeScaler {
    fn default() -> Self {
        FakeScaler::new()
    }
}

impl std::fmt::Debug for FakeScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeScaler")
            .field("machines", &self.machines())
            .finish_non_exhaustive()
    }
}

impl FakeScaler {
    /// An empty fleet that supports everything and needs no template.
    pub fn new() -> Self {
        FakeScaler {
            inner: Mutex::new(Inner {
                machines: Vec::new(),
                next_id: 0,
                calls: Vec::new(),
                faults: Vec::new(),
                hangs: Vec::new(),
                paused: None,
            }),
            capabilities: Capabilities {
                suspend: true,
                create_needs_template: false,
                create_stopped: true,
            },
            transitions: Transitions::Instant,
        }
    }

    /// Sets the capabilities reported (and enforced: unsupported operations fail).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets how long transitions take.
    pub fn with_transitions(mut self, transitions: Transitions) -> Self {
        self.transitions = transitions;
        self
    }

    /// Adds `n` machines in `state`.
    pub fn with_machines(self, n: usize, state: MachineState) -> Self {
        for _ in 0..n {
            self.add_machine(state);
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a machine in `state` and returns its id.
    pub fn add_machine(&self, state: MachineState) -> MachineId {
        let mut inner = self.lock();
        inner.next_id += 1;
        let n = inner.next_id;
        let m = Machine::new(format!("m{n}"), state)
            .with_created_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n))
            .with_region("fake")
            .with_address(format!("10.0.0.{}", n % 250 + 1));
        let id = m.id.clone();
        inner.machines.push((m, 0));
        id
    }

    /// Adds `machine` as given (its id, name, state, address, labels): machines made outside
    /// the autoscaler, or fixtures with chosen names. Returns its id.
    ///
    /// # Panics
    /// If a machine with the same id exists: a scaler never lists one id twice.
    pub fn insert(&self, machine: Machine) -> MachineId {
        let mut inner = self.lock();
        assert!(
            inner.machines.iter().all(|(m, _)| m.id != machine.id),
            "FakeScaler::insert: machine {} exists already",
            machine.id
        );
        let id = machine.id.clone();
        inner.machines.push((machine, 0));
        id
    }

    /// Every machine, as stored (without settling transitions).
    pub fn machines(&self) -> Vec<Machine> {
        self.lock()
            .machines
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// One machine, as stored.
    pub fn machine(&self, id: &MachineId) -> Option<Machine> {
        self.lock()
            .machines
            .iter()
            .find(|(m, _)| &m.id == id)
            .map(|(m, _)| m.clone())
    }

    /// Sets a machine's state from outside (a proxy autostart, a crash). Returns whether the
    /// machine exists.
    pub fn set_state(&self, id: &MachineId, state: MachineState) -> bool {
        let mut inner = self.lock();
        match inner.machines.iter_mut().find(|(m, _)| &m.id == id) {
            Some((m, seen)) => {
                m.state = state;
                *seen = 0;
                true
            }
            None => false,
        }
    }

    /// Sets whether a machine may be acted on.
    pub fn set_manageable(&self, id: &MachineId, manageable: bool) {
        if let Some((m, _)) = self.lock().machines.iter_mut().find(|(m, _)| &m.id == id) {
            m.manageable = manageable;
        }
    }

    /// Removes a machine without any call (a host that vanished).
    pub fn vanish(&self, id: &MachineId) {
        self.lock().machines.retain(|(m, _)| &m.id != id);
    }

    /// Makes the next `times` calls of `op` fail with the error `make` builds.
    pub fn fail_next(&self, op: Op, times: u32, make: impl Fn() -> Error + Send + Sync + 'static) {
        self.lock().faults.push(Fault {
            op,
            remaining: times,
            make: Arc::new(make),
        });
    }

    /// Makes the next `times` calls of `op` never answer, as a backend that took the request
    /// and went silent: each stays pending until the caller gives up on it (drops it), and is
    /// not in the call log.
    pub fn hang_next(&self, op: Op, times: u32) {
        self.lock().hangs.push((op, times));
    }

    /// Makes [`Scaler::paused`] answer `reason` (e.g. a deploy in progress); `None` resumes.
    pub fn set_paused(&self, reason: Option<&str>) {
        self.lock().paused = reason.map(str::to_owned);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults.clear();
        inner.hangs.clear();
    }

    /// Never returns when a call of `op` is to hang ([`FakeScaler::hang_next`]).
    async fn hang_if_asked(&self, op: Op) {
        let hang = {
            let mut inner = self.lock();
            let hang = inner
                .hangs
                .iter_mut()
                .find(|(o, remaining)| *o == op && *remaining > 0)
                .map(|(_, remaining)| *remaining -= 1)
                .is_some();
            inner.hangs.retain(|(_, remaining)| *remaining > 0);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<ScalerCall> {
        self.lock().calls.clone()
    }

    /// Forgets the call log (long soaks keep memory flat this way).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// How many calls of `op` were made (successful or not).
    pub fn call_count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    fn check_fault(inner: &mut Inner, op: Op) -> Result<()> {
        if let Some(f) = inner
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0)
        {
            f.remaining -= 1;
            let make = f.make.clone();
            inner.faults.retain(|f| f.remaining > 0);
            return Err(make());
        }
        Ok(())
    }

    fn settled(&self, state: MachineState) -> Option<MachineState> {
        match state {
            MachineState::Starting => Some(MachineState::Started),
            MachineState::Stopping => Some(MachineState::Stopped),
            MachineState::Suspending => Some(MachineState::Suspended),
            MachineState::Destroying => Some(MachineState::Destroyed),
            _ => None,
        }
    }

    fn transition(&self, m: &mut Machine, seen: &mut u32, through: MachineState, to: MachineState) {
        match self.transitions {
            Transitions::Instant => m.state = to,
            Transitions::AfterLists(_) => {
                m.state = through;
                *seen = 0;
            }
        }
    }

    /// A start, stop or suspend of `id`: nothing to do in the `done` states (there or on the
    /// way), the transition `via` then `to` from the `from` states, a conflict in any other.
    fn move_to(
        &self,
        op: Op,
        id: &MachineId,
        done: &[MachineState],
        from: &[MachineState],
        (via, to): (MachineState, MachineState),
    ) -> Result<()> {
        self.mutate(op, id, |s, m, seen| {
            if done.contains(&m.state) {
                Ok(())
            } else if from.contains(&m.state) {
                s.transition(m, seen, via, to);
                Ok(())
            } else {
                Err(Error::Conflict {
                    message: format!("machine {} is {}", m.id, m.state),
                    source: None,
                })
            }
        })
    }

    fn mutate(
        &self,
        op: Op,
        id: &MachineId,
        f: impl FnOnce(&Self, &mut Machine, &mut u32) -> Result<()>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let r = (|| {
            Self::check_fault(&mut inner, op)?;
            let (m, seen) = inner
                .machines
                .iter_mut()
                .find(|(m, _)| &m.id == id && m.state != MachineState::Destroyed)
                .ok_or_else(|| Error::not_found(format!("machine {id}")))?;
            if !m.manageable {
                return Err(Error::Unavailable {
                    message: format!("machine {id}: host unreachable"),
                    source: None,
                });
            }
            f(self, m, seen)
        })();
        inner.calls.push(ScalerCall {
            op,
            machine: Some(id.clone()),
            ok: r.is_ok(),
        });
        r
    }
}

#[async_trait]
impl Scaler for FakeScaler {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        self.hang_if_asked(Op::List).await;
        let mut inner = self.lock();
        let r = Self::check_fault(&mut inner, Op::List);
        inner.calls.push(ScalerCall {
            op: Op::List,
            machine: None,
            ok: r.is_ok(),
        });
        r?;
        let out: Vec<Machine> = inner.machines.iter().map(|(m, _)| m.clone()).collect();
        // Age transitions: what this list showed in transition may settle before the next.
        if let Transitions::AfterLists(n) = self.transitions {
            for (m, seen) in inner.machines.iter_mut() {
                if let Some(to) = self.settled(m.state) {
                    *seen += 1;
                    if *seen >= n {
                        m.state = to;
                        *seen = 0;
                    }
                }
            }
        }
        inner
            .machines
            .retain(|(m, _)| m.state != MachineState::Destroyed);
        Ok(out)
    }

    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        self.hang_if_asked(Op::Create).await;
        {
            let mut inner = self.lock();
            let r = Self::check_fault(&mut inner, Op::Create).and_then(|_| {
                if request.initial_state == InitialState::Stopped
                    && !self.capabilities.create_stopped
                {
                    return Err(Error::Unsupported {
                        operation: "create stopped",
                    });
                }
                if request.initial_state == InitialState::Suspended && !self.capabilities.suspend {
                    return Err(Error::Unsupported {
                        operation: "suspend",
                    });
                }
                match &request.template {
                    Some(t) if !inner.machines.iter().any(|(m, _)| m.id == t.id) => {
                        Err(Error::not_found(format!("template machine {}", t.id)))
                    }
                    None if self.capabilities.create_needs_template => Err(Error::InvalidRequest {
                        message: "no template machine given".into(),
                        source: None,
                    }),
                    _ => Ok(()),
                }
            });
            if let Err(e) = r {
                inner.calls.push(ScalerCall {
                    op: Op::Create,
                    machine: None,
                    ok: false,
                });
                return Err(e);
            }
        }
        // Every new machine starts life as `created`; the initial state is applied below.
        let id = self.add_machine(MachineState::Created);
        let mut inner = self.lock();
        let instant = self.transitions == Transitions::Instant;
        let (m, seen) = inner
            .machines
            .iter_mut()
            .find(|(m, _)| m.id == id)
            .ok_or_else(|| Error::not_found(format!("machine {id}")))?;
        if let Some(region) = &request.region {
            m.region = Some(region.clone());
        }
        if let Some(name) = &request.name {
            m.name = name.clone();
        }
        m.labels.extend(request.labels.clone());
        match request.initial_state {
            InitialState::Started => {
                m.state = if instant {
                    MachineState::Started
                } else {
                    MachineState::Starting
                };
                *seen = 0;
            }
            InitialState::Suspended => {
                m.state = if instant {
                    MachineState::Suspended
                } else {
                    MachineState::Suspending
                };
            }
            InitialState::Stopped => {}
        }
        let m = m.clone();
        inner.calls.push(ScalerCall {
            op: Op::Create,
            machine: Some(id),
            ok: true,
        });
        Ok(m)
    }

    async fn start(&self, id: &MachineId) -> Result<()> {
        self.hang_if_asked(Op::Start).await;
        self.move_to(
            Op::Start,
            id,
            &[MachineState::Started, MachineState::Starting],
            &[
                MachineState::Stopped,
                MachineState::Created,
                MachineState::Suspended,
                MachineState::Failed,
            ],
            (MachineState::Starting, MachineState::Started),
        )
    }

    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.hang_if_asked(Op::Stop).await;
        self.move_to(
            Op::Stop,
            id,
            &[
                MachineState::Stopped,
                MachineState::Stopping,
                MachineState::Created,
            ],
            &[
                MachineState::Started,
                MachineState::Suspended,
                MachineState::Failed,
            ],
            (MachineState::Stopping, MachineState::Stopped),
        )
    }

    async fn suspend(&self, id: &MachineId) -> Result<()> {
        self.hang_if_asked(Op::Suspend).await;
        if !self.capabilities.suspend {
            return Err(Error::Unsupported {
                operation: "suspend",
            });
        }
        self.move_to(
            Op::Suspend,
            id,
            &[MachineState::Suspended, MachineState::Suspending],
            &[MachineState::Started],
            (MachineState::Suspending, MachineState::Suspended),
        )
    }

    async fn paused(&self) -> Result<Option<String>> {
        Ok(self.lock().paused.clone())
    }

    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.hang_if_asked(Op::Destroy).await;
        let r = self.mutate(Op::Destroy, id, |s, m, seen| {
            if m.state == MachineState::Destroying {
                return Ok(());
            }
            s.transition(m, seen, MachineState::Destroying, MachineState::Destroyed);
            Ok(())
        });
        self.lock()
            .machines
            .retain(|(m, _)| m.state != MachineState::Destroyed);
        r
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn hung_calls_never_answer_and_later_calls_do() {
        let fake = FakeScaler::new().with_machines(1, MachineState::Started);
        fake.hang_next(Op::List, 1);
        let mut cx = Context::from_waker(Waker::noop());
        let mut hung = fake.list();
        assert!(hung.as_mut().poll(&mut cx).is_pending());
        assert!(hung.as_mut().poll(&mut cx).is_pending());
        let mut next = fake.list();
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(machines)) => assert_eq!(machines.len(), 1),
            other => panic!("the call after the hung one answers: {other:?}"),
        }
        assert_eq!(fake.call_count(Op::List), 1, "the hung call is not logged");
        fake.hang_next(Op::Create, u32::MAX);
        fake.clear_faults();
        let request = CreateRequest::default();
        let mut create = fake.create(&request);
        assert!(create.as_mut().poll(&mut cx).is_ready(), "cleared");
    }
}
