//! The scope a tick runs in: which target (app, pool) and group it is for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a tick is about: passed to every [`crate::MetricSource`] so one source definition can
/// serve many targets (e.g. every app matched by a wildcard).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The target's name: the Fly app name, the pool name.
    pub target: String,
    /// The process group or sub-pool, when there is one.
    pub group: Option<String>,
    /// Extra variables sources may expand (`$NAME` / `${NAME}`), e.g. `ORG`.
    pub vars: BTreeMap<String, String>,
}

impl Scope {
    /// The scope of `target` with no group and no extra variables.
    pub fn new(target: impl Into<String>) -> Self {
        Scope {
            target: target.into(),
            ..Scope::default()
        }
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Adds a variable for [`Scope::expand`].
    pub fn with_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The value of a scope variable: one set in [`Scope::vars`] first (so a target whose
    /// display name is not its app sets `APP_NAME` to the app), else `APP_NAME` and `TARGET`
    /// are the target name and `GROUP` the group (empty when none).
    ///
    /// ```
    /// use fleetscale_core::Scope;
    /// let named = Scope::new("web").with_var("APP_NAME", "my-web-app");
    /// assert_eq!(named.var("APP_NAME"), Some("my-web-app"));
    /// assert_eq!(named.var("TARGET"), Some("web"));
    /// assert_eq!(named.app_name(), "my-web-app");
    /// ```
    pub fn var(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.vars.get(name) {
            return Some(v);
        }
        match name {
            "APP_NAME" | "TARGET" => Some(&self.target),
            "GROUP" => Some(self.group.as_deref().unwrap_or("")),
            _ => None,
        }
    }

    /// The app (or pool) the target scales: `APP_NAME` (see [`Scope::var`]).
    pub fn app_name(&self) -> &str {
        self.var("APP_NAME").unwrap_or(&self.target)
    }

    /// Expands `$NAME` and `${NAME}` for every variable the scope knows (see [`Scope::var`]).
    ///
    /// Unknown variables are left exactly as written, so PromQL such as `$__interval` or a
    /// literal `$` survives; fly-autoscaler instead replaced them with the process environment
    /// (or blanked them) which silently broke queries.
    ///
    /// ```
    /// use fleetscale_core::Scope;
    /// let scope = Scope::new("my-app");
    /// assert_eq!(
    ///     scope.expand("count(fly_instance_up{app='$APP_NAME'}) + ${APP_NAME} $OTHER"),
    ///     "count(fly_instance_up{app='my-app'}) + my-app $OTHER"
    /// );
    /// ```
    pub fn expand(&self, template: &str) -> String {
        expand_vars(template, |name| self.var(name).map(str::to_owned))
    }
}

/// The expansion grammar behind [`Scope::expand`], with any lookup: `${NAME}` (any characters
/// up to `}`) and `$NAME` (ASCII alphanumerics and `_`). A name `lookup` does not know is left
/// exactly as written. One pass: a substituted value is never expanded again.
///
/// Sources use it to add their own variables (the process environment, percent-encoding for
/// URLs) while keeping one grammar.
///
/// ```
/// use fleetscale_core::expand_vars;
/// let out = expand_vars("${A}-$B-$C", |n| (n != "C").then(|| n.to_lowercase()));
/// assert_eq!(out, "a-b-$C");
/// ```
pub fn expand_vars(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                if let Some(v) = lookup(&inner[..end]) {
                    out.push_str(&v);
                    rest = &inner[end + 1..];
                    continue;
                }
            }
        } else {
            let len = after
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map(|(i, _)| i)
                .unwrap_or(after.len());
            if len > 0 {
                if let Some(v) = lookup(&after[..len]) {
                    out.push_str(&v);
                    rest = &after[len..];
                    continue;
                }
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_and_keeps_unknown() {
        let s = Scope::new("app-1")
            .with_group("web")
            .with_var("ORG", "acme");
        assert_eq!(s.expand("$APP_NAME"), "app-1");
        assert_eq!(s.expand("${APP_NAME}x"), "app-1x");
        assert_eq!(s.expand("$APP_NAMEx"), "$APP_NAMEx");
        assert_eq!(s.expand("a $GROUP $ORG ${ORG}"), "a web acme acme");
        assert_eq!(s.expand("$ $$ ${ ${NOPE} $1"), "$ $$ ${ ${NOPE} $1");
        assert_eq!(s.expand("cost $"), "cost $");
    }
}
