//! Coordination of autoscaler replicas: which targets this process acts on, proof that it
//! still may at the moment it acts (a fencing token), and a durable log shared by processes
//! (the Weave reclaim ledger's storage).
//!
//! A single process needs none of this: [`SingleProcess`] owns every target and fences nothing,
//! and the engine uses it unless told otherwise. Several replicas of an autoscaler (for
//! availability, or to share thousands of targets) use an implementation on a linearizable
//! store, such as `fleetscale-etcd`'s.
//!
//! # The contract of a [`Coordinator`]
//! Guaranteed by an implementation, while it says a target is owned:
//! - **Exclusive**: at most one replica is told it owns a target at any moment, as judged by the
//!   store's linearizable order (etcd: the ownership key's revision).
//! - **Fenced**: [`Coordinator::fence`] succeeds only if this replica still owns the target *in
//!   the store* at that moment (a compare-and-set in the same transaction that records the
//!   action), and returns a [`Fence`] valid until a local deadline that ends **before** the
//!   store could let another replica take the target over (for a lease-based store: before the
//!   lease can expire, counted from the last keep-alive the store acknowledged).
//!
//! Assumed of the engine (and of anyone driving a backend with it):
//! - Ask [`Coordinator::acquire`] at the start of every pass and act only on the targets it
//!   returns.
//! - Call [`Coordinator::fence`] right before **every** mutating call on a target (create,
//!   start, stop, destroy, leave, reclaim), and send the call only if it succeeded and
//!   [`Fence::valid`] still holds when the call is sent. An action whose fence fails is not
//!   sent and is reported as refused.
//!
//! When ownership is lost mid-tick (a replica froze past its lease, the store became
//! unreachable): fences fail from then on, so no further action of that tick is sent; an
//! action already on the wire cannot be recalled, which is why the fence's deadline ends
//! before the store's lease does. The residual risk is a process frozen between its last
//! deadline check and the system call that sends the request (microseconds).
//!
//! # The contract of a [`LedgerStore`]
//! A durable, append-only sequence of records (opaque text, one JSON document each for the
//! Weave ledger) and one exclusive lock across every process that opens the same store:
//! - [`LedgerStore::lock`] waits up to a deadline for the lock; the [`LedgerLock`] it returns
//!   holds it until dropped (or, for a store with leases, until the holder's lease expires:
//!   a crashed holder never blocks the others for good).
//! - [`LedgerLock::append`] returns only once the record is durable, and appends **nothing** if
//!   the lock was lost meanwhile (the append is fenced by the lock).
//! - [`LedgerLock::records`] returns every record in append order; a record appended under one
//!   lock is seen by every later lock holder.
//!
//! # Example
//! ```
//! use fleetscale_core::coordination::{ActionNote, Coordinator, SingleProcess};
//! use fleetscale_core::plan::ActionKind;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let one = SingleProcess;
//! let targets = vec!["web".to_string(), "worker".to_string()];
//! assert_eq!(one.acquire(&targets).await.unwrap(), targets);
//! let fence = one
//!     .fence(&ActionNote::new("web", ActionKind::Create, None))
//!     .await
//!     .unwrap();
//! assert!(fence.valid());
//! # });
//! ```

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::plan::ActionKind;
use crate::{MachineId, Result};

/// What a mutating action is about, recorded with its fence (so that the store keeps who did
/// what under which ownership). A `leave` is noted as the stop or destroy it comes before; a
/// reclaim of a lost member as a destroy of the member's (gone) machine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActionNote {
    /// The target (the engine's target name).
    pub target: String,
    /// Which action (create, start, stop, suspend, destroy) the fence is taken for.
    pub kind: ActionKind,
    /// The machine acted on, when there is one (not for creates).
    pub machine: Option<MachineId>,
}

impl ActionNote {
    /// A note of a `kind` action on `target`, about `machine` (`None` for a create).
    pub fn new(target: impl Into<String>, kind: ActionKind, machine: Option<MachineId>) -> Self {
        ActionNote {
            target: target.into(),
            kind,
            machine,
        }
    }
}

/// Permission to send one mutating action.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fence {
    /// The fencing token: the ownership's revision in the store (grows with every change of
    /// owner; 0 for [`SingleProcess`]).
    pub token: u64,
    /// The action must be sent before this instant (`None`: no deadline).
    pub valid_until: Option<Instant>,
}

impl Fence {
    /// A fence with this token, valid until `valid_until`.
    pub fn new(token: u64, valid_until: Option<Instant>) -> Self {
        Fence { token, valid_until }
    }

    /// Whether the action may still be sent now.
    pub fn valid(&self) -> bool {
        self.valid_until.is_none_or(|t| Instant::now() < t)
    }
}

/// Who acts on which target (see the [module docs](self) for the contract).
///
/// # Errors
/// - [`crate::Error::Unavailable`]: the store cannot be reached; the caller acts on nothing
///   (`acquire`) or sends nothing (`fence`).
/// - [`crate::Error::Refused`]: `fence` on a target this replica does not own (any more).
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// Called at the start of every pass with every target the provider lists; returns the
    /// ones this replica acts on this pass (a subset of `targets`, in their order). Taking or
    /// giving up ownership happens here.
    async fn acquire(&self, targets: &[String]) -> Result<Vec<String>>;

    /// Right before a mutating action: proves ownership of `note.target` still holds in the
    /// store, records the action, and returns the permission to send it.
    async fn fence(&self, note: &ActionNote) -> Result<Fence>;
}

/// One process, no store: owns every target, every fence succeeds with token 0 and no
/// deadline. The engine's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

#[async_trait]
impl Coordinator for SingleProcess {
    async fn acquire(&self, targets: &[String]) -> Result<Vec<String>> {
        Ok(targets.to_vec())
    }

    async fn fence(&self, _note: &ActionNote) -> Result<Fence> {
        Ok(Fence::new(0, None))
    }
}

#[async_trait]
impl<T: Coordinator + ?Sized> Coordinator for std::sync::Arc<T> {
    async fn acquire(&self, targets: &[String]) -> Result<Vec<String>> {
        (**self).acquire(targets).await
    }
    async fn fence(&self, note: &ActionNote) -> Result<Fence> {
        (**self).fence(note).await
    }
}

/// Durable records with one exclusive lock across processes (see the
/// [module docs](self#the-contract-of-a-ledgerstore)).
///
/// # Errors
/// [`crate::Error::Conflict`] when the lock is still held by another process after the wait;
/// [`crate::Error::Unavailable`] or [`crate::Error::Backend`] when the store fails.
///
/// # Example
/// ```
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use fleetscale_core::coordination::{LedgerLock, LedgerStore};
/// use fleetscale_core::{async_trait, Result};
///
/// /// One process's records, in memory (a lock that cannot be contended).
/// #[derive(Debug, Default)]
/// struct Memory(std::sync::Arc<Mutex<Vec<String>>>);
///
/// struct Held(std::sync::Arc<Mutex<Vec<String>>>);
///
/// #[async_trait]
/// impl LedgerStore for Memory {
///     fn describe(&self) -> String {
///         "memory".into()
///     }
///     async fn lock(&self, _wait: Duration) -> Result<Box<dyn LedgerLock>> {
///         Ok(Box::new(Held(self.0.clone())))
///     }
/// }
///
/// #[async_trait]
/// impl LedgerLock for Held {
///     async fn records(&self) -> Result<Vec<String>> {
///         Ok(self.0.lock().unwrap().clone())
///     }
///     async fn append(&self, record: &str) -> Result<()> {
///         self.0.lock().unwrap().push(record.to_string());
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Memory::default();
/// let held = store.lock(Duration::from_secs(1)).await.unwrap();
/// held.append("{\"peer\":\"00:00:00:00:00:05\"}").await.unwrap();
/// assert_eq!(held.records().await.unwrap().len(), 1);
/// # });
/// ```
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Where the records are, for messages (a path, `etcd:` and a prefix).
    fn describe(&self) -> String;

    /// Takes the exclusive lock, waiting up to `wait`.
    async fn lock(&self, wait: Duration) -> Result<Box<dyn LedgerLock>>;
}

/// The held lock of a [`LedgerStore`]; dropping it releases the lock.
#[async_trait]
pub trait LedgerLock: Send + Sync {
    /// Every record, in append order.
    async fn records(&self) -> Result<Vec<String>>;

    /// Appends one record durably (nothing when the lock was lost).
    async fn append(&self, record: &str) -> Result<()>;
}
