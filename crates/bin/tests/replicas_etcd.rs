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

/// Writes the configuration of each of `names` in `dir` and starts `fleetscale run` on it.
fn spawn_replicas(
    dir: &std::path::Path,
    fly: &FakeFlyServer,
    etcd: &EtcdCluster,
    names: &[String],
) -> Vec<Proc> {
    names
        .iter()
        .map(|n| {
            let text = config(fly, &etcd.endpoints(), n);
            let path = common::write_file(dir, &format!("{n}.toml"), &text);
            Proc::spawn(
                common::fleetscale()
                    .args(["--log-format", "json", "run", "--config"])
                    .arg(path)
                    .env("FLY_API_TOKEN", TOKEN),
            )
        })
        .collect()
}

/// The `/metrics` address a replica logged.
async fn metrics_addr(p: &Proc) -> String {
    p.logged_addr("serving /metrics and /healthz").await
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

/// Waits until every app has two machines (`what` names the moment).
async fn two_machines_per_app(fly: &FakeFlyServer, what: &str) {
    eventually(
        what,
        || counts(fly).iter().all(|&c| c == 2).then_some(()),
        || format!("{:?}", counts(fly)),
    )
    .await;
}

/// Asserts, a few ticks (300 ms apart) later, that every app still has two machines: none was
/// scaled twice.
async fn still_two_machines_per_app(fly: &FakeFlyServer) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        counts(fly).iter().all(|&c| c == 2),
        "an app was scaled twice: {:?}",
        counts(fly)
    );
}

/// Waits until the replicas serving `/metrics` at `addrs` own the apps `expect` says
/// rendezvous hashing gives each.
async fn owned_by_rendezvous(addrs: &[&str], expect: &[BTreeSet<String>]) {
    until_owned("ownership by rendezvous hashing", addrs, |s| s == expect).await;
}

/// Destroys one machine of each of `apps` behind the replicas' backs.
async fn destroy_one_machine_each(
    client: &MachinesClient,
    fly: &FakeFlyServer,
    apps: &BTreeSet<String>,
) {
    for a in apps {
        let m = fly.fake().machines(a).pop().expect("a machine");
        let opts = DestroyOptions {
            force: true,
            kill: false,
        };
        client.destroy_machine(a, &m.id, opts, None).await.unwrap();
    }
}

/// Every app's name.
fn all_apps() -> BTreeSet<String> {
    (0..APPS).map(app).collect()
}

/// `kill -9` of the first replica; waits until the second one (serving `/metrics` at
/// `b_addr`) owns every app, once the first one's lease expired in etcd.
async fn kill_a_and_b_takes_over(procs: &mut [Proc], b_addr: &str) {
    procs[0].child.kill().unwrap();
    procs[0].child.wait().unwrap();
    until_owned("b owning every app", &[b_addr], |s| s[0] == all_apps()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_apps_and_one_takes_over_after_the_other_is_killed() {
    let names = vec!["replica-a".to_string(), "replica-b".to_string()];
    let (etcd, fly, client, expect) = etcd_and_apps(&names).await;

    let dir = tempfile::tempdir().unwrap();
    let mut procs = spawn_replicas(dir.path(), &fly, &etcd, &names);
    let a_addr = metrics_addr(&procs[0]).await;
    let b_addr = metrics_addr(&procs[1]).await;

    // Each app owned by the replica rendezvous hashing names, by exactly one.
    owned_by_rendezvous(&[&a_addr, &b_addr], &expect).await;
    // Every app scaled to two machines, once: no app ever gets a third.
    two_machines_per_app(&fly, "two machines per app").await;
    still_two_machines_per_app(&fly).await;

    // kill -9 of replica a: b takes every app over once a's lease expired in etcd.
    kill_a_and_b_takes_over(&mut procs, &b_addr).await;
    let (_, acting) = owned(&b_addr).await.expect("b answers");
    assert!(acting, "b acts");

    // b acts on a's apps: a machine destroyed behind its back is replaced.
    destroy_one_machine_each(&client, &fly, &expect[0]).await;
    two_machines_per_app(&fly, "a's apps back to two machines").await;
    still_two_machines_per_app(&fly).await;

    // b leaves cleanly: it logs leaving etcd and exits 0.
    procs[1].stop_cleanly("TERM");
    let logs = procs[1].stderr_lines().join("\n");
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
    let mut procs = spawn_replicas(dir.path(), &fly, &etcd, &names);
    let a_addr = metrics_addr(&procs[0]).await;
    let b_addr = metrics_addr(&procs[1]).await;
    two_machines_per_app(&fly, "two machines per app").await;
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
    let all = all_apps();
    until_owned("b owning every app", &[&b_addr], |s| s[0] == all).await;
    // b leaves; a's apps lose a machine each; etcd goes down: nobody may act now.
    procs[1].stop_cleanly("TERM");
    destroy_one_machine_each(&client, &fly, &a_owned).await;
    etcd.kill_all();
    fly.fake().clear_request_log();
    let stopped_acting = count_lines(&procs[0], "not acting: the lease is not confirmed")
        + count_lines(&procs[0], "ownership lost")
        + count_lines(&procs[0], "ownership suspended");

    // a resumes with its old view of the world: not one action.
    procs[0].signal("CONT");
    let a_logs = procs[0].stderr_reader();
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
    two_machines_per_app(&fly, "every app back to two machines").await;
    assert!(!mutations(&fly).is_empty());
    procs[0].stop_cleanly("TERM");
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
    p.logged_addr("serving metrics").await
}

/// `fly-autoscaler` replicas configured by `FAS_ETCD_*` share a wildcard's apps and one takes
/// over after `kill -9` of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_autoscaler_replicas_share_a_wildcards_apps_through_etcd() {
    let names = vec!["fas-a".to_string(), "fas-b".to_string()];
    let (etcd, fly, client, expect) = etcd_and_apps(&names).await;
    let mut procs: Vec<Proc> = names
        .iter()
        .map(|n| {
            Proc::spawn(
                fly_autoscaler(&fly)
                    .env("FAS_ETCD_ENDPOINTS", etcd.endpoints().join(","))
                    .env("FAS_ETCD_PREFIX", "/fas-e2e/")
                    .env("FAS_ETCD_LEASE_TTL", "3s")
                    .env("FAS_ETCD_REPLICA_NAME", n),
            )
        })
        .collect();
    let a_addr = fas_metrics_addr(&procs[0]).await;
    let b_addr = fas_metrics_addr(&procs[1]).await;
    owned_by_rendezvous(&[&a_addr, &b_addr], &expect).await;
    two_machines_per_app(&fly, "two machines per app").await;

    kill_a_and_b_takes_over(&mut procs, &b_addr).await;
    destroy_one_machine_each(&client, &fly, &expect[0]).await;
    two_machines_per_app(&fly, "a's apps back to two machines").await;
    procs[1].stop_cleanly("TERM");
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
        let (status, out, err) = common::run(fly_autoscaler(&fly).envs(vars.iter().copied()));
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
