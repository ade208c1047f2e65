//! Logging of both binaries: `fly-autoscaler`'s slog-shaped JSON lines
//! ([`SlogJsonLayer`], from `fleetscale_fas::slog`), `fleetscale`'s human text (or the same
//! JSON), every line redacted ([`fleetscale_fas::redact`]) on its way to stderr.

use std::io::IsTerminal;

use fleetscale_fas::redact::RedactingWriter;
use fleetscale_fas::slog::SlogJsonLayer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the slog-style JSON logger on stderr as the global subscriber for
/// fly-autoscaler: the lines of this crate and of `fleetscale_fas` (the Go tool's messages) at `level` (INFO, DEBUG with
/// `verbose: true`), the libraries' only from WARN up so their own INFO lines do not mix
/// with the Go tool's. `RUST_LOG`, when set, replaces this with a full `tracing` filter.
/// Does nothing if a subscriber is already installed.
///
/// Every line goes through [`fleetscale_fas::redact`]: no registered secret reaches stderr.
pub fn init_slog_json(level: LevelFilter) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => env_filter_or(level),
        // The core's saturation WARN (`fleetscale::expr`) is a line the operator must see.
        _ => EnvFilter::new(format!(
            "warn,fleetscale_bin={level},fleetscale_fas={level}"
        )),
    };
    let _ = tracing_subscriber::registry()
        .with(SlogJsonLayer::new(RedactedStderr).with_filter(filter))
        .try_init();
}

/// How `fleetscale` writes its logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines in the shape of Go's log/slog (`level`, `msg`, attributes; no time).
    Json,
}

/// Installs `fleetscale`'s logger on stderr: text or JSON, at `level` unless `RUST_LOG` is
/// set. Text has ANSI colours only when stderr is a terminal. Every line goes through
/// [`fleetscale_fas::redact`]. Does nothing if a subscriber is already installed.
pub fn init_cli(format: LogFormat, level: LevelFilter) {
    let filter = env_filter_or(level);
    match format {
        LogFormat::Json => {
            let _ = tracing_subscriber::registry()
                .with(SlogJsonLayer::new(RedactedStderr).with_filter(filter))
                .try_init();
        }
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_writer(RedactedStderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .with_env_filter(filter)
                .try_init();
        }
    }
}

fn env_filter_or(level: LevelFilter) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => {
            EnvFilter::try_new(s).unwrap_or_else(|_| EnvFilter::new(level.to_string()))
        }
        _ => EnvFilter::new(level.to_string()),
    }
}

/// Makes [`RedactingWriter`]s (every registered secret replaced) over standard error for
/// `tracing-subscriber`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactingWriter<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(std::io::stderr())
    }
}
