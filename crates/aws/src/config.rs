//! [`Ec2PoolConfig`]: one pool of EC2 instances, as written in a configuration file.
//!
//! A binary deserializes it (TOML, JSON, ...) and hands it to [`crate::Ec2Scaler::connect`];
//! every check runs while deserializing, so a bad value fails at load time with the position
//! the format's parser adds (TOML: line and column of the table). [`Ec2PoolConfig::validate`]
//! runs the same checks for configurations built in code.
//!
//! ```
//! use fleetscale_aws::{Ec2PoolConfig, Market};
//! let config: Ec2PoolConfig = toml::from_str(r##"
//!     pool = "weave-dynamic"
//!     region = "eu-west-1"
//!     launch_template = { name = "weave-peer", version = "$Latest" }
//!     subnets = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
//!     market = "spot"
//!     spot = { interruption = "terminate" }
//!     user_data = "#!/bin/sh\necho hello\n"
//! "##).unwrap();
//! assert_eq!(config.market, Market::Spot);
//! assert!(!format!("{config:?}").contains("echo hello"), "user data is redacted in Debug");
//!
//! let err = toml::from_str::<Ec2PoolConfig>(r#"
//!     pool = "p"
//!     instance_type = "t3.small"
//! "#).unwrap_err().to_string();
//! assert!(err.contains("image_id"), "{err}");
//! ```
//!
//! Sources: tag limits from the EC2 user guide, "Tag restrictions" (key ≤ 128 characters,
//! value ≤ 256, at most 50 tags, keys starting with `aws:` reserved); user data ≤ 16 KiB before
//! base64 (EC2 user guide, "Run commands at launch using instance user data");
//! `SpotMarketOptions` (EC2 API reference: interruption `stop` needs a *persistent* request,
//! and `RunInstances` accepts persistent requests only with `stop` or `hibernate`);
//! `DescribeInstances.MaxResults` 5..=1000 (EC2 API reference).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::AwsError;

/// The tag key that selects a pool's instances, unless the configuration names another.
pub const DEFAULT_POOL_TAG: &str = "fleetscale:pool";
/// The tag every instance launched by [`crate::Ec2Scaler`] carries, holding the launch's client
/// token: a launch whose answer was lost is found again by it (also on EC2-compatible APIs that
/// ignore `ClientToken`).
pub const LAUNCH_TOKEN_TAG: &str = "fleetscale:launch-token";
/// `DescribeInstances` page size by default: the API's maximum, so a pool of up to 1,000
/// instances is listed with one call.
pub const DEFAULT_PAGE_SIZE: i32 = 1000;
/// How long a launched instance that `DescribeInstances` does not show yet (EC2's API is
/// eventually consistent) is still listed from memory, as `starting`.
pub const DEFAULT_LAUNCH_GRACE: Duration = Duration::from_secs(120);
/// How long a create with `initial_state = stopped` waits for the instance to run before it
/// stops it.
pub const DEFAULT_CREATE_STOPPED_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a subnet that answered a capacity error is avoided by later creates (while another
/// configured subnet is available).
pub const DEFAULT_CAPACITY_COOLDOWN: Duration = Duration::from_secs(300);
/// EC2's limit on user data, before base64.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// EC2's limit on tags per resource.
pub const MAX_TAGS: usize = 50;

/// User data for new instances: opaque text (a `#!` script, a `#cloud-config` document, ...),
/// base64-encoded by the scaler as `RunInstances` needs. It may hold secrets (a
/// `WEAVE_PASSWORD`), so `Debug` prints only its size.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserData(String);

impl UserData {
    /// User data holding `text` as given (base64 encoding happens at launch).
    pub fn new(text: impl Into<String>) -> Self {
        UserData(text.into())
    }

    /// The text, for writing it where it belongs (the API request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The size in bytes, before base64.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<user data, {} bytes>", self.0.len())
    }
}

/// A launch template, by id or by name, with a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchTemplateRef {
    /// The template id (`lt-…`). Give this or `name`.
    #[serde(default)]
    pub id: Option<String>,
    /// The template name. Give this or `id`.
    #[serde(default)]
    pub name: Option<String>,
    /// `$Latest`, `$Default` or a version number; EC2 uses `$Default` when absent.
    #[serde(default)]
    pub version: Option<String>,
}

/// How new instances are bought.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    /// On-demand (no `InstanceMarketOptions` is sent: a launch template that asks for spot
    /// still gets spot).
    #[default]
    OnDemand,
    /// Spot, with [`SpotSettings`].
    Spot,
}

/// What EC2 does to a spot instance it interrupts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interruption {
    /// Terminate it (a one-time spot request). The usual choice for Weave dynamic peers:
    /// a lost host is reclaimed, and the autoscaler launches another.
    #[default]
    Terminate,
    /// Stop it (EC2 requires a *persistent* spot request for this, so that is what is sent;
    /// only EC2 restarts such an instance, when capacity returns). Destroying one cancels its
    /// spot request first, or EC2 would launch a replacement.
    Stop,
}

impl Interruption {
    /// The `SpotInstanceType` EC2 requires with this behaviour.
    pub fn spot_instance_type(self) -> &'static str {
        match self {
            Interruption::Terminate => "one-time",
            Interruption::Stop => "persistent",
        }
    }

    /// The API value of `InstanceInterruptionBehavior`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interruption::Terminate => "terminate",
            Interruption::Stop => "stop",
        }
    }
}

/// Spot options (with `market = "spot"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotSettings {
    /// What EC2 does on interruption (default `terminate`).
    #[serde(default)]
    pub interruption: Interruption,
    /// The highest hourly price, in USD as a decimal string (e.g. `"0.05"`); absent = the
    /// on-demand price (AWS recommends leaving it out).
    #[serde(default)]
    pub max_price: Option<String>,
}

/// Retries of calls that failed temporarily: `RequestLimitExceeded` (EC2's throttling), HTTP
/// 5xx, timeouts and dropped connections. Backoff is "full jitter": a uniformly random wait in
/// `[0, min(max_backoff, initial_backoff × 2^retry)]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts per call including the first (default 5; 1 = no retries).
    pub max_attempts: u32,
    /// The first backoff's cap (default 250 ms).
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The cap of any backoff (default 10 s).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetrySettings {
    /// The backoff before retry number `retry` (0-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        fleetscale_core::backoff::full_jitter(self.initial_backoff, self.max_backoff, retry)
    }
}

/// Network timeouts of the EC2 client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSettings {
    /// Connecting to the endpoint (default 5 s).
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// One attempt of one call, answer included (default 30 s).
    #[serde(with = "humantime_serde")]
    pub attempt: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(30),
        }
    }
}

/// One pool of EC2 instances: the instances carrying the tag `pool_tag = pool`, and how new
/// ones are launched. Deserializing validates (see the module docs).
///
/// New instances are launched from `launch_template`, or from the explicit settings
/// (`image_id` and `instance_type` are then required); explicit settings given with a
/// template override the template's, as in `RunInstances`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPoolConfig")]
pub struct Ec2PoolConfig {
    /// The pool's name: the value of the pool tag.
    pub pool: String,
    /// The tag key selecting the pool (default [`DEFAULT_POOL_TAG`]).
    pub pool_tag: String,
    /// The AWS region; absent = the standard chain (`AWS_REGION`, the profile, IMDS).
    pub region: Option<String>,
    /// The EC2 endpoint URL, for tests (`http://127.0.0.1:5000`) and EC2-compatible clouds;
    /// absent = AWS's endpoint for the region (`AWS_ENDPOINT_URL_EC2` is honoured too).
    pub endpoint: Option<String>,
    /// A named profile of `~/.aws/config` for region and credentials; absent = the standard
    /// chain (`AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// The launch template new instances are launched from, when one is used.
    pub launch_template: Option<LaunchTemplateRef>,
    /// The AMI (`ami-…`, or `resolve:ssm:/parameter`).
    pub image_id: Option<String>,
    /// The instance type (`t3.small`).
    pub instance_type: Option<String>,
    /// Subnets to launch into; each create picks the one with the fewest pool instances
    /// (spreading the pool over their availability zones), avoiding for
    /// `capacity_cooldown` one that just had no capacity. Empty = the template's or the
    /// default VPC's.
    pub subnets: Vec<String>,
    /// Security group ids.
    pub security_group_ids: Vec<String>,
    /// The EC2 key pair's name.
    pub key_name: Option<String>,
    /// The IAM instance profile: an ARN (`arn:…`) or a name.
    pub iam_instance_profile: Option<String>,
    /// On-demand (default) or spot.
    pub market: Market,
    /// Spot options; only with `market = "spot"`.
    pub spot: Option<SpotSettings>,
    /// More tags for new instances (the pool tag and [`LAUNCH_TOKEN_TAG`] are always set).
    pub tags: BTreeMap<String, String>,
    /// User data for new instances (e.g. a Weave bootstrap script), at most
    /// [`MAX_USER_DATA_BYTES`].
    pub user_data: Option<UserData>,
    /// `DescribeInstances` page size, 5..=1000 (default [`DEFAULT_PAGE_SIZE`]).
    pub page_size: i32,
    /// See [`DEFAULT_LAUNCH_GRACE`].
    pub launch_grace: Duration,
    /// See [`DEFAULT_CREATE_STOPPED_TIMEOUT`].
    pub create_stopped_timeout: Duration,
    /// See [`DEFAULT_CAPACITY_COOLDOWN`].
    pub capacity_cooldown: Duration,
    /// Retries of temporary failures.
    pub retry: RetrySettings,
    /// Network timeouts.
    pub timeouts: TimeoutSettings,
}

impl Ec2PoolConfig {
    /// A pool with every default and nothing to launch from: set `launch_template` or
    /// `image_id` and `instance_type` before using it.
    pub fn new(pool: impl Into<String>) -> Self {
        Ec2PoolConfig {
            pool: pool.into(),
            pool_tag: DEFAULT_POOL_TAG.to_string(),
            region: None,
            endpoint: None,
            profile: None,
            launch_template: None,
            image_id: None,
            instance_type: None,
            subnets: Vec::new(),
            security_group_ids: Vec::new(),
            key_name: None,
            iam_instance_profile: None,
            market: Market::OnDemand,
            spot: None,
            tags: BTreeMap::new(),
            user_data: None,
            page_size: DEFAULT_PAGE_SIZE,
            launch_grace: DEFAULT_LAUNCH_GRACE,
            create_stopped_timeout: DEFAULT_CREATE_STOPPED_TIMEOUT,
            capacity_cooldown: DEFAULT_CAPACITY_COOLDOWN,
            retry: RetrySettings::default(),
            timeouts: TimeoutSettings::default(),
        }
    }

    /// The spot settings in effect: `Some` exactly when `market = "spot"` (defaults when the
    /// `spot` table is absent).
    pub fn spot_settings(&self) -> Option<SpotSettings> {
        match self.market {
            Market::Spot => Some(self.spot.clone().unwrap_or_default()),
            Market::OnDemand => None,
        }
    }

    /// Whether instances of this pool can be stopped by the caller: not one-time spot ones
    /// (EC2 refuses to stop an instance of a one-time spot request).
    pub fn can_stop(&self) -> bool {
        self.spot_settings()
            .is_none_or(|s| s.interruption == Interruption::Stop)
    }

    /// Checks every rule; the message names the key.
    ///
    /// # Errors
    /// [`AwsError::Config`] for the first rule broken.
    pub fn validate(&self) -> Result<(), AwsError> {
        self.check(true)
    }

    /// Checks every rule except the launch settings (a launch template, or `image_id` and
    /// `instance_type`): what a scaler that only lists the pool needs
    /// ([`crate::Ec2Scaler::connect_listing`]).
    ///
    /// # Errors
    /// [`AwsError::Config`] for the first rule broken.
    pub fn validate_selection(&self) -> Result<(), AwsError> {
        self.check(false)
    }

    fn check(&self, launches: bool) -> Result<(), AwsError> {
        let bad = |m: String| Err(AwsError::Config { message: m });
        check_tag_key("pool_tag", &self.pool_tag)?;
        if self.pool.is_empty() {
            return bad("pool must not be empty".into());
        }
        check_tag_value("pool", &self.pool)?;
        if let Some(r) = &self.region {
            if r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return bad(format!(
                    "region {r:?} is not a region name such as \"eu-west-1\""
                ));
            }
        }
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return bad(format!(
                        "endpoint {e:?} is not an http:// or https:// URL with a host"
                    ))
                }
            }
        }
        if let Some(p) = &self.profile {
            if p.trim().is_empty() {
                return bad("profile must not be empty".into());
            }
        }
        if let Some(t) = &self.launch_template {
            match (&t.id, &t.name) {
                (Some(_), Some(_)) => {
                    return bad("launch_template: give either id or name, not both".into())
                }
                (None, None) => return bad("launch_template: give its id or its name".into()),
                (Some(id), None) => non_blank("launch_template.id", id)?,
                (None, Some(name)) => non_blank("launch_template.name", name)?,
            }
            if let Some(v) = &t.version {
                let ok = v == "$Latest"
                    || v == "$Default"
                    || (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) && v != "0");
                if !ok {
                    return bad(format!(
                        "launch_template.version {v:?} must be \"$Latest\", \"$Default\" or a version number"
                    ));
                }
            }
        } else if launches {
            let missing: Vec<&str> = [
                ("image_id", self.image_id.is_none()),
                ("instance_type", self.instance_type.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                return bad(format!(
                    "without launch_template, {} must be set",
                    missing.join(" and ")
                ));
            }
        }
        for (key, v) in [
            ("image_id", &self.image_id),
            ("instance_type", &self.instance_type),
            ("key_name", &self.key_name),
            ("iam_instance_profile", &self.iam_instance_profile),
        ] {
            if let Some(v) = v {
                non_blank(key, v)?;
            }
        }
        for (key, list) in [
            ("subnets", &self.subnets),
            ("security_group_ids", &self.security_group_ids),
        ] {
            for (i, v) in list.iter().enumerate() {
                non_blank(key, v)?;
                if list[..i].contains(v) {
                    return bad(format!("{key}: {v:?} is listed twice"));
                }
            }
        }
        match (self.market, &self.spot) {
            (Market::OnDemand, Some(_)) => {
                return bad("spot settings are given but market is \"on-demand\"".into())
            }
            (
                Market::Spot,
                Some(SpotSettings {
                    max_price: Some(p), ..
                }),
            ) => {
                let ok = p.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0)
                    && p.chars().all(|c| c.is_ascii_digit() || c == '.');
                if !ok {
                    return bad(format!(
                        "spot.max_price {p:?} must be a positive decimal such as \"0.05\""
                    ));
                }
            }
            _ => {}
        }
        for (k, v) in &self.tags {
            check_tag_key("tags", k)?;
            check_tag_value("tags", v)?;
            if k == &self.pool_tag || k == LAUNCH_TOKEN_TAG {
                return bad(format!(
                    "tags: {k:?} is set by the scaler and cannot be given"
                ));
            }
        }
        // The pool tag, the launch token and a Name tag leave room for the rest.
        if self.tags.len() + 3 > MAX_TAGS {
            return bad(format!(
                "tags: at most {} tags (EC2 allows {MAX_TAGS} per instance, 3 are the scaler's)",
                MAX_TAGS - 3
            ));
        }
        if let Some(u) = &self.user_data {
            if u.len() > MAX_USER_DATA_BYTES {
                return bad(format!(
                    "user_data is {} bytes; EC2 allows at most {MAX_USER_DATA_BYTES} before base64",
                    u.len()
                ));
            }
        }
        if !(5..=1000).contains(&self.page_size) {
            return bad(format!(
                "page_size {} is outside 5..=1000 (DescribeInstances MaxResults)",
                self.page_size
            ));
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts must be at least 1".into());
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            return bad("retry.initial_backoff must not exceed retry.max_backoff".into());
        }
        if self.timeouts.connect.is_zero() || self.timeouts.attempt.is_zero() {
            return bad("timeouts must be positive".into());
        }
        if self.create_stopped_timeout.is_zero() {
            return bad("create_stopped_timeout must be positive".into());
        }
        Ok(())
    }
}

fn non_blank(key: &str, v: &str) -> Result<(), AwsError> {
    if v.trim().is_empty() || v.chars().any(char::is_whitespace) {
        return Err(AwsError::Config {
            message: format!("{key}: {v:?} must be non-empty without spaces"),
        });
    }
    Ok(())
}

fn check_tag_key(what: &str, k: &str) -> Result<(), AwsError> {
    let n = k.chars().count();
    if n == 0 || n > 128 {
        return Err(AwsError::Config {
            message: format!("{what}: tag key {k:?} must have 1 to 128 characters"),
        });
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(AwsError::Config {
            message: format!("{what}: tag key {k:?} starts with the reserved prefix \"aws:\""),
        });
    }
    Ok(())
}

fn check_tag_value(what: &str, v: &str) -> Result<(), AwsError> {
    if v.chars().count() > 256 {
        return Err(AwsError::Config {
            message: format!("{what}: tag value {v:?} is longer than 256 characters"),
        });
    }
    Ok(())
}

fn default_pool_tag() -> String {
    DEFAULT_POOL_TAG.to_string()
}
fn default_page_size() -> i32 {
    DEFAULT_PAGE_SIZE
}
fn default_launch_grace() -> Duration {
    DEFAULT_LAUNCH_GRACE
}
fn default_create_stopped_timeout() -> Duration {
    DEFAULT_CREATE_STOPPED_TIMEOUT
}
fn default_capacity_cooldown() -> Duration {
    DEFAULT_CAPACITY_COOLDOWN
}

/// The file form, checked by `TryFrom` into [`Ec2PoolConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoolConfig {
    pool: String,
    #[serde(default = "default_pool_tag")]
    pool_tag: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    launch_template: Option<LaunchTemplateRef>,
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    security_group_ids: Vec<String>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    iam_instance_profile: Option<String>,
    #[serde(default)]
    market: Market,
    #[serde(default)]
    spot: Option<SpotSettings>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    user_data: Option<UserData>,
    #[serde(default = "default_page_size")]
    page_size: i32,
    #[serde(default = "default_launch_grace", with = "humantime_serde")]
    launch_grace: Duration,
    #[serde(default = "default_create_stopped_timeout", with = "humantime_serde")]
    create_stopped_timeout: Duration,
    #[serde(default = "default_capacity_cooldown", with = "humantime_serde")]
    capacity_cooldown: Duration,
    #[serde(default)]
    retry: RetrySettings,
    #[serde(default)]
    timeouts: TimeoutSettings,
}

impl TryFrom<RawPoolConfig> for Ec2PoolConfig {
    type Error = AwsError;

    fn try_from(r: RawPoolConfig) -> Result<Self, AwsError> {
        let c = Ec2PoolConfig {
            pool: r.pool,
            pool_tag: r.pool_tag,
            region: r.region,
            endpoint: r.endpoint,
            profile: r.profile,
            launch_template: r.launch_template,
            image_id: r.image_id,
            instance_type: r.instance_type,
            subnets: r.subnets,
            security_group_ids: r.security_group_ids,
            key_name: r.key_name,
            iam_instance_profile: r.iam_instance_profile,
            market: r.market,
            spot: r.spot,
            tags: r.tags,
            user_data: r.user_data,
            page_size: r.page_size,
            launch_grace: r.launch_grace,
            create_stopped_timeout: r.create_stopped_timeout,
            capacity_cooldown: r.capacity_cooldown,
            retry: r.retry,
            timeouts: r.timeouts,
        };
        c.validate()?;
        Ok(c)
    }
}

/// Deserializes an optional [`UserData`] from a file path, for callers that keep the script
/// beside the configuration: `#[serde(deserialize_with = "fleetscale_aws::config::user_data_from_file")]`.
///
/// # Errors
/// A deserialization error naming the path when it cannot be read.
pub fn user_data_from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UserData>, D::Error> {
    let path: Option<std::path::PathBuf> = Option::deserialize(d)?;
    match path {
        None => Ok(None),
        Some(p) => std::fs::read_to_string(&p)
            .map(|t| Some(UserData::new(t)))
            .map_err(|e| serde::de::Error::custom(format!("user data file {}: {e}", p.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Ec2PoolConfig, String> {
        toml::from_str::<Ec2PoolConfig>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn full_configuration_parses() {
        let c = parse(
            r##"
            pool = "weave"
            pool_tag = "team:pool"
            region = "us-east-1"
            endpoint = "http://127.0.0.1:5000"
            profile = "ops"
            image_id = "ami-12345678"
            instance_type = "t3.small"
            subnets = ["subnet-1", "subnet-2"]
            security_group_ids = ["sg-1"]
            key_name = "ops-key"
            iam_instance_profile = "arn:aws:iam::123456789012:instance-profile/weave"
            market = "spot"
            spot = { interruption = "stop", max_price = "0.05" }
            tags = { team = "net" }
            user_data = "#!/bin/sh\n"
            page_size = 50
            launch_grace = "1m"
            create_stopped_timeout = "2m"
            capacity_cooldown = "30s"
            retry = { max_attempts = 3, initial_backoff = "100ms", max_backoff = "2s" }
            timeouts = { connect = "1s", attempt = "10s" }
            "##,
        )
        .unwrap();
        assert_eq!(c.pool_tag, "team:pool");
        assert_eq!(c.spot_settings().unwrap().interruption, Interruption::Stop);
        assert!(c.can_stop());
        assert_eq!(c.page_size, 50);
        assert_eq!(c.launch_grace, Duration::from_secs(60));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.timeouts.attempt, Duration::from_secs(10));
    }

    #[test]
    fn defaults() {
        let c = parse("pool = \"p\"\nlaunch_template = { id = \"lt-1\" }").unwrap();
        assert_eq!(c.pool_tag, DEFAULT_POOL_TAG);
        assert_eq!(c.market, Market::OnDemand);
        assert!(c.spot_settings().is_none());
        assert!(c.can_stop());
        assert_eq!(c.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(c, {
            let mut n = Ec2PoolConfig::new("p");
            n.launch_template = Some(LaunchTemplateRef {
                id: Some("lt-1".into()),
                name: None,
                version: None,
            });
            n
        });
        let spot =
            parse("pool = \"p\"\nlaunch_template = { id = \"lt-1\" }\nmarket = \"spot\"").unwrap();
        assert_eq!(
            spot.spot_settings().unwrap().interruption,
            Interruption::Terminate
        );
        assert!(
            !spot.can_stop(),
            "one-time spot instances cannot be stopped"
        );
    }

    #[test]
    fn errors_name_the_key_and_position() {
        let cases = [
            ("pool = \"\"\nimage_id = \"a\"\ninstance_type = \"t\"", "pool must not be empty"),
            ("pool = \"p\"", "image_id and instance_type must be set"),
            ("pool = \"p\"\nimage_id = \"a\"", "instance_type must be set"),
            (
                "pool = \"p\"\nlaunch_template = { id = \"lt-1\", name = \"x\" }",
                "either id or name",
            ),
            ("pool = \"p\"\nlaunch_template = { version = \"1\" }", "its id or its name"),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\", version = \"latest\" }",
                "launch_template.version",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nspot = {}",
                "market is \"on-demand\"",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nmarket = \"spot\"\nspot = { max_price = \"cheap\" }",
                "spot.max_price",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nmarket = \"spot\"\nspot = { interruption = \"hibernate\" }",
                "hibernate",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nendpoint = \"localhost:5000\"",
                "endpoint",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nregion = \"EU West\"",
                "region",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\ntags = { \"aws:x\" = \"1\" }",
                "reserved prefix",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\ntags = { \"fleetscale:pool\" = \"q\" }",
                "set by the scaler",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nsubnets = [\"s\", \"s\"]",
                "listed twice",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\npage_size = 2000",
                "page_size",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nretry = { max_attempts = 0 }",
                "max_attempts",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nsubnet = \"s\"",
                "unknown field `subnet`",
            ),
            (
                "pool = \"p\"\nlaunch_template = { name = \"x\" }\nmarket = \"reserved\"",
                "unknown variant",
            ),
        ];
        // As a binary embeds it: a table of a larger file, whose errors carry a position.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            name: String,
            backend: Ec2PoolConfig,
        }
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            let file = format!("name = \"t\"\n\n[backend]\n{text}\n");
            let err = toml::from_str::<File>(&file).unwrap_err().to_string();
            assert!(err.contains(want), "{file:?}: {err}");
            assert!(err.contains("line "), "no position in {err}");
        }
    }

    #[test]
    fn user_data_limits_and_redaction() {
        let mut c = Ec2PoolConfig::new("p");
        c.image_id = Some("ami-1".into());
        c.instance_type = Some("t3.micro".into());
        c.user_data = Some(UserData::new("WEAVE_PASSWORD=\"s3cret\"\n"));
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(format!("{c:?}").contains("<user data, 24 bytes>"));
        c.user_data = Some(UserData::new("x".repeat(MAX_USER_DATA_BYTES + 1)));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("16384"), "{err}");
        c.user_data = Some(UserData::new("x".repeat(MAX_USER_DATA_BYTES)));
        c.validate().unwrap();
    }

    #[test]
    fn backoff_is_bounded_with_jitter() {
        let r = RetrySettings::default();
        let mut distinct = std::collections::BTreeSet::new();
        for retry in 0..40 {
            let b = r.backoff(retry);
            assert!(b <= r.max_backoff);
            assert!(
                b <= r
                    .initial_backoff
                    .saturating_mul(2u32.saturating_pow(retry.min(30)))
            );
            distinct.insert(b);
        }
        assert!(distinct.len() > 10, "backoffs are jittered: {distinct:?}");
    }
}
