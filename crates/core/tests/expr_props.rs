//! Property tests of the expression language (`fleetscale_core::expr`).
//!
//! - Parsing never panics on arbitrary strings or token soups, and error columns are
//!   1-based character positions that point at a token (never at whitespace) or just past
//!   the end.
//! - Random well-typed syntax trees, printed fully parenthesised and with minimal
//!   parentheses (using the documented precedence table and random operator spellings),
//!   parse back to the same tree and evaluate to what an independent reference evaluator
//!   computes.
//! - The canonical form round-trips and evaluates like the original.
//! - `eval_count` follows the rounding rule and is never negative.

use fleetscale_core::expr::{Expr, ExprError, ExprErrorKind, Value, Variables, MAX_MACHINE_COUNT};
use proptest::prelude::*;

const VAR_NAMES: [&str; 4] = ["x", "y", "running_machines", "queue_depth"];

/// A numeric syntax tree.
#[derive(Clone, Debug)]
enum N {
    Lit(f64),
    Var(usize),
    Neg(Box<N>),
    Plus(Box<N>),
    /// Operator, alternative spelling (`^` for `**`), operands.
    Bin(Op, bool, Box<N>, Box<N>),
    Call(Func, Vec<N>),
    Cond(Box<B>, Box<N>, Box<N>),
}

/// A boolean syntax tree.
#[derive(Clone, Debug)]
enum B {
    Lit(bool),
    Cmp(Cmp, Box<N>, Box<N>),
    /// Alternative spelling (`and` for `&&`).
    And(bool, Box<B>, Box<B>),
    Or(bool, Box<B>, Box<B>),
    Not(bool, Box<B>),
}

/// An arithmetic operator: its spellings, its precedence in the documented table
/// (expr-lang's numbers), its associativity and its meaning.
#[derive(Clone, Copy, Debug)]
struct Op {
    symbol: &'static str,
    /// The alternative spelling (`^` for `**`; the same symbol where there is none).
    alt_symbol: &'static str,
    precedence: u8,
    right_assoc: bool,
    apply: fn(f64, f64) -> f64,
}

/// Every arithmetic operator of the language.
const OPERATORS: [Op; 6] = [
    Op::left("+", 30, |x, y| x + y),
    Op::left("-", 30, |x, y| x - y),
    Op::left("*", 60, |x, y| x * y),
    Op::left("/", 60, |x, y| x / y),
    Op::left("%", 60, |x, y| x % y),
    Op {
        symbol: "**",
        alt_symbol: "^",
        precedence: 100,
        right_assoc: true,
        apply: f64::powf,
    },
];

/// A comparison: its spelling and its meaning.
#[derive(Clone, Copy, Debug)]
struct Cmp(&'static str, fn(&f64, &f64) -> bool);

/// Every comparison of the language.
const COMPARISONS: [Cmp; 6] = [
    Cmp("==", f64::eq),
    Cmp("!=", f64::ne),
    Cmp("<", f64::lt),
    Cmp("<=", f64::le),
    Cmp(">", f64::gt),
    Cmp(">=", f64::ge),
];

/// A function: its name and its meaning over the evaluated arguments (never empty; one
/// argument for all but `min` and `max`).
#[derive(Clone, Copy, Debug)]
struct Func(&'static str, fn(&[f64]) -> f64);

/// The functions of one argument.
const UNARY_FUNCTIONS: [Func; 6] = [
    Func("abs", |x| x[0].abs()),
    Func("ceil", |x| x[0].ceil()),
    Func("floor", |x| x[0].floor()),
    Func("round", |x| x[0].round()),
    Func("int", |x| x[0].trunc()),
    Func("float", |x| x[0]),
];

/// The functions of one or more arguments.
const VARIADIC_FUNCTIONS: [Func; 2] = [
    Func("min", |xs| fold_or_nan(xs, f64::INFINITY, f64::min)),
    Func("max", |xs| fold_or_nan(xs, f64::NEG_INFINITY, f64::max)),
];

/// `xs` folded by `f` from `init`, or NaN when any of them is NaN (which `f64::min` and
/// `f64::max` would pass over).
fn fold_or_nan(xs: &[f64], init: f64, f: fn(f64, f64) -> f64) -> f64 {
    if xs.iter().any(|x| x.is_nan()) {
        f64::NAN
    } else {
        xs.iter().copied().fold(init, f)
    }
}

impl Op {
    /// A left-associative operator with one spelling.
    const fn left(symbol: &'static str, precedence: u8, apply: fn(f64, f64) -> f64) -> Op {
        Op {
            symbol,
            alt_symbol: symbol,
            precedence,
            right_assoc: false,
            apply,
        }
    }

    fn symbol(self, alt: bool) -> &'static str {
        if alt {
            self.alt_symbol
        } else {
            self.symbol
        }
    }
}

// --- strategies -----------------------------------------------------------------------

fn literal() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u32..100).prop_map(f64::from),
        (0u32..10_000).prop_map(|n| f64::from(n) / 16.0),
        any::<f64>().prop_filter_map("finite", |f| f.is_finite().then_some(f.abs())),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(&OPERATORS[..])
}

fn cmp() -> impl Strategy<Value = Cmp> {
    prop::sample::select(&COMPARISONS[..])
}

fn unary_func() -> impl Strategy<Value = Func> {
    prop::sample::select(&UNARY_FUNCTIONS[..])
}

fn numeric() -> impl Strategy<Value = N> {
    let leaf = prop_oneof![
        literal().prop_map(N::Lit),
        (0..VAR_NAMES.len()).prop_map(N::Var),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        let cmp_node = (cmp(), inner.clone(), inner.clone())
            .prop_map(|(c, a, b)| B::Cmp(c, Box::new(a), Box::new(b)))
            .boxed();
        let boolean = prop_oneof![
            any::<bool>().prop_map(B::Lit),
            cmp_node.clone(),
            (any::<bool>(), cmp_node.clone(), cmp_node.clone()).prop_map(|(alt, a, b)| B::And(
                alt,
                Box::new(a),
                Box::new(b)
            )),
            (any::<bool>(), cmp_node.clone(), cmp_node.clone()).prop_map(|(alt, a, b)| B::Or(
                alt,
                Box::new(a),
                Box::new(b)
            )),
            (any::<bool>(), cmp_node.clone()).prop_map(|(alt, a)| B::Not(alt, Box::new(a))),
            (any::<bool>(), any::<bool>(), cmp_node.clone(), cmp_node).prop_map(
                |(alt1, alt2, a, b)| B::Not(alt1, Box::new(B::Or(alt2, Box::new(a), Box::new(b))))
            ),
        ];
        prop_oneof![
            inner.clone().prop_map(|a| N::Neg(Box::new(a))),
            inner.clone().prop_map(|a| N::Plus(Box::new(a))),
            (op(), any::<bool>(), inner.clone(), inner.clone()).prop_map(|(o, alt, a, b)| N::Bin(
                o,
                alt,
                Box::new(a),
                Box::new(b)
            )),
            (op(), any::<bool>(), inner.clone(), inner.clone()).prop_map(|(o, alt, a, b)| N::Bin(
                o,
                alt,
                Box::new(a),
                Box::new(b)
            )),
            (unary_func(), inner.clone()).prop_map(|(f, a)| N::Call(f, vec![a])),
            (
                prop::sample::select(&VARIADIC_FUNCTIONS[..]),
                prop::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(f, args)| N::Call(f, args)),
            (boolean, inner.clone(), inner).prop_map(|(c, a, b)| N::Cond(
                Box::new(c),
                Box::new(a),
                Box::new(b)
            )),
        ]
    })
}

fn variable_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-20i32..100).prop_map(f64::from),
        4 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(0.5),
        1 => Just(-2.5),
    ]
}

fn variables() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(variable_value(), VAR_NAMES.len())
}

fn to_vars(values: &[f64]) -> Variables {
    let mut v = Variables::new();
    for (name, value) in VAR_NAMES.iter().zip(values) {
        v.set_number(*name, *value);
    }
    v
}

// --- reference evaluator ----------------------------------------------------------------

fn ref_num(n: &N, vars: &[f64]) -> f64 {
    match n {
        N::Lit(x) => *x,
        N::Var(i) => vars[*i],
        N::Neg(a) => -ref_num(a, vars),
        N::Plus(a) => ref_num(a, vars),
        N::Bin(op, _, a, b) => (op.apply)(ref_num(a, vars), ref_num(b, vars)),
        N::Call(f, args) => {
            let xs: Vec<f64> = args.iter().map(|a| ref_num(a, vars)).collect();
            (f.1)(&xs)
        }
        N::Cond(c, a, b) => {
            if ref_bool(c, vars) {
                ref_num(a, vars)
            } else {
                ref_num(b, vars)
            }
        }
    }
}

fn ref_bool(b: &B, vars: &[f64]) -> bool {
    match b {
        B::Lit(v) => *v,
        B::Cmp(c, a, b) => (c.1)(&ref_num(a, vars), &ref_num(b, vars)),
        B::And(_, a, b) => ref_bool(a, vars) && ref_bool(b, vars),
        B::Or(_, a, b) => ref_bool(a, vars) || ref_bool(b, vars),
        B::Not(_, a) => !ref_bool(a, vars),
    }
}

/// Equal as numbers, with NaN equal to NaN (and -0 equal to 0).
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

// --- printers ---------------------------------------------------------------------------

/// Fully parenthesised, in the exact format of `Expr::to_canonical_string`.
fn full(n: &N) -> String {
    match n {
        N::Lit(x) => format!("{x:?}"),
        N::Var(i) => VAR_NAMES[*i].to_owned(),
        N::Neg(a) => format!("(-{})", full(a)),
        N::Plus(a) => format!("(+{})", full(a)),
        N::Bin(op, _, a, b) => format!("({} {} {})", full(a), op.symbol(false), full(b)),
        N::Call(f, args) => format!(
            "{}({})",
            f.0,
            args.iter().map(full).collect::<Vec<_>>().join(", ")
        ),
        N::Cond(c, a, b) => format!("({} ? {} : {})", full_b(c), full(a), full(b)),
    }
}

fn full_b(b: &B) -> String {
    match b {
        B::Lit(v) => v.to_string(),
        B::Cmp(c, a, b) => format!("({} {} {})", full(a), c.0, full(b)),
        B::And(_, a, b) => format!("({} && {})", full_b(a), full_b(b)),
        B::Or(_, a, b) => format!("({} || {})", full_b(a), full_b(b)),
        B::Not(_, a) => format!("(!{})", full_b(a)),
    }
}

/// How a node binds, for the minimal-parentheses printer.
#[derive(Clone, Copy)]
enum Shape {
    /// Literal, variable, call.
    Atom,
    /// A prefix operator whose operand is parsed at this precedence.
    Prefix(u8),
    /// A binary operator with this precedence.
    Infix(u8),
    /// `?:`.
    Cond,
}

fn shape(n: &N) -> Shape {
    match n {
        N::Lit(_) | N::Var(_) | N::Call(..) => Shape::Atom,
        N::Neg(_) | N::Plus(_) => Shape::Prefix(90),
        N::Bin(op, ..) => Shape::Infix(op.precedence),
        N::Cond(..) => Shape::Cond,
    }
}

fn shape_b(b: &B) -> Shape {
    match b {
        B::Lit(_) => Shape::Atom,
        B::Cmp(..) => Shape::Infix(20),
        B::And(..) => Shape::Infix(15),
        B::Or(..) => Shape::Infix(10),
        B::Not(..) => Shape::Prefix(50),
    }
}

fn paren(s: String, needed: bool) -> String {
    if needed {
        format!("({s})")
    } else {
        s
    }
}

/// Whether an operand of a binary operator with precedence `p` needs parentheses.
fn needs_parens(child: Shape, p: u8, right_assoc: bool, is_left: bool) -> bool {
    match child {
        Shape::Atom => false,
        Shape::Cond => true,
        // A prefix operator on the left swallows the operator if the operator binds at least
        // as tightly as the prefix's operand (`!a * b` is `!(a * b)`); on the right, be
        // conservative: `a * !b * c` is `a * !(b * c)`.
        Shape::Prefix(u) => {
            if is_left {
                p >= u
            } else {
                p > u
            }
        }
        Shape::Infix(q) => {
            if is_left {
                q < p || (q == p && right_assoc)
            } else {
                q < p || (q == p && !right_assoc)
            }
        }
    }
}

fn prefix_operand_needs_parens(child: Shape, u: u8) -> bool {
    match child {
        Shape::Atom | Shape::Prefix(_) => false,
        Shape::Cond => true,
        Shape::Infix(q) => q < u,
    }
}

/// Minimal parentheses according to the documented precedence table, with alternative
/// operator spellings.
fn minimal(n: &N) -> String {
    match n {
        N::Lit(x) => format!("{x:?}"),
        N::Var(i) => VAR_NAMES[*i].to_owned(),
        N::Neg(a) | N::Plus(a) => {
            let sign = if matches!(n, N::Neg(_)) { "-" } else { "+" };
            format!(
                "{sign}{}",
                paren(minimal(a), prefix_operand_needs_parens(shape(a), 90))
            )
        }
        N::Bin(op, alt, a, b) => {
            let (p, r) = (op.precedence, op.right_assoc);
            format!(
                "{} {} {}",
                paren(minimal(a), needs_parens(shape(a), p, r, true)),
                op.symbol(*alt),
                paren(minimal(b), needs_parens(shape(b), p, r, false)),
            )
        }
        N::Call(f, args) => format!(
            "{}({})",
            f.0,
            args.iter().map(minimal).collect::<Vec<_>>().join(", ")
        ),
        N::Cond(c, a, b) => format!("{} ? {} : {}", minimal_b(c), minimal(a), minimal(b)),
    }
}

fn minimal_b(b: &B) -> String {
    let infix = |a: String, sa: Shape, sym: &str, b: String, sb: Shape, p: u8| {
        format!(
            "{} {sym} {}",
            paren(a, needs_parens(sa, p, false, true)),
            paren(b, needs_parens(sb, p, false, false))
        )
    };
    match b {
        B::Lit(v) => v.to_string(),
        B::Cmp(c, x, y) => infix(minimal(x), shape(x), c.0, minimal(y), shape(y), 20),
        B::And(alt, x, y) => infix(
            minimal_b(x),
            shape_b(x),
            if *alt { "and" } else { "&&" },
            minimal_b(y),
            shape_b(y),
            15,
        ),
        B::Or(alt, x, y) => infix(
            minimal_b(x),
            shape_b(x),
            if *alt { "or" } else { "||" },
            minimal_b(y),
            shape_b(y),
            10,
        ),
        B::Not(alt, x) => format!(
            "{}{}",
            if *alt { "not " } else { "!" },
            paren(minimal_b(x), prefix_operand_needs_parens(shape_b(x), 50))
        ),
    }
}

/// The count rule, formulated independently of the implementation.
fn expected_count(r: f64) -> Result<u32, ExprErrorKind> {
    if r.is_nan() {
        Err(ExprErrorKind::NaN)
    } else if r.is_infinite() {
        Err(ExprErrorKind::Infinite)
    } else {
        Ok(r.round().clamp(0.0, f64::from(MAX_MACHINE_COUNT)) as u32)
    }
}

/// Checks the invariants every error must satisfy.
fn check_error(src: &str, e: &ExprError) -> Result<(), TestCaseError> {
    prop_assert_eq!(&e.expression, src);
    prop_assert!(!e.message.is_empty());
    let chars: Vec<char> = src.chars().collect();
    match e.column {
        None => prop_assert!(
            matches!(
                e.kind,
                ExprErrorKind::Empty | ExprErrorKind::NaN | ExprErrorKind::Infinite
            ),
            "{:?} without a column: {}",
            e.kind,
            e
        ),
        Some(c) => {
            prop_assert!(
                c >= 1 && c <= chars.len() + 1,
                "column {} out of range: {}",
                c,
                e
            );
            if c <= chars.len() {
                prop_assert!(
                    !chars[c - 1].is_whitespace(),
                    "column {} is whitespace: {}",
                    c,
                    e
                );
            }
        }
    }
    Ok(())
}

fn same_value(a: &Result<Value, ExprError>, b: &Result<Value, ExprError>) -> bool {
    match (a, b) {
        (Ok(Value::Number(x)), Ok(Value::Number(y))) => same(*x, *y),
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.kind == y.kind,
        _ => false,
    }
}

const SOUP: &[&str] = &[
    "1", "2.5", ".5", "1e3", "0", "x", "y", "s", "min", "max", "abs", "round", "foo", "(", ")",
    ",", "+", "-", "*", "/", "%", "**", "^", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "!",
    "and", "or", "not", "?", ":", "true", "false", "'s'", "\"t\"", "=", "&", "|", "#", "é", "'",
    "\"", "\\", "nil", "_", "1_0", "1e", ".", "\t", "\n", "1e999",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(SOUP), any::<bool>()), 0..40).prop_map(|toks| {
        let mut s = String::new();
        for (t, space) in toks {
            s.push_str(t);
            if space {
                s.push(' ');
            }
        }
        s
    })
}

fn soup_vars() -> Variables {
    let mut v = Variables::new();
    v.set_number("x", 1.0);
    v.set_number("y", 2.0);
    v.set_str("s", "s");
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_strings(src in any::<String>()) {
        if let Err(e) = Expr::parse(&src) {
            check_error(&src, &e)?;
        }
    }

    #[test]
    fn parse_never_panics_on_printable_strings(src in "[ -~éñ✓]{0,48}") {
        match Expr::parse(&src) {
            Err(e) => check_error(&src, &e)?,
            Ok(e) => {
                let c = e.to_canonical_string();
                let again = Expr::parse(&c).map_err(|err| TestCaseError::fail(format!("{c}: {err}")))?;
                prop_assert_eq!(again.to_canonical_string(), c);
            }
        }
    }

    #[test]
    fn token_soup(src in soup()) {
        match Expr::parse(&src) {
            Err(e) => check_error(&src, &e)?,
            Ok(e) => {
                let c = e.to_canonical_string();
                let again = Expr::parse(&c).map_err(|err| TestCaseError::fail(format!("{c}: {err}")))?;
                prop_assert_eq!(again.to_canonical_string(), c.as_str());
                prop_assert_eq!(again.variables(), e.variables());
                let vars = soup_vars();
                let (a, b) = (e.eval(&vars), again.eval(&vars));
                prop_assert!(same_value(&a, &b), "{:?} vs {:?}", a, b);
                if let Err(err) = &a {
                    check_error(&src, err)?;
                }
                if let Ok(n) = e.eval_count(&vars) {
                    // A count always comes from a finite number result.
                    let v = e.eval_number(&vars).map_err(|err| TestCaseError::fail(err.to_string()))?;
                    prop_assert_eq!(Ok(n), expected_count(v));
                }
            }
        }
    }

    #[test]
    fn generated_trees_parse_back_and_evaluate_like_the_reference(tree in numeric(), values in variables()) {
        let full_src = full(&tree);
        let min_src = minimal(&tree);
        let from_full = Expr::parse(&full_src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from_min = Expr::parse(&min_src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Same tree: the canonical form of both is the fully parenthesised print.
        prop_assert_eq!(from_full.to_canonical_string(), full_src.as_str());
        prop_assert_eq!(from_min.to_canonical_string(), full_src.as_str(), "minimal form: {}", min_src);

        let vars = to_vars(&values);
        let want = ref_num(&tree, &values);
        for e in [&from_full, &from_min] {
            match e.eval(&vars) {
                Ok(Value::Number(got)) => prop_assert!(same(got, want), "{} = {} but reference says {}", e.source(), got, want),
                other => prop_assert!(false, "{}: {:?}", e.source(), other),
            }
            let count = e.eval_count(&vars).map_err(|err| err.kind);
            prop_assert_eq!(count, expected_count(want), "{}", e.source());
        }
    }

    #[test]
    fn eval_count_follows_the_rounding_rule(v in prop_oneof![
        any::<f64>(),
        -10.0f64..10.0,
        (-40i32..40).prop_map(|n| f64::from(n) / 2.0),
        4.2e9f64..4.4e9,
        9_990.0f64..10_010.0,
    ]) {
        let mut vars = Variables::new();
        vars.set_number("v", v);
        let e = Expr::parse("v").map_err(|err| TestCaseError::fail(err.to_string()))?;
        let got = e.eval_count(&vars);
        prop_assert_eq!(got.clone().map_err(|err| err.kind), expected_count(v));
        if let Ok(n) = got {
            // Half away from zero, within 0.5 unless clamped at the ceiling.
            prop_assert!(n <= MAX_MACHINE_COUNT);
            if v >= 0.0 && v < f64::from(MAX_MACHINE_COUNT) {
                prop_assert!((f64::from(n) - v).abs() <= 0.5);
            }
            if v < 0.5 {
                prop_assert_eq!(n, 0);
            }
        }
    }

    #[test]
    fn string_literals_round_trip(s in any::<String>()) {
        let mut lit = String::from("'");
        for c in s.chars() {
            match c {
                '\\' => lit.push_str("\\\\"),
                '\'' => lit.push_str("\\'"),
                c => lit.push(c),
            }
        }
        lit.push('\'');
        let e = Expr::parse(&lit).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(e.eval(&Variables::new()), Ok(Value::Str(s.clone())));
        let c = e.to_canonical_string();
        let again = Expr::parse(&c).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(again.eval(&Variables::new()), Ok(Value::Str(s)));
    }

    #[test]
    fn unknown_function_column_points_at_its_name(prefix in "[0-9]{1,3} [+*/-] (x [<>] )?", name in "[a-z]{2,6}") {
        prop_assume!(!["min", "max", "abs", "ceil", "floor", "round", "int", "float", "and", "or", "not", "true", "false", "nil", "let"].contains(&name.as_str()));
        let src = format!("{prefix}{name}(1)");
        let e = Expr::parse(&src).expect_err("unknown function");
        prop_assert_eq!(e.kind, ExprErrorKind::UnknownFunction);
        prop_assert_eq!(e.column, Some(prefix.chars().count() + 1));
    }
}
