//! Outgoing mail through one [`Mailer`]: SMTP (lettre) when `SMTP_URL` is set, otherwise one
//! RFC 5322 `.eml` file per message in the outbox folder.

use std::path::PathBuf;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::Error;

/// The sender address of every mail.
const FROM: &str = "Mamba Host Panel <no-reply@mamba.invalid>";

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP relay.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Outbox(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl Mailer {
    /// SMTP when `smtp_url` is given, the outbox folder otherwise (created if missing).
    pub fn new(smtp_url: Option<&str>, outbox: &std::path::Path) -> Result<Mailer, Error> {
        match smtp_url {
            Some(url) => AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map(|builder| Mailer::Smtp(builder.build()))
                .map_err(|e| Error::config("SMTP_URL", format!("{e}"))),
            None => {
                std::fs::create_dir_all(outbox).map_err(|e| {
                    Error::config(
                        "MAIL_OUTBOX_DIR",
                        format!("cannot create {}: {e}", outbox.display()),
                    )
                })?;
                Ok(Mailer::Outbox(
                    AsyncFileTransport::new(outbox),
                    outbox.to_owned(),
                ))
            }
        }
    }

    /// Sends a plain-text mail to `to`.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), Error> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| Error::Invalid("invalid email address".into()))?;
        let from: Mailbox = FROM
            .parse()
            .map_err(|_| Error::internal("mail sender address"))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| Error::Mail(e.to_string()))?;
        match self {
            Mailer::Smtp(transport) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| Error::Mail(e.to_string())),
            Mailer::Outbox(transport, _) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| Error::Mail(e.to_string())),
        }
    }
}
