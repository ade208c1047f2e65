//! The two time formats the Machines API uses: RFC 3339 timestamps (`created_at`,
//! `updated_at`, parsed with the `time` crate, formatted with `humantime`) and HTTP dates
//! (`Retry-After`, with `httpdate`). Thin wrappers so callers get `Option<SystemTime>` and
//! never a panic.

use std::time::SystemTime;

use ::time::format_description::well_known::Rfc3339;
use ::time::OffsetDateTime;

/// Parses an RFC 3339 timestamp such as `2024-05-01T12:34:56Z`,
/// `2024-05-01T12:34:56.123456789+02:00` or `2024-05-01t12:34:56z` (RFC 3339 section 5.6;
/// surrounding whitespace is ignored). Returns `None` for anything else, including a time
/// `SystemTime` cannot hold (never panics).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = fleetscale_fly::parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
/// assert_eq!(t, UNIX_EPOCH + Duration::from_millis(86_401_500));
/// ```
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    let since_epoch = t - OffsetDateTime::UNIX_EPOCH;
    let secs = since_epoch.whole_seconds();
    let nanos = since_epoch.subsec_nanoseconds();
    // `SystemTime + Duration` can overflow on some platforms: go through checked arithmetic.
    let whole = std::time::Duration::from_secs(secs.unsigned_abs());
    let frac = std::time::Duration::from_nanos(u64::from(nanos.unsigned_abs()));
    if secs >= 0 && nanos >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?.checked_add(frac)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?.checked_sub(frac)
    }
}

/// Formats a time as RFC 3339 with second precision in UTC (`2024-05-01T12:34:56Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an HTTP date (RFC 9110 section 5.6.7): the preferred IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and, as a recipient must, the obsolete RFC 850 and
/// asctime forms. Returns `None` on anything else.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// The last second an HTTP date can show: 9999-12-31T23:59:59Z.
const LAST_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// Formats a time as an IMF-fixdate HTTP date. HTTP dates have whole seconds and four-digit
/// years: the sub-second part is dropped, and a time before 1970 or after 9999 is shown as
/// the nearest date that can be written (`httpdate` panics outside that range).
pub fn format_http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(LAST_HTTP_DATE_SECS);
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_variants() {
        let base = parse_rfc3339("2024-05-01T12:34:56Z").unwrap();
        assert_eq!(
            base.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_714_566_896
        );
        assert_eq!(parse_rfc3339("2024-05-01T14:34:56+02:00"), Some(base));
        assert_eq!(parse_rfc3339("2024-05-01T10:34:56-02:00"), Some(base));
        let frac = parse_rfc3339("2024-05-01T12:34:56.250Z").unwrap();
        assert_eq!(
            frac.duration_since(base).unwrap(),
            Duration::from_millis(250)
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:34:56",
            "2024-05-01T12:34:56.Z",
            "2024-05-01T12:34:56+0200",
            "x024-05-01T12:34:56Z",
            "2024-05-01T12:34:56Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339(&format_rfc3339(base)),
            Some(base),
            "round trip"
        );
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").is_some());
    }

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert_eq!(format_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        // The obsolete forms a recipient must accept (RFC 9110 section 5.6.7).
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(
            format_http_date(UNIX_EPOCH - Duration::from_secs(1)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let far = UNIX_EPOCH + Duration::from_secs(LAST_HTTP_DATE_SECS + 86_400);
        assert_eq!(format_http_date(far), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(parse_http_date("garbage"), None);
    }
}
