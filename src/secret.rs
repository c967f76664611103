//! Secrets come from an environment variable (`*_env`) or a file (`*_file`,
//! e.g. systemd credentials), never from the config in clear, and are
//! never empty. A resolved secret never prints: its `Debug` and `Display`
//! are redacted. Credentials written into URLs (`user:pass@`, tokens in
//! query strings or in Slack-style paths) are masked wherever a URL is
//! shown or stored, by [`mask_url`] and [`mask_text`].

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v)),
                Ok(_) => Err(format!(
                    "environment variable {name} is empty: a secret that anyone can guess"
                )),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            SecretRef::File(path) => match std::fs::read_to_string(path) {
                // A trailing newline from `echo secret > file` is not part of it.
                Ok(v) if v.trim().is_empty() => Err(format!(
                    "secret file {} is empty: a secret that anyone can guess; write the secret into it",
                    path.display()
                )),
                Ok(v) => Ok(Secret(v.trim_end_matches(['\r', '\n']).to_string())),
                Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
            },
        }
    }
}

/// An HTTP header's value as the config gives it: in clear, or from a
/// secret (`Name_env: VAR`, `Name_file: /path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    Plain(String),
    Secret(SecretRef),
}

/// Headers as sent: secrets resolved now and marked sensitive, so that no
/// debug output of the HTTP client shows them.
pub fn header_map(headers: &[(String, HeaderValue)]) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let mut v = match value {
            HeaderValue::Plain(v) => reqwest::header::HeaderValue::from_str(v),
            HeaderValue::Secret(r) => reqwest::header::HeaderValue::from_str(r.resolve()?.expose()),
        }
        .map_err(|_| format!("the value of header `{name}` is not a valid header value"))?;
        if matches!(value, HeaderValue::Secret(_)) {
            v.set_sensitive(true);
        }
        map.insert(n, v);
    }
    Ok(map)
}

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Query parameter names whose values are credentials.
const SECRET_PARAMS: [&str; 10] = [
    "key", "token", "secret", "pass", "pwd", "sig", "auth", "cred", "session", "code",
];

/// `url` with its credentials replaced by `***`: the user-info, the values
/// of query parameters named like credentials (`api_key`, `token`, `sig`,
/// ...) or that look like tokens, and path segments that look like tokens
/// (Slack's `/services/T0/B0/XXXX`, a Telegram `bot123:ABC`). Anything that
/// does not parse as a URL is masked as text.
pub fn mask_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return mask_userinfo(url);
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = SECRET_PARAMS.iter().any(|s| lower.contains(s)) || tokenish(&v);
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if let Some(segments) = u.path_segments() {
        let masked: Vec<String> = segments
            .map(|s| {
                if tokenish(s) {
                    "***".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        u.set_path(&masked.join("/"));
    }
    u.to_string().replace("%2A%2A%2A", "***")
}

/// Every URL in `text` masked with [`mask_url`]: for error messages and
/// anything else that may quote one.
pub fn mask_text(text: &str) -> String {
    static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>()]+"#).expect("a valid pattern")
    });
    URL.replace_all(text, |c: &regex::Captures| mask_url(&c[0]))
        .into_owned()
}

/// A token, as opposed to a word or a number: 16 characters or more of
/// letters, digits, `-`, `_`, `:` or `.`, with letters and digits both.
fn tokenish(s: &str) -> bool {
    s.len() >= 16
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// `scheme://user:pass@host` without the user-info, for text that is not a
/// valid URL.
fn mask_userinfo(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(i), Some(j)) if j > i && !s[i + 3..j].contains('/') => {
            format!("{}://***@{}", &s[..i], &s[j + 1..])
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        for (url, want) in [
            (
                "https://alice:hunter2@example.org/feed.xml",
                "https://***@example.org/feed.xml",
            ),
            (
                "https://example.org/rates?api_key=abc123&page=2",
                "https://example.org/rates?api_key=***&page=2",
            ),
            (
                "https://example.org/x?Token=zzz",
                "https://example.org/x?Token=***",
            ),
            (
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX1",
                "https://hooks.slack.com/services/T00000000/B00000000/***",
            ),
            (
                "https://api.telegram.org/bot123456:ABCdefGhIJKlmNoPQRsTUVwxyZ/sendMessage",
                "https://api.telegram.org/***/sendMessage",
            ),
            (
                "https://example.org/press/2026/rss.xml",
                "https://example.org/press/2026/rss.xml",
            ),
        ] {
            assert_eq!(mask_url(url), want, "{url}");
        }
        let t = mask_text(
            "error sending request for url (https://u:p4ss@h.example/x?sig=abc): connection refused",
        );
        assert!(
            !t.contains("p4ss") && !t.contains("abc") && t.contains("connection refused"),
            "{t}"
        );
    }

    #[test]
    fn empty_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "\n").unwrap();
        let e = SecretRef::File(f.clone()).resolve().unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(SecretRef::File(f).resolve().unwrap().expose(), "s3cret");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
