//! The error type of the native configuration.

/// Why a configuration file could not be read, parsed or turned into targets. The `Display`
/// text is the whole message a user sees (for file errors: `path:line:col: message` and the
/// line quoted as written).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is invalid: the message names the key and, where it can, the file, line and
    /// column.
    #[error("{0}")]
    Invalid(String),

    /// Reading the file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An error of the core (engine, policy, expressions) while building a target.
    #[error(transparent)]
    Core(#[from] fleetscale_core::Error),

    /// An error of the Fly backend while building a target.
    #[error(transparent)]
    Fly(#[from] fleetscale_fly::FlyError),

    /// An error of a metric source while building a target.
    #[error(transparent)]
    Metrics(#[from] fleetscale_metrics::MetricsError),

    /// An error of the Weave backend while building a target.
    #[error(transparent)]
    Weave(#[from] fleetscale_weave::WeaveError),
}

impl ConfigError {
    /// An invalid-configuration error with its whole message.
    pub fn config(msg: impl Into<String>) -> Self {
        ConfigError::Invalid(msg.into())
    }

    /// A read error, with what was being read.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ConfigError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ConfigError> for fleetscale_core::Error {
    /// Core errors come back as they were, backend errors as their own class; everything else
    /// is a configuration error with its message.
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Core(e) => e,
            ConfigError::Fly(e) => e.into(),
            ConfigError::Metrics(e) => e.into(),
            ConfigError::Weave(e) => e.into(),
            ConfigError::Invalid(m) => fleetscale_core::Error::config(m),
            other => fleetscale_core::Error::config(other.to_string()),
        }
    }
}

/// The result type of the native configuration.
pub type Result<T> = std::result::Result<T, ConfigError>;
