//! A strict parser of the Prometheus text exposition format (0.0.4) and OpenMetrics text 1.0,
//! for tests that check a `/metrics` page by exact names, labels and values.
//!
//! Grammar (from the Prometheus "Exposition formats" page and the OpenMetrics 1.0 spec):
//! `# HELP name text`, `# TYPE name type`, `# UNIT name unit`, `# EOF` (OpenMetrics: last line),
//! other `#` lines are comments; a sample is `name{label="value",...} value [timestamp]
//! [# exemplar]`, label values escape `\\`, `\"` and `\n`, values may be `NaN`, `+Inf`, `-Inf`.

use std::collections::{BTreeMap, BTreeSet};

/// A metric family's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family name as in `# TYPE`.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary`, `unknown`, `untyped`, `info`, `stateset`...
    pub kind: String,
    /// The `# HELP` text, if any.
    pub help: Option<String>,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample name (with any `_total`, `_bucket`... suffix).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// The family it belongs to (by name, or name minus a standard suffix), if declared.
    pub family: Option<String>,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Families in order of appearance.
    pub families: Vec<Family>,
    /// Samples in order of appearance.
    pub samples: Vec<Sample>,
    /// Whether it ended with `# EOF` (required by OpenMetrics).
    pub eof: bool,
}

/// Why a text is not a valid exposition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The line.
    pub text: String,
}

const SUFFIXES: [&str; 7] = [
    "_total", "_bucket", "_sum", "_count", "_created", "_info", "_gcount",
];

impl Exposition {
    /// Parses `text`.
    ///
    /// # Errors
    /// A [`ParseError`] for a malformed line, an invalid metric or label name, a bad value,
    /// a repeated `TYPE`/`HELP`, a duplicate series, or anything after `# EOF`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut out = Exposition::default();
        let mut helps: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
        for (idx, raw) in text.lines().enumerate() {
            let err = |message: &str| ParseError {
                line: idx + 1,
                message: message.to_owned(),
                text: raw.to_owned(),
            };
            if out.eof {
                return Err(err("content after # EOF"));
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim_start();
                if comment == "EOF" {
                    out.eof = true;
                    continue;
                }
                let mut parts = comment.splitn(3, ' ');
                let keyword = parts.next().unwrap_or("");
                match keyword {
                    "HELP" | "TYPE" | "UNIT" => {
                        let name = parts.next().ok_or_else(|| err("metadata without a name"))?;
                        if !valid_metric_name(name) {
                            return Err(err("invalid metric name"));
                        }
                        let rest = parts.next().unwrap_or("").to_owned();
                        match keyword {
                            "HELP" if helps.contains_key(name) => {
                                return Err(err("repeated HELP"));
                            }
                            "HELP" => {
                                helps.insert(name.to_owned(), rest);
                            }
                            "TYPE" => {
                                if out.families.iter().any(|f| f.name == name) {
                                    return Err(err("repeated TYPE"));
                                }
                                if out
                                    .samples
                                    .iter()
                                    .any(|s| s.family.as_deref() == Some(name) || s.name == name)
                                {
                                    return Err(err("TYPE after samples of the family"));
                                }
                                out.families.push(Family {
                                    name: name.to_owned(),
                                    kind: rest.trim().to_owned(),
                                    help: None,
                                });
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|m| err(&m))?;
            let key = (
                sample.name.clone(),
                sample
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            );
            if !seen.insert(key) {
                return Err(err("duplicate series"));
            }
            let family = out
                .families
                .iter()
                .find(|f| {
                    f.name == sample.name
                        || SUFFIXES
                            .iter()
                            .any(|s| sample.name.strip_suffix(s) == Some(f.name.as_str()))
                })
                .map(|f| f.name.clone());
            out.samples.push(Sample { family, ..sample });
        }
        for f in &mut out.families {
            f.help = helps.get(&f.name).cloned();
        }
        Ok(out)
    }

    /// The family declared as `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the sample `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample called `name`.
    pub fn samples_named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The distinct sample names.
    pub fn sample_names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' ', '\t'])
        .ok_or("sample without a value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err("invalid metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            // Skip spaces, stop at `}`.
            while let Some((_, c)) = chars.peek() {
                if *c == ' ' || *c == ',' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    consumed = Some(*i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            let key = key.trim().to_owned();
            if !valid_label_name(&key) {
                return Err(format!("invalid label name {key:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value must be quoted".into());
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err("unterminated label value".into());
            }
            if labels.insert(key, value).is_some() {
                return Err("repeated label".into());
            }
            match chars.peek() {
                Some((_, ',')) | Some((_, '}')) => {}
                _ => return Err("expected `,` or `}` after a label".into()),
            }
        }
        let end = consumed.ok_or("unterminated label set")?;
        rest = &after[end..];
    }
    let rest = rest.trim_start();
    let value_text = rest
        .split([' ', '\t'])
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("sample without a value")?;
    let value = match value_text {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("invalid value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        family: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let text = "# HELP fas_reconcile_count Reconciles.\n# TYPE fas_reconcile_count counter\n\
                    fas_reconcile_count{status=\"create\"} 3\n\
                    # TYPE req counter\nreq_total{a=\"x\\\"y\\\\z\\n\",b=\"\"} 1.5e3 1700000000\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\nplain NaN\n# EOF\n";
        let e = Exposition::parse(text).unwrap();
        assert!(e.eof);
        assert_eq!(e.family("fas_reconcile_count").unwrap().kind, "counter");
        assert_eq!(
            e.family("fas_reconcile_count").unwrap().help.as_deref(),
            Some("Reconciles.")
        );
        assert_eq!(
            e.value("fas_reconcile_count", &[("status", "create")]),
            Some(3.0)
        );
        assert_eq!(
            e.value("req_total", &[("a", "x\"y\\z\n"), ("b", "")]),
            Some(1500.0)
        );
        assert_eq!(e.samples_named("h_bucket")[0].family.as_deref(), Some("h"));
        assert!(e.value("plain", &[]).unwrap().is_nan());
        assert_eq!(e.samples_named("plain")[0].family, None);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "1abc 1",
            "x{a=b} 1",
            "x{a=\"b} 1",
            "x{1a=\"b\"} 1",
            "x{a=\"b\" c=\"d\"} 1",
            "x",
            "x abc",
            "x 1\nx 2",
            "# TYPE x gauge\n# TYPE x gauge",
            "x 1\n# TYPE x gauge",
            "# EOF\nx 1",
            "x{a=\"\\q\"} 1",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad}");
        }
    }
}
