//! The typing rules, shared by the static check and by the evaluator's error messages.

use super::ast::*;
use super::ValueType;

pub(super) type Ty = Option<ValueType>;

pub(super) fn side_name(left: bool) -> &'static str {
    if left {
        "left"
    } else {
        "right"
    }
}

pub(super) fn binary_rule(op: BinOp, l: Ty, r: Ty) -> Result<Ty, String> {
    use ValueType::{Bool, Number};
    let sym = op.symbol();
    match op {
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow => {
            operands_are(sym, [l, r], "numbers", |t| t == Number)?;
            Ok(Some(Number))
        }
        BinOp::And | BinOp::Or => {
            operands_are(sym, [l, r], "booleans", |t| t == Bool)?;
            Ok(Some(Bool))
        }
        BinOp::Add | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            operands_are(sym, [l, r], "numbers or strings", |t| t != Bool)?;
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

/// Checks the known types of the operands `[left, right]` against `accepts`; the error names
/// the first operand it rejects and what the operator `sym` `needs` instead.
fn operands_are(
    sym: &str,
    operands: [Ty; 2],
    needs: &str,
    accepts: impl Fn(ValueType) -> bool,
) -> Result<(), String> {
    for (left, t) in [true, false].into_iter().zip(operands) {
        if let Some(t) = t.filter(|&t| !accepts(t)) {
            return Err(format!(
                "`{sym}` needs {needs}, but its {} operand is a {t}",
                side_name(left)
            ));
        }
    }
    Ok(())
}

pub(super) fn unary_rule(op: UnOp, t: Ty) -> Result<Ty, String> {
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

pub(super) fn arg_rule(func: Func, index: usize, t: Ty) -> Result<(), String> {
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

pub(super) fn cond_rule(t: Ty) -> Result<(), String> {
    match t {
        Some(t) if t != ValueType::Bool => Err(format!(
            "the condition before `?` must be a bool, got a {t}"
        )),
        _ => Ok(()),
    }
}

pub(super) fn rule_message<T>(r: Result<T, String>) -> String {
    r.err().unwrap_or_else(|| "type error".to_owned())
}

/// A static type error: the column and the message. Boxed to keep `infer`'s frames small.
pub(super) type TypeFail = Box<(usize, String)>;

#[cold]
#[inline(never)]
pub(super) fn type_fail(col: usize, msg: String) -> TypeFail {
    Box::new((col, msg))
}

/// The static type of `node` (`None` when it depends on variables of unknown type).
pub(super) fn infer(
    node: &Node,
    type_of: &dyn Fn(&str) -> Option<ValueType>,
) -> Result<Ty, TypeFail> {
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
pub(super) fn infer_cond(
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
pub(super) fn infer_call(
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
