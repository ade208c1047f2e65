//! The local runner for real (`sh`, `echo`); the SSH runner's exact local command line, run
//! through `echo` in place of `ssh` to see what the remote shell would receive.

use std::time::Duration;

use fleetscale_weave::host::{shell_join, HostRunner, LocalRunner, SshRunner};
use fleetscale_weave::WeaveError;

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn local_runner_runs_and_captures() {
    let r = LocalRunner::new(Duration::from_secs(60));
    let out = r.run("local", &v(&["echo", "hello", "a b"])).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, "hello a b\n");

    let out = r
        .run("local", &v(&["sh", "-c", "echo oops >&2; exit 3"]))
        .await
        .unwrap();
    assert_eq!(out.code, Some(3));
    assert_eq!(out.stderr, "oops\n");
    match out.check("local", &v(&["sh", "-c", "x"])) {
        Err(WeaveError::CommandFailed { code, stderr, .. }) => {
            assert_eq!(code, Some(3));
            assert_eq!(stderr, "oops");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn local_runner_spawn_error_and_timeout_kills() {
    let r = LocalRunner::new(Duration::from_millis(300));
    let e = r
        .run("local", &v(&["/nonexistent/weave", "launch"]))
        .await
        .unwrap_err();
    assert!(matches!(e, WeaveError::Spawn { .. }), "{e:?}");

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let script = format!("sleep 3; touch {}", marker.display());
    let e = r
        .run("local", &v(&["sh", "-c", &script]))
        .await
        .unwrap_err();
    assert!(matches!(e, WeaveError::Timeout { .. }), "{e:?}");
    // The process was killed: the marker never appears.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "timed-out command kept running");
}

#[tokio::test]
async fn ssh_runner_passes_one_quoted_remote_command() {
    // `echo` stands in for `ssh` so we see exactly the arguments ssh would get. No sshd.
    let r = SshRunner::new().with_program("echo").with_user("ops");
    let argv = v(&[
        "weave",
        "launch",
        "--no-restart",
        "--ipalloc-init=observer",
        "10.0.0.1",
        "$(rm -rf /)",
    ]);
    let out = r.run("dyn4", &argv).await.unwrap();
    assert_eq!(
        out.stdout,
        "-o BatchMode=yes -o ConnectTimeout=10 ops@dyn4 -- weave launch --no-restart --ipalloc-init=observer 10.0.0.1 '$(rm -rf /)'\n"
    );
    // What the remote shell would do with that string: run exactly argv.
    let remote = shell_join(&v(&["printf", "%s|", "a b", "it's", "$(echo no)"]));
    let out = LocalRunner::default()
        .run("local", &v(&["sh", "-c", &remote]))
        .await
        .unwrap();
    assert_eq!(out.stdout, "a b|it's|$(echo no)|");
}
