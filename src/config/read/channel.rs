//! The channels of a config file: email (SMTP), webhook (and its
//! headers and secrets), file, and digests.

use super::*;

pub(super) fn channel(n: &Node, dir: &Path, d: &mut Diags) -> Option<ChannelConfig> {
    let mut m = MapReader::new(n, "channel", d)?;
    let name = name(&mut m, "channel", d);
    let ty = required(
        &mut m,
        "type",
        "write `type:` with one of: email, webhook, file, log",
        d,
    )
    .and_then(|t| one_of(t, "channel type", &["email", "webhook", "file", "log"], d));
    let digest = m.get("digest").and_then(|n| digest(n, d));
    let retry_budget = m
        .get("retry_budget")
        .and_then(|n| duration(n, "retry_budget", d))
        .unwrap_or(Duration::from_secs(24 * 3600));
    let kind = match ty {
        Some("email") => email(&mut m, d).map(ChannelKind::Email),
        Some("webhook") => webhook(&mut m, d).map(ChannelKind::Webhook),
        Some("file") => required(&mut m, "path", "write `path: alerts.jsonl`", d)
            .and_then(|p| string(p, "path", d))
            .map(|p| ChannelKind::File { path: dir.join(p) }),
        Some("log") => Some(ChannelKind::Log),
        _ => {
            m.allow(&[
                "smtp",
                "from",
                "to",
                "url",
                "format",
                "secret_env",
                "secret_file",
                "body",
                "headers",
                "path",
                "timeout",
                "content_type",
            ]);
            None
        }
    };
    m.finish(d);
    Some(ChannelConfig {
        name: name?,
        kind: kind?,
        digest,
        retry_budget,
    })
}

pub(super) fn secret(
    m: &mut MapReader,
    stem: &'static str,
    stem_env: &'static str,
    stem_file: &'static str,
    d: &mut Diags,
) -> Option<SecretRef> {
    if let Some(n) = m.key_node(stem) {
        d.error(n.pos(), format!("`{stem}` may not be written in the config in clear"), Some(format!("put it in an environment variable and write `{stem_env}: VAR`, or in a file and write `{stem_file}: /path`")));
        m.allow(&[stem]);
    }
    let env = m.get(stem_env).and_then(|n| string(n, stem_env, d));
    let file = m.get(stem_file).and_then(|n| string(n, stem_file, d));
    match (env, file) {
        (Some(_), Some(_)) => {
            let n = m.key_node(stem_file).map(Node::pos).unwrap_or_default();
            d.error(
                n,
                format!("both `{stem_env}` and `{stem_file}` are set"),
                Some("keep one of them".into()),
            );
            None
        }
        (Some(e), None) => Some(SecretRef::Env(e)),
        (None, Some(f)) => Some(SecretRef::File(PathBuf::from(f))),
        (None, None) => None,
    }
}

pub(super) fn timeout(m: &mut MapReader, default: Duration, d: &mut Diags) -> Duration {
    m.get("timeout")
        .and_then(|n| duration(n, "timeout", d))
        .unwrap_or(default)
}

fn email(m: &mut MapReader, d: &mut Diags) -> Option<EmailChannel> {
    let smtp = required(
        m,
        "smtp",
        "add `smtp: { host: smtp.example.org, port: 587, tls: starttls }`",
        d,
    )
    .and_then(|n| smtp(n, d));
    let from = required(
        m,
        "from",
        "write `from: \"tocsin <alerts@example.org>\"`",
        d,
    )
    .and_then(|n| mailbox(n, "from", d));
    let to_node = required(m, "to", "write `to: [team@example.org]`", d);
    let mut to = Vec::new();
    if let Some(n) = to_node {
        for (addr, pos) in strings(n, "to", d) {
            if addr.parse::<lettre::message::Mailbox>().is_err() {
                d.error(
                    pos,
                    format!("`{addr}` is not an email address"),
                    Some("write `name@example.org` or `Name <name@example.org>`".into()),
                );
            }
            to.push(addr);
        }
        if to.is_empty() {
            d.error(
                n.pos(),
                "`to` lists no recipient",
                Some("write `to: [team@example.org]`".into()),
            );
        }
    }
    Some(EmailChannel {
        smtp: smtp?,
        from: from?,
        to,
    })
}

fn mailbox(n: &Node, what: &str, d: &mut Diags) -> Option<String> {
    let s = string(n, what, d)?;
    if s.parse::<lettre::message::Mailbox>().is_err() {
        d.error(
            n.pos(),
            format!("`{s}` is not an email address"),
            Some("write `alerts@example.org` or `tocsin <alerts@example.org>`".into()),
        );
        return None;
    }
    Some(s)
}

fn smtp(n: &Node, d: &mut Diags) -> Option<SmtpConfig> {
    let mut m = MapReader::new(n, "smtp", d)?;
    let host_node = required(&mut m, "host", "write `host: smtp.example.org`", d);
    let host = host_node.and_then(|h| string(h, "host", d));
    let tls_node = m.get("tls");
    let tls = match tls_node.and_then(|t| one_of(t, "tls mode", &["starttls", "tls", "none"], d)) {
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        _ => SmtpTls::Starttls,
    };
    let default_port = match tls {
        SmtpTls::Tls => 465,
        SmtpTls::Starttls => 587,
        SmtpTls::None => 25,
    };
    let port = match m.get("port") {
        Some(p) => match p.kind {
            Kind::Int(i) if (1..=65535).contains(&i) => i as u16,
            _ => {
                d.error(
                    p.pos(),
                    format!(
                        "port must be a number from 1 to 65535, found {}",
                        describe(p)
                    ),
                    None,
                );
                default_port
            }
        },
        None => default_port,
    };
    if let (SmtpTls::None, Some(h), Some(tn)) = (tls, &host, tls_node)
        && !is_loopback_host(h)
    {
        d.error(tn.pos(), format!("`tls: none` sends mail and passwords in clear; it is allowed only for a loopback host, not `{h}`"), Some("use `tls: starttls` (port 587) or `tls: tls` (port 465)".into()));
    }
    let username = m.get("username").and_then(|u| string(u, "username", d));
    let password = secret(&mut m, "password", "password_env", "password_file", d);
    let timeout = timeout(&mut m, Duration::from_secs(30), d);
    m.finish(d);
    Some(SmtpConfig {
        host: host?,
        port,
        tls,
        username,
        password,
        timeout,
    })
}

fn webhook(m: &mut MapReader, d: &mut Diags) -> Option<WebhookChannel> {
    let url_node = required(m, "url", "write `url: https://hooks.example.org/tocsin`", d);
    let url = url_node.and_then(|n| string(n, "url", d));
    if let (Some(u), Some(n)) = (&url, url_node) {
        match reqwest::Url::parse(u) {
            Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
            _ => d.error(
                n.pos(),
                format!("`{u}` is not an http(s) URL"),
                Some("write `url: https://host/path`".into()),
            ),
        }
    }
    let format_node = m.get("format");
    let fmt = format_node
        .and_then(|n| one_of(n, "webhook format", &["json", "slack", "template"], d))
        .unwrap_or("json");
    let body = m.get("body");
    let content_type = m
        .get("content_type")
        .and_then(|n| string(n, "content_type", d))
        .unwrap_or_else(|| "application/json".into());
    let format = match fmt {
        "slack" => WebhookFormat::Slack,
        "template" => match body.and_then(|b| string(b, "body", d)) {
            Some(body_text) => {
                if let Some(n) = body {
                    crate::channel::template::check_at(&body_text, n, "body", d);
                }
                WebhookFormat::Template {
                    body: body_text,
                    content_type,
                }
            }
            None => {
                let pos = format_node.map(Node::pos).unwrap_or_default();
                d.error(
                    pos,
                    "`format: template` needs a `body:` template",
                    Some("add `body: '{\"text\": \"{{ summary }}\"}'`".into()),
                );
                WebhookFormat::Json
            }
        },
        _ => WebhookFormat::Json,
    };
    let secret = secret(m, "secret", "secret_env", "secret_file", d);
    let headers = m.get("headers").map(|h| headers(h, d)).unwrap_or_default();
    let timeout = timeout(m, Duration::from_secs(30), d);
    Some(WebhookChannel {
        url: url?,
        format,
        secret,
        headers,
        timeout,
    })
}

/// `headers: { Name: value, Name_env: VAR, Name_file: /path }`, each a
/// valid HTTP header (a request with an invalid one could never be sent);
/// a value from `_env` or `_file` is a secret, read when the source or
/// channel starts.
pub(super) fn headers(n: &Node, d: &mut Diags) -> Vec<(String, crate::secret::HeaderValue)> {
    use crate::secret::HeaderValue;
    let mut out = Vec::new();
    for (k, v) in entries(n, "headers", d) {
        let (Some(key), Some(value)) = (
            string(k, "a header name", d),
            string(v, "a header value", d),
        ) else {
            continue;
        };
        let (name, secret) = if let Some(n) = key.strip_suffix("_env") {
            (n.to_string(), Some(SecretRef::Env(value.clone())))
        } else if let Some(n) = key.strip_suffix("_file") {
            (n.to_string(), Some(SecretRef::File(PathBuf::from(&value))))
        } else {
            (key.clone(), None)
        };
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            d.error(
                k.pos(),
                format!("`{name}` is not a valid HTTP header name"),
                Some("a header name is letters, digits and `-` (and `!#$%&'*+.^_`|~`), no spaces or colons, e.g. `X-Team`; a value from a secret is written `X-Api-Key_env: VAR` or `X-Api-Key_file: /path`".into()),
            );
        } else if let Some(r) = secret {
            out.push((name, HeaderValue::Secret(r)));
        } else if reqwest::header::HeaderValue::from_str(&value).is_err() {
            d.error(
                v.pos(),
                format!("the value of header `{name}` is not a valid HTTP header value"),
                Some("a header value is one line of visible characters and spaces".into()),
            );
        } else {
            out.push((name, HeaderValue::Plain(value)));
        }
    }
    out
}

/// `digest: { schedule: "0 8 * * MON-FRI", timezone: Europe/Brussels }` or
/// `digest: { every: 1h }`.
fn digest(n: &Node, d: &mut Diags) -> Option<crate::schedule::Schedule> {
    let mut m = MapReader::new(n, "digest", d)?;
    let s = schedule(&mut m, n.pos(), "a digest", "digest: { every: 1h }", d);
    m.finish(d);
    s
}
