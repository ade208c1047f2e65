//! [`GroupedPrometheusSource`]: one PromQL query grouped by a label (`sum by (app) (…)`), sent
//! once per pass and shared by every target, each reading the series whose label equals its
//! app.
//!
//! A per-target [`super::PrometheusSource`] costs one HTTP request and one query evaluation per
//! target per tick: at 1,000 apps, 1,000 requests that each select their app's series from the
//! same metric. A grouped query evaluates the whole metric once and answers every app.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{expand_vars, MetricSource, Scope};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::result::{self, label_set, Ctx, QueryData};
use super::{default_timeout, matching_close, EmptyResult, QueryMethod, Reading};
use crate::error::{truncate, MetricsError};
use crate::http::{self, bounded};
use crate::Token;

/// How long one answer of a grouped query serves the targets that read it (default 5 s):
/// the targets of one engine pass read within this window share one request; a read after
/// it sends a new one. Keep it below the tick interval so that each tick sees a fresh answer.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);

fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

fn default_label() -> String {
    "app".to_owned()
}

fn default_scope_var() -> String {
    "APP_NAME".to_owned()
}

/// Configuration of a [`GroupedPrometheusSource`], loadable from TOML or YAML.
///
/// ```
/// use std::time::Duration;
/// use fleetscale_metrics::GroupedPrometheusConfig;
/// let cfg: GroupedPrometheusConfig = toml::from_str(r#"
///     name = "rps"
///     address = "https://api.fly.io/prometheus/my-org/"
///     query = "sum by (app) (rate(fly_edge_http_responses_count[1m]))"
///     max_age = "2s"
/// "#).unwrap();
/// assert_eq!((cfg.label.as_str(), cfg.scope_var.as_str()), ("app", "APP_NAME"));
/// assert_eq!(cfg.max_age, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupedPrometheusConfig {
    /// The variable name the value gets in expressions (an identifier).
    pub name: String,
    /// The API base address, as [`super::PrometheusConfig::address`].
    pub address: String,
    /// The PromQL instant query, the same for every target, returning one series per value of
    /// [`GroupedPrometheusConfig::label`], e.g. `sum by (app) (rate(requests_total[1m]))`.
    /// Scope variables (`$APP_NAME`, `$TARGET`, `$GROUP`) are refused: a shared query cannot
    /// depend on the target; group by the label instead.
    pub query: String,
    /// The label whose value names the target a series belongs to (default `app`).
    #[serde(default = "default_label")]
    pub label: String,
    /// The scope variable ([`Scope::var`]) a target's label value is read from (default
    /// `APP_NAME`, the target's app).
    #[serde(default = "default_scope_var")]
    pub scope_var: String,
    /// The API token, as [`super::PrometheusConfig::token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// The deadline of the shared query, connection included (default 10 s), also sent to the
    /// server as its `timeout` parameter.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What a target whose label value is missing from the answer gets, as an empty result of
    /// the per-target query would: [`EmptyResult::Auto`] (the default) reads 0 when the query
    /// is a `sum` or `count` grouped by the label alone ([`is_total_grouped_by`]), since the
    /// per-app query `sum(x{app="…"})` would be a total without grouping; an error otherwise.
    #[serde(default)]
    pub empty: EmptyResult,
    /// `get` (default) or `post`.
    #[serde(default)]
    pub method: QueryMethod,
    /// How long one answer (or one failure) serves later reads (default [`DEFAULT_MAX_AGE`]),
    /// counted from when its request was sent. Must be greater than zero.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl GroupedPrometheusConfig {
    /// A configuration with every option at its default (label `app`, scope variable
    /// `APP_NAME`, max age 5 s).
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        query: impl Into<String>,
    ) -> Self {
        // The settings a per-target source also has default as there.
        let super::PrometheusConfig {
            name,
            address,
            query,
            token,
            timeout,
            empty,
            method,
            ..
        } = super::PrometheusConfig::new(name, address, query);
        GroupedPrometheusConfig {
            name,
            address,
            query,
            label: default_label(),
            scope_var: default_scope_var(),
            token,
            timeout,
            empty,
            method,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// Sets the label that names a series' target, and the scope variable holding each
    /// target's value of it.
    pub fn with_label(mut self, label: impl Into<String>, scope_var: impl Into<String>) -> Self {
        self.label = label.into();
        self.scope_var = scope_var.into();
        self
    }
}

setters! { GroupedPrometheusConfig {
    /// Sets the API token.
    with_token(token: impl Into<Token>) = Some(token.into());
    /// Sets the deadline of the shared query.
    with_timeout(timeout: Duration) = timeout;
    /// Sets what a missing label value means.
    with_empty(empty: EmptyResult) = empty;
    /// Sets the HTTP method.
    with_method(method: QueryMethod) = method;
    /// Sets how long one answer serves later reads.
    with_max_age(max_age: Duration) = max_age;
}}

/// Whether a grouped PromQL query's outermost operation is a `sum` or `count` grouped by
/// `label` alone (`sum by (app) (…)` or `count(…) by (app)`): then a label value missing from
/// the answer is a total of nothing, 0, exactly as [`super::is_total_without_grouping`] says
/// of the per-target query `sum(…{app="…"})`. Keywords are case-insensitive; outer
/// parentheses are looked through.
///
/// ```
/// use fleetscale_metrics::is_total_grouped_by as total;
/// assert!(total("sum by (app) (rate(http_requests_total[1m]))", "app"));
/// assert!(total("( COUNT BY(app)(fly_instance_up) )", "app"));
/// assert!(total("sum(rate(x[1m])) by (app)", "app"));
/// assert!(!total("sum by (app, region) (x)", "app"));
/// assert!(!total("sum by (region) (x)", "app"));
/// assert!(!total("avg by (app) (x)", "app"));
/// assert!(!total("sum by (app) (x) * 2", "app"));
/// assert!(!total("sum without (instance) (x)", "app"));
/// ```
pub fn is_total_grouped_by(query: &str, label: &str) -> bool {
    let mut q = query.trim();
    while q.starts_with('(') && matching_close(q, 0) == Some(q.len() - 1) {
        q = q[1..q.len() - 1].trim();
    }
    let word = |s: &str| -> usize {
        s.bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count()
    };
    let name_len = word(q);
    if !matches!(q[..name_len].to_ascii_lowercase().as_str(), "sum" | "count") {
        return false;
    }
    // `by (labels)` at the start of `s`: the rest after it, when the labels are exactly `label`.
    let by_label = |s: &str| -> Option<usize> {
        let s_trim = s.trim_start();
        let skipped = s.len() - s_trim.len();
        let kw = word(s_trim);
        if !s_trim[..kw].eq_ignore_ascii_case("by") {
            return None;
        }
        let after = s_trim[kw..].trim_start();
        let open = s_trim.len() - after.len();
        if !after.starts_with('(') {
            return None;
        }
        let close = matching_close(s_trim, open)?;
        let labels: Vec<&str> = s_trim[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        (labels == [label]).then_some(skipped + close + 1)
    };
    let rest = &q[name_len..];
    if let Some(end) = by_label(rest) {
        // `sum by (app) (…)`
        let body = &rest[end..];
        let body_trim = body.trim_start();
        if !body_trim.starts_with('(') {
            return false;
        }
        let open = q.len() - body_trim.len();
        return matching_close(q, open) == Some(q.len() - 1);
    }
    // `sum (…) by (app)`
    let args = rest.trim_start();
    if !args.starts_with('(') {
        return false;
    }
    let open = q.len() - args.len();
    let Some(close) = matching_close(q, open) else {
        return false;
    };
    let tail = &q[close + 1..];
    by_label(tail).is_some_and(|end| tail[end..].trim().is_empty())
}

/// One target's share of an answer.
#[derive(Debug)]
enum Slot {
    /// Exactly one series had this label value: its value as written, and its label set.
    One { raw: String, series: String },
    /// Several series had this label value: their label sets.
    Several(Vec<String>),
}

/// A decoded answer, indexed by label value once for all targets.
#[derive(Debug)]
struct Table {
    slots: HashMap<String, Slot>,
    warnings: Vec<String>,
}

type Outcome = Result<Arc<Table>, Arc<MetricsError>>;

/// One request and the answer every read within its max age shares: `None` while in flight.
struct Flight {
    started: Instant,
    outcome: watch::Receiver<Option<Outcome>>,
}

struct Inner {
    config: GroupedPrometheusConfig,
    client: reqwest::Client,
    url: Url,
    shown: String,
    context: String,
    auth: Option<HeaderValue>,
    empty_is_zero: bool,
    current: Mutex<Option<Flight>>,
    requests: AtomicU64,
}

/// A [`MetricSource`] for many targets at once: one grouped PromQL query per pass, shared by
/// every target (clones share it), each target reading the series whose
/// [`GroupedPrometheusConfig::label`] equals its scope's
/// [`GroupedPrometheusConfig::scope_var`] (its app by default).
///
/// Use it where every target's per-app query has the form `AGG(expr{app="$APP_NAME"})`: the
/// grouped `AGG by (app) (expr)` gives the same numbers in one request.
///
/// # Behaviour
/// - **One request per pass.** The first read sends the query; reads within
///   [`GroupedPrometheusConfig::max_age`] of that request's start use its answer. Reads
///   that arrive while it is in flight await it (single flight) however long it takes
///   (bounded by the timeout), and send nothing.
/// - **Freshness.** An answer whose request started `max_age` ago or more is never used: the
///   next read sends a new request. A failure is shared the same way (a failing server gets
///   one request per pass, not one per target) and expires the same way.
/// - **Failures are every target's.** A transport error, an HTTP or Prometheus error, a
///   timeout, an answer that cannot be decoded, a result that is not an instant vector, or a
///   vector whose series all lack the label: every target reading that answer gets the error
///   ([`MetricsError::Shared`], which shows and maps as the error it holds).
/// - **Per-target results.** A label value missing from the answer follows
///   [`GroupedPrometheusConfig::empty`] as an empty result of a per-target query would
///   ([`MetricsError::Empty`] or 0); several series with the same label value are
///   [`MetricsError::MultipleSeries`] naming them; NaN and ±Inf are
///   [`MetricsError::NotFinite`]; all for that target only. Series without the label serve
///   no target (logged once per answer).
/// - **Cancellation.** Dropping a read, or firing the token of
///   [`GroupedPrometheusSource::read_with_cancel`], stops only that read's wait: the request
///   runs in a task of its own (bounded by the timeout) and still serves the other readers.
///
/// ```no_run
/// use std::sync::Arc;
/// use fleetscale_core::{MetricSource, Scope};
/// use fleetscale_metrics::{GroupedPrometheusConfig, GroupedPrometheusSource};
/// # async fn demo() -> fleetscale_core::Result<()> {
/// let rps = GroupedPrometheusSource::new(GroupedPrometheusConfig::new(
///     "rps",
///     "http://127.0.0.1:9090",
///     "sum by (app) (rate(http_requests_total[1m]))",
/// ))?;
/// // The same source (or clones of it) for every target: one HTTP request serves them all.
/// let (web, api) = (Scope::new("web"), Scope::new("api"));
/// let (web, api) = tokio::join!(rps.collect(&web), rps.collect(&api));
/// println!("web {} api {} in {} request(s)", web?, api?, rps.requests_sent());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GroupedPrometheusSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for GroupedPrometheusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupedPrometheusSource")
            .field("config", &self.inner.config)
            .field("url", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

impl GroupedPrometheusSource {
    /// Checks the configuration and builds the HTTP client.
    ///
    /// # Errors
    /// [`MetricsError::Config`] for everything [`super::PrometheusSource::new`] refuses, and
    /// for a query using a scope variable, an empty label or scope variable, or a zero
    /// `max_age`.
    pub fn new(config: GroupedPrometheusConfig) -> Result<Self, MetricsError> {
        let bad = super::config_errors(&config.name, &config.query)?;
        let scope_vars = std::cell::RefCell::new(Vec::new());
        expand_vars(&config.query, |name| {
            if matches!(name, "APP_NAME" | "TARGET" | "GROUP") || name == config.scope_var {
                scope_vars.borrow_mut().push(name.to_owned());
            }
            None
        });
        if let Some(var) = scope_vars.into_inner().first() {
            return Err(bad(format!(
                "`query` uses `${var}`, but a grouped query is shared by every target: \
                 group it by `{}` instead (e.g. `sum by ({}) (…)`)",
                config.label, config.label
            )));
        }
        if config.label.trim().is_empty() || config.scope_var.trim().is_empty() {
            return Err(bad("`label` and `scope_var` must not be empty".to_owned()));
        }
        if config.timeout.is_zero() {
            return Err(bad("`timeout` must be greater than zero".to_owned()));
        }
        if config.max_age.is_zero() {
            return Err(bad(
                "`max_age` must be greater than zero (a zero max age would share nothing: \
                 use a `prometheus` source instead)"
                    .to_owned(),
            ));
        }
        let super::Endpoint { base, auth, client } =
            super::endpoint(&config.address, config.token.as_ref(), config.timeout, &bad)?;
        let url = super::join_url(&base, "api/v1/query", &bad)?;
        let (shown, context) = super::shown_and_context(config.method, &url);
        let empty_is_zero = match config.empty {
            EmptyResult::Zero => true,
            EmptyResult::Error => false,
            EmptyResult::Auto => is_total_grouped_by(&config.query, &config.label),
        };
        Ok(GroupedPrometheusSource {
            inner: Arc::new(Inner {
                config,
                client,
                url,
                shown,
                context,
                auth,
                empty_is_zero,
                current: Mutex::new(None),
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The settings this source was built with.
    pub fn config(&self) -> &GroupedPrometheusConfig {
        &self.inner.config
    }

    /// How many HTTP requests this source (and its clones) has sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Reads the value for `scope`, with details. See the type's docs for behaviour and errors.
    /// The reading's `query` is the shared query followed by the series picked,
    /// `sum by (app) (x) [app="web"]`; its `series` is 1, or 0 for a missing value read as 0.
    pub async fn read(&self, scope: &Scope) -> Result<Reading, MetricsError> {
        let table = self.answer().await.map_err(MetricsError::Shared)?;
        self.pick(&table, scope)
    }

    /// Like [`GroupedPrometheusSource::read`], but returns [`MetricsError::Cancelled`] as soon
    /// as `cancel` fires (other readers of the same request still get its answer).
    pub async fn read_with_cancel(
        &self,
        scope: &Scope,
        cancel: &CancellationToken,
    ) -> Result<Reading, MetricsError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(MetricsError::Cancelled {
                metric: self.inner.config.name.clone(),
            }),
            r = self.read(scope) => r,
        }
    }

    /// The current answer: shared when one started less than `max_age` ago or is still in
    /// flight, else a new one. The request runs in its own task, so that a reader that stops
    /// waiting does not stop it for the others.
    async fn answer(&self) -> Outcome {
        let mut outcome = {
            let mut current = self
                .inner
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match &*current {
                // In flight: its answer will be newer than its start, join it. Done: use it
                // while it is younger than `max_age`.
                Some(f)
                    if f.outcome.borrow().is_none()
                        || now.duration_since(f.started) < self.inner.config.max_age =>
                {
                    f.outcome.clone()
                }
                _ => {
                    let (done, outcome) = watch::channel(None);
                    *current = Some(Flight {
                        started: now,
                        outcome: outcome.clone(),
                    });
                    let this = self.clone();
                    tokio::spawn(async move {
                        let answer = this.fetch().await;
                        done.send_replace(Some(answer));
                    });
                    outcome
                }
            }
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            Err(_) => None,
        };
        // The task ends only by sending; without a runtime to finish it, report it stopped.
        result.unwrap_or_else(|| {
            Err(Arc::new(MetricsError::Cancelled {
                metric: self.inner.config.name.clone(),
            }))
        })
    }

    /// Sends the query and indexes the answer by label value.
    async fn fetch(&self) -> Outcome {
        let inner = &self.inner;
        let config = &inner.config;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(metric = %config.name, query = %config.query, "prometheus grouped query");
        let ctx = self.ctx();
        let work = async {
            let params = [
                ("query", config.query.clone()),
                ("timeout", super::seconds(config.timeout)),
            ];
            let request = super::query_request(
                &inner.client,
                config.method,
                &inner.url,
                &params,
                inner.auth.as_ref(),
            );
            let answer = http::send(request, &config.name, &inner.shown).await?;
            let decoded = result::decode(&answer, &ctx)?;
            if !decoded.warnings.is_empty() {
                tracing::warn!(
                    metric = %config.name,
                    warnings = %decoded.warnings.join("; "),
                    "prometheus"
                );
            }
            self.index(decoded.data, decoded.warnings, &ctx)
        };
        bounded(work, config.timeout, None, &config.name, || {
            format!("{} (query {})", inner.context, truncate(&config.query, 200))
        })
        .await
        .map(Arc::new)
        .map_err(Arc::new)
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            metric: &self.inner.config.name,
            context: &self.inner.context,
            url: &self.inner.shown,
            query: &self.inner.config.query,
        }
    }

    /// One slot per label value; an error when the answer can serve no target.
    fn index(
        &self,
        data: QueryData,
        warnings: Vec<String>,
        ctx: &Ctx<'_>,
    ) -> Result<Table, MetricsError> {
        let config = &self.inner.config;
        let series = match data {
            QueryData::Vector(series) => series,
            other => {
                return Err(MetricsError::UnexpectedResultType {
                    metric: config.name.clone(),
                    result_type: match other {
                        QueryData::Matrix(_) => "matrix",
                        QueryData::Scalar(_) => "scalar",
                        _ => "string",
                    }
                    .to_owned(),
                    hint: "a grouped query must return an instant vector with one series per label value, e.g. `sum by (app) (…)`",
                })
            }
        };
        let total = series.len();
        let mut unlabelled = 0usize;
        let mut slots: HashMap<String, Slot> = HashMap::with_capacity(total);
        for s in series {
            let Some((_, raw)) = s.samples.into_iter().next_back() else {
                continue;
            };
            let Some(value) = s.labels.get(&config.label).filter(|v| !v.is_empty()) else {
                unlabelled += 1;
                continue;
            };
            let shown = label_set(&s.labels);
            match slots.get_mut(value) {
                None => {
                    slots.insert(value.clone(), Slot::One { raw, series: shown });
                }
                Some(slot) => {
                    let first = match slot {
                        Slot::One { series, .. } => vec![std::mem::take(series)],
                        Slot::Several(list) => std::mem::take(list),
                    };
                    let mut list = first;
                    list.push(shown);
                    *slot = Slot::Several(list);
                }
            }
        }
        if total > 0 && unlabelled == total {
            return Err(ctx_invalid(
                ctx,
                format!(
                    "none of the {total} series has the label `{}`: group the query by it (e.g. `sum by ({}) (…)`)",
                    config.label, config.label
                ),
            ));
        }
        if unlabelled > 0 {
            tracing::debug!(
                metric = %config.name,
                label = %config.label,
                unlabelled,
                "prometheus grouped query: series without the label serve no target"
            );
        }
        Ok(Table { slots, warnings })
    }

    /// `scope`'s value from an indexed answer.
    fn pick(&self, table: &Table, scope: &Scope) -> Result<Reading, MetricsError> {
        let config = &self.inner.config;
        let key = scope
            .var(&config.scope_var)
            .ok_or_else(|| MetricsError::Config {
                metric: config.name.clone(),
                message: format!(
                    "target `{}` has no scope variable `{}` to pick its series by",
                    scope.target, config.scope_var
                ),
            })?;
        let query = format!("{} [{}=\"{key}\"]", config.query, config.label);
        let reading = |value: f64, series: usize| Reading {
            value,
            series,
            query: query.clone(),
            warnings: table.warnings.clone(),
        };
        match table.slots.get(key) {
            None if self.inner.empty_is_zero => Ok(reading(0.0, 0)),
            None => Err(MetricsError::Empty {
                metric: config.name.clone(),
                query: truncate(&query, 300),
            }),
            Some(Slot::Several(list)) => Err(MetricsError::MultipleSeries {
                metric: config.name.clone(),
                count: list.len(),
                series: describe(list),
            }),
            Some(Slot::One { raw, series }) => {
                let value = result::parse_value(raw, series, &self.ctx())?;
                Ok(reading(value, 1))
            }
        }
    }
}

fn ctx_invalid(ctx: &Ctx<'_>, message: String) -> MetricsError {
    MetricsError::InvalidResponse {
        metric: ctx.metric.to_owned(),
        context: ctx.context.to_owned(),
        message,
        source: None,
    }
}

fn describe(list: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = list.iter().take(SHOWN).map(|s| truncate(s, 150)).collect();
    if list.len() > SHOWN {
        parts.push(format!("and {} more", list.len() - SHOWN));
    }
    parts.join(", ")
}

/// Reads the target's series of the shared answer (see the type's docs). Errors convert from
/// [`MetricsError`].
#[async_trait]
impl MetricSource for GroupedPrometheusSource {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        Ok(self.read(scope).await?.value)
    }
}
