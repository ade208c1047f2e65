//! The status page of a running `fleetscale run` (on the fake Machines API) in a REAL
//! headless Chromium from Debian: the test asserts on the DOM the browser rendered and saves
//! screenshots (phone and desktop sizes) under the target directory. A missing Chromium fails
//! the test with the install hint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Proc;

const TOKEN: &str = "FlyV1 fm2_status-token";
const INSTALL_HINT: &str =
    "chromium not found: run scripts/install-test-deps.sh (apt-get install -y chromium), or set FLEETSCALE_CHROMIUM";

/// `$FLEETSCALE_CHROMIUM`, else `chromium` on `PATH`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEETSCALE_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{INSTALL_HINT} ({} does not exist)",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("chromium"))
                .find(|c| c.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile, no network
/// beyond loopback) and returns its stdout; killed after a deadline.
fn browse(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{INSTALL_HINT} ({e})"));
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > common::DEADLINE {
            let _ = child.kill();
            panic!("chromium did not finish within {:?}", common::DEADLINE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two targets: `web` keeping two stopped spares, and `api` whose Prometheus (a closed port)
/// never answers.
fn config(dir: &Path) -> PathBuf {
    let api = r#"
[[target]]
name = "api"
backend = { type = "fly", app = "status-api", token_env = "MY_FLY_TOKEN" }

[target.policy]
created = "queue_depth / 10"

"#;
    let api_source = common::prometheus_source_toml(
        "queue_depth",
        "http://127.0.0.1:9",
        "sum(queue_depth{app='$APP_NAME'})",
    );
    let text = common::engine_toml("300ms", "127.0.0.1:0")
        + &common::web_spares_toml("status-app")
        + api
        + &api_source
        + "timeout = \"1s\"\n";
    common::write_file(dir, "fleetscale.toml", &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() {
    let browser = chromium();
    let server = common::fake_fly_with_apps(TOKEN, &["status-app", "status-api"]).await;
    let fake = server.fake().clone();
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(common::on_fly(
        common::fleetscale()
            .args(["--log-format", "json", "run", "--config"])
            .arg(config(dir.path())),
        &server.url(),
        TOKEN,
    ));
    let logs = proc.stderr_reader();
    // Two spares created for web.
    common::machines_reach(&fake, "status-app", 3, &logs).await;
    let served = proc.logged_addr("serving /metrics and /healthz").await;
    let url = format!("http://{served}/");
    // A tick that saw all three machines, and one that failed to read the queue.
    let page = common::page_until(&url, &logs, |body| {
        body.contains("<dd data-count=\"created\">3</dd>") && body.contains("queue_depth failed")
    })
    .await;
    assert!(page.starts_with("<!doctype html>"), "{page}");

    // What the browser made of it.
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browse(&url, &["--dump-dom".to_owned()])
    })
    .await
    .unwrap();
    assert!(dom.contains("<title>fleetscale status</title>"), "{dom}");
    let section = |name: &str| -> String {
        let start = dom
            .find(&format!("data-target=\"{name}\""))
            .unwrap_or_else(|| panic!("no section for {name}\n{dom}"));
        let end = dom[start..].find("</section>").unwrap() + start;
        dom[start..end].to_owned()
    };
    let web = section("web");
    assert!(web.contains("<dd data-count=\"created\">3</dd>"), "{web}");
    assert!(web.contains("<dd data-count=\"started\">1</dd>"), "{web}");
    assert!(web.contains("machines 3, started any"), "{web}");
    assert!(web.contains("<ol class=\"actions\">"), "{web}");
    assert_eq!(web.matches("create (stopped").count(), 2, "{web}");
    assert!(web.contains("<p class=\"error none\">none</p>"), "{web}");
    assert!(web.contains("<svg class=\"chart\""), "{web}");
    assert!(
        web.contains("class=\"created\""),
        "the chart has its line\n{web}"
    );
    let api = section("api");
    assert!(api.contains("data-status=\"held\""), "{api}");
    assert!(api.contains("metric queue_depth failed"), "{api}");
    assert!(
        api.contains("a failure never scales in"),
        "the reason\n{api}"
    );
    assert!(dom.contains("2 target(s)"), "{dom}");

    // Screenshots a person can look at: a phone and a desktop.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, size) in [
        ("status-page-phone.png", "412,915"),
        ("status-page-desktop.png", "1280,900"),
    ] {
        let file = shots.join(name);
        let _ = std::fs::remove_file(&file);
        tokio::task::spawn_blocking({
            let url = url.clone();
            let args = vec![
                format!("--screenshot={}", file.display()),
                format!("--window-size={size}"),
            ];
            move || browse(&url, &args)
        })
        .await
        .unwrap();
        let png = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("no screenshot {}: {e}", file.display()));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 5_000, "a screenshot with content");
        println!("screenshot: {}", file.display());
    }
    let _ = browser;
    proc.stop_cleanly("INT");
}
