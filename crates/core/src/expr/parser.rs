//! Precedence climbing over the tokens, with expr-lang's precedences, into a syntax tree.

use super::ast::*;
use super::error::*;
use super::lexer::*;
use super::MAX_DEPTH;

/// Maximum recursion depth of the parser (see [`MAX_DEPTH`]).
const MAX_PARSE_DEPTH: usize = 2 * MAX_DEPTH + 1;

/// Parses `src` (already known not to be blank) into a syntax tree.
pub(super) fn parse(src: &str) -> Result<Box<Node>, ExprError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    p.parse_top().map_err(|e| *e)
}

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

pub(super) fn binary_op(sym: Sym) -> Option<BinOp> {
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
