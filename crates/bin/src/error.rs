//! The error type of the binaries' library.

/// Why a command failed. The `Display` text is what the binaries print after `ERROR: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinError {
    /// A configuration problem (file, environment or flags); the message names the key and,
    /// for files, the file and line.
    #[error("{0}")]
    Config(String),

    /// Reading a file or binding a socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An error of the core (engine, policy, expressions).
    #[error(transparent)]
    Core(#[from] fleetscale_core::Error),

    /// An error of the Fly backend.
    #[error(transparent)]
    Fly(#[from] fleetscale_fly::FlyError),

    /// An error of a metric source.
    #[error(transparent)]
    Metrics(#[from] fleetscale_metrics::MetricsError),

    /// An error of the Weave backend.
    #[error(transparent)]
    Weave(#[from] fleetscale_weave::WeaveError),

    /// A backtest could not read its trace, replay or write its outputs.
    #[error(transparent)]
    Sim(#[from] fleetscale_sim::SimError),

    /// A `fleetscale` configuration file could not be read, parsed or built into targets.
    #[error(transparent)]
    NativeConfig(#[from] fleetscale_config::ConfigError),

    /// A `fly-autoscaler` configuration could not be loaded or built, or its `eval` failed.
    #[error(transparent)]
    Fas(#[from] fleetscale_fas::FasError),

    /// A command failed for another reason (the message says which).
    #[error("{0}")]
    Failed(String),
}

impl BinError {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        BinError::Config(msg.into())
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BinError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<BinError> for fleetscale_core::Error {
    /// Core errors come back as they were; everything else is a configuration or backend
    /// error with its message.
    fn from(e: BinError) -> Self {
        match e {
            BinError::Core(e) => e,
            BinError::Fly(e) => e.into(),
            BinError::Metrics(e) => e.into(),
            BinError::Weave(e) => e.into(),
            BinError::NativeConfig(e) => e.into(),
            BinError::Fas(fleetscale_fas::FasError::Core(e)) => e,
            BinError::Fas(fleetscale_fas::FasError::Fly(e)) => e.into(),
            BinError::Config(m) => fleetscale_core::Error::config(m),
            other => fleetscale_core::Error::config(other.to_string()),
        }
    }
}

/// The result type of the binaries' library.
pub type Result<T> = std::result::Result<T, BinError>;
