//! The fake's `POST /graphql`: the part of Fly's GraphQL API an autoscaler reads, an app and
//! its current release, answered from the fake's state.
//!
//! A small but real GraphQL executor: the document is parsed (named or anonymous queries,
//! variable definitions with defaults, aliases, arguments with variables or literals,
//! comments, `__typename`), validated against this schema, and answered field by field with
//! only the selected fields, under their aliases:
//!
//! ```graphql
//! type Query        { app(name: String!): App }
//! type App          { id: ID! name: String! status: String organization: Organization
//!                     currentReleaseUnprocessed: Release currentRelease: Release }
//! type Organization { id: ID! slug: String! name: String! }
//! type Release      { id: ID! version: Int! status: String! description: String reason: String
//!                     imageRef: String stable: Boolean! createdAt: ISO8601DateTime!
//!                     user: User }
//! type User         { id: ID! email: String! name: String }
//! ```
//!
//! So fly-go's `GetAppCurrentReleaseMachines` query (`resource_releases.go`) works unchanged.
//! Fragments, directives, mutations and subscriptions are answered with an error. Error
//! shapes follow graphql-ruby, which Fly's API appears to use (messages like
//! `Field 'x' doesn't exist on type 'Release'` with `extensions.code`; **unverified** against
//! Fly): validation errors answer `{"errors": […]}` without `data`; an unknown app answers
//! `data.app: null` with `Could not find App "x"` (flyctl's wording) and code `NOT_FOUND`.
//! `currentRelease` answers the same release as `currentReleaseUnprocessed`.

use serde_json::{json, Map, Value};

use super::state::{FakeRelease, GqlApp, Inner};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Punct(char),
    Spread,
    Str(String),
    Num(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            // Whitespace, commas and the BOM are insignificant.
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                    i += 1;
                }
            }
            '{' | '}' | '(' | ')' | ':' | '$' | '!' | '=' | '[' | ']' | '@' | '|' | '&' => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            '.' => {
                if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
                    out.push(Tok::Spread);
                    i += 3;
                } else {
                    return Err(format!("unexpected '.' at offset {i}"));
                }
            }
            '"' => {
                if chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'"') {
                    return Err("block strings are not supported by the fake".into());
                }
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\n' | '\r' => return Err("unterminated string".into()),
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err("unterminated string".into());
                            };
                            i += 1;
                            match e {
                                '"' => s.push('"'),
                                '\\' => s.push('\\'),
                                '/' => s.push('/'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'n' => s.push('\n'),
                                'r' => s.push('\r'),
                                't' => s.push('\t'),
                                'u' => {
                                    let hex: String = chars.iter().skip(i).take(4).collect();
                                    let code = u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .filter(|_| hex.len() == 4)
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| format!("bad escape \\u{hex}"))?;
                                    s.push(code);
                                    i += 4;
                                }
                                other => return Err(format!("bad escape \\{other}")),
                            }
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | 'e' | 'E' | '+'))
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                out.push(Tok::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

/// An input value of the document.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Var(String),
    Json(Value),
    List(Vec<Val>),
    Object(Vec<(String, Val)>),
}

#[derive(Clone, Debug, PartialEq)]
struct Field {
    alias: Option<String>,
    name: String,
    args: Vec<(String, Val)>,
    selection: Option<Vec<Field>>,
}

impl Field {
    fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct VarDef {
    name: String,
    ty: String,
    default: Option<Val>,
}

#[derive(Clone, Debug, PartialEq)]
struct Operation {
    kind: String,
    name: Option<String>,
    vars: Vec<VarDef>,
    selection: Vec<Field>,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Tok::Punct(p)) if p == c => Ok(()),
            other => Err(format!("expected '{c}', found {}", show(other.as_ref()))),
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Name(n)) => Ok(n),
            other => Err(format!("expected a name, found {}", show(other.as_ref()))),
        }
    }

    fn document(&mut self) -> Result<Vec<Operation>, String> {
        let mut ops = Vec::new();
        while self.peek().is_some() {
            ops.push(self.operation()?);
        }
        if ops.is_empty() {
            return Err("the document is empty".into());
        }
        Ok(ops)
    }

    fn operation(&mut self) -> Result<Operation, String> {
        if self.peek() == Some(&Tok::Punct('{')) {
            return Ok(Operation {
                kind: "query".into(),
                name: None,
                vars: Vec::new(),
                selection: self.selection_set()?,
            });
        }
        let kind = self.name()?;
        match kind.as_str() {
            "query" | "mutation" | "subscription" => {}
            "fragment" => return Err("fragments are not supported by the fake".into()),
            other => return Err(format!("unexpected {other:?} at the start of a definition")),
        }
        let name = match self.peek() {
            Some(Tok::Name(_)) => Some(self.name()?),
            _ => None,
        };
        let mut vars = Vec::new();
        if self.eat('(') {
            while !self.eat(')') {
                self.expect('$')?;
                let name = self.name()?;
                self.expect(':')?;
                let ty = self.type_ref()?;
                let default = if self.eat('=') {
                    Some(self.value(true)?)
                } else {
                    None
                };
                vars.push(VarDef { name, ty, default });
            }
        }
        if self.peek() == Some(&Tok::Punct('@')) {
            return Err("directives are not supported by the fake".into());
        }
        Ok(Operation {
            kind,
            name,
            vars,
            selection: self.selection_set()?,
        })
    }

    fn type_ref(&mut self) -> Result<String, String> {
        let mut t = if self.eat('[') {
            let inner = self.type_ref()?;
            self.expect(']')?;
            format!("[{inner}]")
        } else {
            self.name()?
        };
        if self.eat('!') {
            t.push('!');
        }
        Ok(t)
    }

    fn selection_set(&mut self) -> Result<Vec<Field>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        while !self.eat('}') {
            if self.peek() == Some(&Tok::Spread) {
                return Err("fragments are not supported by the fake".into());
            }
            let first = self.name()?;
            let (alias, name) = if self.eat(':') {
                (Some(first), self.name()?)
            } else {
                (None, first)
            };
            let mut args = Vec::new();
            if self.eat('(') {
                while !self.eat(')') {
                    let n = self.name()?;
                    self.expect(':')?;
                    args.push((n, self.value(false)?));
                }
            }
            if self.peek() == Some(&Tok::Punct('@')) {
                return Err("directives are not supported by the fake".into());
            }
            let selection = if self.peek() == Some(&Tok::Punct('{')) {
                Some(self.selection_set()?)
            } else {
                None
            };
            fields.push(Field {
                alias,
                name,
                args,
                selection,
            });
        }
        if fields.is_empty() {
            return Err("empty selection set".into());
        }
        Ok(fields)
    }

    fn value(&mut self, constant: bool) -> Result<Val, String> {
        match self.next() {
            Some(Tok::Punct('$')) if !constant => Ok(Val::Var(self.name()?)),
            Some(Tok::Str(s)) => Ok(Val::Json(Value::String(s))),
            Some(Tok::Num(n)) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Val::Json(json!(i)))
                } else {
                    n.parse::<f64>()
                        .map(|f| Val::Json(json!(f)))
                        .map_err(|_| format!("bad number {n:?}"))
                }
            }
            Some(Tok::Name(n)) => Ok(Val::Json(match n.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::String(n), // an enum value
            })),
            Some(Tok::Punct('[')) => {
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.value(constant)?);
                }
                Ok(Val::List(items))
            }
            Some(Tok::Punct('{')) => {
                let mut fields = Vec::new();
                while !self.eat('}') {
                    let n = self.name()?;
                    self.expect(':')?;
                    fields.push((n, self.value(constant)?));
                }
                Ok(Val::Object(fields))
            }
            other => Err(format!("expected a value, found {}", show(other.as_ref()))),
        }
    }
}

fn show(t: Option<&Tok>) -> String {
    match t {
        None => "the end of the document".into(),
        Some(Tok::Name(n)) => format!("{n:?}"),
        Some(Tok::Punct(c)) => format!("'{c}'"),
        Some(Tok::Spread) => "'...'".into(),
        Some(Tok::Str(s)) => format!("string {s:?}"),
        Some(Tok::Num(n)) => format!("number {n}"),
    }
}

/// The schema: the type of `parent.field`, and the arguments it takes.
fn field_type(parent: &str, field: &str) -> Option<(&'static str, &'static [&'static str])> {
    if field == "__typename" {
        return Some(("String", &[]));
    }
    Some(match (parent, field) {
        ("Query", "app") => ("App", &["name"]),
        ("App", "id") => ("ID", &[]),
        ("App", "name" | "status") => ("String", &[]),
        ("App", "organization") => ("Organization", &[]),
        ("App", "currentReleaseUnprocessed" | "currentRelease") => ("Release", &[]),
        ("Organization", "id") => ("ID", &[]),
        ("Organization", "slug" | "name") => ("String", &[]),
        ("Release", "id") => ("ID", &[]),
        ("Release", "version") => ("Int", &[]),
        ("Release", "status" | "description" | "reason" | "imageRef") => ("String", &[]),
        ("Release", "stable") => ("Boolean", &[]),
        ("Release", "createdAt") => ("ISO8601DateTime", &[]),
        ("Release", "user") => ("User", &[]),
        ("User", "id") => ("ID", &[]),
        ("User", "email" | "name") => ("String", &[]),
        _ => return None,
    })
}

fn is_object(ty: &str) -> bool {
    matches!(ty, "Query" | "App" | "Organization" | "Release" | "User")
}

fn gql_error(message: impl Into<String>, code: &str, path: &[&str]) -> Value {
    let mut e = json!({ "message": message.into(), "extensions": { "code": code } });
    if !path.is_empty() {
        e["path"] = json!(path);
    }
    e
}

/// Checks every field against the schema; graphql-ruby's messages.
fn validate(parent: &str, fields: &[Field], path: &mut Vec<String>, errors: &mut Vec<Value>) {
    for f in fields {
        path.push(f.key().to_owned());
        let here: Vec<&str> = path.iter().map(String::as_str).collect();
        match field_type(parent, &f.name) {
            None => errors.push(gql_error(
                format!("Field '{}' doesn't exist on type '{parent}'", f.name),
                "undefinedField",
                &here,
            )),
            Some((ty, allowed)) => {
                for (arg, _) in &f.args {
                    if !allowed.contains(&arg.as_str()) {
                        errors.push(gql_error(
                            format!("Field '{}' doesn't accept argument '{arg}'", f.name),
                            "argumentNotAccepted",
                            &here,
                        ));
                    }
                }
                for req in allowed {
                    if !f.args.iter().any(|(a, _)| a == req) {
                        errors.push(gql_error(
                            format!("Field '{}' is missing required arguments: {req}", f.name),
                            "missingRequiredArguments",
                            &here,
                        ));
                    }
                }
                match (&f.selection, is_object(ty)) {
                    (Some(sel), true) => validate(ty, sel, path, errors),
                    (None, true) => errors.push(gql_error(
                        format!(
                            "Field must have selections (field '{}' returns {ty} but has no selections. Did you mean '{} {{ ... }}'?)",
                            f.name, f.name
                        ),
                        "selectionMismatch",
                        &here,
                    )),
                    (Some(_), false) => errors.push(gql_error(
                        format!(
                            "Selections can't be made on scalars (field '{}' returns {ty} but has selections)",
                            f.name
                        ),
                        "selectionMismatch",
                        &here,
                    )),
                    (None, false) => {}
                }
            }
        }
        path.pop();
    }
}

fn resolve_val(v: &Val, vars: &Map<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Val::Json(j) => j.clone(),
        Val::Var(n) => vars
            .get(n)
            .cloned()
            .ok_or_else(|| format!("Variable ${n} is used but not declared"))?,
        Val::List(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve_val(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Val::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), resolve_val(v, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn release_json(r: &FakeRelease) -> Value {
    json!({
        "__typename": "Release",
        "id": r.id,
        "version": r.version,
        "status": r.status,
        "description": r.description,
        "reason": r.reason,
        "imageRef": r.image_ref,
        "stable": r.stable,
        "createdAt": r.created_at,
        "user": {"__typename": "User", "id": "fake-user", "email": "deployer@example.com", "name": "Deployer"},
    })
}

fn app_object(a: &GqlApp) -> Value {
    let release = a.release.as_ref().map_or(Value::Null, release_json);
    json!({
        "__typename": "App",
        "id": a.id,
        "name": a.name,
        "status": "deployed",
        "organization": {"__typename": "Organization", "id": a.org, "slug": a.org, "name": a.org},
        "currentReleaseUnprocessed": release,
        "currentRelease": release,
    })
}

/// Keeps the selected fields of `obj`, under their aliases, in selection order.
fn project(obj: &Value, selection: &[Field]) -> Value {
    let mut out = Map::new();
    for f in selection {
        let v = obj.get(&f.name).cloned().unwrap_or(Value::Null);
        let v = match (&f.selection, &v) {
            (Some(sel), Value::Object(_)) => project(&v, sel),
            _ => v,
        };
        out.insert(f.key().to_owned(), v);
    }
    Value::Object(out)
}

fn errors_only(errors: Vec<Value>) -> (u16, Value) {
    (200, json!({ "errors": errors }))
}

/// Answers one `POST /graphql` body: `(HTTP status, JSON body)`.
pub(crate) fn execute(state: &Inner, body: &[u8]) -> (u16, Value) {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                400,
                json!({"errors": [{"message": format!("invalid JSON body: {e}")}]}),
            )
        }
    };
    let Some(query) = req.get("query").and_then(Value::as_str) else {
        return (
            400,
            json!({"errors": [{"message": "No query string was present"}]}),
        );
    };
    let ops = match lex(query).and_then(|t| Parser { toks: t, pos: 0 }.document()) {
        Ok(ops) => ops,
        Err(e) => return errors_only(vec![json!({ "message": format!("Parse error: {e}") })]),
    };
    let wanted = req.get("operationName").and_then(Value::as_str);
    let op = match wanted {
        Some(n) => ops.iter().find(|o| o.name.as_deref() == Some(n)),
        None if ops.len() == 1 => ops.first(),
        None => {
            return errors_only(vec![json!({
                "message": "An operation name is required when the document has several operations"
            })])
        }
    };
    let Some(op) = op else {
        return errors_only(vec![json!({
            "message": format!("No operation named \"{}\"", wanted.unwrap_or_default())
        })]);
    };
    if op.kind != "query" {
        return errors_only(vec![json!({
            "message": format!("the fake GraphQL API answers queries only, not a {}", op.kind)
        })]);
    }
    let mut errors = Vec::new();
    validate("Query", &op.selection, &mut Vec::new(), &mut errors);
    if !errors.is_empty() {
        return errors_only(errors);
    }
    // Variables: provided, else the default; a non-null type needs a non-null value.
    let given = req
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut vars = Map::new();
    for d in &op.vars {
        let v = match given.get(&d.name) {
            Some(v) => v.clone(),
            None => match &d.default {
                Some(def) => match resolve_val(def, &Map::new()) {
                    Ok(v) => v,
                    Err(e) => return errors_only(vec![json!({ "message": e })]),
                },
                None => Value::Null,
            },
        };
        if d.ty.ends_with('!') && v.is_null() {
            return errors_only(vec![json!({
                "message": format!("Variable ${} of type {} was provided invalid value", d.name, d.ty),
                "extensions": {"code": "variableMismatch", "value": null}
            })]);
        }
        vars.insert(d.name.clone(), v);
    }
    let mut data = Map::new();
    let mut errors = Vec::new();
    for f in &op.selection {
        let key = f.key().to_owned();
        if f.name == "__typename" {
            data.insert(key, json!("Query"));
            continue;
        }
        // Validation guarantees the only other root field is `app(name:)`.
        let name = f
            .args
            .iter()
            .find(|(a, _)| a == "name")
            .map(|(_, v)| resolve_val(v, &vars));
        let name = match name {
            Some(Ok(Value::String(s))) => s,
            Some(Err(e)) => return errors_only(vec![json!({ "message": e })]),
            Some(Ok(other)) => {
                return errors_only(vec![json!({
                    "message": format!("Argument 'name' on Field 'app' has an invalid value ({other}). Expected type 'String!'."),
                    "extensions": {"code": "argumentLiteralsIncompatible"}
                })])
            }
            None => String::new(),
        };
        match state.gql_app(&name) {
            Some(app) => {
                let sel = f.selection.as_deref().unwrap_or_default();
                data.insert(key, project(&app_object(&app), sel));
            }
            None => {
                errors.push(gql_error(
                    format!("Could not find App \"{name}\""),
                    "NOT_FOUND",
                    &[&key],
                ));
                data.insert(key, Value::Null);
            }
        }
    }
    let mut out = json!({ "data": data });
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors);
    }
    (200, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fly_gos_query() {
        // fly-go resource_releases.go, GetAppCurrentReleaseMachines, verbatim.
        let q = r#"
		query ($appName: String!) {
			app(name: $appName) {
				currentRelease: currentReleaseUnprocessed {
					id
					version
					description
					reason
					status
					imageRef
					stable
					user {
						id
						email
						name
					}
					createdAt
				}
			}
		}
	"#;
        let ops = Parser {
            toks: lex(q).unwrap(),
            pos: 0,
        }
        .document()
        .unwrap();
        assert_eq!(ops.len(), 1);
        let op = &ops[0];
        assert_eq!(op.kind, "query");
        assert_eq!(op.name, None);
        assert_eq!(op.vars[0].name, "appName");
        assert_eq!(op.vars[0].ty, "String!");
        let app = &op.selection[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.args, vec![("name".into(), Val::Var("appName".into()))]);
        let rel = &app.selection.as_ref().unwrap()[0];
        assert_eq!(rel.key(), "currentRelease");
        assert_eq!(rel.name, "currentReleaseUnprocessed");
        assert_eq!(rel.selection.as_ref().unwrap().len(), 9);
        let mut errors = Vec::new();
        validate("Query", &op.selection, &mut Vec::new(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn lexer_handles_strings_comments_and_numbers() {
        let t = lex("# c\n{ app(name: \"a\\\"b\\u0041\") { x } } -1.5e3").unwrap();
        assert!(t.contains(&Tok::Str("a\"bA".into())));
        assert!(t.contains(&Tok::Num("-1.5e3".into())));
        assert!(!t.iter().any(|x| matches!(x, Tok::Name(n) if n == "c")));
        assert!(lex("{ a(x: \"open) }").is_err());
        assert!(lex("{ a(x: \"\"\"block\"\"\") }").is_err());
        assert!(lex("{ ^ }").is_err());
    }

    #[test]
    fn validation_messages() {
        let run = |q: &str| {
            let ops = Parser {
                toks: lex(q).unwrap(),
                pos: 0,
            }
            .document()
            .unwrap();
            let mut errors = Vec::new();
            validate("Query", &ops[0].selection, &mut Vec::new(), &mut errors);
            errors
        };
        let e = run("{ app(name: \"a\") { currentReleaseUnprocessed { nope } } }");
        assert_eq!(
            e[0]["message"],
            "Field 'nope' doesn't exist on type 'Release'"
        );
        assert_eq!(
            e[0]["path"],
            json!(["app", "currentReleaseUnprocessed", "nope"])
        );
        let e = run("{ app { name } }");
        assert!(e[0]["message"]
            .as_str()
            .unwrap()
            .contains("missing required arguments: name"));
        let e = run("{ app(name: \"a\") }");
        assert!(e[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Field must have selections"));
        let e = run("{ app(name: \"a\") { name { x } } }");
        assert!(e[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Selections can't be made on scalars"));
        assert!(Parser {
            toks: lex("{ ...F }").unwrap(),
            pos: 0
        }
        .document()
        .is_err());
    }
}
