//! The autoscaler's own small HTTP server (feature `server`), as both binaries serve it: `GET /metrics` (OpenMetrics text of
//! [`AutoscalerMetrics`], with fly-autoscaler's exact `fas_*` sample names),
//! `GET /healthz`, and `GET /`: the status page of a [`StatusBoard`] when one is given.
//!
//! `/healthz` answers `200 ok` while the engine is healthy and `503` with the reason
//! otherwise (see [`Health`]); it never calls a backend, so it stays cheap for probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::status::StatusBoard;
use crate::AutoscalerMetrics;

/// What `/healthz` reports: healthy until no tick has finished for `stale_after` (after a
/// first grace period of the same length from start).
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stale_after: Duration,
    last_tick: std::sync::Mutex<Option<Instant>>,
}

impl Health {
    /// Healthy while a tick finished within `stale_after` (e.g. three intervals plus the tick
    /// timeout).
    pub fn new(stale_after: Duration) -> Self {
        Health {
            started: Instant::now(),
            stale_after,
            last_tick: std::sync::Mutex::new(None),
        }
    }

    /// Records that a tick finished now.
    pub fn tick(&self) {
        if let Ok(mut g) = self.last_tick.lock() {
            *g = Some(Instant::now());
        }
    }

    /// `Ok(summary)` when healthy, `Err(reason)` otherwise.
    pub fn check(&self) -> Result<String, String> {
        let last = self.last_tick.lock().ok().and_then(|g| *g);
        match last {
            Some(at) if at.elapsed() <= self.stale_after => Ok(format!(
                "ok: last tick {:.1}s ago",
                at.elapsed().as_secs_f64()
            )),
            Some(at) => Err(format!(
                "no tick finished for {:.1}s (limit {:?})",
                at.elapsed().as_secs_f64(),
                self.stale_after
            )),
            None if self.started.elapsed() <= self.stale_after => {
                Ok("ok: starting, no tick finished yet".into())
            }
            None => Err(format!(
                "no tick finished since start {:.1}s ago",
                self.started.elapsed().as_secs_f64()
            )),
        }
    }
}

impl fleetscale_core::record::DecisionObserver for Health {
    /// Every finished tick, successful or not, proves the loop is alive.
    fn observe(&self, _record: &fleetscale_core::record::DecisionRecord) {
        self.tick();
    }

    /// So does every finished pass, also over no target (a wildcard matching no app).
    fn pass_finished(&self, _targets: usize) {
        self.tick();
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<AutoscalerMetrics>,
    health: Arc<Health>,
}

/// The router: `/metrics` and `/healthz`.
pub fn router(metrics: Arc<AutoscalerMetrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(AppState { metrics, health })
}

/// The status board of a daemon named `title` ticking every `interval`: the page refreshes
/// at the tick interval (between 5 s and 60 s) and charts the last hour.
pub fn status_board(title: &str, interval: Duration) -> Arc<StatusBoard> {
    Arc::new(StatusBoard::new(crate::status::StatusOptions {
        title: title.to_owned(),
        refresh: interval.clamp(Duration::from_secs(5), Duration::from_secs(60)),
        ..Default::default()
    }))
}

/// The status page at `/`: server-rendered HTML, never cached.
pub fn status_router(board: Arc<StatusBoard>) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let board = board.clone();
            async move {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    board.render(std::time::SystemTime::now()),
                )
            }
        }),
    )
}

async fn metrics_page(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::CONTENT_TYPE)],
        st.metrics.encode(),
    )
}

async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    match st.health.check() {
        Ok(s) => (StatusCode::OK, format!("{s}\n")),
        Err(s) => (StatusCode::SERVICE_UNAVAILABLE, format!("{s}\n")),
    }
}

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves [`router`] in the background.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<AutoscalerMetrics>,
        health: Arc<Health>,
    ) -> std::io::Result<MetricsServer> {
        Self::start_with_status(addr, metrics, health, None).await
    }

    /// Like [`MetricsServer::start`], with the status page of `status` at `/`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_with_status(
        addr: SocketAddr,
        metrics: Arc<AutoscalerMetrics>,
        health: Arc<Health>,
        status: Option<Arc<StatusBoard>>,
    ) -> std::io::Result<MetricsServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let mut app = router(metrics, health);
        if let Some(board) = status {
            app = app.merge(status_router(board));
        }
        let task = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(err = %e, "cannot serve metrics");
            }
        });
        Ok(MetricsServer { addr, stop, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_goes_stale() {
        let h = Health::new(Duration::from_secs(3600));
        assert!(h.check().unwrap().contains("starting"));
        h.tick();
        assert!(h.check().unwrap().contains("last tick"));
        let stale = Health::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(stale.check().unwrap_err().contains("since start"));
        stale.tick();
        std::thread::sleep(Duration::from_millis(5));
        assert!(stale.check().unwrap_err().contains("no tick finished for"));
    }
}
