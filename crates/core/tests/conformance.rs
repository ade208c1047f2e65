//! The conformance suites pass on the fakes, and catch broken implementations.

use std::sync::Arc;

use async_trait::async_trait;
use fleetscale_core::testing::conformance::{self, ScalerSuite};
use fleetscale_core::testing::{FakeMembership, FakeScaler, Transitions};
use fleetscale_core::{
    Capabilities, CreateRequest, Error, Machine, MachineId, MachineState, Result, Scaler,
};

#[tokio::test]
async fn fake_scaler_conforms_with_instant_and_slow_transitions() {
    conformance::scaler(&FakeScaler::new()).await.unwrap();
    let slow = FakeScaler::new()
        .with_transitions(Transitions::AfterLists(3))
        .with_machines(1, MachineState::Started);
    conformance::scaler(&slow).await.unwrap();
    let templated = FakeScaler::new()
        .with_capabilities(Capabilities::default())
        .with_machines(1, MachineState::Started);
    conformance::scaler(&templated).await.unwrap();
    assert_eq!(
        templated.machines().len(),
        1,
        "the suite cleans up after itself"
    );
}

#[tokio::test]
async fn suite_needs_a_template_machine_when_the_backend_clones() {
    let empty = FakeScaler::new().with_capabilities(Capabilities::default());
    let err = conformance::scaler(&empty).await.unwrap_err();
    assert_eq!(err.check, "template");
}

/// A scaler whose `stop` is not idempotent and whose destroy of unknown ids "succeeds".
struct Sloppy {
    inner: FakeScaler,
    break_stop: bool,
}

#[async_trait]
impl Scaler for Sloppy {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        self.inner.list().await
    }
    async fn create(&self, r: &CreateRequest) -> Result<Machine> {
        self.inner.create(r).await
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.inner.start(id).await
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        if self.break_stop
            && self
                .inner
                .machine(id)
                .is_some_and(|m| m.state == MachineState::Stopped)
        {
            return Err(Error::Conflict {
                message: "already stopped".into(),
            });
        }
        self.inner.stop(id).await
    }
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        self.inner.suspend(id).await
    }
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        match self.inner.destroy(id).await {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }
}

#[tokio::test]
async fn suite_names_what_is_broken() {
    let err = conformance::scaler(&Sloppy {
        inner: FakeScaler::new(),
        break_stop: true,
    })
    .await
    .unwrap_err();
    assert_eq!(err.check, "stop-idempotent", "{err}");
    let err = conformance::scaler(&Sloppy {
        inner: FakeScaler::new(),
        break_stop: false,
    })
    .await
    .unwrap_err();
    assert_eq!(err.check, "destroy-twice", "{err}");
    assert!(err.to_string().contains("NotFound"), "{err}");
}

/// Claims suspend but does not implement it: the suite notices.
struct ClaimsSuspend(FakeScaler);

#[async_trait]
impl Scaler for ClaimsSuspend {
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        self.0.list().await
    }
    async fn create(&self, r: &CreateRequest) -> Result<Machine> {
        self.0.create(r).await
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.0.start(id).await
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.0.stop(id).await
    }
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.0.destroy(id).await
    }
}

#[tokio::test]
async fn suite_checks_claimed_capabilities() {
    let err = conformance::scaler(&ClaimsSuspend(FakeScaler::new()))
        .await
        .unwrap_err();
    assert_eq!(err.check, "suspend", "{err}");
}

#[tokio::test]
async fn fake_membership_conforms() {
    let cluster = Arc::new(FakeMembership::with_fixed(["fixed1", "fixed2", "fixed3"]));
    conformance::membership(
        cluster.as_ref(),
        &Machine::new("dyn1", MachineState::Started),
    )
    .await
    .unwrap();
    assert!(cluster.member("peer-dyn1").is_none());
    assert_eq!(
        cluster.member("fixed1").unwrap().owned,
        2,
        "the leaver's share moved"
    );
}

#[tokio::test]
async fn suite_settings_are_honoured() {
    let suite = ScalerSuite {
        unknown_id: MachineId::new("zzz"),
        ..ScalerSuite::default()
    };
    conformance::scaler_with(&FakeScaler::new(), &suite)
        .await
        .unwrap();
}
