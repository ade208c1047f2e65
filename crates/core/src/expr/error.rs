//! The error every stage of the language reports, with the column it points at.

use std::fmt;

/// What went wrong with an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExprErrorKind {
    /// The text is not a valid expression (unexpected token, unclosed parenthesis, bad
    /// literal, nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH)...). Parse time.
    Syntax,
    /// A call names a function that does not exist. Parse time; the column is the name's.
    UnknownFunction,
    /// A function is called with the wrong number of arguments. Parse time; the column is
    /// the function name's.
    Arity,
    /// A variable is not defined ([`Expr::check_variables`](super::Expr::check_variables) or evaluation); the column is
    /// the variable's.
    UnknownVariable,
    /// An operator, function or condition got a value of the wrong type; the column is the
    /// operator's (or function name's, or the `?`'s). Also: the result of
    /// [`Expr::eval_count`](super::Expr::eval_count) / [`Expr::eval_number`](super::Expr::eval_number) is not a number, or that of
    /// [`Expr::eval_bool`](super::Expr::eval_bool) not a boolean (no column).
    Type,
    /// The numeric result is NaN (e.g. `0 / 0`). No column.
    NaN,
    /// The numeric result is infinite (e.g. `1 / 0`). No column.
    Infinite,
    /// The expression is empty or only whitespace. No column.
    Empty,
}

/// An error parsing, checking or evaluating an expression.
///
/// Displays as ``expression `min(x +, 2)`: unexpected `,` (column 8)``.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ExprError {
    /// What went wrong.
    pub kind: ExprErrorKind,
    /// The 1-based character (not byte) column of the offending token, when there is one.
    pub column: Option<usize>,
    /// A human-readable description, without the expression or column.
    pub message: String,
    /// The expression's source text.
    pub expression: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expression `{}`: {}", self.expression, self.message)?;
        if let Some(c) = self.column {
            write!(f, " (column {c})")?;
        }
        Ok(())
    }
}

pub(super) fn error(
    kind: ExprErrorKind,
    column: Option<usize>,
    message: impl Into<String>,
    src: &str,
) -> ExprError {
    ExprError {
        kind,
        column,
        message: message.into(),
        expression: src.to_owned(),
    }
}

/// Internal results box their error so that the recursive parser and evaluator keep small
/// stack frames (see [`MAX_DEPTH`](super::MAX_DEPTH)).
pub(super) type Fallible<T> = Result<T, Box<ExprError>>;
