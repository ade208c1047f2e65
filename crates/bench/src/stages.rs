//! Where a pass's time goes, measured from outside the engine: a [`Scaler`] wrapper that adds
//! up the time spent in `list` and in the actions (`create`, `start`, `stop`, `suspend`,
//! `destroy`), and counts the calls. What the engine does around them (metric reads,
//! planning, records, scheduling) is the tick's duration minus these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::{Capabilities, CreateRequest, Machine, MachineId, Result, Scaler};

/// Time and calls per stage, shared by every [`TimedScaler`] of a benchmark.
#[derive(Debug, Default)]
pub struct StageTimes {
    list_nanos: AtomicU64,
    lists: AtomicU64,
    action_nanos: AtomicU64,
    actions: AtomicU64,
}

/// A snapshot of [`StageTimes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageSnapshot {
    /// Time spent inside `list`, summed over the targets (they overlap in wall time).
    pub list: Duration,
    /// `list` calls.
    pub lists: u64,
    /// Time spent inside the actions, summed over the calls.
    pub action: Duration,
    /// Action calls.
    pub actions: u64,
}

impl StageTimes {
    /// The totals so far.
    pub fn snapshot(&self) -> StageSnapshot {
        StageSnapshot {
            list: Duration::from_nanos(self.list_nanos.load(Ordering::Relaxed)),
            lists: self.lists.load(Ordering::Relaxed),
            action: Duration::from_nanos(self.action_nanos.load(Ordering::Relaxed)),
            actions: self.actions.load(Ordering::Relaxed),
        }
    }

    fn add(nanos: &AtomicU64, count: &AtomicU64, since: Instant) {
        let d = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        nanos.fetch_add(d, Ordering::Relaxed);
        count.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::ops::Sub for StageSnapshot {
    type Output = StageSnapshot;
    fn sub(self, earlier: StageSnapshot) -> StageSnapshot {
        StageSnapshot {
            list: self.list.saturating_sub(earlier.list),
            lists: self.lists.saturating_sub(earlier.lists),
            action: self.action.saturating_sub(earlier.action),
            actions: self.actions.saturating_sub(earlier.actions),
        }
    }
}

/// A [`Scaler`] that forwards every call to `inner` and adds its time to shared
/// [`StageTimes`]. Errors are forwarded unchanged (and timed like successes).
#[derive(Debug)]
pub struct TimedScaler<S> {
    inner: S,
    times: Arc<StageTimes>,
}

impl<S> TimedScaler<S> {
    /// Wraps `inner`, adding to `times`.
    pub fn new(inner: S, times: Arc<StageTimes>) -> Self {
        TimedScaler { inner, times }
    }

    async fn action<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let t0 = Instant::now();
        let r = f.await;
        StageTimes::add(&self.times.action_nanos, &self.times.actions, t0);
        r
    }
}

#[async_trait]
impl<S: Scaler> Scaler for TimedScaler<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        let t0 = Instant::now();
        let r = self.inner.list().await;
        StageTimes::add(&self.times.list_nanos, &self.times.lists, t0);
        r
    }
    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        self.action(self.inner.create(request)).await
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.action(self.inner.start(id)).await
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.action(self.inner.stop(id)).await
    }
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        self.action(self.inner.suspend(id)).await
    }
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.action(self.inner.destroy(id)).await
    }
    async fn paused(&self) -> Result<Option<String>> {
        self.inner.paused().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscale_core::testing::FakeScaler;

    #[tokio::test]
    async fn counts_every_forwarded_call_by_stage() {
        let times = Arc::new(StageTimes::default());
        let s = TimedScaler::new(FakeScaler::default(), times.clone());
        let before = times.snapshot();
        assert!(s.list().await.expect("list").is_empty());
        let m = s
            .create(&CreateRequest::new(fleetscale_core::InitialState::Started))
            .await
            .expect("create");
        s.stop(&m.id).await.expect("stop");
        assert_eq!(s.list().await.expect("list").len(), 1);
        let d = times.snapshot() - before;
        assert_eq!((d.lists, d.actions), (2, 2));
    }
}
