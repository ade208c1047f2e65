//! `$VAR` / `${VAR}` expansion of queries and URLs at collect time.

use fleetscale_core::{expand_vars, Scope};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Expands `$NAME` / `${NAME}` in `template`: scope variables first ([`Scope::var`]: `APP_NAME`,
/// `TARGET`, `GROUP`, the scope's own vars), then, when `env` is true, the process environment.
/// Names neither knows are left exactly as written (PromQL's `$__interval`, a literal `$`),
/// unlike fly-autoscaler, which blanked them.
///
/// Without `env` this is exactly [`Scope::expand`]. With `env` it is one pass over the template,
/// so a value substituted from the scope is never expanded a second time.
pub(crate) fn expand(template: &str, scope: &Scope, env: bool) -> String {
    if !env {
        return scope.expand(template);
    }
    expand_vars(template, |name| {
        scope
            .var(name)
            .map(str::to_owned)
            .or_else(|| std::env::var(name).ok())
    })
}

/// Like [`expand`], but every substituted value is percent-encoded (RFC 3986 unreserved
/// characters kept), for use inside a URL.
pub(crate) fn expand_url(template: &str, scope: &Scope, env: bool) -> String {
    expand_vars(template, |name| {
        let raw = scope.var(name).map(str::to_owned).or_else(|| {
            if env {
                std::env::var(name).ok()
            } else {
                None
            }
        })?;
        Some(percent_encode(&raw))
    })
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`, section 2.3).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters (UTF-8 bytes, upper-case hex).
pub(crate) fn percent_encode(raw: &str) -> String {
    utf8_percent_encode(raw, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_scope_expand_without_env() {
        let scope = Scope::new("app-1")
            .with_group("web")
            .with_var("ORG", "acme");
        for t in [
            "$APP_NAME",
            "${APP_NAME}x",
            "$APP_NAMEx",
            "a $GROUP $ORG ${ORG}",
            "$ $$ ${ ${NOPE} $1",
            "cost $",
            "sum(rate(x{app=\"$APP_NAME\"}[$__interval]))",
        ] {
            assert_eq!(expand(t, &scope, false), scope.expand(t), "{t}");
            assert_eq!(
                expand_vars(t, |n| scope.var(n).map(str::to_owned)),
                scope.expand(t)
            );
        }
    }

    #[test]
    fn env_fills_only_what_the_scope_does_not_know() {
        // PATH is set in every test environment; APP_NAME from the scope wins over any env.
        let path = std::env::var("PATH").unwrap_or_default();
        let scope = Scope::new("a");
        assert_eq!(
            expand(
                "${APP_NAME} $PATH $FLEETSCALE_SURELY_UNSET_VAR",
                &scope,
                true
            ),
            format!("a {path} $FLEETSCALE_SURELY_UNSET_VAR")
        );
        assert_eq!(expand("$PATH", &scope, false), "$PATH");
    }

    #[test]
    fn url_values_are_encoded() {
        let scope = Scope::new("my app/1").with_var("Q", "a&b=c");
        assert_eq!(
            expand_url("http://h/apps/$APP_NAME?x=${Q}&keep=$OTHER", &scope, false),
            "http://h/apps/my%20app%2F1?x=a%26b%3Dc&keep=$OTHER"
        );
        // Unreserved characters stay; other bytes of UTF-8 are encoded one by one.
        assert_eq!(percent_encode("aZ09-._~é%+"), "aZ09-._~%C3%A9%25%2B");
    }
}
