//! [`SimError`]: everything that can go wrong reading a trace, replaying it or drawing it.

use std::path::PathBuf;

/// The errors of this crate. A replay either finishes or fails before it starts: it never
/// stops half-way with partial output.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A CSV trace is malformed; `line` and `column` are 1-based.
    #[error("trace line {line}, column {column}: {message}")]
    Trace {
        /// The line of the problem (1 is the header).
        line: usize,
        /// The column (1 is `timestamp`).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A trace built in code is inconsistent (series of the wrong length, timestamps not
    /// increasing, ...).
    #[error("invalid trace: {0}")]
    InvalidTrace(String),
    /// The replay's settings contradict each other or the trace (a policy variable no column
    /// or fleet quantity provides, a zero interval, ...).
    #[error("invalid replay settings: {0}")]
    Config(String),
    /// A backtest's inputs are unusable (a `--fleet-metric` that does not parse, no metric
    /// to read); the message says which.
    #[error("{0}")]
    Input(String),
    /// Reading the metric history failed (feature `history`).
    #[cfg(feature = "history")]
    #[error(transparent)]
    Metrics(#[from] fleetscale_metrics::MetricsError),
    /// Drawing the plot failed.
    #[error("cannot draw {what}: {message}")]
    Plot {
        /// Which output (`plot.svg`, `plot.png`).
        what: String,
        /// The drawing backend's message.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `read`).
        action: &'static str,
        /// The path of the file that could not be read or written.
        path: PathBuf,
        /// The I/O error, kept as the source.
        #[source]
        source: std::io::Error,
    },
}

/// The result type of this crate's fallible functions (errors are [`SimError`]).
pub type Result<T, E = SimError> = std::result::Result<T, E>;
