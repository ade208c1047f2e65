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
//! Each suite stops at the first failed check and names it ([`ConformanceError::check`]), with
//! a message that says which promise of the contract was broken and what was seen, so the error
//! tells you what to fix.
//!
//! # Timing of the scaler suite
//! Transitions are awaited by polling [`Scaler::list`]: every
//! [`ScalerSuite::poll_interval`] (default **20 ms**), for at most
//! [`ScalerSuite::settle_timeout`] (default **30 s**) per transition. A backend in front of a
//! real cloud API may need a longer settle time; an in-memory backend can use a short one
//! (`ScalerSuite { settle_timeout: Duration::from_secs(2), ..Default::default() }`) so that a
//! transition that never happens fails in seconds. A machine that vanishes, is destroyed or
//! fails while the suite waits for another state fails the check at once, without waiting for
//! the settle time.
//!
//! # The scaler checks
//! | check | the promise |
//! |---|---|
//! | `list` | `list` works |
//! | `list-unique-ids` | no `list` (at any point of the suite) names the same machine twice |
//! | `template` | a backend whose creates clone a template lists at least one manageable machine |
//! | `create` | `create` returns a machine that did not exist before |
//! | `create-listed` | `list` then shows the machine under the id `create` returned |
//! | `create-started` | a started create settles as `started` |
//! | `create-manageable` | a settled new machine is listed `manageable` (not every machine may be unmanageable) |
//! | `stop-idempotent`, `stop-settles` | `stop` twice succeeds, the machine settles `stopped`, a third `stop` succeeds |
//! | `start-idempotent`, `start-settles` | the same for `start` |
//! | `suspend`, `suspend-settles`, `resume`, `resume-settles`, `suspend-unsupported` | `suspend` as [`crate::Capabilities::suspend`] says |
//! | `create-stopped` | with [`crate::Capabilities::create_stopped`], a stopped create settles `created` or `stopped` |
//! | `only-named` | an operation on one machine changes no other machine (the suite keeps a second machine of its own beside the one it works on, and watches it) |
//! | `destroy`, `destroy-settles` | `destroy` works and the machine goes away |
//! | `destroy-only-named` | destroying one machine leaves every other machine in place |
//! | `destroy-twice`, `start-unknown`, `stop-unknown`, `destroy-unknown` | operations on a machine that does not exist are [`Error::NotFound`] |

use std::time::Duration;

use crate::{
    ClusterMembership, CreateRequest, Error, InitialState, Machine, MachineId, MachineState,
    Member, Scaler,
};

/// A conformance check that failed: which check, what was expected and what happened.
#[derive(Debug, thiserror::Error)]
#[error("conformance check `{check}` failed: {message}")]
pub struct ConformanceError {
    /// The check's name (see the table in the [module docs](self)).
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
    /// How long to wait for one transition to settle (default 30 s).
    pub settle_timeout: Duration,
    /// How often to poll `list` while waiting (default 20 ms).
    pub poll_interval: Duration,
    /// An id no machine of the backend has: `start`, `stop` and `destroy` of it must be not found.
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

/// Lists, checking the ids are unique; `during` says when, for the message.
async fn list_checked(s: &dyn Scaler, during: &str) -> Result<Vec<Machine>, ConformanceError> {
    let list = match s.list().await {
        Ok(l) => l,
        Err(e) => return fail("list", format!("list failed {during}: {e}")),
    };
    let mut ids: Vec<&MachineId> = list.iter().map(|m| &m.id).collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return fail(
            "list-unique-ids",
            format!(
                "list {during} names machine {} twice: every machine must be listed once",
                w[0]
            ),
        );
    }
    Ok(list)
}

fn describe_states(seen: &[Option<MachineState>]) -> String {
    if seen.is_empty() {
        return "nothing".into();
    }
    seen.iter()
        .map(|s| s.map_or("absent".to_owned(), |s| s.to_string()))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// What a wait is for.
struct Wait<'a> {
    check: &'static str,
    id: &'a MachineId,
    describe: &'a str,
    /// Whether the machine is supposed to go away (destroy).
    going: bool,
    /// Whether `list` has shown the machine before the wait.
    listed: bool,
}

async fn wait_for(
    s: &dyn Scaler,
    suite: &ScalerSuite,
    wait: Wait<'_>,
    want: impl Fn(Option<&Machine>) -> bool,
) -> Result<Option<Machine>, ConformanceError> {
    let deadline = tokio::time::Instant::now() + suite.settle_timeout;
    let id = wait.id;
    // The distinct states seen, in order, for the message.
    let mut seen: Vec<Option<MachineState>> = Vec::new();
    let mut was_listed = wait.listed;
    loop {
        let list = list_checked(
            s,
            &format!("while waiting for {id} to become {}", wait.describe),
        )
        .await?;
        let m = list.iter().find(|m| &m.id == id);
        if want(m) {
            return Ok(m.cloned());
        }
        let state = m.map(|m| m.state);
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        was_listed |= m.is_some();
        if !wait.going {
            // States from which the wanted one cannot come without another call: fail now
            // rather than after the settle time, under this check's name.
            let gone = m.is_none_or(|m| !m.state.exists());
            if was_listed && gone {
                return fail(
                    wait.check,
                    format!(
                        "machine {id} went away while the suite waited for it to become {} (states seen: {})",
                        wait.describe,
                        describe_states(&seen)
                    ),
                );
            }
            if m.is_some_and(|m| m.state == MachineState::Failed) {
                return fail(
                    wait.check,
                    format!(
                        "machine {id} failed while the suite waited for it to become {} (states seen: {})",
                        wait.describe,
                        describe_states(&seen)
                    ),
                );
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let mut message = format!(
                "machine {id} did not become {} within the settle time of {:?} (ScalerSuite::settle_timeout); states seen: {}",
                wait.describe,
                suite.settle_timeout,
                describe_states(&seen)
            );
            if m.is_some_and(|m| !m.manageable) {
                message.push_str(
                    "; it is listed with manageable: false, which the engine never acts on",
                );
            }
            return fail(wait.check, message);
        }
        tokio::time::sleep(suite.poll_interval).await;
    }
}

/// Waits until the listed machine `id` is in `state` ([`wait_for`] under check `check`).
async fn settle_in(
    s: &dyn Scaler,
    suite: &ScalerSuite,
    check: &'static str,
    id: &MachineId,
    state: MachineState,
) -> Result<(), ConformanceError> {
    let wait = Wait {
        check,
        id,
        describe: state.as_str(),
        going: false,
        listed: true,
    };
    wait_for(s, suite, wait, |m| m.is_some_and(|m| m.state == state)).await?;
    Ok(())
}

/// A transition the suite asks for repeatedly, to check that asking is idempotent.
#[derive(Clone, Copy)]
enum Transition {
    Stop,
    Start,
}

/// Asks for `transition` of `id` twice in a row, waits for the machine to settle, checks that
/// nothing else moved, and asks once more of the settled machine: every request must succeed
/// (stop and start are idempotent, [`Scaler`]).
async fn repeated_transition(
    s: &dyn Scaler,
    suite: &ScalerSuite,
    bystanders: &Bystanders,
    id: &MachineId,
    transition: Transition,
) -> Result<(), ConformanceError> {
    let (verb, idempotent, settles, doing, settled) = match transition {
        Transition::Stop => (
            "stop",
            "stop-idempotent",
            "stop-settles",
            "stopping",
            MachineState::Stopped,
        ),
        Transition::Start => (
            "start",
            "start-idempotent",
            "start-settles",
            "starting",
            MachineState::Started,
        ),
    };
    let request = || async move {
        match transition {
            Transition::Stop => s.stop(id).await,
            Transition::Start => s.start(id).await,
        }
    };
    twice(idempotent, verb, request).await?;
    settle_in(s, suite, settles, id, settled).await?;
    bystanders
        .check(s, "only-named", id, &format!("{doing} {id}"))
        .await?;
    if let Err(e) = request().await {
        return fail(
            idempotent,
            format!("{verb} of a {settled} machine failed: {e}"),
        );
    }
    Ok(())
}

/// Makes `request` twice in a row: both must succeed (the request is idempotent), else the
/// check `check` fails naming the `verb` and the round.
async fn twice<F: std::future::Future<Output = crate::Result<()>>>(
    check: &'static str,
    verb: &str,
    request: impl Fn() -> F,
) -> Result<(), ConformanceError> {
    for round in 1..=2 {
        if let Err(e) = request().await {
            return fail(check, format!("{verb} #{round} failed: {e}"));
        }
    }
    Ok(())
}

/// Waits until the machine `id` is no longer listed, or listed destroyed (check
/// `destroy-settles`).
async fn settle_gone(
    s: &dyn Scaler,
    suite: &ScalerSuite,
    id: &MachineId,
) -> Result<(), ConformanceError> {
    let wait = Wait {
        check: "destroy-settles",
        id,
        describe: "gone",
        going: true,
        listed: true,
    };
    wait_for(s, suite, wait, |m| {
        m.is_none_or(|m| m.state == MachineState::Destroyed)
    })
    .await?;
    Ok(())
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

/// The machines the suite did not make, and its own second machine, as they must stay while
/// the suite works on its first machine.
struct Bystanders {
    /// Machines listed before the suite began (ids).
    others: Vec<MachineId>,
    /// The suite's second machine and the state it settled in.
    own: Option<(MachineId, MachineState)>,
}

impl Bystanders {
    /// Checks that nothing but `subject` changed after `what` (`stopping m1`).
    async fn check(
        &self,
        s: &dyn Scaler,
        check: &'static str,
        subject: &MachineId,
        what: &str,
    ) -> Result<(), ConformanceError> {
        let list = list_checked(s, &format!("after {what}")).await?;
        for other in &self.others {
            if other != subject && !list.iter().any(|m| &m.id == other && m.state.exists()) {
                return fail(
                    check,
                    format!("{what} also removed machine {other}, which the suite never touched"),
                );
            }
        }
        if let Some((id, state)) = &self.own {
            match list.iter().find(|m| &m.id == id) {
                Some(m) if m.state == *state => {}
                Some(m) => {
                    return fail(
                        check,
                        format!(
                            "{what} also changed machine {id} from {state} to {}: an operation must act on the named machine only",
                            m.state
                        ),
                    )
                }
                None => {
                    return fail(
                        check,
                        format!("{what} also removed machine {id}: an operation must act on the named machine only"),
                    )
                }
            }
        }
        Ok(())
    }
}

/// Checks a [`Scaler`] against the contract (the checks and their names are listed in the
/// [module docs](self)):
///
/// 1. `list` works and no list ever names a machine twice;
/// 2. `create` (started; cloning an existing machine when the backend needs a template)
///    returns a new machine that `list` then shows under that id, that settles as started and
///    is manageable;
/// 3. a second machine of the suite's own (stopped when the backend can create stopped) stands
///    by while the first is stopped, started and suspended: it must not change;
/// 4. `stop` twice is fine and the machine settles as stopped; `start` twice likewise;
/// 5. `suspend` works when the capabilities say so, and is `Unsupported` otherwise;
/// 6. `destroy` removes only that machine (the other machine of the suite, and every machine
///    that was there before, stay); a second `destroy`, and `start`/`stop`/`destroy` of an
///    unknown id, are [`Error::NotFound`].
///
/// The scaler must be safe to experiment on: the suite creates two machines and destroys them
/// again. If the backend needs a template, at least one manageable machine must exist.
pub async fn scaler_with(s: &dyn Scaler, suite: &ScalerSuite) -> Result<(), ConformanceError> {
    let caps = s.capabilities();
    let before = list_checked(s, "at the start").await?;
    let template = before
        .iter()
        .filter(|m| m.manageable && m.state.exists())
        .max_by_key(|m| m.created_at)
        .cloned();
    if caps.create_needs_template && template.is_none() {
        let existing = before.iter().filter(|m| m.state.exists()).count();
        return fail(
            "template",
            if existing > 0 {
                format!(
                    "capabilities say create needs a template, but all {existing} listed machine(s) are manageable: false, and the engine never clones those: list a machine the backend can act on as manageable"
                )
            } else {
                "capabilities say create needs a template, but the scaler has no machine: give the suite a scaler with at least one".to_owned()
            },
        );
    }
    let mut bystanders = Bystanders {
        others: before
            .iter()
            .filter(|m| m.state.exists())
            .map(|m| m.id.clone())
            .collect(),
        own: None,
    };
    let request = CreateRequest {
        template: template.clone().map(Box::new),
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
    let listed = Wait {
        check: "create-listed",
        id: &id,
        describe: "listed",
        going: false,
        listed: false,
    };
    if let Err(mut e) = wait_for(s, suite, listed, |m| m.is_some()).await {
        if e.check == "create-listed" {
            if let Ok(now) = s.list().await {
                let new: Vec<String> = now
                    .iter()
                    .filter(|m| !before.iter().any(|b| b.id == m.id))
                    .map(|m| m.id.to_string())
                    .collect();
                e.message = format!(
                    "create returned id {id}, but list never showed it; machines new since the suite began: [{}]: create must return the machine as list shows it",
                    new.join(", ")
                );
            }
        }
        return Err(e);
    }
    settle_in(s, suite, "create-started", &id, MachineState::Started).await?;
    let manageable = Wait {
        check: "create-manageable",
        id: &id,
        describe: "manageable (new machines may be unmanageable for a while, not for ever)",
        going: false,
        listed: true,
    };
    wait_for(s, suite, manageable, |m| m.is_some_and(|m| m.manageable)).await?;

    // The suite's second machine: it stands by while the first is worked on.
    let (second_req, second_state, second_check) = if caps.create_stopped {
        (
            CreateRequest {
                initial_state: InitialState::Stopped,
                ..request.clone()
            },
            "created or stopped",
            "create-stopped",
        )
    } else {
        (request.clone(), "started", "create-started")
    };
    let second = match s.create(&second_req).await {
        Ok(m) => m,
        Err(e) => {
            return fail(
                if caps.create_stopped {
                    "create-stopped"
                } else {
                    "create"
                },
                format!("create of the suite's second machine failed: {e}"),
            )
        }
    };
    if second.id == id || before.iter().any(|m| m.id == second.id) {
        return fail(
            "create",
            format!("create returned {} which already existed", second.id),
        );
    }
    let settle = Wait {
        check: second_check,
        id: &second.id,
        describe: second_state,
        going: false,
        listed: false,
    };
    let settled = wait_for(s, suite, settle, |x| {
        x.is_some_and(|x| {
            if caps.create_stopped {
                matches!(x.state, MachineState::Created | MachineState::Stopped)
            } else {
                x.state == MachineState::Started
            }
        })
    })
    .await?;
    let Some(settled) = settled else {
        return fail(second_check, format!("machine {} vanished", second.id));
    };
    bystanders.own = Some((second.id.clone(), settled.state));
    bystanders
        .check(s, "only-named", &id, &format!("creating {}", second.id))
        .await?;

    repeated_transition(s, suite, &bystanders, &id, Transition::Stop).await?;
    repeated_transition(s, suite, &bystanders, &id, Transition::Start).await?;

    if caps.suspend {
        if let Err(e) = s.suspend(&id).await {
            return fail("suspend", format!("suspend failed: {e}"));
        }
        settle_in(s, suite, "suspend-settles", &id, MachineState::Suspended).await?;
        if let Err(e) = s.start(&id).await {
            return fail(
                "resume",
                format!("start of a suspended machine failed: {e}"),
            );
        }
        settle_in(s, suite, "resume-settles", &id, MachineState::Started).await?;
        bystanders
            .check(
                s,
                "only-named",
                &id,
                &format!("suspending and resuming {id}"),
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

    // Destroy the first machine while the second, and everything listed before, stand by.
    if let Err(e) = s.destroy(&id).await {
        return fail("destroy", format!("destroy failed: {e}"));
    }
    settle_gone(s, suite, &id).await?;
    bystanders
        .check(s, "destroy-only-named", &id, &format!("destroying {id}"))
        .await?;
    expect_not_found("destroy-twice", s.destroy(&id).await)?;

    // Clean up the second machine.
    if let Err(e) = s.destroy(&second.id).await {
        return fail(
            "destroy",
            format!(
                "destroy of the suite's second machine {} failed: {e}",
                second.id
            ),
        );
    }
    settle_gone(s, suite, &second.id).await?;
    bystanders.own = None;
    bystanders
        .check(
            s,
            "destroy-only-named",
            &second.id,
            &format!("destroying {}", second.id),
        )
        .await?;
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

/// The members `m` lists for `inventory`, or the failure of the check `members`.
async fn members_checked(
    m: &dyn ClusterMembership,
    inventory: &[Machine],
) -> Result<Vec<Member>, ConformanceError> {
    match m.members(inventory).await {
        Ok(v) => Ok(v),
        Err(e) => fail("members", format!("members failed: {e}")),
    }
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
    let before = members_checked(m, inventory).await?;
    twice("join-idempotent", "join", || m.join(joinable)).await?;
    let members = members_checked(m, inventory).await?;
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
    twice("leave-idempotent", "leave", || m.leave(joinable)).await?;
    let after = members_checked(m, inventory).await?;
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
