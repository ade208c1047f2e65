//! Fly API tokens and the `Authorization` header they produce.
//!
//! The rules are those of Fly's own Go client (`superfly/fly-go`, `tokens/tokens.go`):
//! any `Bearer ` or `FlyV1 ` prefix is stripped, the rest is split on commas, and the parts
//! that are macaroons (prefixes `fm1r_`, `fm1a_`, `fm2_`) are sent as
//! `Authorization: FlyV1 <macaroons joined by ,>`. A token without any macaroon part is sent as
//! `Authorization: Bearer <token>`.

use std::fmt;

/// Prefixes that mark a token part as a macaroon (fly-go `tokens.go`).
const MACAROON_PREFIXES: [&str; 3] = ["fm1r_", "fm1a_", "fm2_"];

/// A Fly API token (deploy token, org token, personal access token).
///
/// The value never appears in `Debug` (which prints `FlyToken(<redacted>)`), in logs or in
/// error messages. It has no `Display`.
///
/// ```
/// use fleetscale_fly::FlyToken;
/// let t = FlyToken::new("FlyV1 fm2_abc,fm1r_def");
/// assert_eq!(t.authorization_header(), "FlyV1 fm2_abc,fm1r_def");
/// assert_eq!(FlyToken::new("plain").authorization_header(), "Bearer plain");
/// assert_eq!(format!("{t:?}"), "FlyToken(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct FlyToken(String);

impl FlyToken {
    /// Wraps a token exactly as the user gave it (with or without a `FlyV1 `/`Bearer `
    /// prefix; surrounding whitespace is trimmed).
    pub fn new(token: impl Into<String>) -> Self {
        FlyToken(token.into().trim().to_owned())
    }

    /// Whether the token is empty (after trimming).
    pub fn is_empty(&self) -> bool {
        strip_scheme(&self.0).is_empty()
    }

    /// Whether the token contains at least one macaroon part (and is therefore sent with the
    /// `FlyV1` scheme).
    pub fn is_macaroon(&self) -> bool {
        strip_scheme(&self.0)
            .split(',')
            .any(|p| is_macaroon_part(p.trim()))
    }

    /// The value of the `Authorization` header for this token, as fly-go builds it.
    ///
    /// When the token has macaroon parts, only those parts are sent (fly-go keeps other
    /// comma-separated parts, such as third-party discharge tokens it cannot use here, out of
    /// the header).
    pub fn authorization_header(&self) -> String {
        let raw = strip_scheme(&self.0);
        let macaroons: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|p| is_macaroon_part(p))
            .collect();
        if macaroons.is_empty() {
            format!("Bearer {raw}")
        } else {
            format!("FlyV1 {}", macaroons.join(","))
        }
    }

    /// The value of the `Authorization` header for Fly's **GraphQL** API, as fly-go builds it
    /// (`tokens.go`, `Tokens.GraphQLHeader`): every part, macaroons first, then the others
    /// (OAuth/personal tokens), joined by `,`; scheme `FlyV1` when any part is a macaroon, else
    /// `Bearer`. (The GraphQL API is the only Fly service that accepts both kinds in one
    /// header; for a token of macaroons only it equals [`FlyToken::authorization_header`].)
    pub fn graphql_authorization_header(&self) -> String {
        let parts: Vec<&str> = strip_scheme(&self.0)
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let (macaroons, others): (Vec<&str>, Vec<&str>) =
            parts.into_iter().partition(|p| is_macaroon_part(p));
        let scheme = if macaroons.is_empty() {
            "Bearer"
        } else {
            "FlyV1"
        };
        let all: Vec<&str> = macaroons.into_iter().chain(others).collect();
        format!("{scheme} {}", all.join(","))
    }

    /// The raw token, for callers that must hand it to another client. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FlyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlyToken(<redacted>)")
    }
}

impl From<&str> for FlyToken {
    fn from(s: &str) -> Self {
        FlyToken::new(s)
    }
}

impl From<String> for FlyToken {
    fn from(s: String) -> Self {
        FlyToken::new(s)
    }
}

fn strip_scheme(token: &str) -> &str {
    let t = token.trim();
    let (first, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    if first.eq_ignore_ascii_case("bearer") || first.eq_ignore_ascii_case("flyv1") {
        rest.trim()
    } else {
        t
    }
}

fn is_macaroon_part(part: &str) -> bool {
    MACAROON_PREFIXES.iter().any(|p| part.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules_match_fly_go() {
        let cases = [
            ("fm2_abc", "FlyV1 fm2_abc"),
            ("FlyV1 fm2_abc", "FlyV1 fm2_abc"),
            ("FlyV1 fm1r_a,fm1a_b", "FlyV1 fm1r_a,fm1a_b"),
            ("fm2_a, fm2_b", "FlyV1 fm2_a,fm2_b"),
            ("Bearer fm2_a", "FlyV1 fm2_a"),
            ("Bearer abc123", "Bearer abc123"),
            ("abc123", "Bearer abc123"),
            ("  abc  ", "Bearer abc"),
            ("fm2_a,other", "FlyV1 fm2_a"),
        ];
        for (input, want) in cases {
            assert_eq!(FlyToken::new(input).authorization_header(), want, "{input}");
        }
        assert!(FlyToken::new("FlyV1 fm2_x").is_macaroon());
        assert!(!FlyToken::new("personal").is_macaroon());
        assert!(FlyToken::new("FlyV1 ").is_empty());
    }

    #[test]
    fn graphql_header_rules_match_fly_go() {
        let cases = [
            ("fm2_abc", "FlyV1 fm2_abc"),
            ("FlyV1 fm2_a, fm1r_b", "FlyV1 fm2_a,fm1r_b"),
            ("fm2_a,other", "FlyV1 fm2_a,other"),
            ("other,fm2_a", "FlyV1 fm2_a,other"),
            ("Bearer abc123", "Bearer abc123"),
            ("  abc  ", "Bearer abc"),
        ];
        for (input, want) in cases {
            assert_eq!(
                FlyToken::new(input).graphql_authorization_header(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let t = FlyToken::new("fm2_supersecret");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
    }
}
