//! [`Trace`]: metric history as a table of samples, read from CSV or built from range queries.
//!
//! The format is documented on the type, where it is published.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Result, SimError};

/// Samples of named metrics at shared, strictly increasing times.
///
/// # CSV format
/// ```text
/// timestamp,load,queue_depth
/// 1767225600,12.5,3
/// 1767225615,13,
/// 2026-01-01T00:00:30Z,14.25,4
/// ```
/// - The header names the columns: `timestamp` first, then one metric per column. A metric
///   name is an expression variable (`[A-Za-z_][A-Za-z0-9_]*`), unique in the header.
/// - A timestamp is Unix seconds (an integer or a decimal, millisecond precision) or an
///   RFC 3339 time (`2026-01-01T00:00:30Z`, `…+02:00`). Timestamps strictly increase.
/// - A value is a finite number; an empty cell is a missing sample, which the replay treats as
///   a failed metric read at that time (the policy's error rule decides: hold by default).
/// - Blank lines and lines starting with `#` are skipped. Every row has as many cells as the
///   header.
///
/// Errors name the line and column ([`SimError::Trace`]).
///
/// ```
/// use fleetscale_sim::Trace;
/// let t = Trace::from_csv("timestamp,load\n0,1\n15,2.5\n30,\n").unwrap();
/// assert_eq!(t.len(), 3);
/// assert_eq!(t.value("load", 1), Some(2.5));
/// assert_eq!(t.value("load", 2), None);
/// assert_eq!(t.step_ms(), Some(15_000));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    timestamps: Vec<i64>,
    series: BTreeMap<String, Vec<Option<f64>>>,
}

/// Whether `name` can be an expression variable.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a timestamp cell: Unix seconds or RFC 3339, to Unix milliseconds.
fn parse_timestamp(cell: &str) -> std::result::Result<i64, String> {
    let cell = cell.trim();
    if let Ok(secs) = cell.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e13 {
            return Err(format!("timestamp {cell:?} is out of range"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let t = humantime::parse_rfc3339_weak(cell)
        .or_else(|_| humantime::parse_rfc3339(cell))
        .map_err(|e| {
            format!("timestamp {cell:?} is neither Unix seconds nor an RFC 3339 time ({e})")
        })?;
    Ok(unix_ms(t))
}

/// Milliseconds since the Unix epoch (negative before it): the clock of traces.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// An RFC 3339 UTC time for Unix milliseconds (`2026-01-01T00:00:00Z`, with milliseconds only
/// when they are not zero).
pub fn format_time(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    if ms % 1000 == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// Splits one CSV line on commas. Quoted cells (`"a,b"`) are accepted; the format itself
/// never needs them, but spreadsheet exports quote freely.
fn split_cells(line: &str) -> Vec<(usize, String)> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut start = 0usize;
    let mut quoted = false;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' if quoted && chars.peek().map(|(_, c)| *c) == Some('"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                cells.push((start, std::mem::take(&mut cur)));
                start = i + 1;
            }
            c => cur.push(c),
        }
    }
    cells.push((start, cur));
    cells
}

impl Trace {
    /// A trace of `timestamps` (Unix milliseconds, strictly increasing) and `series` (one
    /// value per timestamp, `None` for a missing sample).
    ///
    /// # Errors
    /// [`SimError::InvalidTrace`] for timestamps that do not increase, a series of another
    /// length, a name that is not an identifier, or a value that is not finite.
    pub fn new(timestamps: Vec<i64>, series: BTreeMap<String, Vec<Option<f64>>>) -> Result<Trace> {
        if let Some(w) = timestamps.windows(2).find(|w| w[1] <= w[0]) {
            return Err(SimError::InvalidTrace(format!(
                "timestamps must increase: {} is followed by {}",
                format_time(w[0]),
                format_time(w[1])
            )));
        }
        let mut t = Trace {
            timestamps,
            series: BTreeMap::new(),
        };
        for (name, values) in series {
            t.insert(name, values)?;
        }
        Ok(t)
    }

    /// Adds (or replaces) a series.
    ///
    /// # Errors
    /// [`SimError::InvalidTrace`] for a name that is not an identifier, a length other than
    /// the trace's, or a value that is not finite.
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<Option<f64>>) -> Result<()> {
        let name = name.into();
        if !is_identifier(&name) {
            return Err(SimError::InvalidTrace(format!(
                "series name {name:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        if values.len() != self.timestamps.len() {
            return Err(SimError::InvalidTrace(format!(
                "series {name} has {} values for {} timestamps",
                values.len(),
                self.timestamps.len()
            )));
        }
        if let Some(i) = values
            .iter()
            .position(|v| v.is_some_and(|v| !v.is_finite()))
        {
            return Err(SimError::InvalidTrace(format!(
                "series {name} has a value that is not finite at {}",
                format_time(self.timestamps[i])
            )));
        }
        self.series.insert(name, values);
        Ok(())
    }

    /// Reads a CSV trace (the format: see [`Trace`]).
    ///
    /// # Errors
    /// [`SimError::Trace`] with the line and column of the first problem.
    pub fn from_csv(text: &str) -> Result<Trace> {
        let err = |line: usize, column: usize, message: String| SimError::Trace {
            line,
            column,
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some((header_line, header)) = lines.next() else {
            return Err(err(
                1,
                1,
                "the trace is empty: expected a header `timestamp,metric,…`".into(),
            ));
        };
        let names: Vec<String> = split_cells(header)
            .into_iter()
            .map(|(_, c)| c.trim().to_owned())
            .collect();
        if names.first().map(String::as_str) != Some("timestamp") {
            return Err(err(
                header_line,
                1,
                format!("the first column must be `timestamp`, not {:?}", names[0]),
            ));
        }
        if names.len() < 2 {
            return Err(err(
                header_line,
                2,
                "the header names no metric column".into(),
            ));
        }
        for (i, n) in names.iter().enumerate().skip(1) {
            if !is_identifier(n) {
                return Err(err(
                    header_line,
                    i + 1,
                    format!("column name {n:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            if names[1..i].contains(n) {
                return Err(err(header_line, i + 1, format!("column {n} appears twice")));
            }
        }
        let mut timestamps = Vec::new();
        let mut columns: Vec<Vec<Option<f64>>> = vec![Vec::new(); names.len() - 1];
        for (line_no, line) in lines {
            let cells = split_cells(line);
            if cells.len() != names.len() {
                return Err(err(
                    line_no,
                    cells.len().min(names.len()) + 1,
                    format!("{} cells, the header has {}", cells.len(), names.len()),
                ));
            }
            let ts = parse_timestamp(&cells[0].1).map_err(|m| err(line_no, 1, m))?;
            if let Some(prev) = timestamps.last() {
                if ts <= *prev {
                    return Err(err(
                        line_no,
                        1,
                        format!(
                            "timestamps must increase: {} comes after {}",
                            format_time(ts),
                            format_time(*prev)
                        ),
                    ));
                }
            }
            timestamps.push(ts);
            for (col, (_, cell)) in cells.iter().enumerate().skip(1) {
                let cell = cell.trim();
                let v = if cell.is_empty() {
                    None
                } else {
                    let v: f64 = cell
                        .parse()
                        .map_err(|_| err(line_no, col + 1, format!("{cell:?} is not a number")))?;
                    if !v.is_finite() {
                        return Err(err(line_no, col + 1, format!("{cell:?} is not finite")));
                    }
                    Some(v)
                };
                columns[col - 1].push(v);
            }
        }
        if timestamps.is_empty() {
            return Err(err(
                header_line,
                1,
                "the trace has a header but no sample".into(),
            ));
        }
        let series = names.into_iter().skip(1).zip(columns).collect();
        Ok(Trace { timestamps, series })
    }

    /// The trace as CSV, in the format [`Trace::from_csv`] reads: Unix seconds, columns in
    /// name order, values in Rust's shortest round-trip notation. Byte-identical for equal
    /// traces.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("timestamp");
        for name in self.series.keys() {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for (i, ts) in self.timestamps.iter().enumerate() {
            if ts % 1000 == 0 {
                out.push_str(&(ts / 1000).to_string());
            } else {
                out.push_str(&format!("{:.3}", *ts as f64 / 1000.0));
            }
            for values in self.series.values() {
                out.push(',');
                if let Some(v) = values[i] {
                    out.push_str(&v.to_string());
                }
            }
            out.push('\n');
        }
        out
    }

    /// How many timestamps the trace has (each series has one value or gap per timestamp).
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether the trace has no sample.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The sample times, Unix milliseconds.
    pub fn timestamps(&self) -> &[i64] {
        &self.timestamps
    }

    /// The metric names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// Whether a series of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.series.contains_key(name)
    }

    /// The series of `name`.
    pub fn series(&self, name: &str) -> Option<&[Option<f64>]> {
        self.series.get(name).map(Vec::as_slice)
    }

    /// The value of `name` at sample `i` (`None` when missing or out of range).
    pub fn value(&self, name: &str, i: usize) -> Option<f64> {
        self.series
            .get(name)
            .and_then(|s| s.get(i).copied().flatten())
    }

    /// The usual distance between samples: the median of the gaps (`None` for one sample).
    pub fn step_ms(&self) -> Option<i64> {
        let mut gaps: Vec<i64> = self.timestamps.windows(2).map(|w| w[1] - w[0]).collect();
        if gaps.is_empty() {
            return None;
        }
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2])
    }

    /// The samples from index `from` (inclusive) to `to` (exclusive), e.g. a short segment
    /// for a test.
    pub fn slice(&self, from: usize, to: usize) -> Trace {
        let to = to.min(self.len());
        let from = from.min(to);
        Trace {
            timestamps: self.timestamps[from..to].to_vec(),
            series: self
                .series
                .iter()
                .map(|(k, v)| (k.clone(), v[from..to].to_vec()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_time_formats_and_missing_cells() {
        let t = Trace::from_csv(
            "\u{feff}# a comment\ntimestamp,load,q\n1767225600,1,2\n\n2026-01-01T00:00:15Z,,3\r\n1767225630.5,\"4\",5\n",
        )
        .unwrap();
        assert_eq!(
            t.timestamps(),
            &[1_767_225_600_000, 1_767_225_615_000, 1_767_225_630_500]
        );
        assert_eq!(t.series("load").unwrap(), &[Some(1.0), None, Some(4.0)]);
        assert_eq!(t.names().collect::<Vec<_>>(), ["load", "q"]);
        assert_eq!(format_time(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(format_time(1_767_225_630_500), "2026-01-01T00:00:30.500Z");
        let again = Trace::from_csv(&t.to_csv()).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = |text: &str| Trace::from_csv(text).unwrap_err().to_string();
        assert_eq!(
            e("time,load\n0,1\n"),
            "trace line 1, column 1: the first column must be `timestamp`, not \"time\""
        );
        assert!(e("timestamp,1load\n").contains("line 1, column 2"));
        assert!(e("timestamp,a,a\n0,1,1\n").contains("column a appears twice"));
        assert!(e("timestamp,a\n0,1\n15,x\n").starts_with("trace line 3, column 2: \"x\""));
        assert!(e("timestamp,a\n0,1\n15\n").contains("line 3"));
        assert!(
            e("timestamp,a\n15,1\n15,2\n").contains("line 3, column 1: timestamps must increase")
        );
        assert!(e("timestamp,a\nyesterday,1\n").contains("neither Unix seconds"));
        assert!(e("timestamp,a\n0,inf\n").contains("not finite"));
        assert!(e("timestamp,a\n").contains("no sample"));
        assert!(e("").contains("empty"));
    }

    #[test]
    fn built_traces_are_checked() {
        let mut t = Trace::new(vec![0, 1000], BTreeMap::new()).unwrap();
        assert!(t.insert("a", vec![Some(1.0)]).is_err());
        assert!(t.insert("a b", vec![None, None]).is_err());
        assert!(t.insert("a", vec![Some(f64::NAN), None]).is_err());
        t.insert("a", vec![Some(1.0), None]).unwrap();
        assert!(Trace::new(vec![5, 5], BTreeMap::new()).is_err());
        assert_eq!(t.slice(1, 9).len(), 1);
    }
}
