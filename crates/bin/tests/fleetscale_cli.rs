//! The built `fleetscale` as a user runs it: `demo`, `eval` and `run` on a TOML file against
//! the fake Machines API, `version`, `--help`.

mod common;

use std::time::Duration;

use common::{eventually, fleetscale, run, Proc};
use fleetscale_fly::FlyState;

const TOKEN: &str = "FlyV1 fm2_cli-token";

#[test]
fn demo_scales_out_and_back_in() {
    let (status, out, err) = run({
        let mut c = fleetscale();
        c.args(["demo", "--duration", "5s"]);
        c
    });
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
    let (status, out, _) = run({
        let mut c = fleetscale();
        c.arg("version");
        c
    });
    assert!(status.success());
    assert!(out.starts_with("fleetscale "), "{out}");
    let (status, out, _) = run({
        let mut c = fleetscale();
        c.arg("--help");
        c
    });
    assert!(status.success());
    assert!(out.contains("fleetscale demo"), "{out}");
    assert!(out.contains("Examples:"), "{out}");
    let (status, out, _) = run({
        let mut c = fleetscale();
        c.args(["run", "--help"]);
        c
    });
    assert!(status.success());
    assert!(out.contains("[[target.source]]"), "{out}");
    let (status, _, err) = run({
        let mut c = fleetscale();
        c.arg("frobnicate");
        c
    });
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("frobnicate"), "{err}");
}

/// The address `fleetscale run` serves /metrics and /healthz on, from its JSON logs.
async fn served_addr(proc: &Proc, logs: &impl Fn() -> String) -> String {
    eventually(
        "the metrics address in the logs",
        || {
            proc.json_logs().iter().find_map(|l| {
                (l["msg"] == "serving /metrics and /healthz")
                    .then(|| l["addr"].as_str().map(str::to_owned))
                    .flatten()
            })
        },
        logs,
    )
    .await
}

/// Polls `/metrics` until `ready` holds for the page, and returns that page.
async fn metrics_page_until(
    served: &str,
    logs: &impl Fn() -> String,
    ready: impl Fn(&str) -> bool,
) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let page = reqwest::get(format!("http://{served}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if ready(&page) {
            return page;
        }
        assert!(t0.elapsed() < common::DEADLINE, "{page}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(dir: &std::path::Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("fleetscale.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[engine]
interval = "300ms"

[server]
listen = "{listen}"

[[target]]
name = "web"
backend = {{ type = "fly", app = "cli-app", token_env = "MY_FLY_TOKEN" }}
initial_state = "stopped"

[target.policy]
created = "min(spare_wanted + started_machines, 10)"

[target.policy.limits]
created = {{ min = 1, max = 4 }}

[[target.source]]
type = "constant"
name = "spare_wanted"
value = 2
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_then_run_a_toml_file_against_the_fake() {
    let server = common::fake_fly(TOKEN).await;
    let fake = server.fake().clone();
    common::seed_app(&common::client(&server, TOKEN), "cli-app").await;
    let started = || {
        fake.machines("cli-app")
            .iter()
            .all(|m| m.state == FlyState::Started)
            .then_some(())
    };
    eventually("the first machine started", started, String::new).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:0");

    // eval: explains, changes nothing.
    let eval = || {
        let mut c = fleetscale();
        c.arg("eval")
            .arg("--config")
            .arg(&path)
            .env("FLY_FLAPS_BASE_URL", server.url())
            .env("FLY_API_BASE_URL", server.url())
            .env("MY_FLY_TOKEN", TOKEN);
        c
    };
    // During a deploy (the app's current release is `running`): paused, nothing planned.
    assert!(fake.set_release_status("cli-app", Some("running")));
    let (status, out, err) = run(eval());
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("target web"), "{out}");
    assert!(out.contains("  paused: release in progress"), "{out}");
    assert!(!out.contains("would do"), "{out}");
    assert!(fake.set_release_status("cli-app", Some("complete")));
    let (status, out, err) = run(eval());
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
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[engine]\ninterval = \"soon\"\n").unwrap();
    let (status, _, err) = run({
        let mut c = fleetscale();
        c.arg("eval").arg("--config").arg(&bad);
        c
    });
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("interval"), "{err}");

    // run: creates two stopped machines, capped by the hard limit of 4 in total.
    let mut cmd = fleetscale();
    cmd.arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("FLY_FLAPS_BASE_URL", server.url())
        .env("FLY_API_BASE_URL", server.url())
        .env("MY_FLY_TOKEN", TOKEN);
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    eventually(
        "3 machines",
        || (fake.machines("cli-app").len() == 3).then_some(()),
        &logs,
    )
    .await;
    let spare = fake
        .machines("cli-app")
        .into_iter()
        .find(|m| m.state == FlyState::Created)
        .expect("a stopped spare")
        .id;
    // Starting a spare raises the target (2 + started), but the hard max is 4.
    assert!(fake.proxy_autostart("cli-app", &spare));
    eventually(
        "4 machines",
        || (fake.machines("cli-app").len() == 4).then_some(()),
        &logs,
    )
    .await;
    let served = served_addr(&proc, &logs).await;
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
    proc.signal("INT");
    let status = proc.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_fly_and_fake_weave_serve_until_signalled() {
    // fake fly on a free port, with one app seeded as `fly launch` would.
    let port = common::free_port();
    let mut cmd = fleetscale();
    cmd.args([
        "fake",
        "fly",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--app",
        "exp-app",
    ]);
    let mut proc = Proc::spawn(cmd);
    let out = proc.stdout_reader();
    eventually(
        "the fake to listen",
        || out().contains("FLY_FLAPS_BASE_URL=").then_some(()),
        &out,
    )
    .await;
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
    proc.signal("INT");
    assert!(proc.wait(Duration::from_secs(30)).success());

    // fake weave: 3 fixed routers on predictable ports, primed. The ports are free when chosen
    // but may be taken (by another test's connection) before the binary binds them: then it
    // exits with the bind error, and the test tries another run of ports.
    let (mut proc, base, out) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = common::free_port_run(4);
            let mut cmd = fleetscale();
            cmd.args([
                "fake",
                "weave",
                "--listen-base",
                &base.to_string(),
                "--dynamic",
                "1",
            ]);
            let mut proc = Proc::spawn(cmd);
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
    proc.signal("TERM");
    assert!(proc.wait(Duration::from_secs(30)).success(), "{}", out());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_dry_run_plans_but_never_calls_a_mutating_endpoint() {
    let server = common::fake_fly(TOKEN).await;
    let fake = server.fake().clone();
    common::seed_app(&common::client(&server, TOKEN), "cli-app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:0");
    let mut cmd = fleetscale();
    cmd.arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--dry-run")
        .arg("--config")
        .arg(&path)
        .env("FLY_FLAPS_BASE_URL", server.url())
        .env("FLY_API_BASE_URL", server.url())
        .env("MY_FLY_TOKEN", TOKEN);
    let mut proc = Proc::spawn(cmd);
    let logs = proc.stderr_reader();
    let served = served_addr(&proc, &logs).await;
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
    proc.signal("INT");
    let status = proc.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", logs());
}
