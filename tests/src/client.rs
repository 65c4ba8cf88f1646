//! A raw node client: Wings' own TLS and channel code, driven step by step, so tests can
//! present any certificate (or none) and watch exactly what the panel answers.

use std::net::SocketAddr;

use proto::node::v1::node_control_client::NodeControlClient;
use proto::node::v1::{
    Heartbeat, Hello, NodeMessage, PanelMessage, Welcome, node_message, panel_message,
};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// An open, welcomed node stream.
pub struct NodeClient {
    tx: mpsc::Sender<NodeMessage>,
    inbound: Streaming<PanelMessage>,
    /// The connection's client, for the `Files` streams it answers file requests on.
    pub client: NodeControlClient<tonic::transport::Channel>,
    /// What the panel said on admission.
    pub welcome: Welcome,
}

/// What the panel asks of a node.
#[derive(Debug)]
pub enum Request {
    /// A command, answered by an ack.
    Command(proto::node::v1::Command),
    /// A file request, answered on a `Files` stream.
    File(proto::node::v1::FileRequest),
}

/// Connects to the panel's node channel at `addr` trusting `ca`, presenting `identity`, sends
/// `Hello` and waits for `Welcome`. The error text carries the gRPC status and any TLS alert.
pub async fn dial(
    addr: SocketAddr,
    ca: &[CertificateDer<'static>],
    identity: Option<wings::tls::Identity>,
    heartbeat_secs: u32,
) -> Result<NodeClient, String> {
    let config = wings::tls::client_config(ca, identity).map_err(|e| e.to_string())?;
    dial_with(addr, config, heartbeat_secs).await
}

/// Like [`dial`] with a ready client configuration; reusing one reuses its TLS session cache,
/// so a second connection resumes the first one's session.
pub async fn dial_with(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    heartbeat_secs: u32,
) -> Result<NodeClient, String> {
    let connection = connect_idle(addr, config).await?;
    open(connection, hello(heartbeat_secs)).await
}

/// An admitted-or-not TLS + HTTP/2 connection to the panel that has opened no stream yet.
pub type IdleConnection = (
    NodeControlClient<tonic::transport::Channel>,
    wings::tls::FirstIoError,
);

/// Completes TLS and HTTP/2 with the panel at `addr` and opens no stream.
pub async fn connect_idle(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<IdleConnection, String> {
    // The simulated node answers file requests on the same connection (Wings uses a second).
    let purpose = wings::tls::Purpose::Transfers;
    wings::tls::connect("127.0.0.1", addr.port(), config, purpose)
        .await
        .map_err(|e| e.to_string())
}

/// The `Hello` the test clients send: no servers, a heartbeat promised every `heartbeat_secs`.
pub fn hello(heartbeat_secs: u32) -> Hello {
    Hello {
        version: "test".into(),
        hostname: "test-host".into(),
        capacity: None,
        heartbeat_interval_secs: heartbeat_secs,
        servers: Vec::new(),
    }
}

/// Opens the node stream on `connection`, sends `hello` and waits for `Welcome`. The error
/// text carries the gRPC status and any TLS alert.
pub async fn open(connection: IdleConnection, hello: Hello) -> Result<NodeClient, String> {
    let (mut client, io_error) = connection;
    let describe = |status: tonic::Status| {
        format!(
            "{:?}: {} [{}]",
            status.code(),
            status.message(),
            io_error.get().unwrap_or_default()
        )
    };
    let (tx, rx) = mpsc::channel(8);
    let hello = NodeMessage {
        kind: Some(node_message::Kind::Hello(hello)),
    };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(describe)?
        .into_inner();
    match inbound.message().await {
        Ok(Some(PanelMessage {
            kind: Some(panel_message::Kind::Welcome(welcome)),
        })) => Ok(NodeClient {
            tx,
            inbound,
            client,
            welcome,
        }),
        Ok(other) => Err(format!("expected Welcome, got {other:?}")),
        Err(status) => Err(describe(status)),
    }
}

impl NodeClient {
    /// Sends one heartbeat; false once the stream is gone.
    pub async fn heartbeat(&self, seq: u64) -> bool {
        let beat = NodeMessage {
            kind: Some(node_message::Kind::Heartbeat(Heartbeat {
                seq,
                sent_at_unix_ms: 0,
            })),
        };
        self.tx.send(beat).await.is_ok()
    }

    /// A sender onto this stream, for a test that hands the client to [`crate::sim::obey`]
    /// and still speaks as the node.
    pub fn sender(&self) -> mpsc::Sender<NodeMessage> {
        self.tx.clone()
    }

    /// Sends any message up the stream; false once the stream is gone.
    pub async fn send(&self, message: NodeMessage) -> bool {
        self.tx.send(message).await.is_ok()
    }

    /// The next command the panel sends, skipping nothing else (there is nothing else after
    /// `Welcome`); `None` when the stream ends.
    pub async fn next_command(&mut self) -> Option<proto::node::v1::Command> {
        loop {
            match self.inbound.message().await {
                Ok(Some(PanelMessage {
                    kind: Some(panel_message::Kind::Command(command)),
                })) => return Some(command),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next command or file request the panel sends; `None` when the stream ends.
    pub async fn next_request(&mut self) -> Option<Request> {
        loop {
            match self.inbound.message().await {
                Ok(Some(PanelMessage {
                    kind: Some(panel_message::Kind::Command(command)),
                })) => return Some(Request::Command(command)),
                Ok(Some(PanelMessage {
                    kind: Some(panel_message::Kind::File(request)),
                })) => return Some(Request::File(request)),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until the panel ends the stream; returns its final status (`None`: closed
    /// without one).
    pub async fn closed(&mut self) -> Option<tonic::Status> {
        loop {
            match self.inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    }
}
