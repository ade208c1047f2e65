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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

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

/// Maximum recursion depth of the parser (see [`MAX_DEPTH`]).
const MAX_PARSE_DEPTH: usize = 2 * MAX_DEPTH + 1;

/// A value an expression operates on or produces.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number. All numbers are `f64`, integers included.
    Number(f64),
    /// A boolean (`true`, `false`, or the result of a comparison).
    Bool(bool),
    /// A string (a literal such as `'my-app'` or a string variable).
    Str(String),
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Number(_) => ValueType::Number,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
        }
    }

    /// The number, if this is a [`Value::Number`].
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Formats numbers with `f64`'s `Display`, booleans as `true`/`false` and strings as they
/// are (unquoted).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

/// The type of a [`Value`], used by [`Expr::check_types`] and in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// [`Value::Number`].
    Number,
    /// [`Value::Bool`].
    Bool,
    /// [`Value::Str`].
    Str,
}

/// Prints `number`, `bool` or `string`.
impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Number => "number",
            ValueType::Bool => "bool",
            ValueType::Str => "string",
        })
    }
}

/// The named values an expression is evaluated against (metrics by name, current counts,
/// the app name...). Setting a name again replaces its value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables(BTreeMap<String, Value>);

impl Variables {
    /// An empty set of variables.
    pub fn new() -> Self {
        Variables::default()
    }

    /// Sets `name` to a number.
    pub fn set_number(&mut self, name: impl Into<String>, v: f64) {
        self.0.insert(name.into(), Value::Number(v));
    }

    /// Sets `name` to a string.
    pub fn set_str(&mut self, name: impl Into<String>, v: impl Into<String>) {
        self.0.insert(name.into(), Value::Str(v.into()));
    }

    /// Sets `name` to a boolean.
    pub fn set_bool(&mut self, name: impl Into<String>, v: bool) {
        self.0.insert(name.into(), Value::Bool(v));
    }

    /// Sets `name` to any value.
    pub fn set(&mut self, name: impl Into<String>, v: Value) {
        self.0.insert(name.into(), v);
    }

    /// Removes `name`, returning its value if it was set.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The names that are set, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.keys().map(String::as_str)
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many variables are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Variables {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Variables(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<K: Into<String>> Extend<(K, Value)> for Variables {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|(k, v)| (k.into(), v)));
    }
}

/// What went wrong with an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExprErrorKind {
    /// The text is not a valid expression (unexpected token, unclosed parenthesis, bad
    /// literal, nesting deeper than [`MAX_DEPTH`]...). Parse time.
    Syntax,
    /// A call names a function that does not exist. Parse time; the column is the name's.
    UnknownFunction,
    /// A function is called with the wrong number of arguments. Parse time; the column is
    /// the function name's.
    Arity,
    /// A variable is not defined ([`Expr::check_variables`] or evaluation); the column is
    /// the variable's.
    UnknownVariable,
    /// An operator, function or condition got a value of the wrong type; the column is the
    /// operator's (or function name's, or the `?`'s). Also: the result of
    /// [`Expr::eval_count`] / [`Expr::eval_number`] is not a number, or that of
    /// [`Expr::eval_bool`] not a boolean (no column).
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

fn error(
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

// ---------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnOp {
    Neg,
    Plus,
    Not,
}

impl UnOp {
    fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Plus => "+",
            UnOp::Not => "!",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "**",
        }
    }

    /// Precedence (expr-lang's numbers) and right-associativity.
    fn precedence(self) -> (u8, bool) {
        match self {
            BinOp::Or => (10, false),
            BinOp::And => (15, false),
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => (20, false),
            BinOp::Add | BinOp::Sub => (30, false),
            BinOp::Mul | BinOp::Div | BinOp::Rem => (60, false),
            BinOp::Pow => (100, true),
        }
    }

    fn is_comparison(self) -> bool {
        self.precedence().0 == 20
    }
}

/// Precedence at which the operand of a prefix operator is parsed.
const PREC_NOT: u8 = 50;
const PREC_NEG: u8 = 90;
const PREC_COMPARISON: u8 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
    Round,
    Int,
    Float,
}

const FUNCTION_NAMES: &str = "abs, ceil, float, floor, int, max, min, round";

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "min" => Func::Min,
            "max" => Func::Max,
            "abs" => Func::Abs,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "round" => Func::Round,
            "int" => Func::Int,
            "float" => Func::Float,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::Min => "min",
            Func::Max => "max",
            Func::Abs => "abs",
            Func::Ceil => "ceil",
            Func::Floor => "floor",
            Func::Round => "round",
            Func::Int => "int",
            Func::Float => "float",
        }
    }

    fn is_variadic(self) -> bool {
        matches!(self, Func::Min | Func::Max)
    }

    fn accepts_strings(self) -> bool {
        matches!(self, Func::Int | Func::Float)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Node {
    /// 1-based char column of the token that identifies this node (the literal or name,
    /// the operator, the `?`, the function name).
    col: usize,
    /// Height of the tree rooted here (a leaf is 1), bounded by [`MAX_DEPTH`].
    height: usize,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Num(f64),
    Str(String),
    Bool(bool),
    Var(String),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

impl Kind {
    fn child_height(&self) -> usize {
        match self {
            Kind::Num(_) | Kind::Str(_) | Kind::Bool(_) | Kind::Var(_) => 0,
            Kind::Unary(_, a) => a.height,
            Kind::Binary(_, a, b) => a.height.max(b.height),
            Kind::Cond(a, b, c) => a.height.max(b.height).max(c.height),
            Kind::Call(_, args) => args.iter().map(|a| a.height).max().unwrap_or(0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sym {
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Pow,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Bool(bool),
    Ident,
    Op(Sym),
    LParen,
    RParen,
    Comma,
    Question,
    Colon,
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// 1-based char column of the first character.
    col: usize,
    /// Byte range in the source.
    start: usize,
    end: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let n = chars.len();
    let byte_at = |i: usize| if i < n { chars[i].0 } else { src.len() };
    let ch = |i: usize| if i < n { Some(chars[i].1) } else { None };
    let mut toks = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let first = i;
        let col = i + 1;
        let tok = if c.is_ascii_digit()
            || (c == '.' && ch(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut text = String::new();
            while let Some(d) = ch(i).filter(|d| d.is_ascii_digit() || *d == '_') {
                if d != '_' {
                    text.push(d);
                }
                i += 1;
            }
            if ch(i) == Some('.') {
                text.push('.');
                i += 1;
                while let Some(d) = ch(i).filter(|d| d.is_ascii_digit() || *d == '_') {
                    if d != '_' {
                        text.push(d);
                    }
                    i += 1;
                }
            }
            if matches!(ch(i), Some('e' | 'E')) {
                text.push('e');
                i += 1;
                if let Some(s) = ch(i).filter(|s| *s == '+' || *s == '-') {
                    text.push(s);
                    i += 1;
                }
                let mut exp_digits = 0;
                while let Some(d) = ch(i).filter(|d| d.is_ascii_digit() || *d == '_') {
                    if d != '_' {
                        text.push(d);
                        exp_digits += 1;
                    }
                    i += 1;
                }
                if exp_digits == 0 {
                    let bad = &src[byte_at(first)..byte_at(i)];
                    return Err(error(
                        ExprErrorKind::Syntax,
                        Some(col),
                        format!(
                            "invalid number literal `{}`: the exponent has no digits",
                            shorten(bad)
                        ),
                        src,
                    ));
                }
            }
            if let Some(next) = ch(i).filter(|c| c.is_alphanumeric() || *c == '_' || *c == '.') {
                let bad = &src[byte_at(first)..byte_at(i + 1)];
                return Err(error(
                    ExprErrorKind::Syntax,
                    Some(col),
                    format!(
                        "invalid number literal `{}` (unexpected `{next}`)",
                        shorten(bad)
                    ),
                    src,
                ));
            }
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Tok::Num(v),
                _ => {
                    let bad = &src[byte_at(first)..byte_at(i)];
                    return Err(error(
                        ExprErrorKind::Syntax,
                        Some(col),
                        format!("number literal `{}` is out of range", shorten(bad)),
                        src,
                    ));
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            while ch(i).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_') {
                i += 1;
            }
            match &src[byte_at(first)..byte_at(i)] {
                "true" => Tok::Bool(true),
                "false" => Tok::Bool(false),
                "and" => Tok::Op(Sym::AndAnd),
                "or" => Tok::Op(Sym::OrOr),
                "not" => Tok::Op(Sym::Bang),
                _ => Tok::Ident,
            }
        } else if c == '\'' || c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(d) = ch(i) else {
                    return Err(error(
                        ExprErrorKind::Syntax,
                        Some(col),
                        "unterminated string literal",
                        src,
                    ));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d != '\\' {
                    s.push(d);
                    continue;
                }
                let escaped = match ch(i) {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(other) => {
                        return Err(error(
                            ExprErrorKind::Syntax,
                            Some(i),
                            format!("unknown escape sequence `\\{other}` (use \\\\, \\', \\\", \\n, \\t or \\r)"),
                            src,
                        ))
                    }
                    None => {
                        return Err(error(
                            ExprErrorKind::Syntax,
                            Some(col),
                            "unterminated string literal",
                            src,
                        ))
                    }
                };
                s.push(escaped);
                i += 1;
            }
            Tok::Str(s)
        } else {
            let next = ch(i + 1);
            let (tok, len) = match (c, next) {
                ('*', Some('*')) => (Tok::Op(Sym::Pow), 2),
                ('=', Some('=')) => (Tok::Op(Sym::EqEq), 2),
                ('!', Some('=')) => (Tok::Op(Sym::NotEq), 2),
                ('<', Some('=')) => (Tok::Op(Sym::Le), 2),
                ('>', Some('=')) => (Tok::Op(Sym::Ge), 2),
                ('&', Some('&')) => (Tok::Op(Sym::AndAnd), 2),
                ('|', Some('|')) => (Tok::Op(Sym::OrOr), 2),
                ('+', _) => (Tok::Op(Sym::Plus), 1),
                ('-', _) => (Tok::Op(Sym::Minus), 1),
                ('*', _) => (Tok::Op(Sym::Star), 1),
                ('/', _) => (Tok::Op(Sym::Slash), 1),
                ('%', _) => (Tok::Op(Sym::Percent), 1),
                ('^', _) => (Tok::Op(Sym::Pow), 1),
                ('!', _) => (Tok::Op(Sym::Bang), 1),
                ('<', _) => (Tok::Op(Sym::Lt), 1),
                ('>', _) => (Tok::Op(Sym::Gt), 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                (',', _) => (Tok::Comma, 1),
                ('?', _) => (Tok::Question, 1),
                (':', _) => (Tok::Colon, 1),
                _ => {
                    let hint = match c {
                        '=' => " (use `==` to compare)",
                        '&' => " (use `&&` or `and`)",
                        '|' => " (use `||` or `or`)",
                        _ => "",
                    };
                    return Err(error(
                        ExprErrorKind::Syntax,
                        Some(col),
                        format!("unexpected character `{c}`{hint}"),
                        src,
                    ));
                }
            };
            i += len;
            tok
        };
        toks.push(Token {
            tok,
            col,
            start: byte_at(first),
            end: byte_at(i),
        });
    }
    toks.push(Token {
        tok: Tok::Eof,
        col: n + 1,
        start: src.len(),
        end: src.len(),
    });
    Ok(toks)
}

/// Shortens a source excerpt for an error message.
fn shorten(s: &str) -> Cow<'_, str> {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
        None => Cow::Borrowed(s),
    }
}

// ---------------------------------------------------------------------------------------
// Parser (Pratt / precedence climbing with expr-lang's precedences)
// ---------------------------------------------------------------------------------------

/// Internal results box their error so that the recursive parser and evaluator keep small
/// stack frames (see [`MAX_DEPTH`]).
type Fallible<T> = Result<T, Box<ExprError>>;

struct Parser<'s> {
    src: &'s str,
    /// Never empty: the last token is always [`Tok::Eof`], and `pos` never moves past it.
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

// The recursive functions (`parse_expr`, `parse_unary`, `parse_primary`, `parse_paren`,
// `parse_var`, `parse_call`, `parse_comparison`, `parse_conditional`) keep their frames small:
// every error message is built in a `#[cold]` out-of-line function.
impl<'s> Parser<'s> {
    fn tok(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn col(&self) -> usize {
        self.toks[self.pos].col
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn text(&self, i: usize) -> &'s str {
        let src: &'s str = self.src;
        let t = &self.toks[i];
        &src[t.start..t.end]
    }

    #[cold]
    #[inline(never)]
    fn fail(&self, kind: ExprErrorKind, col: usize, msg: String) -> Box<ExprError> {
        Box::new(error(kind, Some(col), msg, self.src))
    }

    /// "unexpected X" for the token at index `i`.
    #[cold]
    #[inline(never)]
    fn unexpected(&self, i: usize) -> Box<ExprError> {
        let t = &self.toks[i];
        let msg = match t.tok {
            Tok::Eof => "unexpected end of expression".to_owned(),
            Tok::RParen => "unexpected `)` without matching `(`".to_owned(),
            _ => format!("unexpected `{}`", shorten(self.text(i))),
        };
        self.fail(ExprErrorKind::Syntax, t.col, msg)
    }

    /// "expected W, found X" for the current token; "unclosed `(`" (at the opening
    /// parenthesis `open`) if the current token is the end.
    #[cold]
    #[inline(never)]
    fn expected(&self, what: &str, open: Option<usize>) -> Box<ExprError> {
        match (self.tok(), open) {
            (Tok::Eof, Some(open)) => self.fail(
                ExprErrorKind::Syntax,
                self.toks[open].col,
                "unclosed `(`".to_owned(),
            ),
            _ => self.fail(
                ExprErrorKind::Syntax,
                self.col(),
                format!("expected {what}, found `{}`", shorten(self.text(self.pos))),
            ),
        }
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self, col: usize, limit: usize) -> Box<ExprError> {
        self.fail(
            ExprErrorKind::Syntax,
            col,
            format!("expression is nested too deeply (more than {limit} levels)"),
        )
    }

    #[cold]
    #[inline(never)]
    fn bad_name(&self, i: usize, kind: ExprErrorKind) -> Box<ExprError> {
        let name = self.text(i);
        let msg = match kind {
            ExprErrorKind::UnknownFunction => {
                format!(
                    "unknown function `{}` (known: {FUNCTION_NAMES})",
                    shorten(name)
                )
            }
            _ => format!("`{name}` is not supported"),
        };
        self.fail(kind, self.toks[i].col, msg)
    }

    #[cold]
    #[inline(never)]
    fn arity(&self, func: Func, n: usize, col: usize) -> Box<ExprError> {
        let msg = if func.is_variadic() {
            format!("`{}` takes at least 1 argument, got {n}", func.name())
        } else {
            format!("`{}` takes exactly 1 argument, got {n}", func.name())
        };
        self.fail(ExprErrorKind::Arity, col, msg)
    }

    fn node(&self, col: usize, kind: Kind) -> Fallible<Box<Node>> {
        let height = kind.child_height() + 1;
        if height > MAX_DEPTH {
            return Err(self.too_deep(col, MAX_DEPTH));
        }
        Ok(Box::new(Node { col, height, kind }))
    }

    fn parse_top(&mut self) -> Fallible<Box<Node>> {
        let node = self.parse_expr(0)?;
        if *self.tok() != Tok::Eof {
            return Err(self.unexpected(self.pos));
        }
        Ok(node)
    }

    /// The binary operator at the current token, if it binds at least at `min_prec`.
    fn binary_at(&self, min_prec: u8) -> Option<BinOp> {
        match self.tok() {
            Tok::Op(sym) => binary_op(*sym).filter(|op| op.precedence().0 >= min_prec),
            _ => None,
        }
    }

    fn parse_expr(&mut self, min_prec: u8) -> Fallible<Box<Node>> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return Err(self.too_deep(self.col(), MAX_PARSE_DEPTH));
        }
        let mut lhs = self.parse_unary()?;
        while let Some(op) = self.binary_at(min_prec) {
            let col = self.col();
            self.bump();
            lhs = if op.is_comparison() {
                self.parse_comparison(lhs, op, col)?
            } else {
                let (prec, right) = op.precedence();
                let rhs = self.parse_expr(if right { prec } else { prec + 1 })?;
                self.node(col, Kind::Binary(op, lhs, rhs))?
            };
        }
        if min_prec == 0 && *self.tok() == Tok::Question {
            lhs = self.parse_conditional(lhs)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// `c ? a : b`, right-associative (the `else` branch is a full expression).
    #[inline(never)]
    fn parse_conditional(&mut self, mut cond: Box<Node>) -> Fallible<Box<Node>> {
        while *self.tok() == Tok::Question {
            let q = self.col();
            self.bump();
            let then = self.parse_expr(0)?;
            match self.tok() {
                Tok::Colon => self.bump(),
                Tok::Eof => {
                    return Err(self.fail(
                        ExprErrorKind::Syntax,
                        q,
                        "`?` without matching `:`".to_owned(),
                    ))
                }
                _ => return Err(self.expected("`:`", None)),
            }
            let otherwise = self.parse_expr(0)?;
            cond = self.node(q, Kind::Cond(cond, then, otherwise))?;
        }
        Ok(cond)
    }

    /// `a < b <= c` becomes `(a < b) && (b <= c)`, as in expr-lang.
    #[inline(never)]
    fn parse_comparison(
        &mut self,
        lhs: Box<Node>,
        first: BinOp,
        first_col: usize,
    ) -> Fallible<Box<Node>> {
        let mut prev = lhs;
        let mut op = first;
        let mut col = first_col;
        let mut root: Option<Box<Node>> = None;
        loop {
            let rhs = self.parse_expr(PREC_COMPARISON + 1)?;
            let cmp = self.node(col, Kind::Binary(op, prev, rhs.clone()))?;
            root = Some(match root {
                None => cmp,
                Some(r) => self.node(col, Kind::Binary(BinOp::And, r, cmp))?,
            });
            prev = rhs;
            match self.binary_at(PREC_COMPARISON) {
                Some(next) if next.is_comparison() => {
                    op = next;
                    col = self.col();
                    self.bump();
                }
                _ => break,
            }
        }
        // `root` is always set by the first iteration.
        root.ok_or_else(|| self.unexpected(self.pos))
    }

    fn parse_unary(&mut self) -> Fallible<Box<Node>> {
        let (op, prec) = match self.tok() {
            Tok::Op(Sym::Minus) => (UnOp::Neg, PREC_NEG),
            Tok::Op(Sym::Plus) => (UnOp::Plus, PREC_NEG),
            Tok::Op(Sym::Bang) => (UnOp::Not, PREC_NOT),
            _ => return self.parse_primary(),
        };
        let col = self.col();
        self.bump();
        let operand = self.parse_expr(prec)?;
        self.node(col, Kind::Unary(op, operand))
    }

    fn parse_primary(&mut self) -> Fallible<Box<Node>> {
        let i = self.pos;
        let kind = match &self.toks[i].tok {
            Tok::Num(v) => Kind::Num(*v),
            Tok::Str(s) => Kind::Str(s.clone()),
            Tok::Bool(b) => Kind::Bool(*b),
            Tok::Ident => {
                self.bump();
                return if *self.tok() == Tok::LParen {
                    self.parse_call(i)
                } else {
                    self.parse_var(i)
                };
            }
            Tok::LParen => {
                self.bump();
                return self.parse_paren(i);
            }
            _ => return Err(self.unexpected(i)),
        };
        self.bump();
        self.node(self.toks[i].col, kind)
    }

    #[inline(never)]
    fn parse_paren(&mut self, open: usize) -> Fallible<Box<Node>> {
        let inner = self.parse_expr(0)?;
        if *self.tok() != Tok::RParen {
            return Err(self.expected("`)`", Some(open)));
        }
        self.bump();
        Ok(inner)
    }

    /// A variable; `i` is the name's token.
    #[inline(never)]
    fn parse_var(&mut self, i: usize) -> Fallible<Box<Node>> {
        let name = self.text(i);
        if matches!(name, "nil" | "let") {
            return Err(self.bad_name(i, ExprErrorKind::Syntax));
        }
        self.node(self.toks[i].col, Kind::Var(name.to_owned()))
    }

    /// A call; `name` is the name's token and the current token is `(`.
    #[inline(never)]
    fn parse_call(&mut self, name: usize) -> Fallible<Box<Node>> {
        let Some(func) = Func::from_name(self.text(name)) else {
            return Err(self.bad_name(name, ExprErrorKind::UnknownFunction));
        };
        let open = self.pos;
        self.bump();
        let mut args = Vec::new();
        loop {
            if *self.tok() == Tok::RParen {
                self.bump();
                break;
            }
            if !args.is_empty() {
                if *self.tok() != Tok::Comma {
                    return Err(self.expected("`,` or `)`", Some(open)));
                }
                self.bump();
                // A trailing comma is allowed, as in expr-lang.
                if *self.tok() == Tok::RParen {
                    self.bump();
                    break;
                }
            }
            args.push(*self.parse_expr(0)?);
        }
        let col = self.toks[name].col;
        let n = args.len();
        if (func.is_variadic() && n == 0) || (!func.is_variadic() && n != 1) {
            return Err(self.arity(func, n, col));
        }
        self.node(col, Kind::Call(func, args))
    }
}

fn binary_op(sym: Sym) -> Option<BinOp> {
    Some(match sym {
        Sym::Plus => BinOp::Add,
        Sym::Minus => BinOp::Sub,
        Sym::Star => BinOp::Mul,
        Sym::Slash => BinOp::Div,
        Sym::Percent => BinOp::Rem,
        Sym::Pow => BinOp::Pow,
        Sym::EqEq => BinOp::Eq,
        Sym::NotEq => BinOp::Ne,
        Sym::Lt => BinOp::Lt,
        Sym::Le => BinOp::Le,
        Sym::Gt => BinOp::Gt,
        Sym::Ge => BinOp::Ge,
        Sym::AndAnd => BinOp::And,
        Sym::OrOr => BinOp::Or,
        Sym::Bang => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Typing rules (shared by the static check and by evaluation's error messages)
// ---------------------------------------------------------------------------------------

type Ty = Option<ValueType>;

fn side_name(left: bool) -> &'static str {
    if left {
        "left"
    } else {
        "right"
    }
}

fn binary_rule(op: BinOp, l: Ty, r: Ty) -> Result<Ty, String> {
    use ValueType::{Bool, Number};
    let sym = op.symbol();
    match op {
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow => {
            for (left, t) in [(true, l), (false, r)] {
                if let Some(t) = t.filter(|t| *t != Number) {
                    return Err(format!(
                        "`{sym}` needs numbers, but its {} operand is a {t}",
                        side_name(left)
                    ));
                }
            }
            Ok(Some(Number))
        }
        BinOp::And | BinOp::Or => {
            for (left, t) in [(true, l), (false, r)] {
                if let Some(t) = t.filter(|t| *t != Bool) {
                    return Err(format!(
                        "`{sym}` needs booleans, but its {} operand is a {t}",
                        side_name(left)
                    ));
                }
            }
            Ok(Some(Bool))
        }
        BinOp::Add | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            for (left, t) in [(true, l), (false, r)] {
                if let Some(t) = t.filter(|t| *t == Bool) {
                    return Err(format!(
                        "`{sym}` needs numbers or strings, but its {} operand is a {t}",
                        side_name(left)
                    ));
                }
            }
            let verb = if op == BinOp::Add { "add" } else { "compare" };
            let known = match (l, r) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("`{sym}` cannot {verb} a {a} and a {b}"))
                }
                (Some(a), _) | (_, Some(a)) => Some(a),
                (None, None) => None,
            };
            Ok(if op == BinOp::Add { known } else { Some(Bool) })
        }
        BinOp::Eq | BinOp::Ne => match (l, r) {
            (Some(a), Some(b)) if a != b => Err(format!("`{sym}` cannot compare a {a} and a {b}")),
            _ => Ok(Some(Bool)),
        },
    }
}

fn unary_rule(op: UnOp, t: Ty) -> Result<Ty, String> {
    let want = if op == UnOp::Not {
        ValueType::Bool
    } else {
        ValueType::Number
    };
    match t {
        Some(t) if t != want => Err(format!(
            "`{}` needs a {want}, but its operand is a {t}",
            op.symbol()
        )),
        _ => Ok(Some(want)),
    }
}

fn arg_rule(func: Func, index: usize, t: Ty) -> Result<(), String> {
    match t {
        Some(ValueType::Number) | None => Ok(()),
        Some(ValueType::Str) if func.accepts_strings() => Ok(()),
        Some(t) => {
            let want = if func.accepts_strings() {
                "a number or a numeric string"
            } else {
                "a number"
            };
            Err(format!(
                "`{}` needs {want} as argument {}, got a {t}",
                func.name(),
                index + 1
            ))
        }
    }
}

fn cond_rule(t: Ty) -> Result<(), String> {
    match t {
        Some(t) if t != ValueType::Bool => Err(format!(
            "the condition before `?` must be a bool, got a {t}"
        )),
        _ => Ok(()),
    }
}

fn rule_message<T>(r: Result<T, String>) -> String {
    r.err().unwrap_or_else(|| "type error".to_owned())
}

// ---------------------------------------------------------------------------------------
// Expr
// ---------------------------------------------------------------------------------------

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

/// An evaluated value that borrows strings from the expression or the variables.
enum Val<'a> {
    Num(f64),
    Bool(bool),
    Str(Cow<'a, str>),
}

impl Val<'_> {
    fn ty(&self) -> ValueType {
        match self {
            Val::Num(_) => ValueType::Number,
            Val::Bool(_) => ValueType::Bool,
            Val::Str(_) => ValueType::Str,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Val::Num(n) => Value::Number(n),
            Val::Bool(b) => Value::Bool(b),
            Val::Str(s) => Value::Str(s.into_owned()),
        }
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
        let toks = lex(source)?;
        let mut p = Parser {
            src: source,
            toks,
            pos: 0,
            depth: 0,
        };
        let root = p.parse_top().map_err(|e| *e)?;
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

    /// Evaluates the expression.
    ///
    /// Arithmetic results are returned as they are, including `NaN` and infinities.
    ///
    /// # Errors
    ///
    /// [`ExprErrorKind::UnknownVariable`] for a variable not in `vars` (with its column) and
    /// [`ExprErrorKind::Type`] for an operator or function applied to the wrong type (with
    /// the operator's column). Only evaluated branches can fail.
    pub fn eval(&self, vars: &Variables) -> Result<Value, ExprError> {
        self.eval_root(vars).map(Val::into_value)
    }

    /// Evaluates the expression to a finite number.
    ///
    /// # Errors
    ///
    /// Those of [`Expr::eval`], plus [`ExprErrorKind::Type`] if the result is not a number,
    /// [`ExprErrorKind::NaN`] and [`ExprErrorKind::Infinite`] (no column).
    pub fn eval_number(&self, vars: &Variables) -> Result<f64, ExprError> {
        match self.eval_root(vars)? {
            Val::Num(n) if n.is_nan() => {
                Err(self.result_error(ExprErrorKind::NaN, "number", None, n))
            }
            Val::Num(n) if n.is_infinite() => {
                Err(self.result_error(ExprErrorKind::Infinite, "number", None, n))
            }
            Val::Num(n) => Ok(n),
            other => Err(self.result_error(ExprErrorKind::Type, "number", Some(other.ty()), 0.0)),
        }
    }

    /// Evaluates the expression to a boolean.
    ///
    /// # Errors
    ///
    /// Those of [`Expr::eval`], plus [`ExprErrorKind::Type`] (no column) if the result is
    /// not a boolean.
    pub fn eval_bool(&self, vars: &Variables) -> Result<bool, ExprError> {
        match self.eval_root(vars)? {
            Val::Bool(b) => Ok(b),
            other => Err(self.result_error(ExprErrorKind::Type, "bool", Some(other.ty()), 0.0)),
        }
    }

    /// Evaluates the expression to a machine count, as fly-autoscaler does: the result is
    /// rounded half away from zero (`2.5` → 3, `2.4` → 2, `-0.5` → 0) and negative results
    /// become 0. Results above [`MAX_MACHINE_COUNT`] saturate at it, logged at WARN with the
    /// expression and the value (target `fleetscale::expr`).
    ///
    /// ```
    /// use fleetscale_core::expr::{Expr, Variables, MAX_MACHINE_COUNT};
    /// let mut vars = Variables::new();
    /// vars.set_number("running", 1e300);
    /// let e = Expr::parse("running + 1").unwrap();
    /// assert_eq!(e.eval_count(&vars), Ok(MAX_MACHINE_COUNT));
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`Expr::eval_number`]: non-number result ([`ExprErrorKind::Type`]), `NaN`
    /// ([`ExprErrorKind::NaN`], e.g. `0 / 0`), infinity ([`ExprErrorKind::Infinite`], e.g.
    /// `1 / 0`).
    pub fn eval_count(&self, vars: &Variables) -> Result<u32, ExprError> {
        let n = self.eval_number(vars)?;
        let count = count_of(n);
        if count == MAX_MACHINE_COUNT && n.round() > f64::from(MAX_MACHINE_COUNT) {
            tracing::warn!(
                target: "fleetscale::expr",
                expression = %self.source,
                value = n,
                ceiling = MAX_MACHINE_COUNT,
                "machine count {n} of `{}` saturated at the ceiling of {MAX_MACHINE_COUNT}",
                self.source
            );
        }
        Ok(count)
    }

    /// Evaluates the root, unboxing the error.
    fn eval_root<'a>(&'a self, vars: &'a Variables) -> Result<Val<'a>, ExprError> {
        self.eval_node(&self.root, vars).map_err(|e| *e)
    }

    // The evaluator recurses through `eval_node` and one helper per node kind; every error
    // message is built in a `#[cold]` out-of-line function so the frames stay small.

    fn eval_node<'a>(&'a self, node: &'a Node, vars: &'a Variables) -> Fallible<Val<'a>> {
        match &node.kind {
            Kind::Num(n) => Ok(Val::Num(*n)),
            Kind::Bool(b) => Ok(Val::Bool(*b)),
            Kind::Str(s) => Ok(Val::Str(Cow::Borrowed(s))),
            Kind::Var(name) => match vars.get(name) {
                Some(Value::Number(n)) => Ok(Val::Num(*n)),
                Some(Value::Bool(b)) => Ok(Val::Bool(*b)),
                Some(Value::Str(s)) => Ok(Val::Str(Cow::Borrowed(s))),
                None => Err(self.unknown_variable(node)),
            },
            Kind::Unary(op, a) => self.eval_unary(node, *op, a, vars),
            Kind::Binary(op @ (BinOp::And | BinOp::Or), a, b) => {
                self.eval_logic(node, *op, a, b, vars)
            }
            Kind::Binary(op, a, b) => self.eval_binary(node, *op, a, b, vars),
            Kind::Cond(c, a, b) => self.eval_cond(node, c, a, b, vars),
            Kind::Call(func, args) => self.eval_call(node, *func, args, vars),
        }
    }

    #[inline(never)]
    fn eval_unary<'a>(
        &'a self,
        node: &Node,
        op: UnOp,
        a: &'a Node,
        vars: &'a Variables,
    ) -> Fallible<Val<'a>> {
        match (op, self.eval_node(a, vars)?) {
            (UnOp::Neg, Val::Num(n)) => Ok(Val::Num(-n)),
            (UnOp::Plus, Val::Num(n)) => Ok(Val::Num(n)),
            (UnOp::Not, Val::Bool(b)) => Ok(Val::Bool(!b)),
            (_, other) => Err(self.type_error(node.col, TypeError::Unary(op, other.ty()))),
        }
    }

    /// `&&` and `||`, short-circuiting.
    #[inline(never)]
    fn eval_logic<'a>(
        &'a self,
        node: &Node,
        op: BinOp,
        a: &'a Node,
        b: &'a Node,
        vars: &'a Variables,
    ) -> Fallible<Val<'a>> {
        let short = op == BinOp::Or;
        match self.eval_node(a, vars)? {
            Val::Bool(x) if x == short => Ok(Val::Bool(x)),
            Val::Bool(_) => match self.eval_node(b, vars)? {
                Val::Bool(y) => Ok(Val::Bool(y)),
                other => Err(self.type_error(
                    node.col,
                    TypeError::Binary(op, Some(ValueType::Bool), Some(other.ty())),
                )),
            },
            other => Err(self.type_error(node.col, TypeError::Binary(op, Some(other.ty()), None))),
        }
    }

    #[inline(never)]
    fn eval_binary<'a>(
        &'a self,
        node: &Node,
        op: BinOp,
        a: &'a Node,
        b: &'a Node,
        vars: &'a Variables,
    ) -> Fallible<Val<'a>> {
        let x = self.eval_node(a, vars)?;
        let y = self.eval_node(b, vars)?;
        let (tx, ty) = (x.ty(), y.ty());
        let result = match (x, y) {
            (Val::Num(x), Val::Num(y)) => num_binop(op, x, y),
            (Val::Str(x), Val::Str(y)) => str_binop(op, x, &y),
            (Val::Bool(x), Val::Bool(y)) => match op {
                BinOp::Eq => Some(Val::Bool(x == y)),
                BinOp::Ne => Some(Val::Bool(x != y)),
                _ => None,
            },
            _ => None,
        };
        result.ok_or_else(|| self.type_error(node.col, TypeError::Binary(op, Some(tx), Some(ty))))
    }

    #[inline(never)]
    fn eval_cond<'a>(
        &'a self,
        node: &Node,
        c: &'a Node,
        a: &'a Node,
        b: &'a Node,
        vars: &'a Variables,
    ) -> Fallible<Val<'a>> {
        match self.eval_node(c, vars)? {
            Val::Bool(true) => self.eval_node(a, vars),
            Val::Bool(false) => self.eval_node(b, vars),
            other => Err(self.type_error(node.col, TypeError::Cond(other.ty()))),
        }
    }

    #[inline(never)]
    fn eval_call<'a>(
        &'a self,
        node: &Node,
        func: Func,
        args: &'a [Node],
        vars: &'a Variables,
    ) -> Fallible<Val<'a>> {
        let mut acc: Option<f64> = None;
        for (i, arg) in args.iter().enumerate() {
            let x = match self.eval_node(arg, vars)? {
                Val::Num(x) => x,
                Val::Str(s) if func.accepts_strings() => match s.trim().parse::<f64>() {
                    Ok(x) => x,
                    Err(_) => return Err(self.type_error(node.col, TypeError::Convert(func, &s))),
                },
                other => return Err(self.type_error(node.col, TypeError::Arg(func, i, other.ty()))),
            };
            acc = Some(match (func, acc) {
                (Func::Min | Func::Max, Some(a)) if a.is_nan() || x.is_nan() => f64::NAN,
                (Func::Min, Some(a)) => {
                    if x < a {
                        x
                    } else {
                        a
                    }
                }
                (Func::Max, Some(a)) => {
                    if x > a {
                        x
                    } else {
                        a
                    }
                }
                (Func::Abs, _) => x.abs(),
                (Func::Ceil, _) => x.ceil(),
                (Func::Floor, _) => x.floor(),
                (Func::Round, _) => x.round(),
                (Func::Int, _) => x.trunc(),
                (Func::Float, _) | (Func::Min | Func::Max, None) => x,
            });
        }
        // Arity is checked at parse time, so there is always at least one argument.
        Ok(Val::Num(acc.unwrap_or(f64::NAN)))
    }

    #[cold]
    #[inline(never)]
    fn unknown_variable(&self, node: &Node) -> Box<ExprError> {
        let name = match &node.kind {
            Kind::Var(name) => name.as_str(),
            _ => "?",
        };
        Box::new(error(
            ExprErrorKind::UnknownVariable,
            Some(node.col),
            format!("unknown variable `{name}`"),
            &self.source,
        ))
    }

    #[cold]
    #[inline(never)]
    fn type_error(&self, col: usize, e: TypeError<'_>) -> Box<ExprError> {
        let msg = match e {
            TypeError::Unary(op, t) => rule_message(unary_rule(op, Some(t))),
            TypeError::Binary(op, l, r) => rule_message(binary_rule(op, l, r)),
            TypeError::Cond(t) => rule_message(cond_rule(Some(t))),
            TypeError::Arg(func, i, t) => rule_message(arg_rule(func, i, Some(t))),
            TypeError::Convert(func, s) => {
                format!(
                    "`{}` cannot convert '{}' to a number",
                    func.name(),
                    shorten(s)
                )
            }
        };
        Box::new(error(ExprErrorKind::Type, Some(col), msg, &self.source))
    }

    #[cold]
    #[inline(never)]
    fn result_error(
        &self,
        kind: ExprErrorKind,
        want: &str,
        got: Option<ValueType>,
        n: f64,
    ) -> ExprError {
        let msg = match (kind, got) {
            (ExprErrorKind::NaN, _) => "the result is NaN".to_owned(),
            (ExprErrorKind::Infinite, _) => format!("the result is infinite ({n})"),
            (_, Some(t)) => format!("the result must be a {want}, got a {t}"),
            (_, None) => format!("the result must be a {want}"),
        };
        error(kind, None, msg, &self.source)
    }
}

/// A run-time type error, formatted only when it happens.
enum TypeError<'a> {
    Unary(UnOp, ValueType),
    Binary(BinOp, Ty, Ty),
    Cond(ValueType),
    Arg(Func, usize, ValueType),
    Convert(Func, &'a str),
}

fn num_binop(op: BinOp, x: f64, y: f64) -> Option<Val<'static>> {
    Some(match op {
        BinOp::Add => Val::Num(x + y),
        BinOp::Sub => Val::Num(x - y),
        BinOp::Mul => Val::Num(x * y),
        BinOp::Div => Val::Num(x / y),
        BinOp::Rem => Val::Num(x % y),
        BinOp::Pow => Val::Num(x.powf(y)),
        BinOp::Eq => Val::Bool(x == y),
        BinOp::Ne => Val::Bool(x != y),
        BinOp::Lt => Val::Bool(x < y),
        BinOp::Le => Val::Bool(x <= y),
        BinOp::Gt => Val::Bool(x > y),
        BinOp::Ge => Val::Bool(x >= y),
        BinOp::And | BinOp::Or => return None,
    })
}

fn str_binop<'a>(op: BinOp, x: Cow<'a, str>, y: &str) -> Option<Val<'a>> {
    Some(match op {
        BinOp::Add => {
            let mut s = x.into_owned();
            s.push_str(y);
            Val::Str(Cow::Owned(s))
        }
        BinOp::Eq => Val::Bool(x == y),
        BinOp::Ne => Val::Bool(x != y),
        BinOp::Lt => Val::Bool(&*x < y),
        BinOp::Le => Val::Bool(&*x <= y),
        BinOp::Gt => Val::Bool(&*x > y),
        BinOp::Ge => Val::Bool(&*x >= y),
        _ => return None,
    })
}

/// The count rule of [`Expr::eval_count`] for a finite number.
fn count_of(n: f64) -> u32 {
    let r = n.round();
    if r <= 0.0 {
        0
    } else if r >= f64::from(MAX_MACHINE_COUNT) {
        MAX_MACHINE_COUNT
    } else {
        // In range and integral: the conversion is exact.
        r as u32
    }
}

fn visit_vars<'a>(node: &'a Node, f: &mut dyn FnMut(&'a str, usize)) {
    match &node.kind {
        Kind::Var(name) => f(name, node.col),
        Kind::Num(_) | Kind::Str(_) | Kind::Bool(_) => {}
        Kind::Unary(_, a) => visit_vars(a, f),
        Kind::Binary(_, a, b) => {
            visit_vars(a, f);
            visit_vars(b, f);
        }
        Kind::Cond(a, b, c) => {
            visit_vars(a, f);
            visit_vars(b, f);
            visit_vars(c, f);
        }
        Kind::Call(_, args) => args.iter().for_each(|a| visit_vars(a, f)),
    }
}

/// A static type error: the column and the message. Boxed to keep `infer`'s frames small.
type TypeFail = Box<(usize, String)>;

#[cold]
#[inline(never)]
fn type_fail(col: usize, msg: String) -> TypeFail {
    Box::new((col, msg))
}

/// The static type of `node` (`None` when it depends on variables of unknown type).
fn infer(node: &Node, type_of: &dyn Fn(&str) -> Option<ValueType>) -> Result<Ty, TypeFail> {
    let rule = match &node.kind {
        Kind::Num(_) => return Ok(Some(ValueType::Number)),
        Kind::Str(_) => return Ok(Some(ValueType::Str)),
        Kind::Bool(_) => return Ok(Some(ValueType::Bool)),
        Kind::Var(name) => return Ok(type_of(name)),
        Kind::Unary(op, a) => {
            let t = infer(a, type_of)?;
            unary_rule(*op, t)
        }
        Kind::Binary(op, a, b) => {
            let l = infer(a, type_of)?;
            let r = infer(b, type_of)?;
            binary_rule(*op, l, r)
        }
        Kind::Cond(c, a, b) => return infer_cond(node, c, a, b, type_of),
        Kind::Call(func, args) => return infer_call(node, *func, args, type_of),
    };
    rule.map_err(|m| type_fail(node.col, m))
}

#[inline(never)]
fn infer_cond(
    node: &Node,
    c: &Node,
    a: &Node,
    b: &Node,
    type_of: &dyn Fn(&str) -> Option<ValueType>,
) -> Result<Ty, TypeFail> {
    let ct = infer(c, type_of)?;
    cond_rule(ct).map_err(|m| type_fail(node.col, m))?;
    let x = infer(a, type_of)?;
    let y = infer(b, type_of)?;
    Ok(if x == y { x } else { None })
}

#[inline(never)]
fn infer_call(
    node: &Node,
    func: Func,
    args: &[Node],
    type_of: &dyn Fn(&str) -> Option<ValueType>,
) -> Result<Ty, TypeFail> {
    for (i, arg) in args.iter().enumerate() {
        let t = infer(arg, type_of)?;
        arg_rule(func, i, t).map_err(|m| type_fail(node.col, m))?;
    }
    Ok(Some(ValueType::Number))
}

fn write_canonical(node: &Node, out: &mut String) {
    use std::fmt::Write as _;
    match &node.kind {
        Kind::Num(n) => {
            // Literals are finite and non-negative; `{:?}` is the shortest round-trip form
            // and always lexes as a number literal (`2.0`, `1e16`, `1e-7`).
            let _ = write!(out, "{n:?}");
        }
        Kind::Str(s) => {
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
        Kind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Kind::Var(name) => out.push_str(name),
        Kind::Unary(op, a) => {
            out.push('(');
            out.push_str(op.symbol());
            write_canonical(a, out);
            out.push(')');
        }
        Kind::Binary(op, a, b) => {
            out.push('(');
            write_canonical(a, out);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_canonical(b, out);
            out.push(')');
        }
        Kind::Cond(c, a, b) => {
            out.push('(');
            write_canonical(c, out);
            out.push_str(" ? ");
            write_canonical(a, out);
            out.push_str(" : ");
            write_canonical(b, out);
            out.push(')');
        }
        Kind::Call(func, args) => {
            out.push_str(func.name());
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_canonical(a, out);
            }
            out.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, f64)]) -> Variables {
        let mut v = Variables::new();
        for (k, n) in pairs {
            v.set_number(*k, *n);
        }
        v
    }

    fn eval(src: &str) -> Value {
        let mut v = vars(&[("x", 3.0), ("y", 4.0), ("zero", 0.0)]);
        v.set_str("app_name", "my-app");
        v.set_bool("flag", true);
        Expr::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(&v)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn num(src: &str) -> f64 {
        match eval(src) {
            Value::Number(n) => n,
            other => panic!("{src}: expected a number, got {other:?}"),
        }
    }

    fn boolean(src: &str) -> bool {
        match eval(src) {
            Value::Bool(b) => b,
            other => panic!("{src}: expected a bool, got {other:?}"),
        }
    }

    fn canon(src: &str) -> String {
        Expr::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .to_canonical_string()
    }

    fn parse_err(src: &str) -> ExprError {
        match Expr::parse(src) {
            Ok(e) => panic!(
                "{src}: expected an error, parsed as {}",
                e.to_canonical_string()
            ),
            Err(e) => e,
        }
    }

    fn eval_err(src: &str, v: &Variables) -> ExprError {
        let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        match e.eval(v) {
            Ok(val) => panic!("{src}: expected an error, got {val:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn assert_err(e: &ExprError, kind: ExprErrorKind, column: Option<usize>) {
        assert_eq!((e.kind, e.column), (kind, column), "{e}");
    }

    #[test]
    fn literals() {
        for (src, want) in [
            ("10", 10.0),
            ("2.5", 2.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("1.5e+2", 150.0),
            ("2.5e-1", 0.25),
            ("1_000", 1000.0),
            ("1_000.000_1", 1000.0001),
            ("0", 0.0),
            ("007", 7.0),
        ] {
            assert_eq!(num(src), want, "{src}");
        }
        assert_eq!(eval("'abc'"), Value::Str("abc".into()));
        assert_eq!(eval("\"abc\""), Value::Str("abc".into()));
        assert_eq!(
            eval(r#"'a\'b\"c\\d\ne\tf\rg'"#),
            Value::Str("a'b\"c\\d\ne\tf\rg".into())
        );
        assert_eq!(eval(r#""it's""#), Value::Str("it's".into()));
        assert_eq!(eval("'héllo ✓'"), Value::Str("héllo ✓".into()));
        assert_eq!(eval("''"), Value::Str(String::new()));
        assert_eq!(eval("true"), Value::Bool(true));
        assert_eq!(eval("false"), Value::Bool(false));
        assert_eq!(eval("  x\t\n"), Value::Number(3.0));
    }

    #[test]
    fn arithmetic_operators() {
        for (src, want) in [
            ("1 + 2", 3.0),
            ("5 - 7", -2.0),
            ("3 * 4", 12.0),
            ("7 / 2", 3.5),
            ("7 % 3", 1.0),
            ("-7 % 3", -1.0),
            ("7 % -3", 1.0),
            ("7.5 % 2", 1.5),
            ("2 ** 10", 1024.0),
            ("2 ^ 10", 1024.0),
            ("4 ** 0.5", 2.0),
            ("2 ** -1", 0.5),
            ("-x", -3.0),
            ("+x", 3.0),
            ("--x", 3.0),
            ("- - x", 3.0),
            ("x+y", 7.0),
            ("x + y + 2", 9.0),
        ] {
            assert_eq!(num(src), want, "{src}");
        }
    }

    #[test]
    fn precedence_and_associativity() {
        for (src, want) in [
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("10 - 4 - 3", 3.0),
            ("10 - (4 - 3)", 9.0),
            ("64 / 4 / 2", 8.0),
            ("2 * 3 % 4", 2.0),
            ("2 ** 3 ** 2", 512.0),
            ("(2 ** 3) ** 2", 64.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("-2 ** 2", -4.0),
            ("(-2) ** 2", 4.0),
            ("2 ** -2 ** 2", 0.0625),
            ("-3 * 2", -6.0),
            ("2 * -3", -6.0),
            ("2 * 3 ** 2", 18.0),
            ("1 + 2 ** 2 * 3", 13.0),
            ("1 - -1", 2.0),
            ("10 / 2 * 5", 25.0),
        ] {
            assert_eq!(num(src), want, "{src}");
        }
        for (src, want) in [
            ("1 + 2 * 3", "(1.0 + (2.0 * 3.0))"),
            ("-2 ** 2", "(-(2.0 ** 2.0))"),
            ("-x * y", "((-x) * y)"),
            ("!a || b", "((!a) || b)"),
            ("not a == b", "((!a) == b)"),
            ("a || b && c", "(a || (b && c))"),
            ("a or b and c", "(a || (b && c))"),
            ("a && b || c", "((a && b) || c)"),
            ("a == b && c != d", "((a == b) && (c != d))"),
            ("a + 1 < b * 2", "((a + 1.0) < (b * 2.0))"),
            ("a ? b : c ? d : e", "(a ? b : (c ? d : e))"),
            ("a ? b ? c : d : e", "(a ? (b ? c : d) : e)"),
            ("a || b ? 1 : 2", "((a || b) ? 1.0 : 2.0)"),
            (
                "x > 1 ? x + 1 : x - 1",
                "((x > 1.0) ? (x + 1.0) : (x - 1.0))",
            ),
            ("1 < x < 3", "((1.0 < x) && (x < 3.0))"),
            ("1 < x <= y == z", "(((1.0 < x) && (x <= y)) && (y == z))"),
            ("2 ^ 3 ** 2", "(2.0 ** (3.0 ** 2.0))"),
            ("min(x, 1) + max(2, y,)", "(min(x, 1.0) + max(2.0, y))"),
            ("'it\\'s' + \"a\\nb\"", "('it\\'s' + 'a\\nb')"),
            ("1e16 + 1e-7", "(1e16 + 1e-7)"),
        ] {
            assert_eq!(canon(src), want, "{src}");
        }
    }

    #[test]
    fn comparisons_and_logic() {
        for (src, want) in [
            ("1 < 2", true),
            ("2 < 1", false),
            ("2 <= 2", true),
            ("3 > 2", true),
            ("2 >= 3", false),
            ("2 == 2.0", true),
            ("2 != 2", false),
            ("0 / 0 == 0 / 0", false),
            ("0 / 0 != 0 / 0", true),
            ("1 / 0 > 1e308", true),
            ("app_name == 'my-app'", true),
            ("app_name == \"other\"", false),
            ("app_name != 'other'", true),
            ("'a' < 'b'", true),
            ("'b' <= 'a'", false),
            ("'abc' > 'abd'", false),
            ("true == true", true),
            ("true != false", true),
            ("flag == true", true),
            ("true && false", false),
            ("true and true", true),
            ("false || true", true),
            ("false or false", false),
            ("!true", false),
            ("not false", true),
            ("!!true", true),
            ("1 < x < 4", true),
            ("1 < x < 3", false),
            ("x == 3 && y == 4", true),
        ] {
            assert_eq!(boolean(src), want, "{src}");
        }
        // Short-circuit: the right side is never evaluated (it would be an unknown variable).
        assert!(!boolean("false && missing > 1"));
        assert!(boolean("true || missing > 1"));
        assert_eq!(num("true ? 1 : missing"), 1.0);
        assert_eq!(num("false ? missing : 2"), 2.0);
    }

    #[test]
    fn strings() {
        assert_eq!(
            eval("'my' + '-' + app_name"),
            Value::Str("my-my-app".into())
        );
        assert_eq!(eval("flag ? app_name : 'x'"), Value::Str("my-app".into()));
    }

    #[test]
    fn functions() {
        for (src, want) in [
            ("min(3)", 3.0),
            ("min(3, 1, 2)", 1.0),
            ("max(3, 1, 2)", 3.0),
            ("max(-1, -2)", -1.0),
            ("min(x, y)", 3.0),
            ("max(x, y)", 4.0),
            ("abs(-2.5)", 2.5),
            ("abs(2)", 2.0),
            ("ceil(2.1)", 3.0),
            ("ceil(-2.1)", -2.0),
            ("floor(2.9)", 2.0),
            ("floor(-2.1)", -3.0),
            ("round(2.5)", 3.0),
            ("round(2.4)", 2.0),
            ("round(-2.5)", -3.0),
            ("round(-0.4)", 0.0),
            ("int(2.9)", 2.0),
            ("int(-2.9)", -2.0),
            ("int('42')", 42.0),
            ("int(' 2.5 ')", 2.0),
            ("float(2.5)", 2.5),
            ("float('2.5')", 2.5),
            ("min(max(x, 1), 2)", 2.0),
            ("ceil(x / 2)", 2.0),
        ] {
            assert_eq!(num(src), want, "{src}");
        }
        assert!(num("min(1, 0 / 0, 2)").is_nan());
        assert!(num("max(0 / 0, 1)").is_nan());
        assert!(num("max(1, 0 / 0)").is_nan());
        // A variable may be called like a function name when not followed by `(`.
        let mut v = Variables::new();
        v.set_number("min", 5.0);
        assert_eq!(
            Expr::parse("min + min(1, 2)").unwrap().eval(&v),
            Ok(Value::Number(6.0))
        );
    }

    #[test]
    fn fly_autoscaler_cases() {
        let count = |src: &str, v: &Variables| Expr::parse(src).unwrap().eval_count(v);
        let none = Variables::new();
        assert_eq!(count("2", &none), Ok(2));
        assert_eq!(count("2.6", &none), Ok(3));
        assert_eq!(count("2.5", &none), Ok(3));
        assert_eq!(count("2.4", &none), Ok(2));
        assert_eq!(count("-0.5", &none), Ok(0));
        assert_eq!(count("-2", &none), Ok(0));
        assert_eq!(count("x + y + 2", &vars(&[("x", 3.0), ("y", 4.0)])), Ok(9));
        assert_eq!(count("min(x, y)", &vars(&[("x", 3.0), ("y", 4.0)])), Ok(3));
        assert_eq!(count("max(x, y)", &vars(&[("x", 3.0), ("y", 4.0)])), Ok(4));
        // Counts saturate at the documented ceiling.
        assert_eq!(count("1e12", &none), Ok(MAX_MACHINE_COUNT));
        assert_eq!(count("1e300", &none), Ok(MAX_MACHINE_COUNT));
        assert_eq!(count("10000.4", &none), Ok(MAX_MACHINE_COUNT));
        assert_eq!(count("9999.4", &none), Ok(MAX_MACHINE_COUNT - 1));
        assert_err(&count("0/0", &none).unwrap_err(), ExprErrorKind::NaN, None);
        assert_err(
            &count("1 / 0", &none).unwrap_err(),
            ExprErrorKind::Infinite,
            None,
        );
        assert_err(
            &count("-1 / 0", &none).unwrap_err(),
            ExprErrorKind::Infinite,
            None,
        );
        assert_err(
            &count("1 > 0", &none).unwrap_err(),
            ExprErrorKind::Type,
            None,
        );
        assert_err(&count("'3'", &none).unwrap_err(), ExprErrorKind::Type, None);
        let blueprint = Expr::parse("min(running_machines + 1, 10)").unwrap();
        for (running, want) in [(0.0, 1), (1.0, 2), (9.0, 10), (10.0, 10), (20.0, 10)] {
            assert_eq!(
                blueprint.eval_count(&vars(&[("running_machines", running)])),
                Ok(want),
                "{running}"
            );
        }
    }

    #[test]
    fn eval_number_and_bool() {
        let none = Variables::new();
        assert_eq!(Expr::parse("1.5 * 2").unwrap().eval_number(&none), Ok(3.0));
        assert_err(
            &Expr::parse("0 / 0")
                .unwrap()
                .eval_number(&none)
                .unwrap_err(),
            ExprErrorKind::NaN,
            None,
        );
        assert_eq!(Expr::parse("1 < 2").unwrap().eval_bool(&none), Ok(true));
        assert_err(
            &Expr::parse("1").unwrap().eval_bool(&none).unwrap_err(),
            ExprErrorKind::Type,
            None,
        );
    }

    #[test]
    fn variables_and_checks() {
        let e = Expr::parse("max(b, a) + b * c - min(a, 1)").unwrap();
        assert_eq!(e.variables(), vec!["a", "b", "c"]);
        assert_eq!(e.source(), "max(b, a) + b * c - min(a, 1)");
        assert_eq!(e.to_string(), e.source());
        assert!(e.check_variables(&|n| ["a", "b", "c"].contains(&n)).is_ok());
        // First unknown in source order, with its column.
        let err = e.check_variables(&|n| n == "a").unwrap_err();
        assert_err(&err, ExprErrorKind::UnknownVariable, Some(5));
        assert!(err.message.contains("`b`"), "{err}");
        let err = e.check_variables(&|n| n != "c").unwrap_err();
        assert_err(&err, ExprErrorKind::UnknownVariable, Some(17));
        assert!(Expr::parse("1 + 2").unwrap().variables().is_empty());
        // Unknown variable at evaluation.
        let err = eval_err("1 + nope", &Variables::new());
        assert_err(&err, ExprErrorKind::UnknownVariable, Some(5));
        // Columns are characters, not bytes.
        let err = Expr::parse("'é✓' == n")
            .unwrap()
            .check_variables(&|_| false)
            .unwrap_err();
        assert_err(&err, ExprErrorKind::UnknownVariable, Some(9));
    }

    #[test]
    fn variables_type() {
        let mut v: Variables = [("a", Value::Number(1.0)), ("b", Value::from("x"))]
            .into_iter()
            .collect();
        v.extend([("c", Value::Bool(true))]);
        assert_eq!(v.len(), 3);
        assert!(!v.is_empty());
        assert_eq!(v.names().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_eq!(v.get("b").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get("a").and_then(Value::as_number), Some(1.0));
        assert_eq!(v.get("c").and_then(Value::as_bool), Some(true));
        assert_eq!(v.iter().count(), 3);
        assert_eq!(v.remove("a"), Some(Value::Number(1.0)));
        assert!(!v.contains("a"));
        assert_eq!(Value::from(2.5).to_string(), "2.5");
        assert_eq!(Value::Str("s".into()).value_type().to_string(), "string");
    }

    #[test]
    fn syntax_errors_have_columns() {
        for (src, kind, col) in [
            ("min(x +, 2)", ExprErrorKind::Syntax, 8),
            ("mn(1,2)", ExprErrorKind::UnknownFunction, 1),
            ("1 + foo(2)", ExprErrorKind::UnknownFunction, 5),
            ("abs(1, 2)", ExprErrorKind::Arity, 1),
            ("1 + min()", ExprErrorKind::Arity, 5),
            ("round()", ExprErrorKind::Arity, 1),
            ("(1 + 2", ExprErrorKind::Syntax, 1),
            ("2 * (1 + (2 - 3)", ExprErrorKind::Syntax, 5),
            ("min(1, 2", ExprErrorKind::Syntax, 4),
            ("(1 + 2 3)", ExprErrorKind::Syntax, 8),
            ("1 + 2 3", ExprErrorKind::Syntax, 7),
            ("1 + 2)", ExprErrorKind::Syntax, 6),
            ("x y", ExprErrorKind::Syntax, 3),
            ("1 +", ExprErrorKind::Syntax, 4),
            ("*2", ExprErrorKind::Syntax, 1),
            ("()", ExprErrorKind::Syntax, 2),
            ("min(1 2)", ExprErrorKind::Syntax, 7),
            ("min(,1)", ExprErrorKind::Syntax, 5),
            ("min(1,,2)", ExprErrorKind::Syntax, 7),
            ("a ? b", ExprErrorKind::Syntax, 3),
            ("a ? b c", ExprErrorKind::Syntax, 7),
            ("a : b", ExprErrorKind::Syntax, 3),
            ("x = 1", ExprErrorKind::Syntax, 3),
            ("x & y", ExprErrorKind::Syntax, 3),
            ("x | y", ExprErrorKind::Syntax, 3),
            ("1 # 2", ExprErrorKind::Syntax, 3),
            ("é + 1", ExprErrorKind::Syntax, 1),
            ("'é' + #", ExprErrorKind::Syntax, 7),
            ("'abc", ExprErrorKind::Syntax, 1),
            ("1 + \"abc", ExprErrorKind::Syntax, 5),
            ("'a\\qb'", ExprErrorKind::Syntax, 3),
            ("1e", ExprErrorKind::Syntax, 1),
            ("2 + 1e+", ExprErrorKind::Syntax, 5),
            ("12abc", ExprErrorKind::Syntax, 1),
            ("1.2.3", ExprErrorKind::Syntax, 1),
            ("1e999", ExprErrorKind::Syntax, 1),
            ("nil", ExprErrorKind::Syntax, 1),
            ("true(1)", ExprErrorKind::Syntax, 5),
            ("x.y", ExprErrorKind::Syntax, 2),
            ("x[0]", ExprErrorKind::Syntax, 2),
        ] {
            let e = parse_err(src);
            assert_eq!((e.kind, e.column), (kind, Some(col)), "{src}: {e}");
            assert_eq!(e.expression, src);
        }
    }

    #[test]
    fn error_display() {
        let e = parse_err("min(x +, 2)");
        assert_eq!(
            e.to_string(),
            "expression `min(x +, 2)`: unexpected `,` (column 8)"
        );
        let e = parse_err("mn(1,2)");
        assert!(
            e.to_string()
                .starts_with("expression `mn(1,2)`: unknown function `mn`"),
            "{e}"
        );
        let e = parse_err("(1 + 2");
        assert_eq!(
            e.to_string(),
            "expression `(1 + 2`: unclosed `(` (column 1)"
        );
        let e = Expr::parse("1/0")
            .unwrap()
            .eval_count(&Variables::new())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "expression `1/0`: the result is infinite (inf)"
        );
    }

    #[test]
    fn empty() {
        for src in ["", " ", "\t\n  "] {
            assert_err(&parse_err(src), ExprErrorKind::Empty, None);
        }
    }

    #[test]
    fn nesting_limit() {
        let ok = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(
            Expr::parse(&ok(2 * MAX_DEPTH))
                .unwrap()
                .eval(&Variables::new()),
            Ok(Value::Number(1.0))
        );
        let e = parse_err(&ok(2 * MAX_DEPTH + 1));
        assert_err(&e, ExprErrorKind::Syntax, Some(2 * MAX_DEPTH + 2));
        assert!(e.message.contains("nested too deeply"), "{e}");
        let e = parse_err(&ok(100_000));
        assert_eq!(e.kind, ExprErrorKind::Syntax);
        // Prefix chains, power chains, long left-associative chains and nested calls.
        let neg = |n: usize| format!("{}1", "-".repeat(n));
        assert_eq!(
            Expr::parse(&neg(MAX_DEPTH - 1))
                .unwrap()
                .eval(&Variables::new()),
            Ok(Value::Number(-1.0))
        );
        assert_eq!(parse_err(&neg(MAX_DEPTH)).kind, ExprErrorKind::Syntax);
        assert_eq!(parse_err(&neg(100_000)).kind, ExprErrorKind::Syntax);
        let pow = |n: usize| vec!["1"; n].join("**");
        assert!(Expr::parse(&pow(MAX_DEPTH / 2)).is_ok());
        assert_eq!(parse_err(&pow(100_000)).kind, ExprErrorKind::Syntax);
        let sum = |n: usize| vec!["1"; n].join("+");
        assert_eq!(
            Expr::parse(&sum(MAX_DEPTH))
                .unwrap()
                .eval(&Variables::new()),
            Ok(Value::Number(MAX_DEPTH as f64))
        );
        let e = parse_err(&sum(MAX_DEPTH + 1));
        // The column is the `+` that made the tree too deep: the last one.
        assert_err(&e, ExprErrorKind::Syntax, Some(2 * MAX_DEPTH));
        assert_eq!(parse_err(&sum(100_000)).kind, ExprErrorKind::Syntax);
        let calls = |n: usize| format!("{}1{}", "abs(".repeat(n), ")".repeat(n));
        assert!(Expr::parse(&calls(MAX_DEPTH - 1)).is_ok());
        assert_eq!(parse_err(&calls(100_000)).kind, ExprErrorKind::Syntax);
        let conds = |n: usize| format!("{}1", "true ? 1 : ".repeat(n));
        assert!(Expr::parse(&conds(MAX_DEPTH - 1)).is_ok());
        assert_eq!(parse_err(&conds(100_000)).kind, ExprErrorKind::Syntax);
        // Many arguments are not nesting.
        let args = format!("max({})", vec!["1"; 10_000].join(", "));
        assert_eq!(
            Expr::parse(&args).unwrap().eval_count(&Variables::new()),
            Ok(1)
        );
    }

    #[test]
    fn static_type_errors() {
        for (src, col) in [
            ("'a' - 1", 5),
            ("1 + true", 3),
            ("1 + 'a'", 3),
            ("1 && 2", 3),
            ("true || 0", 6),
            ("!1", 1),
            ("-'a'", 1),
            ("min(1, true)", 1),
            ("int(false)", 1),
            ("1 ? 2 : 3", 3),
            ("1 == 'a'", 3),
            ("true < false", 6),
            ("'a' < 1", 5),
            ("1 < 2 < 'a'", 7),
            ("x > 1 == true", 7),
            ("(x > 1) + 1", 9),
            ("false && 'a' > 1", 14),
            ("!x * y", 1),
        ] {
            let e = parse_err(src);
            assert_eq!(
                (e.kind, e.column),
                (ExprErrorKind::Type, Some(col)),
                "{src}: {e}"
            );
        }
        // With variable types.
        let e = Expr::parse("app_name + 1").unwrap();
        let types = |n: &str| match n {
            "app_name" => Some(ValueType::Str),
            _ => Some(ValueType::Number),
        };
        assert_err(
            &e.check_types(&types).unwrap_err(),
            ExprErrorKind::Type,
            Some(10),
        );
        let e = Expr::parse("app_name == 'x' ? y : 0").unwrap();
        assert!(e.check_types(&types).is_ok());
        assert_eq!(e.result_type(&types), Some(ValueType::Number));
        assert_eq!(e.result_type(&|_| None), None);
        assert_eq!(Expr::parse("x").unwrap().result_type(&|_| None), None);
        assert_eq!(
            Expr::parse("c ? 1 : 'a'").unwrap().result_type(&|_| None),
            None
        );
        assert_eq!(
            Expr::parse("'a' + x").unwrap().result_type(&|_| None),
            Some(ValueType::Str)
        );
    }

    #[test]
    fn runtime_type_errors() {
        let mut v = vars(&[("n", 1.0)]);
        v.set_str("s", "text");
        v.set_bool("b", true);
        for (src, col) in [
            ("s - 1", 3),
            ("n + s", 3),
            ("n + b", 3),
            ("s * 2", 3),
            ("n && b", 3),
            ("b && n", 3),
            ("!b || n", 4),
            ("false || n", 7),
            ("!n", 1),
            ("-s", 1),
            ("+b", 1),
            ("n ? 1 : 2", 3),
            ("n == s", 3),
            ("b < b", 3),
            ("s > n", 3),
            ("min(1, s)", 1),
            ("abs(b)", 1),
            ("int(s)", 1),
            ("float(b)", 1),
            ("1 + (2 * s)", 8),
        ] {
            let e = eval_err(src, &v);
            assert_eq!(
                (e.kind, e.column),
                (ExprErrorKind::Type, Some(col)),
                "{src}: {e}"
            );
        }
        assert!(eval_err("n + s", &v)
            .message
            .contains("number and a string"));
        assert!(eval_err("int(s)", &v).message.contains("'text'"));
    }

    #[test]
    fn canonical_round_trip() {
        for src in [
            "min(running_machines + 1, 10)",
            "a ? b : c ? d : e",
            "-2 ** 2 * -x % 3",
            "not a and b or !c",
            "'x\\\\y' + \"q\\\"\" == s",
            "(1 < x <= 3) != false",
            ".5 + 1_000 + 1e300 + 1e-300",
        ] {
            let c = canon(src);
            assert_eq!(canon(&c), c, "{src}");
            let a = Expr::parse(src).unwrap();
            let b = Expr::parse(&c).unwrap();
            let mut v = vars(&[("running_machines", 3.0), ("x", 2.0)]);
            v.set_bool("a", true);
            for n in ["b", "c", "d", "e"] {
                v.set_bool(n, false);
            }
            v.set_str("s", "x\\yq\"");
            assert_eq!(a.eval(&v), b.eval(&v), "{src}");
        }
    }

    #[test]
    fn serde() {
        let e: Expr = serde_json::from_str("\"min(x, 2)\"").unwrap();
        assert_eq!(e.source(), "min(x, 2)");
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"min(x, 2)\"");
        let e: Expr = serde_json::from_str("3").unwrap();
        assert_eq!(e.eval_count(&Variables::new()), Ok(3));
        let e: Expr = serde_json::from_str("-2").unwrap();
        assert_eq!(e.eval_number(&Variables::new()), Ok(-2.0));
        let e: Expr = serde_json::from_str("2.5").unwrap();
        assert_eq!(e.eval_number(&Variables::new()), Ok(2.5));
        let err = serde_json::from_str::<Expr>("\"mn(1)\"").unwrap_err();
        assert!(err.to_string().contains("unknown function `mn`"), "{err}");
        assert!(serde_json::from_str::<Expr>("\"\"").is_err());
        assert!(serde_json::from_str::<Expr>("true").is_err());
        assert_eq!("x".parse::<Expr>().unwrap(), Expr::try_from("x").unwrap());
        assert_eq!(format!("{:?}", Expr::parse("x").unwrap()), "Expr(\"x\")");
    }
}

#[cfg(test)]
mod stack {
    use super::*;

    /// The deepest accepted expressions of every shape (and much deeper rejected ones) are
    /// parsed, checked, evaluated, printed, re-parsed, cloned and dropped on a thread with a
    /// 1 MiB stack, half the default. Measured in a debug build: this needs between 384 and
    /// 512 KiB (the recursive functions keep small frames; see `Fallible`).
    #[test]
    fn deepest_expressions_fit_in_a_small_stack() {
        let run = || {
            let d = MAX_DEPTH - 1;
            let inputs = [
                format!(
                    "{}1{}",
                    "(".repeat(2 * MAX_DEPTH),
                    ")".repeat(2 * MAX_DEPTH)
                ),
                format!("{}1", "-".repeat(d)),
                format!("{}1", "!".repeat(d)).replace("!1", "!true"),
                format!("{}1{}", "abs(".repeat(d), ")".repeat(d)),
                format!("{}1", "true ? 1 : ".repeat(d)),
                vec!["2"; MAX_DEPTH / 2].join(" ** "),
                vec!["1"; MAX_DEPTH].join(" + "),
                format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
                format!("{}1", "-".repeat(100_000)),
            ];
            let mut parsed = 0;
            for s in &inputs {
                if let Ok(e) = Expr::parse(s) {
                    parsed += 1;
                    assert!(e.eval(&Variables::new()).is_ok(), "{}", &s[..20]);
                    assert!(e.check_types(&|_| None).is_ok());
                    assert!(e.check_variables(&|_| false).is_ok());
                    assert!(e.variables().is_empty());
                    let c = e.to_canonical_string();
                    assert_eq!(Expr::parse(&c).map(|x| x.to_canonical_string()), Ok(c));
                    assert_eq!(e.clone(), e);
                }
            }
            parsed
        };
        let parsed = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(run)
            .expect("spawn")
            .join()
            .expect("no panic");
        assert_eq!(parsed, 7);
    }
}
