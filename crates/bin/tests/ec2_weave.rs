//! `fleetscale run` on an EC2 target with `[target.weave]`, end to end: the built binary
//! against `moto_server` (a real implementation of the EC2 API) and the Weave router emulator.
//!
//! The instances are simulated hosts: a task of the test plays EC2's boot of every pool
//! instance by reading the user data moto stores for it (`DescribeInstanceAttribute`), taking
//! the `weave launch` command out of that script, and running it through the emulator's host
//! runner ([`EmulatedHosts`]) on the emulated peer of that instance (nickname = the private
//! DNS name, address = the private IP). The pool's subnet is on loopback (`127.N.1.0/24`,
//! which moto accepts), so every peer's router listens on its instance's private IP and
//! `http://PRIVATE_IP:router_port` reaches it as it would on EC2. An instance that EC2
//! terminates loses its router (killed, as a host that vanishes).
//!
//! Proves: scale out launches spot instances with the pool's tags and the rendered dynamic-peer
//! script as user data, whose peers join as observers with only the fixed peers; scale in
//! leaves the mesh (`DELETE /peer`, space handed over) before it terminates; a spot instance
//! terminated behind the autoscaler's back has its space reclaimed exactly once, on the
//! designated fixed peer; a running instance whose peer is partitioned is never reclaimed; an
//! instance of another pool on the same subnet is never touched; the credentials never appear
//! in the output.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, Instance, InstanceAttributeName, InstanceType, ResourceType, Tag, TagSpecification,
};
use common::Proc;
use fleetscale_aws::aws_sdk_ec2;
use fleetscale_aws::harness::{MotoServer, INSTALL_HINT};
use fleetscale_weave::fake::PeerSpec;
use fleetscale_weave::fake::{EmulatedHosts, Emulator, EmulatorConfig, Role};
use fleetscale_weave::{FixedCluster, HostRunner, LaunchPlan, PeerName};

const POOL: &str = "weave-dyn";
const SECRET: &str = "fleetscale-e2e-secret-key-not-for-logs";

/// One booted instance: its id, private IP and DNS name, and its emulated peer.
#[derive(Clone, Debug)]
struct Booted {
    peer: PeerName,
    user_data: String,
    launch: Vec<String>,
    lifecycle: String,
    tags: BTreeMap<String, String>,
    /// The space the peer owned (in the first fixed peer's view) when EC2 was first seen
    /// terminating the instance.
    owned_at_termination: Option<u64>,
}

type Hosts = Arc<Mutex<BTreeMap<String, Booted>>>;

/// `weave launch` as the script's systemd unit runs it, `$PEERS` expanded from the sysconfig.
fn launch_argv(script: &str) -> Vec<String> {
    let peers = script
        .lines()
        .find_map(|l| l.strip_prefix("PEERS=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("PEERS in the script");
    let exec = script
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre in the script");
    exec.split_whitespace()
        .flat_map(|w| {
            if w == "$PEERS" {
                peers.split_whitespace().map(str::to_owned).collect()
            } else {
                vec![w.to_owned()]
            }
        })
        .collect()
}

/// Plays EC2's side of every pool instance: boots new ones from their user data, kills the
/// router of terminated ones.
async fn simulate_hosts(
    ec2: aws_sdk_ec2::Client,
    emu: Emulator,
    runner: EmulatedHosts,
    router_port: u16,
    fixed1: PeerName,
    hosts: Hosts,
) {
    let mut next = 100u64;
    loop {
        if let Ok(instances) = pool_instances(&ec2).await {
            for i in &instances {
                let id = i.instance_id().unwrap_or_default().to_owned();
                let state = state_name(i);
                let known = hosts.lock().unwrap().get(&id).cloned();
                match (known, state.as_str()) {
                    (None, "pending" | "running") => {
                        let ud = ec2
                            .describe_instance_attribute()
                            .instance_id(&id)
                            .attribute(InstanceAttributeName::UserData)
                            .send()
                            .await
                            .expect("DescribeInstanceAttribute");
                        let b64 = ud
                            .user_data()
                            .and_then(|u| u.value())
                            .expect("user data stored");
                        let bytes = base64_decode(b64);
                        let script = String::from_utf8(bytes).expect("utf-8 user data");
                        let ip = i.private_ip_address().expect("private IP").to_owned();
                        let dns = i.private_dns_name().expect("private DNS").to_owned();
                        let peer = PeerName::from_u64(next).unwrap();
                        next += 1;
                        emu.add_peer(PeerSpec::new(peer, dns, ip.clone()), Role::Observer)
                            .expect("register the instance's peer");
                        emu.listen_on(peer, format!("{ip}:{router_port}").parse().unwrap())
                            .unwrap();
                        let argv = launch_argv(&script);
                        let out = runner.run(&ip, &argv).await.expect("run weave launch");
                        assert_eq!(out.code, Some(0), "weave launch on {id}: {out:?}");
                        // A container on the new peer: it owns address space from now on.
                        emu.allocate(peer, &format!("container-{id}"))
                            .expect("allocate on the new peer");
                        let tags = i
                            .tags()
                            .iter()
                            .map(|t| {
                                (
                                    t.key().unwrap_or_default().to_owned(),
                                    t.value().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect();
                        hosts.lock().unwrap().insert(
                            id,
                            Booted {
                                peer,
                                user_data: script,
                                launch: argv,
                                lifecycle: i
                                    .instance_lifecycle()
                                    .map(|l| l.as_str().to_owned())
                                    .unwrap_or_default(),
                                tags,
                                owned_at_termination: None,
                            },
                        );
                    }
                    (Some(b), "shutting-down" | "terminated")
                        if b.owned_at_termination.is_none() =>
                    {
                        let owned = emu.owned(fixed1, b.peer);
                        if emu.is_running(b.peer) {
                            emu.kill(b.peer).expect("the host vanishes");
                        }
                        if let Some(h) = hosts.lock().unwrap().get_mut(&id) {
                            h.owned_at_termination = Some(owned);
                        }
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    // The standard alphabet, as EC2 encodes user data.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Every instance tagged with the pool, as `DescribeInstances` lists them.
async fn pool_instances(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Instance>, String> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:fleetscale:pool")
                .values(POOL)
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("DescribeInstances: {e}"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect())
}

/// The state of an instance as EC2 names it (`pending`, `running`, `terminated`, …).
fn state_name(i: &Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default()
}

/// The pool's instances by state.
async fn pool_states(ec2: &aws_sdk_ec2::Client) -> BTreeMap<String, String> {
    let instances = pool_instances(ec2).await.unwrap_or_else(|e| panic!("{e}"));
    instances
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_owned(),
                state_name(i),
            )
        })
        .collect()
}

fn live(states: &BTreeMap<String, String>) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| matches!(s.as_str(), "pending" | "running"))
        .map(|(i, _)| i.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetscale_run_scales_an_ec2_spot_pool_of_weave_peers() {
    let moto = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{INSTALL_HINT}"));
    let ec2 = moto.client().await;
    let image = moto.image_id().await.expect("an AMI of moto's");

    // A VPC on loopback, its second octet from the process id (parallel test binaries).
    let octet = 64 + std::process::id() % 128;
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("127.{octet}.0.0/16"))
        .send()
        .await
        .expect("CreateVpc");
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block(format!("127.{octet}.1.0/24"))
        .send()
        .await
        .expect("CreateSubnet");
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_owned();
    // An instance of another pool on the same subnet: never to be touched.
    let other = ec2
        .run_instances()
        .image_id(&image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&subnet)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("fleetscale:pool").value("other").build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances of another pool");
    let other = other.instances()[0].instance_id().unwrap().to_owned();

    // The fixed cluster (192.168.77.1-3, primed) and the hosts.
    let emu = Emulator::new(EmulatorConfig::default());
    let fixed = emu.start_fixture_cluster().await.expect("fixed peers");
    let fixed1 = fixed[0].0.name;
    let router_port = common::free_port();
    let hosts: Hosts = Arc::default();
    let sim = tokio::spawn(simulate_hosts(
        ec2.clone(),
        emu.clone(),
        EmulatedHosts::new(emu.clone()),
        router_port,
        fixed1,
        hosts.clone(),
    ));

    // The demand, served as JSON.
    let demand = Arc::new(AtomicU64::new(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demand_url = format!("http://{}/demand", listener.local_addr().unwrap());
    {
        let demand = demand.clone();
        let app = axum::Router::new().route(
            "/demand",
            axum::routing::get(move || {
                let d = demand.load(Ordering::SeqCst);
                async move { d.to_string() }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("reclaim.ledger");
    let fixed_toml: Vec<String> = fixed
        .iter()
        .map(|(s, url)| {
            format!(
                "{{ name = \"{}\", address = \"{}\", api_url = \"{url}\" }}",
                s.name, s.address
            )
        })
        .collect();
    let text = format!(
        r#"
[engine]
interval = "1s"
reclaim_lost_members = true

[server]
listen = "off"

[[target]]
name = "peers"
backend = {{ type = "ec2", pool = "{POOL}", region = "us-east-1", endpoint = "{endpoint}", image_id = "{image}", instance_type = "t3.micro", subnets = ["{subnet}"], market = "spot", spot = {{ interruption = "terminate" }}, tags = {{ team = "net" }} }}

[target.policy]
created = "demand"

[target.weave]
fixed = [{fixed}]
router_port = {router_port}
ledger = "{ledger}"
min_unreachable = "1s"
"#,
        endpoint = moto.endpoint(),
        fixed = fixed_toml.join(", "),
        ledger = ledger.display(),
    ) + &common::source_toml(
        "http_json",
        "demand",
        &[("url", &demand_url), ("pointer", "")],
    );
    let config = common::write_file(dir.path(), "fleetscale.toml", &text);

    let mut proc = Proc::spawn(
        common::fleetscale()
            .env("AWS_ACCESS_KEY_ID", "AKIAFLEETSCALETEST")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config),
    );
    let (stdout, stderr) = (proc.stdout_reader(), proc.stderr_reader());
    let logs = move || format!("{}\n{}", stdout(), stderr());

    // 1. Scale out to 2: spot instances with the tags and the rendered user data; their peers
    //    join as observers with only the fixed peers, and the engine sees them join.
    let expected_script = LaunchPlan::dynamic(
        &FixedCluster::new(["192.168.77.1", "192.168.77.2", "192.168.77.3"]).unwrap(),
    )
    .bootstrap_script();
    let first = common::eventually_async("2 booted pool instances", &logs, async || {
        let h = hosts.lock().unwrap().clone();
        (h.len() == 2).then_some(h)
    })
    .await;
    for (id, b) in &first {
        assert_eq!(b.user_data, expected_script, "user data of {id}");
        assert_eq!(
            b.launch,
            [
                "/usr/local/bin/weave",
                "launch",
                "--no-restart",
                "--ipalloc-init=observer",
                "192.168.77.1",
                "192.168.77.2",
                "192.168.77.3"
            ],
            "{id}"
        );
        assert_eq!(b.lifecycle, "spot", "{id}");
        assert_eq!(
            b.tags.get("fleetscale:pool").map(String::as_str),
            Some(POOL)
        );
        assert_eq!(b.tags.get("team").map(String::as_str), Some("net"));
        assert!(emu.sees(fixed1, b.peer), "{id}'s peer is in the mesh");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(live(&pool_states(&ec2).await).len(), 2, "{}", logs());

    // 2. Scale in to 1: the leaver resets (space handed over, no rmpeer) before EC2
    //    terminates it.
    demand.store(1, Ordering::SeqCst);
    let (gone_id, gone) =
        common::eventually_async("a terminated pool instance", &logs, async || {
            hosts
                .lock()
                .unwrap()
                .iter()
                .find(|(_, b)| b.owned_at_termination.is_some())
                .map(|(i, b)| (i.clone(), b.clone()))
        })
        .await;
    assert_eq!(
        gone.owned_at_termination,
        Some(0),
        "{gone_id}'s peer left (handed its space over) before EC2 terminated it\n{}",
        logs()
    );
    assert_eq!(
        emu.owned(fixed1, gone.peer),
        0,
        "{gone_id}'s space was handed over"
    );
    assert!(
        emu.rmpeer_log().iter().all(|r| r.target != Some(gone.peer)),
        "a leave, not a reclaim: {:?}",
        emu.rmpeer_log()
    );
    let remaining = common::eventually_async("one live pool instance", &logs, async || {
        let l = live(&pool_states(&ec2).await);
        (l.len() == 1).then(|| l[0].clone())
    })
    .await;
    let survivor = hosts.lock().unwrap()[&remaining].clone();
    assert!(
        emu.owned(fixed1, survivor.peer) > 0,
        "the survivor owns space"
    );

    // 3. Spot loss: EC2 terminates the survivor behind the autoscaler's back; its router
    //    vanishes with it. Reclaimed exactly once, on the designated (first) fixed peer; a
    //    replacement is launched and joins.
    let owned = emu.owned(fixed1, survivor.peer);
    ec2.terminate_instances()
        .instance_ids(&remaining)
        .send()
        .await
        .expect("TerminateInstances (the spot interruption)");
    let rmpeers_of = |p: PeerName| {
        emu.rmpeer_log()
            .into_iter()
            .filter(|r| r.target == Some(p))
            .collect::<Vec<_>>()
    };
    common::eventually_async("the lost peer's reclaim", &logs, async || {
        (!rmpeers_of(survivor.peer).is_empty()).then_some(())
    })
    .await;
    let replacement =
        common::eventually_async("a replacement instance booted", &logs, async || {
            let l = live(&pool_states(&ec2).await);
            let h = hosts.lock().unwrap();
            l.into_iter()
                .find(|i| h.contains_key(i) && *i != remaining)
                .map(|i| (i.clone(), h[&i].clone()))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let records = rmpeers_of(survivor.peer);
    assert_eq!(records.len(), 1, "exactly once: {records:?}\n{}", logs());
    assert_eq!(records[0].by, fixed1, "on the designated fixed peer");
    assert_eq!(records[0].taken_over, owned);
    assert_eq!(emu.owned(fixed1, survivor.peer), 0);
    assert!(emu.duplicate_ownership().is_empty());

    // 4. A partitioned but running instance: unreachable from every fixed peer, never
    //    reclaimed (its host is listed live), never terminated.
    let (rep_id, rep) = replacement;
    assert!(emu.sees(fixed1, rep.peer), "the replacement joined");
    emu.partition(rep.peer).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        rmpeers_of(rep.peer).is_empty(),
        "a partitioned live instance is never reclaimed\n{}",
        logs()
    );
    let states = pool_states(&ec2).await;
    assert_eq!(
        states.get(&rep_id).map(String::as_str),
        Some("running"),
        "{states:?}"
    );
    emu.heal(rep.peer).unwrap();

    // The other pool's instance was never touched.
    let other_state = ec2
        .describe_instances()
        .instance_ids(&other)
        .send()
        .await
        .unwrap();
    let other_state = state_name(&other_state.reservations()[0].instances()[0]);
    assert_eq!(other_state, "running");

    proc.signal("TERM");
    assert!(proc.wait(Duration::from_secs(60)).success(), "{}", logs());
    sim.abort();
    let all = logs();
    assert!(
        !all.contains(SECRET),
        "the secret key appears in the output"
    );
}
