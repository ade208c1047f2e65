//! The expression language (placeholder API; implementation in progress).
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Str(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables(BTreeMap<String, Value>);

impl Variables {
    pub fn new() -> Self {
        Variables::default()
    }
    pub fn set_number(&mut self, name: impl Into<String>, v: f64) {
        self.0.insert(name.into(), Value::Number(v));
    }
    pub fn set_str(&mut self, name: impl Into<String>, v: impl Into<String>) {
        self.0.insert(name.into(), Value::Str(v.into()));
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExprErrorKind {
    Syntax,
    UnknownFunction,
    UnknownVariable,
    Type,
    NaN,
    Infinite,
    Empty,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ExprError {
    pub kind: ExprErrorKind,
    pub column: Option<usize>,
    pub message: String,
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

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    source: String,
}

impl Expr {
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        Ok(Expr {
            source: source.to_owned(),
        })
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn variables(&self) -> Vec<&str> {
        Vec::new()
    }
    pub fn check_variables(&self, _known: &dyn Fn(&str) -> bool) -> Result<(), ExprError> {
        Ok(())
    }
    pub fn eval(&self, _vars: &Variables) -> Result<Value, ExprError> {
        self.source
            .trim()
            .parse::<f64>()
            .map(Value::Number)
            .map_err(|_| ExprError {
                kind: ExprErrorKind::Syntax,
                column: Some(1),
                message: "not implemented".into(),
                expression: self.source.clone(),
            })
    }
    pub fn eval_count(&self, vars: &Variables) -> Result<u32, ExprError> {
        match self.eval(vars)? {
            Value::Number(n) => Ok(n.round().max(0.0) as u32),
            _ => Err(ExprError {
                kind: ExprErrorKind::Type,
                column: None,
                message: "not a number".into(),
                expression: self.source.clone(),
            }),
        }
    }
}
