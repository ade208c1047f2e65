//! The syntax tree the parser builds and the type rules, evaluator and printer walk.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnOp {
    Neg,
    Plus,
    Not,
}

impl UnOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Plus => "+",
            UnOp::Not => "!",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
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
    pub(super) fn symbol(self) -> &'static str {
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
    pub(super) fn precedence(self) -> (u8, bool) {
        match self {
            BinOp::Or => (10, false),
            BinOp::And => (15, false),
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => (20, false),
            BinOp::Add | BinOp::Sub => (30, false),
            BinOp::Mul | BinOp::Div | BinOp::Rem => (60, false),
            BinOp::Pow => (100, true),
        }
    }

    pub(super) fn is_comparison(self) -> bool {
        self.precedence().0 == 20
    }
}

/// Precedence at which the operand of a prefix operator is parsed.
pub(super) const PREC_NOT: u8 = 50;
pub(super) const PREC_NEG: u8 = 90;
pub(super) const PREC_COMPARISON: u8 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
    Round,
    Int,
    Float,
}

pub(super) const FUNCTION_NAMES: &str = "abs, ceil, float, floor, int, max, min, round";

/// Every function with its name in expressions: one table for parsing and printing.
const FUNCTIONS: [(Func, &str); 8] = [
    (Func::Min, "min"),
    (Func::Max, "max"),
    (Func::Abs, "abs"),
    (Func::Ceil, "ceil"),
    (Func::Floor, "floor"),
    (Func::Round, "round"),
    (Func::Int, "int"),
    (Func::Float, "float"),
];

impl Func {
    pub(super) fn from_name(name: &str) -> Option<Func> {
        FUNCTIONS.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    pub(super) fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("?", |(_, n)| n)
    }

    pub(super) fn is_variadic(self) -> bool {
        matches!(self, Func::Min | Func::Max)
    }

    pub(super) fn accepts_strings(self) -> bool {
        matches!(self, Func::Int | Func::Float)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Node {
    /// 1-based char column of the token that identifies this node (the literal or name,
    /// the operator, the `?`, the function name).
    pub(super) col: usize,
    /// Height of the tree rooted here (a leaf is 1), bounded by [`MAX_DEPTH`](super::MAX_DEPTH).
    pub(super) height: usize,
    pub(super) kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kind {
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
    pub(super) fn child_height(&self) -> usize {
        match self {
            Kind::Num(_) | Kind::Str(_) | Kind::Bool(_) | Kind::Var(_) => 0,
            Kind::Unary(_, a) => a.height,
            Kind::Binary(_, a, b) => a.height.max(b.height),
            Kind::Cond(a, b, c) => a.height.max(b.height).max(c.height),
            Kind::Call(_, args) => args.iter().map(|a| a.height).max().unwrap_or(0),
        }
    }
}

pub(super) fn visit_vars<'a>(node: &'a Node, f: &mut dyn FnMut(&'a str, usize)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_name_parses_back_and_the_known_list_names_them_all() {
        for (f, n) in FUNCTIONS {
            assert_eq!(Func::from_name(n), Some(f), "{n}");
            assert_eq!(f.name(), n, "{f:?}");
        }
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.join(", "), FUNCTION_NAMES);
        assert_eq!(Func::from_name("sqrt"), None);
    }
}
