//! Checks of a target's rules that need the file's positions: each count expression parsed on
//! its own (so an error points at its key and column), the policy checked against the metric
//! names of the target's sources, and the environment variables the file reads.

use std::path::Path;
use std::sync::Arc;

use fleetscale_core::policy::{CountRule, Policy};
use fleetscale_core::MetricSource;
use toml::Spanned;

use crate::error::{ConfigError, Result};
use crate::schema::{bare, TargetConfig};
use crate::text::{comment_mask, ConfigText};

/// A count rule of `[target.policy]`: each expression is parsed on its own so that an error
/// points at its own key (and column), and the messages use this file's key names
/// (`created_min`, not fly-autoscaler's `min-created-machine-count`).
pub fn rule(
    path: &Path,
    text: &ConfigText,
    kind: &str,
    single: &Option<Spanned<String>>,
    min: &Option<Spanned<String>>,
    max: &Option<Spanned<String>>,
) -> Result<CountRule> {
    let keys = [
        (kind.to_owned(), single),
        (format!("{kind}_min"), min),
        (format!("{kind}_max"), max),
    ];
    for (key, value) in &keys {
        let Some(v) = value else { continue };
        if let Err(e) = fleetscale_core::expr::Expr::parse(v.get_ref()) {
            return Err(ConfigError::config(text.located(
                path,
                expr_offset(text, v, e.column),
                &format!("policy.{key}: {e}"),
            )));
        }
    }
    let first = keys
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|s| s.span().start)
        .next()
        .unwrap_or(0);
    CountRule::from_settings(
        kind,
        single.as_ref().map(|s| s.get_ref().as_str()),
        min.as_ref().map(|s| s.get_ref().as_str()),
        max.as_ref().map(|s| s.get_ref().as_str()),
    )
    .map_err(|e| {
        let msg = bare(&e)
            .replace(
                &format!("min/max-{kind}-machine-count"),
                &format!("{kind}_min/{kind}_max"),
            )
            .replace(&format!("min-{kind}-machine-count"), &format!("{kind}_min"))
            .replace(&format!("max-{kind}-machine-count"), &format!("{kind}_max"))
            .replace(&format!("{kind}-machine-count"), kind);
        ConfigError::config(text.located(path, first, &format!("policy: {msg}")))
    })
}

/// The offset of character `column` (1-based) of an expression written as a TOML string at
/// `value`'s span (just past the opening quote; exact unless the string has escapes).
fn expr_offset(text: &ConfigText, value: &Spanned<String>, column: Option<usize>) -> usize {
    let start = value.span().start;
    let Some(col) = column else { return start };
    let quote = text.expanded[start..]
        .chars()
        .next()
        .map_or(0, char::len_utf8);
    let inner: usize = value
        .get_ref()
        .chars()
        .take(col.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (start + quote + inner).min(value.span().end)
}

/// The policy and the metric sources of target `t` (labelled `label`, at byte `at` of the
/// expanded text): every expression parsed and checked against the sources' metric names, the
/// limits and the Weave section checked, and every secret of the sources registered with
/// [`fleetscale_fas::redact`].
///
/// # Errors
/// A located message naming the target and, where it can be found, pointing at the
/// expression, the limit or the source at fault.
pub(crate) fn target_rules(
    path: &Path,
    text: &ConfigText,
    t: &TargetConfig,
    at: usize,
    label: &str,
) -> Result<(Policy, Vec<Arc<dyn MetricSource>>)> {
    let here = |msg: String| ConfigError::config(text.located(path, at, &msg));
    let p = &t.policy;
    let limits = p.limits.as_ref().map(|l| *l.get_ref()).unwrap_or_default();
    let policy = Policy {
        created: rule(
            path,
            text,
            "created",
            &p.created,
            &p.created_min,
            &p.created_max,
        )?,
        started: rule(
            path,
            text,
            "started",
            &p.started,
            &p.started_min,
            &p.started_max,
        )?,
        limits,
        on_error: p.on_error,
    };
    let mut sources: Vec<Arc<dyn MetricSource>> = Vec::new();
    for s in &t.sources {
        let source_at = s.span().start;
        let s = s.get_ref();
        for secret in s.secrets() {
            fleetscale_fas::redact::register(secret.expose());
        }
        sources.push(s.build().map_err(|e| {
            ConfigError::config(text.located(
                path,
                source_at,
                &format!(
                    "target {label:?}: source {:?}: {}",
                    s.name(),
                    e.to_string()
                        .replace(&format!("metric `{}`: ", s.name()), "")
                ),
            ))
        })?);
    }
    let metric_names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    if let Err(e) = policy.check(&metric_names) {
        // Point at the expression or the limits at fault when it can be found.
        let exprs = [
            &p.created,
            &p.created_min,
            &p.created_max,
            &p.started,
            &p.started_min,
            &p.started_max,
        ];
        let culprit = match &e {
            fleetscale_core::Error::Expression(x) => exprs
                .iter()
                .filter_map(|v| v.as_ref())
                .find(|v| *v.get_ref() == x.expression)
                .map(|v| expr_offset(text, v, x.column)),
            _ if bare(&e).starts_with("limits") => p.limits.as_ref().map(|l| {
                // `limits.cooldown_after_scale_up is …` or `limits: created min …`.
                let message = bare(&e);
                let key = message
                    .trim_start_matches("limits")
                    .trim_start_matches(['.', ':', ' '])
                    .split([' ', '.'])
                    .next()
                    .unwrap_or("")
                    .to_owned();
                text.key_offset(l.span(), &key)
            }),
            _ => None,
        };
        let message = match &e {
            fleetscale_core::Error::Config { .. } => bare(&e),
            e => e.to_string(),
        };
        return Err(ConfigError::config(text.located(
            path,
            culprit.unwrap_or(at),
            &format!("target {label:?}: {message}"),
        )));
    }
    if let Some(w) = &t.weave {
        if let Some(d) = w.min_unreachable {
            fleetscale_core::policy::check_duration("weave.min_unreachable", d, true)
                .map_err(|e| here(format!("target {label:?}: {}", bare(&e))))?;
        }
    }
    Ok((policy, sources))
}

/// Refuses a variable the file uses (`${NAME}`, outside comments) or a target's token
/// variable when it is set but not valid UTF-8: reading it as unset would report it "not set".
///
/// # Errors
/// `environment variable X is set but its value is not valid UTF-8`.
pub fn check_env_utf8(raw: &str) -> Result<()> {
    let comments = comment_mask(raw);
    let mut names: Vec<&str> = Vec::new();
    let mut rest = raw;
    let mut base = 0;
    while let Some(i) = rest.find("${") {
        let at = base + i;
        let after = &rest[i + 2..];
        if let Some(end) = after.find('}') {
            if !comments[at] {
                names.push(&after[..end]);
            }
        }
        base = at + 2;
        rest = &raw[base..];
    }
    names.extend(["FLY_API_TOKEN", "FLY_FLAPS_BASE_URL", "FLY_API_BASE_URL"]);
    // `token_env = "X"` values.
    for line in raw.lines() {
        if let Some(i) = line.find("token_env") {
            let tail = &line[i..];
            if let Some(q) = tail.split('"').nth(1) {
                names.push(q);
            }
        }
    }
    for name in names {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            continue;
        }
        if let Some(v) = std::env::var_os(name) {
            if v.to_str().is_none() {
                return Err(ConfigError::config(format!(
                    "environment variable {name} is set but its value is not valid UTF-8"
                )));
            }
        }
    }
    Ok(())
}
