//! Turns source text into tokens, each with its character column and byte range.

use std::borrow::Cow;

use super::error::{error, ExprError, ExprErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sym {
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
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 1-based char column of the first character.
    pub(super) col: usize,
    /// Byte range in the source.
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
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
pub(super) fn shorten(s: &str) -> Cow<'_, str> {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
        None => Cow::Borrowed(s),
    }
}
