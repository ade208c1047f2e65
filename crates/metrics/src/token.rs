//! [`Token`]: an API token whose `Debug`, `Display` and serialised form never show the secret.

use std::fmt;

use reqwest::header::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret API token.
///
/// `Debug`, `Display` and `Serialize` all print `<redacted>`; the only way to the secret is
/// [`Token::expose`] (or the header built by [`Token::fly_authorization`] /
/// [`Token::bearer_authorization`], which is marked sensitive so HTTP logging skips it).
/// Deserialises from a plain string, so configuration files can hold `token = "..."`.
///
/// ```
/// use fleetscale_metrics::Token;
/// let t = Token::new("FlyV1 fm2_secret");
/// assert_eq!(format!("{t:?}"), "<redacted>");
/// assert_eq!(t.fly_authorization().unwrap().to_str().unwrap(), "FlyV1 fm2_secret");
/// assert_eq!(Token::new("abc").fly_authorization().unwrap().to_str().unwrap(), "Bearer abc");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a secret. Surrounding whitespace (a trailing newline from a file) is removed.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret: String = secret.into();
        Token(secret.trim().to_owned())
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token is empty (treated as "no token" by the sources).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `Authorization` header value as Fly's own clients build it: a token that starts with
    /// `Fly` (a macaroon, `FlyV1 fm2_...`) is sent verbatim, anything else as `Bearer <token>`
    /// (fly-autoscaler `prometheus/prometheus.go`). `None` when the token cannot be a header
    /// value (control characters).
    pub fn fly_authorization(&self) -> Option<HeaderValue> {
        if self.0.starts_with("Fly") {
            sensitive(&self.0)
        } else {
            self.bearer_authorization()
        }
    }

    /// `Bearer <token>`, marked sensitive. `None` when the token cannot be a header value.
    pub fn bearer_authorization(&self) -> Option<HeaderValue> {
        sensitive(&format!("Bearer {}", self.0))
    }
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Token {
    fn from(s: String) -> Self {
        Token::new(s)
    }
}

impl From<&str> for Token {
    fn from(s: &str) -> Self {
        Token::new(s)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Token::new)
    }
}

/// Serialises as the string `<redacted>`, so printing an effective configuration is safe.
/// (The result does not round-trip: re-reading it yields the token `<redacted>`.)
impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_secret() {
        let t = Token::new(" s3cret\n");
        assert_eq!(t.expose(), "s3cret");
        assert_eq!(format!("{t:?} {t}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"<redacted>\"");
        let h = t.bearer_authorization().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer s3cret");
        assert!(Token::new("a\u{1}b").fly_authorization().is_none());
        let back: Token = serde_json::from_str("\"FlyV1 x\"").unwrap();
        assert_eq!(
            back.fly_authorization().unwrap().to_str().unwrap(),
            "FlyV1 x"
        );
    }
}
