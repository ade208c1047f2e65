//! [`EmulatedHosts`]: a [`HostRunner`] that runs the `weave` script's commands against the
//! emulator, so `WeaveMembership::join`/`leave` can be tested end to end without hosts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Emulator, FakeError, Role};
use crate::host::{HostRunner, Output};
use crate::WeaveError;

/// Runs `weave launch`, `weave reset`, `weave stop` and `weave prime` on emulated hosts.
///
/// A host is named by the address or nickname of a peer registered with
/// [`Emulator::add_peer`]. `weave launch` starts that peer's router with the listed targets;
/// it fails (exit 1) when the router is already running, or when the `--ipalloc-init=observer`
/// flag does not match the role the peer was registered with (so a dynamic peer launched
/// without the observer flag is caught). `weave reset` is `DELETE /peer`, then stop and wipe
/// of the persisted data, as the script does. Unknown hosts exit 255, like `ssh` does when it
/// cannot connect.
#[derive(Clone, Debug)]
pub struct EmulatedHosts {
    emu: Emulator,
    log: Arc<Mutex<Vec<Command>>>,
}

/// A command run on an emulated host: `(host, argv)`.
pub type Command = (String, Vec<String>);

fn out(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    }
}

impl EmulatedHosts {
    /// Hosts backed by this emulator.
    pub fn new(emu: Emulator) -> Self {
        EmulatedHosts {
            emu,
            log: Arc::default(),
        }
    }

    /// Every command run so far, as `(host, argv)`.
    pub fn commands(&self) -> Vec<Command> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl HostRunner for EmulatedHosts {
    async fn run(&self, host: &str, argv: &[String]) -> Result<Output, WeaveError> {
        if let Ok(mut l) = self.log.lock() {
            l.push((host.to_string(), argv.to_vec()));
        }
        let Some(spec) = self
            .emu
            .peer_by_address(host)
            .or_else(|| self.emu.peer_by_nickname(host))
        else {
            return Ok(out(
                255,
                "",
                &format!("ssh: Could not resolve hostname {host}\n"),
            ));
        };
        let is_weave = argv
            .first()
            .is_some_and(|p| p == "weave" || p.ends_with("/weave"));
        let sub = argv.get(1).map(String::as_str);
        if !is_weave {
            return Ok(out(
                127,
                "",
                &format!("{}: command not found\n", argv.join(" ")),
            ));
        }
        match sub {
            Some("launch") => {
                let observer = argv.iter().any(|a| a == "--ipalloc-init=observer");
                let role = self.emu.w().routers.get(&spec.name).map(|r| r.role);
                if role
                    != Some(if observer {
                        Role::Observer
                    } else {
                        Role::Fixed
                    })
                {
                    return Ok(out(
                        1,
                        "",
                        "emulator: launch flags do not match the peer's role\n",
                    ));
                }
                let targets: Vec<String> = argv[2..]
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .cloned()
                    .collect();
                match self.emu.launch(spec.name, targets).await {
                    Ok(_) => Ok(out(0, "", "")),
                    Err(FakeError::AlreadyRunning(_)) => {
                        Ok(out(1, "", "weave is already running.\n"))
                    }
                    Err(e) => Ok(out(1, "", &format!("{e}\n"))),
                }
            }
            Some("reset") => match self.emu.weave_reset(spec.name) {
                Ok(_) => Ok(out(0, "", "")),
                Err(e) => Ok(out(1, "", &format!("{e}\n"))),
            },
            Some("stop") => match self.emu.stop(spec.name) {
                Ok(()) => Ok(out(0, "", "")),
                Err(e) => Ok(out(1, "", &format!("{e}\n"))),
            },
            Some("prime") => loop {
                let r = {
                    let world = Arc::clone(&self.emu.world);
                    let mut w = self.emu.w();
                    w.ensure_ring(spec.name, &world)
                };
                match r {
                    Ok(()) => return Ok(out(0, "", "")),
                    Err(FakeError::WouldBlock(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => return Ok(out(1, "", &format!("{e}\n"))),
                }
            },
            _ => Ok(out(1, "", "emulator: unsupported weave command\n")),
        }
    }
}
