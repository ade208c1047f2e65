//! The language as users see it: literals, operators, functions, errors and their columns.

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
