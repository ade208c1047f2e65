//! Small pieces of Go's standard library that `fly-autoscaler`'s users depend on without
//! knowing it: `time.ParseDuration`, `time.Duration.String` and `os.ExpandEnv`.
//!
//! They are re-implemented exactly (Go 1.22 `src/time/format.go` and `src/os/env.go`) so
//! that `FAS_INTERVAL=1m30s`, `interval: 500ms` and `${VAR}` in a YAML file mean what they
//! meant with the Go tool.

use std::time::Duration;

/// A duration Go's `time.ParseDuration` rejects, with Go's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("time: {reason} {quoted}", quoted = go_quote(.input))]
pub struct DurationError {
    /// What was wrong: `invalid duration`, `missing unit in duration`, ...
    pub reason: String,
    /// The input as given.
    pub input: String,
}

/// Go's `%q` for the strings we quote (printable ASCII and UTF-8 stay, `"` and `\` escaped).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a Go duration such as `15s`, `1m30s`, `500ms`, `1h2m3s`, `1.5h` or `-2m`, exactly as
/// Go's `time.ParseDuration`: a sequence of decimal numbers, each with an optional fraction
/// and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`); `0` alone needs no unit.
///
/// Returns the signed number of nanoseconds.
///
/// ```
/// use fleetscale_fas::gocompat::parse_go_duration;
/// assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
/// assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
/// assert!(parse_go_duration("15").is_err());
/// ```
///
/// # Errors
/// [`DurationError`] with Go's wording (`time: invalid duration "x"`,
/// `time: missing unit in duration "1"`, `time: unknown unit "d" in duration "1d"`).
pub fn parse_go_duration(input: &str) -> Result<i128, DurationError> {
    let err = |reason: &str| DurationError {
        reason: reason.to_owned(),
        input: input.to_owned(),
    };
    let mut s = input;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("invalid duration"));
    }
    // Go accumulates in uint64 and overflows past 1<<63 (so that -1<<63 parses).
    let max: i128 = 1i128 << 63;
    let mut total: i128 = 0;
    while !s.is_empty() {
        // The next character must be [0-9.].
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(err("invalid duration"));
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            // No digits at all (e.g. ".s").
            return Err(err("invalid duration"));
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(err("missing unit in duration"));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => {
                return Err(DurationError {
                    reason: format!("unknown unit {} in duration", go_quote(unit)),
                    input: input.to_owned(),
                })
            }
        };
        let mut v: i128 = 0;
        for b in int_part.bytes() {
            v = v * 10 + i128::from(b - b'0');
            if v > max {
                return Err(err("invalid duration"));
            }
        }
        v *= scale;
        if v > max {
            return Err(err("invalid duration"));
        }
        if !frac_part.is_empty() {
            // Go's leadingFraction: digits past 63 bits are ignored, and the fraction is
            // scaled in float64 (`uint64(float64(f) * (float64(unit) / scale))`).
            let mut f: u64 = 0;
            let mut div: f64 = 1.0;
            for b in frac_part.bytes() {
                if f > (1u64 << 63) / 10 {
                    break;
                }
                f = f * 10 + u64::from(b - b'0');
                div *= 10.0;
            }
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let add = (f as f64 * (scale as f64 / div)) as i128;
            v += add;
            if v > max {
                return Err(err("invalid duration"));
            }
        }
        total += v;
        if total > max {
            return Err(err("invalid duration"));
        }
    }
    if neg {
        return Ok(-total);
    }
    if total > max - 1 {
        return Err(err("invalid duration"));
    }
    Ok(total)
}

/// Parses a Go duration that must be positive (intervals, timeouts): zero and negative
/// values are refused because a ticker cannot run on them (Go panics).
///
/// # Errors
/// The message of [`DurationError`], or `must be positive`.
pub fn parse_positive_duration(input: &str) -> Result<Duration, String> {
    let ns = parse_go_duration(input).map_err(|e| e.to_string())?;
    if ns <= 0 {
        return Err(format!("duration {} must be positive", go_quote(input)));
    }
    Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
}

/// Formats like Go's `time.Duration.String`: `15s`, `1m30s`, `1h0m0s`, `500ms`, `1.5s`, `0s`.
///
/// ```
/// use std::time::Duration;
/// use fleetscale_fas::gocompat::format_go_duration;
/// assert_eq!(format_go_duration(Duration::from_secs(60)), "1m0s");
/// assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
/// ```
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        // Sub-second: the largest unit that keeps an integer part.
        let (unit, scale) = if ns < 1_000 {
            ("ns", 1u128)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(ns, scale));
    }
    let total_secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = total_secs % 60;
    let secs = fraction(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `v / scale` printed with the fraction's trailing zeros removed.
fn fraction(v: u128, scale: u128) -> String {
    let int = v / scale;
    let mut frac = v % scale;
    if frac == 0 {
        return int.to_string();
    }
    let mut digits = scale.to_string().len() - 1;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    format!("{int}.{frac:0digits$}")
}

/// Go's `os.ExpandEnv` as fly-autoscaler applies it to its YAML file, with one deliberate
/// difference: `$APP_NAME` and `${APP_NAME}` are kept as written so that metric queries can
/// expand them per app at query time (the Go tool replaced them with the autoscaler's own,
/// normally empty, `APP_NAME`, which broke per-app queries written in the file).
///
/// Everything else follows Go exactly: `$NAME` and `${NAME}` become `lookup(NAME)` (empty when
/// unset), `$` followed by a special character (`$$`, `$1`, `$*`...) becomes that special
/// variable's value, a bad `${` or `${}` is eaten, and a `$` followed by nothing that can
/// start a name is kept.
///
/// ```
/// use fleetscale_fas::gocompat::expand_env_keep_app_name;
/// let env = |k: &str| (k == "ORG").then(|| "acme".to_string());
/// assert_eq!(
///     expand_env_keep_app_name("org $ORG app ${APP_NAME} x$UNSET.", env),
///     "org acme app ${APP_NAME} x."
/// );
/// ```
pub fn expand_env_keep_app_name(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    const KEEP: &str = "APP_NAME";
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0; // start of the not-yet-copied text
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            let raw = &s[j..j + 1 + w];
            if name.is_empty() && w > 0 {
                // Bad syntax: eaten, as Go does.
            } else if name.is_empty() {
                out.push('$');
            } else if name == KEEP {
                out.push_str(raw);
            } else {
                out.push_str(&lookup(name).unwrap_or_default());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.push_str(&s[i.min(s.len())..]);
    out
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the name starting `s` and the number of bytes it took.
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for (i, c) in b.iter().enumerate().skip(1) {
            if *c == b'}' {
                if i == 1 {
                    return ("", 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1);
    }
    if is_special(b[0]) {
        return (&s[0..1], 1);
    }
    let n = b.iter().take_while(|c| is_alnum(**c)).count();
    (&s[..n], n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn parse_duration_table() {
        // Cases from Go's src/time/time_test.go (parseDurationTests).
        let ok: &[(&str, i128)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", 500_000_000),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + 500_000_000),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400_000_000)),
            (
                "1h2m3s4ms5us6ns",
                3600 * S + 2 * 60 * S + 3 * S + 4_000_000 + 5_000 + 6,
            ),
            (
                "39h9m14.425s",
                39 * 3600 * S + 9 * 60 * S + 14 * S + 425_000_000,
            ),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9223372036854775807ns", i128::from(i64::MAX)),
            ("-9223372036854775808ns", i128::from(i64::MIN)),
            ("1m30s", 90 * S),
            ("500ms", 500_000_000),
        ];
        for (input, want) in ok {
            assert_eq!(parse_go_duration(input), Ok(*want), "{input}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "time: invalid duration \"\""),
            ("3", "time: missing unit in duration \"3\""),
            ("-", "time: invalid duration \"-\""),
            ("s", "time: invalid duration \"s\""),
            (".", "time: invalid duration \".\""),
            ("-.", "time: invalid duration \"-.\""),
            (".s", "time: invalid duration \".s\""),
            ("+.s", "time: invalid duration \"+.s\""),
            ("1d", "time: unknown unit \"d\" in duration \"1d\""),
            ("15 s", "time: unknown unit \" s\" in duration \"15 s\""),
            (
                "9223372036854775810ns",
                "time: invalid duration \"9223372036854775810ns\"",
            ),
            (
                "9223372036854775808ns",
                "time: invalid duration \"9223372036854775808ns\"",
            ),
        ];
        for (input, msg) in bad {
            let e = parse_go_duration(input).unwrap_err();
            assert_eq!(e.to_string(), *msg, "{input}");
        }
    }

    #[test]
    fn positive_durations_only() {
        assert_eq!(
            parse_positive_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("-1s").is_err());
    }

    #[test]
    fn format_duration_table() {
        // Cases from Go's src/time/time_test.go (durationTests).
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * 60 * 1_000_000_000 + 5_000_000_000, "4m5s"),
            (4 * 60 * 1_000_000_000 + 5_001_000_000, "4m5.001s"),
            (
                5 * 3600 * 1_000_000_000 + 6 * 60 * 1_000_000_000 + 7_001_000_000,
                "5h6m7.001s",
            ),
            (8 * 60 * 1_000_000_000 + 1, "8m0.000000001s"),
            (15_000_000_000, "15s"),
            (60_000_000_000, "1m0s"),
            (30_000_000_000, "30s"),
            (500_000_000, "500ms"),
        ];
        for (ns, want) in cases {
            assert_eq!(format_go_duration(Duration::from_nanos(*ns)), *want);
        }
    }

    #[test]
    fn expand_env_table() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/gopher".to_string()),
            "H" => Some("(Value of H)".to_string()),
            "*" => Some("all the args".to_string()),
            "1" => Some("ARGUMENT1".to_string()),
            "$" => None,
            _ => None,
        };
        // Go's src/os/env_test.go expandTests, plus the APP_NAME exception.
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("$*", "all the args"),
            ("$$", ""),
            ("${*}", "all the args"),
            ("$1", "ARGUMENT1"),
            ("${1}", "ARGUMENT1"),
            ("now is the time", "now is the time"),
            ("$HOME", "/home/gopher"),
            ("$home_1", ""),
            ("${HOME}", "/home/gopher"),
            ("${H}OME", "(Value of H)OME"),
            ("A$$$#$1$H$home_1*B", "AARGUMENT1(Value of H)*B"),
            ("start$+middle$^end$", "start$+middle$^end$"),
            ("mixed$|bag$$$", "mixed$|bag$"),
            ("$", "$"),
            ("$}", "$}"),
            ("${", ""),
            ("${}", ""),
            ("${{}}", "}"),
            ("x${HOME", "xHOME"),
            ("q: sum(up{app='$APP_NAME'})", "q: sum(up{app='$APP_NAME'})"),
            ("${APP_NAME}-$HOME", "${APP_NAME}-/home/gopher"),
            ("$APP_NAMES", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand_env_keep_app_name(input, env), *want, "{input:?}");
        }
    }
}
