//! The one error type of this crate, [`WeaveError`], and its mapping onto
//! [`fleetscale_core::Error`].

use std::time::Duration;

/// Errors of the Weave Net backend: router HTTP calls, output parsing, host commands, the
/// reclaim ledger and the safety rules.
///
/// Converted into [`fleetscale_core::Error`] at trait boundaries (see the `From` impl), keeping
/// this error as the `source` where the core variant has one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeaveError {
    /// The HTTP request to a router failed below HTTP (connection refused or reset, DNS, TLS).
    #[error("router {url}: {operation} failed: {}", transport_cause(source))]
    Http {
        /// The router's base URL.
        url: String,
        /// The call, e.g. `GET /status/ipam`.
        operation: String,
        /// Why no HTTP answer arrived (connection refused or reset, DNS, TLS).
        #[source]
        source: reqwest::Error,
    },

    /// The router answered `503 Service Unavailable`: it is up but not ready yet (`GET /status`
    /// answers 503 until the router is ready).
    #[error("router {url}: {operation}: not ready (503): {body}")]
    NotReady {
        /// The router's base URL.
        url: String,
        /// The call, e.g. `GET /status`.
        operation: String,
        /// The body of the answer (the status text while not ready).
        body: String,
    },

    /// The router answered an HTTP status the call does not expect.
    #[error("router {url}: {operation}: unexpected HTTP {status}: {body}")]
    Status {
        /// The router's base URL.
        url: String,
        /// The call, e.g. `GET /status/ipam`.
        operation: String,
        /// The HTTP status code.
        status: u16,
        /// The body of the answer, truncated.
        body: String,
    },

    /// The call did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The call or action that timed out.
        operation: String,
        /// How long the call or action was given before it was abandoned.
        after: Duration,
    },

    /// A text answer did not have the documented format. Carries the offending line.
    #[error("cannot parse {what}, line {line_no}: {message}: {line:?}")]
    Parse {
        /// What was parsed, e.g. `GET /status/ipam`.
        what: &'static str,
        /// 1-based line number in the answer.
        line_no: usize,
        /// The offending line, verbatim.
        line: String,
        /// What was wrong with it.
        message: String,
    },

    /// A JSON answer (`GET /report`) could not be decoded.
    #[error("cannot decode {context}: {source}")]
    Json {
        /// Which answer.
        context: String,
        /// The decoding error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// `DELETE /peer/{name}` answered an empty body: the router runs without IPAM.
    #[error("router {url}: IPAM is disabled (empty rmpeer answer)")]
    IpamDisabled {
        /// The router's base URL.
        url: String,
    },

    /// A string is not a Weave peer name (`aa:bb:cc:dd:ee:ff`, or a `::` short form).
    #[error("invalid peer name {input:?}: {message}")]
    InvalidPeerName {
        /// The string that was given as a peer name.
        input: String,
        /// Why.
        message: String,
    },

    /// The configuration (URLs, peer lists, ledger path, ...) is invalid.
    #[error("invalid weave configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    /// A host command could not be started (program missing, permission denied).
    #[error("host {host}: cannot run {program}: {source}")]
    Spawn {
        /// The host the command was to run on.
        host: String,
        /// The program that could not be started.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A host command ran and exited unsuccessfully.
    #[error("host {host}: `{command}` exited with {}: {stderr}", code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into()))]
    CommandFailed {
        /// The host the command ran on.
        host: String,
        /// The command line, for humans (shell-quoted).
        command: String,
        /// The exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// The command's standard error, truncated.
        stderr: String,
    },

    /// A safety rule refused the operation (fixed peer, reachable peer, not designated, ...).
    #[error("refused for safety: {reason}")]
    Refused {
        /// Which rule refused it, for metrics.
        kind: crate::reclaim::RefusalReason,
        /// What the rule found, for humans.
        reason: String,
    },

    /// The named member, machine or peer is unknown.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },

    /// After a `leave` or a reclaim, the peer still owns IP space past the deadline.
    #[error("peer {peer} still owns {owned} IPs after {after:?}")]
    StillOwned {
        /// The name of the peer that still owns space.
        peer: String,
        /// How many addresses it still owns.
        owned: u64,
        /// How long we waited.
        after: Duration,
    },

    /// Reading or writing the reclaim ledger (or its lock) failed.
    #[error("reclaim ledger {path}: {source}")]
    Ledger {
        /// The path of the ledger file or of its lock file, whichever failed.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A ledger line is not valid; the ledger is never silently skipped over.
    #[error("reclaim ledger {path}, line {line_no}: {message}: {line:?}")]
    LedgerCorrupt {
        /// Where the ledger is: a file path or the store's description.
        path: String,
        /// 1-based line number.
        line_no: usize,
        /// The text of the line that is not a ledger record.
        line: String,
        /// What was wrong.
        message: String,
    },

    /// Another reclaimer process holds the ledger lock.
    #[error("reclaim ledger lock {path} is held by another process")]
    Locked {
        /// The lock file's path (or the ledger store's description) whose lock was not had.
        path: String,
    },

    /// The reclaim ledger's store (etcd, ...) failed.
    #[error("reclaim ledger {store}: {source}")]
    LedgerStore {
        /// The store ([`fleetscale_core::coordination::LedgerStore::describe`]).
        store: String,
        /// The store's error.
        #[source]
        source: Box<fleetscale_core::Error>,
    },

    /// A host inventory could not be read (the command failed, the endpoint did not answer,
    /// the listing was malformed, the backend's list failed).
    #[error("inventory {source_name}: {message}")]
    Inventory {
        /// The inventory's name ([`crate::inventory::HostInventory::source`]).
        source_name: String,
        /// What went wrong.
        message: String,
    },

    /// `rmpeer` answered that it took over nothing although the designated peer's view showed
    /// the peer owning space: nothing was reclaimed (the ledger records it; a later pass may
    /// try again on the same evidence).
    #[error("rmpeer of {peer} on {designated} took over nothing (it owned {owned} IPs in that peer's view)")]
    NothingTakenOver {
        /// The peer that was to be reclaimed.
        peer: String,
        /// The designated peer that ran `rmpeer`.
        designated: String,
        /// What the peer owned in the designated peer's view just before.
        owned: u64,
    },
}

impl WeaveError {
    pub(crate) fn refused(kind: crate::reclaim::RefusalReason, reason: impl Into<String>) -> Self {
        WeaveError::Refused {
            kind,
            reason: reason.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        WeaveError::Config {
            message: message.into(),
        }
    }
}

/// Maps each variant onto the class the engine acts on:
///
/// | `WeaveError` | core `Error` |
/// |---|---|
/// | `Http`, `NotReady`, HTTP 5xx `Status` | `Unavailable` (retryable) |
/// | other `Status` (4xx) | `InvalidRequest` |
/// | `Timeout` | `Timeout` |
/// | `Parse`, `Json`, `IpamDisabled` | `InvalidResponse` |
/// | `InvalidPeerName`, `Config` | `Config` |
/// | `Refused` | `Refused` |
/// | `NotFound` | `NotFound` |
/// | `Locked` | `Conflict` |
/// | `LedgerStore`, `Inventory`, `NothingTakenOver` | `Unavailable` (retryable: a later pass may succeed) |
/// | `Spawn`, `CommandFailed`, `StillOwned`, `Ledger`, `LedgerCorrupt` | `Backend` (not retryable, except `StillOwned`) |
impl From<WeaveError> for fleetscale_core::Error {
    /// Maps onto the core classes, keeping the Weave error as the `source` of every class.
    fn from(e: WeaveError) -> Self {
        use fleetscale_core::Error as E;
        let message = e.to_string();
        let core = match &e {
            WeaveError::Http { .. } | WeaveError::NotReady { .. } => E::unavailable(message),
            WeaveError::Status { status, .. } if *status >= 500 => E::unavailable(message),
            WeaveError::Status { .. } => E::invalid_request(message),
            WeaveError::Timeout { operation, after } => E::timeout(operation.clone(), *after),
            WeaveError::Parse { what, .. } => E::InvalidResponse {
                context: what.to_string(),
                message,
                source: None,
            },
            WeaveError::Json { context, .. } => E::InvalidResponse {
                context: context.clone(),
                message,
                source: None,
            },
            WeaveError::IpamDisabled { url } => E::InvalidResponse {
                context: format!("{url} DELETE /peer/{{name}}"),
                message,
                source: None,
            },
            WeaveError::InvalidPeerName { .. } | WeaveError::Config { .. } => E::config(message),
            WeaveError::Refused { reason, .. } => E::refused(reason.clone()),
            WeaveError::NotFound { what } => E::not_found(what.clone()),
            WeaveError::Locked { .. } => E::conflict(message),
            WeaveError::LedgerStore { .. }
            | WeaveError::Inventory { .. }
            | WeaveError::NothingTakenOver { .. } => E::unavailable(message),
            WeaveError::StillOwned { .. } => E::Backend {
                message,
                retryable: true,
                source: None,
            },
            WeaveError::Spawn { .. }
            | WeaveError::CommandFailed { .. }
            | WeaveError::Ledger { .. }
            | WeaveError::LedgerCorrupt { .. } => E::Backend {
                message,
                retryable: false,
                source: None,
            },
        };
        core.with_source(e)
    }
}

/// The cause of a transport error in words a user can act on (`connection refused`, a DNS
/// failure, a timeout), from the innermost source, instead of reqwest's generic
/// `error sending request`.
pub(crate) fn transport_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!("cannot connect: {cause}")
    } else {
        cause.to_string()
    };
    match e.url() {
        Some(u) => format!(
            "{}{}: {what}",
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        None => what,
    }
}

/// Truncates an HTTP body or a command's stderr for an error message.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 512;
    let s = s.trim_end();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
