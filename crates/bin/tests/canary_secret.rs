//! A canary secret through every error path of both binaries: `--help`, configuration errors
//! (environment, YAML, TOML, with the secret expanded into the file), and API answers that
//! echo the `Authorization` header back in their error bodies (Machines API, GraphQL release
//! check, Prometheus), in text and JSON logs and in `eval` output. The canary must never be
//! printed; each path is checked to have been exercised (its error did reach the output).

mod common;

use std::net::SocketAddr;
use std::process::Command;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::{run, Proc};

/// A Fly token with two macaroons, and a Prometheus token: neither may ever be printed, nor
/// any of their parts.
const FLY_CANARY: &str = "FlyV1 fm2_CANARY7f3a9c2e11,fo1_CANARYd41b8e0722";
const PROM_CANARY: &str = "CANARYprom55aa0f3c";
const PARTS: [&str; 3] = ["CANARY7f3a9c2e11", "CANARYd41b8e0722", "CANARYprom55aa0f3c"];

fn assert_clean(what: &str, text: &str) {
    for p in PARTS {
        assert!(
            !text.contains(p),
            "{what}: the secret ({p}) was printed:\n{text}"
        );
    }
}

fn fas() -> Command {
    let mut cmd = common::fas();
    cmd.env("FAS_API_TOKEN", FLY_CANARY)
        .env("FAS_PROMETHEUS_TOKEN", PROM_CANARY);
    cmd
}

fn fleetscale() -> Command {
    let mut cmd = common::fleetscale();
    cmd.env("FLY_API_TOKEN", FLY_CANARY)
        .env("PROM_TOKEN", PROM_CANARY)
        .env("FAKE_FLY_TOKEN", FLY_CANARY);
    cmd
}

/// An API that refuses every call and echoes the `Authorization` header in its error body,
/// like a misbehaving proxy: Machines API (500, Fly's JSON error), GraphQL (200 with
/// `errors`), Prometheus (401, text).
async fn echo_server() -> SocketAddr {
    async fn echo(uri: Uri, headers: HeaderMap) -> axum::response::Response {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_owned();
        let path = uri.path();
        if path.ends_with("/graphql") {
            let body =
                serde_json::json!({"errors": [{"message": format!("token rejected: {auth}")}]});
            (StatusCode::OK, axum::Json(body)).into_response()
        } else if path.contains("/api/v1/query") {
            (StatusCode::UNAUTHORIZED, format!("bad token {auth}")).into_response()
        } else {
            let body =
                serde_json::json!({"error": format!("upstream refused {auth}"), "status": "error"});
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(echo);
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[test]
fn help_never_shows_a_secret_environment_value() {
    for args in [
        vec!["--help"],
        vec!["help"],
        vec!["serve", "-h"],
        vec!["eval", "-h"],
    ] {
        let (status, out, err) = run(fas().args(&args));
        assert!(status.success(), "{args:?}: {err}");
        assert_clean(&format!("fly-autoscaler {args:?}"), &format!("{out}{err}"));
    }
    for args in [
        vec!["--help"],
        vec!["fake", "fly", "--help"],
        vec!["fake", "fly", "-h"],
        vec!["run", "--help"],
    ] {
        let (status, out, err) = run(fleetscale().args(&args));
        assert!(status.success(), "{args:?}: {err}");
        assert_clean(&format!("fleetscale {args:?}"), &format!("{out}{err}"));
        if args.contains(&"fly") {
            assert!(
                out.contains("FAKE_FLY_TOKEN"),
                "the variable is named: {out}"
            );
        }
    }
}

#[test]
fn configuration_errors_never_show_a_secret() {
    // fly-autoscaler: a token put in the wrong variable, and expanded into a YAML file.
    let (status, _, err) = run(fas()
        .env("FAS_CONCURRENCY", FLY_CANARY)
        .env("FAS_APP_NAME", "a"));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("FAS_CONCURRENCY"), "{err}");
    assert_clean("FAS_CONCURRENCY", &err);

    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in [
        ("type error", "app-name: a\nconcurrency: $SECRET\n"),
        ("duration", "app-name: a\ninterval: ${SECRET}\n"),
        ("syntax", "app-name: a\napi-token: [$SECRET\n"),
        ("unknown key", "app-name: a\n$SECRET: 1\n"),
    ] {
        let path = common::write_file(dir.path(), "fly-autoscaler.yml", yaml);
        let (status, out, err) = run(fas()
            .args(["eval", "-config"])
            .arg(&path)
            .env("SECRET", FLY_CANARY));
        assert_eq!(status.code(), Some(1), "{name}: {out}{err}");
        assert!(err.starts_with("ERROR: "), "{name}: {err}");
        assert_clean(&format!("YAML {name}"), &format!("{out}{err}"));
    }

    // fleetscale: `${VAR}` expanded into a TOML file, then an error on that line.
    for (name, toml) in [
        ("type", "[engine]\ninterval = \"${PROM_TOKEN}\"\n"),
        ("syntax", "[engine]\ninterval = ${PROM_TOKEN}\n"),
        (
            "unknown key",
            "[engine]\nbogus = \"${PROM_TOKEN}\"\n",
        ),
        (
            "source",
            "[[target]]\nbackend = { type = \"fly\", app = \"a\" }\n[target.policy]\ncreated = \"1\"\n[[target.source]]\ntype = \"prometheus\"\nname = \"m\"\naddress = \"${PROM_TOKEN}\"\nquery = \"up\"\n",
        ),
        (
            "comment",
            "# token: ${FLY_API_TOKEN}\n[engine]\ninterval = 5 # ${PROM_TOKEN}\n",
        ),
    ] {
        let path = common::write_file(dir.path(), "fleetscale.toml", toml);
        for cmd in ["run", "eval"] {
            for format in ["text", "json"] {
                let (status, out, err) =
                    run(fleetscale().args(["--log-format", format, cmd, "--config"]).arg(&path));
                assert_eq!(status.code(), Some(1), "{name}: {out}{err}");
                assert!(err.contains("fleetscale.toml:"), "{name}: {err}");
                assert_clean(&format!("TOML {name} ({cmd}, {format})"), &format!("{out}{err}"));
            }
        }
    }
}

/// Every third-party answer echoes the token: the logs and outputs show the errors, with
/// the token redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_bodies_that_echo_the_token_are_redacted() {
    let echo = echo_server().await;
    let url = format!("http://{echo}");

    // fly-autoscaler serve (JSON logs): Machines API, release check and Prometheus errors.
    // The canaries as `fas()` sets them: the Fly token, and the Prometheus token.
    let mut cmd = common::fas_serve(&url, "echo-app", FLY_CANARY);
    cmd.env("FAS_PROMETHEUS_TOKEN", PROM_CANARY)
        .env("FAS_CREATED_MACHINE_COUNT", "m + 1")
        .env("FAS_PROMETHEUS_ADDRESS", &url)
        .env("FAS_PROMETHEUS_METRIC_NAME", "m")
        .env("FAS_PROMETHEUS_QUERY", "count(up)")
        .env("FAS_INTERVAL", "200ms")
        .env("RUST_LOG", "debug");
    let mut proc = Proc::spawn(cmd);
    // The echoed release check error.
    proc.await_logged("token rejected: <redacted>").await;
    proc.stop("TERM");
    assert_clean("fly-autoscaler serve", &proc.stderr_reader()());

    // fly-autoscaler eval: the Prometheus error goes to stderr as `ERROR: …`.
    let (status, out, err) = run(fas()
        .arg("eval")
        .env("FAS_APP_NAME", "echo-app")
        .env("FAS_CREATED_MACHINE_COUNT", "m")
        .env("FAS_PROMETHEUS_ADDRESS", &url)
        .env("FAS_PROMETHEUS_METRIC_NAME", "m")
        .env("FAS_PROMETHEUS_QUERY", "count(up)")
        // A token that is not a Fly token goes as `Bearer <token>`.
        .env("FAS_PROMETHEUS_TOKEN", PROM_CANARY));
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("bad token Bearer <redacted>"), "{err}");
    assert_clean("fly-autoscaler eval", &format!("{out}{err}"));

    // fleetscale run (text and JSON logs) and eval (text and JSON).
    let dir = tempfile::tempdir().unwrap();
    let text = common::engine_toml("200ms", "127.0.0.1:0")
        + &format!("\n[[target]]\nname = \"echo\"\nbackend = {{ type = \"fly\", app = \"echo-app\", base_url = \"{url}\", graphql_base_url = \"{url}\" }}\n\n[target.policy]\ncreated = \"m + 1\"\n\n")
        + &common::prometheus_source_toml("m", &url, "count(up)")
        + "token = \"${PROM_TOKEN}\"\n";
    let path = common::write_file(dir.path(), "fleetscale.toml", &text);
    for format in ["text", "json"] {
        let mut proc = Proc::spawn(
            fleetscale()
                .args([
                    "--log-format",
                    format,
                    "--log-level",
                    "debug",
                    "run",
                    "--config",
                ])
                .arg(&path),
        );
        let logs = proc.stderr_reader();
        // The echoed error in the logs.
        proc.await_logged("<redacted>").await;
        proc.stop("TERM");
        assert_clean(&format!("fleetscale run ({format})"), &logs());
        if format == "text" {
            assert!(!logs().contains('\x1b'), "no colours off a terminal");
        }
    }
    for json in [false, true] {
        let (_, out, err) = run(fleetscale()
            .args(["eval", "--config"])
            .arg(&path)
            .args(json.then_some("--json")));
        assert!(
            out.contains("<redacted>"),
            "the echo reached the output: {out}{err}"
        );
        assert_clean(
            &format!("fleetscale eval (json {json})"),
            &format!("{out}{err}"),
        );
    }
}

/// The fake Machines API started with the canary as its required token says nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_fly_server_does_not_print_its_token() {
    let (mut proc, port) = common::fake_fly_process(fleetscale(), "a").await;
    let (out, err) = (proc.stdout_reader(), proc.stderr_reader());
    let all = move || format!("{}\n{}", out(), err());
    // A refused call: the fake logs nothing of the expected token.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://127.0.0.1:{port}/v1/apps/a/machines"))
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_clean("fake fly answer", &r.text().await.unwrap());
    proc.stop("TERM");
    assert_clean("fleetscale fake fly", &all());
}
