//! The fake Machines API in a process of its own, so that a benchmark's resident set size is
//! the engine's alone. The serving process ([`serve_stdio`]) prints the fake's URL on its
//! first stdout line, then answers one command per stdin line with one stdout line:
//!
//! | command | effect | answer |
//! |---|---|---|
//! | `seed APPS MACHINES` | creates the apps through the API ([`fleet::seed`]) | `ok SECONDS` |
//! | `realistic LATENCY_MS` | Fly's rate limits, transitions, latency on every request | `ok` |
//! | `clear` | empties the request log | `ok` |
//! | `summary` | the request log since `clear` | `ok` + [`RequestSummary::to_line`] + ` cpu=NANOS` |
//! | `machines APPS` | machines not destroyed in the first `APPS` apps | `ok COUNT` |
//! | `quit` | shuts the server down and exits | `ok` |
//!
//! A command that cannot be parsed or fails is answered `error MESSAGE`; the controlling
//! side ([`RemoteFake`]) turns that into an error. `cpu` is the CPU time of the serving
//! process's `fake-fly` threads so far (nanoseconds).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fleetscale_fly::fake::{
    Delays, FakeConfig, FakeFly, FakeFlyServer, FakeRateLimits, Fault, FaultKind,
};
use fleetscale_fly::{ClientConfig, FlyState, MachinesClient, PacingConfig};

use crate::fleet::{self, RequestSummary};
use crate::procstat::thread_cpu;

/// Turns on the measured conditions of the engine benchmarks: `latency` on every request
/// (none when zero), Fly's rate limits and machine transitions that take time; clears faults
/// and the request log.
pub fn realistic(fake: &FakeFly, latency: Duration) {
    fake.set_delays(Delays::default());
    fake.set_rate_limits(Some(FakeRateLimits::default()));
    fake.clear_faults();
    if !latency.is_zero() {
        fake.inject(Fault::new(FaultKind::Latency(latency)).times(u32::MAX));
    }
    fake.clear_request_log();
}

/// Serves the fake on loopback with `threads` runtime threads named `fake-fly`, reading
/// commands from stdin until `quit` or end of input (see the [module docs](self)).
///
/// # Errors
/// When the runtime cannot be built, the port cannot be bound or stdout is closed.
pub fn serve_stdio(threads: usize) -> std::io::Result<()> {
    let rt = crate::runtime(threads, "fake-fly")?;
    let server = rt.block_on(FakeFlyServer::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        FakeConfig::instant(),
    ))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.url())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let answer = rt.block_on(command(&server, line.trim()));
        let quit = line.trim() == "quit";
        match answer {
            Ok(a) => writeln!(out, "ok{}{a}", if a.is_empty() { "" } else { " " })?,
            Err(e) => writeln!(out, "error {}", e.replace('\n', " "))?,
        }
        out.flush()?;
        if quit {
            break;
        }
    }
    rt.block_on(server.shutdown());
    Ok(())
}

fn count(arg: Option<&str>, what: &str) -> Result<usize, String> {
    arg.ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|e| format!("{what}: {e}"))
}

async fn command(server: &FakeFlyServer, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let fake = server.fake();
    match words.next() {
        Some("seed") => {
            let apps = count(words.next(), "app count")?;
            let machines = count(words.next(), "machine count")?;
            let client = MachinesClient::new(
                None,
                ClientConfig {
                    base_url: server.url(),
                    pacing: PacingConfig::disabled(),
                    ..ClientConfig::default()
                },
            )
            .map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            fleet::seed(&client, apps, machines, 32)
                .await
                .map_err(|e| format!("seeding: {e}"))?;
            Ok(format!("{:.3}", t0.elapsed().as_secs_f64()))
        }
        Some("realistic") => {
            let latency = Duration::from_millis(count(words.next(), "latency")? as u64);
            realistic(fake, latency);
            Ok(String::new())
        }
        Some("clear") => {
            fake.clear_request_log();
            Ok(String::new())
        }
        Some("summary") => Ok(format!(
            "{} cpu={}",
            RequestSummary::of(&fake.request_log()).to_line(),
            thread_cpu("fake-fly").as_nanos()
        )),
        Some("machines") => {
            let apps = count(words.next(), "app count")?;
            let n: usize = (0..apps)
                .map(|i| {
                    fake.machines(&fleet::app_name(i))
                        .iter()
                        .filter(|m| m.state != FlyState::Destroyed)
                        .count()
                })
                .sum();
            Ok(n.to_string())
        }
        Some("quit") => Ok(String::new()),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// The controlling side: a serving process started by [`RemoteFake::spawn`].
#[derive(Debug)]
pub struct RemoteFake {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl RemoteFake {
    /// Starts `command` (which must end up in [`serve_stdio`]) and reads the fake's URL.
    ///
    /// # Errors
    /// When the process cannot be started or does not print a URL.
    pub fn spawn(mut command: Command) -> Result<RemoteFake, String> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the fake's process: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        let mut url = String::new();
        stdout
            .read_line(&mut url)
            .map_err(|e| format!("read the fake's URL: {e}"))?;
        let url = url.trim().to_owned();
        if !url.starts_with("http://") {
            let _ = child.kill();
            return Err(format!("the fake's process printed {url:?}, not a URL"));
        }
        Ok(RemoteFake {
            child,
            stdin,
            stdout,
            url,
        })
    }

    /// The fake's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one command and returns its answer after `ok`.
    ///
    /// # Errors
    /// An `error` answer, or a broken pipe.
    pub fn call(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("send {line:?}: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("send {line:?}: {e}"))?;
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .map_err(|e| format!("answer to {line:?}: {e}"))?;
        let answer = answer.trim_end();
        match answer.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim_start().to_owned()),
            None => Err(format!("answer to {line:?}: {answer:?}")),
        }
    }

    /// The request log since the last `clear` and the fake's CPU time so far.
    ///
    /// # Errors
    /// As [`RemoteFake::call`], or an answer that does not parse.
    pub fn summary(&mut self) -> Result<(RequestSummary, Duration), String> {
        let answer = self.call("summary")?;
        let (line, cpu) = answer
            .rsplit_once(" cpu=")
            .ok_or_else(|| format!("summary without cpu: {answer:?}"))?;
        let cpu: u64 = cpu.parse().map_err(|e| format!("cpu {cpu:?}: {e}"))?;
        Ok((RequestSummary::from_line(line)?, Duration::from_nanos(cpu)))
    }

    /// Stops the serving process and waits for it.
    pub fn quit(mut self) {
        if self.call("quit").is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
