//! `Ec2Scaler` against a real EC2 API implementation: `moto_server` (PyPI `moto[server]`,
//! installed by `scripts/install-test-deps.sh`), started on a fresh loopback port by each
//! test, behind a [`FaultProxy`] that counts the EC2 actions and injects what moto cannot
//! produce (throttling, capacity errors, lost answers).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use fleetscale_aws::harness::{Fault, FaultProxy, MotoServer};
use fleetscale_aws::{Ec2PoolConfig, Ec2Scaler, Interruption, Market, SpotSettings, UserData};
use fleetscale_core::testing::conformance;
use fleetscale_core::{CreateRequest, Error, InitialState, MachineId, MachineState, Scaler};

const POOL_TAG: &str = "fleetscale:pool";

struct Lab {
    moto: MotoServer,
    proxy: FaultProxy,
    ec2: aws_sdk_ec2::Client,
    image: String,
}

impl Lab {
    async fn start() -> Lab {
        let moto = MotoServer::start().await.unwrap();
        let proxy = FaultProxy::start(&moto.endpoint()).unwrap();
        let ec2 = moto.client().await;
        let image = moto.image_id().await.unwrap();
        Lab {
            moto,
            proxy,
            ec2,
            image,
        }
    }

    /// A pool configuration whose endpoint is the proxy.
    async fn config(&self, pool: &str) -> Ec2PoolConfig {
        self.moto
            .pool_config_for(pool, &self.proxy.url())
            .await
            .unwrap()
    }

    async fn scaler(&self, config: Ec2PoolConfig) -> Ec2Scaler {
        Ec2Scaler::connect_with(config, MotoServer::config_loader_for(&self.proxy.url()))
            .await
            .unwrap()
    }

    /// Launches one instance directly (its own reservation), with these tags.
    async fn launch_raw(&self, tags: &[(&str, &str)]) -> String {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        let mut req = self
            .ec2
            .run_instances()
            .image_id(&self.image)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1);
        if !tags.is_empty() {
            req = req.tag_specifications(spec.build());
        }
        let out = req.send().await.unwrap();
        out.instances()[0].instance_id().unwrap().to_string()
    }

    async fn instance(&self, id: &str) -> aws_sdk_ec2::types::Instance {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0].clone()
    }

    async fn state(&self, id: &str) -> String {
        self.instance(id)
            .await
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap()
    }

    async fn tags(&self, id: &str) -> BTreeMap<String, String> {
        self.instance(id)
            .await
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
            .collect()
    }

    /// Live instances carrying `POOL_TAG = pool`, as moto has them.
    async fn pool_ids(&self, pool: &str) -> Vec<String> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{POOL_TAG}"))
                    .values(pool)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

fn started() -> CreateRequest {
    CreateRequest::default()
}

fn ids(machines: &[fleetscale_core::Machine]) -> Vec<String> {
    let mut v: Vec<String> = machines.iter().map(|m| m.id.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_pool_is_only_its_tagged_instances_and_others_are_never_touched() {
    let lab = Lab::start().await;
    let other_pool = lab.launch_raw(&[(POOL_TAG, "other")]).await;
    let untagged = lab.launch_raw(&[]).await;
    let other_key = lab.launch_raw(&[("team:pool", "weave")]).await;
    let stopped_other = lab.launch_raw(&[(POOL_TAG, "other")]).await;
    lab.ec2
        .stop_instances()
        .instance_ids(&stopped_other)
        .send()
        .await
        .unwrap();
    let foreign = [
        (&other_pool, "running"),
        (&untagged, "running"),
        (&other_key, "running"),
        (&stopped_other, "stopped"),
    ];

    let scaler = lab.scaler(lab.config("weave").await).await;
    assert!(scaler.list().await.unwrap().is_empty());
    let a = scaler.create(&started()).await.unwrap();
    let b = scaler.create(&started()).await.unwrap();
    let listed = scaler.list().await.unwrap();
    let mut want = vec![a.id.to_string(), b.id.to_string()];
    want.sort();
    assert_eq!(ids(&listed), want);

    // Acting on an instance outside the pool is NotFound, and sends nothing that changes it.
    lab.proxy.reset_counts();
    for (id, _) in &foreign {
        let id = MachineId::new(id.as_str());
        assert!(scaler.start(&id).await.unwrap_err().is_not_found());
        assert!(scaler.stop(&id).await.unwrap_err().is_not_found());
        assert!(scaler.destroy(&id).await.unwrap_err().is_not_found());
    }
    let counts = lab.proxy.counts();
    assert_eq!(
        counts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["DescribeInstances"],
        "only lookups were sent: {counts:?}"
    );

    // The conformance suite, on the pool, with the foreign instances beside it.
    conformance::scaler(&scaler).await.unwrap();

    for (id, state) in &foreign {
        assert_eq!(lab.state(id).await, *state, "{id} was touched");
    }
    assert_eq!(lab.pool_ids("other").await, {
        let mut v = vec![other_pool.clone(), stopped_other.clone()];
        v.sort();
        v
    });
    // The pool's own two machines are still there.
    assert_eq!(ids(&scaler.list().await.unwrap()), want);
}

#[tokio::test]
async fn listing_follows_every_page() {
    let lab = Lab::start().await;
    for _ in 0..12 {
        lab.launch_raw(&[(POOL_TAG, "paged")]).await;
    }
    for _ in 0..3 {
        lab.launch_raw(&[(POOL_TAG, "elsewhere")]).await;
    }
    let mut config = lab.config("paged").await;
    config.page_size = 5;
    let scaler = lab.scaler(config).await;
    lab.proxy.reset_counts();
    let listed = scaler.list().await.unwrap();
    assert_eq!(listed.len(), 12);
    assert_eq!(ids(&listed), lab.pool_ids("paged").await);
    let pages = lab.proxy.requests_of("DescribeInstances");
    assert_eq!(pages.len(), 3, "12 instances in pages of 5");
    assert!(pages[0].param("NextToken").is_none());
    assert!(pages[1].param("NextToken").is_some());
    assert!(pages[2].param("NextToken").is_some());
    for p in &pages {
        assert_eq!(p.param("MaxResults"), Some("5"));
    }
    assert_eq!(scaler.api_calls().describe_instances, 3);
}

#[tokio::test]
async fn on_demand_create_sets_tags_user_data_and_a_client_token() {
    let lab = Lab::start().await;
    let mut config = lab.config("weave").await;
    config.tags.insert("team".into(), "net".into());
    let script = "#!/bin/sh\nset -eu\ncat > /etc/sysconfig/weave <<'EOF'\nPEERS=\"10.0.0.1 10.0.0.2\"\nWEAVE_PASSWORD=\"s3cret\"\nEOF\n";
    config.user_data = Some(UserData::new(script));
    let scaler = lab.scaler(config).await;
    assert!(!format!("{scaler:?}").contains("s3cret"));
    let request = CreateRequest::default()
        .with_name("weave-dyn")
        .with_label("role", "dynamic");
    let m = scaler.create(&request).await.unwrap();

    assert!(m.id.as_str().starts_with("i-"), "{}", m.id);
    assert_eq!(
        m.state,
        MachineState::Starting,
        "RunInstances answers pending"
    );
    assert!(
        m.name.ends_with(".ec2.internal"),
        "private DNS name: {}",
        m.name
    );
    let ip = m.address.clone().unwrap();
    assert!(
        m.name.starts_with(&format!("ip-{}", ip.replace('.', "-"))),
        "{} / {ip}",
        m.name
    );
    assert_eq!(m.labels["lifecycle"], "on-demand");
    assert_eq!(m.labels["instance-type"], "t3.micro");
    assert_eq!(Some(&m.labels["az"]), m.region.as_ref());

    let raw = lab.instance(m.id.as_str()).await;
    assert_eq!(raw.private_ip_address(), Some(ip.as_str()));
    assert_eq!(raw.instance_lifecycle(), None);
    let tags = lab.tags(m.id.as_str()).await;
    assert_eq!(tags[POOL_TAG], "weave");
    assert_eq!(tags["Name"], "weave-dyn");
    assert_eq!(tags["team"], "net");
    assert_eq!(tags["role"], "dynamic");
    let token = tags["fleetscale:launch-token"].clone();

    let ud = lab
        .ec2
        .describe_instance_attribute()
        .instance_id(m.id.as_str())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = ud.user_data().and_then(|u| u.value()).unwrap();
    let decoded = aws_smithy_types::base64::decode(encoded).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), script);

    let runs = lab.proxy.requests_of("RunInstances");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].param("ClientToken"), Some(token.as_str()));
    assert_eq!(runs[0].param("MinCount"), Some("1"));
    assert_eq!(runs[0].param("MaxCount"), Some("1"));
    assert!(runs[0].param("InstanceMarketOptions.MarketType").is_none());

    // Listed as started now (moto runs instances at once), with the same identity.
    let listed = scaler.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, m.id);
    assert_eq!(listed[0].name, m.name);
    assert_eq!(listed[0].address, m.address);
    assert_eq!(listed[0].state, MachineState::Started);
    assert_eq!(listed[0].labels["Name"], "weave-dyn");
}

#[tokio::test]
async fn spot_creates_send_market_options_and_report_capabilities_honestly() {
    let lab = Lab::start().await;
    let mut config = lab.config("spot").await;
    config.market = Market::Spot;
    config.spot = Some(SpotSettings {
        interruption: Interruption::Terminate,
        max_price: Some("0.02".into()),
    });
    let scaler = lab.scaler(config.clone()).await;
    assert!(
        !scaler.capabilities().create_stopped,
        "one-time spot instances cannot be stopped"
    );
    assert!(!scaler.capabilities().create_needs_template);
    assert!(!scaler.capabilities().suspend);

    let m = scaler.create(&started()).await.unwrap();
    assert_eq!(m.labels["lifecycle"], "spot");
    let raw = lab.instance(m.id.as_str()).await;
    assert_eq!(raw.instance_lifecycle().map(|l| l.as_str()), Some("spot"));
    let run = &lab.proxy.requests_of("RunInstances")[0];
    assert_eq!(run.param("InstanceMarketOptions.MarketType"), Some("spot"));
    assert_eq!(
        run.param("InstanceMarketOptions.SpotOptions.SpotInstanceType"),
        Some("one-time")
    );
    assert_eq!(
        run.param("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"),
        Some("terminate")
    );
    assert_eq!(
        run.param("InstanceMarketOptions.SpotOptions.MaxPrice"),
        Some("0.02")
    );

    // A stopped create is refused before anything is launched.
    lab.proxy.reset_counts();
    let err = scaler
        .create(&CreateRequest::new(InitialState::Stopped))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert_eq!(lab.proxy.count("RunInstances"), 0);
    assert_eq!(lab.pool_ids("spot").await, vec![m.id.to_string()]);

    // Interruption `stop` needs a persistent request (EC2's rule), and allows stopped creates.
    config.pool = "spot-stop".into();
    config.spot = Some(SpotSettings {
        interruption: Interruption::Stop,
        max_price: None,
    });
    let stoppable = lab.scaler(config).await;
    assert!(stoppable.capabilities().create_stopped);
    lab.proxy.reset_counts();
    stoppable.create(&started()).await.unwrap();
    let run = &lab.proxy.requests_of("RunInstances")[0];
    assert_eq!(
        run.param("InstanceMarketOptions.SpotOptions.SpotInstanceType"),
        Some("persistent")
    );
    assert_eq!(
        run.param("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"),
        Some("stop")
    );
    assert!(run
        .param("InstanceMarketOptions.SpotOptions.MaxPrice")
        .is_none());
}

#[tokio::test]
async fn a_lost_answer_is_found_by_the_launch_token_not_launched_again() {
    let lab = Lab::start().await;
    let mut config = lab.config("lost").await;
    config.timeouts.attempt = Duration::from_secs(2);
    let scaler = lab.scaler(config).await;

    // 1. The launch happens, the answer is a 500.
    lab.proxy.inject("RunInstances", Fault::lost_answer(), 1);
    let m = scaler.create(&started()).await.unwrap();
    assert_eq!(lab.pool_ids("lost").await, vec![m.id.to_string()]);
    assert_eq!(lab.proxy.count("RunInstances"), 1, "not sent again");
    let lookups: Vec<_> = lab
        .proxy
        .requests_of("DescribeInstances")
        .into_iter()
        .filter(|r| {
            r.params
                .iter()
                .any(|(_, v)| v == "tag:fleetscale:launch-token")
        })
        .collect();
    assert_eq!(lookups.len(), 1, "one lookup by the launch token");

    // 2. The launch happens, the answer never comes (the attempt times out).
    lab.proxy.reset_counts();
    lab.proxy.inject(
        "RunInstances",
        Fault::ForwardThenDelay(Duration::from_secs(6)),
        1,
    );
    let n = scaler.create(&started()).await.unwrap();
    assert_ne!(n.id, m.id);
    let mut want = vec![m.id.to_string(), n.id.to_string()];
    want.sort();
    assert_eq!(lab.pool_ids("lost").await, want);
    assert_eq!(lab.proxy.count("RunInstances"), 1);

    // 3. A retry after throttling or a lost answer reuses the client token.
    lab.proxy.reset_counts();
    lab.proxy.inject("RunInstances", Fault::throttled(), 1);
    lab.proxy.inject(
        "RunInstances",
        Fault::Error {
            status: 503,
            code: "Unavailable".into(),
            message: "The server is overloaded".into(),
        },
        1,
    );
    let o = scaler.create(&started()).await.unwrap();
    let runs = lab.proxy.requests_of("RunInstances");
    assert_eq!(runs.len(), 3);
    let token = runs[0].param("ClientToken").unwrap().to_string();
    assert!(runs
        .iter()
        .all(|r| r.param("ClientToken") == Some(token.as_str())));
    assert_eq!(
        lab.tags(o.id.as_str()).await["fleetscale:launch-token"],
        token
    );
    assert_eq!(lab.pool_ids("lost").await.len(), 3);
}

#[tokio::test]
async fn a_cancelled_create_is_finished_by_the_next_create() {
    let lab = Lab::start().await;
    let scaler = lab.scaler(lab.config("cancel").await).await;
    lab.proxy.inject(
        "RunInstances",
        Fault::ForwardThenDelay(Duration::from_secs(5)),
        1,
    );
    let cancelled = tokio::time::timeout(Duration::from_secs(2), scaler.create(&started())).await;
    assert!(cancelled.is_err(), "the create was cancelled mid-call");
    // The launch reached moto before the answer was held back.
    let launched = lab.pool_ids("cancel").await;
    assert_eq!(launched.len(), 1);
    let first_token = lab.proxy.requests_of("RunInstances")[0]
        .param("ClientToken")
        .unwrap()
        .to_string();

    let again = scaler.create(&started()).await.unwrap();
    assert_eq!(
        again.id.to_string(),
        launched[0],
        "the same instance, found by its token"
    );
    assert_eq!(lab.proxy.count("RunInstances"), 1, "no second launch");
    assert_eq!(lab.pool_ids("cancel").await, launched);

    // The token is used up: the next create launches a new instance with a new token.
    let third = scaler.create(&started()).await.unwrap();
    assert_ne!(third.id, again.id);
    let runs = lab.proxy.requests_of("RunInstances");
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[1].param("ClientToken"), Some(first_token.as_str()));
    assert_eq!(lab.pool_ids("cancel").await.len(), 2);
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_and_reported_when_it_persists() {
    let lab = Lab::start().await;
    let scaler = lab.scaler(lab.config("throttled").await).await;

    lab.proxy.inject("DescribeInstances", Fault::throttled(), 3);
    assert!(scaler.list().await.unwrap().is_empty());
    assert_eq!(lab.proxy.count("DescribeInstances"), 4);
    let calls = scaler.api_calls();
    assert_eq!(calls.throttled, 3);
    assert_eq!(calls.retries, 3);

    lab.proxy.reset_counts();
    lab.proxy.inject("RunInstances", Fault::throttled(), 2);
    let m = scaler.create(&started()).await.unwrap();
    assert_eq!(lab.proxy.count("RunInstances"), 3);
    assert_eq!(lab.pool_ids("throttled").await, vec![m.id.to_string()]);

    // More throttling than max_attempts (5): RateLimited, after exactly 5 attempts.
    lab.proxy.reset_counts();
    lab.proxy.inject("StopInstances", Fault::throttled(), 10);
    let err = scaler.stop(&m.id).await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(lab.proxy.count("StopInstances"), 5);
    assert_eq!(lab.state(m.id.as_str()).await, "running");
    lab.proxy.clear_faults();
    scaler.stop(&m.id).await.unwrap();
    assert_eq!(lab.state(m.id.as_str()).await, "stopped");

    // Credentials refused: not retried.
    lab.proxy.reset_counts();
    lab.proxy.inject(
        "DescribeInstances",
        Fault::Error {
            status: 401,
            code: "AuthFailure".into(),
            message: "AWS was not able to validate the provided access credentials".into(),
        },
        1,
    );
    let err = scaler.list().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("AuthFailure"), "{err}");
    assert_eq!(lab.proxy.count("DescribeInstances"), 1);
}

#[tokio::test]
async fn capacity_errors_map_to_capacity_and_move_to_another_subnet() {
    let lab = Lab::start().await;
    let subnets = lab.ec2.describe_subnets().send().await.unwrap();
    let mut subnet_ids: Vec<(String, String)> = subnets
        .subnets()
        .iter()
        .map(|s| {
            (
                s.availability_zone().unwrap().to_string(),
                s.subnet_id().unwrap().to_string(),
            )
        })
        .collect();
    subnet_ids.sort();
    let (first, second) = (subnet_ids[0].1.clone(), subnet_ids[1].1.clone());
    let mut config = lab.config("capacity").await;
    config.subnets = vec![first.clone(), second.clone()];
    let scaler = lab.scaler(config).await;
    scaler.list().await.unwrap();

    lab.proxy
        .inject("RunInstances", Fault::insufficient_capacity(), 1);
    let err = scaler.create(&started()).await.unwrap_err();
    assert!(matches!(err, Error::Capacity { .. }), "{err:?}");
    assert!(
        err.to_string().contains("InsufficientInstanceCapacity"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        lab.proxy.count("RunInstances"),
        1,
        "a capacity error is not retried"
    );
    assert!(
        lab.pool_ids("capacity").await.is_empty(),
        "nothing launched"
    );

    // The next create avoids the subnet that had no capacity.
    let m = scaler.create(&started()).await.unwrap();
    let runs = lab.proxy.requests_of("RunInstances");
    assert_eq!(runs[0].param("SubnetId"), Some(first.as_str()));
    assert_eq!(runs[1].param("SubnetId"), Some(second.as_str()));
    assert_ne!(runs[0].param("ClientToken"), runs[1].param("ClientToken"));
    assert_eq!(
        lab.instance(m.id.as_str()).await.subnet_id(),
        Some(second.as_str())
    );

    // Spot capacity and quota codes too.
    for code in [
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "VcpuLimitExceeded",
    ] {
        lab.proxy.inject(
            "RunInstances",
            Fault::Error {
                status: 400,
                code: code.into(),
                message: "no".into(),
            },
            1,
        );
        let err = scaler.create(&started()).await.unwrap_err();
        assert!(matches!(err, Error::Capacity { .. }), "{code}: {err:?}");
    }
    // Restarting a stopped instance can meet no capacity as well.
    scaler.stop(&m.id).await.unwrap();
    lab.proxy
        .inject("StartInstances", Fault::insufficient_capacity(), 1);
    let err = scaler.start(&m.id).await.unwrap_err();
    assert!(matches!(err, Error::Capacity { .. }), "{err:?}");
    assert_eq!(lab.state(m.id.as_str()).await, "stopped");
    assert_eq!(lab.pool_ids("capacity").await, vec![m.id.to_string()]);
}

/// The state `scaler` lists machine `id` in, if it lists it.
async fn listed_state(scaler: &Ec2Scaler, id: &MachineId) -> Option<MachineState> {
    let list = scaler.list().await.unwrap();
    list.iter().find(|m| &m.id == id).map(|m| m.state)
}

#[tokio::test]
async fn states_map_through_the_whole_lifecycle_and_operations_are_idempotent() {
    let lab = Lab::start().await;
    let scaler = lab.scaler(lab.config("life").await).await;

    let m = scaler.create(&started()).await.unwrap();
    assert_eq!(m.state, MachineState::Starting);
    assert_eq!(lab.state(m.id.as_str()).await, "running");
    assert_eq!(
        listed_state(&scaler, &m.id).await,
        Some(MachineState::Started)
    );
    lab.proxy.reset_counts();
    scaler.start(&m.id).await.unwrap();
    assert_eq!(
        lab.proxy.count("StartInstances"),
        0,
        "already running: nothing sent"
    );

    scaler.stop(&m.id).await.unwrap();
    assert_eq!(lab.proxy.count("StopInstances"), 1);
    assert_eq!(lab.state(m.id.as_str()).await, "stopped");
    assert_eq!(
        listed_state(&scaler, &m.id).await,
        Some(MachineState::Stopped)
    );
    scaler.stop(&m.id).await.unwrap();
    assert_eq!(
        lab.proxy.count("StopInstances"),
        1,
        "already stopped: nothing sent"
    );

    scaler.start(&m.id).await.unwrap();
    assert_eq!(lab.proxy.count("StartInstances"), 1);
    assert_eq!(
        listed_state(&scaler, &m.id).await,
        Some(MachineState::Started)
    );

    scaler.destroy(&m.id).await.unwrap();
    assert_eq!(lab.proxy.count("TerminateInstances"), 1);
    assert_eq!(lab.state(m.id.as_str()).await, "terminated");
    assert_eq!(
        listed_state(&scaler, &m.id).await,
        None,
        "terminated instances are not listed"
    );
    for result in [
        scaler.destroy(&m.id).await,
        scaler.start(&m.id).await,
        scaler.stop(&m.id).await,
    ] {
        assert!(result.unwrap_err().is_not_found());
    }
    assert_eq!(lab.proxy.count("TerminateInstances"), 1);
    assert_eq!(
        lab.proxy.count("StartInstances"),
        1,
        "moto would restart a terminated instance; the scaler never asks"
    );
    let unknown = MachineId::new("i-0123456789abcdef0");
    assert!(scaler.destroy(&unknown).await.unwrap_err().is_not_found());
    assert!(scaler
        .start(&MachineId::new("not-an-id"))
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn a_stopped_create_launches_then_stops_once_running() {
    let lab = Lab::start().await;
    let scaler = lab.scaler(lab.config("cold").await).await;
    assert!(scaler.capabilities().create_stopped);
    let m = scaler
        .create(&CreateRequest::new(InitialState::Stopped))
        .await
        .unwrap();
    assert_eq!(m.state, MachineState::Stopping);
    assert_eq!(lab.proxy.count("RunInstances"), 1);
    assert_eq!(lab.proxy.count("StopInstances"), 1);
    assert_eq!(lab.state(m.id.as_str()).await, "stopped");
    let listed = scaler.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, MachineState::Stopped);
}

#[tokio::test]
async fn a_spot_instance_terminated_behind_the_scalers_back_is_gone_from_the_inventory() {
    let lab = Lab::start().await;
    let mut config = lab.config("spot-loss").await;
    config.market = Market::Spot;
    let scaler = lab.scaler(config).await;
    let lost = scaler.create(&started()).await.unwrap();
    let kept = scaler.create(&started()).await.unwrap();
    assert_eq!(scaler.list().await.unwrap().len(), 2);
    // EC2 reclaims the spot instance.
    lab.ec2
        .terminate_instances()
        .instance_ids(lost.id.as_str())
        .send()
        .await
        .unwrap();
    let listed = scaler.list().await.unwrap();
    assert_eq!(ids(&listed), vec![kept.id.to_string()]);
    assert!(
        !listed
            .iter()
            .any(|m| m.name == lost.name || m.address == lost.address),
        "neither its name nor its address is in the inventory any more"
    );
    assert!(scaler.destroy(&lost.id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn malformed_answers_are_errors_with_context() {
    let lab = Lab::start().await;
    let scaler = lab.scaler(lab.config("garbled").await).await;
    lab.proxy.inject(
        "DescribeInstances",
        Fault::Raw {
            status: 200,
            body: "<html><body>502 Bad Gateway</body></html>".into(),
        },
        10,
    );
    let err = scaler.list().await.unwrap_err();
    assert_eq!(err.kind(), "invalid_response", "{err:?}");
    assert!(err.to_string().contains("DescribeInstances"), "{err}");
    assert_eq!(
        lab.proxy.count("DescribeInstances"),
        5,
        "retried, then reported"
    );
}

#[tokio::test]
async fn no_region_is_a_configuration_error() {
    let config = {
        let mut c = Ec2PoolConfig::new("p");
        c.image_id = Some("ami-1".into());
        c.instance_type = Some("t3.micro".into());
        c
    };
    let sdk = aws_config::SdkConfig::builder().build();
    let err = Ec2Scaler::from_sdk_config(&sdk, config.clone()).unwrap_err();
    assert!(err.to_string().contains("no AWS region"), "{err}");
    let mut with_region = config;
    with_region.region = Some("eu-west-1".into());
    assert_eq!(
        Ec2Scaler::from_sdk_config(&sdk, with_region)
            .unwrap()
            .config()
            .region
            .as_deref(),
        Some("eu-west-1")
    );
}
