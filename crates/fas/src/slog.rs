//! fly-autoscaler's log format: Go `log/slog` JSON lines (also `fleetscale --log-format
//! json`).
//!
//! fly-autoscaler logs with `slog.NewJSONHandler(os.Stderr, …)` and removes the `time`
//! attribute (Fly adds its own timestamps), so every line looks like
//! `{"level":"INFO","msg":"reconciling","app":"my-app","current":{"started":1,"stopped":0}}`.
//! [`SlogJsonLayer`] writes exactly that shape from `tracing` events: `level` (`DEBUG`,
//! `INFO`, `WARN`, `ERROR`), `msg` (the event's message), then every field in the order
//! written. A field whose name contains dots is nested like a slog group:
//! `tracing::info!(current.started = 1, current.stopped = 0, "reconciling")` gives
//! `"current":{"started":1,"stopped":0}`. Numbers and booleans stay JSON numbers and
//! booleans; everything else is a string, except fields named `<name>__json`, whose text is
//! embedded as JSON under `<name>` (for slog's `slog.Any` of lists).

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// A `tracing` layer writing one slog-style JSON object per event (see the module docs).
#[derive(Debug)]
pub struct SlogJsonLayer<W> {
    make_writer: W,
}

impl<W> SlogJsonLayer<W> {
    /// A layer writing to `make_writer` (e.g. `std::io::stderr`).
    pub fn new(make_writer: W) -> Self {
        SlogJsonLayer { make_writer }
    }
}

/// slog's level names.
pub fn slog_level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            // `r#type` style raw identifiers arrive without the prefix already; strip any
            // leftover `r#` for safety.
            let mut name = field.name().trim_start_matches("r#").to_owned();
            let mut value = value;
            // `name__json = "<json text>"` logs structured data (slog.Any of a slice).
            if let Some(stripped) = name.strip_suffix("__json") {
                if let Value::String(text) = &value {
                    if let Ok(v) = serde_json::from_str::<Value>(text) {
                        value = v;
                    }
                }
                name = stripped.to_owned();
            }
            self.fields.push((name, value));
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.push(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::String(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, Value::String(format!("{value:?}")));
    }
}

/// An ordered JSON tree (serde_json's map sorts keys; slog keeps the written order).
enum Node {
    Leaf(Value),
    Group(Vec<(String, Node)>),
}

fn insert(group: &mut Vec<(String, Node)>, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        // A later field of the same name replaces the earlier one in place.
        if let Some(slot) = group.iter_mut().find(|(k, _)| k == first) {
            slot.1 = Node::Leaf(value);
        } else {
            group.push(((*first).to_owned(), Node::Leaf(value)));
        }
        return;
    }
    let idx = match group.iter().position(|(k, _)| k == first) {
        Some(i) => {
            if !matches!(group[i].1, Node::Group(_)) {
                group[i].1 = Node::Group(Vec::new());
            }
            i
        }
        None => {
            group.push(((*first).to_owned(), Node::Group(Vec::new())));
            group.len() - 1
        }
    };
    if let Node::Group(inner) = &mut group[idx].1 {
        insert(inner, rest, value);
    }
}

fn write_group(out: &mut String, group: &[(String, Node)]) {
    out.push('{');
    for (i, (k, v)) in group.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        match v {
            Node::Leaf(v) => {
                let _ = write!(out, "{v}");
            }
            Node::Group(g) => write_group(out, g),
        }
    }
    out.push('}');
}

/// Renders one event's line (without the newline): `{"level":…,"msg":…,fields…}`.
pub fn render_slog_line(level: &Level, message: &str, fields: Vec<(String, Value)>) -> String {
    let mut root: Vec<(String, Node)> = vec![
        (
            "level".into(),
            Node::Leaf(Value::String(slog_level(level).into())),
        ),
        ("msg".into(), Node::Leaf(Value::String(message.to_owned()))),
    ];
    for (name, value) in fields {
        let path: Vec<&str> = name.split('.').filter(|p| !p.is_empty()).collect();
        if path.is_empty() {
            continue;
        }
        insert(&mut root, &path, value);
    }
    let mut out = String::new();
    write_group(&mut out, &root);
    out
}

impl<S, W> Layer<S> for SlogJsonLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render_slog_line(
            event.metadata().level(),
            fields.message.as_deref().unwrap_or(""),
            fields.fields,
        );
        let mut w = self.make_writer.make_writer();
        let _ = w.write_all(format!("{line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use fleetscale_core::testing::LogBuffer;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn capture(f: impl FnOnce()) -> Vec<String> {
        let buf = LogBuffer::default();
        let writer = {
            let buf = buf.clone();
            move || buf.clone()
        };
        let sub = tracing_subscriber::registry()
            .with(SlogJsonLayer::new(writer).with_filter(LevelFilter::INFO));
        tracing::subscriber::with_default(sub, f);
        buf.text().lines().map(str::to_owned).collect()
    }

    #[test]
    fn writes_slog_shape_with_groups_in_order() {
        let lines = capture(|| {
            tracing::info!(
                app = "my-app",
                current.started = 1u64,
                current.stopped = 0u64,
                target.created.min = 2i64,
                target.created.max = 2i64,
                "reconciling"
            );
            tracing::warn!(ok = true, ratio = 0.5, "careful");
            tracing::error!(err = %"boom", "reconciliation failed");
            tracing::debug!("hidden at info");
        });
        assert_eq!(
            lines,
            vec![
                r#"{"level":"INFO","msg":"reconciling","app":"my-app","current":{"started":1,"stopped":0},"target":{"created":{"min":2,"max":2}}}"#,
                r#"{"level":"WARN","msg":"careful","ok":true,"ratio":0.5}"#,
                r#"{"level":"ERROR","msg":"reconciliation failed","err":"boom"}"#,
            ]
        );
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v.get("time").is_none());
        }
    }

    #[test]
    fn escapes_strings() {
        let line = render_slog_line(
            &Level::INFO,
            "quote \" and \n newline",
            vec![("k\"ey".into(), Value::String("v\\".into()))],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "quote \" and \n newline");
        assert_eq!(v["k\"ey"], "v\\");
    }
}
