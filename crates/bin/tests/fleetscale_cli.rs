//! The built `fleetscale` as a user runs it: `demo`, `eval` and `run` on a TOML file against
//! the fake Machines API, `version`, `--help`.

mod common;

use std::time::Duration;

use common::{eventually, fleetscale, on_fly, run, Proc};
use fleetscale_fly::FlyState;

const TOKEN: &str = "FlyV1 fm2_cli-token";
/// The message of the log line that carries the `/metrics` address of `fleetscale run`.
const SERVING: &str = "serving /metrics and /healthz";

#[test]
fn demo_scales_out_and_back_in() {
    let (status, out, err) = run(fleetscale().args(["demo", "--duration", "5s"]));
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    // Not a terminal: plain lines, no escape sequences.
    assert!(!out.contains('\x1b'), "{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with("t=")).collect();
    assert!(frames.len() >= 10, "{out}");
    let machines = |l: &str| -> usize {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("machines="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let peak = frames.iter().map(|l| machines(l)).max().unwrap();
    let last = machines(frames.last().unwrap());
    assert!(peak >= 3, "scaled out to {peak}\n{out}");
    assert!(peak <= 10, "never more than 10\n{out}");
    assert!(last < peak, "scaled back in\n{out}");
    assert!(out.contains("summary"), "{out}");
    assert!(out.contains("Machines API calls: "), "{out}");
    assert!(out.contains("reaction time"), "{out}");
    assert!(out.contains("result: scaled out and back in"), "{out}");
}

#[test]
fn version_and_help_teach() {
    let (status, out, _) = run(fleetscale().arg("version"));
    assert!(status.success());
    assert!(out.starts_with("fleetscale "), "{out}");
    let (status, out, _) = run(fleetscale().arg("--help"));
    assert!(status.success());
    assert!(out.contains("fleetscale demo"), "{out}");
    assert!(out.contains("Examples:"), "{out}");
    let (status, out, _) = run(fleetscale().args(["run", "--help"]));
    assert!(status.success());
    assert!(out.contains("[[target.source]]"), "{out}");
    let (status, _, err) = run(fleetscale().arg("frobnicate"));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("frobnicate"), "{err}");
}

/// The `/metrics` page of `fleetscale run` at `served`, once `ready` holds for it.
async fn metrics_page_until(
    served: &str,
    logs: &impl Fn() -> String,
    ready: impl Fn(&str) -> bool,
) -> String {
    common::page_until(&format!("http://{served}/metrics"), logs, ready).await
}

/// The target `web` on the app `cli-app` (see [`common::web_spares_toml`]), capped by a hard
/// limit of 4 machines.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = common::engine_toml("300ms", "127.0.0.1:0")
        + &common::web_spares_toml("cli-app")
        + "\n[target.policy.limits]\ncreated = { min = 1, max = 4 }\n";
    common::write_file(dir, "fleetscale.toml", &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_then_run_a_toml_file_against_the_fake() {
    let server = common::fake_fly_with_apps(TOKEN, &["cli-app"]).await;
    let fake = server.fake().clone();
    let started = || {
        fake.machines("cli-app")
            .iter()
            .all(|m| m.state == FlyState::Started)
            .then_some(())
    };
    eventually("the first machine started", started, String::new).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());

    // eval: explains, changes nothing.
    let eval = || {
        run(on_fly(
            fleetscale().arg("eval").arg("--config").arg(&path),
            &server.url(),
            TOKEN,
        ))
    };
    // During a deploy (the app's current release is `running`): paused, nothing planned.
    assert!(fake.set_release_status("cli-app", Some("running")));
    let (status, out, err) = eval();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("target web"), "{out}");
    assert!(out.contains("  paused: release in progress"), "{out}");
    assert!(!out.contains("would do"), "{out}");
    assert!(fake.set_release_status("cli-app", Some("complete")));
    let (status, out, err) = eval();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("target web"), "{out}");
    assert!(out.contains("metric spare_wanted = 2"), "{out}");
    assert!(out.contains("targets: created min 3 max 3"), "{out}");
    assert_eq!(
        out.matches("    - create (stopped").count(),
        2,
        "two creates planned\n{out}"
    );
    assert_eq!(fake.machines("cli-app").len(), 1, "eval changed nothing");

    // A bad file: file, line and key.
    let bad = common::write_file(dir.path(), "bad.toml", "[engine]\ninterval = \"soon\"\n");
    let (status, _, err) = run(fleetscale().arg("eval").arg("--config").arg(&bad));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("interval"), "{err}");

    // run: creates two stopped machines, capped by the hard limit of 4 in total.
    let mut proc = Proc::spawn(on_fly(
        fleetscale()
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path),
        &server.url(),
        TOKEN,
    ));
    let logs = proc.stderr_reader();
    common::machines_reach(&fake, "cli-app", 3, &logs).await;
    let spare = fake
        .machines("cli-app")
        .into_iter()
        .find(|m| m.state == FlyState::Created)
        .expect("a stopped spare")
        .id;
    // Starting a spare raises the target (2 + started), but the hard max is 4.
    assert!(fake.proxy_autostart("cli-app", &spare));
    common::machines_reach(&fake, "cli-app", 4, &logs).await;
    let served = proc.logged_addr(SERVING).await;
    // The gauges show the inventory of the last tick: poll until a tick saw all 4.
    let page = metrics_page_until(&served, &logs, |page| {
        page.contains("fleetscale_machines{target=\"web\",state=\"created\"} 4")
    })
    .await;
    assert!(
        page.contains(
            "fleetscale_machine_actions_total{target=\"web\",action=\"create\",status=\"ok\"} 3"
        ),
        "{page}"
    );
    let health = reqwest::get(format!("http://{served}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.machines("cli-app").len(), 4, "hard max 4\n{}", logs());
    proc.stop_cleanly("INT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_fly_and_fake_weave_serve_until_signalled() {
    // fake fly on a free port, with one app seeded as `fly launch` would.
    let (mut proc, port) = common::fake_fly_process(fleetscale(), "exp-app").await;
    let client = fleetscale_fly::MachinesClient::new(
        None,
        fleetscale_fly::ClientConfig::default().with_base_url(format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let machines = client
        .list_machines("exp-app", &fleetscale_fly::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(machines.len(), 1);
    proc.stop_cleanly("INT");

    // fake weave: 3 fixed routers on predictable ports, primed. The ports are free when chosen
    // but may be taken (by another test's connection) before the binary binds them: then it
    // exits with the bind error, and the test tries another run of ports.
    let (mut proc, base, out) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = common::free_port_run(4);
            let listen_base = base.to_string();
            let mut proc = Proc::spawn(fleetscale().args([
                "fake",
                "weave",
                "--listen-base",
                &listen_base,
                "--dynamic",
                "1",
            ]));
            let out = proc.stdout_reader();
            let err = proc.stderr_reader();
            let both = || format!("stdout:\n{}\nstderr:\n{}", out(), err());
            let started = eventually(
                "the routers (or the binary's exit)",
                || {
                    if out().contains("reclaimer:") {
                        return Some(true);
                    }
                    proc.child.try_wait().ok().flatten().map(|_| false)
                },
                &both,
            )
            .await;
            if started {
                break (proc, base, out);
            }
            // It exited: let the reader threads take the rest of its stderr first.
            proc.wait(Duration::from_secs(5));
            assert!(
                attempt < 3 && err().contains("Address already in use"),
                "fake weave exited\n{}",
                both()
            );
        }
    };
    let router =
        fleetscale_weave::RouterClient::new(&format!("http://127.0.0.1:{}", base + 1)).unwrap();
    router.status().await.expect("status of the second router");
    let ipam = router
        .status_ipam()
        .await
        .expect("ipam of the second router");
    assert!(ipam.len() >= 3, "{ipam:?}");
    let status = proc.stop("TERM");
    assert!(status.success(), "{}", out());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_dry_run_plans_but_never_calls_a_mutating_endpoint() {
    let server = common::fake_fly_with_apps(TOKEN, &["cli-app"]).await;
    let fake = server.fake().clone();
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let mut proc = Proc::spawn(on_fly(
        fleetscale()
            .args(["--log-format", "json", "run", "--dry-run", "--config"])
            .arg(&path),
        &server.url(),
        TOKEN,
    ));
    let logs = proc.stderr_reader();
    let served = proc.logged_addr(SERVING).await;
    // Wait for three dry-run ticks: each planned two creates and executed none.
    metrics_page_until(&served, &logs, |page| {
        page.lines()
            .find(|l| {
                l.starts_with("fleetscale_ticks_total{")
                    && l.contains("target=\"web\"")
                    && l.contains("status=\"dry_run\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .is_some_and(|ticks| ticks >= 3.0)
    })
    .await;
    assert_eq!(
        fake.machines("cli-app").len(),
        1,
        "dry run created nothing\n{}",
        logs()
    );
    let mutating: Vec<_> = fake
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.path.ends_with("/graphql"))
        .filter(|r| r.path.contains("/apps/cli-app/machines"))
        .collect();
    assert_eq!(mutating.len(), 1, "only the seed create: {mutating:?}");
    proc.stop_cleanly("INT");
}
