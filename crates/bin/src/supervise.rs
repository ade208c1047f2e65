//! Running the engine in a binary: signals, a bounded shutdown, and a process that ends when
//! its engine ends.
//!
//! - The engine runs in its own task. If that task ends before any signal (a panic, or an
//!   error such as a zero interval), the process ends with a non-zero exit: an autoscaler whose
//!   loop died must not keep serving `/metrics` as if it were alive.
//! - The first SIGINT or SIGTERM cancels the engine: ticks in flight get the engine's
//!   shutdown grace ([`fleetscale_core::engine::EngineConfig::shutdown_grace`], 3 s by default,
//!   under the 5 s Fly gives a Machine before killing it), then are dropped; actions already
//!   sent are logged as such by the engine.
//! - A second signal exits at once, without waiting for anything.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetscale_core::engine::Engine;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{BinError, Result};

/// SIGINT and SIGTERM (Ctrl-C where there are no Unix signals), registered once so that no
/// signal is lost between the first and the second.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Registers the handlers.
    pub fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Waits for the next signal and returns its name (`interrupt`, `terminated`).
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            if let Some((int, term)) = &mut self.streams {
                return tokio::select! {
                    _ = int.recv() => "interrupt",
                    _ = term.recv() => "terminated",
                };
            }
        }
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

fn ended(r: std::result::Result<fleetscale_core::Result<()>, tokio::task::JoinError>) -> BinError {
    match r {
        Ok(Ok(())) => BinError::Failed("the engine stopped without being asked to".into()),
        Ok(Err(e)) => BinError::Failed(format!("the engine stopped: {e}")),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            BinError::Failed(format!("the engine task panicked: {what}"))
        }
        Err(e) => BinError::Failed(format!("the engine task ended: {e}")),
    }
}

/// Supervises a running engine task until shutdown (see the module docs).
///
/// `first` resolves with the name of the first signal, `second` is awaited after it for a
/// second one. `grace` is the engine's shutdown grace: the engine returns within it; this
/// waits `grace` plus a margin of 2 s for the engine's own wind-down before giving up on it.
///
/// # Errors
/// The engine task ended before any signal (panic, error, or return); a second signal; the
/// engine did not return within the grace and its margin.
pub async fn run_until_shutdown<F1, F2>(
    mut task: JoinHandle<fleetscale_core::Result<()>>,
    cancel: CancellationToken,
    grace: Duration,
    first: F1,
    second: impl FnOnce() -> F2,
) -> Result<()>
where
    F1: Future<Output = &'static str>,
    F2: Future<Output = &'static str>,
{
    let signal = tokio::select! {
        s = first => s,
        r = &mut task => {
            let e = ended(r);
            tracing::error!(err = %e, "the engine is not running: exiting");
            return Err(e);
        }
    };
    // fly-autoscaler's message; the grace and the second-signal rule as attributes.
    tracing::info!(
        signal,
        grace_seconds = grace.as_secs_f64(),
        second_signal = "exits at once",
        "signal received, shutting down"
    );
    cancel.cancel();
    let margin = grace + Duration::from_secs(2);
    tokio::select! {
        r = &mut task => match r {
            Ok(Ok(())) => Ok(()),
            other => Err(ended(other)),
        },
        s = second() => {
            tracing::warn!(signal = s, "second signal: exiting at once");
            task.abort();
            Err(BinError::Failed(format!("second signal ({s}): exited without waiting for ticks in flight")))
        }
        _ = tokio::time::sleep(margin) => {
            task.abort();
            Err(BinError::Failed(format!(
                "the engine did not stop within {} of the signal",
                fleetscale_core::format_seconds(margin)
            )))
        }
    }
}

/// Runs the loop of `engine` in its own task and supervises it with [`run_until_signal`]
/// (`grace` is the engine's shutdown grace).
///
/// # Errors
/// As [`run_until_shutdown`].
pub async fn run_engine_until_signal(engine: Arc<Engine>, grace: Duration) -> Result<()> {
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { engine.run(cancel.cancelled_owned()).await })
    };
    run_until_signal(task, cancel, grace).await
}

/// [`run_until_shutdown`] with the process's SIGINT and SIGTERM.
///
/// # Errors
/// As [`run_until_shutdown`].
pub async fn run_until_signal(
    task: JoinHandle<fleetscale_core::Result<()>>,
    cancel: CancellationToken,
    grace: Duration,
) -> Result<()> {
    // Both waits read the same signal streams; the first releases them when a signal came.
    // (Awaiting the first signal before supervising would leave an engine that stopped on its
    // own unnoticed until a signal arrived.)
    let signals = Arc::new(tokio::sync::Mutex::new(Signals::new()));
    let again = signals.clone();
    run_until_shutdown(
        task,
        cancel,
        grace,
        async move { signals.lock().await.next().await },
        move || async move { again.lock().await.next().await },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error with which supervising `task` ends when no signal ever arrives.
    async fn error_without_a_signal(task: JoinHandle<fleetscale_core::Result<()>>) -> BinError {
        run_until_shutdown(
            task,
            CancellationToken::new(),
            Duration::from_secs(1),
            std::future::pending(),
            std::future::pending,
        )
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn an_engine_that_stops_before_any_signal_ends_the_wait_for_signals() {
        let task =
            tokio::spawn(async { Err(fleetscale_core::Error::unavailable("injected failure")) });
        // The timeout only guards against a hang: no signal is ever sent to this process.
        let ended = tokio::time::timeout(
            Duration::from_secs(60),
            run_until_signal(task, CancellationToken::new(), Duration::from_secs(1)),
        )
        .await
        .expect("supervision must end when the engine ends, without waiting for a signal");
        let e = ended.unwrap_err().to_string();
        assert!(
            e.contains("the engine stopped") && e.contains("injected failure"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_panicking_engine_ends_the_process_with_an_error() {
        let task = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("injected engine bug");
            }
            Ok(())
        });
        let e = error_without_a_signal(task).await;
        assert!(
            e.to_string().contains("panicked: injected engine bug"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_engine_that_returns_an_error_ends_the_process() {
        let task = tokio::spawn(async {
            Err(fleetscale_core::Error::config(
                "engine interval must be greater than zero",
            ))
        });
        let e = error_without_a_signal(task).await;
        assert!(e.to_string().contains("interval"), "{e}");
    }

    #[tokio::test]
    async fn a_clean_stop_after_a_signal_is_ok() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            c.cancelled().await;
            Ok(())
        });
        run_until_shutdown(
            task,
            cancel,
            Duration::from_secs(1),
            std::future::ready("terminated"),
            std::future::pending,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_second_signal_exits_at_once() {
        // An engine that ignores cancellation for an hour.
        let task = tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let e = run_until_shutdown(
            task,
            CancellationToken::new(),
            Duration::from_secs(3000),
            std::future::ready("terminated"),
            || std::future::ready("interrupt"),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("second signal (interrupt)"), "{e}");
    }
}
