//! The node channel's client side: a rustls client configuration (the panel's certificate
//! checked against `WINGS_API_CA_CERT` and required to carry the panel's identity
//! `spiffe://mamba/panel`, so that a node certificate of the same CA cannot pose as the panel;
//! our own certificate presented) and a tonic channel over our own TCP + TLS connector.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use proto::node::v1::node_control_client::NodeControlClient;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::Error;
use crate::config::Config;

/// A client identity: certificate chain and key.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

/// Reads the node's identity (see [`crate::renew::Files::load`]: a pair whose key matches,
/// valid now) and the panel's CA (bundle) from the configured files. Called on every connection
/// attempt, so renewed certificate files take effect without a restart.
pub fn load(
    config: &Config,
    files: &crate::renew::Files,
    previous_first: bool,
) -> Result<(Arc<ClientConfig>, crate::renew::Presented), Error> {
    let ca = security::tls::read_certs(&config.ca_file)?;
    let (identity, presented) = files.load(time::OffsetDateTime::now_utc(), previous_first)?;
    Ok((client_config(&ca, Some(identity))?, presented))
}

/// A client configuration trusting `ca` for the panel's certificate, which must also be a
/// panel certificate ([`security::pki::PanelServerVerifier`]), and presenting `identity`
/// (tests also build one with no identity, to see the panel refuse it).
pub fn client_config(
    ca: &[CertificateDer<'static>],
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, Error> {
    let roots = security::tls::root_store(ca)?;
    let verifier = security::pki::PanelServerVerifier::new(roots)?;
    let builder = ClientConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| Error::Tls(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// What a connection to the panel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The control stream: small messages, HTTP/2's default windows.
    Control,
    /// File transfers ([`crate::files::Link`]): windows of a few MiB keep a transfer moving at
    /// loopback speed while still bounding what it holds.
    Transfers,
}

/// Dials `host:port`, completes the TLS handshake (server name `host`) and returns a tonic
/// client on top, with the connection's first I/O error. Fails with the TLS error when the
/// panel's certificate is not trusted.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Arc<ClientConfig>,
    purpose: Purpose,
) -> Result<(NodeControlClient<Channel>, FirstIoError), Error> {
    let first_error = FirstIoError::default();
    let recorder = first_error.clone();
    // One attempt, one connection: tonic's channel would silently re-dial after the panel
    // closes the first one, doubling every refusal. The agent loop reconnects, with backoff.
    let dialled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Tls(format!("invalid server name {host:?}")))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let connector = TlsConnector::from(tls);
    let connect = tower::service_fn(move |_: http::Uri| {
        let (addr, connector, server_name) = (addr.clone(), connector.clone(), server_name.clone());
        let errors = recorder.clone();
        let again = dialled.swap(true, std::sync::atomic::Ordering::SeqCst);
        async move {
            if again {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "connection to the panel closed",
                ));
            }
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(Recording { inner: tls, errors }))
        }
    });
    // The URI only names the authority for HTTP/2; TLS is done by the connector above.
    let mut endpoint = Endpoint::from_static("http://panel.invalid");
    if purpose == Purpose::Transfers {
        endpoint = endpoint
            .initial_stream_window_size(Some(crate::files::WINDOW))
            .initial_connection_window_size(Some(crate::files::CONNECTION_WINDOW));
    }
    let channel = endpoint
        .connect_with_connector(connect)
        .await
        .map_err(|e| Error::Connect(crate::error_chain(&e)))?;
    Ok((NodeControlClient::new(channel), first_error))
}

/// The first I/O error seen on a connection. A TLS 1.3 server rejects a client certificate
/// after the client considers the handshake done, so the panel's alert (`CertificateExpired`,
/// `UnknownCA`…) arrives as a read error that hyper only reports as "connection closed".
#[derive(Clone, Default, Debug)]
pub struct FirstIoError(Arc<Mutex<Option<String>>>);

impl FirstIoError {
    /// The recorded error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }

    fn record(&self, error: &io::Error) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| crate::error_chain(error));
        }
    }
}

/// An I/O stream that remembers its first error.
struct Recording<T> {
    inner: T,
    errors: FirstIoError,
}

impl<T> Recording<T> {
    fn note<R>(&self, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &poll {
            self.errors.record(e);
        }
        poll
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Recording<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(poll)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recording<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(poll)
    }
}
