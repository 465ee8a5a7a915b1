//! One event rendered as one line: `LEVEL message key=value …` (text) or a JSON object (JSON).
//! See the [module docs of `telemetry`](super) for the rules; the tests below pin them.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::{bound_for, bounded, json_safe, needs_quotes, one_line, quoted};
use super::values::{error_chain, NULL_TEXT};
use crate::config::LogFormat;

/// Free-text fields, quoted even when they hold one word, so a grep pattern like
/// `org_name="Acme"` works for every name.
pub const ALWAYS_QUOTED: &[&str] = &["org_name", "error", "reason", "status"];

/// The event formatter behind [`super::init`].
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    format: LogFormat,
    /// stderr is the journal: priority prefixes, and no timestamp in text lines.
    journald: bool,
}

impl LineFormat {
    pub fn new(format: LogFormat, journald: bool) -> Self {
        Self { format, journald }
    }
}

/// The syslog priority journald files a line under (`<N>` prefix).
fn priority(level: &str) -> u8 {
    match level {
        "CRITICAL" => 2,
        "ERROR" => 3,
        "WARN" => 4,
        "INFO" => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Collected::default();
        event.record(&mut fields);
        let level = fields
            .severity
            .take()
            .unwrap_or_else(|| level_name(*event.metadata().level()).to_string());
        // JSON always carries its timestamp (a collector may read it from anywhere); text
        // under journald does not (the journal stamps every line itself).
        let timestamp = (!self.journald || self.format == LogFormat::Json).then(|| {
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        });
        let line = match self.format {
            LogFormat::Text => render_text(timestamp.as_deref(), &level, &fields),
            LogFormat::Json => render_json(timestamp.as_deref(), &level, event, &fields),
        };
        if self.journald {
            write!(writer, "<{}>", priority(&level))?;
        }
        writeln!(writer, "{line}")
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// A field value as recorded. Text renders strings quoted only when needed (or when the field
/// is in [`ALWAYS_QUOTED`]); JSON renders them as JSON strings.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Display(String),
    Int(i128),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Default)]
struct Collected {
    message: String,
    severity: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Collected {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "severity" => self.severity = Some(value.to_string()),
            name => self.fields.push((name, Value::Str(value.to_string()))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            name => self.fields.push((name, Value::Display(text))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Value::Int(value.into())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Value::Int(value.into())));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.fields.push((field.name(), Value::Int(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Value::Float(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Value::Bool(value)));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fields
            .push((field.name(), Value::Str(error_chain(value))));
    }
}

fn render_text(timestamp: Option<&str>, level: &str, fields: &Collected) -> String {
    let mut line = String::with_capacity(160);
    if let Some(ts) = timestamp {
        line.push_str(ts);
        line.push(' ');
    }
    line.push_str(level);
    line.push(' ');
    line.push_str(&one_line(&fields.message));
    for (name, value) in &fields.fields {
        let rendered = match value {
            Value::Display(s) if s == NULL_TEXT => "NULL".to_string(),
            Value::Str(s) | Value::Display(s)
                if ALWAYS_QUOTED.contains(name) || needs_quotes(s) =>
            {
                quoted(s, bound_for(name))
            }
            Value::Str(s) | Value::Display(s) => bounded(s, bound_for(name)).into_owned(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
        };
        let _ = write!(line, " {name}={rendered}");
    }
    line
}

fn render_json(
    timestamp: Option<&str>,
    level: &str,
    event: &Event<'_>,
    fields: &Collected,
) -> String {
    let mut object = serde_json::Map::new();
    if let Some(ts) = timestamp {
        object.insert("timestamp".into(), ts.into());
    }
    object.insert("level".into(), level.into());
    object.insert("message".into(), fields.message.clone().into());
    object.insert("target".into(), event.metadata().target().into());
    for (name, value) in &fields.fields {
        let text = |s: &str| serde_json::Value::from(bounded(s, bound_for(name)).into_owned());
        let json = match value {
            Value::Str(s) => text(s),
            Value::Display(s) if s == NULL_TEXT => serde_json::Value::Null,
            // Free text is text, even when a name happens to look like a number.
            Value::Display(s) if ALWAYS_QUOTED.contains(name) => text(s),
            Value::Display(s) => typed_display(s),
            Value::Int(i) => json_integer(*i),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Bool(b) => serde_json::Value::from(*b),
        };
        object.insert((*name).to_string(), json);
    }
    json_safe(serde_json::Value::Object(object).to_string())
}

/// The largest integer every JSON reader keeps exactly (a double's 53-bit mantissa).
const JSON_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// An integer as JSON: a number where every reader keeps it exactly, else a string (`jq` would
/// turn lock key 7356172090143225001 into …225000).
fn json_integer(i: i128) -> serde_json::Value {
    if (-JSON_SAFE_INTEGER..=JSON_SAFE_INTEGER).contains(&i) {
        serde_json::Value::from(i as i64)
    } else {
        serde_json::Value::from(i.to_string())
    }
}

/// A `%value` field in JSON: our Display types print numbers as numbers and a missing value
/// as `NULL` (e.g. a NULL `stored` counter), so those become JSON numbers and `null`; anything
/// else (ids, error texts) stays a string. Free text recorded as `&str` is never converted.
fn typed_display(s: &str) -> serde_json::Value {
    if s == "NULL" {
        return serde_json::Value::Null;
    }
    match s.parse::<i64>() {
        Ok(n) if n.to_string() == s => json_integer(n.into()),
        _ => serde_json::Value::from(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_and_nulls_are_typed_but_free_text_is_not() {
        assert_eq!(typed_display("NULL"), serde_json::Value::Null);
        assert_eq!(typed_display("-42"), serde_json::json!(-42));
        assert_eq!(typed_display("007"), serde_json::json!("007"));
        assert_eq!(
            typed_display("0b6b9a4e-6c1f"),
            serde_json::json!("0b6b9a4e-6c1f")
        );
        // Beyond 2^53 a JSON number loses digits in most readers: a string.
        assert_eq!(
            typed_display("7356172090143225001"),
            serde_json::json!("7356172090143225001")
        );
        assert_eq!(json_integer(1 << 40), serde_json::json!(1u64 << 40));
    }

    #[test]
    fn text_line_has_level_message_and_fields_in_order() {
        let fields = Collected {
            message: "used_minutes drift".into(),
            severity: None,
            fields: vec![
                ("org_id", Value::Display("abc".into())),
                ("org_name", Value::Str("Acme".into())),
                ("stored", Value::Int(-3)),
                ("action", Value::Str("repaired".into())),
                ("reason", Value::Str("two words".into())),
            ],
        };
        assert_eq!(
            render_text(None, "CRITICAL", &fields),
            r#"CRITICAL used_minutes drift org_id=abc org_name="Acme" stored=-3 action=repaired reason="two words""#
        );
    }
}
