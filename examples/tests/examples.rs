//! Every example, compiled into this test and run, so CI checks that they work (and not only
//! that they build). Each example exposes `run()`; its `main` only calls it.

#[allow(dead_code)]
#[path = "../examples/custom_backend.rs"]
mod custom_backend;
#[allow(dead_code)]
#[path = "../examples/embedded.rs"]
mod embedded;
#[allow(dead_code)]
#[path = "../examples/fly_blueprint.rs"]
mod fly_blueprint;
#[allow(dead_code)]
#[path = "../examples/weave_autoscaling.rs"]
mod weave_autoscaling;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_backend_conforms_and_scales() {
    let started = custom_backend::run().await.expect("custom_backend");
    // queue 0, 25, 60, 15, 0 -> ceil(queue / 10) started VMs.
    assert_eq!(started, vec![0, 3, 6, 2, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_runs_beside_a_server_and_shuts_down() {
    let seen = embedded::run().await.expect("embedded");
    // load 10, 90, 30 -> max(1, ceil(load / 20)) started machines.
    assert_eq!(seen, vec![1, 5, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_blueprint_keeps_one_spare_up_to_ten() {
    let (totals, used_prometheus) = fly_blueprint::run().await.expect("fly_blueprint");
    assert_eq!(totals, vec![3, 4, 5, 6, 7, 8, 9, 10, 10]);
    // CI installs Prometheus (scripts/install-test-deps.sh): the real path must be the one
    // tested there.
    assert!(
        used_prometheus || std::env::var_os("CI").is_none(),
        "{}",
        fleetscale_metrics::harness::INSTALL_HINT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weave_autoscaling_joins_leaves_and_reclaims_once() {
    let o = weave_autoscaling::run().await.expect("weave_autoscaling");
    assert_eq!(o.joined, vec!["dyn4", "dyn5", "dyn6"]);
    assert_eq!(o.owned_after_leave, 0, "reset handed the space over");
    assert_eq!(o.rmpeers_of_vanished, 1, "reclaimed exactly once");
    assert_eq!(o.duplicates, 0);
}

/// `cargo test` builds the examples next to the test binary (`target/<profile>/examples`);
/// the quickstart is run as the binary a user gets from `cargo run --example quickstart`.
#[test]
fn quickstart_runs() {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    assert!(dir.is_file(), "{} not built", dir.display());
    let out = std::process::Command::new(&dir)
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("done: "), "{stdout}");
}
