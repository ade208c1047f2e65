//! Exact-call tests of the engine with a mockall `Scaler`: one list per tick, destroys only of
//! the machines the plan named, nothing else.

use std::sync::Arc;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::{
    Capabilities, CreateRequest, Machine, MachineId, MachineState, Result, Scaler, Scope,
};
use mockall::predicate::eq;

mockall::mock! {
    pub Backend {}

    #[async_trait]
    impl Scaler for Backend {
        fn capabilities(&self) -> Capabilities;
        async fn list(&self) -> Result<Vec<Machine>>;
        async fn create(&self, request: &CreateRequest) -> Result<Machine>;
        async fn start(&self, id: &MachineId) -> Result<()>;
        async fn stop(&self, id: &MachineId) -> Result<()>;
        async fn suspend(&self, id: &MachineId) -> Result<()>;
        async fn destroy(&self, id: &MachineId) -> Result<()>;
    }
}

fn inventory() -> Vec<Machine> {
    let at = |s| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
    vec![
        Machine::new("keep-started", MachineState::Started).with_created_at(at(1)),
        Machine::new("old-stopped", MachineState::Stopped).with_created_at(at(2)),
        Machine::new("new-stopped", MachineState::Stopped).with_created_at(at(3)),
        Machine::new("busy", MachineState::Stopping).with_created_at(at(4)),
    ]
}

#[tokio::test]
async fn destroys_exactly_the_named_machines_and_calls_list_once() {
    let mut backend = MockBackend::new();
    backend
        .expect_capabilities()
        .returning(Capabilities::default);
    backend.expect_list().times(1).returning(|| Ok(inventory()));
    // created 4 -> 2: the two stopped machines go, newest first; `busy` is in transition.
    backend
        .expect_destroy()
        .with(eq(MachineId::from("new-stopped")))
        .times(1)
        .returning(|_| Ok(()));
    backend
        .expect_destroy()
        .with(eq(MachineId::from("old-stopped")))
        .times(1)
        .returning(|_| Ok(()));
    backend.expect_create().never();
    backend.expect_start().never();
    backend.expect_stop().never();
    backend.expect_suspend().never();

    let policy = Policy {
        created: CountRule::from_settings("created", Some("2"), None, None).unwrap(),
        ..Policy::default()
    };
    let target = TargetSpec::new(Scope::new("app"), Arc::new(backend), policy);
    let engine = Engine::new(EngineConfig::default(), Arc::new(vec![target]));
    let record = engine.run_once().await.unwrap().remove(0);
    assert_eq!(record.outcomes.len(), 2);
    assert!(record.outcomes.iter().all(|o| o.ok()));
}
