//! An axum router served on `127.0.0.1:<free port>` from its own thread.

use std::net::SocketAddr;

use fleetscale_core::testing::LoopbackThread;

/// An HTTP server on a free loopback port, on a dedicated thread with its own Tokio runtime (so
/// it outlives any one test's runtime). Stopped on drop.
#[derive(Debug)]
pub(crate) struct LoopbackServer(LoopbackThread);

impl LoopbackServer {
    /// Serves `router` on `127.0.0.1:0`.
    pub(crate) fn start(router: axum::Router) -> std::io::Result<Self> {
        LoopbackThread::spawn("ec2-proxy", |listener, stop| async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "proxy failed");
            }
        })
        .map(LoopbackServer)
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
}
