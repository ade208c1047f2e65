//! [`LoopbackServer`]: an axum router served on `127.0.0.1:<free port>` from its own thread.

use std::net::SocketAddr;

use fleetscale_core::testing::server_process::free_loopback_port;
use fleetscale_core::testing::LoopbackThread;

/// An HTTP server on a free loopback port, running on a dedicated thread with its own Tokio
/// runtime, so it outlives any one test's runtime and can be shared through a `static`.
///
/// Stopped (gracefully; a thread still busy with a slow answer ends by itself) on drop.
///
/// ```
/// use fleetscale_testkit::server::LoopbackServer;
///
/// let server = LoopbackServer::start(axum::Router::new().route(
///     "/hello",
///     axum::routing::get(|| async { "hello" }),
/// ))
/// .unwrap();
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// ```
#[derive(Debug)]
pub struct LoopbackServer(LoopbackThread);

impl LoopbackServer {
    /// Serves `router` on `127.0.0.1:0` (the OS picks a free port).
    ///
    /// # Errors
    /// When the port cannot be bound or the runtime cannot be built.
    pub fn start(router: axum::Router) -> std::io::Result<Self> {
        LoopbackThread::spawn("loopback", |listener, stop| async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "loopback server failed");
            }
        })
        .map(LoopbackServer)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released): connecting to it is
/// refused, unless another process grabs it in between (unlikely within a test).
///
/// # Errors
/// When no port can be bound.
pub fn closed_port() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?)))
}
