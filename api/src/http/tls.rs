//! TLS on the REST listener itself (rustls), for panels with no terminating proxy in front:
//! set `PANEL_HTTP_TLS_CERT_FILE` and `PANEL_HTTP_TLS_KEY_FILE`.
//!
//! Handshakes run in their own tasks with a deadline, so a client that opens a connection and
//! says nothing holds up no one; finished connections queue for the HTTP server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::{PANEL_HTTP_TLS_CERT_FILE, PANEL_HTTP_TLS_KEY_FILE};

/// Connections whose handshake finished, waiting for the HTTP server to take them.
const QUEUE: usize = 128;

/// Reads the certificate chain and key; errors name the variable.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let chain = security::tls::read_certs(cert)
        .map_err(|e| Error::Config(format!("{PANEL_HTTP_TLS_CERT_FILE}: {e}")))?;
    let key = security::tls::read_key(key)
        .map_err(|e| Error::Config(format!("{PANEL_HTTP_TLS_KEY_FILE}: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("{PANEL_HTTP_TLS_KEY_FILE}: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener handing out connections that completed the TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` until `stop` is cancelled, each handshake bounded by `deadline`.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        deadline: Duration,
        stop: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(QUEUE);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTPS accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Small responses and SSE events go out at once.
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // Stopped accepting: the server is shutting down and will not ask again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
