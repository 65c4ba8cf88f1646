//! The REST listener's accept loop (plain HTTP, or TLS terminated here). Every connection is
//! counted against a cap per client (an IPv4 address or an IPv6 /64; `TRUSTED_PROXIES` peers
//! count only towards the overall cap) and overall, and one over a cap is closed at once
//! (`mamba_http_connections_refused_total{cap}`). A client must send a request's head within
//! the header timeout, which also closes keep-alive connections idle that long (hyper starts it
//! when it starts waiting for a request); a TLS handshake is bounded by its own deadline and
//! runs off the accept loop. On shutdown every connection finishes its request and closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::guard::limit_key;
use crate::AppState;
use crate::config::{Cidr, HttpLimits};
use crate::metrics::Metrics;

/// Serves `app` on `listener` until `stop` is cancelled, then lets open connections finish.
pub async fn serve(
    state: Arc<AppState>,
    app: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) {
    let limits = state.config.http_limits;
    let caps = Arc::new(Caps {
        limits,
        exempt: state.config.security.trusted_proxies.clone(),
        open: Mutex::default(),
        metrics: state.metrics.clone(),
    });
    let acceptor = tls.map(TlsAcceptor::from);
    let handshake = state.handshake_timeout;
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, most likely: let some connections end first.
                    tracing::warn!(error = %e, "REST accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a cap: dropped here, closed at once.
        let Some(slot) = caps.admit(peer.ip()) else {
            continue;
        };
        // Small responses and SSE events go out at once, not after the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return connection(tcp, peer, app, limits, watcher).await;
            };
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => connection(tls, peer, app, limits, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Closes the REST connection a request came on, at once, whatever its response is doing (a
/// download whose client stopped reading is reset this way: hyper only writes a body as fast
/// as the client reads, so it would otherwise hold it for ever). In every request's extensions.
#[derive(Clone, Debug)]
pub struct Abort(CancellationToken);

impl Abort {
    /// Closes the connection.
    pub fn now(&self) {
        self.0.cancel();
    }
}

/// Serves HTTP/1.1 on one connection, with the peer's address for [`ConnectInfo`] and the
/// connection's [`Abort`].
async fn connection<I>(io: I, peer: SocketAddr, app: Router, limits: HttpLimits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let abort = CancellationToken::new();
    let handle = Abort(abort.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(handle.clone());
        app.clone().oneshot(request)
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        ended = watcher.watch(served) => if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "REST connection ended");
        },
        () = abort.cancelled() => tracing::debug!(%peer, "REST connection reset"),
    }
}

/// Open connections, overall and per client.
struct Caps {
    limits: HttpLimits,
    exempt: Vec<Cidr>,
    open: Mutex<Open>,
    metrics: Metrics,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<String, usize>,
}

impl Caps {
    /// A slot for a connection from `ip`, or `None` (counted) when a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let client = (!self.exempt.iter().any(|c| c.contains(ip))).then(|| limit_key(ip));
        // Counts are always whole; a panic elsewhere leaves nothing half-written.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let refused = if open.total >= self.limits.max_connections {
            Some("total")
        } else if client.as_ref().is_some_and(|c| {
            open.per_client.get(c).copied().unwrap_or(0) >= self.limits.max_connections_per_ip
        }) {
            Some("per_ip")
        } else {
            None
        };
        if let Some(cap) = refused {
            self.metrics
                .http_connections_refused
                .with_label_values(&[cap])
                .inc();
            tracing::debug!(%ip, cap, "REST connection refused: cap reached");
            return None;
        }
        open.total += 1;
        if let Some(client) = &client {
            *open.per_client.entry(client.clone()).or_default() += 1;
        }
        self.metrics.http_connections.inc();
        Some(Slot {
            caps: self.clone(),
            client,
        })
    }
}

/// One open connection's place; given back when dropped.
struct Slot {
    caps: Arc<Caps>,
    client: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(client) = &self.client
            && let Some(n) = open.per_client.get_mut(client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_client.remove(client);
            }
        }
        self.caps.metrics.http_connections.dec();
    }
}
