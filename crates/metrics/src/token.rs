//! The `Authorization` headers the metric sources send, built from the workspace's one
//! [`Token`] type (`fleetscale_core::Token`, re-exported by this crate).

use fleetscale_core::Token;
use reqwest::header::HeaderValue;

/// The `Authorization` value fly-autoscaler sends to Prometheus (`prometheus/prometheus.go`):
/// a token that starts with `Fly` (a macaroon, `FlyV1 fm2_...`) verbatim, anything else as
/// `Bearer <token>`. Marked sensitive, so HTTP logging skips it. `None` when the token cannot
/// be a header value (control characters).
pub(crate) fn fly_prometheus_authorization(token: &Token) -> Option<HeaderValue> {
    if token.expose().starts_with("Fly") {
        sensitive(token.expose())
    } else {
        bearer_authorization(token)
    }
}

/// `Bearer <token>`, marked sensitive. `None` when the token cannot be a header value.
pub(crate) fn bearer_authorization(token: &Token) -> Option<HeaderValue> {
    sensitive(&token.bearer())
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_go_tool_and_are_sensitive() {
        let h = bearer_authorization(&Token::new(" s3cret\n")).unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer s3cret");
        let fly = fly_prometheus_authorization(&Token::new("FlyV1 x")).unwrap();
        assert!(fly.is_sensitive());
        assert_eq!(fly.to_str().unwrap(), "FlyV1 x");
        assert_eq!(
            fly_prometheus_authorization(&Token::new("abc"))
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer abc"
        );
        assert!(fly_prometheus_authorization(&Token::new("a\u{1}b")).is_none());
    }
}
