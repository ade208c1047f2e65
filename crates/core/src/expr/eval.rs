//! Evaluation of a checked syntax tree against a set of variables.

use std::borrow::Cow;

use super::ast::*;
use super::error::*;
use super::lexer::shorten;
use super::types::*;
use super::{Expr, Value, ValueType, Variables, MAX_MACHINE_COUNT};

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

    /// Binary operators; `&&` and `||` short-circuit.
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
        if let BinOp::And | BinOp::Or = op {
            // `b` is evaluated only when `a` does not decide: `false &&`, `true ||`.
            let decided = op == BinOp::Or;
            return match x {
                Val::Bool(x) if x == decided => Ok(Val::Bool(x)),
                Val::Bool(_) => match self.eval_node(b, vars)? {
                    Val::Bool(y) => Ok(Val::Bool(y)),
                    other => Err(self.type_error(
                        node.col,
                        TypeError::Binary(op, Some(ValueType::Bool), Some(other.ty())),
                    )),
                },
                other => {
                    Err(self.type_error(node.col, TypeError::Binary(op, Some(other.ty()), None)))
                }
            };
        }
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
