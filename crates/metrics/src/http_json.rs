//! [`HttpJsonSource`]: a number read from any HTTP endpoint that answers JSON, for users without
//! Prometheus (a queue's stats endpoint, a job runner's API).

use std::time::Duration;

use async_trait::async_trait;
use fleetscale_core::{MetricSource, Scope};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::error::{display_url, truncate, MetricsError};
use crate::http::{self, bounded, status_error};
use crate::{expand, Token};

fn default_timeout() -> Duration {
    crate::prometheus::DEFAULT_TIMEOUT
}

/// Configuration of an [`HttpJsonSource`].
///
/// ```
/// let cfg: fleetscale_metrics::HttpJsonConfig = toml::from_str(r#"
///     name = "backlog"
///     url = "https://jobs.internal/queues/$APP_NAME/stats"
///     pointer = "/queue/pending"
///     timeout = "3s"
/// "#).unwrap();
/// assert_eq!(cfg.pointer, "/queue/pending");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonConfig {
    /// The variable name in expressions.
    pub name: String,
    /// The URL to `GET`. `$APP_NAME` / `${APP_NAME}` and the other scope variables are expanded
    /// (percent-encoded) at every collect.
    pub url: String,
    /// Where the number is in the answer: an RFC 6901 JSON pointer such as `/data/0/count`
    /// (`""` is the whole document, for an endpoint that answers a bare number).
    pub pointer: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// Deadline of one request (default 10 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Also expand `$VAR` in the URL from the process environment.
    #[serde(default)]
    pub expand_env: bool,
}

impl HttpJsonConfig {
    /// A configuration with default timeout, no token.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        pointer: impl Into<String>,
    ) -> Self {
        HttpJsonConfig {
            name: name.into(),
            url: url.into(),
            pointer: pointer.into(),
            token: None,
            timeout: default_timeout(),
            expand_env: false,
        }
    }
}

setters! { HttpJsonConfig {
    /// Sets the bearer token.
    with_token(token: impl Into<Token>) = Some(token.into());
    /// Sets the timeout.
    with_timeout(timeout: Duration) = timeout;
}}

/// A [`MetricSource`] that `GET`s a URL and picks a number out of the JSON answer.
///
/// # Behaviour
/// - The URL is expanded from the [`Scope`] at every collect, values percent-encoded.
/// - The value at [`HttpJsonConfig::pointer`] may be a JSON number or a string holding one
///   (`"42"`, `" 3.5 "`); anything else (missing, `null`, an object, `"abc"`) is an error.
///   NaN and infinity (possible as strings) are errors.
/// - 401/403 -> `Unauthorized`, 429 -> `RateLimited`, 5xx and connection failures ->
///   `Unavailable`, other statuses and non-JSON bodies -> `InvalidResponse`, deadline ->
///   `Timeout` (see [`MetricsError`]).
/// - Error messages show the URL without its query string (it may hold a key).
#[derive(Debug, Clone)]
pub struct HttpJsonSource {
    config: HttpJsonConfig,
    client: reqwest::Client,
    auth: Option<HeaderValue>,
}

impl HttpJsonSource {
    /// Checks the configuration and builds the client.
    ///
    /// # Errors
    /// [`MetricsError::Config`] for a name that is not an identifier, a pointer that is neither
    /// empty nor starts with `/`, a zero timeout, a token unusable as a header, or a URL that is
    /// not http(s) once expanded with a sample scope.
    pub fn new(config: HttpJsonConfig) -> Result<Self, MetricsError> {
        let bad = crate::config_errors(&config.name)?;
        if !(config.pointer.is_empty() || config.pointer.starts_with('/')) {
            return Err(bad(format!(
                "`pointer` {:?} must be empty or start with `/` (RFC 6901)",
                config.pointer
            )));
        }
        if config.timeout.is_zero() {
            return Err(bad("`timeout` must be greater than zero".to_owned()));
        }
        // The URL is only final at collect time; check its shape with a sample scope.
        let sample = expand::expand_url(&config.url, &Scope::new("app"), false);
        check_url(&sample).map_err(bad)?;
        let auth = match &config.token {
            Some(t) if !t.is_empty() => {
                Some(crate::token::bearer_authorization(t).ok_or_else(|| {
                    bad("`token` contains characters not allowed in an HTTP header".into())
                })?)
            }
            _ => None,
        };
        let client = http::client(config.timeout, &bad)?;
        Ok(HttpJsonSource {
            config,
            client,
            auth,
        })
    }

    /// The settings this source was built with (URL, JSON pointer, timeout).
    pub fn config(&self) -> &HttpJsonConfig {
        &self.config
    }

    /// Reads the value for `scope`.
    pub async fn read(&self, scope: &Scope) -> Result<f64, MetricsError> {
        self.run(scope, None).await
    }

    /// Reads the value, giving up with [`MetricsError::Cancelled`] when `cancel` fires.
    pub async fn read_with_cancel(
        &self,
        scope: &Scope,
        cancel: &CancellationToken,
    ) -> Result<f64, MetricsError> {
        self.run(scope, Some(cancel)).await
    }

    async fn run(
        &self,
        scope: &Scope,
        cancel: Option<&CancellationToken>,
    ) -> Result<f64, MetricsError> {
        let metric = self.config.name.as_str();
        let expanded = expand::expand_url(&self.config.url, scope, self.config.expand_env);
        let url = check_url(&expanded).map_err(|message| MetricsError::Config {
            metric: metric.to_owned(),
            message,
        })?;
        let shown = display_url(&url);
        let work = async {
            let mut request = self
                .client
                .get(url.clone())
                .header(ACCEPT, "application/json");
            if let Some(auth) = &self.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let answer = http::send(request, metric, &shown).await?;
            if !answer.is_success() {
                return Err(status_error(&answer, metric, &shown));
            }
            let doc: Value = serde_json::from_slice(&answer.body).map_err(|e| {
                MetricsError::InvalidResponse {
                    metric: metric.to_owned(),
                    context: format!("GET {shown}"),
                    message: format!(
                        "body is not JSON ({e}); body starts: {:?}",
                        answer.snippet()
                    ),
                    source: Some(Box::new(e)),
                }
            })?;
            pick(&doc, &self.config.pointer).map_err(|message| MetricsError::Pointer {
                metric: metric.to_owned(),
                pointer: self.config.pointer.clone(),
                url: shown.clone(),
                message,
            })
        };
        bounded(work, self.config.timeout, cancel, metric, || {
            format!("GET {shown}")
        })
        .await
    }
}

fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("`url` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`url` {} must be http or https", display_url(&url)));
    }
    Ok(url)
}

/// The number at `pointer`: a JSON number, or a string that parses as one. Finite only.
fn pick(doc: &Value, pointer: &str) -> Result<f64, String> {
    let found = doc
        .pointer(pointer)
        .ok_or_else(|| "nothing there".to_owned())?;
    let value = match found {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("number {n} does not fit a float"))?,
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("string {:?} is not a number", truncate(s, 60)))?,
        Value::Null => return Err("found null".to_owned()),
        Value::Bool(b) => return Err(format!("found a boolean ({b}), not a number")),
        Value::Array(_) => return Err("found an array, not a number".to_owned()),
        Value::Object(_) => return Err("found an object, not a number".to_owned()),
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("value {value} is not finite"))
    }
}

/// Fetches and decodes the value for `scope` (see the type's docs).
#[async_trait]
impl MetricSource for HttpJsonSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn collect(&self, scope: &Scope) -> fleetscale_core::Result<f64> {
        Ok(self.read(scope).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_numbers_and_numeric_strings() {
        let doc = json!({"a": {"n": 3, "s": " 4.5 ", "neg": "-2e3", "bad": "abc", "nan": "NaN",
                        "null": null, "list": [1, 2], "t": true}, "x~y": {"a/b": 7}});
        assert_eq!(pick(&doc, "/a/n"), Ok(3.0));
        assert_eq!(pick(&doc, "/a/s"), Ok(4.5));
        assert_eq!(pick(&doc, "/a/neg"), Ok(-2000.0));
        assert_eq!(pick(&doc, "/a/list/1"), Ok(2.0));
        assert_eq!(pick(&doc, "/x~0y/a~1b"), Ok(7.0));
        for p in [
            "/a/bad",
            "/a/nan",
            "/a/null",
            "/a/list",
            "/a/t",
            "/a",
            "/missing",
            "/a/list/9",
        ] {
            assert!(pick(&doc, p).is_err(), "{p}");
        }
        assert_eq!(pick(&json!(12), ""), Ok(12.0));
    }

    #[test]
    fn config_checks() {
        assert!(HttpJsonSource::new(HttpJsonConfig::new("m", "http://h/$APP_NAME", "/a")).is_ok());
        assert!(HttpJsonSource::new(HttpJsonConfig::new("m", "http://h", "a")).is_err());
        assert!(HttpJsonSource::new(HttpJsonConfig::new("m", "file:///etc/x", "")).is_err());
        assert!(HttpJsonSource::new(HttpJsonConfig::new("m m", "http://h", "")).is_err());
        assert!(HttpJsonSource::new(
            HttpJsonConfig::new("m", "http://h", "").with_timeout(Duration::ZERO)
        )
        .is_err());
    }
}
