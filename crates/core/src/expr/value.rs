//! The values expressions compute with, their types, and the named variables they read.

use std::collections::BTreeMap;
use std::fmt;

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
    /// The [`ValueType`] of this value, as the type rules and error messages name it.
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

/// The type of a [`Value`], used by [`Expr::check_types`](super::Expr::check_types) and in error messages.
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
    /// A set with no names bound; add them with the `set_*` methods.
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
