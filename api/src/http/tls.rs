//! TLS on the REST listener itself (rustls), for panels with no terminating proxy in front:
//! set `PANEL_HTTP_TLS_CERT_FILE` and `PANEL_HTTP_TLS_KEY_FILE`.
//!
//! Handshakes run in the connection's own task with a deadline (see `listener`), so a client
//! that opens a connection and says nothing holds up no one.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::Error;
use crate::config::{PANEL_HTTP_TLS_CERT_FILE, PANEL_HTTP_TLS_KEY_FILE};

/// Reads the certificate chain and key; errors name the variable.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let chain = security::tls::read_certs(cert)
        .map_err(|e| Error::config(PANEL_HTTP_TLS_CERT_FILE, format!("{e}")))?;
    let key = security::tls::read_key(key)
        .map_err(|e| Error::config(PANEL_HTTP_TLS_KEY_FILE, format!("{e}")))?;
    let mut config = ServerConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::config(PANEL_HTTP_TLS_KEY_FILE, format!("{e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
