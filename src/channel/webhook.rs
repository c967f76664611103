//! Webhooks: the JSON payload, a Slack message, or a template; every request
//! carries `webhook-id` and `webhook-timestamp`, and `webhook-signature` when
//! a secret is set (Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::DeliveryError;
use crate::config::{WebhookChannel, WebhookFormat};
use crate::engine::{AlertState, Notification};
use crate::secret::Secret;

pub struct Webhook {
    url: reqwest::Url,
    format: WebhookFormat,
    secret: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    client: reqwest::Client,
    env: minijinja::Environment<'static>,
}

/// Makes ring the TLS crypto provider of the process; calling again is
/// harmless. reqwest is built without one of its own.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Webhook {
    pub fn build(cfg: &WebhookChannel) -> Result<Webhook, String> {
        install_crypto();
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("bad url: {e}"))?;
        let secret = match &cfg.secret {
            Some(r) => Some(signing_key(&r.resolve()?)),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
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
            headers: cfg.headers.clone(),
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
                let mut text = format!("{icon} *[{}]* {}", super::email::prefix(n), n.summary);
                if let Some(l) = &n.link {
                    text.push_str(&format!("\n<{l}>"));
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
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            DeliveryError::retry(format!("{what}: {}", super::error_chain(&e)))
        })?;
        let status = resp.status();
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let answer = format!("HTTP {} {}", status.as_u16(), text.trim());
        if status.is_success() {
            Ok(answer)
        } else if status.as_u16() == 429 || status.is_server_error() {
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
