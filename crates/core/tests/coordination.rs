//! The engine under a `Coordinator`: it acts only on the targets it owns, and sends no
//! mutating call without a valid fence.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetscale_core::coordination::{ActionNote, Coordinator, Fence};
use fleetscale_core::engine::{Engine, EngineConfig, TargetSpec};
use fleetscale_core::plan::ActionKind;
use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::testing::{FakeScaler, Op};
use fleetscale_core::{Error, MachineState, Result, Scope};

/// Owns the targets in `owned`; fences as `mode` says; remembers every note.
struct Scripted {
    owned: Vec<String>,
    mode: Mutex<Mode>,
    notes: Mutex<Vec<ActionNote>>,
}

#[derive(Clone, Copy)]
enum Mode {
    Allow,
    Refuse,
    Expired,
    Unavailable,
}

#[async_trait]
impl Coordinator for Scripted {
    async fn acquire(&self, targets: &[String]) -> Result<Vec<String>> {
        if matches!(*self.mode.lock().unwrap(), Mode::Unavailable) {
            return Err(Error::Unavailable {
                message: "store down".into(),
                source: None,
            });
        }
        Ok(targets
            .iter()
            .filter(|t| self.owned.contains(t))
            .cloned()
            .collect())
    }

    async fn fence(&self, note: &ActionNote) -> Result<Fence> {
        self.notes.lock().unwrap().push(note.clone());
        match *self.mode.lock().unwrap() {
            Mode::Allow => Ok(Fence::new(
                7,
                Some(Instant::now() + Duration::from_secs(60)),
            )),
            Mode::Refuse => Err(Error::refused(format!(
                "target {} is owned by another replica",
                note.target
            ))),
            Mode::Expired => Ok(Fence::new(7, Some(Instant::now()))),
            Mode::Unavailable => Err(Error::Unavailable {
                message: "store down".into(),
                source: None,
            }),
        }
    }
}

fn target(name: &str, scaler: Arc<FakeScaler>) -> TargetSpec {
    let policy = Policy {
        created: CountRule::from_settings("created", Some("3"), None, None).unwrap(),
        ..Policy::default()
    };
    TargetSpec::new(Scope::new(name), scaler, policy)
}

#[tokio::test]
async fn acts_only_on_owned_targets_and_only_under_a_valid_fence() {
    let mine = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let theirs = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let coordinator = Arc::new(Scripted {
        owned: vec!["mine".into()],
        mode: Mutex::new(Mode::Allow),
        notes: Mutex::default(),
    });
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(vec![
            target("mine", mine.clone()),
            target("theirs", theirs.clone()),
        ]),
    )
    .with_coordinator(coordinator.clone());

    // A target owned by another replica is not even listed.
    let records = engine.run_once().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target, "mine");
    assert_eq!(theirs.calls().len(), 0);
    assert_eq!(mine.call_count(Op::Create), 2);
    let notes = coordinator.notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 2, "one fence per create");
    assert!(notes
        .iter()
        .all(|n| n.target == "mine" && n.kind == ActionKind::Create));

    // A refused fence, an expired fence or an unreachable store: nothing is sent.
    for mode in [Mode::Refuse, Mode::Expired] {
        let scaler = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
        *coordinator.mode.lock().unwrap() = mode;
        let engine = Engine::new(
            EngineConfig::default(),
            Arc::new(vec![target("mine", scaler.clone())]),
        )
        .with_coordinator(coordinator.clone());
        let r = engine.run_once().await.unwrap().remove(0);
        assert_eq!(scaler.call_count(Op::Create), 0);
        assert_eq!(r.outcome_count(ActionKind::Create, false), 2);
        assert!(r
            .outcomes
            .iter()
            .all(|o| o.error.as_ref().is_some_and(|e| e.step == "fence")));
    }
    *coordinator.mode.lock().unwrap() = Mode::Unavailable;
    let scaler = Arc::new(FakeScaler::new().with_machines(1, MachineState::Started));
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(vec![target("mine", scaler.clone())]),
    )
    .with_coordinator(coordinator);
    assert!(engine.run_once().await.unwrap().is_empty());
    assert_eq!(scaler.calls().len(), 0, "not even a list");
}

#[tokio::test]
async fn a_reclaim_of_a_lost_member_is_sent_only_under_a_valid_fence() {
    use fleetscale_core::testing::FakeMembership;
    use fleetscale_core::ClusterMembership;

    for (label, mode, reclaimed) in [
        ("refused", Mode::Refuse, 0),
        ("expired", Mode::Expired, 0),
        ("allowed", Mode::Allow, 1),
    ] {
        let scaler = Arc::new(FakeScaler::new().with_machines(2, MachineState::Started));
        let cluster = Arc::new(FakeMembership::with_fixed(["fixed1"]));
        for m in scaler.machines() {
            cluster.join(&m).await.unwrap();
        }
        let coordinator = Arc::new(Scripted {
            owned: vec!["mine".into()],
            mode: Mutex::new(mode),
            notes: Mutex::default(),
        });
        let policy = Policy {
            created: CountRule::from_settings("created", Some("2"), None, None).unwrap(),
            ..Policy::default()
        };
        let spec = TargetSpec::new(Scope::new("mine"), scaler.clone(), policy)
            .with_membership(cluster.clone());
        let engine = Engine::new(
            EngineConfig::default().with_reclaim_lost_members(true),
            Arc::new(vec![spec]),
        )
        .with_coordinator(coordinator.clone());
        scaler.vanish(&"m2".into());
        cluster.set_reachable("peer-m2", false);
        let r = engine.run_once().await.unwrap().remove(0);
        assert_eq!(cluster.reclaims_done(), reclaimed, "fence {label}");
        assert_eq!(r.reclaims.len(), 1);
        assert_eq!(r.reclaims[0].1.is_ok(), reclaimed == 1, "{:?}", r.reclaims);
        let notes = coordinator.notes.lock().unwrap().clone();
        assert!(
            notes
                .iter()
                .any(|n| n.kind == ActionKind::Destroy && n.machine == Some("m2".into())),
            "the reclaim is noted as a destroy of the gone machine: {notes:?}"
        );
    }
}
