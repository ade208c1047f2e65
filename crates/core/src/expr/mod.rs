//! The fleetscale expression language.
//!
//! Scaling bounds are written as small expressions over metric values and current counts,
//! e.g. `min(running_machines + 1, 10)` or `ceil(queue_depth / 20)`. The language is a
//! subset of [expr-lang](https://github.com/expr-lang/expr) (the Go library fly-autoscaler
//! v0.3 uses, pinned at v1.16), so expressions written for fly-autoscaler keep their meaning.
//!
//! An expression is parsed once ([`Expr::parse`]) into a syntax tree, checked (unknown
//! functions, arity, types of literals), and then evaluated many times against a set of
//! [`Variables`] ([`Expr::eval`], [`Expr::eval_count`]) without re-parsing.
//!
//! # Grammar
//!
//! ```text
//! expression = logic_or , [ "?" , expression , ":" , expression ] ;   (* right-assoc *)
//! logic_or   = logic_and , { ( "||" | "or" ) , logic_and } ;
//! logic_and  = comparison , { ( "&&" | "and" ) , comparison } ;
//! comparison = sum , { ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) , sum } ;
//! sum        = product , { ( "+" | "-" ) , product } ;
//! product    = power , { ( "*" | "/" | "%" ) , power } ;
//! power      = unary , [ ( "**" | "^" ) , power ] ;                   (* right-assoc *)
//! unary      = ( "!" | "not" ) , product
//!            | ( "-" | "+" ) , power
//!            | primary ;
//! primary    = number | string | "true" | "false" | identifier
//!            | function , "(" , [ expression , { "," , expression } , [ "," ] ] , ")"
//!            | "(" , expression , ")" ;
//! number     = digits , [ "." , [ digits ] ] , [ exponent ]
//!            | "." , digits , [ exponent ] ;          (* "_" allowed inside digits: 1_000 *)
//! exponent   = ( "e" | "E" ) , [ "+" | "-" ] , digits ;
//! string     = "'" , { char | escape } , "'" | '"' , { char | escape } , '"' ;
//! escape     = "\\" , ( "\\" | "'" | '"' | "n" | "t" | "r" ) ;
//! identifier = ( letter | "_" ) , { letter | digit | "_" } ;   (* ASCII only *)
//! function   = "min" | "max" | "abs" | "ceil" | "floor" | "round" | "int" | "float" ;
//! ```
//!
//! Whitespace (any Unicode whitespace) separates tokens and is otherwise ignored. A number
//! may not be followed directly by a letter, digit, `_` or `.` (`12abc`, `1.2.3` and `1e`
//! are errors; so is a literal that overflows `f64`, such as `1e999`). `true`, `false`,
//! `and`, `or`, `not`, `nil` and `let` are reserved and cannot name variables; a function
//! name not followed by `(` is an ordinary variable name.
//!
//! Precedence, lowest first (this is expr-lang's table):
//!
//! | level | operators                          | associativity |
//! |-------|------------------------------------|---------------|
//! | 1     | `c ? a : b`                        | right         |
//! | 2     | `\|\|` `or`                        | left          |
//! | 3     | `&&` `and`                         | left          |
//! | 4     | `==` `!=` `<` `<=` `>` `>=`        | chained       |
//! | 5     | `+` `-`                            | left          |
//! | 6     | prefix `!` `not`                   |               |
//! | 7     | `*` `/` `%`                        | left          |
//! | 8     | prefix `-` `+`                     |               |
//! | 9     | `**` `^` (both mean power)         | right         |
//!
//! A prefix operator applies to everything after it that binds tighter than itself:
//! `-2 ** 2` is `-(2 ** 2)` = -4 and `-a * b` is `(-a) * b`, as in expr-lang; `!a * b`
//! is `!(a * b)` (a type error either way). Comparisons chain as in current expr-lang:
//! `1 < x <= 3` means `1 < x && x <= 3` (the middle operand is evaluated twice; expressions
//! have no side effects).
//!
//! # Values and semantics
//!
//! There are three types: numbers (`f64`, including integer literals), booleans and strings.
//!
//! - Arithmetic is IEEE-754 `f64`: `7 / 2` is `3.5` (there is no integer division),
//!   `1 / 0` is `+Inf` and `0 / 0` is `NaN`. [`Expr::eval`] returns such values as they are
//!   (so `1 / 0 > 5` is `true`, as in Go); [`Expr::eval_count`] and [`Expr::eval_number`]
//!   reject them with [`ExprErrorKind::Infinite`] / [`ExprErrorKind::NaN`].
//! - `a % b` is the truncated remainder (`f64` `%`, the sign of `a`): `7 % 3` = 1,
//!   `-7 % 3` = -1 (Go's integer `%` agrees on integral operands), `7.5 % 2` = 1.5, `x % 0`
//!   is `NaN`. (expr-lang rejects `%` on floats; fleetscale accepts it.)
//! - `a ** b` / `a ^ b` is `f64::powf`.
//! - `+` also concatenates two strings. `<` `<=` `>` `>=` compare two numbers or two strings
//!   (byte-wise lexicographic). `==` `!=` compare two values of the same type (numbers by
//!   IEEE equality: `NaN != NaN`). Comparing values of different types is a type error,
//!   never silently `false`.
//! - `&&`, `||` and `!` need booleans and short-circuit; there is no implicit truthiness
//!   (`1 && 2` is a type error). The condition of `?:` must be a boolean; only the chosen
//!   branch is evaluated.
//! - Functions: `min(x, ...)` and `max(x, ...)` take one or more numbers and return `NaN`
//!   if any argument is `NaN`; `abs(x)`, `ceil(x)`, `floor(x)`, `round(x)` (half away from
//!   zero: `round(2.5)` = 3, `round(-2.5)` = -3), `int(x)` (truncates toward zero) and
//!   `float(x)` (identity) take one number; `int` and `float` also accept a string holding
//!   a number (`int('42')`, `float(' 2.5 ')`; Rust `f64` syntax after trimming whitespace,
//!   anything else is a type error).
//!
//! # Errors
//!
//! Every error is an [`ExprError`] carrying the source, a kind and, when it can be pinned
//! to a token, the 1-based *character* column of that token (the operator for an operator's
//! type error, the name for an unknown function or variable).
//!
//! - At parse time: syntax errors, an empty expression ([`ExprErrorKind::Empty`]), unknown
//!   functions, wrong numbers of arguments ([`ExprErrorKind::Arity`]), nesting deeper than
//!   [`MAX_DEPTH`] levels, and type errors that are certain from literals alone
//!   (`'a' - 1`, `min(true, 1)`).
//! - [`Expr::check_variables`] and [`Expr::check_types`] validate against the variables a
//!   caller will provide, so configuration errors are reported at load time.
//! - At evaluation: unknown variables and type errors (variables are typed at run time).
//!
//! Parsing never panics, whatever the input, and recursion is bounded by [`MAX_DEPTH`].

mod ast;
mod error;
mod eval;
mod lexer;
mod parser;
mod print;
#[cfg(test)]
mod stack_tests;
#[cfg(test)]
mod tests;
mod types;
mod value;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use error::{ExprError, ExprErrorKind};
pub use value::{Value, ValueType, Variables};

use ast::{visit_vars, Node};
use error::error;
use print::write_canonical;
use types::infer;

/// Maximum depth of an expression's syntax tree: each operator and call adds a level, a
/// literal or variable is one level (`1 + 2 * 3` is 3 levels deep, `abs(-x)` is 3), and a
/// chain of `n` left-associative operators such as `1 + 1 + ... + 1` is `n + 1` deep.
/// Parentheses do not add to the tree, but parsing allows at most `2 * MAX_DEPTH + 1`
/// nested levels of parentheses and prefix operators together (enough for the fully
/// parenthesised [`Expr::to_canonical_string`] of any accepted expression). Deeper
/// expressions are rejected with a [`ExprErrorKind::Syntax`] error: this bounds the
/// recursion of the parser and evaluator so adversarial input cannot overflow the stack.
pub const MAX_DEPTH: usize = 256;

/// The largest machine count [`Expr::eval_count`] returns: larger results saturate here, with
/// a WARN naming the expression and the value.
///
/// A metric spike (`1e300` under `created = running_machines`) or a typo (`1e12`) must never
/// make the autoscaler do work or allocate memory in proportion to a number: 10,000 is far
/// above any single target fleetscale scales (Fly apps run tens to hundreds of Machines) and
/// small enough that a plan, a log line per machine and a decision record stay cheap. Plans
/// are further bounded per tick ([`crate::plan::DEFAULT_MAX_ACTIONS_PER_KIND`]).
pub const MAX_MACHINE_COUNT: u32 = 10_000;

/// A parsed, checked expression, ready to be evaluated many times.
///
/// Equality compares the source text (and therefore the syntax tree).
#[derive(Clone, PartialEq)]
pub struct Expr {
    source: String,
    root: Box<Node>,
}

/// Shows the source only: `Expr("min(x, 2)")`.
impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// Prints the source text as written.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Same as [`Expr::parse`].
impl FromStr for Expr {
    type Err = ExprError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expr::parse(s)
    }
}

/// Same as [`Expr::parse`].
impl TryFrom<&str> for Expr {
    type Error = ExprError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Expr::parse(s)
    }
}

/// Serializes as the source string.
impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Deserializes from a string (parsed with [`Expr::parse`]; parse errors become
/// deserialization errors) or from a finite number (`min: 2` in YAML, `min = 2.5` in
/// TOML), which becomes the constant expression with that value. An empty string is an
/// [`ExprErrorKind::Empty`] error: use `Option<Expr>` with a missing key for "not defined".
impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Expr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression (string) or a number")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Expr, E> {
                Expr::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Expr, E> {
                Expr::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Expr, E> {
                Expr::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Expr, E> {
                if !n.is_finite() {
                    return Err(E::custom(format!("expression must be finite, got {n}")));
                }
                Expr::parse(&format!("{n:?}")).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Expr {
    /// Parses and checks `source`.
    ///
    /// # Errors
    ///
    /// - [`ExprErrorKind::Empty`] if `source` is empty or whitespace only (callers usually
    ///   treat an empty expression as "not defined" before calling this).
    /// - [`ExprErrorKind::Syntax`] for invalid text or nesting deeper than [`MAX_DEPTH`].
    /// - [`ExprErrorKind::UnknownFunction`] / [`ExprErrorKind::Arity`] for bad calls.
    /// - [`ExprErrorKind::Type`] for type errors certain from literals alone.
    ///
    /// Never panics, whatever the input.
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        if source.trim().is_empty() {
            return Err(error(
                ExprErrorKind::Empty,
                None,
                "expression is empty",
                source,
            ));
        }
        let root = parser::parse(source)?;
        let expr = Expr {
            source: source.to_owned(),
            root,
        };
        expr.check_types(&|_| None)?;
        Ok(expr)
    }

    /// The source text, as given to [`Expr::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The distinct variable names the expression references, sorted.
    pub fn variables(&self) -> Vec<&str> {
        let mut names = BTreeSet::new();
        visit_vars(&self.root, &mut |name, _| {
            names.insert(name);
        });
        names.into_iter().collect()
    }

    /// Checks that every variable the expression references is `known`.
    ///
    /// # Errors
    ///
    /// [`ExprErrorKind::UnknownVariable`] for the first unknown variable in source order,
    /// with its column.
    pub fn check_variables(&self, known: &dyn Fn(&str) -> bool) -> Result<(), ExprError> {
        let mut first: Option<(usize, &str)> = None;
        visit_vars(&self.root, &mut |name, col| {
            if !known(name) && first.is_none_or(|(c, _)| col < c) {
                first = Some((col, name));
            }
        });
        match first {
            None => Ok(()),
            Some((col, name)) => Err(error(
                ExprErrorKind::UnknownVariable,
                Some(col),
                format!("unknown variable `{name}`"),
                &self.source,
            )),
        }
    }

    /// Checks the expression's types, given the type each variable will have (`None` for a
    /// variable whose type is not known in advance; those are checked at evaluation).
    /// [`Expr::parse`] already ran this with every variable unknown.
    ///
    /// # Errors
    ///
    /// [`ExprErrorKind::Type`] with the column of the offending operator, function name or
    /// `?`. Like expr-lang's compiler, this is static: `false && 'a' > 1` is rejected even
    /// though evaluation would short-circuit.
    pub fn check_types(
        &self,
        type_of: &dyn Fn(&str) -> Option<ValueType>,
    ) -> Result<(), ExprError> {
        infer(&self.root, type_of).map(|_| ()).map_err(|fail| {
            let (col, msg) = *fail;
            error(ExprErrorKind::Type, Some(col), msg, &self.source)
        })
    }

    /// The type of the result if it can be determined without evaluating, given the types
    /// of variables (`None` when unknown). `None` if it depends on variables of unknown
    /// type or on which branch of a `?:` with different branch types is taken, or if the
    /// expression does not type-check.
    pub fn result_type(&self, type_of: &dyn Fn(&str) -> Option<ValueType>) -> Option<ValueType> {
        infer(&self.root, type_of).ok().flatten()
    }

    /// The expression fully parenthesised with canonical operator spellings (`&&`, `||`,
    /// `!`, `**`, single-quoted strings, numbers in Rust's shortest round-trip form), e.g.
    /// `-2 ** 2 + x` becomes `((-(2.0 ** 2.0)) + x)`. Parsing the result yields the same
    /// syntax tree (up to columns), so this shows exactly how an expression was understood.
    pub fn to_canonical_string(&self) -> String {
        let mut out = String::new();
        write_canonical(&self.root, &mut out);
        out
    }
}
