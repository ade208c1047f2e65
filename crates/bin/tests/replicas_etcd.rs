//! Two replicas of the real `fleetscale` binary sharing apps through real etcd (the Debian
//! `etcd-server`, started on loopback by `fleetscale_etcd::harness`) on the fake Machines API:
//! each app owned by exactly the replica rendezvous hashing names, every app scaled once, and
//! after `kill -9` of one replica the other takes its apps over and acts on them.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Proc};
use fleetscale_etcd::harness::EtcdCluster;
use fleetscale_etcd::rendezvous;
use fleetscale_fly::fake::FakeFlyServer;
use fleetscale_fly::{DestroyOptions, MachinesClient};

const TOKEN: &str = "replicas-token";
const APPS: usize = 8;

fn app(i: usize) -> String {
    format!("tenant-{i}")
}

/// The configuration of one replica: one target per app, two machines each, sharing through
/// etcd with a 3 s lease.
fn config(fly: &FakeFlyServer, etcd: &[String], replica: &str) -> String {
    let endpoints = etcd
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "[engine]\ninterval = \"300ms\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [coordination]\ntype = \"etcd\"\nendpoints = [{endpoints}]\nprefix = \"/e2e/\"\n\
         lease_ttl = \"3s\"\nreplica_name = \"{replica}\"\n"
    );
    for i in 0..APPS {
        s.push_str(&format!(
            "[[target]]\nname = \"{a}\"\nbackend = {{ type = \"fly\", app = \"{a}\", base_url = \"{url}\", release_guard = false }}\n\
             initial_state = \"started\"\n[target.policy]\ncreated = \"2\"\n",
            a = app(i),
            url = fly.url()
        ));
    }
    s
}

fn spawn(path: &std::path::Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetscale"));
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(path)
        .env("FLY_API_TOKEN", TOKEN)
        .env_remove("RUST_LOG");
    Proc::spawn(cmd)
}

/// The address of the first log line of `p` with the message `msg` (where it serves its
/// metrics), once it is there.
async fn logged_addr(p: &Proc, msg: &str) -> String {
    eventually(
        &format!("`{msg}` with an address in the logs"),
        || {
            p.json_logs().iter().find_map(|l| {
                (l["msg"].as_str() == Some(msg))
                    .then(|| l["addr"].as_str().map(str::to_string))
                    .flatten()
            })
        },
        p.stderr_reader(),
    )
    .await
}

/// The `/metrics` address a replica logged.
async fn metrics_addr(p: &Proc) -> String {
    logged_addr(p, "serving /metrics and /healthz").await
}

/// One etcd member, the fake Machines API with [`APPS`] apps (and a client of it), and the
/// apps each of `names` must own by rendezvous hashing (each owns some, or the test would
/// mean nothing).
async fn etcd_and_apps(
    names: &[String],
) -> (
    EtcdCluster,
    FakeFlyServer,
    MachinesClient,
    Vec<BTreeSet<String>>,
) {
    let etcd = EtcdCluster::start(1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fly = common::fake_fly(TOKEN).await;
    let client = common::client(&fly, TOKEN);
    for i in 0..APPS {
        common::seed_app(&client, &app(i)).await;
    }
    let expect: Vec<BTreeSet<String>> = names
        .iter()
        .map(|n| {
            (0..APPS)
                .map(app)
                .filter(|a| rendezvous::owner(a, names) == Some(n.as_str()))
                .collect()
        })
        .collect();
    assert!(
        expect.iter().all(|s| !s.is_empty()),
        "the apps must be split for the test to mean anything: {expect:?}"
    );
    (etcd, fly, client, expect)
}

/// The targets a replica says it owns on `/metrics`, and whether it acts.
async fn owned(addr: &str) -> Option<(BTreeSet<String>, bool)> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let targets = text
        .lines()
        .filter_map(|l| l.strip_prefix("fleetscale_coordination_target_owned{target=\""))
        .filter_map(|l| l.split_once("\"} 1").map(|(t, _)| t.to_string()))
        .collect();
    let acting = text
        .lines()
        .any(|l| l.starts_with("fleetscale_coordination_acting{") && l.ends_with(" 1"));
    Some((targets, acting))
}

/// Polls until `f` holds on both replicas' ownership, returning the last sets.
async fn until_owned(
    what: &str,
    addrs: &[&str],
    f: impl Fn(&[BTreeSet<String>]) -> bool,
) -> Vec<BTreeSet<String>> {
    let t0 = std::time::Instant::now();
    loop {
        let mut sets = Vec::new();
        for a in addrs {
            sets.push(owned(a).await.map(|(s, _)| s).unwrap_or_default());
        }
        if f(&sets) {
            return sets;
        }
        assert!(
            t0.elapsed() < common::DEADLINE,
            "timed out waiting for {what}: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counts(fly: &FakeFlyServer) -> Vec<usize> {
    (0..APPS)
        .map(|i| fly.fake().machines(&app(i)).len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_apps_and_one_takes_over_after_the_other_is_killed() {
    let names = vec!["replica-a".to_string(), "replica-b".to_string()];
    let (etcd, fly, client, expect) = etcd_and_apps(&names).await;

    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for n in &names {
        let path = dir.path().join(format!("{n}.toml"));
        std::fs::write(&path, config(&fly, &etcd.endpoints(), n)).unwrap();
        procs.push(spawn(&path));
    }
    let mut addrs = Vec::new();
    for p in &procs {
        addrs.push(metrics_addr(p).await);
    }
    let a_addr = addrs[0].clone();
    let b_addr = addrs[1].clone();

    // Each app owned by the replica rendezvous hashing names, by exactly one.
    until_owned(
        "ownership by rendezvous hashing",
        &[&a_addr, &b_addr],
        |s| s[0] == expect[0] && s[1] == expect[1],
    )
    .await;
    // Every app scaled to two machines, once: no app ever gets a third.
    let fly_counts = || format!("{:?}", counts(&fly));
    eventually(
        "two machines per app",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        counts(&fly).iter().all(|&c| c == 2),
        "an app was scaled twice: {:?}",
        counts(&fly)
    );

    // kill -9 of replica a: b takes every app over once a's lease expired in etcd.
    procs[0].child.kill().unwrap();
    procs[0].child.wait().unwrap();
    let all: BTreeSet<String> = (0..APPS).map(app).collect();
    until_owned("b owning every app", &[&b_addr], |s| s[0] == all).await;
    let (_, acting) = owned(&b_addr).await.expect("b answers");
    assert!(acting, "b acts");

    // b acts on a's apps: a machine destroyed behind its back is replaced.
    for a in &expect[0] {
        let m = fly.fake().machines(a).pop().expect("a machine");
        client
            .destroy_machine(
                a,
                &m.id,
                DestroyOptions {
                    force: true,
                    kill: false,
                },
                None,
            )
            .await
            .unwrap();
    }
    eventually(
        "a's apps back to two machines",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(counts(&fly).iter().all(|&c| c == 2), "{:?}", counts(&fly));

    // b leaves cleanly: it logs leaving etcd and exits 0.
    procs[1].signal("TERM");
    let status = procs[1].wait(common::DEADLINE);
    let logs = procs[1].stderr_lines().join("\n");
    assert!(status.success(), "{logs}");
    assert!(logs.contains("left etcd"), "{logs}");
    assert!(logs.contains("ownership gained"), "{logs}");
}

/// Requests that change machines (anything but a read) in the fake's log.
fn mutations(fly: &FakeFlyServer) -> Vec<String> {
    fly.fake()
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn count_lines(p: &Proc, msg: &str) -> usize {
    p.json_logs()
        .iter()
        .filter(|l| l["msg"].as_str() == Some(msg))
        .count()
}

/// A replica frozen with SIGSTOP past its lease sends nothing when it resumes while etcd is
/// down (it cannot have a valid fence), keeps serving `/metrics` saying it does not act, and
/// acts again once etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_sends_nothing_when_it_resumes() {
    let names = vec!["replica-a".to_string(), "replica-b".to_string()];
    let (mut etcd, fly, client, _) = etcd_and_apps(&names).await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for n in ["replica-a", "replica-b"] {
        let path = dir.path().join(format!("{n}.toml"));
        std::fs::write(&path, config(&fly, &etcd.endpoints(), n)).unwrap();
        procs.push(spawn(&path));
    }
    let a_addr = metrics_addr(&procs[0]).await;
    let b_addr = metrics_addr(&procs[1]).await;
    let fly_counts = || format!("{:?}", counts(&fly));
    eventually(
        "two machines per app",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;
    let sets = until_owned(
        "ownership by rendezvous hashing",
        &[&a_addr, &b_addr],
        |s| {
            s.iter().enumerate().all(|(i, set)| {
                set.len()
                    == (0..APPS)
                        .filter(|&k| rendezvous::owner(&app(k), &names) == Some(names[i].as_str()))
                        .count()
            }) && !s[0].is_empty()
        },
    )
    .await;
    let a_owned = sets[0].clone();

    // Freeze a; b takes every app over once a's lease expired in etcd.
    procs[0].signal("STOP");
    let all: BTreeSet<String> = (0..APPS).map(app).collect();
    until_owned("b owning every app", &[&b_addr], |s| s[0] == all).await;
    // b leaves; a's apps lose a machine each; etcd goes down: nobody may act now.
    procs[1].signal("TERM");
    assert!(procs[1].wait(common::DEADLINE).success());
    for a in &a_owned {
        let m = fly.fake().machines(a).pop().expect("a machine");
        let opts = DestroyOptions {
            force: true,
            kill: false,
        };
        client.destroy_machine(a, &m.id, opts, None).await.unwrap();
    }
    etcd.kill_all();
    fly.fake().clear_request_log();
    let stopped_acting = count_lines(&procs[0], "not acting: the lease is not confirmed")
        + count_lines(&procs[0], "ownership lost")
        + count_lines(&procs[0], "ownership suspended");

    // a resumes with its old view of the world: not one action.
    procs[0].signal("CONT");
    let a_logs = {
        let stderr = procs[0].stderr.clone();
        move || stderr.lock().unwrap().join("\n")
    };
    eventually(
        "a noticing that it may not act",
        || {
            let now = count_lines(&procs[0], "not acting: the lease is not confirmed")
                + count_lines(&procs[0], "ownership lost")
                + count_lines(&procs[0], "ownership suspended");
            (now > stopped_acting).then_some(())
        },
        &a_logs,
    )
    .await;
    // Several of a's passes (300 ms apart) while etcd stays down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mutations(&fly),
        Vec::<String>::new(),
        "a frozen replica acted after it resumed"
    );
    let (owned_now, acting) = owned(&a_addr).await.expect("a keeps serving /metrics");
    assert!(!acting, "a says it does not act");
    assert!(owned_now.is_empty(), "{owned_now:?}");

    // etcd back: a registers again, owns every app and repairs its old ones.
    etcd.restart_all().await.unwrap_or_else(|e| panic!("{e}"));
    until_owned("a owning every app", &[&a_addr], |s| s[0] == all).await;
    eventually(
        "every app back to two machines",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;
    assert!(!mutations(&fly).is_empty());
    procs[0].signal("TERM");
    assert!(procs[0].wait(common::DEADLINE).success(), "{}", a_logs());
}

fn fly_autoscaler(fly: &FakeFlyServer) -> Command {
    let mut cmd = common::fas_serve(&fly.url(), "tenant-*", TOKEN);
    cmd.env("FAS_ORG", "my-org")
        .env("FAS_CREATED_MACHINE_COUNT", "2")
        .env("FAS_INITIAL_MACHINE_STATE", "started")
        .env("FAS_INTERVAL", "300ms");
    cmd
}

/// The `/metrics` address `fly-autoscaler` logged.
async fn fas_metrics_addr(p: &Proc) -> String {
    logged_addr(p, "serving metrics").await
}

/// `fly-autoscaler` replicas configured by `FAS_ETCD_*` share a wildcard's apps and one takes
/// over after `kill -9` of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_autoscaler_replicas_share_a_wildcards_apps_through_etcd() {
    let names = vec!["fas-a".to_string(), "fas-b".to_string()];
    let (etcd, fly, client, expect) = etcd_and_apps(&names).await;
    let mut procs = Vec::new();
    for n in &names {
        let mut cmd = fly_autoscaler(&fly);
        cmd.env("FAS_ETCD_ENDPOINTS", etcd.endpoints().join(","))
            .env("FAS_ETCD_PREFIX", "/fas-e2e/")
            .env("FAS_ETCD_LEASE_TTL", "3s")
            .env("FAS_ETCD_REPLICA_NAME", n);
        procs.push(Proc::spawn(cmd));
    }
    let a_addr = fas_metrics_addr(&procs[0]).await;
    let b_addr = fas_metrics_addr(&procs[1]).await;
    until_owned(
        "ownership by rendezvous hashing",
        &[&a_addr, &b_addr],
        |s| s[0] == expect[0] && s[1] == expect[1],
    )
    .await;
    let fly_counts = || format!("{:?}", counts(&fly));
    eventually(
        "two machines per app",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;

    procs[0].child.kill().unwrap();
    procs[0].child.wait().unwrap();
    let all: BTreeSet<String> = (0..APPS).map(app).collect();
    until_owned("b owning every app", &[&b_addr], |s| s[0] == all).await;
    for a in &expect[0] {
        let m = fly.fake().machines(a).pop().expect("a machine");
        let opts = DestroyOptions {
            force: true,
            kill: false,
        };
        client.destroy_machine(a, &m.id, opts, None).await.unwrap();
    }
    eventually(
        "a's apps back to two machines",
        || counts(&fly).iter().all(|&c| c == 2).then_some(()),
        fly_counts,
    )
    .await;
    procs[1].signal("TERM");
    let status = procs[1].wait(common::DEADLINE);
    assert!(status.success(), "{}", procs[1].stderr_lines().join("\n"));
}

/// Bad `FAS_ETCD_*` settings stop `fly-autoscaler` at start with the variable's name, never
/// the password, and before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_autoscaler_refuses_bad_etcd_settings_at_start() {
    let fly = common::fake_fly(TOKEN).await;
    for (vars, want) in [
        (
            vec![
                ("FAS_ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
                ("FAS_ETCD_LEASE_TTL", "1s"),
            ],
            "FAS_ETCD_LEASE_TTL must be a whole number of seconds, at least 2 s",
        ),
        (
            vec![("FAS_ETCD_PASSWORD", "hunter2-etcd")],
            "FAS_ETCD_PASSWORD is set but FAS_ETCD_ENDPOINTS is not",
        ),
        (
            vec![
                ("FAS_ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
                ("FAS_ETCD_USERNAME", "u"),
                ("FAS_ETCD_PASSWORD", "hunter2-etcd"),
                ("FAS_ETCD_CA_FILE", "/nonexistent/ca.pem"),
            ],
            "TLS settings are given but the endpoints say http://",
        ),
    ] {
        let mut cmd = fly_autoscaler(&fly);
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let (status, out, err) = common::run(cmd);
        assert!(!status.success(), "{vars:?}: {out}{err}");
        assert!(err.contains(want), "{vars:?}: {err} (wanted {want})");
        assert!(
            !err.contains("hunter2") && !out.contains("hunter2"),
            "{err}"
        );
    }
    assert!(
        mutations(&fly).is_empty(),
        "nothing sent: {:?}",
        mutations(&fly)
    );
}
