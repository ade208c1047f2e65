//! Decoding of Prometheus HTTP API answers and reduction of a result to one number.
//!
//! Wire format: <https://prometheus.io/docs/prometheus/latest/querying/api/> — an envelope
//! `{"status":"success"|"error","data":{"resultType":..,"result":..},"errorType":..,"error":..,
//! "warnings":[..],"infos":[..]}`; vector samples `{"metric":{labels},"value":[ts,"v"]}`, matrix
//! series `{"metric":{labels},"values":[[ts,"v"],..]}`, scalars `[ts,"v"]`; values are strings
//! (`"NaN"`, `"+Inf"`, `"-Inf"` included). Native-histogram samples (`"histogram"` instead of
//! `"value"`) are not numbers and are reported as such.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Aggregation, EmptyResult, WindowAggregation};
use crate::error::{truncate, MetricsError};
use crate::http::{status_error, Answer};

/// What a call was, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// The metric's name.
    pub metric: &'a str,
    /// `GET http://host/api/v1/query`.
    pub context: &'a str,
    /// The address without query string.
    pub url: &'a str,
    /// The PromQL query after variable expansion, exactly as sent.
    pub query: &'a str,
}

impl Ctx<'_> {
    fn invalid(
        &self,
        message: impl Into<String>,
        source: Option<serde_json::Error>,
    ) -> MetricsError {
        MetricsError::InvalidResponse {
            metric: self.metric.to_owned(),
            context: self.context.to_owned(),
            message: message.into(),
            source: source.map(|e| Box::new(e) as _),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    status: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

/// One series of a result: its labels and its samples (one for a vector, many for a matrix).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub labels: BTreeMap<String, String>,
    /// `(timestamp, value as written)`.
    pub samples: Vec<(f64, String)>,
}

/// A decoded `data` object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QueryData {
    /// `resultType: vector`: one sample per series (instant query).
    Vector(Vec<Series>),
    /// `resultType: matrix`: samples over time per series (range query).
    Matrix(Vec<Series>),
    /// `resultType: scalar`: one number, kept as the string Prometheus sent.
    Scalar(String),
    /// A string result (not a number).
    String,
}

/// A `status: success` answer, decoded, with its warnings and infos.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    pub data: QueryData,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

#[derive(Debug, Deserialize)]
struct RawVectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
    #[serde(default)]
    histogram: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawMatrixSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    histograms: Option<Value>,
}

/// Turns a raw HTTP answer into a decoded result or the most specific error.
///
/// Order of checks: 401/403 and 429 first (a proxy in front of Prometheus answers those, often
/// not in JSON); then a JSON envelope with `status: error` gives [`MetricsError::Prometheus`];
/// any other non-2xx gives [`MetricsError::Http`]; then the shape is checked.
pub(crate) fn decode(answer: &Answer, ctx: &Ctx<'_>) -> Result<Decoded, MetricsError> {
    if matches!(answer.status, 401 | 403 | 429) {
        return Err(status_error(answer, ctx.metric, ctx.url));
    }
    let envelope: Envelope = match serde_json::from_slice(&answer.body) {
        Ok(e) => e,
        Err(e) if answer.is_success() => {
            return Err(ctx.invalid(
                format!(
                    "HTTP {} body is not a Prometheus API answer ({e}); body starts: {:?}",
                    answer.status,
                    answer.snippet()
                ),
                Some(e),
            ))
        }
        Err(_) => return Err(status_error(answer, ctx.metric, ctx.url)),
    };
    match envelope.status.as_deref() {
        Some("error") => Err(MetricsError::Prometheus {
            metric: ctx.metric.to_owned(),
            status: answer.status,
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_owned()),
            error: envelope
                .error
                .map(|e| truncate(&e, 500))
                .unwrap_or_else(|| "(no message)".to_owned()),
            query: truncate(ctx.query, 300),
        }),
        Some("success") if answer.is_success() => {
            let data = envelope
                .data
                .ok_or_else(|| ctx.invalid("`status` is success but `data` is missing", None))?;
            Ok(Decoded {
                data: decode_data(data, ctx)?,
                warnings: envelope.warnings,
                infos: envelope.infos,
            })
        }
        Some("success") => Err(status_error(answer, ctx.metric, ctx.url)),
        _ if !answer.is_success() => Err(status_error(answer, ctx.metric, ctx.url)),
        other => Err(ctx.invalid(
            format!(
                "`status` is {}, expected \"success\" or \"error\"; body starts: {:?}",
                other.map_or_else(|| "missing".to_owned(), |s| format!("{s:?}")),
                answer.snippet()
            ),
            None,
        )),
    }
}

fn decode_data(data: Value, ctx: &Ctx<'_>) -> Result<QueryData, MetricsError> {
    let raw: RawData = serde_json::from_value(data)
        .map_err(|e| ctx.invalid(format!("`data` is malformed: {e}"), Some(e)))?;
    match raw.result_type.as_str() {
        "vector" => {
            let samples: Vec<RawVectorSample> = serde_json::from_value(raw.result)
                .map_err(|e| ctx.invalid(format!("vector `result` is malformed: {e}"), Some(e)))?;
            let mut out = Vec::with_capacity(samples.len());
            for s in samples {
                let value = match (s.value, s.histogram) {
                    (Some(v), _) => v,
                    (None, Some(_)) => {
                        return Err(MetricsError::UnexpectedResultType {
                            metric: ctx.metric.to_owned(),
                            result_type: "native histogram".to_owned(),
                            hint: "use histogram_quantile(), histogram_sum() or histogram_count() to get a number",
                        })
                    }
                    (None, None) => {
                        return Err(ctx.invalid("vector sample without `value`", None));
                    }
                };
                out.push(Series {
                    labels: s.metric,
                    samples: vec![value],
                });
            }
            Ok(QueryData::Vector(out))
        }
        "matrix" => {
            let series: Vec<RawMatrixSeries> = serde_json::from_value(raw.result)
                .map_err(|e| ctx.invalid(format!("matrix `result` is malformed: {e}"), Some(e)))?;
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                if s.values.is_empty() && s.histograms.is_some() {
                    return Err(MetricsError::UnexpectedResultType {
                        metric: ctx.metric.to_owned(),
                        result_type: "native histogram".to_owned(),
                        hint: "use histogram_quantile(), histogram_sum() or histogram_count() to get a number",
                    });
                }
                out.push(Series {
                    labels: s.metric,
                    samples: s.values,
                });
            }
            Ok(QueryData::Matrix(out))
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(raw.result)
                .map_err(|e| ctx.invalid(format!("scalar `result` is malformed: {e}"), Some(e)))?;
            Ok(QueryData::Scalar(v))
        }
        "string" => Ok(QueryData::String),
        other => Err(ctx.invalid(format!("unknown `resultType` {other:?}"), None)),
    }
}

/// How to turn a result into one number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selection {
    pub empty: EmptyResult,
    pub aggregate: Option<Aggregation>,
    /// `Some` for a range query: how to reduce each series over the window.
    pub window: Option<WindowAggregation>,
}

/// The number and how many series it came from.
pub(crate) fn select(
    data: QueryData,
    sel: &Selection,
    ctx: &Ctx<'_>,
) -> Result<(f64, usize), MetricsError> {
    let series = match (data, sel.window) {
        (QueryData::Scalar(v), _) => return Ok((parse_value(&v, "scalar", ctx)?, 0)),
        (QueryData::String, _) => {
            return Err(MetricsError::UnexpectedResultType {
                metric: ctx.metric.to_owned(),
                result_type: "string".to_owned(),
                hint: "the query must return a number",
            })
        }
        (QueryData::Matrix(_), None) => {
            return Err(MetricsError::UnexpectedResultType {
                metric: ctx.metric.to_owned(),
                result_type: "matrix".to_owned(),
                hint: "an instant query returned a range vector: wrap it in a function such as avg_over_time(), or configure a range query",
            })
        }
        (QueryData::Vector(s), _) | (QueryData::Matrix(s), Some(_)) => s,
    };
    let series: Vec<Series> = series
        .into_iter()
        .filter(|s| !s.samples.is_empty())
        .collect();
    let count = series.len();
    if series.is_empty() {
        let zero = match sel.empty {
            EmptyResult::Zero => true,
            EmptyResult::Auto => super::is_total_without_grouping(ctx.query),
            EmptyResult::Error => false,
        };
        return if zero {
            Ok((0.0, 0))
        } else {
            Err(MetricsError::Empty {
                metric: ctx.metric.to_owned(),
                query: truncate(ctx.query, 300),
            })
        };
    }
    if count > 1 && sel.aggregate.is_none() {
        return Err(MetricsError::MultipleSeries {
            metric: ctx.metric.to_owned(),
            count,
            series: describe_series(&series),
        });
    }
    let mut per_series = Vec::with_capacity(count);
    for s in &series {
        let mut values = Vec::with_capacity(s.samples.len());
        for (_, raw) in &s.samples {
            values.push(parse_value(raw, &label_set(&s.labels), ctx)?);
        }
        let v = match sel.window {
            None | Some(WindowAggregation::Last) => *values.last().unwrap_or(&0.0),
            Some(WindowAggregation::Avg) => values.iter().sum::<f64>() / values.len() as f64,
            Some(WindowAggregation::Max) => {
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            }
            Some(WindowAggregation::Min) => values.iter().copied().fold(f64::INFINITY, f64::min),
        };
        per_series.push(v);
    }
    let value = match sel.aggregate {
        None => per_series[0],
        Some(Aggregation::Sum) => per_series.iter().sum(),
        Some(Aggregation::Avg) => per_series.iter().sum::<f64>() / per_series.len() as f64,
        Some(Aggregation::Max) => per_series.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Some(Aggregation::Min) => per_series.iter().copied().fold(f64::INFINITY, f64::min),
    };
    if !value.is_finite() {
        // Sums of huge finite values can overflow.
        return Err(MetricsError::NotFinite {
            metric: ctx.metric.to_owned(),
            value: value.to_string(),
            series: format!("the aggregate of {count} series"),
        });
    }
    Ok((value, count))
}

pub(crate) fn parse_value(raw: &str, series: &str, ctx: &Ctx<'_>) -> Result<f64, MetricsError> {
    let v: f64 = raw.trim().parse().map_err(|_| {
        ctx.invalid(
            format!("sample value {raw:?} of {series} is not a number"),
            None,
        )
    })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(MetricsError::NotFinite {
            metric: ctx.metric.to_owned(),
            value: raw.to_owned(),
            series: series.to_owned(),
        })
    }
}

/// `name{a="1",b="2"}` as PromQL writes a series; `{}` for a label-less one.
pub(crate) fn label_set(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("__name__").map(String::as_str).unwrap_or("");
    let inner: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The first few label sets, each truncated, for an error message.
fn describe_series(series: &[Series]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = series
        .iter()
        .take(SHOWN)
        .map(|s| truncate(&label_set(&s.labels), 150))
        .collect();
    if series.len() > SHOWN {
        parts.push(format!("and {} more", series.len() - SHOWN));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            metric: "m",
            context: "GET http://p/api/v1/query",
            url: "http://p/api/v1/query",
            query: "q",
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    const STRICT: Selection = Selection {
        empty: EmptyResult::Error,
        aggregate: None,
        window: None,
    };

    fn value(body: &str, sel: Selection) -> Result<(f64, usize), MetricsError> {
        let d = decode(&answer(200, body), &ctx())?;
        select(d.data, &sel, &ctx())
    }

    #[test]
    fn one_sample_and_scalar() {
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"app":"a"},"value":[1700000000.5,"4.5"]}]}}"#;
        assert_eq!(value(one, STRICT).unwrap(), (4.5, 1));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"-2"]}}"#;
        assert_eq!(value(scalar, STRICT).unwrap(), (-2.0, 0));
    }

    #[test]
    fn empty_vector_is_error_or_zero() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(
            value(empty, STRICT),
            Err(MetricsError::Empty { .. })
        ));
        let zero = Selection {
            empty: EmptyResult::Zero,
            ..STRICT
        };
        assert_eq!(value(empty, zero).unwrap(), (0.0, 0));
    }

    #[test]
    fn several_series_name_them_unless_aggregated() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"load","app":"a"},"value":[1,"1"]},
            {"metric":{"__name__":"load","app":"b"},"value":[1,"2"]},
            {"metric":{"__name__":"load","app":"c"},"value":[1,"6"]}]}}"#;
        let err = value(body, STRICT).unwrap_err().to_string();
        assert!(err.contains("3 series"), "{err}");
        assert!(
            err.contains(r#"load{app="a"}, load{app="b"}, load{app="c"}"#),
            "{err}"
        );
        for (agg, want) in [
            (Aggregation::Sum, 9.0),
            (Aggregation::Avg, 3.0),
            (Aggregation::Min, 1.0),
            (Aggregation::Max, 6.0),
        ] {
            let sel = Selection {
                aggregate: Some(agg),
                ..STRICT
            };
            assert_eq!(value(body, sel).unwrap(), (want, 3), "{agg:?}");
        }
    }

    #[test]
    fn many_series_are_truncated() {
        let items: Vec<String> = (0..8)
            .map(|i| format!(r#"{{"metric":{{"i":"{i}"}},"value":[1,"1"]}}"#))
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        );
        let err = value(&body, STRICT).unwrap_err().to_string();
        assert!(err.contains("and 3 more"), "{err}");
        assert!(!err.contains(r#"i="7""#), "{err}");
    }

    #[test]
    fn nan_and_inf_are_errors() {
        for v in ["NaN", "+Inf", "-Inf"] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"app":"a"}},"value":[1,"{v}"]}}]}}}}"#
            );
            match value(&body, STRICT) {
                Err(MetricsError::NotFinite { value, series, .. }) => {
                    assert_eq!(value, v);
                    assert_eq!(series, r#"{app="a"}"#);
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_error_bodies() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#;
        match decode(&answer(400, body), &ctx()) {
            Err(MetricsError::Prometheus {
                status,
                error_type,
                error,
                ..
            }) => {
                assert_eq!((status, error_type.as_str()), (400, "bad_data"));
                assert!(error.contains("parse error"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_foreign_bodies_never_panic() {
        let cases = [
            (200, "<html>hello</html>"),
            (200, ""),
            (200, "{}"),
            (200, r#"{"status":"success"}"#),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#,
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"weird","result":[]}}"#,
            ),
            (200, r#"{"status":"maybe"}"#),
            (200, r#"[1,2,3]"#),
        ];
        for (status, body) in cases {
            let r =
                decode(&answer(status, body), &ctx()).and_then(|d| select(d.data, &STRICT, &ctx()));
            assert!(
                matches!(r, Err(MetricsError::InvalidResponse { .. })),
                "{body}: {r:?}"
            );
        }
    }

    #[test]
    fn http_statuses() {
        assert!(matches!(
            decode(&answer(401, "no"), &ctx()),
            Err(MetricsError::Unauthorized { status: 401, .. })
        ));
        assert!(matches!(
            decode(
                &answer(403, r#"{"status":"error","error":"forbidden"}"#),
                &ctx()
            ),
            Err(MetricsError::Unauthorized { status: 403, .. })
        ));
        assert!(matches!(
            decode(&answer(429, ""), &ctx()),
            Err(MetricsError::RateLimited { .. })
        ));
        assert!(matches!(
            decode(&answer(502, "<html>bad gateway</html>"), &ctx()),
            Err(MetricsError::Http { status: 502, .. })
        ));
        assert!(matches!(
            decode(&answer(503, r#"{"status":"success","data":{}}"#), &ctx()),
            Err(MetricsError::Http { status: 503, .. })
        ));
    }

    #[test]
    fn string_matrix_and_histograms_are_not_numbers() {
        let s = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(matches!(
            value(s, STRICT),
            Err(MetricsError::UnexpectedResultType { .. })
        ));
        let m = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"3"]]}]}}"#;
        assert!(matches!(
            value(m, STRICT),
            Err(MetricsError::UnexpectedResultType { .. })
        ));
        let h = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1"}]}]}}"#;
        assert!(matches!(
            value(h, STRICT),
            Err(MetricsError::UnexpectedResultType { .. })
        ));
    }

    #[test]
    fn windows() {
        let m = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"a":"1"},"values":[[1,"1"],[2,"3"],[3,"2"]]},
            {"metric":{"a":"2"},"values":[[1,"10"],[2,"10"]]}]}}"#;
        for (w, want) in [
            (WindowAggregation::Avg, 12.0),
            (WindowAggregation::Max, 13.0),
            (WindowAggregation::Min, 11.0),
            (WindowAggregation::Last, 12.0),
        ] {
            let sel = Selection {
                empty: EmptyResult::Error,
                aggregate: Some(Aggregation::Sum),
                window: Some(w),
            };
            assert_eq!(value(m, sel).unwrap(), (want, 2), "{w:?}");
        }
        let sel = Selection {
            empty: EmptyResult::Error,
            aggregate: None,
            window: Some(WindowAggregation::Max),
        };
        assert!(matches!(
            value(m, sel),
            Err(MetricsError::MultipleSeries { count: 2, .. })
        ));
    }

    #[test]
    fn warnings_are_kept() {
        let body = r#"{"status":"success","warnings":["partial response"],"infos":["x"],"data":{"resultType":"scalar","result":[1,"1"]}}"#;
        let d = decode(&answer(200, body), &ctx()).unwrap();
        assert_eq!(d.warnings, vec!["partial response".to_owned()]);
        assert_eq!(d.infos, vec!["x".to_owned()]);
    }
}
