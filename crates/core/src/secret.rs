//! [`Secret`] and [`Token`]: values that never show themselves in `Debug`, `Display`, logs or
//! serialised configuration.
//!
//! Every crate of the workspace keeps credentials in these two types (Fly and Prometheus API
//! tokens, TLS key material, etcd and Weave passwords), so "a secret is never printed" is one
//! property of one piece of code. What each service does with a token (the `Authorization`
//! header rules of Fly's clients, a `Bearer` header) stays in the backend crate that speaks to
//! it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const REDACTED: &str = "<redacted>";

/// A secret value kept exactly as given (a password: surrounding spaces may be part of it).
///
/// `Debug`, `Display` and `Serialize` all print `<redacted>`; [`Secret::expose`] is the only
/// way to the value. Deserialises from a plain string, so configuration files can hold
/// `password = "..."`; serialising an effective configuration prints `<redacted>` (it does not
/// round-trip, by design).
///
/// ```
/// use fleetscale_core::Secret;
/// let s = Secret::new(" pass word ");
/// assert_eq!(s.expose(), " pass word ");
/// assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value, unchanged.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends or writes it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An API token (or a piece of key material read from a file): a [`Secret`] whose surrounding
/// whitespace is removed, so a token read from a file with a trailing newline works.
///
/// `Debug`, `Display` and `Serialize` print `<redacted>`, as for [`Secret`]. How a service
/// wants the token in its `Authorization` header is the backend's business
/// (`fleetscale_fly::token` has the rules of Fly's Go client); [`Token::bearer`] is the
/// standard `Bearer <token>` form (RFC 6750).
///
/// ```
/// use fleetscale_core::Token;
/// let t = Token::new("FlyV1 fm2_secret\n");
/// assert_eq!(t.expose(), "FlyV1 fm2_secret");
/// assert_eq!(format!("{t:?}"), "<redacted>");
/// assert_eq!(Token::new("abc").bearer(), "Bearer abc");
/// let from_config: Token = serde_json::from_str("\" abc \"").unwrap();
/// assert_eq!(from_config, Token::new("abc"));
/// assert_eq!(serde_json::to_string(&from_config).unwrap(), "\"<redacted>\"");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Token(Secret);

impl Token {
    /// Wraps a token; surrounding whitespace is removed.
    pub fn new(token: impl Into<String>) -> Self {
        let token: String = token.into();
        Token(Secret(token.trim().to_owned()))
    }

    /// The token itself, for the one place that sends it. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether the token is empty (after trimming): treated as "no token" by the clients.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Bearer <token>` (RFC 6750), the header value most HTTP APIs expect. Contains the
    /// secret: mark the header sensitive where the HTTP library allows it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

// A token shows itself exactly as the secret it holds does.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
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

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Token::new)
    }
}

/// Serialises as the string `<redacted>`, so printing an effective configuration is safe.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Serialises as the string `<redacted>`, as the [`Secret`] it holds.
impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let t = Token::new(" s3cret\n");
        assert_eq!(t.expose(), "s3cret");
        assert_eq!(
            format!("{t:?} {t} {t:#?}"),
            "<redacted> <redacted> <redacted>"
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"<redacted>\"");
        assert_eq!(t.bearer(), "Bearer s3cret");
        let s = Secret::new(" s3cret ");
        assert_eq!(s.expose(), " s3cret ", "a password is kept as given");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        let back: Secret = serde_json::from_str("\" pw \"").unwrap();
        assert_eq!(back.expose(), " pw ");
        assert!(Token::new(" \n").is_empty());
        // Inside a derived Debug of a configuration struct, too.
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            token: Token,
            password: Secret,
        }
        let c = Config {
            token: Token::new("tok-xyz"),
            password: Secret::new("pw-xyz"),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("xyz"), "{shown}");
    }
}
