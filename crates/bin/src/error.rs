//! The error type of the binaries' library.

/// Why a command failed. The `Display` text is what the binaries print after `ERROR: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinError {
    /// A configuration problem (file, environment or flags; the message names the key and,
    /// for files, the file and line), a failed read or bind, or an error of the core or a
    /// backend: the native configuration's error, which carries all of these.
    #[error(transparent)]
    Config(#[from] fleetscale_config::ConfigError),

    /// A backtest could not read its trace, replay or write its outputs.
    #[error(transparent)]
    Sim(#[from] fleetscale_sim::SimError),

    /// A `fly-autoscaler` configuration could not be loaded or built, or its `eval` failed.
    #[error(transparent)]
    Fas(#[from] fleetscale_fas::FasError),

    /// A command failed for another reason (the message says which).
    #[error("{0}")]
    Failed(String),
}

/// Core and backend errors travel as the configuration error's own classes of them.
macro_rules! via_config_error {
    ($($from:ty),+) => {
        $(impl From<$from> for BinError {
            fn from(e: $from) -> Self {
                BinError::Config(e.into())
            }
        })+
    };
}

via_config_error!(
    fleetscale_core::Error,
    fleetscale_fly::FlyError,
    fleetscale_metrics::MetricsError,
    fleetscale_weave::WeaveError
);

impl BinError {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        BinError::Config(fleetscale_config::ConfigError::config(msg))
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BinError::Config(fleetscale_config::ConfigError::io(context, source))
    }
}

impl From<BinError> for fleetscale_core::Error {
    /// Core errors come back as they were; everything else is a configuration or backend
    /// error with its message.
    fn from(e: BinError) -> Self {
        match e {
            BinError::Config(e) => e.into(),
            BinError::Fas(fleetscale_fas::FasError::Core(e)) => e,
            BinError::Fas(fleetscale_fas::FasError::Fly(e)) => e.into(),
            other => fleetscale_core::Error::config(other.to_string()),
        }
    }
}

/// The result type of the binaries' library.
pub type Result<T> = std::result::Result<T, BinError>;
