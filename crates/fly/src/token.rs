//! Fly API tokens and the `Authorization` header they produce.
//!
//! The rules are those of Fly's own Go client (`superfly/fly-go`, `tokens/tokens.go`):
//! any `Bearer ` or `FlyV1 ` prefix is stripped, the rest is split on commas, and the parts
//! that are macaroons (prefixes `fm1r_`, `fm1a_`, `fm2_`) are sent as
//! `Authorization: FlyV1 <macaroons joined by ,>`. A token without any macaroon part is sent as
//! `Authorization: Bearer <token>`.
//!
//! The token itself is the workspace's [`Token`] (`fleetscale_core::Token`, re-exported by this
//! crate), which never shows its value in `Debug`, `Display` or serialised form.

use fleetscale_core::Token;
use reqwest::header::HeaderValue;

use crate::FlyError;

/// Prefixes that mark a token part as a macaroon (fly-go `tokens.go`).
const MACAROON_PREFIXES: [&str; 3] = ["fm1r_", "fm1a_", "fm2_"];

/// The value of the `Authorization` header for the Machines API, as fly-go builds it.
///
/// When the token has macaroon parts, only those parts are sent (fly-go keeps other
/// comma-separated parts, such as third-party discharge tokens it cannot use here, out of the
/// header); a token without any is sent as `Bearer <token>`.
///
/// ```
/// use fleetscale_fly::{token, Token};
/// let t = Token::new("FlyV1 fm2_abc,fm1r_def");
/// assert_eq!(token::authorization_header(&t), "FlyV1 fm2_abc,fm1r_def");
/// assert_eq!(token::authorization_header(&Token::new("plain")), "Bearer plain");
/// ```
pub fn authorization_header(token: &Token) -> String {
    let raw = strip_scheme(token.expose());
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
/// `Bearer`. (The GraphQL API is the only Fly service that accepts both kinds in one header;
/// for a token of macaroons only it equals [`authorization_header`].)
pub fn graphql_authorization_header(token: &Token) -> String {
    let parts: Vec<&str> = strip_scheme(token.expose())
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

/// Whether the token contains at least one macaroon part (and is therefore sent with the
/// `FlyV1` scheme).
pub fn is_macaroon(token: &Token) -> bool {
    strip_scheme(token.expose())
        .split(',')
        .any(|p| is_macaroon_part(p.trim()))
}

/// Whether nothing is left of the token once a `FlyV1 `/`Bearer ` prefix is removed: such a
/// token is sent as no token at all.
pub fn is_blank(token: &Token) -> bool {
    strip_scheme(token.expose()).is_empty()
}

/// The sensitive `Authorization` header value of a client (`graphql` selects the GraphQL
/// form), `None` without a token or with a blank one.
pub(crate) fn header_value(
    token: Option<&Token>,
    graphql: bool,
) -> Result<Option<HeaderValue>, FlyError> {
    let Some(t) = token.filter(|t| !is_blank(t)) else {
        return Ok(None);
    };
    let value = if graphql {
        graphql_authorization_header(t)
    } else {
        authorization_header(t)
    };
    let mut v = HeaderValue::from_str(&value).map_err(|_| {
        FlyError::Config("the API token contains characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(Some(v))
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
            assert_eq!(authorization_header(&Token::new(input)), want, "{input}");
        }
        assert!(is_macaroon(&Token::new("FlyV1 fm2_x")));
        assert!(!is_macaroon(&Token::new("personal")));
        assert!(is_blank(&Token::new("FlyV1 ")));
        assert!(header_value(Some(&Token::new("FlyV1 ")), false)
            .unwrap()
            .is_none());
        let h = header_value(Some(&Token::new("fm2_x")), false)
            .unwrap()
            .unwrap();
        assert!(h.is_sensitive());
        assert!(header_value(Some(&Token::new("fm2_\u{1}")), true).is_err());
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
                graphql_authorization_header(&Token::new(input)),
                want,
                "{input}"
            );
        }
    }
}
