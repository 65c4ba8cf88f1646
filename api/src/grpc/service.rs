//! `NodeControl`: the one long-lived stream of an authenticated node, and the `Files` streams
//! its transfers open on a connection of their own.
//!
//! The connection was admitted before this runs; the identity comes from our own accept loop
//! ([`NodeIdentity`]), never from request metadata. The first message must be `Hello`, whose
//! server inventory reconciles the panel's records; the node is then online until its stream
//! ends, three heartbeats are missed, or it is kicked. Acks, server status and console lines
//! are accepted only for this node's own commands and servers. Admitting a stream takes the
//! node for this replica ([`crate::nodes::fleet`]); a stream fenced off by a newer one
//! elsewhere records no status, passes on no console or stats line and marks nothing
//! offline (its acks still count).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use futures::StreamExt;
use proto::node::v1::node_control_server::NodeControl;
use proto::node::v1::{
    FileDown, FileUp, NodeMessage, PanelMessage, Welcome, file_up, node_message, panel_message,
};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{admission, bounds, status};
use crate::AppState;
use crate::nodes::Session;
use crate::nodes::connections::Connection;
use crate::nodes::registry::Outbound;
use crate::servers;

/// How long a node has, after the handshake, to open its stream and send `Hello`; a
/// connection not welcomed on a stream by then is closed.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A node is dropped after this many heartbeat intervals without a message.
const MISSED_HEARTBEATS: u32 = 3;
/// Messages queued for a node before senders wait.
const OUTBOUND_CAPACITY: usize = 256;

/// Who is on the other end of a connection, as established by the accept loop.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The node id (the certificate's CN), admitted against the database.
    pub node_id: String,
    /// The admitted certificate's fingerprint.
    pub fingerprint: String,
    /// The admitted certificate.
    pub certificate: CertificateDer<'static>,
    /// Start of the certificate's validity.
    pub not_before: time::OffsetDateTime,
    /// End of the certificate's validity.
    pub not_after: time::OffsetDateTime,
    /// Whether TLS resumed an earlier session.
    pub resumed: bool,
    /// Whether it was admitted on the node's next pin (a renewed certificate): its first
    /// welcomed stream promotes it.
    pub next_pin: bool,
    /// The peer address.
    pub peer: SocketAddr,
    /// The admitted connection; its `close` token drops it.
    pub connection: Connection,
    /// Cancelled once a stream of this connection is registered.
    pub welcomed: CancellationToken,
}

/// The service for one connection.
pub struct NodeControlService {
    state: Arc<AppState>,
    identity: Arc<NodeIdentity>,
}

impl NodeControlService {
    /// A service bound to one authenticated connection.
    pub fn new(state: Arc<AppState>, identity: Arc<NodeIdentity>) -> Self {
        NodeControlService { state, identity }
    }
}

type PanelStream = Pin<Box<dyn Stream<Item = Result<PanelMessage, Status>> + Send>>;
type FilesStream = Pin<Box<dyn Stream<Item = Result<FileDown, Status>> + Send>>;

#[tonic::async_trait]
impl NodeControl for NodeControlService {
    type ConnectStream = PanelStream;
    type FilesStream = FilesStream;

    /// A node's answer to a file request, on its connection for transfers (admitted as every
    /// node connection is, and again here): its first message names the request, which must
    /// have been sent to this very node (see [`crate::transfers`]). A connection that carries
    /// such a stream is welcomed (kept open past the Hello timeout).
    async fn files(
        &self,
        request: Request<Streaming<FileUp>>,
    ) -> Result<Response<Self::FilesStream>, Status> {
        let identity = &self.identity;
        let now = self.state.clock.now_offset();
        if let Err(rejection) = admission::recheck(&self.state, identity, now).await {
            identity.connection.close.cancel();
            return Err(status::of_rejection(rejection));
        }
        let mut up = request.into_inner();
        let id = match tokio::time::timeout(HELLO_TIMEOUT, up.message()).await {
            Ok(Ok(Some(FileUp {
                kind: Some(file_up::Kind::Open(id)),
            }))) => id,
            Ok(Err(status)) => {
                return Err(bounds::oversized(&status, &self.state.metrics).unwrap_or(status));
            }
            _ => return Err(Status::invalid_argument("the first message must be open")),
        };
        let (down, rx) = mpsc::channel(crate::transfers::DOWN_QUEUE);
        let channel = crate::transfers::Channel::new(up, down);
        if !self.state.transfers.arrive(&id, &identity.node_id, channel) {
            return Err(Status::not_found("no such file request for this node"));
        }
        identity.welcomed.cancel();
        let stream = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn connect(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let identity = &self.identity;
        // The connection may have sat idle since its handshake: admit it again.
        let now = self.state.clock.now_offset();
        if let Err(rejection) = admission::recheck(&self.state, identity, now).await {
            identity.connection.close.cancel();
            return Err(status::of_rejection(rejection));
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(mut message))) => {
                bounds::apply(&mut message, &self.state.metrics);
                match message.kind {
                    Some(node_message::Kind::Hello(hello)) => hello,
                    _ => return Err(status::hello_expected()),
                }
            }
            Ok(Ok(None)) => return Err(status::closed_before_hello()),
            Ok(Err(status)) => {
                return Err(bounds::oversized(&status, &self.state.metrics).unwrap_or(status));
            }
            Err(_) => return Err(status::hello_timeout(HELLO_TIMEOUT.as_secs())),
        };
        let interval = Duration::from_secs(u64::from(hello.heartbeat_interval_secs.clamp(1, 60)));
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let session = self.state.registry.register(
            &identity.node_id,
            &identity.fingerprint,
            &identity.connection,
            tx.clone(),
        );
        self.state
            .metrics
            .nodes_connected
            .set(self.state.registry.len() as i64);
        // The node is ours across the fleet (epoch + 1); an older holder drops its stream.
        if let Err(e) = self.state.fleet.claim(&session).await {
            self.state.registry.unregister(&session);
            return Err(status::of_error(&e));
        }
        if let Err(e) = self.state.journal.mark(&identity.node_id, true).await {
            self.state.registry.unregister(&session);
            return Err(status::of_error(&e));
        }
        identity.welcomed.cancel();
        crate::nodes::lifecycle::observe(
            &self.state.metrics,
            &identity.node_id,
            true,
            Some(identity.not_after.unix_timestamp()),
        );
        // Registered first (the old stream was replaced, so the node never looked offline),
        // then the renewed certificate becomes the pin and the old one is retired.
        if identity.next_pin {
            let not_after =
                chrono::DateTime::<Utc>::from_timestamp(identity.not_after.unix_timestamp(), 0)
                    .unwrap_or_default();
            if let Err(e) = crate::nodes::renew::promote(
                &self.state.nodes,
                &identity.node_id,
                &identity.fingerprint,
                not_after,
            )
            .await
            {
                tracing::warn!(node = %identity.node_id, error = %e, "cannot promote the renewed certificate");
            }
        }
        tracing::info!(
            node = %identity.node_id,
            peer = %identity.peer,
            version = %hello.version,
            hostname = %hello.hostname,
            heartbeat_secs = interval.as_secs(),
            "node online"
        );
        let welcome = PanelMessage {
            kind: Some(panel_message::Kind::Welcome(Welcome {
                node_id: identity.node_id.clone(),
                server_time_unix_ms: self.state.clock.now_ms(),
            })),
        };
        // The channel is new and empty: this cannot fail for lack of room.
        let _ = tx.try_send(Ok(Box::new(welcome)));
        let state = self.state.clone();
        let alive = self.state.streams.clone().read_owned().await;
        tokio::spawn(async move {
            let _alive = alive;
            // The report in Hello is older than anything the node sends after it: apply it
            // before reading on, so a later status is never overwritten by it.
            if let Err(e) =
                servers::reconcile(&state.servers, &session.node_id, hello.servers).await
            {
                tracing::warn!(node = %session.node_id, error = %e, "cannot reconcile the node's servers");
            }
            // Commands sent to the node's previous stream (maybe on another replica) and not
            // acked: sent again here; the node runs each id once.
            if let Err(e) = servers::routing::redeliver(&state.servers, &session.node_id).await {
                tracing::warn!(node = %session.node_id, error = %e, "cannot send the node's pending commands");
            }
            pump(state, session, inbound, tx, interval).await;
        });
        let stream = ReceiverStream::new(rx).map(|message| message.map(|boxed| *boxed));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Whether `server_id` is one of the node's servers, looked up once per stream.
async fn owned(
    state: &AppState,
    node_id: &str,
    owns: &mut HashMap<String, bool>,
    server_id: &str,
) -> bool {
    if let Some(&owned) = owns.get(server_id) {
        return owned;
    }
    let owned = servers::belongs_to(&state.db, node_id, server_id)
        .await
        .unwrap_or(false);
    if owns.len() < 10_000 {
        owns.insert(server_id.to_owned(), owned);
    }
    owned
}

/// Reads the node's messages until the stream ends, heartbeats stop, or the node is kicked;
/// then tells the node why (when it still listens) and marks it offline.
async fn pump(
    state: Arc<AppState>,
    session: Session,
    mut inbound: Streaming<NodeMessage>,
    tx: Outbound,
    interval: Duration,
) {
    let deadline = interval * MISSED_HEARTBEATS;
    // Which server ids this node may speak for, looked up once each.
    let mut owns: HashMap<String, bool> = HashMap::new();
    // One renewal request per interval reaches the database and the audit log; a node that
    // sends more is told `too_soon` from here, so it cannot grow either without bound.
    let mut last_renew: Option<std::time::Instant> = None;
    let end = loop {
        let next = tokio::select! {
            biased;
            _ = session.kick.cancelled() => break session.kick_reason().map(status::of_kick),
            next = tokio::time::timeout(deadline, inbound.message()) => next,
        };
        match next {
            Err(_) => {
                break Some(status::heartbeat_timeout(deadline.as_secs()));
            }
            Ok(Ok(None)) => break None,
            Ok(Err(status)) => {
                tracing::debug!(node = %session.node_id, %status, "node stream error");
                break bounds::oversized(&status, &state.metrics);
            }
            Ok(Ok(Some(mut message))) => {
                let truncated = bounds::apply(&mut message, &state.metrics);
                match message.kind {
                    // A stream dropped from this replica's holds (a newer one elsewhere)
                    // no longer touches the node's row.
                    Some(node_message::Kind::Heartbeat(_))
                        if !state.fleet.holds_stream(&session) => {}
                    Some(node_message::Kind::Heartbeat(_)) => {
                        if let Err(e) = state.journal.touch(&session.node_id).await {
                            tracing::warn!(node = %session.node_id, error = %e, "cannot record heartbeat");
                        }
                    }
                    Some(node_message::Kind::Ack(ack)) => {
                        if let Err(e) =
                            servers::commands::on_ack(&state.servers, &session.node_id, ack).await
                        {
                            tracing::warn!(node = %session.node_id, error = %e, "cannot record an ack");
                        }
                    }
                    Some(node_message::Kind::Status(_) | node_message::Kind::Backup(_))
                        if !state.fleet.is_current(&session).await =>
                    {
                        tracing::info!(node = %session.node_id, "stale stream (fenced): its report is not recorded");
                    }
                    Some(node_message::Kind::Status(status)) => {
                        if let Err(e) =
                            servers::on_status(&state.servers, &session.node_id, &status).await
                        {
                            tracing::warn!(node = %session.node_id, error = %e, "cannot record a status");
                        }
                    }
                    // Console and stats of a stream dropped from this replica's holds (a
                    // newer one elsewhere is the node's voice now) are not passed on.
                    Some(node_message::Kind::Stats(_) | node_message::Kind::Console(_))
                        if !state.fleet.holds_stream(&session) => {}
                    Some(node_message::Kind::Stats(stats)) => {
                        if owned(&state, &session.node_id, &mut owns, &stats.server_id).await {
                            servers::on_stats(&state.servers, stats);
                        }
                    }
                    Some(node_message::Kind::Console(line)) => {
                        let owned =
                            owned(&state, &session.node_id, &mut owns, &line.server_id).await;
                        if owned {
                            servers::on_console(&state.servers, line, truncated);
                        }
                    }
                    Some(node_message::Kind::Renew(request)) => {
                        let renew = &crate::nodes::renew::MIN_INTERVAL;
                        let answer = if last_renew.is_some_and(|at| at.elapsed() < *renew) {
                            PanelMessage {
                                kind: Some(panel_message::Kind::RenewFailed(
                                    proto::node::v1::RenewFailed {
                                        code: "too_soon".into(),
                                        message: "one renewal request per 5 s".into(),
                                    },
                                )),
                            }
                        } else {
                            last_renew = Some(std::time::Instant::now());
                            crate::nodes::renew::on_request(
                                &state.nodes,
                                &session,
                                &request.csr,
                                state.grpc_tls.ca_pem(),
                            )
                            .await
                        };
                        if tx.send(Ok(Box::new(answer))).await.is_err() {
                            break None;
                        }
                    }
                    Some(node_message::Kind::Backup(result)) => {
                        if let Err(e) =
                            servers::backups::on_result(&state.servers, &session.node_id, result)
                                .await
                        {
                            tracing::warn!(node = %session.node_id, error = %e, "cannot record a backup result");
                        }
                    }
                    Some(node_message::Kind::Hello(_)) | None => {
                        tracing::debug!(node = %session.node_id, "ignoring unexpected message");
                    }
                }
            }
        }
    };
    let reason = end.as_ref().map_or("stream closed", |s| s.message());
    tracing::info!(node = %session.node_id, reason, "node offline");
    if let Some(status) = end {
        let _ = tx.try_send(Err(status));
    }
    drop(tx);
    let latest_here = state.registry.unregister(&session);
    // Only the node's holder marks it offline: a stream replaced elsewhere writes nothing.
    let held = state.fleet.release(&session).await.unwrap_or_else(|e| {
        tracing::warn!(node = %session.node_id, error = %e, "cannot release the node");
        false
    });
    if latest_here && held {
        if let Err(e) = state.journal.mark(&session.node_id, false).await {
            tracing::warn!(node = %session.node_id, error = %e, "cannot mark node offline");
        }
        // A new stream of the same node may have registered while we wrote: keep the truth.
        let online = state.registry.is_online(&session.node_id);
        if online {
            let _ = state.journal.mark(&session.node_id, true).await;
        }
        crate::nodes::lifecycle::observe(&state.metrics, &session.node_id, online, None);
    }
    state
        .metrics
        .nodes_connected
        .set(state.registry.len() as i64);
    // Close the connection once the final status has been flushed.
    session.kick.cancel();
}
