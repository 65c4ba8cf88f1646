//! A slow SMTP server on loopback, for tests about what mail costs a request: it speaks just
//! enough SMTP for lettre, takes a set time to accept each message and keeps the recipients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Lines one connection may send before it is dropped (a test sends a handful per mail).
const MAX_LINES: usize = 100_000;

/// A running sink; stops when dropped.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    recipients: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    /// Listens on a free loopback port; each message takes `delay` to be accepted.
    pub async fn start(delay: Duration) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let recipients = Arc::new(Mutex::new(Vec::new()));
        let kept = recipients.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, delay, kept.clone()));
            }
        });
        SmtpSink {
            port,
            recipients,
            task,
        }
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP), for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every recipient of every accepted message, in order.
    pub fn recipients(&self) -> Vec<String> {
        self.recipients
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, delay: Duration, kept: Arc<Mutex<Vec<String>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut in_data = false;
    for _ in 0..MAX_LINES {
        let Ok(Some(line)) = lines.next_line().await else {
            return;
        };
        let reply: &[u8] = if in_data {
            if line != "." {
                continue;
            }
            in_data = false;
            tokio::time::sleep(delay).await;
            if let Ok(mut kept) = kept.lock() {
                kept.append(&mut pending);
            }
            b"250 queued\r\n"
        } else {
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "RCPT" => {
                    let address = line
                        .split_once('<')
                        .and_then(|(_, rest)| rest.split_once('>'))
                        .map_or(String::new(), |(address, _)| address.to_owned());
                    pending.push(address);
                    b"250 ok\r\n"
                }
                "DATA" => {
                    in_data = true;
                    b"354 end with <CRLF>.<CRLF>\r\n"
                }
                "QUIT" => {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                }
                "MAIL" | "RSET" | "NOOP" => b"250 ok\r\n",
                _ => b"502 not implemented\r\n",
            }
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
