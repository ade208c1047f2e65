//! Real server programs for tests (Prometheus, etcd, `moto_server`, the Temporal dev server):
//! finding the program, a free loopback port, a child process under a watchdog that dies with
//! the test process, waiting for readiness, and a log tail that keeps the cause of a crash.
//!
//! ```no_run
//! use std::time::Duration;
//! use fleetscale_core::testing::server_process::{
//!     find_program, free_loopback_port, ServerCommand, StopSignal,
//! };
//! # async fn demo() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join("my-server-test");
//! std::fs::create_dir_all(&dir)?;
//! let program = find_program("MY_SERVER", "my-server", &[], &[]).expect("install hint here");
//! let port = free_loopback_port()?;
//! let server = ServerCommand::new(program, dir.join("server.log"))
//!     .arg(format!("--port={port}"))
//!     .stop_with(StopSignal::Kill)
//!     .remove_dir_on_stop(&dir)
//!     .spawn()?;
//! let answered = server
//!     .wait_ready(Duration::from_secs(60), Duration::from_millis(100), || async {
//!         std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
//!     })
//!     .await;
//! if let Err(e) = answered {
//!     panic!("my-server {e}\n{}", e.log);
//! }
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many lines of the end of a log [`shorten_log`] keeps.
pub const LOG_TAIL_LINES: usize = 30;

/// How many cause lines from above the tail [`shorten_log`] keeps at the most.
pub const LOG_CAUSE_LINES: usize = 10;

/// Finds a program: `$env_var` if set (and then only there: a set variable naming no file is
/// `None`, so a typo is not hidden by another copy), else the first file of `before_path`, else
/// `name` in a directory of `PATH`, else the first file of `after_path`.
pub fn find_program(
    env_var: &str,
    name: &str,
    before_path: &[PathBuf],
    after_path: &[PathBuf],
) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(env_var) {
        let p = PathBuf::from(explicit);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    before_path
        .iter()
        .chain(&on_path)
        .chain(after_path)
        .find(|p| p.is_file())
        .cloned()
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released). Another process may
/// take it in between, which is why starts go through [`retry_on_port_clash`].
///
/// # Errors
/// When no port can be bound.
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `start` up to `attempts` times (at least once) while `clash` says its error is a port
/// taken between [`free_loopback_port`] and the server's bind; returns the first success, the
/// first other error, or the last clash.
///
/// # Errors
/// The error of the last attempt.
pub async fn retry_on_port_clash<T, E, F, Fut>(
    attempts: usize,
    mut start: F,
    clash: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = attempts.max(1);
    loop {
        tries -= 1;
        match start().await {
            Err(e) if tries > 0 && clash(&e) => continue,
            done => return done,
        }
    }
}

/// Whether a server's log says its port was taken (the clash [`retry_on_port_clash`] retries).
pub fn says_address_in_use(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// The signal the watchdog sends when the server is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// `SIGTERM`: the server may shut down cleanly.
    Term,
    /// `SIGKILL`: for servers that keep nothing worth a clean stop, or to model a crash.
    Kill,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "TERM",
            StopSignal::Kill => "KILL",
        }
    }
}

/// The watchdog: a shell starts the server in the background with its output appended to
/// `$LOG`, writes its pid to `$LOG.pid`, and signals it (then `SIGCONT`, so a frozen server
/// dies too) as soon as our end of its stdin closes. That happens on [`ServerProcess`]'s drop
/// and also when the test process dies in any way, so no server outlives its test run, even
/// one held in a `static`. After a requested stop `$REMOVE_DIR` (when set) is removed; after a
/// crash it is kept so the log can be shown.
const WATCHDOG: &str = r#"
exec 3<&0
"$@" </dev/null >>"$LOG" 2>&1 &
p=$!
echo "$p" >"$LOG.pid"
( read _ <&3; if [ -n "$REMOVE_DIR" ]; then : >"$REMOVE_DIR/.stopping"; fi; kill -"$SIGNAL" "$p" 2>/dev/null; kill -CONT "$p" 2>/dev/null ) </dev/null &
w=$!
wait "$p"
rc=$?
kill "$w" 2>/dev/null
if [ -n "$REMOVE_DIR" ] && [ -e "$REMOVE_DIR/.stopping" ]; then rm -rf -- "$REMOVE_DIR"; fi
exit "$rc"
"#;

/// What to start: a program, its arguments, where its output goes and how it is stopped.
#[derive(Clone, Debug)]
pub struct ServerCommand {
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    signal: StopSignal,
    remove_dir: Option<PathBuf>,
}

impl ServerCommand {
    /// `program`, with its stdout and stderr appended to `log`, stopped with `SIGTERM`.
    pub fn new(program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        ServerCommand {
            program: program.into(),
            args: Vec::new(),
            log: log.into(),
            signal: StopSignal::Term,
            remove_dir: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The signal of a stop (default `SIGTERM`).
    pub fn stop_with(mut self, signal: StopSignal) -> Self {
        self.signal = signal;
        self
    }

    /// Removes `dir` (the server's temporary directory) after a requested stop, also when the
    /// test process dies; a crashed server's directory is kept for its log.
    pub fn remove_dir_on_stop(mut self, dir: impl Into<PathBuf>) -> Self {
        self.remove_dir = Some(dir.into());
        self
    }

    /// Starts the server under the watchdog, without waiting for it.
    ///
    /// # Errors
    /// When the shell cannot be spawned.
    pub fn spawn(self) -> std::io::Result<ServerProcess> {
        let _ = std::fs::remove_file(pid_path(&self.log));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("server-watchdog")
            .arg(&self.program)
            .args(&self.args)
            .env("LOG", &self.log)
            .env("SIGNAL", self.signal.name())
            .env(
                "REMOVE_DIR",
                self.remove_dir.as_deref().unwrap_or(Path::new("")),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(ServerProcess {
            child: Mutex::new(Some(child)),
            stdin,
            log: self.log,
            remove_dir: self.remove_dir,
        })
    }
}

fn pid_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".pid");
    PathBuf::from(p)
}

/// Why [`ServerProcess::wait_ready`] gave up: `Display` says why (`exited early (exit
/// status: 1)`, `not ready after 60s`); the log tail goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// The exit status when the server exited first; `None` when the deadline passed.
    pub exited: Option<ExitStatus>,
    /// The deadline it was given.
    pub deadline: Duration,
    /// [`ServerProcess::log_tail`] at that moment.
    pub log: String,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exited {
            Some(status) => write!(f, "exited early ({status})"),
            None => write!(f, "not ready after {:?}", self.deadline),
        }
    }
}

/// A running server started by [`ServerCommand::spawn`]. Stopped on drop: the watchdog signals
/// it, and after 10 s the watchdog itself is killed.
#[derive(Debug)]
pub struct ServerProcess {
    child: Mutex<Option<Child>>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    remove_dir: Option<PathBuf>,
}

impl ServerProcess {
    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit status, once the server has exited (or was stopped).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `ready` every `interval` until it says yes, the server exits, or `deadline` passes.
    ///
    /// # Errors
    /// [`NotReady`], with the log tail.
    pub async fn wait_ready<F, Fut>(
        &self,
        deadline: Duration,
        interval: Duration,
        mut ready: F,
    ) -> Result<(), NotReady>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            let exited = self.exited();
            if exited.is_none() && ready().await {
                return Ok(());
            }
            if exited.is_some() || started.elapsed() > deadline {
                return Err(NotReady {
                    exited,
                    deadline,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// [`ServerProcess::wait_ready`] with [`http_get_succeeds`] on `addr` and `path` as the
    /// probe, every 100 ms.
    ///
    /// # Errors
    /// [`NotReady`], with the log tail.
    pub async fn wait_http_ready(
        &self,
        deadline: Duration,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(), NotReady> {
        self.wait_ready(deadline, Duration::from_millis(100), || {
            http_get_succeeds(addr, path)
        })
        .await
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's log, shortened by [`shorten_log`] (for failure messages).
    pub fn log_tail(&self) -> String {
        shorten_log(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The pid of the server itself (not of its watchdog), while it runs.
    pub fn pid(&self) -> Option<u32> {
        if self.exited().is_some() {
            return None;
        }
        std::fs::read_to_string(pid_path(&self.log))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server now and waits for it (what drop does).
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child().take() {
            let started = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > Duration::from_secs(10) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if let Some(dir) = &self.remove_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `GET http://{addr}{path}` answers a `2xx` status within 5 s: the readiness probe of
/// a server with a health endpoint (`/-/ready`), over plain HTTP/1.1 with
/// `Connection: close`, reading no more than the status line.
pub async fn http_get_succeeds(addr: SocketAddr, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // `HTTP/1.1 200`: the version, a space, the three digits of the status.
        let mut status_line = [0u8; 12];
        stream.read_exact(&mut status_line).await.ok()?;
        Some(status_line.starts_with(b"HTTP/1.") && status_line[9] == b'2')
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(true))
    )
}

/// A log shortened for a failure message: up to [`LOG_CAUSE_LINES`] lines from before the last
/// [`LOG_TAIL_LINES`] that state a cause (`panic`, `fatal`, `error`), then `...` and the last
/// lines. A Go panic's message is at its top and its stack fills the end, so the end alone
/// hides why a server stopped (e.g. `bind: address already in use`).
pub fn shorten_log(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.len().saturating_sub(LOG_TAIL_LINES);
    let mut out: Vec<&str> = lines[..tail]
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("panic") || l.contains("fatal") || l.contains("error")
        })
        .take(LOG_CAUSE_LINES)
        .copied()
        .collect();
    if !out.is_empty() {
        out.push("...");
    }
    out.extend_from_slice(&lines[tail..]);
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_above_a_long_stack_is_kept() {
        let mut log = String::from(
            "info starting\npanic: listen tcp 127.0.0.1:7233: bind: address already in use\n",
        );
        for i in 0..100 {
            log.push_str(&format!("frame {i}\n"));
        }
        let short = shorten_log(&log);
        assert!(short.contains("address already in use"), "{short}");
        assert!(
            short.contains("frame 99") && !short.contains("frame 69\n"),
            "{short}"
        );
        assert!(!short.contains("info starting"), "{short}");
    }

    #[test]
    fn a_short_log_is_kept_whole() {
        assert_eq!(shorten_log("a\nerror b\nc"), "a\nerror b\nc");
    }

    #[tokio::test]
    async fn a_server_that_exits_is_reported_with_its_log() {
        let dir = std::env::temp_dir().join(format!("fleetscale-sp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = ServerCommand::new("/bin/sh", dir.join("out.log"))
            .args(["-c", "echo fatal: no config; exit 3"])
            .spawn()
            .unwrap();
        let why = server
            .wait_ready(
                Duration::from_secs(30),
                Duration::from_millis(20),
                || async { false },
            )
            .await
            .unwrap_err();
        assert_eq!(why.exited.and_then(|s| s.code()), Some(3), "{why}");
        assert!(why.log.contains("fatal: no config"), "{}", why.log);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_stop_kills_the_server_and_removes_its_directory() {
        let dir = std::env::temp_dir().join(format!("fleetscale-sp-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = ServerCommand::new("/bin/sleep", dir.join("out.log"))
            .arg("600")
            .stop_with(StopSignal::Kill)
            .remove_dir_on_stop(&dir)
            .spawn()
            .unwrap();
        server
            .wait_ready(Duration::from_secs(30), Duration::from_millis(20), || {
                let pid_written = pid_path(&dir.join("out.log")).is_file();
                async move { pid_written }
            })
            .await
            .unwrap();
        let pid = server.pid().expect("the server runs");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        server.stop();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the server process is gone after a stop"
        );
        assert!(
            !dir.exists(),
            "the directory is removed after a requested stop"
        );
    }

    #[tokio::test]
    async fn the_http_probe_accepts_a_2xx_status_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            ("SSH-2.0-OpenSSH_9.2\r\n", false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 1024];
                let n = socket.read(&mut request).await.unwrap();
                socket.write_all(answer.as_bytes()).await.unwrap();
                String::from_utf8_lossy(&request[..n]).into_owned()
            });
            assert_eq!(http_get_succeeds(addr, "/-/ready").await, ok, "{answer}");
            let request = server.await.unwrap();
            assert!(
                request.starts_with("GET /-/ready HTTP/1.1\r\n"),
                "{request}"
            );
        }
        let closed = free_loopback_port().unwrap();
        assert!(!http_get_succeeds(SocketAddr::from(([127, 0, 0, 1], closed)), "/").await);
    }

    #[tokio::test]
    async fn port_clashes_are_retried_and_other_errors_are_not() {
        for (error, attempts) in [("address already in use", 5), ("bad flag", 1)] {
            let mut calls = 0;
            let r: Result<(), &str> = retry_on_port_clash(
                5,
                || {
                    calls += 1;
                    async move { Err(error) }
                },
                |e| says_address_in_use(e),
            )
            .await;
            assert_eq!((r, calls), (Err(error), attempts));
        }
    }
}
