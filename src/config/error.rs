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
    let text = e.to_string();
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
