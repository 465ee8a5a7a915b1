//! Reading a connection string before tokio-postgres does, for what it would get wrong or
//! leak:
//!
//! - **An ambiguous authority is refused, echoing nothing.** A password with an unencoded `@`,
//!   `/`, `?`, `#`, `%` or `+` makes the URL mean something else: `postgres:pw@S3CRET@host`
//!   turns `S3CRET@host` into a host name that is logged in every connect error and looked up
//!   in DNS. Such a URL is refused with a message saying how to percent-encode, and with no
//!   part of the URL in it.
//! - **libpq's TLS options are understood.** `sslmode=verify-ca` and `verify-full` (tokio-postgres
//!   knows only `disable|prefer|require`) mean "require TLS": certificates and host names are
//!   always verified here anyway. `sslrootcert=FILE` is the CA file (`database.ca_file`).

use crate::config::ConfigError;

/// What the pre-parse took out of the connection string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// `sslmode=verify-ca|verify-full` was given: TLS is required whatever the address.
    pub verify: bool,
    /// `sslrootcert=…`.
    pub root_cert: Option<String>,
}

/// How to percent-encode, for the refusal message.
const ENCODE_HINT: &str = "percent-encode these characters in the user name and password: \
     '@' as %40, ':' in the user name as %3A, '/' as %2F, '?' as %3F, '#' as %23, '%' as %25, \
     '+' as %2B (for example: python3 -c 'import sys, urllib.parse; \
     print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'the password')";

/// Check and clean a connection string; returns the string for tokio-postgres and what was
/// taken out of it.
///
/// # Errors
/// An ambiguous URL authority (the message repeats nothing of the URL).
pub fn preparse(key: &str, url: &str) -> Result<(String, Extracted), ConfigError> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Ok(preparse_key_value(url));
    };
    let scheme = &url[..url.len() - rest.len()];
    check_authority(key, rest)?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut extracted = Extracted::default();
    let Some(query) = query else {
        return Ok((url.to_string(), extracted));
    };
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match (name, value) {
            ("sslmode", "verify-ca" | "verify-full") => extracted.verify = true,
            ("sslrootcert", value) => extracted.root_cert = Some(percent_decode(value)),
            _ => kept.push(param),
        }
    }
    let mut cleaned = format!("{scheme}{before_query}");
    if extracted.verify {
        kept.push("sslmode=require");
    }
    if !kept.is_empty() {
        cleaned.push('?');
        cleaned.push_str(&kept.join("&"));
    }
    Ok((cleaned, extracted))
}

/// `postgres://[user[:password]@]host…`: the part before the first `/` or `?` must hold at
/// most one `@`, none may follow it, and the user info must be validly percent-encoded.
fn check_authority(key: &str, rest: &str) -> Result<(), ConfigError> {
    let refuse = || {
        ConfigError::key(
            key,
            format!("the URL's user name or password cannot be read unambiguously; {ENCODE_HINT}"),
        )
    };
    if rest.contains('#') {
        return Err(refuse());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    if after.contains('@') || authority.matches('@').count() > 1 {
        return Err(refuse());
    }
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return Ok(());
    };
    if userinfo.contains('+') || !valid_percent_encoding(userinfo) {
        return Err(refuse());
    }
    Ok(())
}

fn valid_percent_encoding(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escaped = bytes.get(i + 1..i + 3);
            if !escaped.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value …` form: the same two options taken out.
fn preparse_key_value(conninfo: &str) -> (String, Extracted) {
    let mut extracted = Extracted::default();
    let mut kept = Vec::new();
    for token in conninfo.split_whitespace() {
        match token.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                extracted.verify = true;
                kept.push("sslmode=require".to_string());
            }
            Some(("sslrootcert", value)) => {
                extracted.root_cert = Some(value.trim_matches('\'').to_string());
            }
            _ => kept.push(token.to_string()),
        }
    }
    (kept.join(" "), extracted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_passwords_are_refused_without_echo() {
        for password in [
            "pw@S3CRET",
            "a@b#c%zz+/=",
            "slash/here",
            "q?mark",
            "100%sure",
            "a+b",
        ] {
            let url = format!("postgres://u:{password}@db.example.com:5432/postgres");
            let e = preparse("database.url", &url).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("percent-encode"), "{password}: {text}");
            for part in password.split(|c: char| !c.is_alphanumeric()) {
                if part.len() >= 3 {
                    assert!(!text.contains(part), "{password}: {text}");
                }
            }
        }
    }

    #[test]
    fn encoded_passwords_and_plain_urls_pass_unchanged() {
        for url in [
            "postgres://u:p%40ss%2Fw%23rd%25@db.example.com:5432/postgres",
            "postgres://u@localhost/db",
            "postgresql://localhost",
            "postgres://u:pw@h/db?sslmode=require&application_name=x",
        ] {
            let (cleaned, extracted) = preparse("database.url", url).unwrap();
            assert_eq!(cleaned, url);
            assert_eq!(extracted, Extracted::default());
        }
    }

    #[test]
    fn verify_modes_and_root_cert_are_taken_out() {
        let (cleaned, extracted) = preparse(
            "database.url",
            "postgres://u:pw@db.example.com/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            cleaned,
            "postgres://u:pw@db.example.com/db?connect_timeout=5&sslmode=require"
        );
        assert!(extracted.verify);
        assert_eq!(extracted.root_cert.as_deref(), Some("/etc/ca.crt"));
        let (cleaned, extracted) = preparse(
            "database.url",
            "host=db.example.com sslmode=verify-ca sslrootcert=/etc/ca.crt user=u",
        )
        .unwrap();
        assert_eq!(cleaned, "host=db.example.com sslmode=require user=u");
        assert!(extracted.verify);
        assert_eq!(extracted.root_cert.as_deref(), Some("/etc/ca.crt"));
    }
}
