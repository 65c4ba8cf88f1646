//! The connection file transfers travel on: a second HTTP/2 connection to the panel, made with
//! the control stream's own TLS configuration (the same certificate, admitted by the panel
//! exactly as the control connection is), dialled on the first transfer, reused by the ones
//! after it, and dialled again when it broke.
//!
//! Why not the control connection: HTTP/2 flow control has a window per connection besides the
//! one per stream. A download the panel's client stops reading fills its stream's window; a
//! few of them fill the connection's, and then nothing else may send on that connection — the
//! heartbeats and command acks of the control stream included, so the panel would drop the
//! node. On a connection of their own, transfers can only ever hold up each other.

use std::sync::Arc;

use proto::node::v1::node_control_client::NodeControlClient;
use proto::node::v1::{FileDown, FileUp, file_up};
use rustls::ClientConfig;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::QUEUE;

/// The transfers' connection of one control session.
pub struct Link {
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
    /// The connection, once dialled, with the number of its dial.
    client: Mutex<Option<(u64, NodeControlClient<Channel>)>>,
}

/// A `Files` stream as Wings holds it: what it sends up, what the panel sends down.
pub struct Stream {
    /// Answers and a read's bytes, towards the panel.
    pub tx: mpsc::Sender<FileUp>,
    /// A write's bytes, from the panel.
    pub inbound: Streaming<FileDown>,
}

impl Link {
    /// A link to `host:port` presenting what `tls` presents; nothing is dialled yet.
    pub fn new(host: &str, port: u16, tls: Arc<ClientConfig>) -> Link {
        Link {
            host: host.to_owned(),
            port,
            tls,
            client: Mutex::new(None),
        }
    }

    /// Opens the `Files` stream of request `id` (its first message, `open`, sent). A
    /// connection that broke since its last use is dialled again, once.
    pub async fn open(&self, id: &str) -> Result<Stream, String> {
        let mut last = String::new();
        for _ in 0..2 {
            let (dial, mut client) = self.client().await?;
            let (tx, rx) = mpsc::channel(QUEUE);
            // The channel is new and empty: this cannot fail for lack of room.
            let _ = tx.try_send(FileUp {
                kind: Some(file_up::Kind::Open(id.to_owned())),
            });
            match client.files(ReceiverStream::new(rx)).await {
                Ok(response) => {
                    return Ok(Stream {
                        tx,
                        inbound: response.into_inner(),
                    });
                }
                // The panel's answer on a live connection: no point in asking again.
                Err(status) if !broken(&status) => return Err(crate::agent::describe(&status)),
                Err(status) => {
                    last = crate::agent::describe(&status);
                    self.forget(dial).await;
                }
            }
        }
        Err(last)
    }

    /// The connection, dialled if there is none.
    async fn client(&self) -> Result<(u64, NodeControlClient<Channel>), String> {
        let mut slot = self.client.lock().await;
        if let Some((dial, client)) = slot.as_ref() {
            return Ok((*dial, client.clone()));
        }
        let (client, _) = crate::tls::connect(
            &self.host,
            self.port,
            self.tls.clone(),
            crate::tls::Purpose::Transfers,
        )
        .await
        .map_err(|e| e.to_string())?;
        let dial = rand::random();
        *slot = Some((dial, client.clone()));
        Ok((dial, client))
    }

    /// Drops connection `dial` (unless another transfer already dialled a new one).
    async fn forget(&self, dial: u64) {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|(current, _)| *current == dial) {
            *slot = None;
        }
    }
}

/// Whether a failed call says the connection is gone (rather than the panel refusing).
fn broken(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown
    ) && !status.message().starts_with("shutting_down")
}
