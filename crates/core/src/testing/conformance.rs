//! Conformance suites: run them against your own [`Scaler`] or [`ClusterMembership`] to check
//! the contracts documented on the traits.
//!
//! ```
//! use fleetscale_core::testing::{conformance, FakeScaler};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! conformance::scaler(&FakeScaler::new()).await.expect("FakeScaler conforms");
//! # });
//! ```
//!
//! Each suite stops at the first failed check and names it, so the error tells you what to fix.

use std::time::Duration;

use crate::{
    ClusterMembership, CreateRequest, Error, InitialState, Machine, MachineId, MachineState,
    Member, Scaler,
};

/// A failed conformance check.
#[derive(Debug, thiserror::Error)]
#[error("conformance check `{check}` failed: {message}")]
pub struct ConformanceError {
    /// The check's name.
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

fn fail<T>(check: &'static str, message: impl Into<String>) -> Result<T, ConformanceError> {
    Err(ConformanceError {
        check,
        message: message.into(),
    })
}

/// Settings of the scaler suite.
#[derive(Clone, Debug)]
pub struct ScalerSuite {
    /// How long to wait for a transition to settle.
    pub settle_timeout: Duration,
    /// How often to poll `list` while waiting.
    pub poll_interval: Duration,
    /// An id that no machine has.
    pub unknown_id: MachineId,
}

impl Default for ScalerSuite {
    fn default() -> Self {
        ScalerSuite {
            settle_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(20),
            unknown_id: MachineId::new("fleetscale-conformance-no-such-machine"),
        }
    }
}

/// Runs the scaler suite with default settings. See [`scaler_with`].
pub async fn scaler(s: &dyn Scaler) -> Result<(), ConformanceError> {
    scaler_with(s, &ScalerSuite::default()).await
}

async fn wait_for(
    s: &dyn Scaler,
    suite: &ScalerSuite,
    check: &'static str,
    id: &MachineId,
    want: impl Fn(Option<&Machine>) -> bool,
    describe: &str,
) -> Result<Option<Machine>, ConformanceError> {
    let deadline = tokio::time::Instant::now() + suite.settle_timeout;
    loop {
        let list = match s.list().await {
            Ok(l) => l,
            Err(e) => return fail(check, format!("list failed: {e}")),
        };
        let m = list.iter().find(|m| &m.id == id);
        if want(m) {
            return Ok(m.cloned());
        }
        if tokio::time::Instant::now() >= deadline {
            return fail(
                check,
                format!(
                    "machine {id} did not become {describe} within {:?}; last seen: {:?}",
                    suite.settle_timeout,
                    m.map(|m| m.state)
                ),
            );
        }
        tokio::time::sleep(suite.poll_interval).await;
    }
}

fn expect_not_found(check: &'static str, r: crate::Result<()>) -> Result<(), ConformanceError> {
    match r {
        Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => fail(
            check,
            format!("expected Error::NotFound, got {:?} ({e})", e.kind()),
        ),
        Ok(()) => fail(check, "expected Error::NotFound, got Ok"),
    }
}

/// Checks a [`Scaler`] against the contract:
///
/// 1. `list` works and ids are unique;
/// 2. `create` (started; cloning an existing machine when the backend needs a template)
///    returns a machine that `list` then shows, and that settles as started;
/// 3. `stop` twice is fine and the machine settles as stopped; `start` twice likewise;
/// 4. `suspend` works when the capabilities say so, and is `Unsupported` otherwise;
/// 5. a stopped create (when supported) settles in a non-running state;
/// 6. `destroy` removes only that machine; a second `destroy`, and `start`/`stop`/`destroy` of
///    an unknown id, are [`Error::NotFound`].
///
/// The scaler must be safe to experiment on: the suite creates up to two machines and destroys
/// them again. If the backend needs a template, at least one machine must exist.
pub async fn scaler_with(s: &dyn Scaler, suite: &ScalerSuite) -> Result<(), ConformanceError> {
    let caps = s.capabilities();
    let before = match s.list().await {
        Ok(l) => l,
        Err(e) => return fail("list", format!("list failed: {e}")),
    };
    let mut ids: Vec<&MachineId> = before.iter().map(|m| &m.id).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return fail("list", "list returned the same id twice");
    }
    let template = before
        .iter()
        .filter(|m| m.manageable && m.state.exists())
        .max_by_key(|m| m.created_at)
        .map(|m| m.id.clone());
    if caps.create_needs_template && template.is_none() {
        return fail(
            "template",
            "capabilities say create needs a template, but the scaler has no machine: give the suite a scaler with at least one",
        );
    }
    let request = CreateRequest {
        template: template.clone(),
        initial_state: InitialState::Started,
        ..CreateRequest::default()
    };
    let created = match s.create(&request).await {
        Ok(m) => m,
        Err(e) => return fail("create", format!("create failed: {e}")),
    };
    if before.iter().any(|m| m.id == created.id) {
        return fail(
            "create",
            format!("create returned {} which already existed", created.id),
        );
    }
    let id = created.id.clone();
    wait_for(s, suite, "create-listed", &id, |m| m.is_some(), "listed").await?;
    wait_for(
        s,
        suite,
        "create-started",
        &id,
        |m| m.is_some_and(|m| m.state == MachineState::Started),
        "started",
    )
    .await?;

    for round in 0..2 {
        if let Err(e) = s.stop(&id).await {
            return fail(
                "stop-idempotent",
                format!("stop #{} failed: {e}", round + 1),
            );
        }
    }
    wait_for(
        s,
        suite,
        "stop-settles",
        &id,
        |m| m.is_some_and(|m| m.state == MachineState::Stopped),
        "stopped",
    )
    .await?;
    if let Err(e) = s.stop(&id).await {
        return fail(
            "stop-idempotent",
            format!("stop of a stopped machine failed: {e}"),
        );
    }
    for round in 0..2 {
        if let Err(e) = s.start(&id).await {
            return fail(
                "start-idempotent",
                format!("start #{} failed: {e}", round + 1),
            );
        }
    }
    wait_for(
        s,
        suite,
        "start-settles",
        &id,
        |m| m.is_some_and(|m| m.state == MachineState::Started),
        "started",
    )
    .await?;
    if let Err(e) = s.start(&id).await {
        return fail(
            "start-idempotent",
            format!("start of a started machine failed: {e}"),
        );
    }

    if caps.suspend {
        if let Err(e) = s.suspend(&id).await {
            return fail("suspend", format!("suspend failed: {e}"));
        }
        wait_for(
            s,
            suite,
            "suspend-settles",
            &id,
            |m| m.is_some_and(|m| m.state == MachineState::Suspended),
            "suspended",
        )
        .await?;
        if let Err(e) = s.start(&id).await {
            return fail(
                "resume",
                format!("start of a suspended machine failed: {e}"),
            );
        }
        wait_for(
            s,
            suite,
            "resume-settles",
            &id,
            |m| m.is_some_and(|m| m.state == MachineState::Started),
            "started",
        )
        .await?;
    } else {
        match s.suspend(&id).await {
            Err(Error::Unsupported { .. }) => {}
            other => {
                return fail(
                    "suspend-unsupported",
                    format!("capabilities say no suspend, but suspend returned {other:?}"),
                )
            }
        }
    }

    if caps.create_stopped {
        let stopped_req = CreateRequest {
            initial_state: InitialState::Stopped,
            ..request.clone()
        };
        let m = match s.create(&stopped_req).await {
            Ok(m) => m,
            Err(e) => return fail("create-stopped", format!("create failed: {e}")),
        };
        let settled = wait_for(
            s,
            suite,
            "create-stopped",
            &m.id,
            |x| x.is_some_and(|x| matches!(x.state, MachineState::Created | MachineState::Stopped)),
            "created or stopped",
        )
        .await?;
        if settled.is_none() {
            return fail("create-stopped", "machine vanished");
        }
        if let Err(e) = s.destroy(&m.id).await {
            return fail(
                "destroy",
                format!("destroy of a stopped create failed: {e}"),
            );
        }
        wait_for(
            s,
            suite,
            "destroy-settles",
            &m.id,
            |x| x.is_none_or(|x| x.state == MachineState::Destroyed),
            "gone",
        )
        .await?;
    }

    let others_before: Vec<MachineId> = match s.list().await {
        Ok(l) => l
            .into_iter()
            .filter(|m| m.id != id && m.state.exists())
            .map(|m| m.id)
            .collect(),
        Err(e) => return fail("list", format!("list failed: {e}")),
    };
    if let Err(e) = s.destroy(&id).await {
        return fail("destroy", format!("destroy failed: {e}"));
    }
    wait_for(
        s,
        suite,
        "destroy-settles",
        &id,
        |m| m.is_none_or(|m| m.state == MachineState::Destroyed),
        "gone",
    )
    .await?;
    let after = match s.list().await {
        Ok(l) => l,
        Err(e) => return fail("list", format!("list failed: {e}")),
    };
    for other in &others_before {
        if !after.iter().any(|m| &m.id == other && m.state.exists()) {
            return fail(
                "destroy-only-named",
                format!("destroying {id} also removed {other}"),
            );
        }
    }
    expect_not_found("destroy-twice", s.destroy(&id).await)?;
    expect_not_found("start-unknown", s.start(&suite.unknown_id).await)?;
    expect_not_found("stop-unknown", s.stop(&suite.unknown_id).await)?;
    expect_not_found("destroy-unknown", s.destroy(&suite.unknown_id).await)?;
    Ok(())
}

fn is_member_of(member: &Member, machine: &Machine) -> bool {
    member.machine.as_ref() == Some(&machine.id)
        || member.nickname.as_deref() == Some(machine.name.as_str())
        || (member.address.is_some() && member.address == machine.address)
}

/// Checks a [`ClusterMembership`] against the contract, using `joinable`, a machine the
/// membership can really join (it must be up):
///
/// 1. `members` works;
/// 2. `join` twice succeeds and the machine then appears as a reachable, non-fixed member
///    (matched by [`Member::machine`], nickname = machine name, or address);
/// 3. `reclaim` of that live member, and of any fixed member, is [`Error::Refused`] (or
///    [`Error::Unsupported`] for a membership without forced removal);
/// 4. `leave` twice succeeds, and afterwards the machine is no member or owns nothing.
pub async fn membership(
    m: &dyn ClusterMembership,
    joinable: &Machine,
) -> Result<(), ConformanceError> {
    let inventory = std::slice::from_ref(joinable);
    let before = match m.members(inventory).await {
        Ok(v) => v,
        Err(e) => return fail("members", format!("members failed: {e}")),
    };
    for round in 0..2 {
        if let Err(e) = m.join(joinable).await {
            return fail(
                "join-idempotent",
                format!("join #{} failed: {e}", round + 1),
            );
        }
    }
    let members = match m.members(inventory).await {
        Ok(v) => v,
        Err(e) => return fail("members", format!("members failed: {e}")),
    };
    let joined: Vec<&Member> = members
        .iter()
        .filter(|x| is_member_of(x, joinable))
        .collect();
    let Some(me) = joined.first().copied() else {
        return fail(
            "join-visible",
            format!("after join, no member matches machine {}", joinable.id),
        );
    };
    if joined.len() > 1 {
        return fail(
            "join-idempotent",
            format!("two joins made {} members", joined.len()),
        );
    }
    if !me.reachable || me.fixed {
        return fail(
            "join-visible",
            format!(
                "joined member {} should be reachable and not fixed: {me:?}",
                me.name
            ),
        );
    }
    match m.reclaim(me, inventory).await {
        Err(Error::Refused { .. } | Error::Unsupported { .. }) => {}
        other => {
            return fail(
                "reclaim-live-refused",
                format!("reclaim of a reachable member must be Refused, got {other:?}"),
            )
        }
    }
    if let Some(fixed) = before.iter().chain(members.iter()).find(|x| x.fixed) {
        match m.reclaim(fixed, inventory).await {
            Err(Error::Refused { .. } | Error::Unsupported { .. }) => {}
            other => {
                return fail(
                    "reclaim-fixed-refused",
                    format!(
                        "reclaim of fixed member {} must be Refused, got {other:?}",
                        fixed.name
                    ),
                )
            }
        }
    }
    for round in 0..2 {
        if let Err(e) = m.leave(joinable).await {
            return fail(
                "leave-idempotent",
                format!("leave #{} failed: {e}", round + 1),
            );
        }
    }
    let after = match m.members(inventory).await {
        Ok(v) => v,
        Err(e) => return fail("members", format!("members failed: {e}")),
    };
    if let Some(left) = after
        .iter()
        .find(|x| is_member_of(x, joinable) && x.owned > 0)
    {
        return fail(
            "leave-hands-off",
            format!(
                "after leave, member {} still owns {}",
                left.name, left.owned
            ),
        );
    }
    Ok(())
}
