//! [`PrometheusSource`]: one number per target from a Prometheus-compatible HTTP API (Prometheus,
//! Fly.io's managed VictoriaMetrics at `https://api.fly.io/prometheus/<org>`, Thanos, Mimir).

mod grouped;
mod history;
mod result;

pub use grouped::{
    is_total_grouped_by, GroupedPrometheusConfig, GroupedPrometheusSource, DEFAULT_MAX_AGE,
};
pub use history::{History, HistoryRange, MAX_POINTS_PER_QUERY};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fleetscale_core::{MetricSource, Scope};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::error::{display_url, truncate, MetricsError};
use crate::http::{self, bounded};
use crate::{expand, Token};
use result::{Ctx, Selection};

/// The default per-query timeout: 10 s (fly-autoscaler applies none to its Prometheus query;
/// its whole reconcile has 30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// What an empty result (no series) means.
///
/// Prometheus answers an **empty vector**, not 0, for `count(x)` or `sum(x)` when no series
/// `x` exists: the aggregation has no group to output. For the query of Fly's "Autoscale
/// Machines" blueprint, `count(fly_instance_up{app='$APP_NAME'})`, that is exactly the night:
/// Fly Proxy has stopped every machine, none reports `fly_instance_up`, and the count of
/// running machines is zero. Read as an error, that night would hold the app at its evening
/// size for ever; [`EmptyResult::Auto`] (the default) reads it as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyResult {
    /// 0 when the query's outermost operation is a `count` or `sum` aggregation without
    /// grouping (`count(…)`, `sum(…)`, no `by`/`without`): there is nothing to count or add
    /// up, so the answer is zero ([`is_total_without_grouping`]). An error (as
    /// [`EmptyResult::Error`]) for every other query, whose empty result has no natural value
    /// (`avg`, `max`, a bare selector, arithmetic around an aggregation). Errors, timeouts and
    /// NaN are never read as 0.
    #[default]
    Auto,
    /// Always an error ([`MetricsError::Empty`], class [`fleetscale_core::Error::Metric`]):
    /// the engine then holds instead of scaling. fly-autoscaler does this for every query
    /// ("empty prometheus result").
    Error,
    /// The value 0, like KEDA's Prometheus scaler with `ignoreNullValues` (its default). Right
    /// for queries such as `sum(rate(requests{app="$APP_NAME"}[1m]))` that are empty when idle.
    Zero,
}

/// Whether a PromQL query's outermost operation is a `count` or `sum` aggregation without
/// grouping, so that an empty result means 0 (see [`EmptyResult::Auto`]). Keywords are
/// case-insensitive, as in PromQL; outer parentheses are looked through.
///
/// ```
/// use fleetscale_metrics::is_total_without_grouping as total;
/// assert!(total("count(fly_instance_up{app='$APP_NAME'})"));
/// assert!(total(" ( SUM (rate(http_requests_total[1m])) ) "));
/// assert!(!total("sum by (region) (up)"));
/// assert!(!total("sum(up) without (instance)"));
/// assert!(!total("count(up) * 2"));
/// assert!(!total("avg(load)"));
/// assert!(!total("count_values(\"v\", up)"));
/// assert!(!total("count(up{a=\")\"})) + 1"));
/// ```
pub fn is_total_without_grouping(query: &str) -> bool {
    let mut q = query.trim();
    // Outer parentheses around the whole query.
    while q.starts_with('(') && matching_close(q, 0) == Some(q.len() - 1) {
        q = q[1..q.len() - 1].trim();
    }
    let name_len = q
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let name = q[..name_len].to_ascii_lowercase();
    if name != "count" && name != "sum" {
        return false;
    }
    let rest = q[name_len..].trim_start();
    if !rest.starts_with('(') {
        // `sum by (x) (…)`, `sum without (x) (…)`, or not a call at all.
        return false;
    }
    let open = q.len() - rest.len();
    matching_close(q, open) == Some(q.len() - 1)
}

/// The byte index of the `)` matching the `(` at `open`, skipping string literals.
fn matching_close(q: &str, open: usize) -> Option<usize> {
    let b = q.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(qc) => {
                if c == b'\\' && qc != b'`' {
                    i += 1;
                } else if c == qc {
                    quote = None;
                }
            }
            None => match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' => depth += 1,
                b')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// How several series are combined into one number. Without one, several series are an error
/// ([`MetricsError::MultipleSeries`]) instead of fly-autoscaler's silent "take the first".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The sum of the series' values.
    Sum,
    /// The mean of the series' values.
    Avg,
    /// The smallest of the series' values.
    Min,
    /// The largest of the series' values.
    Max,
}

/// How a range query's samples of one series are reduced to one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowAggregation {
    /// The mean of the samples in the window (default).
    #[default]
    Avg,
    /// The largest sample (scale for the peak).
    Max,
    /// The smallest sample in the window.
    Min,
    /// The last sample of the window (Prometheus sends them oldest first).
    Last,
}

/// A range query (`/api/v1/query_range`) over the last `window`, reduced with `over`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// How far back from now, e.g. `"5m"`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The resolution step; by default `window / 60`, at least 1 s.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub step: Option<Duration>,
    /// How the samples of each series are reduced (default `avg`).
    #[serde(default)]
    pub over: WindowAggregation,
}

impl RangeQuery {
    /// A range query over `window`, averaged, with the default step.
    pub fn new(window: Duration, over: WindowAggregation) -> Self {
        RangeQuery {
            window,
            step: None,
            over,
        }
    }

    /// The step used: the configured one, or `window / 60` (at least 1 s).
    pub fn effective_step(&self) -> Duration {
        self.step
            .unwrap_or_else(|| (self.window / 60).max(Duration::from_secs(1)))
    }
}

/// The HTTP method of a query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryMethod {
    /// `GET` with the query in the URL (default; what fly-autoscaler's client uses).
    #[default]
    Get,
    /// `POST` with a form body: for queries too long for a URL.
    Post,
}

/// Configuration of a [`PrometheusSource`], loadable from TOML or YAML.
///
/// ```
/// use fleetscale_metrics::{EmptyResult, PrometheusConfig};
/// let cfg: PrometheusConfig = toml::from_str(r#"
///     name = "queue_depth"
///     address = "https://api.fly.io/prometheus/my-org/"
///     query = "sum(queue_depth{app='$APP_NAME'})"
///     token = "FlyV1 fm2_..."
///     timeout = "5s"
///     empty = "zero"
/// "#).unwrap();
/// assert_eq!(cfg.empty, EmptyResult::Zero);
/// assert_eq!(format!("{:?}", cfg.token), "Some(<redacted>)");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The variable name the value gets in expressions (an identifier).
    pub name: String,
    /// The API base address, e.g. `http://127.0.0.1:9090` or
    /// `https://api.fly.io/prometheus/<org>`; a trailing `/` is fine. `/api/v1/query` is added.
    pub address: String,
    /// The PromQL query. `$APP_NAME` / `${APP_NAME}` (and the other scope variables, see
    /// [`Scope::var`]) are expanded at every collect; other `$VAR`s are left alone unless
    /// [`PrometheusConfig::expand_env`] is set.
    pub query: String,
    /// The API token: a Fly token starting with `Fly` is sent verbatim as `Authorization`,
    /// anything else as `Bearer <token>`; none (or empty) sends no header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// The deadline of one query, connection included (default 10 s). Also sent to the server
    /// as the `timeout` parameter so it stops evaluating when we stop waiting.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What an empty result means (default [`EmptyResult::Auto`]: 0 for `count(…)` and
    /// `sum(…)` without grouping, an error otherwise).
    #[serde(default)]
    pub empty: EmptyResult,
    /// How several series are combined (default: several series are an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregation>,
    /// Make it a range query over a window instead of an instant query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeQuery>,
    /// `get` (default) or `post`.
    #[serde(default)]
    pub method: QueryMethod,
    /// Also expand `$VAR` from the process environment (after the scope's variables). Off by
    /// default: PromQL may contain `$` of its own.
    #[serde(default)]
    pub expand_env: bool,
}

impl PrometheusConfig {
    /// A configuration with every option at its default.
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        query: impl Into<String>,
    ) -> Self {
        PrometheusConfig {
            name: name.into(),
            address: address.into(),
            query: query.into(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            empty: EmptyResult::Auto,
            aggregate: None,
            range: None,
            method: QueryMethod::Get,
            expand_env: false,
        }
    }
}

setters! { PrometheusConfig {
    /// Sets [`PrometheusConfig::token`], sent as `Authorization` on every query.
    with_token(token: impl Into<Token>) = Some(token.into());
    /// Sets the per-query timeout.
    with_timeout(timeout: Duration) = timeout;
    /// Sets what an empty result means.
    with_empty(empty: EmptyResult) = empty;
    /// Combines several series with `aggregate`.
    with_aggregate(aggregate: Aggregation) = Some(aggregate);
    /// Makes it a range query.
    with_range(range: RangeQuery) = Some(range);
    /// Sets the HTTP method.
    with_method(method: QueryMethod) = method;
    /// Turns environment expansion on or off.
    with_expand_env(expand_env: bool) = expand_env;
}}

/// One reading with its details, from [`PrometheusSource::read`].
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The value (finite).
    pub value: f64,
    /// How many series it came from (0 for a scalar or an empty result read as zero).
    pub series: usize,
    /// The query as sent, after expansion.
    pub query: String,
    /// Prometheus' `warnings` (also logged at WARN).
    pub warnings: Vec<String>,
}

/// A [`MetricSource`] that runs a PromQL query against a Prometheus HTTP API.
///
/// # Behaviour
/// - Query: `$APP_NAME` / `${APP_NAME}` and the other scope variables are expanded from the
///   [`Scope`] at every collect (also for queries read from a YAML file, which fly-autoscaler
///   blanks at load time); other `$VAR`s stay as written unless
///   [`PrometheusConfig::expand_env`].
/// - Instant query `GET <address>/api/v1/query?query=..&timeout=..` (or a POST form), or with
///   [`PrometheusConfig::range`] `/api/v1/query_range` with `start = now - window`, `end = now`
///   and `step`, each series reduced over the window first.
/// - Result: a single series or a scalar gives its value; no series is 0 for a `count(…)` or
///   `sum(…)` without grouping, an error otherwise ([`EmptyResult`]); several series are an error naming them unless an [`Aggregation`] is
///   set; NaN and ±Inf are errors; `warnings` are logged and returned in [`Reading`].
/// - The whole call (connect, send, read) is bounded by the timeout; dropping the future
///   cancels it, and [`PrometheusSource::read_with_cancel`] also takes a token.
///
/// # Errors
/// See [`MetricsError`] for every case and the [`fleetscale_core::Error`] class it maps to:
/// 401/403 -> `Unauthorized`, 429 -> `RateLimited`, connection failures and 5xx ->
/// `Unavailable`, deadline -> `Timeout`, Prometheus `bad_data` -> `InvalidRequest`, undecodable
/// answers -> `InvalidResponse`, no usable value -> `Metric`.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    config: PrometheusConfig,
    client: reqwest::Client,
    query_url: Url,
    range_url: Url,
    auth: Option<HeaderValue>,
}

impl PrometheusSource {
    /// Checks the configuration and builds the HTTP client.
    ///
    /// # Errors
    /// [`MetricsError::Config`] for a name that is not an identifier, an empty query, an address
    /// that is not an absolute `http`/`https` URL (or has a query string), a zero timeout, a
    /// zero range window or step, or a token that cannot be an HTTP header.
    pub fn new(config: PrometheusConfig) -> Result<Self, MetricsError> {
        let bad = config_errors(&config.name, &config.query)?;
        if config.timeout.is_zero() {
            return Err(bad("`timeout` must be greater than zero".to_owned()));
        }
        if let Some(range) = &config.range {
            if range.window.is_zero() || range.step.is_some_and(|s| s.is_zero()) {
                return Err(bad(
                    "`range.window` and `range.step` must be greater than zero".into(),
                ));
            }
        }
        let Endpoint { base, auth, client } =
            endpoint(&config.address, config.token.as_ref(), config.timeout, &bad)?;
        Ok(PrometheusSource {
            query_url: join_url(&base, "api/v1/query", &bad)?,
            range_url: join_url(&base, "api/v1/query_range", &bad)?,
            config,
            client,
            auth,
        })
    }

    /// The settings this source was built with (address, query, timeout, aggregation, range).
    pub fn config(&self) -> &PrometheusConfig {
        &self.config
    }

    /// The query as it would be sent for `scope`.
    pub fn expanded_query(&self, scope: &Scope) -> String {
        expand::expand(&self.config.query, scope, self.config.expand_env)
    }

    /// Reads the value for `scope`, with details. See the type's docs for behaviour and errors.
    pub async fn read(&self, scope: &Scope) -> Result<Reading, MetricsError> {
        self.run(scope, None).await
    }

    /// Like [`PrometheusSource::read`], but returns [`MetricsError::Cancelled`] as soon as
    /// `cancel` fires (the request is dropped).
    pub async fn read_with_cancel(
        &self,
        scope: &Scope,
        cancel: &CancellationToken,
    ) -> Result<Reading, MetricsError> {
        self.run(scope, Some(cancel)).await
    }

    async fn run(
        &self,
        scope: &Scope,
        cancel: Option<&CancellationToken>,
    ) -> Result<Reading, MetricsError> {
        let query = self.expanded_query(scope);
        let url = if self.config.range.is_some() {
            &self.range_url
        } else {
            &self.query_url
        };
        let (shown, context) = self.shown_and_context(url);
        tracing::debug!(metric = %self.config.name, target = %scope.target, %query, "prometheus query");
        let work = async {
            let request = self.request(url, &self.params(&query));
            let answer = http::send(request, &self.config.name, &shown).await?;
            let ctx = Ctx {
                metric: &self.config.name,
                context: &context,
                url: &shown,
                query: &query,
            };
            let decoded = result::decode(&answer, &ctx)?;
            if !decoded.warnings.is_empty() {
                tracing::warn!(
                    metric = %self.config.name,
                    target = %scope.target,
                    warnings = %decoded.warnings.join("; "),
                    "prometheus"
                );
            }
            if !decoded.infos.is_empty() {
                tracing::debug!(metric = %self.config.name, infos = ?decoded.infos, "prometheus");
            }
            let selection = Selection {
                empty: self.config.empty,
                aggregate: self.config.aggregate,
                window: self.config.range.as_ref().map(|r| r.over),
            };
            let (value, series) = result::select(decoded.data, &selection, &ctx)?;
            Ok(Reading {
                value,
                series,
                query: query.clone(),
                warnings: decoded.warnings,
            })
        };
        bounded(work, self.config.timeout, cancel, &self.config.name, || {
            format!("{context} (query {})", truncate(&query, 200))
        })
        .await
    }

    /// The address as shown in errors (no query string, no credentials), and `METHOD address`.
    fn shown_and_context(&self, url: &Url) -> (String, String) {
        shown_and_context(self.config.method, url)
    }

    /// A request of `params` to `url` by the configured method, with the authorization.
    fn request(&self, url: &Url, params: &[(&str, String)]) -> reqwest::RequestBuilder {
        query_request(
            &self.client,
            self.config.method,
            url,
            params,
            self.auth.as_ref(),
        )
    }

    fn params(&self, query: &str) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("query", query.to_owned()),
            // Float seconds: accepted for durations by Prometheus and VictoriaMetrics alike.
            ("timeout", seconds(self.config.timeout)),
        ];
        if let Some(range) = &self.config.range {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let start = now - range.window.as_secs_f64();
            params.push(("start", format!("{start:.3}")));
            params.push(("end", format!("{now:.3}")));
            params.push(("step", seconds(range.effective_step())));
        }
        params
    }
}

/// The first checks of a Prometheus source's configuration: its `name` ([`crate::check_name`])
/// and a non-empty `query`; then the maker of the [`MetricsError::Config`] errors naming it.
fn config_errors<'a>(
    name: &'a str,
    query: &str,
) -> Result<impl Fn(String) -> MetricsError + Copy + 'a, MetricsError> {
    let bad = crate::config_errors(name)?;
    if query.trim().is_empty() {
        return Err(bad("`query` is empty".to_owned()));
    }
    Ok(bad)
}

/// What a Prometheus source sends its queries with, built from its configuration.
struct Endpoint {
    /// The API base address, for [`join_url`].
    base: Url,
    /// The `Authorization` header of the token, if any.
    auth: Option<HeaderValue>,
    /// The HTTP client, its connect timeout within the query timeout.
    client: reqwest::Client,
}

/// Checks `address` and `token` (in this order) and builds the client: the last checks of a
/// Prometheus source's configuration. (The API URLs are joined after these: a base that
/// [`base_url`] accepts always takes a path.)
fn endpoint(
    address: &str,
    token: Option<&Token>,
    timeout: Duration,
    bad: &dyn Fn(String) -> MetricsError,
) -> Result<Endpoint, MetricsError> {
    Ok(Endpoint {
        base: base_url(address, bad)?,
        auth: authorization(token, bad)?,
        client: http::client(timeout, bad)?,
    })
}

/// The address as shown in errors (no query string, no credentials), and `METHOD address`.
fn shown_and_context(method: QueryMethod, url: &Url) -> (String, String) {
    let method = match method {
        QueryMethod::Get => "GET",
        QueryMethod::Post => "POST",
    };
    let shown = display_url(url);
    let context = format!("{method} {shown}");
    (shown, context)
}

/// A request of `params` to `url` by `method` (a `GET` query string or a `POST` form), asking
/// for JSON, with `auth` as `Authorization` when there is one.
fn query_request(
    client: &reqwest::Client,
    method: QueryMethod,
    url: &Url,
    params: &[(&str, String)],
    auth: Option<&HeaderValue>,
) -> reqwest::RequestBuilder {
    let request = match method {
        QueryMethod::Get => client.get(url.clone()).query(params),
        QueryMethod::Post => client.post(url.clone()).form(params),
    };
    let request = request.header(ACCEPT, "application/json");
    match auth {
        Some(auth) => request.header(AUTHORIZATION, auth.clone()),
        None => request,
    }
}

/// The API base address: an absolute `http`/`https` URL without query string or fragment.
fn base_url(address: &str, bad: &dyn Fn(String) -> MetricsError) -> Result<Url, MetricsError> {
    let base = Url::parse(address.trim())
        .map_err(|e| bad(format!("`address` {address:?} is not a URL: {e}")))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(bad(format!(
            "`address` {:?} must be an http or https URL",
            display_url(&base)
        )));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad(
            "`address` must not have a query string or fragment".into()
        ));
    }
    Ok(base)
}

/// `base` + `/suffix`, with or without a trailing `/` on `base`.
fn join_url(
    base: &Url,
    suffix: &str,
    bad: &dyn Fn(String) -> MetricsError,
) -> Result<Url, MetricsError> {
    let text = format!("{}/{suffix}", base.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|e| bad(format!("cannot build the API URL: {e}")))
}

/// The `Authorization` header of `token` (none for no or an empty token).
fn authorization(
    token: Option<&Token>,
    bad: &dyn Fn(String) -> MetricsError,
) -> Result<Option<HeaderValue>, MetricsError> {
    match token {
        Some(t) if !t.is_empty() => crate::token::fly_prometheus_authorization(t)
            .map(Some)
            .ok_or_else(|| bad("`token` contains characters not allowed in an HTTP header".into())),
        _ => Ok(None),
    }
}

/// `d` as float seconds with millisecond precision, e.g. `10` or `2.5`.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    format!("{}", ms as f64 / 1000.0)
}

/// Runs the query for `scope` (see the type's docs). Errors convert from [`MetricsError`].
#[async_trait]
impl MetricSource for PrometheusSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        Ok(self.read(scope).await?.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_joined_with_or_without_slash() {
        for addr in [
            "https://api.fly.io/prometheus/my-org",
            "https://api.fly.io/prometheus/my-org/",
        ] {
            let s = PrometheusSource::new(PrometheusConfig::new("m", addr, "up")).unwrap();
            assert_eq!(
                s.query_url.as_str(),
                "https://api.fly.io/prometheus/my-org/api/v1/query"
            );
            assert_eq!(
                s.range_url.as_str(),
                "https://api.fly.io/prometheus/my-org/api/v1/query_range"
            );
        }
        let s = PrometheusSource::new(PrometheusConfig::new("m", "http://127.0.0.1:9090", "up"))
            .unwrap();
        assert_eq!(s.query_url.as_str(), "http://127.0.0.1:9090/api/v1/query");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let ok = PrometheusConfig::new("m", "http://h:9090", "up");
        for cfg in [
            PrometheusConfig::new("", "http://h", "up"),
            PrometheusConfig::new("1abc", "http://h", "up"),
            PrometheusConfig::new("a-b", "http://h", "up"),
            PrometheusConfig::new("m", "h:9090", "up"),
            PrometheusConfig::new("m", "ftp://h", "up"),
            PrometheusConfig::new("m", "http://h?x=1", "up"),
            PrometheusConfig::new("m", "not a url", "up"),
            PrometheusConfig::new("m", "http://h", "  "),
            ok.clone().with_timeout(Duration::ZERO),
            ok.clone().with_token("bad\ntoken\u{7}"),
            ok.clone()
                .with_range(RangeQuery::new(Duration::ZERO, WindowAggregation::Avg)),
        ] {
            let err = PrometheusSource::new(cfg.clone()).unwrap_err();
            assert!(matches!(err, MetricsError::Config { .. }), "{cfg:?}: {err}");
            let core: fleetscale_core::Error = err.into();
            assert_eq!(core.kind(), "config");
        }
    }

    #[test]
    fn fly_tokens_go_verbatim_others_as_bearer() {
        // Token, the `Authorization` sent, a secret part that `Debug` must not show.
        for (token, header, secret) in [
            (
                "FlyV1 fm2_abc,fo1_def",
                Some("FlyV1 fm2_abc,fo1_def"),
                "fm2_abc",
            ),
            ("abc", Some("Bearer abc"), "abc"),
            ("", None, ""),
        ] {
            let cfg = PrometheusConfig::new("m", "http://h", "up").with_token(token);
            let s = PrometheusSource::new(cfg).unwrap();
            let sent = s.auth.as_ref().map(|a| a.to_str().unwrap());
            assert_eq!(sent, header, "{token:?}");
            if !secret.is_empty() {
                assert!(!format!("{s:?}").contains(secret), "{token:?}");
            }
        }
    }

    #[test]
    fn query_expansion() {
        let s = PrometheusSource::new(PrometheusConfig::new(
            "m",
            "http://h",
            "sum(x{app=\"$APP_NAME\",g=\"${GROUP}\"}[$__interval]) + $PATH",
        ))
        .unwrap();
        let scope = Scope::new("web").with_group("app");
        assert_eq!(
            s.expanded_query(&scope),
            "sum(x{app=\"web\",g=\"app\"}[$__interval]) + $PATH"
        );
        let env = PrometheusSource::new(s.config().clone().with_expand_env(true)).unwrap();
        assert!(!env.expanded_query(&scope).contains("$PATH"));
        assert!(env.expanded_query(&scope).contains("$__interval"));
    }

    #[test]
    fn config_from_toml_and_yaml_shapes() {
        let cfg: PrometheusConfig = toml::from_str(
            r#"
            name = "load"
            address = "http://127.0.0.1:9090/"
            query = "avg(load{app='$APP_NAME'})"
            aggregate = "sum"
            method = "post"
            expand_env = true
            [range]
            window = "5m"
            over = "max"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.aggregate, Some(Aggregation::Sum));
        assert_eq!(cfg.method, QueryMethod::Post);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
        let range = cfg.range.clone().unwrap();
        assert_eq!(range.over, WindowAggregation::Max);
        assert_eq!(range.effective_step(), Duration::from_secs(5));
        assert!(
            toml::from_str::<PrometheusConfig>("name='a'\naddress='x'\nquery='q'\nbogus=1")
                .is_err()
        );
        // Serialising never shows the token.
        let with_token = cfg.with_token("s3cret");
        let text = serde_json::to_string(&with_token).unwrap();
        assert!(
            text.contains("<redacted>") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn works_inside_an_internally_tagged_enum() {
        // How a binary's config is likely to hold sources: `type = "prometheus"` plus fields.
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Source {
            Prometheus(PrometheusConfig),
            Constant(crate::ConstantConfig),
        }
        let list: std::collections::BTreeMap<String, Vec<Source>> = toml::from_str(
            r#"
            [[sources]]
            type = "prometheus"
            name = "load"
            address = "http://h:9090"
            query = "up"
            [[sources]]
            type = "constant"
            name = "floor"
            value = 1
            "#,
        )
        .unwrap();
        assert!(matches!(&list["sources"][0], Source::Prometheus(c) if c.name == "load"));
        assert!(matches!(&list["sources"][1], Source::Constant(c) if c.value == 1.0));
        let bad = toml::from_str::<std::collections::BTreeMap<String, Vec<Source>>>(
            "[[sources]]\ntype = 'prometheus'\nname = 'x'\naddress = 'a'\nquery = 'q'\ntypo = 1\n",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn range_params() {
        let s = PrometheusSource::new(PrometheusConfig::new("m", "http://h", "up").with_range(
            RangeQuery {
                window: Duration::from_secs(600),
                step: Some(Duration::from_secs(30)),
                over: WindowAggregation::Last,
            },
        ))
        .unwrap();
        let p = s.params("up");
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let start: f64 = get("start").parse().unwrap();
        let end: f64 = get("end").parse().unwrap();
        assert!((end - start - 600.0).abs() < 0.01);
        assert_eq!(get("step"), "30");
        assert_eq!(get("timeout"), "10");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
    }
}
