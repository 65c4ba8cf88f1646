//! The panel's identity on the node channel, and the check Wings makes of it.
//!
//! Node and panel certificates come from the same CA, so a chain to the CA and a host name
//! do not tell the panel from a node: a node's certificate served on the panel's address
//! would pass both. The panel's certificate therefore carries a distinct identity, the URI
//! subject alternative name [`PANEL_URI`] (a SPIFFE-style id that `dev-ca` writes only into
//! `dev-ca server` certificates, never into node certificates, which are client-auth only),
//! and [`PanelServerVerifier`] requires it after the usual webpki checks (chain, validity,
//! server-auth usage, host name).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// The URI SAN that makes a certificate the panel's (and that no node certificate carries).
pub const PANEL_URI: &str = "spiffe://mamba/panel";

/// Whether the DER certificate carries [`PANEL_URI`] among its subject alternative names.
pub fn is_panel_certificate(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .any(|name| matches!(name, GeneralName::URI(uri) if *uri == PANEL_URI)),
        _ => false,
    }
}

/// Verifies the panel's certificate: webpki's checks against the CA, then [`PANEL_URI`].
#[derive(Debug)]
pub struct PanelServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl PanelServerVerifier {
    /// A verifier trusting `roots` with the workspace's crypto provider.
    pub fn new(roots: rustls::RootCertStore) -> Result<Arc<Self>, Error> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
                .build()
                .map_err(|e| Error::Tls(format!("panel verifier: {e}")))?;
        Ok(Arc::new(PanelServerVerifier { inner }))
    }
}

impl ServerCertVerifier for PanelServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if !is_panel_certificate(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotThePanel))),
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate chains to the CA but is not the panel's.
struct NotThePanel;

// rustls shows this error with `Debug`: make that the sentence an operator needs.
impl std::fmt::Debug for NotThePanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for NotThePanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate is not a panel certificate (no {PANEL_URI} URI SAN)"
        )
    }
}

impl std::error::Error for NotThePanel {}
