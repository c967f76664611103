//! Email over SMTP with lettre: TLS unless the server is on loopback,
//! credentials from env or file. Subject `[FIRING critical] summary`, a
//! plain-text part and an HTML alternative ([`super::message`]), and the
//! notification id in the Message-ID.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::error::DeliveryError;
use crate::config::{EmailChannel, SmtpTls};
use crate::notification::Notification;

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// For the whole send (connect, TLS, the SMTP dialogue): lettre's own
    /// timeout is per read, which a server trickling bytes never reaches.
    deadline: std::time::Duration,
}

impl Email {
    pub fn build(cfg: &EmailChannel) -> Result<Email, String> {
        crate::tls::install_crypto();
        let s = &cfg.smtp;
        let mut b = match s.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .map_err(|e| e.to_string())?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(|e| e.to_string())?
            }
            SmtpTls::None => {
                // Validation refuses this for other hosts; checked again
                // here because a password must never cross a network in clear.
                if !crate::config::is_loopback_host(&s.host) {
                    return Err(format!(
                        "tls: none is allowed only for loopback hosts, not {}",
                        s.host
                    ));
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            }
        };
        b = b.port(s.port).timeout(Some(s.timeout));
        if let Some(user) = &s.username {
            let password = match &s.password {
                Some(r) => r.resolve()?.expose().to_string(),
                None => String::new(),
            };
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        let from: Mailbox = cfg.from.parse().map_err(|e| format!("from: {e}"))?;
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| format!("to {t}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Email {
            transport: b.build(),
            from,
            to,
            deadline: s.timeout,
        })
    }

    /// The message: a plain-text part and an HTML alternative (see
    /// [`super::message`]).
    pub fn message(&self, n: &Notification) -> Result<Message, DeliveryError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject(n))
            .message_id(Some(format!("<{}@tocsin>", n.id)));
        for t in &self.to {
            b = b.to(t.clone());
        }
        let parts =
            MultiPart::alternative_plain_html(super::message::text(n), super::message::html(n));
        b.multipart(parts)
            .map_err(|e| DeliveryError::fatal(format!("cannot build the message: {e}")))
    }

    pub async fn send(&self, n: &Notification) -> Result<String, DeliveryError> {
        let msg = self.message(n)?;
        let sent = tokio::time::timeout(self.deadline, self.transport.send(msg)).await;
        let Ok(sent) = sent else {
            return Err(DeliveryError::down(format!(
                "no complete answer from the SMTP server within {}s (timeout)",
                self.deadline.as_secs_f64()
            )));
        };
        match sent {
            Ok(resp) => Ok(format!(
                "{} {}",
                resp.code(),
                resp.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) => {
                let text = super::error::error_chain(&e);
                // 5xx is the server's final word; 4xx, network errors and
                // timeouts may pass on a later try.
                if e.is_permanent() {
                    Err(DeliveryError::fatal(text))
                } else if e.is_response() {
                    Err(DeliveryError::retry(text))
                } else {
                    // No answer at all (connection, TLS, timeout): the server's.
                    Err(DeliveryError::down(text))
                }
            }
        }
    }
}

/// One line: control characters (CR, LF among them) become spaces, so a
/// summary can never start a new header.
pub fn subject(n: &Notification) -> String {
    let summary: String = n
        .summary
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let summary = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("[{}] {summary}", crate::notification::prefix(n))
}
