//! Values that cannot lie in a log line: every free-text value is bounded and escaped so that
//! it stays one short line, cannot reorder what a terminal shows (bidi controls), cannot start
//! a new line in any viewer (line and paragraph separators), and never reaches the start of a
//! line, where the documented greps anchor on the level.

use std::fmt::Write as _;

/// Characters of a value kept before it is cut (then `…`). Names, statuses, hosts.
pub const MAX_VALUE_CHARS: usize = 200;
/// Messages we compose ourselves (an error chain, a fix to run) may be longer.
pub const MAX_MESSAGE_CHARS: usize = 600;

/// Fields whose values are such longer messages.
const MESSAGE_FIELDS: &[&str] = &[
    "error",
    "problem",
    "fix",
    "panic",
    "last_error",
    "server_said",
];

/// The bound for field `name`.
pub fn bound_for(name: &str) -> usize {
    if MESSAGE_FIELDS.contains(&name) {
        MAX_MESSAGE_CHARS
    } else {
        MAX_VALUE_CHARS
    }
}

/// Characters that must never appear raw: controls (C0, DEL, C1 such as NEL), bidirectional
/// formatting (they reorder what is displayed), line and paragraph separators, the BOM.
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{FEFF}'
        )
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((cut, _)) => format!("{}…", &s[..cut]).into(),
    }
}

/// Whether a bare value would be ambiguous in `key=value` text.
pub fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || must_escape(c))
}

/// Bounded, quoted and escaped: can never break the line or the `key=value` structure.
pub fn quoted(s: &str, max: usize) -> String {
    let s = bounded(s, max);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A message: free text that must stay on one line (escaped, not quoted).
pub fn one_line(s: &str) -> String {
    if s.chars().any(must_escape) || s.chars().count() > MAX_MESSAGE_CHARS {
        let q = quoted(s, MAX_MESSAGE_CHARS);
        q[1..q.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// A JSON line with the characters serde_json leaves raw (bidi controls, U+2028/2029, the BOM)
/// escaped as `\uXXXX` too; they can only occur inside strings, where that escape is valid.
pub fn json_safe(line: String) -> String {
    if !line.chars().any(must_escape) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if must_escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_hostile_names_on_one_line() {
        let q = quoted("Acme \"Q\"\nLtd\\ é", MAX_VALUE_CHARS);
        assert_eq!(q, r#""Acme \"Q\"\nLtd\\ é""#);
        assert!(!q.contains('\n'));
    }

    #[test]
    fn bidi_and_separators_are_escaped() {
        let q = quoted("evil\u{202E}txt.exe\u{2028}CRITICAL", MAX_VALUE_CHARS);
        assert_eq!(q, r#""evil\u{202e}txt.exe\u{2028}CRITICAL""#);
        assert!(needs_quotes("a\u{2066}b"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(50_000);
        let q = quoted(&long, MAX_VALUE_CHARS);
        assert_eq!(q.chars().count(), MAX_VALUE_CHARS + 3);
        assert!(q.ends_with("…\""));
    }

    #[test]
    fn json_lines_escape_what_serde_json_leaves() {
        let line = serde_json::json!({"org_name": "a\u{202E}b\u{2028}c"}).to_string();
        let safe = json_safe(line);
        assert_eq!(safe, r#"{"org_name":"a\u202eb\u2028c"}"#);
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["org_name"], "a\u{202E}b\u{2028}c");
    }
}
