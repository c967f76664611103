//! A notification as people read it, in an email's plain-text and HTML
//! parts and in chat: the body (HTML as text), then what the body does not
//! already say, each value once and empty ones left out; the HTML part as a
//! small table of what changed (from → to), source, key, link and times.
//! Text from data is escaped in HTML, and only http(s) links are made.

use std::fmt::Write as _;

use serde_json::Value;

use crate::html::{escape, readable};
use crate::notification::{Notification, format_ts, is_blank};

/// A value as shown: text as text (HTML stripped, white space folded, cut
/// when long), anything else as JSON.
fn shown(v: &Value, max: usize) -> String {
    match v {
        Value::String(s) => readable(s, max).into_owned(),
        other => other.to_string(),
    }
}

/// The fields that changed, as (field, from, to); a field gone is "-".
pub fn changes(n: &Notification) -> Vec<(String, String, String)> {
    let Some(prev) = &n.prev else {
        return Vec::new();
    };
    prev.iter()
        .map(|(k, was)| {
            let now = crate::record::get(&n.fields, k).map_or("-".to_string(), |v| shown(v, 200));
            (k.clone(), shown(was, 200), now)
        })
        .collect()
}

/// The link, when it is an http(s) URL.
pub fn web_link(n: &Notification) -> Option<String> {
    let u = url::Url::parse(n.link.as_deref()?).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.to_string())
}

/// The fields a body does not show yet, non-empty, with their text.
fn other_fields<'a>(n: &'a Notification, body: &str) -> Vec<(&'a str, String)> {
    (n.fields.iter())
        .filter(|(_, v)| !is_blank(v))
        .map(|(k, v)| (k.as_str(), shown(v, 1000)))
        .filter(|(k, text)| {
            let said = [n.link.as_deref(), Some(&*n.source), Some(n.key.as_str())];
            !said.contains(&Some(text.as_str())) && !body.contains(&format!("{k} = {text}"))
        })
        .collect()
}

/// The plain-text part: the body as text, then the rest, each value once.
pub fn text(n: &Notification) -> String {
    let body = if n.body.contains(['<', '&']) {
        crate::html::to_text(&n.body)
    } else {
        n.body.clone()
    };
    let mut b = body.trim_end().to_string();
    b.push_str("\n\n-- \n");
    let mut line = |label: &str, value: &str| {
        if !value.is_empty() && !body.contains(value) {
            let _ = writeln!(b, "{label}: {value}");
        }
    };
    line("Rule", &format!("{} ({})", n.rule, n.title));
    line("Source", &n.source);
    line("Key", &n.key);
    line("Link", n.link.as_deref().unwrap_or(""));
    if n.started_at != n.at {
        line("Since", &format_ts(n.started_at));
    }
    line("At", &format_ts(n.at));
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line("Labels", &labels.join(", "));
    let others = other_fields(n, &body);
    if !others.is_empty() {
        b.push_str("Fields:\n");
        for (k, v) in others {
            let _ = writeln!(b, "  {k} = {v}");
        }
    }
    let evidence = evidence(n);
    if !evidence.is_empty() {
        b.push_str("Evidence:\n");
        for (k, v) in evidence {
            let _ = writeln!(b, "  {k}: {v}");
        }
    }
    let _ = writeln!(b, "Alert id: {}", n.id);
    b
}

/// The evidence that is there, as (name, value), in the payload's order.
fn evidence(n: &Notification) -> Vec<(&'static str, String)> {
    let e = &n.evidence;
    let http = e.http.as_ref().map(|h| {
        let mut s = format!("{}", h.status);
        if let Some(t) = &h.etag {
            s.push_str(&format!(", ETag {t}"));
        }
        if let Some(t) = &h.last_modified {
            s.push_str(&format!(", Last-Modified {t}"));
        }
        s
    });
    let matched = e.matched.iter().map(|m| {
        let what = match (&m.phrase, &m.regex) {
            (Some(p), _) => format!("\"{p}\""),
            (_, Some(r)) => format!("/{r}/"),
            _ => String::new(),
        };
        (
            "matched",
            Some(format!("{what} in {}: {}", m.field, m.text)),
        )
    });
    [
        ("location", e.location.clone()),
        ("url", e.url.clone()),
        ("document_sha256", e.document_sha256.clone()),
        ("read_at", e.read_at.clone()),
        ("http", http),
    ]
    .into_iter()
    .chain(matched)
    .chain([("rules_sha256", e.rules_sha256.clone())])
    .filter_map(|(k, v)| Some((k, v?)))
    .collect()
}

/// The HTML part: the summary, a table of what changed and where, the
/// fields, and the alert id. Every text from data is escaped.
pub fn html(n: &Notification) -> String {
    let mut h = String::with_capacity(2048);
    h.push_str("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n");
    let _ = writeln!(
        h,
        "<p><strong>[{}]</strong> {}</p>",
        escape(&crate::notification::prefix(n)),
        escape(&n.summary)
    );
    h.push_str("<table cellpadding=\"4\" style=\"border-collapse:collapse\">\n");
    let mut row = |label: &str, cell: String| {
        let _ = writeln!(h, "<tr><th align=\"left\">{label}</th><td>{cell}</td></tr>");
    };
    for (k, from, to) in changes(n) {
        row(
            "Changed",
            format!("{}: {} &rarr; {}", escape(&k), escape(&from), escape(&to)),
        );
    }
    row(
        "Rule",
        format!("{} ({})", escape(&n.title), escape(&n.rule)),
    );
    row("Source", escape(&n.source));
    row("Key", escape(&n.key));
    if let Some(l) = web_link(n) {
        row("Link", format!("<a href=\"{0}\">{0}</a>", escape(&l)));
    }
    if n.started_at != n.at {
        row("Since", format_ts(n.started_at));
    }
    row("At", format_ts(n.at));
    if !n.labels.is_empty() {
        let labels: Vec<String> = (n.labels.iter())
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        row("Labels", labels.join(", "));
    }
    let evidence: Vec<String> = (evidence(n).into_iter())
        .map(|(k, v)| format!("{k}: <code>{}</code>", escape(&v)))
        .collect();
    if !evidence.is_empty() {
        row("Evidence", evidence.join("<br>"));
    }
    h.push_str("</table>\n");
    let fields: Vec<(&str, String)> = (n.fields.iter())
        .filter(|(_, v)| !is_blank(v))
        .map(|(k, v)| (k.as_str(), shown(v, 1000)))
        .collect();
    if !fields.is_empty() {
        h.push_str("<h4>Fields</h4>\n<table cellpadding=\"4\">\n");
        for (k, v) in fields {
            let _ = writeln!(
                h,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(k),
                escape(&v)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(h, "<p style=\"color:#666\">Alert id {}</p>", escape(&n.id));
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmailChannel, SmtpConfig, SmtpTls};

    /// A feed item as feeds send them: HTML in its summary, empty fields,
    /// and a title that tries to be markup.
    fn feed_item() -> Notification {
        let mut n = crate::sendtest::notification("mail");
        let fields = serde_json::json!({
            "id": "n5",
            "title": "Export controls <script>alert(1)</script> & more",
            "summary": "<p>New <b>export-control</b> rules&nbsp;on gallium.</p>",
            "content": null,
            "authors": [],
            "categories": {},
            "link": "https://example.org/n5?a=1&b=2",
        });
        n.fields = std::sync::Arc::new(fields.as_object().unwrap().clone());
        n.summary = "Export controls <script>alert(1)</script> & more".into();
        n.body = "See <b>the statement</b>.\n".into();
        n.link = Some("https://example.org/n5?a=1&b=2".into());
        n
    }

    #[test]
    fn an_email_has_a_readable_text_part_and_an_escaped_html_alternative() {
        let cfg = EmailChannel {
            smtp: SmtpConfig {
                host: "127.0.0.1".into(),
                port: 25,
                tls: SmtpTls::None,
                username: None,
                password: None,
                timeout: std::time::Duration::from_secs(5),
            },
            from: "alerts@example.org".into(),
            to: vec!["team@example.org".into()],
        };
        let email = super::super::email::Email::build(&cfg).unwrap();
        let n = feed_item();
        let raw = email.message(&n).unwrap().formatted();
        let mime = mailparse::parse_mail(&raw).unwrap();
        assert_eq!(mime.ctype.mimetype, "multipart/alternative");
        let types: Vec<&str> = mime
            .subparts
            .iter()
            .map(|p| p.ctype.mimetype.as_str())
            .collect();
        assert_eq!(types, ["text/plain", "text/html"]);
        let text = mime.subparts[0].get_body().unwrap().replace("\r\n", "\n");
        let html = mime.subparts[1].get_body().unwrap();

        // Text: no markup, no empty fields, each value once.
        assert!(text.starts_with("See the statement.\n"), "{text}");
        assert!(
            text.contains("summary = New export-control rules on gallium."),
            "{text}"
        );
        for absent in [
            "<p>", "<b>", "&nbsp;", "null", "[]", "{}", "content", "authors",
        ] {
            assert!(!text.contains(absent), "text has {absent:?}:\n{text}");
        }
        for once in ["https://example.org/n5?a=1&b=2", "n5?", "gallium"] {
            assert_eq!(text.matches(once).count(), 1, "{once:?}:\n{text}");
        }
        assert!(text.contains(&format!("Alert id: {}", n.id)), "{text}");

        // HTML: data escaped, the link an http(s) link, empty fields left out.
        assert!(
            html.contains("Export controls &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("<a href=\"https://example.org/n5?a=1&amp;b=2\">"),
            "{html}"
        );
        assert!(
            !html.contains(">content<") && !html.contains(">authors<"),
            "{html}"
        );
        let mut js = n.clone();
        js.link = Some("javascript:alert(1)".into());
        assert!(!super::html(&js).contains("javascript:"));
    }

    #[test]
    fn what_changed_is_shown_from_and_to() {
        let mut n = crate::sendtest::notification("mail");
        let now = serde_json::json!({"partner": "CN", "rate_pct": 160});
        let was = serde_json::json!({"partner": "CN", "rate_pct": 145});
        n.fields = std::sync::Arc::new(now.as_object().unwrap().clone());
        n.prev = Some(crate::record::Changed::new(
            std::sync::Arc::new(was.as_object().unwrap().clone()),
            n.fields.clone(),
        ));
        assert_eq!(
            changes(&n),
            [("rate_pct".to_string(), "145".to_string(), "160".to_string())]
        );
        assert!(html(&n).contains("rate_pct: 145 &rarr; 160"));
    }
}
