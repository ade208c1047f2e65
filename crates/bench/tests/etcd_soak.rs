//! Chaos soak of replicas sharing apps through real etcd (a three-member cluster started on
//! loopback) on the fake Machines API.
//!
//! Up to four replicas of the real engine run at once (three at the start). Each round a seeded RNG picks one
//! event: a replica is killed (engine dropped mid-flight, lease left to expire), stopped
//! cleanly (resigns), started (under a new name, as a new process would be), cut off from
//! etcd while it still reaches the Machines API (and healed a later round), an etcd member is
//! killed (and restarted a later round), or all of etcd goes down (and comes back the next
//! round). Then some apps' loads change (1 to 3 machines each) and the round runs for a
//! while.
//!
//! Checked after **every** round:
//! - no app ever has more machines than the highest load asked (a create by two replicas for
//!   one missing machine would overshoot), and none has none;
//! - over the whole request log so far: no request reached the Machines API after one sent
//!   under a newer ownership of its app (fencing tokens never go down in arrival order), and
//!   every request had a fence before it; no machine destroyed twice.
//!
//! At the end, with every fault repaired and at least one replica up: every app reaches its
//! load. `FLEETSCALE_ETCD_SOAK_ROUNDS` sets the rounds (default 10), `FLEETSCALE_SOAK_SEED`
//! the seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetscale_bench::replicas::{
    destroyed_twice, stale_actions, FenceLog, Loads, Replica, ReplicaOptions,
};
use fleetscale_bench::{env_number, fleet};
use fleetscale_etcd::harness::{EtcdCluster, TcpProxy};
use fleetscale_etcd::EtcdConfig;
use fleetscale_fly::fake::{FakeConfig, FakeFlyServer};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const APPS: usize = 16;
const MAX_LOAD: u64 = 3;

/// A running replica and, when it reaches etcd through a proxy, the proxy.
struct Live {
    replica: Replica,
    proxy: TcpProxy,
    cut: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_stay_fenced_through_kills_partitions_and_etcd_outages() {
    let rounds: u64 = env_number("FLEETSCALE_ETCD_SOAK_ROUNDS", 10);
    let seed: u64 = env_number("FLEETSCALE_SOAK_SEED", 0xE7CD_5EED);
    let mut rng = Rng(seed);

    let mut etcd = EtcdCluster::start(3).await.unwrap();
    let config = etcd
        .config()
        .with_lease_ttl(Duration::from_secs(3))
        .with_fence_margin(Duration::from_secs(1))
        .with_request_timeout(Duration::from_millis(800));
    let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::instant())
        .await
        .unwrap();
    let fake = server.fake().clone();
    let seeding = fleet::seeding_client(server.url());
    fleet::seed(&seeding, APPS, 1, 4).await.unwrap();
    fake.clear_request_log();
    let apps: Vec<String> = (0..APPS).map(fleet::app_name).collect();
    let loads = Loads::new(&apps, 1.0);
    let fences = FenceLog::default();
    let options = ReplicaOptions::default();

    // Each replica reaches etcd through its own proxy to one live member (which the test never
    // kills while the replica runs: member 0 is never killed alone), so a cut is a real
    // partition of that replica.
    let mut started = 0usize;
    let member0 = etcd.endpoint(0);
    let start = |started: &mut usize| {
        *started += 1;
        let name = format!("r{started}");
        let member = member0.clone();
        let (config, server_url, apps, loads, options, fences) = (
            config.clone(),
            server.url(),
            apps.clone(),
            loads.clone(),
            options.clone(),
            fences.clone(),
        );
        async move {
            let proxy = TcpProxy::start(member.trim_start_matches("http://"))
                .await
                .unwrap();
            // Cut means cut: the replica's only way to etcd is the proxy.
            let mut c: EtcdConfig = config;
            c.endpoints = vec![proxy.url(false)];
            let coordinator = Replica::register(&name, &c).await;
            let replica = Replica::run(
                &name,
                coordinator,
                &server_url,
                &apps,
                &loads,
                &options,
                &fences,
            );
            Live {
                replica,
                proxy,
                cut: false,
            }
        }
    };
    let mut live: Vec<Live> = Vec::new();
    for _ in 0..3 {
        live.push(start(&mut started).await);
    }
    let mut dead_members: Vec<usize> = Vec::new();
    let mut etcd_down = false;
    let mut highest: BTreeMap<String, u64> = apps.iter().map(|a| (a.clone(), 1)).collect();
    let mut current: BTreeMap<String, u64> = highest.clone();
    let mut events: BTreeMap<&str, u32> = BTreeMap::new();

    // The first eight rounds go through every kind of event once (in a seeded order), so
    // that even a short run covers them all; later rounds pick at random.
    let mut order: Vec<u64> = (0..8).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    for round in 0..rounds {
        // Repairs first: etcd back after a round down, members back after a round dead.
        if etcd_down {
            etcd.restart_all().await.unwrap();
            etcd_down = false;
            dead_members.clear();
        }
        let kind = order
            .get(round as usize)
            .copied()
            .unwrap_or_else(|| rng.below(8));
        let event = match kind {
            0 if live.len() > 1 => {
                let i = rng.below(live.len() as u64) as usize;
                let l = live.remove(i);
                l.replica.kill().await;
                "kill a replica"
            }
            1 if live.len() > 1 => {
                let i = rng.below(live.len() as u64) as usize;
                let l = live.remove(i);
                l.replica.stop().await;
                "stop a replica"
            }
            2 if live.len() < 4 => {
                live.push(start(&mut started).await);
                "start a replica"
            }
            3 => {
                if let Some(l) = live.iter_mut().find(|l| !l.cut) {
                    l.proxy.cut();
                    l.cut = true;
                }
                "cut a replica off etcd"
            }
            4 => {
                for l in live.iter_mut().filter(|l| l.cut) {
                    l.proxy.heal();
                    l.cut = false;
                }
                "heal partitions"
            }
            5 if dead_members.is_empty() => {
                let m = 1 + rng.below(etcd.size() as u64 - 1) as usize;
                etcd.kill(m).unwrap();
                dead_members.push(m);
                "kill an etcd member"
            }
            6 if !dead_members.is_empty() => {
                for m in dead_members.drain(..) {
                    etcd.restart(m).unwrap();
                }
                etcd.wait_healthy(fleetscale_etcd::harness::START_DEADLINE)
                    .await
                    .unwrap();
                "restart etcd members"
            }
            7 if round < 8 || rng.below(3) == 0 => {
                etcd.kill_all();
                etcd_down = true;
                "etcd down"
            }
            _ => "nothing",
        };
        *events.entry(event).or_default() += 1;
        for app in &apps {
            if rng.below(3) == 0 {
                let load = 1 + rng.below(MAX_LOAD);
                loads.0[app].set(load as f64);
                current.insert(app.clone(), load);
                let h = highest.get_mut(app).unwrap();
                *h = (*h).max(load);
            }
        }
        let until = Instant::now() + Duration::from_millis(1500 + rng.below(1500));
        while Instant::now() < until {
            for app in &apps {
                let n = fake
                    .machines(app)
                    .iter()
                    .filter(|m| m.state.to_core().exists())
                    .count() as u64;
                assert!(
                    (1..=highest[app]).contains(&n),
                    "round {round} ({event}): {app} has {n} machines (highest load {})",
                    highest[app]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = fake.request_log();
        let fenced = fences.lock().unwrap().clone();
        let stale = stale_actions(&log, &fenced);
        assert!(stale.is_empty(), "round {round} ({event}): {stale:#?}");
        assert!(destroyed_twice(&log).is_empty(), "round {round}");
    }

    // Repair everything; the apps reach their loads.
    if etcd_down || !dead_members.is_empty() {
        etcd.restart_all().await.unwrap();
    }
    for l in live.iter_mut().filter(|l| l.cut) {
        l.proxy.heal();
        l.cut = false;
    }
    if live.is_empty() {
        live.push(start(&mut started).await);
    }
    let patience = Instant::now() + Duration::from_secs(120);
    loop {
        let off: Vec<(&String, usize, usize)> = apps
            .iter()
            .map(|a| {
                let n = fake
                    .machines(a)
                    .iter()
                    .filter(|m| m.state.to_core().exists())
                    .count();
                (a, n, current[a] as usize)
            })
            .filter(|(_, n, want)| n != want)
            .collect();
        if off.is_empty() {
            break;
        }
        assert!(Instant::now() < patience, "not converged: {off:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = stale_actions(&fake.request_log(), &fences.lock().unwrap());
    assert!(stale.is_empty(), "{stale:#?}");
    eprintln!(
        "etcd soak: seed {seed:#x}, {rounds} rounds, {started} replicas started, events {events:?}, {} fences, {} requests",
        fences.lock().unwrap().len(),
        fake.request_log().len()
    );
    for l in live {
        l.replica.stop().await;
    }
}
