//! The visibility query a [`super::TemporalSource`] sends: pure functions, property-tested.
//!
//! fly-autoscaler (`temporal/temporal.go`, `CollectMetric`) counts the *running* workflow
//! executions: its query is `ExecutionStatus="Running"`, and a configured query is appended as
//! `ExecutionStatus="Running" AND (<query>)`; then `$APP_NAME` is replaced by the app and other
//! `$VAR`s by the environment (`fas.ExpandMetricQuery`). We build exactly that string, with our
//! expansion rules (scope variables first, names nobody knows kept as written: see
//! `fleetscale_metrics`'s variable expansion).
//!
//! One check is ours: the configured query must have balanced parentheses and closed string
//! literals outside of strings. Otherwise `a) OR (b` would turn the wrapper into
//! `ExecutionStatus="Running" AND (a) OR (b)`, which Temporal accepts and which counts
//! workflows that are not running: a silent over-count, so an over-scale.

use fleetscale_core::Scope;

use crate::expand;

/// The filter every count starts with: only running executions, as fly-autoscaler.
pub const RUNNING: &str = r#"ExecutionStatus="Running""#;

/// A structural problem in a visibility query, with the 1-based column (in characters) where
/// it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// 1-based character column in the checked text.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

/// The query before expansion: [`RUNNING`], and the configured `filter` (when it is not blank)
/// as `RUNNING AND (filter)`.
pub fn compose(filter: &str) -> String {
    if filter.trim().is_empty() {
        RUNNING.to_owned()
    } else {
        format!("{RUNNING} AND ({filter})")
    }
}

/// The query as sent for `scope`: [`compose`], then `$VAR` expansion (scope variables such as
/// `APP_NAME` first, then the environment when `env` is true). Expansion happens once: a
/// substituted value is never expanded again.
pub fn build(filter: &str, scope: &Scope, env: bool) -> String {
    expand::expand(&compose(filter), scope, env)
}

/// Checks that parentheses are balanced and every string literal (`'…'`, `"…"`) and quoted
/// identifier (`` `…` ``) is closed, outside of literals; a backslash inside a literal escapes
/// the next character.
///
/// # Errors
/// The first problem, with its column: a `)` with no `(`, a `(` never closed, a literal never
/// closed.
pub fn check(query: &str) -> Result<(), QueryError> {
    let mut open: Vec<usize> = Vec::new();
    let mut code = Unquoted::new(query.chars());
    for (column, c) in code.by_ref() {
        match c {
            '(' => open.push(column),
            ')' if open.pop().is_none() => {
                return Err(QueryError {
                    column,
                    message: "`)` without a matching `(`".into(),
                });
            }
            _ => {}
        }
    }
    if let Some((q, column)) = code.open_quote {
        return Err(QueryError {
            column,
            message: format!("{q} opened here is never closed"),
        });
    }
    if let Some(column) = open.pop() {
        return Err(QueryError {
            column,
            message: "`(` opened here is never closed".into(),
        });
    }
    Ok(())
}

/// The characters of a query outside its literals (`'…'`, `"…"`, `` `…` ``), each with its
/// 1-based column. The opening quote of a literal is yielded; its contents and its closing
/// quote are not, and a backslash inside a literal escapes the next character. After the
/// last character, [`Unquoted::open_quote`] names a literal left open.
struct Unquoted<I> {
    chars: I,
    column: usize,
    /// The quote character and column of the literal being read, if any.
    open_quote: Option<(char, usize)>,
    escaped: bool,
}

impl<I: Iterator<Item = char>> Unquoted<I> {
    fn new(chars: I) -> Self {
        Unquoted {
            chars,
            column: 0,
            open_quote: None,
            escaped: false,
        }
    }
}

impl<I: Iterator<Item = char>> Iterator for Unquoted<I> {
    type Item = (usize, char);

    fn next(&mut self) -> Option<(usize, char)> {
        loop {
            let c = self.chars.next()?;
            self.column += 1;
            match self.open_quote {
                Some(_) if self.escaped => self.escaped = false,
                Some(_) if c == '\\' => self.escaped = true,
                Some((q, _)) if c == q => self.open_quote = None,
                Some(_) => {}
                None => {
                    if matches!(c, '\'' | '"' | '`') {
                        self.open_quote = Some((c, self.column));
                    }
                    return Some((self.column, c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn go_shapes() {
        let scope = Scope::new("my-app");
        assert_eq!(build("", &scope, false), r#"ExecutionStatus="Running""#);
        assert_eq!(build("  ", &scope, false), r#"ExecutionStatus="Running""#);
        assert_eq!(
            build(r#"WorkflowType="my_workflow_type""#, &scope, false),
            r#"ExecutionStatus="Running" AND (WorkflowType="my_workflow_type")"#
        );
        assert_eq!(
            build(
                "TaskQueue='$APP_NAME' AND WorkflowId STARTS_WITH '${APP_NAME}-'",
                &scope,
                false
            ),
            r#"ExecutionStatus="Running" AND (TaskQueue='my-app' AND WorkflowId STARTS_WITH 'my-app-')"#
        );
        // Unknown names stay as written (fly-autoscaler blanks them).
        assert_eq!(
            build("WorkflowId='$NOPE_NOT_SET'", &scope, false),
            r#"ExecutionStatus="Running" AND (WorkflowId='$NOPE_NOT_SET')"#
        );
    }

    #[test]
    fn check_finds_the_column() {
        assert_eq!(check(r#"a = "(" AND (b)"#), Ok(()));
        assert_eq!(check(r"a = 'it\'s (' "), Ok(()));
        assert_eq!(check("a = 'it''s'"), Ok(()));
        assert_eq!(
            check("a) OR (b").unwrap_err(),
            QueryError {
                column: 2,
                message: "`)` without a matching `(`".into()
            }
        );
        assert_eq!(check("x AND (a OR (b)").unwrap_err().column, 7);
        let e = check("WorkflowType = \"abc").unwrap_err();
        assert_eq!(e.column, 16);
        assert_eq!(e.to_string(), "column 16: \" opened here is never closed");
        assert_eq!(
            check("é) ").unwrap_err().column,
            2,
            "columns count characters"
        );
    }

    /// A query fragment that is balanced by construction.
    fn balanced() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            "[A-Za-z_ =<>!0-9.-]{0,8}",
            "[A-Za-z ()$]{0,6}".prop_map(|s| format!("'{s}'")),
            "[A-Za-z ()']{0,6}".prop_map(|s| format!("\"{s}\"")),
            Just("$APP_NAME".to_owned()),
            Just("${APP_NAME}".to_owned()),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| format!("({s})")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("{a} AND {b}")),
            ]
        })
    }

    proptest! {
        /// Any input: no panic; the sent query is the Go tool's composition, expanded once.
        #[test]
        fn build_is_compose_then_expand(filter in ".{0,40}", app in "[a-z0-9$-]{1,12}") {
            let scope = Scope::new(app.clone());
            let sent = build(&filter, &scope, false);
            prop_assert!(sent.starts_with(RUNNING));
            if filter.trim().is_empty() {
                prop_assert_eq!(&sent, RUNNING);
            } else {
                let inner = expand::expand(&filter, &scope, false);
                prop_assert_eq!(sent, format!("{RUNNING} AND ({inner})"));
            }
            let _ = check(&filter);
        }

        /// `$APP_NAME` and `${APP_NAME}` become the app name and nothing else, even when the
        /// name itself holds `$APP_NAME` (one pass, no re-expansion).
        #[test]
        fn app_name_is_substituted_once(
            // Each part starts with a character that cannot continue a variable name.
            parts in proptest::collection::vec("[ =']{1,3}[A-Za-z]{0,3}[ =']{0,2}", 2..5),
            app in "[a-z0-9-]{0,6}(\\$APP_NAME)?",
        ) {
            let filter = parts.join("$APP_NAME");
            let braced = parts.join("${APP_NAME}");
            let want = format!("{RUNNING} AND ({})", parts.join(&app));
            let scope = Scope::new(app.clone());
            prop_assert_eq!(build(&filter, &scope, false), want.clone());
            prop_assert_eq!(build(&braced, &scope, false), want);
        }

        /// A filter that passes the check stays inside the wrapper: the full query passes too,
        /// and the `(` after `AND` closes exactly at the last character.
        #[test]
        fn checked_filters_stay_wrapped(filter in balanced(), app in "[a-z0-9-]{1,12}") {
            prop_assert!(check(&filter).is_ok(), "{filter}");
            let sent = build(&filter, &Scope::new(app), false);
            prop_assert!(check(&sent).is_ok());
            if !filter.trim().is_empty() {
                let open = RUNNING.chars().count() + " AND (".chars().count();
                prop_assert_eq!(closing_of(&sent, open), Some(sent.chars().count()));
            }
        }

        /// Breaking the balance of a checked filter is always caught.
        #[test]
        fn unbalanced_filters_are_refused(filter in balanced(), extra in prop_oneof![Just(')'), Just('(')], at in 0usize..64) {
            let chars: Vec<char> = filter.chars().collect();
            // Insert outside any literal: at a position where the prefix is balanced-quote-wise.
            let mut positions: Vec<usize> = (0..=chars.len())
                .filter(|&p| quotes_closed(&chars[..p]))
                .collect();
            positions.sort_unstable();
            let p = positions[at % positions.len()];
            let mut broken: String = chars[..p].iter().collect();
            broken.push(extra);
            broken.extend(&chars[p..]);
            prop_assert!(check(&broken).is_err(), "{broken}");
        }
    }

    /// The 1-based column of the `)` closing the `(` at 1-based column `open`.
    fn closing_of(query: &str, open: usize) -> Option<usize> {
        let mut depth = 0i64;
        for (column, c) in Unquoted::new(query.chars()) {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if column > open && depth == 0 {
                        return Some(column);
                    }
                }
                _ => {}
            }
            if column == open {
                assert_eq!(c, '(');
                depth = 1;
            }
        }
        None
    }

    fn quotes_closed(prefix: &[char]) -> bool {
        let mut code = Unquoted::new(prefix.iter().copied());
        code.by_ref().for_each(drop);
        code.open_quote.is_none()
    }
}
