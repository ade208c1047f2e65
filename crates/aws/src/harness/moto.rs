//! [`MotoServer`]: the real `moto_server`, started and stopped by a test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::Client;

use super::HarnessError;
use crate::{Ec2PoolConfig, RetrySettings};

/// The message of [`HarnessError::NotInstalled`].
pub const INSTALL_HINT: &str = "moto_server not found: run scripts/install-test-deps.sh \
     (installs PyPI moto[server] into the virtual environment .test-deps/moto of the repository), \
     or set FLEETSCALE_MOTO_SERVER=/path/to/moto_server";

/// How long to wait for moto to answer. Generous: importing moto takes seconds on a loaded
/// 2-core machine, and this is a deadline, not an expectation.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(90);

/// The region the harness's clients use (moto serves any).
pub const TEST_REGION: &str = "us-east-1";

/// Where `scripts/install-test-deps.sh` puts `moto_server`: the virtual environment
/// `.test-deps/moto` at the root of the repository (ignored by git).
fn venv_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.test-deps/moto/bin/moto_server")
}

/// Finds `moto_server`: `$FLEETSCALE_MOTO_SERVER` if set, else the repository's
/// `.test-deps/moto/bin/moto_server`, else `moto_server` on `PATH`.
///
/// # Errors
/// [`HarnessError::NotInstalled`] (with [`INSTALL_HINT`]) when none exists.
pub fn moto_server_binary() -> Result<PathBuf, HarnessError> {
    if let Some(explicit) = std::env::var_os("FLEETSCALE_MOTO_SERVER") {
        let p = PathBuf::from(explicit);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::NotInstalled)
        };
    }
    let venv = venv_binary();
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("moto_server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(HarnessError::NotInstalled)
}

/// A watchdog around moto: the shell starts it in the background and kills it (SIGKILL: moto
/// keeps its state in memory only, and its web server takes seconds to honour SIGTERM) as soon
/// as our end of its stdin closes, which happens on [`MotoServer`]'s drop and also when the test
/// process dies in any way, so no moto outlives its test run.
const WATCHDOG: &str = r#"
exec 3<&0
"$@" </dev/null >"$DIR/moto.log" 2>&1 &
p=$!
( read _ <&3; : >"$DIR/.stopping"; kill -KILL "$p" 2>/dev/null ) </dev/null &
w=$!
wait "$p"
rc=$?
kill "$w" 2>/dev/null
if [ -e "$DIR/.stopping" ]; then rm -rf -- "$DIR"; fi
exit "$rc"
"#;

/// A running `moto_server` on `127.0.0.1:<free port>`, with its log in a temporary directory.
/// Killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    ///
    /// # Errors
    /// [`HarnessError::NotInstalled`] when it is missing; [`HarnessError::Start`] with the end
    /// of its log when it exits or does not answer within [`DEFAULT_DEADLINE`].
    pub async fn start() -> Result<Self, HarnessError> {
        let binary = moto_server_binary()?;
        let mut last = None;
        // The free port is found by binding and releasing it; another process may take it in
        // between, so retry a few times on "address already in use".
        for _ in 0..5 {
            match Self::start_once(&binary).await {
                Ok(server) => return Ok(server),
                Err(HarnessError::Start { log, message })
                    if log.to_ascii_lowercase().contains("address already in use") =>
                {
                    last = Some(HarnessError::Start { log, message });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(HarnessError::Start {
            message: "could not find a free port".into(),
            log: String::new(),
        }))
    }

    async fn start_once(binary: &Path) -> Result<Self, HarnessError> {
        let dir = std::env::temp_dir().join(format!(
            "fleetscale-moto-{}-{:x}",
            std::process::id(),
            crate::random::u64()
        ));
        fs::create_dir_all(&dir)?;
        let port = super::server::free_port()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("moto-watchdog")
            .arg(binary)
            .arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = MotoServer {
            port,
            stdin: None,
            child: Some(child),
            dir,
        };
        server.stdin = server.child.as_mut().and_then(|c| c.stdin.take());
        server.wait_ready(DEFAULT_DEADLINE).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, deadline: Duration) -> Result<(), HarnessError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| HarnessError::Setup(e.to_string()))?;
        let started = Instant::now();
        let url = format!("{}/moto-api/data.json", self.endpoint());
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(HarnessError::Start {
                        message: format!("moto_server exited early ({status})"),
                        log: self.log(),
                    });
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > deadline {
                return Err(HarnessError::Start {
                    message: format!("moto_server not answering after {deadline:?}"),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the EC2 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of moto's log (for failure messages).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.dir.join("moto.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// An AWS configuration loader for `endpoint` (this server's, or a proxy's in front of it)
    /// with static test credentials and [`TEST_REGION`]: nothing is read from the environment
    /// that could reach a real account.
    pub fn config_loader_for(endpoint: &str) -> ConfigLoader {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(TEST_REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                "AKIAFLEETSCALETEST",
                "fleetscale-test-secret",
                None,
                None,
                "fleetscale-moto-harness",
            ))
    }

    /// [`MotoServer::config_loader_for`] this server.
    pub fn config_loader(&self) -> ConfigLoader {
        Self::config_loader_for(&self.endpoint())
    }

    /// A plain EC2 client of this server, for test setup and checks.
    pub async fn client(&self) -> Client {
        Client::new(&self.config_loader().load().await)
    }

    /// An AMI moto knows (the first of its Amazon images, by id).
    ///
    /// # Errors
    /// [`HarnessError::Setup`] when moto lists none.
    pub async fn image_id(&self) -> Result<String, HarnessError> {
        let out = self
            .client()
            .await
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .map_err(|e| {
                HarnessError::Setup(aws_sdk_ec2::error::DisplayErrorContext(e).to_string())
            })?;
        out.images()
            .iter()
            .filter_map(|i| i.image_id())
            .min()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Setup("moto lists no Amazon images".into()))
    }

    /// A pool configuration on `endpoint` (this server's or a proxy's): explicit settings (an
    /// AMI of moto's, `t3.micro`), [`TEST_REGION`], and quick retries (10 ms to 100 ms).
    ///
    /// # Errors
    /// As [`MotoServer::image_id`].
    pub async fn pool_config_for(
        &self,
        pool: &str,
        endpoint: &str,
    ) -> Result<Ec2PoolConfig, HarnessError> {
        let mut c = Ec2PoolConfig::new(pool);
        c.region = Some(TEST_REGION.into());
        c.endpoint = Some(endpoint.into());
        c.image_id = Some(self.image_id().await?);
        c.instance_type = Some("t3.micro".into());
        c.retry = RetrySettings {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        };
        Ok(c)
    }

    /// [`MotoServer::pool_config_for`] this server.
    ///
    /// # Errors
    /// As [`MotoServer::image_id`].
    pub async fn pool_config(&self, pool: &str) -> Result<Ec2PoolConfig, HarnessError> {
        self.pool_config_for(pool, &self.endpoint()).await
    }

    /// Stops the server now (what drop does).
    pub fn stop(&mut self) {
        // Closing stdin tells the watchdog to SIGTERM moto and clean up.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > Duration::from_secs(10) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
