//! Host actions: running a command (`weave launch`, `weave reset`) on a host.
//!
//! [`WeaveMembership`](crate::WeaveMembership) uses a [`HostRunner`] to launch a joining peer
//! and, when the leaver's router API is not directly reachable, to run `weave reset` on it.
//! Two implementations: [`LocalRunner`] (this machine, `tokio::process`) and [`SshRunner`]
//! (the system `ssh` client, non-interactive).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::truncate;
use crate::WeaveError;

/// What a command printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `Ok(self)` on success, else [`WeaveError::CommandFailed`] naming the host and command.
    pub fn check(self, host: &str, argv: &[String]) -> Result<Output, WeaveError> {
        if self.success() {
            Ok(self)
        } else {
            Err(WeaveError::CommandFailed {
                host: host.to_string(),
                command: shell_join(argv),
                code: self.code,
                stderr: truncate(&self.stderr),
            })
        }
    }
}

/// Runs a command on a host.
///
/// # Contract
/// - `argv[0]` is the program, the rest its arguments; implementations never pass them
///   through a shell unquoted.
/// - Returns `Ok(Output)` whenever the command ran, whatever its exit code (use
///   [`Output::check`]); `Err` when it could not be started ([`WeaveError::Spawn`]) or did not
///   finish within the runner's timeout ([`WeaveError::Timeout`]; the process is killed).
/// - Cancellation-safe: dropping the future kills the local process (for SSH: the local `ssh`
///   client, which closes the session; the remote command gets `SIGHUP` only if it has a tty,
///   so remote commands should be idempotent — `weave launch` refuses to start twice and
///   `weave reset` of a reset peer is a no-op).
#[async_trait]
pub trait HostRunner: Send + Sync {
    /// Runs `argv` on `host`.
    async fn run(&self, host: &str, argv: &[String]) -> Result<Output, WeaveError>;
}

#[async_trait]
impl<T: HostRunner + ?Sized> HostRunner for std::sync::Arc<T> {
    async fn run(&self, host: &str, argv: &[String]) -> Result<Output, WeaveError> {
        (**self).run(host, argv).await
    }
}

async fn run_process(host: &str, argv: &[String], timeout: Duration) -> Result<Output, WeaveError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| WeaveError::config("empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| WeaveError::Spawn {
        host: host.to_string(),
        program: program.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        // The child (moved into the dropped future) is killed by kill_on_drop.
        Err(_) => Err(WeaveError::Timeout {
            operation: format!("`{}` on {host}", shell_join(argv)),
            after: timeout,
        }),
        Ok(Err(source)) => Err(WeaveError::Spawn {
            host: host.to_string(),
            program: program.clone(),
            source,
        }),
        Ok(Ok(out)) => Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}

/// Runs commands on **this** machine with `tokio::process` (the `host` argument only labels
/// errors). The process gets no stdin, is killed when the timeout passes or the future is
/// dropped.
#[derive(Clone, Debug)]
pub struct LocalRunner {
    timeout: Duration,
}

impl LocalRunner {
    /// A runner whose commands are killed after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        LocalRunner { timeout }
    }
}

impl Default for LocalRunner {
    /// Five minutes: `weave launch` may pull images.
    fn default() -> Self {
        LocalRunner::new(Duration::from_secs(300))
    }
}

#[async_trait]
impl HostRunner for LocalRunner {
    async fn run(&self, host: &str, argv: &[String]) -> Result<Output, WeaveError> {
        run_process(host, argv, self.timeout).await
    }
}

/// Quotes one word for a POSIX shell: bare when it only has safe characters, else in single
/// quotes with each `'` written as `'\''`.
///
/// ```
/// use fleetscale_weave::host::shell_quote;
/// assert_eq!(shell_quote("10.0.0.1"), "10.0.0.1");
/// assert_eq!(shell_quote("a b"), "'a b'");
/// assert_eq!(shell_quote("it's"), "'it'\\''s'");
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Joins words into one shell command line, each quoted with [`shell_quote`].
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs commands on remote hosts with the system OpenSSH client.
///
/// The local command is
/// `ssh -o BatchMode=yes -o ConnectTimeout=<s> [-p PORT] [-i IDENTITY] [-o OPT]... [USER@]HOST -- <remote command>`:
/// - `BatchMode=yes`: never prompt for a password or host key; fail instead.
/// - `ConnectTimeout`: bounds the TCP/SSH handshake; the whole command is bounded by the
///   runner's timeout (the local `ssh` is killed when it passes).
/// - `--` ends `ssh`'s options, and a host starting with `-` is rejected, so nothing in the
///   host or command can be taken as an `ssh` option.
/// - `ssh` joins its remote arguments with spaces and hands the string to the remote user's
///   shell, so the remote command is sent as **one** argument in which every `argv` element is
///   shell-quoted ([`shell_join`]): the remote shell sees exactly `argv`.
///
/// Host keys and credentials come from the usual OpenSSH configuration (`~/.ssh/config`,
/// agent, `known_hosts`); pass `-o` options with [`SshRunner::with_option`].
#[derive(Clone, Debug)]
pub struct SshRunner {
    program: String,
    user: Option<String>,
    port: Option<u16>,
    identity: Option<String>,
    options: Vec<String>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl Default for SshRunner {
    fn default() -> Self {
        SshRunner {
            program: "ssh".to_string(),
            user: None,
            port: None,
            identity: None,
            options: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
        }
    }
}

impl SshRunner {
    /// A runner with the defaults: `ssh` from `PATH`, 10 s connect timeout, 5 min overall.
    pub fn new() -> Self {
        Self::default()
    }

    /// The remote user (`user@host`).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The SSH port (`-p`).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// An identity file (`-i`).
    pub fn with_identity(mut self, path: impl Into<String>) -> Self {
        self.identity = Some(path.into());
        self
    }

    /// An extra `-o` option, e.g. `StrictHostKeyChecking=accept-new`.
    pub fn with_option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    /// The `ssh` program (default `ssh` from `PATH`).
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// `ConnectTimeout` (whole seconds, at least 1).
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The overall timeout of one command.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The exact local argument list that [`HostRunner::run`] executes for `argv` on `host`.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for an empty `argv`, or a host or user that is empty, starts with
    /// `-` or contains whitespace or `@` (user).
    pub fn command(&self, host: &str, argv: &[String]) -> Result<Vec<String>, WeaveError> {
        if argv.is_empty() {
            return Err(WeaveError::config("empty command"));
        }
        let bad = |s: &str| s.is_empty() || s.starts_with('-') || s.contains(char::is_whitespace);
        if bad(host) {
            return Err(WeaveError::config(format!("invalid ssh host {host:?}")));
        }
        let mut cmd = vec![
            self.program.clone(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)),
        ];
        if let Some(p) = self.port {
            cmd.push("-p".to_string());
            cmd.push(p.to_string());
        }
        if let Some(i) = &self.identity {
            cmd.push("-i".to_string());
            cmd.push(i.clone());
        }
        for o in &self.options {
            cmd.push("-o".to_string());
            cmd.push(o.clone());
        }
        let target = match &self.user {
            Some(u) if bad(u) || u.contains('@') => {
                return Err(WeaveError::config(format!("invalid ssh user {u:?}")))
            }
            Some(u) => format!("{u}@{host}"),
            None => host.to_string(),
        };
        cmd.push(target);
        cmd.push("--".to_string());
        cmd.push(shell_join(argv));
        Ok(cmd)
    }
}

#[async_trait]
impl HostRunner for SshRunner {
    async fn run(&self, host: &str, argv: &[String]) -> Result<Output, WeaveError> {
        let cmd = self.command(host, argv)?;
        run_process(host, &cmd, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("--ipalloc-init=observer"),
            "--ipalloc-init=observer"
        );
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote("a;b"), "'a;b'");
        assert_eq!(shell_quote("x\ny"), "'x\ny'");
        assert_eq!(
            shell_join(&v(&["weave", "launch", "a b", "c'd"])),
            "weave launch 'a b' 'c'\\''d'"
        );
    }

    #[test]
    fn ssh_command_construction() {
        let r = SshRunner::new()
            .with_user("ops")
            .with_port(2222)
            .with_identity("/k/id")
            .with_option("StrictHostKeyChecking=accept-new")
            .with_connect_timeout(Duration::from_secs(7));
        let c = r
            .command(
                "dyn4",
                &v(&["weave", "launch", "--no-restart", "10.0.0.1", "x y"]),
            )
            .unwrap();
        assert_eq!(
            c,
            v(&[
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=7",
                "-p",
                "2222",
                "-i",
                "/k/id",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "ops@dyn4",
                "--",
                "weave launch --no-restart 10.0.0.1 'x y'"
            ])
        );
        assert!(r.command("-oProxyCommand=x", &v(&["true"])).is_err());
        assert!(r.command("a b", &v(&["true"])).is_err());
        assert!(r.command("h", &[]).is_err());
        assert!(SshRunner::new()
            .with_user("a@b")
            .command("h", &v(&["true"]))
            .is_err());
        assert_eq!(
            SshRunner::new().command("h", &v(&["true"])).unwrap()[5],
            "h"
        );
    }
}
