//! Test harness (feature `test-harness`): real etcd servers on loopback, for this crate's
//! tests and any other crate's.
//!
//! - [`EtcdCluster`]: one or more members of the Debian `etcd-server` binary (found by
//!   [`etcd_binary`]) on free loopback ports with fresh data directories; members can be
//!   killed (`SIGKILL`), frozen (`SIGSTOP`/`SIGCONT`) and restarted on their data; optionally
//!   TLS (with client-certificate authentication) from a [`TestPki`], and etcd's
//!   authentication ([`EtcdCluster::enable_auth`]).
//! - Every member dies with the test process, however it ends (a watchdog shell holds the
//!   other end of a pipe), and the data directories are removed on drop.
//!
//! When the binary is missing every entry point fails with [`HarnessError::NotInstalled`],
//! whose message is the install hint: tests fail on it, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Permission};
use fleetscale_core::testing::server_process::{
    find_program, free_loopback_port, retry_on_port_clash, says_address_in_use, shorten_log,
    ServerCommand, ServerProcess, StopSignal,
};

use crate::{EtcdConfig, Secret};

pub use fleetscale_testkit::pki::{PkiFiles, TestPki};

/// The message of [`HarnessError::NotInstalled`].
pub const INSTALL_HINT: &str = "etcd not found: run scripts/install-test-deps.sh (apt-get install -y etcd-server), or set FLEETSCALE_ETCD=/path/to/etcd";

/// How long members may take to elect a leader and answer. Generous: a loaded 2-core machine
/// may be slow; this is a deadline, not an expectation.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Errors of the harness. `Debug` prints the same as `Display`, so `unwrap()` shows the
/// install hint and etcd's log readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The etcd binary is not installed.
    #[error("{}", INSTALL_HINT)]
    NotInstalled,
    /// A member did not start or the cluster did not become healthy.
    #[error("etcd did not start: {message}\n--- etcd log (end) ---\n{log}")]
    Start {
        /// What happened.
        message: String,
        /// The end of the member's log.
        log: String,
    },
    /// A request of the harness itself failed (enabling authentication, adding a user).
    #[error("etcd {operation}: {message}")]
    Request {
        /// What was asked.
        operation: String,
        /// Why it failed.
        message: String,
    },
    /// A local I/O error (temporary directory, port, process).
    #[error("harness I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fleetscale_testkit::debug_as_display!(HarnessError);

/// Finds the etcd binary: `$FLEETSCALE_ETCD` if set, else `etcd` on `PATH`, else
/// `/usr/bin/etcd` (where the Debian package puts it).
///
/// # Errors
/// [`HarnessError::NotInstalled`] (with [`INSTALL_HINT`]) when none exists.
pub fn etcd_binary() -> Result<PathBuf, HarnessError> {
    find_program(
        "FLEETSCALE_ETCD",
        "etcd",
        &[],
        &[PathBuf::from("/usr/bin/etcd")],
    )
    .ok_or(HarnessError::NotInstalled)
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Members (1 or more; 3 for a cluster that survives one member's death).
    pub members: usize,
    /// Serve clients over TLS with a fresh [`TestPki`].
    pub tls: bool,
    /// With TLS: demand a client certificate signed by the CA (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl ClusterOptions {
    /// Plain HTTP, `members` members.
    pub fn new(members: usize) -> Self {
        ClusterOptions {
            members,
            tls: false,
            client_cert_auth: false,
        }
    }

    /// Serves clients over TLS; `client_cert_auth` demands client certificates.
    pub fn with_tls(mut self, client_cert_auth: bool) -> Self {
        self.tls = true;
        self.client_cert_auth = client_cert_auth;
        self
    }
}

/// One member: its name, ports, and its process while it runs (killed with `SIGKILL` on
/// stop, and when the test process dies in any way, so no etcd outlives its test run; a frozen
/// member dies too).
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<ServerProcess>,
}

/// Real etcd members on loopback (see the [module docs](self)).
#[derive(Debug)]
pub struct EtcdCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    pki: Option<(TestPki, PkiFiles)>,
    client_cert_auth: bool,
    root_password: Option<String>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

impl EtcdCluster {
    /// Starts `members` plain-HTTP members and waits until they have a leader.
    ///
    /// # Errors
    /// [`HarnessError::NotInstalled`] when the binary is missing; [`HarnessError::Start`]
    /// with the end of the log when a member exits or the cluster is not healthy within
    /// [`START_DEADLINE`].
    pub async fn start(members: usize) -> Result<Self, HarnessError> {
        Self::start_with(ClusterOptions::new(members)).await
    }

    /// Starts a cluster as `options` say.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub async fn start_with(options: ClusterOptions) -> Result<Self, HarnessError> {
        let binary = etcd_binary()?;
        retry_on_port_clash(
            5,
            || Self::start_once(&binary, &options),
            |e| matches!(e, HarnessError::Start { log, .. } if says_address_in_use(log)),
        )
        .await
    }

    async fn start_once(binary: &Path, options: &ClusterOptions) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetscale-etcd-")
            .tempdir()?;
        let pki = if options.tls {
            let pki = TestPki::new()?;
            let files = pki.write(dir.path())?;
            Some((pki, files))
        } else {
            None
        };
        let mut members = Vec::new();
        for i in 0..options.members.max(1) {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_loopback_port()?,
                peer_port: free_loopback_port()?,
                process: None,
            });
        }
        let mut cluster = EtcdCluster {
            binary: binary.to_path_buf(),
            dir,
            members,
            token: format!("fleetscale-test-{:08x}", rand::random::<u32>()),
            pki,
            client_cert_auth: options.client_cert_auth,
            root_password: None,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn_member(i)?;
        }
        cluster.wait_healthy(START_DEADLINE).await?;
        Ok(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn member_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn_member(&mut self, i: usize) -> Result<(), HarnessError> {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = ServerCommand::new(&self.binary, self.log_path(i))
            .stop_with(StopSignal::Kill)
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", self.member_dir(i).display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        if let Some((_, files)) = &self.pki {
            cmd = cmd
                .arg(format!("--cert-file={}", files.server_cert.display()))
                .arg(format!("--key-file={}", files.server_key.display()));
            if self.client_cert_auth {
                cmd = cmd
                    .arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", files.ca.display()));
            }
        }
        self.members[i].process = Some(cmd.spawn()?);
        Ok(())
    }

    /// The end of member `i`'s log, with the cause lines of a crash kept (for failure
    /// messages).
    pub fn log(&self, i: usize) -> String {
        shorten_log(&std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
    }

    fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("[{}]\n{}", self.members[i].name, self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[i].client_port
        )
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The PEM files, when the cluster serves TLS.
    pub fn pki_files(&self) -> Option<&PkiFiles> {
        self.pki.as_ref().map(|(_, f)| f)
    }

    /// Settings reaching every member: the endpoints, a fresh key prefix (so tests sharing a
    /// cluster do not see each other's keys), and with TLS the CA and the client certificate.
    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(self.endpoints())
            .with_prefix(format!("/test-{:08x}/", rand::random::<u32>()));
        if let Some((_, files)) = &self.pki {
            c = c.with_ca_file(&files.ca);
            if self.client_cert_auth {
                c = c.with_client_cert(&files.client_cert, &files.client_key);
            }
        }
        if let Some(pw) = &self.root_password {
            c.username = Some("root".into());
            c.password = Some(Secret::new(pw.clone()));
        }
        c
    }

    /// The pid of member `i`'s etcd process, when it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref()?.pid()
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), HarnessError> {
        let pid = self.pid(i).ok_or_else(|| HarnessError::Request {
            operation: format!("kill -{signal}"),
            message: format!("member {} is not running", self.members[i].name),
        })?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Request {
                operation: format!("kill -{signal} {pid}"),
                message: format!("{status}"),
            })
        }
    }

    fn stop_member(&mut self, i: usize) {
        drop(self.members[i].process.take());
    }

    /// Kills member `i` with `SIGKILL` (as a crash or a lost host) and waits until it is gone.
    ///
    /// # Errors
    /// The member is not running.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, "KILL")?;
        self.stop_member(i);
        Ok(())
    }

    /// Kills every member (etcd entirely down).
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_some() {
                let _ = self.kill(i);
            }
        }
    }

    /// Freezes member `i` (`SIGSTOP`): it holds its connections but answers nothing.
    ///
    /// # Errors
    /// The member is not running.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, "STOP")
    }

    /// Resumes a frozen member (`SIGCONT`).
    ///
    /// # Errors
    /// The member is not running.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, "CONT")
    }

    /// Starts member `i` again on its data directory and ports (after [`EtcdCluster::kill`]),
    /// without waiting for it.
    ///
    /// # Errors
    /// The process cannot be spawned.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].process.is_some() {
            return Ok(());
        }
        self.spawn_member(i)
    }

    /// Restarts every stopped member and waits until the cluster is healthy.
    ///
    /// # Errors
    /// As [`EtcdCluster::wait_healthy`].
    pub async fn restart_all(&mut self) -> Result<(), HarnessError> {
        for i in 0..self.members.len() {
            self.restart(i)?;
        }
        self.wait_healthy(START_DEADLINE).await
    }

    /// Whether member `i`'s process runs (it may be frozen).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].process.is_some()
    }

    fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2));
        if let Some((pki, _)) = &self.pki {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(pki.ca_pem.clone()));
            if self.client_cert_auth {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    pki.client_cert_pem.clone(),
                    pki.client_key_pem.clone(),
                ));
            }
            o = o.with_tls(tls);
        }
        if let Some(pw) = &self.root_password {
            o = o.with_user("root", pw.clone());
        }
        o
    }

    /// A client of the harness itself (root when authentication is on).
    ///
    /// # Errors
    /// [`HarnessError::Request`] when it cannot connect.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        let endpoints: Vec<String> = (0..self.members.len())
            .filter(|i| self.is_running(*i))
            .map(|i| self.endpoint(i))
            .collect();
        Client::connect(endpoints, Some(self.connect_options()))
            .await
            .map_err(|e| HarnessError::Request {
                operation: "connect".into(),
                message: e.to_string(),
            })
    }

    /// Waits until every running member answers and knows a leader.
    ///
    /// # Errors
    /// [`HarnessError::Start`] with the logs when a member exits or `deadline` passes.
    pub async fn wait_healthy(&mut self, deadline: Duration) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let mut healthy = true;
            let mut last = String::new();
            for i in 0..self.members.len() {
                let Some(process) = self.members[i].process.as_ref() else {
                    continue;
                };
                if let Some(status) = process.exited() {
                    let message = format!("member {} exited ({status})", self.members[i].name);
                    self.members[i].process = None;
                    return Err(HarnessError::Start {
                        message,
                        log: self.log(i),
                    });
                }
                let ok = async {
                    let mut c = Client::connect([self.endpoint(i)], Some(self.connect_options()))
                        .await
                        .map_err(|e| e.to_string())?;
                    let s = c.status().await.map_err(|e| e.to_string())?;
                    if s.leader() == 0 {
                        return Err("no leader yet".to_string());
                    }
                    Ok::<(), String>(())
                };
                if let Err(e) = tokio::time::timeout(Duration::from_secs(3), ok)
                    .await
                    .unwrap_or_else(|_| Err("no answer".into()))
                {
                    healthy = false;
                    last = format!("member {}: {e}", self.members[i].name);
                }
            }
            if healthy {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(HarnessError::Start {
                    message: format!("not healthy after {deadline:?}: {last}"),
                    log: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Turns etcd's authentication on with a `root` user of this password; from then on
    /// [`EtcdCluster::config`] and [`EtcdCluster::client`] log in as root.
    ///
    /// # Errors
    /// [`HarnessError::Request`] when etcd refuses.
    pub async fn enable_auth(&mut self, root_password: &str) -> Result<(), HarnessError> {
        let mut c = self.client().await?;
        let req = |op: &str| {
            let op = op.to_string();
            move |e: etcd_client::Error| HarnessError::Request {
                operation: op,
                message: e.to_string(),
            }
        };
        c.user_add("root", root_password, None)
            .await
            .map_err(req("user add root"))?;
        // The root role exists implicitly; granting it is what etcd demands before enabling.
        c.user_grant_role("root", "root")
            .await
            .map_err(req("user grant-role root root"))?;
        c.auth_enable().await.map_err(req("auth enable"))?;
        self.root_password = Some(root_password.to_string());
        Ok(())
    }

    /// Adds a user allowed to read and write keys under `prefix` only (authentication must
    /// be on).
    ///
    /// # Errors
    /// [`HarnessError::Request`] when etcd refuses.
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        prefix: &str,
    ) -> Result<(), HarnessError> {
        let mut c = self.client().await?;
        let req = |op: String| {
            move |e: etcd_client::Error| HarnessError::Request {
                operation: op,
                message: e.to_string(),
            }
        };
        c.role_add(name)
            .await
            .map_err(req(format!("role add {name}")))?;
        c.role_grant_permission(name, Permission::read_write(prefix).with_prefix())
            .await
            .map_err(req(format!("role grant-permission {name}")))?;
        c.user_add(name, password, None)
            .await
            .map_err(req(format!("user add {name}")))?;
        c.user_grant_role(name, name)
            .await
            .map_err(req(format!("user grant-role {name}")))?;
        Ok(())
    }
}

/// A TCP proxy on loopback that can cut the network between a client and a server (a
/// partition): while cut, bytes in either direction are held, not delivered, on existing and
/// new connections; [`TcpProxy::heal`] delivers them late, as TCP retransmission would.
/// Stopped on drop.
#[derive(Debug)]
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TcpProxy {
    /// Starts a proxy to `target` (`host:port`) on a free loopback port, on the current tokio
    /// runtime.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start(target: &str) -> Result<Self, HarnessError> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let target = target.to_string();
        let (cut2, stop2) = (cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let (cut, stop, target) = (cut2.clone(), stop2.clone(), target.clone());
                tokio::spawn(async move {
                    while cut.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = pump(ri, wo, cut.clone());
                    let b = pump(ro, wi, cut);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = async { tokio::join!(a, b) } => {}
                    }
                });
            }
        });
        Ok(TcpProxy { addr, cut, stop })
    }

    /// The proxy's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or `https://` when `tls`).
    pub fn url(&self, tls: bool) -> String {
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    /// Stops delivering bytes.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Delivers again (held bytes first).
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        while cut.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
