//! The one error type of this crate, [`EtcdError`], and its mapping onto
//! [`fleetscale_core::Error`].

use std::time::Duration;

/// Errors of the etcd coordination backend.
///
/// Converted into [`fleetscale_core::Error`] at the trait boundaries (see the `From` impl),
/// keeping this error as the `source` where the core variant has one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The settings are invalid (no endpoint, a malformed endpoint, a TTL etcd cannot grant,
    /// half a client certificate). Found when the settings are checked, before any request.
    #[error("etcd settings: {message}")]
    Config {
        /// What is wrong, naming the setting.
        message: String,
    },

    /// A TLS file named in the settings could not be read.
    #[error("etcd settings: cannot read the {what} {path}: {source}")]
    TlsFile {
        /// Which file (`CA certificate`, `client certificate`, `client key`).
        what: &'static str,
        /// The path of that file, as given in the settings.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// etcd could not be reached, answered an error, or did not answer within the request
    /// timeout. Retryable: a later pass may succeed.
    #[error("etcd {operation}: {message}")]
    Unavailable {
        /// What was asked (`txn acquiring 12 targets`, `lease keep-alive`).
        operation: String,
        /// What went wrong, in words.
        message: String,
        /// The client's error, when there is one.
        #[source]
        source: Option<etcd_client::Error>,
    },

    /// etcd refused the credentials (wrong user or password, missing permission on the
    /// prefix, an untrusted client certificate). Not retryable.
    #[error("etcd {operation}: permission denied: {message}")]
    Unauthorized {
        /// What was asked.
        operation: String,
        /// etcd's explanation.
        message: String,
    },

    /// The lease this replica (or lock holder) registered under no longer exists in etcd: it
    /// expired (no keep-alive reached etcd within its TTL) or was revoked. Everything attached
    /// to it is gone; a new lease is needed.
    #[error("etcd lease {lease:x} is gone: {message}")]
    LeaseLost {
        /// The lease ID.
        lease: i64,
        /// What showed it.
        message: String,
    },

    /// No keep-alive of this replica's lease was acknowledged recently enough to be sure the
    /// lease still lives: the replica does not act until one is.
    #[error("etcd lease {lease:x} not confirmed for {}: this replica does not act until a keep-alive is acknowledged", fleetscale_core::format_seconds(*since))]
    NotConfirmed {
        /// The lease ID.
        lease: i64,
        /// Time since the last acknowledged keep-alive was sent.
        since: Duration,
    },

    /// This replica does not own the target (any more): another replica does, or its
    /// ownership key changed in etcd.
    #[error("target {target}: {reason}")]
    NotOwner {
        /// The target whose fence was refused.
        target: String,
        /// Why (who owns it, what changed).
        reason: String,
    },

    /// The ledger lock is held by another process after the wait.
    #[error("ledger lock {key} is held by {holder} (waited {})", fleetscale_core::format_seconds(*waited))]
    LockBusy {
        /// The etcd key of the ledger's lock.
        key: String,
        /// The holder's description (replica, host, process).
        holder: String,
        /// How long we waited.
        waited: Duration,
    },

    /// The ledger lock was lost (its lease expired or the key was deleted): the record was
    /// not appended.
    #[error("ledger lock {key} was lost: nothing appended")]
    LockLost {
        /// The etcd key of the lock that was lost.
        key: String,
    },

    /// A live replica is already registered under this replica name.
    #[error("replica name {name} is already registered in etcd by a live process ({holder}); give each replica its own name")]
    DuplicateReplica {
        /// The replica name asked for.
        name: String,
        /// The live registration's value in etcd (which process holds the name).
        holder: String,
    },

    /// etcd answered something this crate cannot use (a transaction answer of the wrong
    /// shape, a record that is not UTF-8, a ledger sequence taken by a foreign record).
    #[error("etcd {context}: {message}")]
    InvalidResponse {
        /// Which request answered.
        context: String,
        /// What was wrong.
        message: String,
    },
}

impl EtcdError {
    /// Classifies an error of the etcd client for `operation`.
    pub(crate) fn client(operation: impl Into<String>, e: etcd_client::Error) -> Self {
        let operation = operation.into();
        if let etcd_client::Error::GRpcStatus(status) = &e {
            let message = status.message().to_string();
            // etcd answers a wrong password with InvalidArgument ("etcdserver: authentication
            // failed, invalid user ID or password"), a missing permission with
            // PermissionDenied, an expired or unknown token with Unauthenticated.
            let refused = matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) || message.contains("authentication failed")
                || message.contains("user name is empty");
            if refused {
                return EtcdError::Unauthorized { operation, message };
            }
        }
        if let etcd_client::Error::LeaseKeepAliveError(m) = &e {
            if m.contains("lease not found") {
                return EtcdError::LeaseLost {
                    lease: 0,
                    message: m.clone(),
                };
            }
        }
        let message = cause_chain(&e);
        EtcdError::Unavailable {
            operation,
            message,
            source: Some(e),
        }
    }

    /// An operation that did not answer within `after`.
    pub(crate) fn timeout(operation: impl Into<String>, after: Duration) -> Self {
        EtcdError::Unavailable {
            operation: operation.into(),
            message: format!(
                "no answer within {}",
                fleetscale_core::format_seconds(after)
            ),
            source: None,
        }
    }

    /// An [`EtcdError::Config`] with `message` (the setting and what is wrong with it).
    pub(crate) fn config(message: impl Into<String>) -> Self {
        EtcdError::Config {
            message: message.into(),
        }
    }
}

/// The error and its causes, each once (tonic's transport errors say little at the top).
fn cause_chain(e: &etcd_client::Error) -> String {
    fleetscale_core::error_causes(e)
}

/// | `EtcdError` | `fleetscale_core::Error` |
/// |---|---|
/// | `Config`, `TlsFile`, `DuplicateReplica` | `Config` |
/// | `Unavailable`, `LeaseLost`, `NotConfirmed` | `Unavailable` (retryable) |
/// | `Unauthorized` | `Unauthorized` |
/// | `NotOwner`, `LockLost` | `Refused` |
/// | `LockBusy` | `Conflict` |
/// | `InvalidResponse` | `Backend` (not retryable) |
impl From<EtcdError> for fleetscale_core::Error {
    fn from(e: EtcdError) -> Self {
        use fleetscale_core::Error as E;
        match e {
            EtcdError::Config { .. }
            | EtcdError::TlsFile { .. }
            | EtcdError::DuplicateReplica { .. } => E::Config {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
            EtcdError::Unavailable { .. }
            | EtcdError::LeaseLost { .. }
            | EtcdError::NotConfirmed { .. } => E::Unavailable {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
            EtcdError::Unauthorized { .. } => E::Unauthorized {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
            EtcdError::NotOwner { .. } | EtcdError::LockLost { .. } => E::Refused {
                reason: e.to_string(),
                source: Some(Box::new(e)),
            },
            EtcdError::LockBusy { .. } => E::Conflict {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
            EtcdError::InvalidResponse { .. } => E::Backend {
                message: e.to_string(),
                retryable: false,
                source: Some(Box::new(e)),
            },
        }
    }
}
