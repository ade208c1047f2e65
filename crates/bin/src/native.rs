//! `fleetscale run` and `fleetscale eval`: many targets from one TOML file.
//!
//! The format is shown in `fleetscale run --help` and the repository README. Every error
//! names the file, the line and column, and the key (the offending line is quoted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::engine::{Engine, EngineConfig, TargetProvider, TargetSpec};
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::{CountRule, ErrorPolicy, Limits, Policy};
use fleetscale_core::record::{MetricReading, TickStatus, TracingObserver, MAX_LOGGED_ACTIONS};
use fleetscale_core::{ClusterMembership, InitialState, MetricSource, Scope};
use fleetscale_fly::apps::FlyApps;
use fleetscale_fly::{ClientConfig, FlyGraphql, GraphqlConfig, MachinesClient, Token, Wildcard};
use fleetscale_metrics::SourceConfig;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use crate::error::{BinError, Result};
use crate::http::{Health, MetricsServer};
use fleetscale_metrics::AutoscalerMetrics;

fn d15() -> Duration {
    Duration::from_secs(15)
}

/// `[engine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Time between passes (default 15s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one tick (default 30s).
    #[serde(with = "humantime_serde")]
    pub tick_timeout: Duration,
    /// Deadline of one metric read (default 10s).
    #[serde(with = "humantime_serde")]
    pub metric_timeout: Duration,
    /// Targets ticking at once (default 4).
    pub concurrency: usize,
    /// Backend calls at once within a tick (default 2).
    pub action_concurrency: usize,
    /// How often wildcard app lists are refreshed (default 60s).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Reclaim lost cluster members whose machine is gone (default false).
    pub reclaim_lost_members: bool,
    /// How long ticks in flight may go on after SIGINT/SIGTERM before they are cancelled
    /// (default 3s, under the 5 s Fly gives a Machine before killing it).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The most creates (and the most starts, stops, destroys) one tick of one target sends
    /// (default 100; at most 10,000).
    pub max_actions_per_tick: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            interval: d15(),
            tick_timeout: Duration::from_secs(30),
            metric_timeout: Duration::from_secs(10),
            concurrency: 4,
            action_concurrency: 2,
            refresh_interval: Duration::from_secs(60),
            reclaim_lost_members: false,
            shutdown_grace: fleetscale_core::engine::DEFAULT_SHUTDOWN_GRACE,
            max_actions_per_tick: fleetscale_core::plan::DEFAULT_MAX_ACTIONS_PER_KIND,
        }
    }
}

impl EngineSection {
    /// Checks the settings: durations neither zero (but the grace) nor longer than 7 days,
    /// concurrencies and the action cap at least 1, the cap at most 10,000. Returns the key at
    /// fault with the message.
    ///
    /// # Errors
    /// `(key, message)`.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        use fleetscale_core::policy::check_duration;
        for (key, d, zero_ok) in [
            ("interval", self.interval, false),
            ("tick_timeout", self.tick_timeout, false),
            ("metric_timeout", self.metric_timeout, false),
            ("refresh_interval", self.refresh_interval, false),
            ("shutdown_grace", self.shutdown_grace, true),
        ] {
            check_duration(&format!("engine.{key}"), d, zero_ok).map_err(|e| (key, bare(&e)))?;
        }
        if self.concurrency == 0 {
            return Err((
                "concurrency",
                "engine.concurrency must be at least 1".into(),
            ));
        }
        if self.action_concurrency == 0 {
            return Err((
                "action_concurrency",
                "engine.action_concurrency must be at least 1".into(),
            ));
        }
        let most = fleetscale_core::expr::MAX_MACHINE_COUNT;
        if !(1..=most).contains(&self.max_actions_per_tick) {
            return Err((
                "max_actions_per_tick",
                format!(
                    "engine.max_actions_per_tick must be from 1 to {most}, got {}",
                    self.max_actions_per_tick
                ),
            ));
        }
        Ok(())
    }
}

/// A core configuration error's message without the `invalid configuration: ` prefix (the
/// binaries' messages are all about configuration).
fn bare(e: &fleetscale_core::Error) -> String {
    match e {
        fleetscale_core::Error::Config { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// `host:port` for `/metrics` and `/healthz` (default `127.0.0.1:9090`); `"off"`
    /// disables the server.
    pub listen: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

fn default_group() -> Option<String> {
    Some("app".into())
}
fn default_token_env() -> String {
    "FLY_API_TOKEN".into()
}
fn default_true() -> bool {
    true
}

/// `backend = { type = "fly", … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlyBackend {
    /// The app, or a wildcard such as `my-app-*` (then `org` is required).
    pub app: String,
    /// The organization slug (wildcards).
    #[serde(default)]
    pub org: Option<String>,
    /// Process group (default `app`; `""` for every machine).
    #[serde(default = "default_group")]
    pub process_group: Option<String>,
    /// Regions for new machines, round-robin (default: the template's).
    #[serde(default)]
    pub regions: Vec<String>,
    /// The environment variable holding the API token (default `FLY_API_TOKEN`).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// The Machines API base URL (default `FLY_FLAPS_BASE_URL`, else Fly's).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Skip the app's ticks while a deploy of it is in progress (its current release is
    /// `running`, asked from Fly's GraphQL API each tick), as fly-autoscaler does. Default
    /// `true`.
    #[serde(default = "default_true")]
    pub release_guard: bool,
    /// The GraphQL API base URL of the release guard (default `FLY_API_BASE_URL`, else
    /// `https://api.fly.io`).
    #[serde(default)]
    pub graphql_base_url: Option<String>,
}

/// The backends (`type = "fly"`, `type = "ec2"`; more can be registered by adding variants).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Fly.io Machines.
    Fly(FlyBackend),
    /// A pool of EC2 instances (see [`fleetscale_aws::Ec2PoolConfig`]).
    Ec2(Box<fleetscale_aws::Ec2PoolConfig>),
}

/// `[target.policy]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Exact created count.
    pub created: Option<Spanned<String>>,
    /// Created min.
    pub created_min: Option<Spanned<String>>,
    /// Created max.
    pub created_max: Option<Spanned<String>>,
    /// Exact started count.
    pub started: Option<Spanned<String>>,
    /// Started min.
    pub started_min: Option<Spanned<String>>,
    /// Started max.
    pub started_max: Option<Spanned<String>>,
    /// Hard limits, steps, cooldowns, stabilization.
    #[serde(default)]
    pub limits: Option<Spanned<Limits>>,
    /// `{ mode = "hold" }` (default) or `{ mode = "fallback", after_failures = 3, count = 2 }`.
    #[serde(default)]
    pub on_error: ErrorPolicy,
}

/// `[target.weave]`: the machines are dynamic peers of a Weave Net cluster.
pub use fleetscale_weave::target::WeaveTargetConfig as WeaveSection;

/// One `[[target]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Display name (default: the app name).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the machines are.
    pub backend: BackendConfig,
    /// State of new machines: `started` (default), `stopped`, `suspended`.
    #[serde(default)]
    pub initial_state: InitialState,
    /// The rules.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Metric sources (`[[target.source]]`, tagged by `type`).
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceConfig>>,
    /// Optional Weave Net membership.
    #[serde(default)]
    pub weave: Option<WeaveSection>,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[engine]`.
    #[serde(default)]
    pub engine: Option<Spanned<EngineSection>>,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[[target]]`.
    #[serde(default, rename = "target")]
    pub targets: Vec<Spanned<TargetConfig>>,
    /// `[coordination]`: replicas sharing the targets through etcd (absent: this process
    /// owns every target).
    #[serde(default)]
    pub coordination: Option<Spanned<fleetscale_etcd::CoordinationSection>>,
}

impl FileConfig {
    /// The `[engine]` settings (the defaults when the table is absent).
    pub fn engine(&self) -> EngineSection {
        self.engine
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_default()
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `path:line:col: message` and the quoted line.
pub fn located(path: &Path, text: &str, offset: usize, message: &str) -> String {
    let (line, col) = line_col(text, offset);
    let src = text.lines().nth(line - 1).unwrap_or("").trim_end();
    format!(
        "{}:{line}:{col}: {message}\n  {line:>4} | {src}",
        path.display()
    )
}

/// One `${NAME}` replaced by its value: where it was in the file and where its value is in the
/// expanded text.
#[derive(Clone, Debug)]
struct Substitution {
    raw: std::ops::Range<usize>,
    expanded: std::ops::Range<usize>,
    name: String,
    value: String,
}

/// A configuration file as written and as parsed (`${VAR}` replaced), with the map between
/// the two so that every message quotes the file as written: an error never shows the value
/// of a variable (a token, typically), only `${NAME}`.
#[derive(Clone, Debug)]
pub struct ConfigText {
    /// The file as written (a leading byte order mark removed).
    pub raw: String,
    /// The text that is parsed.
    pub expanded: String,
    substitutions: Vec<Substitution>,
}

impl ConfigText {
    /// A text without any substitution (tests, strings built in code).
    pub fn plain(text: &str) -> ConfigText {
        ConfigText {
            raw: text.to_owned(),
            expanded: text.to_owned(),
            substitutions: Vec::new(),
        }
    }

    /// Replaces `${NAME}` with the environment variable `NAME` (not `$NAME`, which PromQL
    /// queries use; `${APP_NAME}`, `${TARGET}`, `${GROUP}` are left for query-time
    /// expansion). Nothing is replaced inside TOML comments (`# …` outside strings). A leading
    /// UTF-8 byte order mark is dropped.
    ///
    /// # Errors
    /// An unset variable, with its position in the file as written.
    pub fn expand(
        path: &Path,
        text: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConfigText> {
        let raw = text.strip_prefix('\u{feff}').unwrap_or(text).to_owned();
        let mut out = String::with_capacity(raw.len());
        let mut subs = Vec::new();
        let b = raw.as_bytes();
        let comments = comment_mask(&raw);
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            if comments[i] || b[i] != b'$' || b.get(i + 1) != Some(&b'{') {
                i += 1;
                continue;
            }
            let Some(len) = raw[i + 2..].find('}') else {
                i += 1;
                continue;
            };
            let name = &raw[i + 2..i + 2 + len];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let end = i + 2 + len + 1;
            if valid && !matches!(name, "APP_NAME" | "TARGET" | "GROUP") {
                let Some(value) = getenv(name) else {
                    return Err(BinError::config(located(
                        path,
                        &raw,
                        i,
                        &format!("environment variable {name} is not set"),
                    )));
                };
                out.push_str(&raw[copied..i]);
                let at = out.len();
                out.push_str(&value);
                subs.push(Substitution {
                    raw: i..end,
                    expanded: at..out.len(),
                    name: name.to_owned(),
                    value,
                });
                copied = end;
                i = end;
            } else {
                i += 1;
            }
        }
        out.push_str(&raw[copied..]);
        Ok(ConfigText {
            raw,
            expanded: out,
            substitutions: subs,
        })
    }

    /// The offset in the file as written of an offset in the expanded text (the start of
    /// `${NAME}` for an offset inside a substituted value).
    pub fn raw_offset(&self, expanded: usize) -> usize {
        let mut delta: isize = 0;
        for s in &self.substitutions {
            if expanded < s.expanded.start {
                break;
            }
            if expanded < s.expanded.end {
                return s.raw.start;
            }
            delta = s.raw.end as isize - s.expanded.end as isize;
        }
        (expanded as isize + delta).max(0) as usize
    }

    /// `message` with every substituted value written back as `${NAME}`.
    pub fn unexpand(&self, message: &str) -> String {
        let subs: Vec<(String, String)> = self
            .substitutions
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        crate::redact::unexpand(message, &subs)
    }

    /// `path:line:col: message` and the line as written in the file, for an offset in the
    /// expanded text.
    pub fn located(&self, path: &Path, expanded_offset: usize, message: &str) -> String {
        located(
            path,
            &self.raw,
            self.raw_offset(expanded_offset),
            &self.unexpand(message),
        )
    }

    /// The offset of the line of `key = …` in the table that starts at `table` (an
    /// expanded-text span whose start is the table's header or first key), up to the next
    /// table header; the table's start when the key is not found there.
    pub fn key_offset(&self, table: std::ops::Range<usize>, key: &str) -> usize {
        let start = table.start.min(self.expanded.len());
        let mut at = start;
        for (i, line) in self.expanded[start..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                break;
            }
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return at + (line.len() - t.len());
                }
            }
            at += line.len();
        }
        start
    }
}

/// Which bytes of a TOML text are inside comments (`# …` outside of strings): just enough of
/// TOML's lexical structure (basic and literal strings, single and multi-line, escapes) to
/// leave `${VAR}` in comments alone.
fn comment_mask(text: &str) -> Vec<bool> {
    let b = text.as_bytes();
    let mut mask = vec![false; b.len()];
    let starts = |i: usize, pat: &[u8]| b.get(i..i + pat.len()) == Some(pat);
    // The end of a string whose content starts at `i`: just past the closing delimiter.
    let string_end = |mut i: usize, delim: &[u8], escapes: bool, multiline: bool| -> usize {
        while i < b.len() {
            if escapes && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if !multiline && b[i] == b'\n' {
                return i;
            }
            if starts(i, delim) {
                i += delim.len();
                // Up to two quotes right before a closing `"""` belong to the content.
                if multiline {
                    let mut extra = 0;
                    while extra < 2 && b.get(i) == Some(&delim[0]) {
                        i += 1;
                        extra += 1;
                    }
                }
                return i;
            }
            i += 1;
        }
        b.len()
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    mask[i] = true;
                    i += 1;
                }
            }
            b'"' if starts(i, b"\"\"\"") => i = string_end(i + 3, b"\"\"\"", true, true),
            b'"' => i = string_end(i + 1, b"\"", true, false),
            b'\'' if starts(i, b"\'\'\'") => i = string_end(i + 3, b"\'\'\'", false, true),
            b'\'' => i = string_end(i + 1, b"\'", false, false),
            _ => i += 1,
        }
    }
    mask
}

/// Reads and parses a file.
///
/// # Errors
/// The file cannot be read; a TOML or type error (file, line, column, key, the line quoted as
/// written, never an expanded value).
pub fn load(
    path: &Path,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(FileConfig, ConfigText)> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| BinError::io(format!("read {}", path.display()), e))?;
    let text = ConfigText::expand(path, &raw, getenv)?;
    let cfg: FileConfig = toml::from_str(&text.expanded).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        BinError::config(text.located(path, offset, e.message().trim()))
    })?;
    if cfg.targets.is_empty() {
        return Err(BinError::config(format!(
            "{}: no [[target]] defined",
            path.display()
        )));
    }
    if let Some(c) = &cfg.coordination {
        c.get_ref().etcd_config().map_err(|e| {
            BinError::config(text.located(path, c.span().start, &format!("coordination: {e}")))
        })?;
    }
    Ok((cfg, text))
}

struct Template {
    name: Option<String>,
    fly: FlyBackend,
    /// The Machines API base URL the target's client uses (targets on different APIs never
    /// overlap).
    api: String,
    /// The app or wildcard, with one scaler per app.
    apps: FlyApps,
    policy: Arc<Policy>,
    sources: Vec<Arc<dyn MetricSource>>,
    initial_state: InitialState,
    max_actions_per_tick: u32,
    weave: Option<WeaveSection>,
}

impl Template {
    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.fly.app.clone())
    }

    /// The process group, `None` for every machine of the app.
    fn group(&self) -> Option<&str> {
        self.fly.process_group.as_deref().filter(|g| !g.is_empty())
    }

    /// Whether this template and `other` would manage the same machines of `app`: same API,
    /// and process groups that overlap (one of them every group, or the same group).
    fn shares_machines_with(&self, other: &Template) -> bool {
        self.api == other.api
            && match (self.group(), other.group()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The targets of a file: fixed apps and wildcards (re-listed at every refresh).
pub struct NativeTargets {
    templates: Vec<Template>,
    /// The EC2 targets.
    ec2: Vec<crate::ec2::Ec2Target>,
    memberships: Mutex<HashMap<String, Arc<dyn ClusterMembership>>>,
    /// Apps claimed by two targets at a refresh, already logged (logged again only once the
    /// conflict has gone away and come back).
    conflicts: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for NativeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTargets")
            .field("templates", &self.templates.len())
            .finish_non_exhaustive()
    }
}

/// A count rule of `[target.policy]`: each expression is parsed on its own so that an error
/// points at its own key (and column), and the messages use this file's key names
/// (`created_min`, not fly-autoscaler's `min-created-machine-count`).
pub(crate) fn rule(
    path: &Path,
    text: &ConfigText,
    kind: &str,
    single: &Option<Spanned<String>>,
    min: &Option<Spanned<String>>,
    max: &Option<Spanned<String>>,
) -> Result<CountRule> {
    let keys = [
        (kind.to_owned(), single),
        (format!("{kind}_min"), min),
        (format!("{kind}_max"), max),
    ];
    for (key, value) in &keys {
        let Some(v) = value else { continue };
        if let Err(e) = fleetscale_core::expr::Expr::parse(v.get_ref()) {
            return Err(BinError::config(text.located(
                path,
                expr_offset(text, v, e.column),
                &format!("policy.{key}: {e}"),
            )));
        }
    }
    let first = keys
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|s| s.span().start)
        .next()
        .unwrap_or(0);
    CountRule::from_settings(
        kind,
        single.as_ref().map(|s| s.get_ref().as_str()),
        min.as_ref().map(|s| s.get_ref().as_str()),
        max.as_ref().map(|s| s.get_ref().as_str()),
    )
    .map_err(|e| {
        let msg = bare(&e)
            .replace(
                &format!("min/max-{kind}-machine-count"),
                &format!("{kind}_min/{kind}_max"),
            )
            .replace(&format!("min-{kind}-machine-count"), &format!("{kind}_min"))
            .replace(&format!("max-{kind}-machine-count"), &format!("{kind}_max"))
            .replace(&format!("{kind}-machine-count"), kind);
        BinError::config(text.located(path, first, &format!("policy: {msg}")))
    })
}

/// The offset of character `column` (1-based) of an expression written as a TOML string at
/// `value`'s span (just past the opening quote; exact unless the string has escapes).
fn expr_offset(text: &ConfigText, value: &Spanned<String>, column: Option<usize>) -> usize {
    let start = value.span().start;
    let Some(col) = column else { return start };
    let quote = text.expanded[start..]
        .chars()
        .next()
        .map_or(0, char::len_utf8);
    let inner: usize = value
        .get_ref()
        .chars()
        .take(col.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (start + quote + inner).min(value.span().end)
}

impl NativeTargets {
    /// Builds every target of `cfg` (sources, policies, clients), checking expressions
    /// against the metric names, the `[engine]` settings, and that no two targets manage the
    /// same machines. Every secret of the file (the Fly tokens, the sources' tokens) is
    /// registered with [`crate::redact`].
    ///
    /// # Errors
    /// Located configuration errors (the line as written in the file); a missing or empty
    /// Fly token; two targets for the same app and process group, or a wildcard that matches
    /// an app another target names.
    pub fn build(
        path: &Path,
        text: &ConfigText,
        cfg: &FileConfig,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NativeTargets> {
        if let Some(engine) = &cfg.engine {
            if let Err((key, message)) = engine.get_ref().check() {
                let at = text.key_offset(engine.span(), key);
                return Err(BinError::config(text.located(path, at, &message)));
            }
        }
        let engine = cfg.engine();
        let mut templates: Vec<Template> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ec2: Vec<crate::ec2::Ec2Target> = Vec::new();
        for t in &cfg.targets {
            let span = t.span();
            let at = span.start;
            let t = t.get_ref();
            let here = |msg: String| BinError::config(text.located(path, at, &msg));
            let label = t.name.clone().unwrap_or_else(|| match &t.backend {
                BackendConfig::Fly(fly) => fly.app.clone(),
                BackendConfig::Ec2(pool) => pool.pool.clone(),
            });
            if let BackendConfig::Fly(fly) = &t.backend {
                if fly.app.trim().is_empty() {
                    return Err(here(format!("target {label:?}: backend.app is empty")));
                }
                if fly.app.contains('*') && fly.org.as_deref().unwrap_or("").is_empty() {
                    return Err(here(format!(
                        "target {label:?}: backend.org is required when backend.app has a wildcard"
                    )));
                }
            }
            if let Some(first) = names.insert(label.clone(), at) {
                let (line, _) = line_col(&text.raw, text.raw_offset(first));
                return Err(here(format!(
                    "target {label:?}: a target of this name is already defined at line {line}; names must be unique (set `name`)"
                )));
            }
            let p = &t.policy;
            let limits = p.limits.as_ref().map(|l| *l.get_ref()).unwrap_or_default();
            let policy = Policy {
                created: rule(
                    path,
                    text,
                    "created",
                    &p.created,
                    &p.created_min,
                    &p.created_max,
                )?,
                started: rule(
                    path,
                    text,
                    "started",
                    &p.started,
                    &p.started_min,
                    &p.started_max,
                )?,
                limits,
                on_error: p.on_error,
            };
            let mut sources: Vec<Arc<dyn MetricSource>> = Vec::new();
            for s in &t.sources {
                let source_at = s.span().start;
                let s = s.get_ref();
                for secret in s.secrets() {
                    crate::redact::register(secret.expose());
                }
                sources.push(s.build().map_err(|e| {
                    BinError::config(text.located(
                        path,
                        source_at,
                        &format!(
                            "target {label:?}: source {:?}: {}",
                            s.name(),
                            e.to_string()
                                .replace(&format!("metric `{}`: ", s.name()), "")
                        ),
                    ))
                })?);
            }
            let metric_names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
            if let Err(e) = policy.check(&metric_names) {
                // Point at the expression or the limits at fault when it can be found.
                let exprs = [
                    &p.created,
                    &p.created_min,
                    &p.created_max,
                    &p.started,
                    &p.started_min,
                    &p.started_max,
                ];
                let culprit = match &e {
                    fleetscale_core::Error::Expression(x) => exprs
                        .iter()
                        .filter_map(|v| v.as_ref())
                        .find(|v| *v.get_ref() == x.expression)
                        .map(|v| expr_offset(text, v, x.column)),
                    _ if bare(&e).starts_with("limits") => p.limits.as_ref().map(|l| {
                        // `limits.cooldown_after_scale_up is …` or `limits: created min …`.
                        let message = bare(&e);
                        let key = message
                            .trim_start_matches("limits")
                            .trim_start_matches(['.', ':', ' '])
                            .split([' ', '.'])
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        text.key_offset(l.span(), &key)
                    }),
                    _ => None,
                };
                let message = match &e {
                    fleetscale_core::Error::Config { .. } => bare(&e),
                    e => e.to_string(),
                };
                return Err(BinError::config(text.located(
                    path,
                    culprit.unwrap_or(at),
                    &format!("target {label:?}: {message}"),
                )));
            }
            if let Some(w) = &t.weave {
                if let Some(d) = w.min_unreachable {
                    fleetscale_core::policy::check_duration("weave.min_unreachable", d, true)
                        .map_err(|e| here(format!("target {label:?}: {}", bare(&e))))?;
                }
            }
            let fly = match &t.backend {
                BackendConfig::Fly(fly) => fly,
                BackendConfig::Ec2(pool) => {
                    let target = crate::ec2::Ec2Target::new(
                        label.clone(),
                        (**pool).clone(),
                        t,
                        Arc::new(policy),
                        sources,
                        engine.max_actions_per_tick,
                    )
                    .and_then(|e| match ec2.iter().find(|o| o.same_pool(&e)) {
                        Some(o) => Err(o.overlap_message()),
                        None => Ok(e),
                    })
                    .map_err(|m| here(format!("target {label:?}: {m}")))?;
                    ec2.push(target);
                    continue;
                }
            };
            // An autoscaler without credentials can do nothing; say so at start, as
            // fly-autoscaler does ("api token required"), rather than at every tick.
            let token = match getenv(&fly.token_env) {
                Some(t) if !t.trim().is_empty() => {
                    crate::redact::register(&t);
                    Token::new(t)
                }
                _ => {
                    return Err(here(format!(
                        "target {label:?}: Fly API token required: set the environment variable {} (backend.token_env names it), e.g. to the output of `fly tokens create deploy -a {}`",
                        fly.token_env,
                        if fly.app.contains('*') { "<app>" } else { fly.app.as_str() }
                    )))
                }
            };
            let token = Some(token);
            let mut cc = ClientConfig::default();
            if let Some(url) = fly
                .base_url
                .clone()
                .or_else(|| getenv(fleetscale_fly::client::BASE_URL_ENV))
                .filter(|u| !u.trim().is_empty())
            {
                cc.base_url = url;
            }
            let api = cc.base_url.trim_end_matches('/').to_owned();
            let release_guard = if fly.release_guard {
                let mut gc = GraphqlConfig::from_getenv(getenv);
                if let Some(url) = fly
                    .graphql_base_url
                    .clone()
                    .filter(|u| !u.trim().is_empty())
                {
                    gc.base_url = url;
                }
                Some(
                    FlyGraphql::new(token.clone(), gc)
                        .map_err(|e| here(format!("target {label:?}: {e}")))?,
                )
            } else {
                None
            };
            let client = MachinesClient::new(token, cc)
                .map_err(|e| here(format!("target {label:?}: {e}")))?;
            let mut apps =
                FlyApps::new(client, fly.app.clone(), fly.org.clone().unwrap_or_default())
                    .with_process_group(fly.process_group.clone())
                    .with_regions(fly.regions.clone());
            if let Some(g) = release_guard {
                apps = apps.with_release_guard(g);
            }
            let template = Template {
                name: t.name.clone(),
                fly: fly.clone(),
                api,
                apps,
                policy: Arc::new(policy),
                sources,
                initial_state: t.initial_state,
                max_actions_per_tick: engine.max_actions_per_tick,
                weave: t.weave.clone(),
            };
            if let Some(message) = overlap(&templates, &template) {
                return Err(here(format!("target {label:?}: {message}")));
            }
            templates.push(template);
        }
        Ok(NativeTargets {
            templates,
            ec2,
            memberships: Mutex::new(HashMap::new()),
            conflicts: Mutex::new(std::collections::BTreeSet::new()),
        })
    }
    fn spec(&self, t: &Template, app: &str, name: String) -> fleetscale_core::Result<TargetSpec> {
        let scaler = t.apps.scaler(app)?;
        // `$APP_NAME` in queries and `app_name` in expressions are the app, whatever the
        // target's display name.
        let mut scope = Scope::new(app).with_var("APP_NAME", app);
        if let Some(g) = t.fly.process_group.clone().filter(|g| !g.is_empty()) {
            scope = scope.with_group(g);
        }
        if let Some(org) = &t.fly.org {
            scope = scope.with_var("ORG", org.clone());
        }
        let membership = match &t.weave {
            None => None,
            Some(w) => {
                let mut cache = self.memberships.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(&name) {
                    Some(m) => Some(m.clone()),
                    None => {
                        // Peers are bound to this target's machines under its own name.
                        let m: Arc<dyn ClusterMembership> = Arc::new(w.membership(&name)?);
                        cache.insert(name.clone(), m.clone());
                        Some(m)
                    }
                }
            }
        };
        let mut spec = TargetSpec::new(
            Scope {
                target: name,
                ..scope
            },
            scaler,
            Policy::default(),
        )
        .with_shared_policy(t.policy.clone())
        .with_sources(t.sources.clone())
        .with_plan_options(
            PlanOptions::default()
                .with_initial_state(t.initial_state)
                .with_max_actions_per_kind(Some(t.max_actions_per_tick)),
        );
        if let Some(m) = membership {
            spec = spec.with_membership(m);
        }
        Ok(spec)
    }
}

/// Why `new` would manage machines an earlier template manages, if it would: two fixed
/// targets of one app, a wildcard that matches a named app, or two identical wildcards, with
/// process groups that overlap. (Two different wildcards can match the same app only at run
/// time; [`NativeTargets`] then keeps the app with the first target and logs the conflict.)
fn overlap(earlier: &[Template], new: &Template) -> Option<String> {
    let group = |t: &Template| {
        t.group().map_or("every process group".to_owned(), |g| {
            format!("process group {g:?}")
        })
    };
    for old in earlier.iter().filter(|o| o.shares_machines_with(new)) {
        let (a, b) = (&old.fly.app, &new.fly.app);
        let clash = match (a.contains('*'), b.contains('*')) {
            (false, false) => a == b,
            (true, false) => Wildcard::new(a.clone()).matches(b),
            (false, true) => Wildcard::new(b.clone()).matches(a),
            (true, true) => a == b,
        };
        if clash {
            return Some(format!(
                "manages the same machines as target {:?} (app {b:?}, {}; the other: app {a:?}, {}): two targets would fight over them, each scaling what the other just scaled; give them different apps or different process groups",
                old.label(),
                group(new),
                group(old),
            ));
        }
    }
    None
}

#[async_trait]
impl TargetProvider for NativeTargets {
    /// Every fixed target, and for wildcards every matching app (the last good list when a
    /// refresh fails).
    ///
    /// An app matched by two targets whose process groups overlap (two different wildcards)
    /// is kept with the first of them and skipped by the other, with an ERROR once; a
    /// wildcard that matches no app says so at WARN once.
    async fn targets(&self) -> fleetscale_core::Result<Vec<TargetSpec>> {
        let mut out = Vec::new();
        // (app, template index) of every app taken so far.
        let mut taken: Vec<(String, usize)> = Vec::new();
        let mut conflicts = std::collections::BTreeSet::new();
        for (i, t) in self.templates.iter().enumerate() {
            let list = t.apps.list().await;
            if let Some(e) = &list.refresh_error {
                tracing::error!(pattern = %t.fly.app, err = %e, "app list update failed; keeping the last good list");
            }
            if list.newly_empty {
                tracing::warn!(
                    target_name = %t.label(),
                    pattern = %t.fly.app,
                    org = %t.apps.org(),
                    "app pattern {:?} matches no app of organization {:?}: nothing to scale for target {:?}",
                    t.fly.app,
                    t.apps.org(),
                    t.label()
                );
            }
            for app in list.apps {
                if let Some((_, j)) = taken
                    .iter()
                    .find(|(a, j)| *a == app && self.templates[*j].shares_machines_with(t))
                {
                    let key = format!("{app}\u{0}{i}");
                    let logged = self
                        .conflicts
                        .lock()
                        .map(|c| c.contains(&key))
                        .unwrap_or(true);
                    if !logged {
                        tracing::error!(
                            app = %app,
                            "app {app:?} is matched by target {:?} and by target {:?}, whose process groups overlap: only {:?} manages it",
                            self.templates[*j].label(),
                            t.label(),
                            self.templates[*j].label()
                        );
                    }
                    conflicts.insert(key);
                    continue;
                }
                taken.push((app.clone(), i));
                let name = match (&t.name, t.apps.is_wildcard()) {
                    (Some(n), true) => format!("{n}/{app}"),
                    (Some(n), false) => n.clone(),
                    (None, _) => app.clone(),
                };
                out.push(self.spec(t, &app, name)?);
            }
        }
        if let Ok(mut c) = self.conflicts.lock() {
            *c = conflicts;
        }
        for e in &self.ec2 {
            out.push(e.spec().await?);
        }
        // The membership of a target whose app is no longer listed goes with it.
        self.memberships
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| out.iter().any(|spec| spec.scope.target == *name));
        Ok(out)
    }
}

fn engine_config(e: &EngineSection, dry_run: bool) -> EngineConfig {
    EngineConfig::default()
        .with_interval(e.interval)
        .with_tick_timeout(e.tick_timeout)
        .with_metric_timeout(e.metric_timeout)
        .with_concurrency(e.concurrency.max(1))
        .with_action_concurrency(e.action_concurrency.max(1))
        .with_refresh_interval(e.refresh_interval)
        .with_dry_run(dry_run)
        .with_reclaim_lost_members(e.reclaim_lost_members)
        .with_shutdown_grace(e.shutdown_grace)
}

fn getenv(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Refuses a variable the file uses (`${NAME}`, outside comments) or a target's token
/// variable when it is set but not valid UTF-8: reading it as unset would report it "not set".
///
/// # Errors
/// `environment variable X is set but its value is not valid UTF-8`.
pub fn check_env_utf8(raw: &str) -> Result<()> {
    let comments = comment_mask(raw);
    let mut names: Vec<&str> = Vec::new();
    let mut rest = raw;
    let mut base = 0;
    while let Some(i) = rest.find("${") {
        let at = base + i;
        let after = &rest[i + 2..];
        if let Some(end) = after.find('}') {
            if !comments[at] {
                names.push(&after[..end]);
            }
        }
        base = at + 2;
        rest = &raw[base..];
    }
    names.extend(["FLY_API_TOKEN", "FLY_FLAPS_BASE_URL", "FLY_API_BASE_URL"]);
    // `token_env = "X"` values.
    for line in raw.lines() {
        if let Some(i) = line.find("token_env") {
            let tail = &line[i..];
            if let Some(q) = tail.split('"').nth(1) {
                names.push(q);
            }
        }
    }
    for name in names {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            continue;
        }
        if let Some(v) = std::env::var_os(name) {
            if v.to_str().is_none() {
                return Err(BinError::config(format!(
                    "environment variable {name} is set but its value is not valid UTF-8"
                )));
            }
        }
    }
    Ok(())
}

/// Reads, checks and builds a configuration file with the process environment.
fn load_and_build(path: &Path) -> Result<(FileConfig, NativeTargets)> {
    if let Ok(raw) = std::fs::read_to_string(path) {
        check_env_utf8(&raw)?;
    }
    let (cfg, text) = load(path, &getenv)?;
    let provider = NativeTargets::build(path, &text, &cfg, &getenv)?;
    Ok((cfg, provider))
}

/// Logs why a tick was skipped by its backend (e.g. `release in progress`) at WARN; the
/// [`TracingObserver`] line only says `status=paused`.
#[derive(Debug)]
struct PauseLog;

impl fleetscale_core::record::DecisionObserver for PauseLog {
    fn observe(&self, r: &fleetscale_core::record::DecisionRecord) {
        if let TickStatus::Paused { reason } = &r.status {
            tracing::warn!(app = %r.target, reason = %reason, "tick skipped: {reason}");
        }
    }
}

/// `fleetscale run`.
///
/// Runs until SIGINT or SIGTERM; ticks in flight then get `engine.shutdown_grace`, a second
/// signal exits at once, and an engine that stops on its own ends the process with an error
/// (see [`crate::supervise`]).
///
/// # Errors
/// Configuration errors; a listen address that cannot be bound; an engine that stopped on
/// its own; a second signal.
pub async fn run(path: &Path, dry_run: bool, etcd: &[String]) -> Result<()> {
    let (cfg, provider) = load_and_build(path)?;
    let mut coordination = cfg
        .coordination
        .as_ref()
        .map(|c| c.get_ref().clone())
        .unwrap_or_default();
    if !etcd.is_empty() {
        coordination.endpoints = etcd.to_vec();
    }
    let etcd = coordination
        .etcd_config()
        .map_err(|e| BinError::config(format!("{}: coordination: {e}", path.display())))?;
    let provider = Arc::new(provider);
    let engine_cfg = cfg.engine();
    let metrics = Arc::new(AutoscalerMetrics::new());
    let health = Arc::new(Health::new(
        engine_cfg.interval * 3 + engine_cfg.tick_timeout + engine_cfg.refresh_interval,
    ));
    let status = crate::http::status_board("fleetscale", cfg.engine().interval);
    let replication = etcd
        .map(|c| crate::coordination::Replication::start(c, metrics.clone()))
        .transpose()?;
    let engine = Arc::new(crate::coordination::attach(
        Engine::new(engine_config(&engine_cfg, dry_run), provider)
            .with_observer(Arc::new(TracingObserver::new()))
            .with_observer(Arc::new(PauseLog))
            .with_observer(metrics.clone())
            .with_observer(health.clone())
            .with_observer(status.clone()),
        replication.as_ref(),
    ));
    let server = if cfg.server.listen.trim() == "off" {
        None
    } else {
        let addr: SocketAddr = crate::fas::config::parse_listen_addr(&cfg.server.listen)
            .ok_or_else(|| {
                BinError::config(format!(
                    "{}: server.listen {:?} is not host:port",
                    path.display(),
                    cfg.server.listen
                ))
            })?;
        let s = MetricsServer::start_with_status(addr, metrics, health, Some(status))
            .await
            .map_err(|e| BinError::io(format!("listen on {addr} (server.listen)"), e))?;
        tracing::info!(addr = %s.addr(), "serving /metrics and /healthz");
        Some(s)
    };
    tracing::info!(
        targets = cfg.targets.len(),
        dry_run,
        interval_seconds = engine_cfg.interval.as_secs_f64(),
        "fleetscale running"
    );
    let cancel = CancellationToken::new();
    let task = {
        let engine = engine.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { engine.run(cancel.cancelled_owned()).await })
    };
    let result = crate::supervise::run_until_signal(task, cancel, engine_cfg.shutdown_grace).await;
    if let Some(r) = replication {
        r.stop().await;
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    result
}

/// `fleetscale eval`: one dry-run tick per target, printed; exit status 1 when a tick failed.
/// Plans of many actions are shown in part ([`MAX_LOGGED_ACTIONS`] actions, the rest counted by
/// kind); `--json` prints the whole record, times in RFC 3339 and durations in seconds.
///
/// # Errors
/// Configuration errors; the target list cannot be built.
pub async fn eval(path: &Path, json: bool) -> Result<i32> {
    let (cfg, provider) = load_and_build(path)?;
    let provider = Arc::new(provider);
    let targets = provider.targets().await?;
    let engine = Engine::new(engine_config(&cfg.engine(), true), provider);
    let mut failed = false;
    let say = |line: String| crate::redact::print_line(&line);
    for t in &targets {
        let r = engine.tick(t, true).await;
        failed |= matches!(r.status, TickStatus::Failed { .. });
        if json {
            say(serde_json::to_string(&r).unwrap_or_default());
            continue;
        }
        say(format!("target {}", r.target));
        if let Some(c) = r.counts {
            say(format!(
                "  machines: {} created, {} started, {} stopped, {} suspended, {} in transition, {} unmanageable",
                c.created, c.started, c.stopped, c.suspended, c.transitioning, c.unmanageable
            ));
        }
        for (name, m) in &r.metrics {
            match m {
                MetricReading::Value(v) => say(format!("  metric {name} = {v}")),
                MetricReading::Failed { kind, message } => {
                    say(format!("  metric {name} FAILED ({kind}): {message}"))
                }
            }
        }
        if let Some(d) = &r.decision {
            let b = |b: fleetscale_core::Bounds| {
                format!(
                    "min {} max {}",
                    b.min.map_or("-".into(), |v| v.to_string()),
                    b.max.map_or("-".into(), |v| v.to_string())
                )
            };
            if let Some(raw) = d.raw {
                say(format!(
                    "  rules: created {}, started {}",
                    b(raw.created),
                    b(raw.started)
                ));
            }
            say(format!(
                "  targets: created {}, started {}{}",
                b(d.targets.created),
                b(d.targets.started),
                if d.held { " (held)" } else { "" }
            ));
            for n in &d.notes {
                say(format!("  note: {n}"));
            }
        }
        match &r.plan {
            Some(p) if !p.is_empty() => {
                say(format!(
                    "  would do ({}):",
                    fleetscale_core::record::summarize_actions(&p.actions)
                ));
                for a in p.actions.iter().take(MAX_LOGGED_ACTIONS) {
                    say(format!("    - {a}"));
                }
                if p.actions.len() > MAX_LOGGED_ACTIONS {
                    let rest = &p.actions[MAX_LOGGED_ACTIONS..];
                    say(format!(
                        "    ... and {} more ({})",
                        rest.len(),
                        fleetscale_core::record::summarize_actions(rest)
                    ));
                }
            }
            Some(_) => say("  would do: nothing".into()),
            None => {}
        }
        if let Some(p) = &r.plan {
            for n in &p.notes {
                say(format!("  plan note: {n}"));
            }
        }
        match &r.status {
            TickStatus::Failed { stage, message, .. } => {
                say(format!("  FAILED at {stage}: {message}"))
            }
            TickStatus::Paused { reason } => say(format!("  paused: {reason}")),
            _ => {}
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "FlyV1 fm2_unit_test_token_value";

    /// The variables the tests' files use.
    fn env(k: &str) -> Option<String> {
        match k {
            "TOKEN" => Some("s3cret-prom-token".into()),
            "FLY_API_TOKEN" => Some(TOKEN.into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<(FileConfig, ConfigText)> {
        let path = Path::new("fleetscale.toml");
        let text = ConfigText::expand(path, text, &env)?;
        let cfg = toml::from_str::<FileConfig>(&text.expanded).map_err(|e| {
            BinError::config(text.located(path, e.span().map_or(0, |s| s.start), e.message()))
        })?;
        Ok((cfg, text))
    }

    fn build(text: &str) -> Result<NativeTargets> {
        let (cfg, t) = parse(text)?;
        NativeTargets::build(Path::new("fleetscale.toml"), &t, &cfg, &env)
    }

    fn build_err(text: &str) -> String {
        match build(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = r#"
[engine]
interval = "5s"

[[target]]
name = "web"
backend = { type = "fly", app = "my-app" }
initial_state = "stopped"

[target.policy]
created = "min(running_machines + 1, 10)"
on_error = { mode = "fallback", after_failures = 3, count = 2 }

[target.policy.limits]
created = { min = 1, max = 10 }
scale_in_stabilization = "5m"

[[target.source]]
type = "prometheus"
name = "running_machines"
address = "http://127.0.0.1:9090"
query = "count(fly_instance_up{app='${APP_NAME}'})"
token = "${TOKEN}"
"#;

    #[test]
    fn parses_a_full_file() {
        let (cfg, _) = parse(GOOD).unwrap();
        assert_eq!(cfg.engine().interval, Duration::from_secs(5));
        assert_eq!(cfg.engine().max_actions_per_tick, 100);
        assert_eq!(cfg.engine().shutdown_grace, Duration::from_secs(3));
        let t = cfg.targets[0].get_ref();
        assert_eq!(t.initial_state, InitialState::Stopped);
        assert_eq!(
            t.policy.limits.as_ref().unwrap().get_ref().created.max,
            Some(10)
        );
        assert_eq!(t.sources.len(), 1);
        let nt = build(GOOD).unwrap();
        assert_eq!(nt.templates.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad = GOOD.replace(
            "initial_state = \"stopped\"",
            "initial_state = \"stopped\"\nbogus = 1",
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("fleetscale.toml:9:"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let bad = GOOD.replace("interval = \"5s\"", "interval = \"5 parsecs\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("fleetscale.toml:3:"), "{e}");
        assert!(e.contains("interval"), "{e}");

        let bad = GOOD.replace("token = \"${TOKEN}\"", "token = \"${MISSING}\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains(":23:") && e.contains("MISSING is not set"),
            "{e}"
        );

        // An expression error points at the expression's own line and column.
        let bad = GOOD.replace(
            "min(running_machines + 1, 10)",
            "min(running_machines + , 10)",
        );
        let e = build_err(&bad);
        assert!(e.starts_with("fleetscale.toml:11:"), "{e}");
        assert!(e.contains("policy.created"), "{e}");
        // An unknown variable names the target and points at the expression.
        let bad = GOOD.replace("min(running_machines + 1, 10)", "queue_depth");
        let e = build_err(&bad);
        assert!(e.contains("queue_depth") && e.contains("\"web\""), "{e}");
        assert!(e.starts_with("fleetscale.toml:11:"), "{e}");
        // The error of a max expression points at created_max, not at the first key.
        let range = GOOD.replace(
            "created = \"min(running_machines + 1, 10)\"",
            "created_min = \"1\"\ncreated_max = \"max(1,\"",
        );
        let e = build_err(&range);
        assert!(e.starts_with("fleetscale.toml:12:"), "{e}");
        assert!(e.contains("policy.created_max"), "{e}");
        // Messages use this file's key names, not fly-autoscaler's.
        let half = GOOD.replace(
            "created = \"min(running_machines + 1, 10)\"",
            "created_min = \"1\"",
        );
        let e = build_err(&half);
        assert!(e.contains("created_min requires created_max"), "{e}");
        assert!(!e.contains("machine-count"), "{e}");
    }

    #[test]
    fn errors_quote_the_file_as_written_never_an_expanded_value() {
        // The secret lands in a value of the wrong type: TOML's message would quote it.
        let bad = GOOD.replace("interval = \"5s\"", "interval = \"${TOKEN}\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(!e.contains("s3cret-prom-token"), "{e}");
        assert!(
            e.contains("interval = \"${TOKEN}\""),
            "the line as written: {e}"
        );
        // A syntax error on a line with a substitution.
        let bad = GOOD.replace("token = \"${TOKEN}\"", "token = ${TOKEN}");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(!e.contains("s3cret-prom-token"), "{e}");
        assert!(e.contains("token = ${TOKEN}"), "{e}");
        // A column after a substitution is the column in the file as written.
        let bad = GOOD.replace(
            "token = \"${TOKEN}\"",
            "token = \"${TOKEN}\"\nextra = \"${TOKEN}\" bogus",
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("fleetscale.toml:24:"), "{e}");
        assert!(!e.contains("s3cret-prom-token"), "{e}");
    }

    #[test]
    fn comments_are_not_expanded_and_a_byte_order_mark_is_fine() {
        let commented = GOOD.replace(
            "interval = \"5s\"",
            "interval = \"5s\" # was ${UNSET_VARIABLE}\n# ${ALSO_UNSET}",
        );
        let (cfg, text) = parse(&commented).unwrap();
        assert_eq!(cfg.engine().interval, Duration::from_secs(5));
        assert!(text.expanded.contains("${UNSET_VARIABLE}"));
        // `#` inside a string is not a comment.
        let hash = GOOD.replace("http://127.0.0.1:9090", "http://127.0.0.1:9090/#${TOKEN}");
        let (_, text) = parse(&hash).unwrap();
        assert!(
            text.expanded.contains("/#s3cret-prom-token"),
            "{}",
            text.expanded
        );
        let bom = format!("\u{feff}{GOOD}");
        build(&bom).unwrap();
    }

    #[test]
    fn overlapping_targets_are_refused() {
        let target = |name: &str, backend: &str| {
            format!(
                "\n[[target]]\nname = \"{name}\"\nbackend = {{ type = \"fly\", {backend} }}\n[target.policy]\ncreated = \"2\"\n"
            )
        };
        let file = |targets: &[String]| targets.concat();
        let e = build_err(&file(&[
            target("a", "app = \"my-app\""),
            target("b", "app = \"my-app\""),
        ]));
        assert!(
            e.contains("manages the same machines as target \"a\""),
            "{e}"
        );
        assert!(
            e.starts_with("fleetscale.toml:8:"),
            "points at the second target: {e}"
        );
        // Every process group ("") overlaps any group.
        let e = build_err(&file(&[
            target("a", "app = \"my-app\", process_group = \"web\""),
            target("b", "app = \"my-app\", process_group = \"\""),
        ]));
        assert!(e.contains("every process group"), "{e}");
        // A wildcard that matches an app named elsewhere, in either order.
        let e = build_err(&file(&[
            target("a", "app = \"my-app\""),
            target("b", "app = \"my-*\", org = \"o\""),
        ]));
        assert!(e.contains("\"my-*\""), "{e}");
        let e = build_err(&file(&[
            target("a", "app = \"my-*\", org = \"o\""),
            target("b", "app = \"my-app\""),
        ]));
        assert!(e.contains("same machines"), "{e}");
        // Two names for the same target.
        let e = build_err(&file(&[
            target("a", "app = \"one\""),
            target("a", "app = \"two\""),
        ]));
        assert!(e.contains("already defined at line 2"), "{e}");
        // Different process groups, different apps, different APIs: fine.
        build(&file(&[
            target("a", "app = \"my-app\", process_group = \"web\""),
            target("b", "app = \"my-app\", process_group = \"worker\""),
            target("c", "app = \"other-*\", org = \"o\""),
            target(
                "d",
                "app = \"my-app\", base_url = \"http://127.0.0.1:4280\"",
            ),
        ]))
        .unwrap();
    }

    #[test]
    fn zero_and_absurd_settings_are_refused_with_their_line() {
        for (from, to, key, line) in [
            (
                "interval = \"5s\"",
                "interval = \"0s\"",
                "engine.interval",
                3,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\ntick_timeout = \"0s\"",
                "engine.tick_timeout",
                4,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\nmetric_timeout = \"0ms\"",
                "engine.metric_timeout",
                4,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\nrefresh_interval = \"0s\"",
                "engine.refresh_interval",
                4,
            ),
            (
                "interval = \"5s\"",
                "interval = \"10000h\"",
                "engine.interval",
                3,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\nshutdown_grace = \"30d\"",
                "engine.shutdown_grace",
                4,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\nmax_actions_per_tick = 0",
                "engine.max_actions_per_tick",
                4,
            ),
            (
                "interval = \"5s\"",
                "interval = \"5s\"\nmax_actions_per_tick = 1000000",
                "engine.max_actions_per_tick",
                4,
            ),
            (
                "scale_in_stabilization = \"5m\"",
                "scale_in_stabilization = \"99999h\"",
                "limits.scale_in_stabilization",
                16,
            ),
            (
                "scale_in_stabilization = \"5m\"",
                "cooldown_after_scale_up = \"400d\"",
                "limits.cooldown_after_scale_up",
                16,
            ),
        ] {
            let bad = GOOD.replace(from, to);
            let e = build_err(&bad);
            assert!(e.contains(key), "{key}: {e}");
            assert!(
                e.starts_with(&format!("fleetscale.toml:{line}:")),
                "{key}: {e}"
            );
        }
        // A grace of zero is allowed (cancel at once); cooldowns of zero are off.
        build(&GOOD.replace(
            "interval = \"5s\"",
            "interval = \"5s\"\nshutdown_grace = \"0s\"",
        ))
        .unwrap();
    }

    #[test]
    fn inverted_bounds_are_refused() {
        let bad = GOOD.replace(
            "created = { min = 1, max = 10 }",
            "created = { min = 5, max = 2 }",
        );
        let e = build_err(&bad);
        assert!(
            e.contains("created min 5 is greater than created max 2"),
            "{e}"
        );
        assert!(e.starts_with("fleetscale.toml:15:"), "{e}");
        let bad = GOOD.replace(
            "created = \"min(running_machines + 1, 10)\"",
            "started_min = \"4\"\nstarted_max = \"1\"",
        );
        let e = build_err(&bad);
        assert!(
            e.contains("started min 4 is greater than started max 1"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_fly_token_is_refused_at_load() {
        let (cfg, text) = parse(GOOD).unwrap();
        let no_token = |k: &str| (k == "TOKEN").then(|| "x".to_owned());
        let e = NativeTargets::build(Path::new("f.toml"), &text, &cfg, &no_token)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("Fly API token required"), "{e}");
        assert!(e.contains("FLY_API_TOKEN"), "{e}");
        let empty = |k: &str| Some(if k == "FLY_API_TOKEN" { " " } else { "x" }.to_owned());
        assert!(NativeTargets::build(Path::new("f.toml"), &text, &cfg, &empty).is_err());
    }

    #[test]
    fn the_example_file_and_a_weave_section_build() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fleetscale.example.toml"
        ));
        let env = |k: &str| match k {
            "FLY_PROMETHEUS_TOKEN" => Some("FlyV1 fm2_x".to_owned()),
            "FLY_API_TOKEN" => Some(TOKEN.to_owned()),
            _ => None,
        };
        let (cfg, text) = load(path, &env).unwrap();
        assert_eq!(cfg.targets.len(), 2);
        NativeTargets::build(path, &text, &cfg, &env).unwrap();

        let weave = format!(
            "{GOOD}\n[target.weave]\nfixed = [{{ name = \"00:00:00:00:00:01\", address = \"10.0.0.1\", api_url = \"http://10.0.0.1:6784\" }}]\nledger = \"/tmp/l.jsonl\"\n"
        );
        let (cfg, _) = parse(&weave).unwrap();
        let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
        assert_eq!(w.router_port, 6784);
        assert_eq!(w.fixed.len(), 1);
        assert_eq!(w.min_unreachable, None, "the reclaimer's default applies");
        let (cfg, _) = parse(&format!("{weave}min_unreachable = \"90s\"\n")).unwrap();
        let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
        assert_eq!(w.min_unreachable, Some(Duration::from_secs(90)));
        let e = build_err(&format!("{weave}min_unreachable = \"9999h\"\n"));
        assert!(e.contains("weave.min_unreachable"), "{e}");
    }

    #[test]
    fn the_ec2_example_and_its_errors() {
        let example = include_str!("../../../examples/ec2-weave-spot.toml");
        let targets = build(example).unwrap();
        assert_eq!(targets.ec2.len(), 1);
        assert!(targets.templates.is_empty());
        let t = &targets.ec2[0];
        let script = t.user_data().expect("the Weave bootstrap as user data");
        assert!(
            script.contains("PEERS=\"10.0.0.1 10.0.0.2 10.0.0.3\""),
            "{script}"
        );
        assert!(
            script.contains("--ipalloc-init=observer --http-addr=0.0.0.0:6784 $PEERS"),
            "{script}"
        );

        // A pool without launch settings: named with its line.
        let e = build_err(
            "[[target]]\nname = \"p\"\nbackend = { type = \"ec2\", pool = \"p\", instance_type = \"t3.small\" }\n[target.policy]\ncreated = \"1\"\n",
        );
        assert!(
            e.contains("fleetscale.toml:") && e.contains("image_id"),
            "{e}"
        );
        // An unknown key of the pool.
        let e = build_err(
            "[[target]]\nbackend = { type = \"ec2\", pool = \"p\", image_id = \"ami-1\", instance_type = \"t3.small\", colour = \"red\" }\n[target.policy]\ncreated = \"1\"\n",
        );
        assert!(e.contains("colour"), "{e}");
        // User data of its own next to [target.weave].
        let with_user_data = example.replace(
            "tags = { team = \"network\" }",
            "tags = { team = \"network\" }, user_data = \"#!/bin/sh\\n\"",
        );
        let e = build_err(&with_user_data);
        assert!(
            e.contains("user_data cannot be set with [target.weave]"),
            "{e}"
        );
        // Two targets on one pool.
        let twice = format!(
            "{example}\n[[target]]\nname = \"again\"\nbackend = {{ type = \"ec2\", pool = \"weave-dynamic\", region = \"eu-west-1\", image_id = \"ami-1\", instance_type = \"t3.small\" }}\n[target.policy]\ncreated = \"1\"\n"
        );
        let e = build_err(&twice);
        assert!(e.contains("same EC2 instances"), "{e}");
    }

    #[test]
    fn the_release_guard_is_on_by_default_and_can_be_turned_off() {
        let path = Path::new("f.toml");
        let env = |k: &str| match k {
            "FLY_API_BASE_URL" => Some("http://127.0.0.1:9".to_owned()),
            "FLY_API_TOKEN" => Some(TOKEN.to_owned()),
            "TOKEN" => Some("t".to_owned()),
            _ => None,
        };
        let (cfg, text) = parse(GOOD).unwrap();
        let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend else {
            panic!("a Fly target")
        };
        assert!(fly.release_guard);
        let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
        let guard = built.templates[0].apps.release_guard().expect("guard");
        assert_eq!(guard.url().as_str(), "http://127.0.0.1:9/graphql");

        let own = GOOD.replace(
            "app = \"my-app\" }",
            "app = \"my-app\", graphql_base_url = \"http://127.0.0.1:8\" }",
        );
        let (cfg, text) = parse(&own).unwrap();
        let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
        let guard = built.templates[0].apps.release_guard().expect("guard");
        assert_eq!(guard.url().as_str(), "http://127.0.0.1:8/graphql");

        let off = GOOD.replace(
            "app = \"my-app\" }",
            "app = \"my-app\", release_guard = false }",
        );
        let (cfg, text) = parse(&off).unwrap();
        let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend else {
            panic!("a Fly target")
        };
        assert!(!fly.release_guard);
        let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
        assert!(built.templates[0].apps.release_guard().is_none());
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é", 1), (1, 1), "inside a character");
    }

    #[test]
    fn offsets_map_back_to_the_file_as_written() {
        let env = |k: &str| (k == "V").then(|| "0123456789".to_owned());
        let t = ConfigText::expand(Path::new("f"), "a = \"${V}\" x", &env).unwrap();
        assert_eq!(t.expanded, "a = \"0123456789\" x");
        assert_eq!(t.raw_offset(3), 3);
        assert_eq!(t.raw_offset(8), 5, "inside the value: the start of ${{V}}");
        assert_eq!(t.raw_offset(17), 11, "after it: shifted back");
    }
}
