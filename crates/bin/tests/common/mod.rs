//! Helpers of the end-to-end tests: run a built binary with captured output, wait with
//! deadlines, start the fake Machines API and seed an app the way a user does on Fly.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest};
use fleetscale_fly::{ClientConfig, FlyMachine, MachinesClient, Token};
use serde_json::{json, Value};

/// Deadline for anything a test waits for: generous, a loaded 2-core machine is slow.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running binary whose stdout and stderr lines are collected as they arrive.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    lines
}

impl Proc {
    /// Spawns `cmd` with piped output.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn binary");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stderr line that is a JSON object.
    pub fn json_logs(&self) -> Vec<Value> {
        self.stderr_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Sends a signal with `kill(1)` (the tests use no `unsafe`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(200));
                return s;
            }
            if t0.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {deadline:?}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to completion and returns (status, stdout, stderr).
pub fn run(mut cmd: Command) -> (ExitStatus, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after [`DEADLINE`] with `what`
/// and the last state described by `describe`.
pub async fn eventually<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}\n{}", describe());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fake Machines API on a free loopback port, requiring `token`.
pub async fn fake_fly(token: &str) -> FakeFlyServer {
    FakeFlyServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            token: Some(Token::new(token)),
            ..FakeConfig::default()
        },
    )
    .await
    .expect("bind fake Machines API")
}

pub fn client(server: &FakeFlyServer, token: &str) -> MachinesClient {
    MachinesClient::new(
        Some(Token::new(token)),
        ClientConfig::default().with_base_url(server.url()),
    )
    .unwrap()
}

/// What `fly deploy` would give the first machine of a process group `app`.
pub fn app_config() -> Value {
    json!({
        "image": "registry.fly.io/blueprint:deployment-1",
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "tcp", "internal_port": 8080,
                      "autostop": "stop", "autostart": true, "min_machines_running": 0,
                      "concurrency": {"type": "requests", "soft_limit": 20},
                      "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
        "metadata": {"fly_process_group": "app", "fly_release_id": "rel-1"}
    })
}

/// Creates an app and its first (started) machine with the same requests as against Fly.
pub async fn seed_app(client: &MachinesClient, app: &str) -> FlyMachine {
    client
        .create_app(&CreateAppRequest {
            app_name: app.into(),
            org_slug: "my-org".into(),
            network: None,
        })
        .await
        .expect("create app");
    client
        .create_machine(
            app,
            &CreateMachineRequest {
                config: app_config(),
                region: Some("iad".into()),
                ..Default::default()
            },
        )
        .await
        .expect("create first machine")
}
