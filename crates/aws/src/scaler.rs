//! [`Ec2Scaler`]: the core `Scaler` for one pool of EC2 instances selected by tag.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, Instance, InstanceInterruptionBehavior,
    InstanceMarketOptionsRequest, InstanceType, LaunchTemplateSpecification, MarketType, Placement,
    ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use fleetscale_core::{
    Capabilities, CreateRequest, Error, InitialState, Machine, MachineId, Result, Scaler,
};

use crate::config::{Ec2PoolConfig, Market, LAUNCH_TOKEN_TAG};
use crate::error::{AwsError, ErrorClass, Retry};
use crate::inventory::{self, merge_recent, pick_subnet, state_name, RecentLaunch};

/// Every state but `terminated`: what `list` asks for. Terminated instances stay visible in
/// `DescribeInstances` for about an hour; they are gone for the planner and the reclaimer, so
/// they are not fetched.
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];
/// How often a create with `initial_state = stopped` polls the new instance.
const LAUNCH_POLL: Duration = Duration::from_secs(2);
/// A launch whose outcome is unknown is kept this long for a later create to finish (EC2
/// honours a client token for at least 24 hours after the instance terminates).
const PENDING_LAUNCH_TTL: Duration = Duration::from_secs(3600);
/// At most this many launches with unknown outcome are kept.
const MAX_PENDING_LAUNCHES: usize = 64;
/// A listing stops after this many pages: a guard against an endpoint that pages forever.
const MAX_PAGES: u32 = 10_000;

/// The API actions the scaler sends, for [`ApiCalls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Describe,
    Run,
    Start,
    Stop,
    Terminate,
    CancelSpot,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Describe => "DescribeInstances",
            Action::Run => "RunInstances",
            Action::Start => "StartInstances",
            Action::Stop => "StopInstances",
            Action::Terminate => "TerminateInstances",
            Action::CancelSpot => "CancelSpotInstanceRequests",
        }
    }
}

/// How many requests the scaler sent, by API action (every attempt counts, retries included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiCalls {
    /// `DescribeInstances` (list pages, checks before start/stop/terminate, launch lookups).
    pub describe_instances: u64,
    /// `RunInstances`.
    pub run_instances: u64,
    /// `StartInstances`.
    pub start_instances: u64,
    /// `StopInstances`.
    pub stop_instances: u64,
    /// `TerminateInstances`.
    pub terminate_instances: u64,
    /// `CancelSpotInstanceRequests`.
    pub cancel_spot_instance_requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Answers that were `RequestLimitExceeded` (throttling).
    pub throttled: u64,
}

impl ApiCalls {
    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.describe_instances
            + self.run_instances
            + self.start_instances
            + self.stop_instances
            + self.terminate_instances
            + self.cancel_spot_instance_requests
    }

    /// The calls made since `earlier`.
    pub fn since(&self, earlier: &ApiCalls) -> ApiCalls {
        ApiCalls {
            describe_instances: self
                .describe_instances
                .saturating_sub(earlier.describe_instances),
            run_instances: self.run_instances.saturating_sub(earlier.run_instances),
            start_instances: self.start_instances.saturating_sub(earlier.start_instances),
            stop_instances: self.stop_instances.saturating_sub(earlier.stop_instances),
            terminate_instances: self
                .terminate_instances
                .saturating_sub(earlier.terminate_instances),
            cancel_spot_instance_requests: self
                .cancel_spot_instance_requests
                .saturating_sub(earlier.cancel_spot_instance_requests),
            retries: self.retries.saturating_sub(earlier.retries),
            throttled: self.throttled.saturating_sub(earlier.throttled),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    by_action: [AtomicU64; 6],
    retries: AtomicU64,
    throttled: AtomicU64,
}

impl Counters {
    fn count(&self, a: Action) {
        self.by_action[a as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> ApiCalls {
        let g = |a: Action| self.by_action[a as usize].load(Ordering::Relaxed);
        ApiCalls {
            describe_instances: g(Action::Describe),
            run_instances: g(Action::Run),
            start_instances: g(Action::Start),
            stop_instances: g(Action::Stop),
            terminate_instances: g(Action::Terminate),
            cancel_spot_instance_requests: g(Action::CancelSpot),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

/// A launch: its client token and everything its `RunInstances` depends on, so that a retry
/// sends the very same request.
#[derive(Clone, Debug)]
struct PreparedLaunch {
    token: String,
    request: CreateRequest,
    subnet: Option<String>,
    prepared_at: Instant,
}

impl PreparedLaunch {
    /// Whether this launch can serve `r` (the fields the scaler uses are equal).
    fn serves(&self, r: &CreateRequest) -> bool {
        self.request.initial_state == r.initial_state
            && self.request.name == r.name
            && self.request.labels == r.labels
            && self.request.region == r.region
    }
}

#[derive(Debug, Default)]
struct PoolMemory {
    /// Launched, not yet seen in a listing.
    recent: Vec<RecentLaunch>,
    /// Launches whose outcome is unknown (the call was cancelled or failed ambiguously).
    pending: Vec<PreparedLaunch>,
    /// Live pool instances per subnet, from the last listing plus launches since.
    subnet_counts: BTreeMap<String, u32>,
    /// When each subnet last answered a capacity error.
    capacity_errors: BTreeMap<String, Instant>,
}

/// The machines of one target are the EC2 instances of one **pool**: those tagged
/// `pool_tag = pool` (default tag key `fleetscale:pool`).
///
/// | operation | EC2 calls |
/// |---|---|
/// | `list` | `DescribeInstances` filtered by the pool tag and the live states (all but `terminated`), `MaxResults = page_size`, every page |
/// | `create` | `RunInstances` (one instance; launch template or explicit settings; on-demand or spot; tags; user data; client token), plus, for `initial_state = stopped`, polling and `StopInstances` |
/// | `start` / `stop` | `DescribeInstances` of that instance in the pool, then `StartInstances` / `StopInstances` unless it is already there |
/// | `destroy` | `DescribeInstances` of that instance in the pool, `CancelSpotInstanceRequests` for a spot instance with a request, then `TerminateInstances` |
///
/// # Guarantees
/// - **Only the pool is touched.** `start`, `stop` and `destroy` first look the instance up
///   with the pool tag; an instance without it (another pool's, or one the operator took out
///   of the pool by removing the tag) is [`Error::NotFound`] and nothing is sent. `list`
///   drops any instance an endpoint returns without the pool tag.
/// - **A create never launches twice.** Each create has a client token (EC2's `ClientToken`,
///   and the [`LAUNCH_TOKEN_TAG`] tag, which also works on EC2-compatible APIs that ignore
///   `ClientToken`). A failure after which the launch may have happened (no answer, HTTP 5xx,
///   a garbled answer) is followed by a lookup by that tag before any retry, and the retry
///   reuses the token. A create cancelled mid-call leaves its token to the next create with the
///   same request, which first looks for the instance.
/// - **Idempotent** `start` (pending or running: nothing sent), `stop` (stopping or stopped:
///   nothing sent) and `destroy` (shutting-down: nothing sent); a terminated or unknown
///   instance is [`Error::NotFound`].
/// - **Eventual consistency**: an instance launched by this scaler that `DescribeInstances`
///   does not show yet is listed as `starting` for up to `launch_grace`, so the next tick does
///   not launch it again.
/// - Throttling (`RequestLimitExceeded`), HTTP 5xx, timeouts and dropped connections are
///   retried with exponential backoff and full jitter (`retry`); the SDK's own retries are
///   off so that a launch is never resent without the lookup.
///
/// # States and machines
/// See [`inventory::map_state`] and [`inventory::to_machine`]: `pending` → starting,
/// `running` → started, `stopping` → stopping, `stopped` → stopped, `shutting-down` →
/// destroying, `terminated` → destroyed (gone). Name = private DNS name, address = private IP,
/// region = availability zone, labels = tags plus `instance-type`, `lifecycle`, `az`.
///
/// # Capabilities
/// No suspend; creates need no template (the pool configuration says how to launch);
/// stopped creates except in a one-time spot pool (EC2 cannot stop those). A stopped create
/// launches the instance, waits until it runs (up to `create_stopped_timeout`, polling every
/// 2 s) and stops it: it takes about as long as the instance's boot, so give the engine's
/// `tick_timeout` room for it. If it is cancelled or times out, the instance is left running
/// and is listed as started.
///
/// # Errors
/// `InsufficientInstanceCapacity` (and the other capacity, quota and spot price codes) →
/// [`Error::Capacity`]; throttling after the last retry → [`Error::RateLimited`]; an unknown,
/// terminated or foreign instance → [`Error::NotFound`]; credentials refused →
/// [`Error::Unauthorized`]; an invalid launch (AMI, template, subnet, ...) →
/// [`Error::InvalidRequest`]; an instance in a state the operation cannot start from →
/// [`Error::Conflict`].
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fleetscale_aws::{Ec2PoolConfig, Ec2Scaler};
/// use fleetscale_core::Scaler;
/// let config: Ec2PoolConfig = toml::from_str(r#"
///     pool = "weave-dynamic"
///     region = "eu-west-1"
///     launch_template = { name = "weave-peer", version = "$Latest" }
///     market = "spot"
/// "#)?;
/// let scaler = Ec2Scaler::connect(config).await?;
/// for m in scaler.list().await? {
///     println!("{} {} {:?} {}", m.id, m.name, m.address, m.state);
/// }
/// # Ok(()) }
/// ```
pub struct Ec2Scaler {
    client: Client,
    config: Ec2PoolConfig,
    /// Built by [`Ec2Scaler::connect_listing`]: lists, never acts.
    listing_only: bool,
    memory: Mutex<PoolMemory>,
    counters: Counters,
}

/// The SDK configuration of `loader`, overridden by the pool's region, endpoint and profile.
async fn load_sdk(config: &Ec2PoolConfig, mut loader: ConfigLoader) -> SdkConfig {
    if let Some(r) = &config.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &config.endpoint {
        loader = loader.endpoint_url(e.clone());
    }
    if let Some(p) = &config.profile {
        loader = loader.profile_name(p.clone());
    }
    loader.load().await
}

impl std::fmt::Debug for Ec2Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Scaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ec2Scaler {
    /// Connects with the standard AWS configuration chain (environment, shared config and
    /// credentials files, SSO, web identity, ECS and EC2 instance metadata), overridden by the
    /// pool's `region`, `endpoint` and `profile`.
    ///
    /// # Errors
    /// [`AwsError::Config`] for an invalid configuration or when no region can be found.
    pub async fn connect(config: Ec2PoolConfig) -> Result<Self, AwsError> {
        Self::connect_with(config, aws_config::defaults(BehaviorVersion::latest())).await
    }

    /// Like [`Ec2Scaler::connect`], from a loader the caller prepared (e.g. with static test
    /// credentials); the pool's `region`, `endpoint` and `profile` still override it.
    ///
    /// # Errors
    /// As [`Ec2Scaler::connect`].
    pub async fn connect_with(
        config: Ec2PoolConfig,
        loader: ConfigLoader,
    ) -> Result<Self, AwsError> {
        config.validate()?;
        let sdk = load_sdk(&config, loader).await;
        Self::from_sdk_config(&sdk, config)
    }

    /// A scaler on an already loaded SDK configuration. The pool's `region` and `endpoint`
    /// override it; retries are the scaler's own (the SDK's are turned off) and the timeouts
    /// are the pool's.
    ///
    /// # Errors
    /// [`AwsError::Config`] for an invalid configuration or when no region is set.
    pub fn from_sdk_config(sdk: &SdkConfig, config: Ec2PoolConfig) -> Result<Self, AwsError> {
        config.validate()?;
        Self::build(sdk, config, false)
    }

    /// A scaler that only **lists** the pool: the inventory of a Weave reclaimer
    /// (`fleetscale weave reclaim --inventory ec2:POOL`), which must say which instances exist
    /// and never change any. Launch settings are not needed; `create`, `start`, `stop` and
    /// `destroy` fail with [`AwsError::Unsupported`] before any call. Region, endpoint and
    /// credentials come as in [`Ec2Scaler::connect`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use fleetscale_aws::{Ec2PoolConfig, Ec2Scaler};
    /// use fleetscale_core::Scaler;
    /// let inventory = Ec2Scaler::connect_listing(Ec2PoolConfig::new("weave-dynamic")).await?;
    /// let live = inventory.list().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Ec2Scaler::connect`], launch settings aside
    /// ([`Ec2PoolConfig::validate_selection`]).
    pub async fn connect_listing(config: Ec2PoolConfig) -> Result<Self, AwsError> {
        config.validate_selection()?;
        let sdk = load_sdk(&config, aws_config::defaults(BehaviorVersion::latest())).await;
        Self::build(&sdk, config, true)
    }

    /// Whether this scaler only lists (see [`Ec2Scaler::connect_listing`]).
    pub fn is_listing_only(&self) -> bool {
        self.listing_only
    }

    fn refuse_if_listing_only(&self, operation: &'static str) -> Result<(), AwsError> {
        if self.listing_only {
            return Err(AwsError::Unsupported {
                operation,
                reason: "this scaler only lists the pool (an inventory)".into(),
            });
        }
        Ok(())
    }

    fn build(sdk: &SdkConfig, config: Ec2PoolConfig, listing_only: bool) -> Result<Self, AwsError> {
        let mut builder = aws_sdk_ec2::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.timeouts.connect)
                    .operation_attempt_timeout(config.timeouts.attempt)
                    .build(),
            );
        if sdk.behavior_version().is_none() {
            builder = builder.behavior_version(BehaviorVersion::latest());
        }
        if let Some(r) = &config.region {
            builder = builder.region(Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint {
            builder = builder.endpoint_url(e.clone());
        }
        let ec2 = builder.build();
        if ec2.region().is_none() {
            return Err(AwsError::Config {
                message: "no AWS region: set `region` in the pool or AWS_REGION".into(),
            });
        }
        Ok(Ec2Scaler {
            client: Client::from_conf(ec2),
            config,
            listing_only,
            memory: Mutex::new(PoolMemory::default()),
            counters: Counters::default(),
        })
    }

    /// The pool's configuration.
    pub fn config(&self) -> &Ec2PoolConfig {
        &self.config
    }

    /// The EC2 client (for callers that need another call on the same connection settings).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The requests sent so far, by action.
    pub fn api_calls(&self) -> ApiCalls {
        self.counters.snapshot()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, PoolMemory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pool_filter(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{}", self.config.pool_tag))
            .values(self.config.pool.clone())
            .build()
    }

    fn live_filter() -> Filter {
        let mut f = Filter::builder().name("instance-state-name");
        for s in LIVE_STATES {
            f = f.values(s);
        }
        f.build()
    }

    fn in_pool(&self, i: &Instance) -> bool {
        i.tags().iter().any(|t| {
            t.key() == Some(self.config.pool_tag.as_str()) && t.value() == Some(&self.config.pool)
        })
    }

    /// Runs `f` with the retry policy: `Refused` failures always retried, `Ambiguous` ones
    /// only for idempotent calls (every call sent through here is).
    async fn call<T, F, Fut>(&self, action: Action, mut f: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let retry = &self.config.retry;
        let mut attempt = 0u32;
        loop {
            self.counters.count(action);
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if err.class() == Some(ErrorClass::Throttled) {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            if err.retry() == Retry::Final || attempt >= retry.max_attempts {
                return Err(err);
            }
            let wait = retry.backoff(attempt - 1);
            tracing::debug!(action = action.name(), attempt, ?wait, error = %err, "retrying EC2 call");
            tokio::time::sleep(wait).await;
        }
    }

    /// `DescribeInstances` with these filters, every page.
    async fn describe(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = BTreeSet::new();
        for _ in 0..MAX_PAGES {
            let page = self
                .call(Action::Describe, || {
                    let req = self
                        .client
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .max_results(self.config.page_size)
                        .set_next_token(token.clone());
                    async move {
                        req.send()
                            .await
                            .map_err(|e| AwsError::from_sdk("DescribeInstances", e))
                    }
                })
                .await?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
            match page.next_token().filter(|t| !t.is_empty()) {
                None => return Ok(out),
                Some(t) => {
                    if !seen_tokens.insert(t.to_string()) {
                        return Err(AwsError::InvalidResponse {
                            operation: "DescribeInstances",
                            message: format!(
                                "NextToken {t:?} came back twice: the listing would never end"
                            ),
                            source: None,
                        });
                    }
                    token = Some(t.to_string());
                }
            }
        }
        Err(AwsError::InvalidResponse {
            operation: "DescribeInstances",
            message: format!("more than {MAX_PAGES} pages"),
            source: None,
        })
    }

    /// The pool's instance `id` in any live state, or `None`.
    async fn pool_instance(&self, id: &MachineId) -> Result<Option<Instance>, AwsError> {
        let filters = vec![
            Filter::builder()
                .name("instance-id")
                .values(id.as_str())
                .build(),
            self.pool_filter(),
            Self::live_filter(),
        ];
        let found = self.describe(filters).await?;
        Ok(found
            .into_iter()
            .find(|i| i.instance_id() == Some(id.as_str()) && self.in_pool(i)))
    }

    async fn require_pool_instance(&self, id: &MachineId) -> Result<Instance, AwsError> {
        self.pool_instance(id)
            .await?
            .ok_or_else(|| AwsError::NotInPool {
                id: id.to_string(),
                pool: self.config.pool.clone(),
                reason: String::new(),
            })
    }

    fn not_in_pool(&self, id: &MachineId, reason: &str) -> AwsError {
        AwsError::NotInPool {
            id: id.to_string(),
            pool: self.config.pool.clone(),
            reason: reason.to_string(),
        }
    }

    /// Lists the pool.
    async fn list_pool(&self) -> Result<Vec<Machine>, AwsError> {
        let instances = self
            .describe(vec![self.pool_filter(), Self::live_filter()])
            .await?;
        let mut machines: Vec<Machine> = Vec::with_capacity(instances.len());
        let mut subnet_counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut foreign = 0usize;
        for i in &instances {
            if !self.in_pool(i) {
                foreign += 1;
                continue;
            }
            let m = inventory::to_machine(i).ok_or_else(|| AwsError::InvalidResponse {
                operation: "DescribeInstances",
                message: "an instance without an instance id".into(),
                source: None,
            })?;
            if machines.iter().any(|x| x.id == m.id) {
                continue;
            }
            if m.state.exists() {
                if let Some(s) = i.subnet_id() {
                    *subnet_counts.entry(s.to_string()).or_default() += 1;
                }
            }
            machines.push(m);
        }
        if foreign > 0 {
            tracing::warn!(
                pool = %self.config.pool,
                foreign,
                "DescribeInstances returned instances without the pool tag (filter ignored by the endpoint?); they are not part of the pool"
            );
        }
        let now = Instant::now();
        let mut memory = self.memory();
        let recent = std::mem::take(&mut memory.recent);
        let kept = merge_recent(&mut machines, recent, now, self.config.launch_grace);
        for r in &kept {
            if let Some(s) = &r.subnet {
                *subnet_counts.entry(s.clone()).or_default() += 1;
            }
        }
        memory.recent = kept;
        memory.subnet_counts = subnet_counts;
        Ok(machines)
    }

    /// Takes a pending launch serving `request`, or prepares a new one.
    fn prepare_launch(&self, request: &CreateRequest) -> (PreparedLaunch, bool) {
        let now = Instant::now();
        let mut memory = self.memory();
        memory
            .pending
            .retain(|p| now.saturating_duration_since(p.prepared_at) < PENDING_LAUNCH_TTL);
        if let Some(pos) = memory.pending.iter().position(|p| p.serves(request)) {
            return (memory.pending.remove(pos), true);
        }
        let cooldown = self.config.capacity_cooldown;
        let avoided: Vec<&str> = memory
            .capacity_errors
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) < cooldown)
            .map(|(s, _)| s.as_str())
            .collect();
        let subnet = pick_subnet(&self.config.subnets, &memory.subnet_counts, &avoided)
            .map(|i| self.config.subnets[i].clone());
        (
            PreparedLaunch {
                token: crate::random::launch_token(),
                request: request.clone(),
                subnet,
                prepared_at: now,
            },
            false,
        )
    }

    /// The tags of a new instance: configured tags, the create's labels, `Name`, pool tag, launch token.
    fn launch_tags(&self, launch: &PreparedLaunch) -> Result<Vec<Tag>, AwsError> {
        let mut tags: BTreeMap<String, String> = self.config.tags.clone();
        for (k, v) in &launch.request.labels {
            if k == &self.config.pool_tag || k == LAUNCH_TOKEN_TAG {
                return Err(AwsError::Config {
                    message: format!("create label {k:?} is set by the scaler"),
                });
            }
            if k.to_ascii_lowercase().starts_with("aws:") {
                return Err(AwsError::Config {
                    message: format!("create label {k:?} uses the reserved prefix \"aws:\""),
                });
            }
            tags.insert(k.clone(), v.clone());
        }
        if let Some(n) = &launch.request.name {
            tags.insert("Name".into(), n.clone());
        }
        tags.insert(self.config.pool_tag.clone(), self.config.pool.clone());
        tags.insert(LAUNCH_TOKEN_TAG.into(), launch.token.clone());
        if tags.len() > crate::config::MAX_TAGS {
            return Err(AwsError::Config {
                message: format!(
                    "a new instance would carry {} tags; EC2 allows {}",
                    tags.len(),
                    crate::config::MAX_TAGS
                ),
            });
        }
        Ok(tags
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect())
    }

    /// Sends one `RunInstances` of `launch` and returns the instance.
    async fn run_once(&self, launch: &PreparedLaunch, tags: &[Tag]) -> Result<Instance, AwsError> {
        let c = &self.config;
        let mut req = self
            .client
            .run_instances()
            .min_count(1)
            .max_count(1)
            .client_token(launch.token.clone())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.to_vec()))
                    .build(),
            );
        if let Some(t) = &c.launch_template {
            req = req.launch_template(
                LaunchTemplateSpecification::builder()
                    .set_launch_template_id(t.id.clone())
                    .set_launch_template_name(t.name.clone())
                    .set_version(t.version.clone())
                    .build(),
            );
        }
        if let Some(i) = &c.image_id {
            req = req.image_id(i.clone());
        }
        if let Some(t) = &c.instance_type {
            req = req.instance_type(InstanceType::from(t.as_str()));
        }
        if let Some(s) = &launch.subnet {
            req = req.subnet_id(s.clone());
        }
        for g in &c.security_group_ids {
            req = req.security_group_ids(g.clone());
        }
        if let Some(k) = &c.key_name {
            req = req.key_name(k.clone());
        }
        if let Some(p) = &c.iam_instance_profile {
            let spec = if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p.clone())
            } else {
                IamInstanceProfileSpecification::builder().name(p.clone())
            };
            req = req.iam_instance_profile(spec.build());
        }
        if let (Market::Spot, Some(s)) = (c.market, c.spot_settings()) {
            req = req.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::from(
                                s.interruption.spot_instance_type(),
                            ))
                            .instance_interruption_behavior(InstanceInterruptionBehavior::from(
                                s.interruption.as_str(),
                            ))
                            .set_max_price(s.max_price.clone())
                            .build(),
                    )
                    .build(),
            );
        }
        if let Some(u) = &c.user_data {
            req = req.user_data(aws_smithy_types::base64::encode(u.expose()));
        }
        if let Some(z) = &launch.request.region {
            req = req.placement(Placement::builder().availability_zone(z.clone()).build());
        }
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RunInstances", e))?;
        match out.instances() {
            [one] => Ok(one.clone()),
            other => Err(AwsError::InvalidResponse {
                operation: "RunInstances",
                message: format!("asked for one instance, got {}", other.len()),
                source: None,
            }),
        }
    }

    /// The instance launched with `token`, in any state.
    async fn find_launch(&self, token: &str) -> Result<Option<Instance>, AwsError> {
        let filters = vec![
            self.pool_filter(),
            Filter::builder()
                .name(format!("tag:{LAUNCH_TOKEN_TAG}"))
                .values(token)
                .build(),
        ];
        let found = self.describe(filters).await?;
        Ok(found.into_iter().find(|i| {
            self.in_pool(i)
                && i.tags()
                    .iter()
                    .any(|t| t.key() == Some(LAUNCH_TOKEN_TAG) && t.value() == Some(token))
        }))
    }

    /// Launches one instance for `request`, never twice.
    async fn launch(
        &self,
        request: &CreateRequest,
    ) -> Result<(Instance, Option<String>), AwsError> {
        let (launch, reused) = self.prepare_launch(request);
        let tags = self.launch_tags(&launch)?;
        let mut guard = LaunchGuard {
            scaler: self,
            launch: Some(launch.clone()),
            maybe_launched: reused,
        };
        let retry = &self.config.retry;
        let mut attempt = 0u32;
        loop {
            if guard.maybe_launched {
                if let Some(i) = self.find_launch(&launch.token).await? {
                    tracing::info!(
                        pool = %self.config.pool,
                        token = %launch.token,
                        instance = i.instance_id().unwrap_or(""),
                        "launch found by its token: not launching again"
                    );
                    guard.disarm();
                    return Ok((i, launch.subnet.clone()));
                }
            }
            self.counters.count(Action::Run);
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            // Until an answer comes, the launch may happen: a create dropped here leaves the
            // token to the next create (see LaunchGuard).
            let before = guard.maybe_launched;
            guard.maybe_launched = true;
            let err = match self.run_once(&launch, &tags).await {
                Ok(i) => {
                    guard.disarm();
                    return Ok((i, launch.subnet.clone()));
                }
                Err(e) => e,
            };
            attempt += 1;
            match err.retry() {
                // Refused unexecuted: this attempt launched nothing.
                Retry::Refused => {
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    guard.maybe_launched = before;
                }
                Retry::Ambiguous => {}
                Retry::Final => {
                    guard.maybe_launched = before;
                    if err.class() == Some(ErrorClass::Capacity) {
                        if let Some(s) = &launch.subnet {
                            self.memory()
                                .capacity_errors
                                .insert(s.clone(), Instant::now());
                        }
                    }
                    if !before {
                        guard.disarm();
                    }
                    return Err(err);
                }
            }
            if attempt >= retry.max_attempts {
                if guard.maybe_launched {
                    if let Some(i) = self.find_launch(&launch.token).await? {
                        guard.disarm();
                        return Ok((i, launch.subnet.clone()));
                    }
                } else {
                    guard.disarm();
                }
                return Err(err);
            }
            let wait = retry.backoff(attempt - 1);
            tracing::debug!(attempt, ?wait, error = %err, "retrying RunInstances with the same client token");
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until `id` runs, then stops it (create with `initial_state = stopped`). An
    /// instance `DescribeInstances` does not show yet (eventual consistency) is waited for too.
    async fn stop_when_running(&self, id: &MachineId) -> Result<Machine, AwsError> {
        let started = Instant::now();
        loop {
            let found = self.pool_instance(id).await?;
            let state = found.as_ref().map(state_name).unwrap_or("not yet visible");
            match (state, &found) {
                ("running", Some(i)) => {
                    self.send_stop(id).await?;
                    let mut m =
                        inventory::to_machine(i).ok_or_else(|| AwsError::InvalidResponse {
                            operation: "DescribeInstances",
                            message: "an instance without an instance id".into(),
                            source: None,
                        })?;
                    m.state = fleetscale_core::MachineState::Stopping;
                    return Ok(m);
                }
                ("pending" | "not yet visible", _) => {}
                (other, _) => return Err(wrong_state(id, other, "stop (after launch)")),
            }
            if started.elapsed() >= self.config.create_stopped_timeout {
                return Err(AwsError::LaunchWait {
                    id: id.to_string(),
                    state: state.to_string(),
                    after: self.config.create_stopped_timeout,
                });
            }
            tokio::time::sleep(LAUNCH_POLL.min(self.config.create_stopped_timeout)).await;
        }
    }

    async fn send_stop(&self, id: &MachineId) -> Result<(), AwsError> {
        tracing::info!(pool = %self.config.pool, instance = %id, "stopping EC2 instance");
        self.call(Action::Stop, || {
            let req = self.client.stop_instances().instance_ids(id.as_str());
            async move {
                req.send()
                    .await
                    .map_err(|e| AwsError::from_sdk("StopInstances", e))
            }
        })
        .await
        .map_err(|e| e.unsupported_as("stop"))
        .map(|_| ())
    }

    async fn create_machine(&self, request: &CreateRequest) -> Result<Machine, AwsError> {
        match request.initial_state {
            InitialState::Suspended => {
                return Err(AwsError::Unsupported {
                    operation: "create suspended",
                    reason: "the EC2 backend does not suspend (hibernate) instances".into(),
                })
            }
            InitialState::Stopped if !self.config.can_stop() => {
                return Err(AwsError::Unsupported {
                    operation: "create stopped",
                    reason: "instances of one-time spot requests cannot be stopped (EC2)".into(),
                })
            }
            _ => {}
        }
        if request.region.is_some() && !self.config.subnets.is_empty() {
            return Err(AwsError::Unsupported {
                operation: "create in a zone",
                reason: "the pool's subnets decide the availability zone".into(),
            });
        }
        let (instance, subnet) = self.launch(request).await?;
        let machine =
            inventory::to_machine(&instance).ok_or_else(|| AwsError::InvalidResponse {
                operation: "RunInstances",
                message: "the new instance has no instance id".into(),
                source: None,
            })?;
        if !machine.state.exists() {
            let reason = instance
                .state_reason()
                .and_then(|r| r.message())
                .unwrap_or("no reason given");
            return Err(AwsError::LaunchedButGone {
                id: machine.id.to_string(),
                state: state_name(&instance).to_string(),
                reason: reason.to_string(),
            });
        }
        tracing::info!(
            pool = %self.config.pool,
            instance = %machine.id,
            name = %machine.name,
            address = machine.address.as_deref().unwrap_or(""),
            subnet = subnet.as_deref().unwrap_or(""),
            lifecycle = machine.labels.get(inventory::LABEL_LIFECYCLE).map(String::as_str).unwrap_or(""),
            "launched EC2 instance"
        );
        {
            let mut memory = self.memory();
            if let Some(s) = &subnet {
                *memory.subnet_counts.entry(s.clone()).or_default() += 1;
            }
            memory.recent.retain(|r| r.machine.id != machine.id);
            memory.recent.push(RecentLaunch {
                machine: machine.clone(),
                subnet: subnet.clone(),
                at: Instant::now(),
            });
        }
        if request.initial_state == InitialState::Stopped {
            return self.stop_when_running(&machine.id).await;
        }
        Ok(machine)
    }

    async fn start_machine(&self, id: &MachineId) -> Result<(), AwsError> {
        let i = self.require_pool_instance(id).await?;
        match state_name(&i) {
            "pending" | "running" => Ok(()),
            "stopped" => {
                tracing::info!(pool = %self.config.pool, instance = %id, "starting EC2 instance");
                self.call(Action::Start, || {
                    let req = self.client.start_instances().instance_ids(id.as_str());
                    async move {
                        req.send()
                            .await
                            .map_err(|e| AwsError::from_sdk("StartInstances", e))
                    }
                })
                .await
                .map(|_| ())
            }
            "shutting-down" => Err(self.not_in_pool(id, "shutting-down")),
            other => Err(wrong_state(id, other, "start")),
        }
    }

    async fn stop_machine(&self, id: &MachineId) -> Result<(), AwsError> {
        let i = self.require_pool_instance(id).await?;
        match state_name(&i) {
            "stopping" | "stopped" => Ok(()),
            "running" => self.send_stop(id).await,
            "shutting-down" => Err(self.not_in_pool(id, "shutting-down")),
            other => Err(wrong_state(id, other, "stop")),
        }
    }

    async fn destroy_machine(&self, id: &MachineId) -> Result<(), AwsError> {
        let i = self.require_pool_instance(id).await?;
        let state = state_name(&i).to_string();
        if state == "shutting-down" {
            return Ok(());
        }
        if let Some(request) = inventory::spot_request_to_cancel(&i) {
            // A persistent spot request would launch a replacement once its instance is gone.
            tracing::info!(pool = %self.config.pool, instance = %id, request, "cancelling the spot request of an instance before terminating it");
            let cancelled = self
                .call(Action::CancelSpot, || {
                    let req = self
                        .client
                        .cancel_spot_instance_requests()
                        .spot_instance_request_ids(request);
                    async move {
                        req.send()
                            .await
                            .map_err(|e| AwsError::from_sdk("CancelSpotInstanceRequests", e))
                    }
                })
                .await;
            match cancelled {
                Ok(_) => {}
                Err(e)
                    if e.code()
                        .is_some_and(|c| c.starts_with("InvalidSpotInstanceRequestID")) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            pool = %self.config.pool,
            instance = %id,
            name = i.private_dns_name().unwrap_or(""),
            state = %state,
            "terminating EC2 instance"
        );
        let out = self
            .call(Action::Terminate, || {
                let req = self.client.terminate_instances().instance_ids(id.as_str());
                async move {
                    req.send()
                        .await
                        .map_err(|e| AwsError::from_sdk("TerminateInstances", e))
                }
            })
            .await?;
        let previous = out
            .terminating_instances()
            .iter()
            .find(|c| c.instance_id() == Some(id.as_str()))
            .and_then(|c| c.previous_state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string());
        if previous.as_deref() == Some("terminated") {
            return Err(self.not_in_pool(id, "already terminated"));
        }
        Ok(())
    }
}

/// A launch that may have happened goes back to the pending list when its create is dropped
/// before an answer, for the next create to finish.
struct LaunchGuard<'a> {
    scaler: &'a Ec2Scaler,
    launch: Option<PreparedLaunch>,
    maybe_launched: bool,
}

impl LaunchGuard<'_> {
    fn disarm(&mut self) {
        self.launch = None;
    }
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        if let (Some(l), true) = (self.launch.take(), self.maybe_launched) {
            tracing::warn!(pool = %self.scaler.config.pool, token = %l.token, "launch outcome unknown: the next create with the same request looks for it first");
            let mut memory = self.scaler.memory();
            if memory.pending.len() >= MAX_PENDING_LAUNCHES {
                memory.pending.remove(0);
            }
            memory.pending.push(l);
        }
    }
}

impl AwsError {
    /// `UnsupportedOperation` from EC2 as [`AwsError::Unsupported`] of `operation`.
    fn unsupported_as(self, operation: &'static str) -> AwsError {
        if self.class() == Some(ErrorClass::Unsupported) {
            return AwsError::Unsupported {
                operation,
                reason: self.to_string(),
            };
        }
        self
    }
}

fn core(e: AwsError) -> Error {
    e.into()
}

#[async_trait]
impl Scaler for Ec2Scaler {
    fn capabilities(&self) -> Capabilities {
        Capabilities::DEFAULT
            .with_suspend(false)
            .with_create_needs_template(false)
            .with_create_stopped(self.config.can_stop() && !self.listing_only)
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        self.list_pool().await.map_err(core)
    }

    async fn create(&self, request: &CreateRequest) -> Result<Machine> {
        self.refuse_if_listing_only("create").map_err(core)?;
        self.create_machine(request).await.map_err(core)
    }

    async fn start(&self, id: &MachineId) -> Result<()> {
        self.refuse_if_listing_only("start").map_err(core)?;
        self.start_machine(id).await.map_err(core)
    }

    async fn stop(&self, id: &MachineId) -> Result<()> {
        self.refuse_if_listing_only("stop").map_err(core)?;
        self.stop_machine(id).await.map_err(core)
    }

    async fn destroy(&self, id: &MachineId) -> Result<()> {
        self.refuse_if_listing_only("destroy").map_err(core)?;
        self.destroy_machine(id).await.map_err(core)
    }
}

/// Instance `id` is in `state`, from which `operation` cannot proceed.
fn wrong_state(id: &MachineId, state: &str, operation: &'static str) -> AwsError {
    AwsError::WrongState {
        id: id.to_string(),
        state: state.to_string(),
        operation,
    }
}
