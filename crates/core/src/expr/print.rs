//! The canonical, fully parenthesised form of a syntax tree.

use super::ast::*;

pub(super) fn write_canonical(node: &Node, out: &mut String) {
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
