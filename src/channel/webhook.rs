//! Webhooks: the JSON payload, a Slack message, or a template; every request
//! carries `webhook-id` and `webhook-timestamp`, and `webhook-signature` when
//! a secret is set (Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::error::DeliveryError;
use crate::config::{WebhookChannel, WebhookFormat};
use crate::notification::{AlertState, Notification};
use crate::secret::Secret;

pub struct Webhook {
    url: reqwest::Url,
    format: WebhookFormat,
    secret: Option<Vec<u8>>,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    env: minijinja::Environment<'static>,
}

impl Webhook {
    pub fn build(cfg: &WebhookChannel) -> Result<Webhook, String> {
        crate::tls::install_crypto();
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("bad url: {e}"))?;
        let secret = match &cfg.secret {
            Some(r) => Some(signing_key(&r.resolve()?)),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")))
            // A redirect is never followed: a client would turn the POST into
            // a GET (or re-send the body, signature and headers to another
            // host) and count the answer to that as delivered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let mut env = super::template::environment();
        if let WebhookFormat::Template { body, .. } = &cfg.format {
            env.add_template_owned("body", body.clone())
                .map_err(|e| format!("body template: {}", super::template::describe(&e)))?;
        }
        Ok(Webhook {
            url,
            format: cfg.format.clone(),
            secret,
            headers: crate::secret::header_map(&cfg.headers)?,
            client,
            env,
        })
    }

    /// The request body and its content type.
    pub fn body(&self, n: &Notification) -> Result<(Vec<u8>, String), DeliveryError> {
        match &self.format {
            WebhookFormat::Json => Ok((
                serde_json::to_vec(n).map_err(|e| DeliveryError::fatal(e.to_string()))?,
                "application/json".into(),
            )),
            WebhookFormat::Slack => {
                let icon = match n.state {
                    AlertState::Firing => ":rotating_light:",
                    AlertState::Resolved => ":white_check_mark:",
                };
                // Text from data never turns into markup: `<!channel>` and
                // `<url|label>` are escaped, and only http(s) links are made.
                let mut text = format!(
                    "{icon} *[{}]* {}",
                    crate::notification::prefix(n),
                    slack_escape(&n.summary)
                );
                // The essentials, as in the email: what changed, where.
                for (k, from, to) in super::message::changes(n) {
                    let (k, from, to) = (slack_escape(&k), slack_escape(&from), slack_escape(&to));
                    text.push_str(&format!("\n{k}: {from} → {to}"));
                }
                text.push_str(&format!(
                    "\nSource: {} · Key: {}",
                    slack_escape(&n.source),
                    slack_escape(&n.key)
                ));
                if let Some(l) = super::message::web_link(n) {
                    text.push_str(&format!("\n<{}>", slack_escape(&l)));
                }
                let v = serde_json::json!({ "text": text });
                Ok((v.to_string().into_bytes(), "application/json".into()))
            }
            WebhookFormat::Template { content_type, .. } => {
                let ctx = minijinja::Value::from(minijinja::value::Serde(n));
                let t = self
                    .env
                    .get_template("body")
                    .map_err(|e| DeliveryError::fatal(e.to_string()))?;
                let body = t.render(ctx).map_err(|e| {
                    DeliveryError::fatal(format!(
                        "the body template failed: {}",
                        super::template::describe(&e)
                    ))
                })?;
                Ok((body.into_bytes(), content_type.clone()))
            }
        }
    }

    pub async fn send(&self, n: &Notification) -> Result<String, DeliveryError> {
        let (body, content_type) = self.body(n)?;
        let ts = chrono::Utc::now().timestamp().to_string();
        let mut req = self
            .client
            .post(self.url.clone())
            .header("content-type", content_type)
            .header("webhook-id", &n.id)
            .header("webhook-timestamp", &ts);
        if let Some(key) = &self.secret {
            req = req.header("webhook-signature", sign(key, &n.id, &ts, &body));
        }
        req = req.headers(self.headers.clone());
        let failed = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            DeliveryError::down(format!("{what}: {}", super::error::error_chain(&e)))
        };
        let mut resp = req.body(body).send().await.map_err(failed)?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| {
                let to = self.url.join(l).map_or(l.to_string(), |u| u.to_string());
                format!(" to {}", crate::secret::mask_url(&to))
            })
            .unwrap_or_default();
        // The answer is read up to a limit, so a server sending gigabytes
        // costs 64 KiB; the client's timeout covers the whole exchange.
        let mut read = Vec::new();
        while read.len() < MAX_ANSWER
            && let Some(chunk) = resp.chunk().await.map_err(failed)?
        {
            read.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER - read.len())]);
        }
        drop(resp);
        // What the receiver said is stored and shown: a URL it echoes is
        // masked too.
        let text: String = crate::secret::mask_text(&String::from_utf8_lossy(&read))
            .chars()
            .take(300)
            .collect();
        let answer = format!("HTTP {} {}", status.as_u16(), text.trim());
        if status.is_redirection() {
            return Err(DeliveryError::fatal(format!(
                "HTTP {}: the webhook URL redirects{location}; redirects are not followed, so nothing was delivered. Set the channel's `url` to where it redirects",
                status.as_u16()
            )));
        }
        if status.is_success() {
            Ok(answer)
        } else if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
            // Overloaded or unreachable behind a gateway: the channel's.
            Err(DeliveryError::down(answer))
        } else if status.is_server_error() {
            Err(DeliveryError::retry(answer))
        } else {
            Err(DeliveryError::fatal(answer))
        }
    }
}

/// A `whsec_`-prefixed secret is base64 (Standard Webhooks); any other
/// secret is used as its bytes.
pub fn signing_key(secret: &Secret) -> Vec<u8> {
    let s = secret.expose();
    if let Some(b64) = s.strip_prefix("whsec_")
        && let Ok(k) = base64::engine::general_purpose::STANDARD.decode(b64)
    {
        return k;
    }
    s.as_bytes().to_vec()
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// The most of a receiver's answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Slack's markup characters in text: `&`, `<`, `>`.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text from data never turns into Slack markup, and only http(s)
    /// links are made.
    #[test]
    fn slack_text_is_escaped_and_links_are_http_only() {
        let cfg = WebhookChannel {
            url: "https://hooks.example.org/x".into(),
            format: WebhookFormat::Slack,
            secret: None,
            headers: vec![],
            timeout: Duration::from_secs(5),
        };
        let hook = Webhook::build(&cfg).unwrap();
        let mut n = crate::sendtest::notification("hook");
        n.summary = "<!channel> see <https://evil.example|Official notice> & more".into();
        n.link = Some("javascript:alert(1)".into());
        let (body, _) = hook.body(&n).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.contains(
                "&lt;!channel&gt; see &lt;https://evil.example|Official notice&gt; &amp; more\n"
            ),
            "{text}"
        );
        assert!(!text.contains("javascript"), "{text}");
        n.link = Some("https://example.org/a?b=1&c=<2>".into());
        let (body, _) = hook.body(&n).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .ends_with("\n<https://example.org/a?b=1&amp;c=%3C2%3E>"),
            "{}",
            v["text"]
        );
    }
}
