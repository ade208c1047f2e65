//! [`MotoServer`]: the real `moto_server`, started and stopped by a test.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::Client;
use fleetscale_core::testing::server_process::{
    find_program, free_loopback_port, retry_on_port_clash, says_address_in_use, ServerCommand,
    ServerProcess, StopSignal,
};

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
    find_program(
        "FLEETSCALE_MOTO_SERVER",
        "moto_server",
        &[venv_binary()],
        &[],
    )
    .ok_or(HarnessError::NotInstalled)
}

/// A running `moto_server` on `127.0.0.1:<free port>`, with its log in a temporary directory.
/// Killed on drop (SIGKILL: moto keeps its state in memory only, and its web server takes
/// seconds to honour SIGTERM), and also when the test process dies in any way.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    process: ServerProcess,
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    ///
    /// # Errors
    /// [`HarnessError::NotInstalled`] when it is missing; [`HarnessError::Start`] with the end
    /// of its log when it exits or does not answer within [`DEFAULT_DEADLINE`].
    pub async fn start() -> Result<Self, HarnessError> {
        let binary = moto_server_binary()?;
        retry_on_port_clash(
            5,
            || Self::start_once(&binary),
            |e| matches!(e, HarnessError::Start { log, .. } if says_address_in_use(log)),
        )
        .await
    }

    async fn start_once(binary: &Path) -> Result<Self, HarnessError> {
        let dir = std::env::temp_dir().join(format!(
            "fleetscale-moto-{}-{:x}",
            std::process::id(),
            crate::random::u64()
        ));
        fs::create_dir_all(&dir)?;
        let port = free_loopback_port()?;
        let process = ServerCommand::new(binary, dir.join("moto.log"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stop_with(StopSignal::Kill)
            .remove_dir_on_stop(&dir)
            .spawn()?;
        let server = MotoServer { port, process };
        server
            .process
            .wait_http_ready(
                DEFAULT_DEADLINE,
                SocketAddr::from(([127, 0, 0, 1], port)),
                "/moto-api/data.json",
            )
            .await
            .map_err(|e| HarnessError::Start {
                message: format!("moto_server {e}"),
                log: e.log,
            })?;
        Ok(server)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the EC2 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of moto's log, with the cause lines of a crash kept (for failure messages).
    pub fn log(&self) -> String {
        self.process.log_tail()
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
        self.process.stop();
    }
}
