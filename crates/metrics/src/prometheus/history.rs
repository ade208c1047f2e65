//! [`PrometheusSource::history`]: the source's query over a past time range, for backtests.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetscale_core::Scope;

use super::result::{self, label_set, Ctx, QueryData};
use super::{seconds, Aggregation, EmptyResult, PrometheusSource};
use crate::error::{truncate, MetricsError};
use crate::http::{self, bounded};
use crate::SourceConfig;

/// Prometheus refuses a range query of more than 11,000 points per series; requests are cut
/// into chunks of at most this many steps.
pub const MAX_POINTS_PER_QUERY: usize = 10_000;

/// A metric's values over a time range, one per step.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    /// The evaluation times, Unix milliseconds: `start + k × step` up to `end`.
    pub timestamps: Vec<i64>,
    /// The value at each time; `None` where the query had no usable value (no series and
    /// [`EmptyResult::Error`], NaN or infinite), which a replay treats as a failed read.
    pub values: Vec<Option<f64>>,
    /// Prometheus' `warnings`, from every request.
    pub warnings: Vec<String>,
}

/// The times a history is read at: every `step` from `start` up to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRange {
    /// The first evaluation time.
    pub start: SystemTime,
    /// The last time an evaluation may fall on (included when a step lands on it).
    pub end: SystemTime,
    /// The time between two evaluations: at least 1 ms.
    pub step: Duration,
}

impl HistoryRange {
    /// Every `step` from `start` up to `end`.
    pub fn new(start: SystemTime, end: SystemTime, step: Duration) -> Self {
        HistoryRange { start, end, step }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn combine(values: &[f64], aggregate: Option<Aggregation>) -> Option<f64> {
    let v = match (values.len(), aggregate) {
        (0, _) => return None,
        (1, _) => values[0],
        (_, Some(Aggregation::Sum)) => values.iter().sum(),
        (n, Some(Aggregation::Avg)) => values.iter().sum::<f64>() / n as f64,
        (_, Some(Aggregation::Min)) => values.iter().copied().fold(f64::INFINITY, f64::min),
        (_, Some(Aggregation::Max)) => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        (_, None) => return None,
    };
    v.is_finite().then_some(v)
}

/// The evaluation times `start + k × step` up to `end`, Unix milliseconds.
fn grid(metric: &str, range: &HistoryRange) -> Result<Vec<i64>, MetricsError> {
    let bad = |message: &str| MetricsError::Config {
        metric: metric.to_owned(),
        message: message.to_owned(),
    };
    let (start, end) = (unix_ms(range.start), unix_ms(range.end));
    let step_ms = i64::try_from(range.step.as_millis()).unwrap_or(i64::MAX);
    if step_ms <= 0 {
        return Err(bad("the history step must be at least 1 ms"));
    }
    if end < start {
        return Err(bad("the history ends before it starts"));
    }
    let n = usize::try_from((end - start) / step_ms + 1).unwrap_or(usize::MAX);
    Ok((0..n).map(|k| start + k as i64 * step_ms).collect())
}

impl SourceConfig {
    /// The source's values at every `step` from `start` to `end`, for a backtest: a
    /// Prometheus source runs [`PrometheusSource::history`], a constant source repeats its
    /// value.
    ///
    /// # Errors
    /// Those of [`PrometheusSource::history`]; [`MetricsError::Config`] for a source whose
    /// past cannot be read (Temporal, HTTP JSON: they only know the present), naming it.
    pub async fn history(
        &self,
        scope: &Scope,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<History, MetricsError> {
        let range = HistoryRange::new(start, end, step);
        match self {
            SourceConfig::Prometheus(c) => {
                PrometheusSource::new(c.clone())?
                    .history(scope, &range)
                    .await
            }
            SourceConfig::Constant(c) => {
                let timestamps = grid(&c.name, &range)?;
                Ok(History {
                    values: vec![Some(c.value); timestamps.len()],
                    timestamps,
                    warnings: Vec::new(),
                })
            }
            other => Err(MetricsError::Config {
                metric: other.name().to_owned(),
                message: format!(
                    "a {} source cannot be read over the past: record it and give its values as a trace column {}",
                    match other {
                        SourceConfig::Temporal(_) => "temporal",
                        _ => "http_json",
                    },
                    other.name()
                ),
            }),
        }
    }
}

impl PrometheusSource {
    /// The query for `scope` at every time of `range` (`/api/v1/query_range`), as the live
    /// source would have read it at each of those times: `$APP_NAME` and the scope variables
    /// expanded, the same address, token, method and per-request timeout; at each time, several
    /// series combine with the configured [`Aggregation`], and no series gives 0 where a live
    /// read would (see [`EmptyResult`]), else a missing value.
    ///
    /// A [`range`](super::PrometheusConfig::range) setting is not replayed: the query is
    /// evaluated at each step as an instant query would be. Long ranges are read in chunks of
    /// [`MAX_POINTS_PER_QUERY`] steps.
    ///
    /// # Errors
    /// The errors of [`PrometheusSource::read`] (unreachable server, HTTP and Prometheus
    /// errors, timeouts, undecodable answers); [`MetricsError::Config`] for a zero step or
    /// an end before the start; [`MetricsError::MultipleSeries`] when several series answer
    /// at one time and no aggregation is configured; a result that is not a range vector.
    pub async fn history(
        &self,
        scope: &Scope,
        range: &HistoryRange,
    ) -> Result<History, MetricsError> {
        let timestamps = grid(&self.config.name, range)?;
        let query = self.expanded_query(scope);
        // As for a live read: no series is 0 for `count(…)`/`sum(…)` under `Auto`.
        let empty_is_zero = match self.config.empty {
            EmptyResult::Zero => true,
            EmptyResult::Auto => super::is_total_without_grouping(&query),
            EmptyResult::Error => false,
        };
        let mut by_time: BTreeMap<i64, Vec<(String, f64)>> = BTreeMap::new();
        let mut warnings = Vec::new();
        for chunk in timestamps.chunks(MAX_POINTS_PER_QUERY) {
            let (from, to) = (chunk[0], chunk[chunk.len() - 1]);
            let (series, w) = self.range_chunk(&query, from, to, range.step).await?;
            warnings.extend(w);
            for (labels, samples) in series {
                for (ts, v) in samples {
                    let at = (ts * 1000.0).round() as i64;
                    if (from..=to).contains(&at) {
                        by_time.entry(at).or_default().push((labels.clone(), v));
                    }
                }
            }
        }
        let mut values = Vec::with_capacity(timestamps.len());
        for t in &timestamps {
            let here = by_time.remove(t).unwrap_or_default();
            if here.len() > 1 && self.config.aggregate.is_none() {
                return Err(MetricsError::MultipleSeries {
                    metric: self.config.name.clone(),
                    count: here.len(),
                    series: here
                        .iter()
                        .take(5)
                        .map(|(l, _)| truncate(l, 150))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            let v: Vec<f64> = here.into_iter().map(|(_, v)| v).collect();
            values.push(match (v.is_empty(), empty_is_zero) {
                (true, true) => Some(0.0),
                (true, false) => None,
                (false, _) => combine(&v, self.config.aggregate),
            });
        }
        Ok(History {
            timestamps,
            values,
            warnings,
        })
    }

    /// One `query_range` request: the series as (labels, [(time s, value)]), non-finite
    /// values left out, and the warnings.
    async fn range_chunk(
        &self,
        query: &str,
        from_ms: i64,
        to_ms: i64,
        step: Duration,
    ) -> Result<(Vec<(String, Vec<(f64, f64)>)>, Vec<String>), MetricsError> {
        let url = &self.range_url;
        let (shown, context) = self.shown_and_context(url);
        let work = async {
            let params = [
                ("query", query.to_owned()),
                ("start", format!("{:.3}", from_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", to_ms as f64 / 1000.0)),
                ("step", seconds(step)),
                ("timeout", seconds(self.config.timeout)),
            ];
            let request = self.request(url, &params);
            let answer = http::send(request, &self.config.name, &shown).await?;
            let ctx = Ctx {
                metric: &self.config.name,
                context: &context,
                url: &shown,
                query,
            };
            let decoded = result::decode(&answer, &ctx)?;
            let series = match decoded.data {
                QueryData::Matrix(s) => s,
                other => {
                    let kind = match other {
                        QueryData::Vector(_) => "vector",
                        QueryData::Scalar(_) => "scalar",
                        _ => "string",
                    };
                    return Err(MetricsError::UnexpectedResultType {
                        metric: self.config.name.clone(),
                        result_type: kind.to_owned(),
                        hint: "a range query must answer a range vector (matrix)",
                    });
                }
            };
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                let labels = label_set(&s.labels);
                let samples = s
                    .samples
                    .iter()
                    .filter_map(|(t, raw)| {
                        raw.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .map(|v| (*t, v))
                    })
                    .collect();
                out.push((labels, samples));
            }
            Ok((out, decoded.warnings))
        };
        bounded(work, self.config.timeout, None, &self.config.name, || {
            format!("{context} (query {})", truncate(query, 200))
        })
        .await
    }
}
