//! The accept loop of the node channel: TLS handshake, admission (CN, enabled, pinned
//! fingerprint) and only then HTTP/2 + tonic, one task per connection.
//!
//! Admission runs on every connection, resumed TLS sessions included (a resumed session
//! restores the client chain without re-verifying it, so the validity window and the database
//! check here are what keep an expired certificate or a disabled node out), and again on every
//! stream. An admitted connection is kept in the registry's connections, where kicks and the
//! watcher reach it, and is closed if no stream is welcomed on it within the Hello timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use proto::node::v1::node_control_server::NodeControlServer;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::admission::{Attempt, outside_validity, record, reject};
use super::fold::{self, Folder};
use super::gate::{Gate, Slot};
use super::service::{HELLO_TIMEOUT, NodeControlService, NodeIdentity};
use super::tls::{Captured, TlsSetup, classify};
use super::{Rejection, bounds};
use crate::AppState;
use crate::audit::AuditEvent;
use crate::nodes::store::Admission;

/// How long a rejected (but TLS-authenticated) connection is kept to deliver its gRPC status.
const REJECT_LINGER: Duration = Duration::from_secs(5);
/// How long a dropped connection may take to flush its final status.
const DRAIN: Duration = Duration::from_secs(1);

/// Accepts node connections until `stop_accepting` is cancelled; open connections end when
/// `shutdown` is.
pub async fn serve(
    state: Arc<AppState>,
    tls: Arc<TlsSetup>,
    listener: TcpListener,
    stop_accepting: CancellationToken,
    shutdown: CancellationToken,
) {
    let (overall, per_ip) = state.config.max_handshakes;
    let gate = Gate::with_caps(overall, per_ip);
    let folder = Arc::new(Folder::default());
    tokio::spawn(fold::run_flusher(
        state.clone(),
        folder.clone(),
        shutdown.clone(),
    ));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop_accepting.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match gate.enter(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                // Closed before any TLS work; counted and audited (folded) off the loop.
                drop(tcp);
                let (state, folder) = (state.clone(), folder.clone());
                tokio::spawn(async move {
                    let attempt = Attempt {
                        peer,
                        presented: None,
                        resumed: false,
                    };
                    let detail = Some(format!("{} cap reached", full.label()));
                    let rejection = Rejection::TooManyHandshakes;
                    fold::refuse(&state, &folder, rejection, &attempt, detail).await;
                });
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (state, tls, shutdown) = (state.clone(), tls.clone(), shutdown.clone());
        let folder = folder.clone();
        tokio::spawn(async move { handle(state, tls, tcp, peer, shutdown, slot, &folder).await });
    }
}

async fn handle(
    state: Arc<AppState>,
    tls: Arc<TlsSetup>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    slot: Slot,
    folder: &Folder,
) {
    let captured: Captured = Arc::new(Mutex::new(None));
    let config = match tls.for_connection(captured.clone()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "cannot build TLS configuration");
            return;
        }
    };
    let handshake = tokio::time::timeout(
        state.handshake_timeout,
        TlsAcceptor::from(config).accept(tcp),
    )
    .await;
    drop(slot);
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let presented = captured.lock().ok().and_then(|c| c.clone());
            let attempt = Attempt {
                peer,
                presented: presented.as_ref(),
                resumed: false,
            };
            fold::refuse(&state, folder, classify(&e), &attempt, Some(e.to_string())).await;
            return;
        }
        Err(_) => {
            let presented = captured.lock().ok().and_then(|c| c.clone());
            let attempt = Attempt {
                peer,
                presented: presented.as_ref(),
                resumed: false,
            };
            fold::refuse(&state, folder, Rejection::HandshakeTimeout, &attempt, None).await;
            return;
        }
    };
    // A resumed session restores the client chain without re-verifying it: everything below
    // runs for resumed sessions too, which the audit row records.
    let tls_state = stream.get_ref().1;
    let resumed = tls_state.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // Never trust a connection without a verified certificate, whatever the reason.
    let Some(cert) = tls_state
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
    else {
        let attempt = Attempt {
            peer,
            presented: None,
            resumed,
        };
        fold::refuse(
            &state,
            folder,
            Rejection::NoClientCertificate,
            &attempt,
            None,
        )
        .await;
        return;
    };
    let attempt = Attempt {
        peer,
        presented: Some(&cert),
        resumed,
    };
    let info = match security::pki::inspect(&cert) {
        Ok(info) => info,
        Err(e) => {
            let rejection = Rejection::InvalidCommonName;
            reject(&state, rejection, &attempt, Some(e.to_string())).await;
            linger_with_status(stream, super::status::of_rejection(rejection)).await;
            return;
        }
    };
    // Resumed sessions skip the TLS layer's check of the validity window: check it here.
    let now = state.clock.now_offset();
    if let Some(rejection) = outside_validity(info.not_before, info.not_after, now) {
        reject(
            &state,
            rejection,
            &attempt,
            Some("checked at admission".into()),
        )
        .await;
        linger_with_status(stream, super::status::of_rejection(rejection)).await;
        return;
    }
    let not_after =
        DateTime::<Utc>::from_timestamp(info.not_after.unix_timestamp(), 0).unwrap_or_default();
    let admission = match state
        .access
        .admit(&state.db, &info.common_name, &info.fingerprint, not_after)
        .await
    {
        Ok(Ok(admission)) => admission,
        Ok(Err(refusal)) => {
            let rejection = Rejection::from(refusal);
            reject(&state, rejection, &attempt, None).await;
            linger_with_status(stream, super::status::of_rejection(rejection)).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot check node");
            let rejection = Rejection::PanelUnavailable;
            reject(&state, rejection, &attempt, None).await;
            linger_with_status(stream, super::status::of_rejection(rejection)).await;
            return;
        }
    };
    state.metrics.node_accepted.inc();
    record(
        &state,
        AuditEvent {
            actor: info.common_name.clone(),
            action: "node.connect".into(),
            target: Some(info.common_name.clone()),
            outcome: "accepted".into(),
            ip: Some(peer.ip().to_string()),
            details: json!({
                "fingerprint": info.fingerprint,
                "pinned_now": admission == Admission::Pinned,
                "next_pin": admission == Admission::Next,
                "resumed": resumed,
            }),
            tenant_id: None,
        },
    )
    .await;
    // At debug: the audit row records every admission; "node online" follows at Welcome.
    tracing::debug!(node = %info.common_name, %peer, pinned_now = admission == Admission::Pinned, "node authenticated");

    // Kept where `kick` and the watcher reach it from now on, stream or not.
    let connection = state.registry.connections.add(
        &info.common_name,
        &info.fingerprint,
        CancellationToken::new(),
    );
    let welcomed = CancellationToken::new();
    let identity = Arc::new(NodeIdentity {
        node_id: info.common_name,
        fingerprint: info.fingerprint,
        certificate: cert,
        not_before: info.not_before,
        not_after: info.not_after,
        resumed,
        next_pin: admission == Admission::Next,
        peer,
        connection,
        welcomed,
    });
    // Served from a task of its own: a task keeps room for its largest step for as long as it
    // lives, and the admission steps above (database, audit) need several times what serving
    // a held connection does.
    tokio::spawn(serve_admitted(state, stream, identity, shutdown));
}

/// Serves HTTP/2 + tonic on an admitted connection until it ends, is kicked, is not welcomed
/// on a stream within the Hello timeout, or the panel shuts down; then forgets it.
async fn serve_admitted(
    state: Arc<AppState>,
    stream: TlsStream<TcpStream>,
    identity: Arc<NodeIdentity>,
    shutdown: CancellationToken,
) {
    let (connection, peer) = (identity.connection.clone(), identity.peer);
    let (close, welcomed) = (connection.close.clone(), identity.welcomed.clone());
    let service = NodeControlServer::new(NodeControlService::new(state.clone(), identity))
        .max_decoding_message_size(bounds::MAX_MESSAGE_BYTES);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        // File transfers stream on a node's second connection: windows of a few MiB and
        // larger frames keep one moving at loopback speed while still bounding what it holds
        // (the control connection has the same settings: it never sees a transfer).
        .initial_stream_window_size(crate::transfers::WINDOW)
        .initial_connection_window_size(crate::transfers::CONNECTION_WINDOW)
        .max_frame_size(crate::transfers::MAX_FRAME);
    let connection_io =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection_io);
    // A connection that has not been welcomed on a stream within the Hello timeout is closed.
    let unwelcomed = async {
        tokio::select! {
            _ = welcomed.cancelled() => std::future::pending::<()>().await,
            _ = tokio::time::sleep(HELLO_TIMEOUT) => {}
        }
    };
    tokio::select! {
        result = connection_io.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "node connection ended with an error");
            }
        }
        // Kicked, no stream in time or shutting down: let the final status out, then close.
        _ = async { tokio::select! {
            _ = close.cancelled() => {},
            _ = shutdown.cancelled() => {},
            _ = unwelcomed => {
                tracing::info!(node = %connection.node_id, %peer, "no stream within the Hello timeout; closing");
            },
        } } => {
            connection_io.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, connection_io.as_mut()).await;
        }
    }
    state.registry.connections.remove(connection.id);
    // The stream task watches this token: the connection is gone, so is the stream.
    close.cancel();
}

/// Serves HTTP/2 on an authenticated-but-refused connection, answering every request with
/// `status`, so that the node learns why; then closes it.
async fn linger_with_status<S>(stream: S, status: tonic::Status)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(Refuse(status));
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REJECT_LINGER, connection).await;
}

/// A service that answers every request with one gRPC status.
#[derive(Clone)]
struct Refuse(tonic::Status);

impl<B> tower::Service<http::Request<B>> for Refuse {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_http()))
    }
}
