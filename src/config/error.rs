//! Configuration errors: every one names the key it concerns, and the `config` crate's own
//! messages are rewritten into that shape ("invalid configuration for key `x`: …").

use super::values::{AmbiguousPolicy, LogFormat, Period, Rounding, Source};

/// A configuration problem, with the key it concerns when there is one.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}: {message}", key.as_ref().map(|k| format!(" for key `{k}`")).unwrap_or_default())]
pub struct ConfigError {
    /// Dotted key, e.g. `usage.period`.
    pub key: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Allowed spellings of the enum-valued keys, for error messages.
const ENUM_KEYS: &[(&str, &[&str])] = &[
    ("usage.period", Period::SPELLINGS),
    ("usage.source", Source::SPELLINGS),
    ("usage.rounding", Rounding::SPELLINGS),
    ("orphans.ambiguous", AmbiguousPolicy::SPELLINGS),
    ("log.format", LogFormat::SPELLINGS),
];

/// The `config` crate's errors say "… for key `x`"; lift the key out so every message reads
/// "invalid configuration for key `x`: …", and make its two least helpful messages helpful.
pub(super) fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = without_source(&e.to_string());
    let Some(start) = text.find(" for key `") else {
        return ConfigError {
            key: None,
            message: text,
        };
    };
    let rest = &text[start + " for key `".len()..];
    let mut key = rest.split('`').next().unwrap_or_default().to_string();
    let mut message = text[..start].to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        key = format!("{key}.{field}");
        message = format!("unknown key ({message})");
    } else if message.contains("does not have variant constructor") {
        let allowed = ENUM_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(String::new(), |(_, spellings)| spellings.join(", "));
        let given = message.rsplit(' ').next().unwrap_or_default();
        message = format!("unknown value `{given}`, expected one of: {allowed}");
    }
    ConfigError::key(&key, message)
}

/// A parse error quotes the offending line of the file, which may be `url = "postgres://…:pw@…"`:
/// keep the position and the reason, drop the quoted source, and redact any quoted value that
/// holds a URL.
pub(super) fn without_source(text: &str) -> String {
    let is_source = |line: &str| {
        let t = line.trim_start();
        match t.split_once('|') {
            Some((number, _)) => number.trim().chars().all(|c| c.is_ascii_digit()),
            None => false,
        }
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !is_source(l))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = kept.join("; ");
    if !joined.contains("://") {
        return joined;
    }
    // Redact every quoted stretch: one of them holds a URL.
    let mut out = String::with_capacity(joined.len());
    let mut quoted = false;
    for c in joined.chars() {
        match c {
            '"' | '`' | '\'' => {
                if !quoted {
                    out.push_str("[redacted]");
                }
                quoted = !quoted;
            }
            _ if quoted => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_never_quotes_the_line() {
        let text = "TOML parse error at line 2, column 38\n  |\n2 | url = \"postgres://u:S3CRETpw@db/x\" x\n  |                                      ^\nexpected newline, `#`\n";
        let cleaned = without_source(text);
        assert!(!cleaned.contains("S3CRET"), "{cleaned}");
        assert!(cleaned.contains("line 2, column 38"), "{cleaned}");
        assert!(cleaned.contains("expected newline"), "{cleaned}");
    }
}
