//! [`LoopbackThread`]: a test server on a free loopback port, served from a thread of its own
//! with its own Tokio runtime, so it outlives any one test's runtime and can live in a
//! `static`.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// A server on `127.0.0.1:<free port>` running on a dedicated thread with its own Tokio
/// runtime, so that it outlives any one test's runtime and can live in a `static`. Asked to
/// stop on drop.
///
/// ```
/// use fleetscale_core::testing::LoopbackThread;
/// use tokio::io::AsyncWriteExt;
/// let server = LoopbackThread::spawn("hello", |listener, stop| async move {
///     tokio::select! {
///         _ = stop => {}
///         Ok((mut socket, _)) = listener.accept() => {
///             let _ = socket.write_all(b"hello").await;
///         }
///     }
/// })
/// .unwrap();
/// let mut answer = String::new();
/// let mut socket = std::net::TcpStream::connect(server.addr()).unwrap();
/// std::io::Read::read_to_string(&mut socket, &mut answer).unwrap();
/// assert_eq!(answer, "hello");
/// ```
#[derive(Debug)]
pub struct LoopbackThread {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackThread {
    /// Binds `127.0.0.1:0` and runs `serve(listener, stop)` on a new thread named
    /// `<name>-<port>`; `stop` resolves when the server is dropped, and `serve` should then
    /// return.
    ///
    /// # Errors
    /// When the port cannot be bound, or the runtime or the thread cannot be made.
    pub fn spawn<F, Fut>(name: &str, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, ShutdownSignal) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread_name = format!("{name}-{}", addr.port());
        let thread = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, ShutdownSignal(rx)).await,
                        Err(e) => tracing::error!(error = %e, "{thread_name} cannot listen"),
                    }
                });
            })?;
        Ok(LoopbackThread {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // A graceful shutdown waits for open connections, and a slow or delayed answer may
        // hold one for a while: a thread still busy is not joined (it ends by itself).
        if let Some(thread) = self.thread.take() {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Resolves when the [`LoopbackThread`] that handed it out is dropped.
#[derive(Debug)]
pub struct ShutdownSignal(oneshot::Receiver<()>);

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
