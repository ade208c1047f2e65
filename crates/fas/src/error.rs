//! The error type of the fly-autoscaler compatibility layer.

/// Why a fly-autoscaler configuration could not be loaded or turned into an engine, or why
/// `eval` failed. The `Display` text is what `fly-autoscaler` prints after `ERROR: `, the Go
/// tool's words where it has them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FasError {
    /// A configuration problem (environment, YAML file, expressions); the message names the
    /// setting.
    #[error("{0}")]
    Config(String),

    /// Reading the `-config` file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An error of the core (engine, policy, expressions).
    #[error(transparent)]
    Core(#[from] fleetscale_core::Error),

    /// An error of the Fly backend (building a client, listing machines).
    #[error(transparent)]
    Fly(#[from] fleetscale_fly::FlyError),

    /// A step of `eval` failed; the message is the Go tool's (`metrics collection failed: …`,
    /// `cannot calculate … machine count: …`).
    #[error("{0}")]
    Failed(String),
}

impl FasError {
    /// A configuration error with its whole message.
    pub fn config(msg: impl Into<String>) -> Self {
        FasError::Config(msg.into())
    }

    /// A read error, with what was being read.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FasError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result type of the fly-autoscaler compatibility layer.
pub type Result<T> = std::result::Result<T, FasError>;
