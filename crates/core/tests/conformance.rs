//! The conformance suites pass on the fakes, and catch broken implementations.

use std::sync::Arc;

use async_trait::async_trait;
use fleetscale_core::testing::conformance::{self, ScalerSuite};
use fleetscale_core::testing::{FakeMembership, FakeScaler, Op, Transitions};
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
                source: None,
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

#[tokio::test]
async fn suite_checks_claimed_capabilities() {
    // Claims suspend (as the fake does) but answers every suspend as the trait's default does.
    let claims_suspend = FakeScaler::new();
    claims_suspend.fail_next(Op::Suspend, u32::MAX, || Error::Unsupported {
        operation: "suspend",
    });
    let err = conformance::scaler(&claims_suspend).await.unwrap_err();
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

// ---------------------------------------------------------------------------------------------
// Deliberately broken backends, each breaking one promise of the contract. Every one of them
// passed an earlier version of the suite. Where a fault must be caught at once rather than after
// the settle time, the test counts `list` calls instead of measuring time: waiting out the 30 s
// default settle time at the 20 ms poll interval takes about 1,500 of them.

/// Runs the suite on a backend broken by `fault` and asserts that it fails check `check`
/// with a message containing each of `says`; gives the backend back for more assertions.
async fn caught(fault: Fault, check: &str, says: &[&str]) -> Broken {
    let b = Broken::new(fault);
    let err = conformance::scaler(&b).await.unwrap_err();
    assert_eq!(err.check, check, "{fault:?}: {err}");
    for words in says {
        assert!(err.message.contains(words), "{fault:?}: {err}");
    }
    b
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Lists every machine with `manageable: false`.
    AllUnmanageable,
    /// `destroy` of one machine removes every machine.
    DestroyWipes,
    /// After the first create, `list` names the newest machine twice.
    DuplicateIds,
    /// `stop` destroys the machine.
    StopDestroys,
    /// `start` leaves the machine failed.
    StartFails,
    /// `stop` stops the wrong machine (the other started or stopped machine, if any).
    StopsAnother,
    /// `create` returns an id that `list` never shows.
    CreateWrongId,
}

struct Broken {
    inner: FakeScaler,
    fault: Fault,
}

impl Broken {
    fn new(fault: Fault) -> Self {
        Broken {
            inner: FakeScaler::new(),
            fault,
        }
    }

    fn lists(&self) -> usize {
        self.inner.call_count(fleetscale_core::testing::Op::List)
    }
}

#[async_trait]
impl Scaler for Broken {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn list(&self) -> Result<Vec<Machine>> {
        let mut list = self.inner.list().await?;
        match self.fault {
            Fault::AllUnmanageable => list.iter_mut().for_each(|m| m.manageable = false),
            Fault::DuplicateIds => {
                if let Some(last) = list.last().cloned() {
                    list.push(last);
                }
            }
            _ => {}
        }
        Ok(list)
    }
    async fn create(&self, r: &CreateRequest) -> Result<Machine> {
        let mut m = self.inner.create(r).await?;
        if self.fault == Fault::CreateWrongId {
            m.id = MachineId::new(format!("{}-as-returned", m.id));
        }
        Ok(m)
    }
    async fn start(&self, id: &MachineId) -> Result<()> {
        self.inner.start(id).await?;
        if self.fault == Fault::StartFails && self.inner.machine(id).is_some() {
            self.inner.set_state(id, MachineState::Failed);
        }
        Ok(())
    }
    async fn stop(&self, id: &MachineId) -> Result<()> {
        match self.fault {
            Fault::StopDestroys => {
                self.inner.vanish(id);
                Ok(())
            }
            Fault::StopsAnother => {
                let other = self
                    .inner
                    .machines()
                    .into_iter()
                    .find(|m| &m.id != id && m.state.exists())
                    .map(|m| m.id);
                match other {
                    Some(other) => {
                        self.inner.set_state(&other, MachineState::Started);
                        self.inner.stop(id).await
                    }
                    None => self.inner.stop(id).await,
                }
            }
            _ => self.inner.stop(id).await,
        }
    }
    async fn suspend(&self, id: &MachineId) -> Result<()> {
        self.inner.suspend(id).await
    }
    async fn destroy(&self, id: &MachineId) -> Result<()> {
        if self.fault == Fault::DestroyWipes && self.inner.machine(id).is_some() {
            for m in self.inner.machines() {
                self.inner.vanish(&m.id);
            }
            return Ok(());
        }
        self.inner.destroy(id).await
    }
}

#[tokio::test]
async fn a_backend_listing_every_machine_unmanageable_fails_create_manageable() {
    let b = Broken::new(Fault::AllUnmanageable);
    let suite = ScalerSuite {
        settle_timeout: std::time::Duration::from_millis(300),
        ..ScalerSuite::default()
    };
    let err = conformance::scaler_with(&b, &suite).await.unwrap_err();
    assert_eq!(err.check, "create-manageable", "{err}");
    assert!(err.message.contains("manageable: false"), "{err}");
    // With a template to clone, the suite says why no machine can serve as one.
    let templated = Broken {
        inner: FakeScaler::new()
            .with_capabilities(Capabilities::default())
            .with_machines(2, MachineState::Started),
        fault: Fault::AllUnmanageable,
    };
    let err = conformance::scaler(&templated).await.unwrap_err();
    assert_eq!(err.check, "template", "{err}");
    assert!(err.message.contains("manageable: false"), "{err}");
}

#[tokio::test]
async fn a_destroy_that_wipes_other_machines_is_caught_even_on_an_empty_scaler() {
    let b = Broken::new(Fault::DestroyWipes);
    assert!(
        b.inner.machines().is_empty(),
        "the suite starts from nothing"
    );
    let err = conformance::scaler(&b).await.unwrap_err();
    assert_eq!(err.check, "destroy-only-named", "{err}");
    assert!(err.message.contains("also removed machine"), "{err}");
}

#[tokio::test]
async fn duplicate_ids_after_a_create_are_caught() {
    caught(Fault::DuplicateIds, "list-unique-ids", &["twice"]).await;
}

#[tokio::test]
async fn a_machine_that_goes_away_or_fails_is_reported_at_once_under_its_own_check() {
    let b = caught(Fault::StopDestroys, "stop-settles", &["went away"]).await;
    assert!(
        b.lists() < 50,
        "waited out the settle time: {} lists",
        b.lists()
    );

    let b = caught(
        Fault::StartFails,
        "start-settles",
        &["failed while", "states seen"],
    )
    .await;
    assert!(
        b.lists() < 50,
        "waited out the settle time: {} lists",
        b.lists()
    );
}

#[tokio::test]
async fn an_operation_that_changes_another_machine_is_caught() {
    caught(Fault::StopsAnother, "only-named", &["also changed machine"]).await;
}

#[tokio::test]
async fn a_create_returning_an_unlisted_id_names_the_ids_list_shows() {
    let b = Broken::new(Fault::CreateWrongId);
    let suite = ScalerSuite {
        settle_timeout: std::time::Duration::from_millis(200),
        ..ScalerSuite::default()
    };
    let err = conformance::scaler_with(&b, &suite).await.unwrap_err();
    assert_eq!(err.check, "create-listed", "{err}");
    assert!(
        err.message.contains("m1-as-returned") && err.message.contains("[m1]"),
        "{err}"
    );
}
