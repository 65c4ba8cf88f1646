//! The gRPC listener's rustls set-up: client certificates must chain to `PANEL_CA_CERT`.
//!
//! Each connection gets its own `ServerConfig` wrapping the shared verifier in a
//! [`CapturingVerifier`], which keeps the presented certificate so that a handshake that fails
//! (expired, foreign CA) can still be audited with its CN and fingerprint. Everything costly
//! (the verifier with its trust anchors, the server key, the session cache) is shared.
//!
//! `PANEL_CA_CERT` may hold several roots (a bundle, while the fleet moves to a new root), and
//! the files are re-read when they change ([`TlsSetup::reload`]): a root added to or removed
//! from the bundle, or a renewed server certificate, applies to new connections without a
//! restart; connections already admitted stay.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::Error;
use crate::config::{PANEL_CA_CERT, PANEL_TLS_CERT_FILE, PANEL_TLS_KEY_FILE};

/// The presented end-entity certificate of one connection, if any.
pub type Captured = Arc<Mutex<Option<CertificateDer<'static>>>>;

/// What every connection's TLS configuration is built from.
pub struct TlsSetup {
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Arc<Loaded>>,
}

/// The files as last loaded.
struct Loaded {
    verifier: Arc<dyn ClientCertVerifier>,
    server_key: Arc<CertifiedKey>,
    sessions: Arc<dyn StoresServerSessions>,
    /// The trusted roots, PEM, as read (sent to renewing nodes).
    ca_pem: String,
    /// The three files' contents, to notice a change.
    source: Vec<u8>,
}

impl TlsSetup {
    /// Loads the CA (bundle), the server certificate chain and its key. Errors name the file.
    pub fn load(ca_cert: &Path, tls_cert: &Path, tls_key: &Path) -> Result<TlsSetup, Error> {
        let provider = security::tls::provider();
        let loaded = Self::read(&provider, ca_cert, tls_cert, tls_key)?;
        Ok(TlsSetup {
            provider,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Re-reads the files; when they changed and are usable, new connections use them (with a
    /// fresh session cache, so no session of the old trust is resumed). Returns whether it
    /// changed anything; an unusable file is an error and the previous setup stays.
    pub fn reload(&self, ca_cert: &Path, tls_cert: &Path, tls_key: &Path) -> Result<bool, Error> {
        let source = Self::source(ca_cert, tls_cert, tls_key)?;
        if source == self.current().source {
            return Ok(false);
        }
        let loaded = Self::read(&self.provider, ca_cert, tls_cert, tls_key)?;
        if let Ok(mut slot) = self.loaded.write() {
            *slot = Arc::new(loaded);
        }
        Ok(true)
    }

    /// The trusted roots (PEM), as loaded.
    pub fn ca_pem(&self) -> String {
        self.current().ca_pem.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(loaded) => loaded.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn source(ca_cert: &Path, tls_cert: &Path, tls_key: &Path) -> Result<Vec<u8>, Error> {
        let mut source = Vec::new();
        for (variable, path) in [
            (PANEL_CA_CERT, ca_cert),
            (PANEL_TLS_CERT_FILE, tls_cert),
            (PANEL_TLS_KEY_FILE, tls_key),
        ] {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::config(variable, format!("{}: {e}", path.display())))?;
            source.extend_from_slice(&bytes);
            source.push(0);
        }
        Ok(source)
    }

    fn read(
        provider: &Arc<CryptoProvider>,
        ca_cert: &Path,
        tls_cert: &Path,
        tls_key: &Path,
    ) -> Result<Loaded, Error> {
        let provider = provider.clone();
        let source = Self::source(ca_cert, tls_cert, tls_key)?;
        let ca_pem = std::fs::read_to_string(ca_cert)
            .map_err(|e| Error::config(PANEL_CA_CERT, e.to_string()))?;
        let ca = security::tls::read_certs(ca_cert)?;
        let roots = Arc::new(security::tls::root_store(&ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Error::config(PANEL_CA_CERT, e.to_string()))?;
        let chain = security::tls::read_certs(tls_cert)?;
        let key = security::tls::read_key(tls_key)?;
        let server_key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            Error::config(
                PANEL_TLS_KEY_FILE,
                format!("does not match {PANEL_TLS_CERT_FILE} ({e})"),
            )
        })?;
        Ok(Loaded {
            verifier,
            server_key: Arc::new(server_key),
            sessions: ServerSessionMemoryCache::new(4096),
            ca_pem,
            source,
        })
    }

    /// A configuration for one connection, recording the presented certificate in `captured`.
    pub fn for_connection(&self, captured: Captured) -> Result<Arc<ServerConfig>, Error> {
        let loaded = self.current();
        let verifier = Arc::new(CapturingVerifier {
            inner: loaded.verifier.clone(),
            captured,
        });
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::internal)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                loaded.server_key.clone(),
            )));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.session_storage = loaded.sessions.clone();
        Ok(Arc::new(config))
    }
}

/// Delegates to the webpki verifier and keeps a copy of the presented certificate.
#[derive(Debug)]
struct CapturingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    captured: Captured,
}

impl ClientCertVerifier for CapturingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.captured.lock() {
            *slot = Some(end_entity.clone().into_owned());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Maps a failed handshake to a rejection reason.
pub fn classify(error: &std::io::Error) -> super::Rejection {
    use super::Rejection;
    use rustls::CertificateError as C;
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return Rejection::HandshakeFailed;
    };
    match tls {
        rustls::Error::NoCertificatesPresented => Rejection::NoClientCertificate,
        rustls::Error::InvalidCertificate(cert) => match cert {
            // A foreign CA with the same subject name as ours shows up as a bad signature.
            C::UnknownIssuer | C::BadSignature => Rejection::UnknownCa,
            C::Expired | C::ExpiredContext { .. } => Rejection::CertificateExpired,
            C::NotValidYet | C::NotValidYetContext { .. } => Rejection::CertificateNotYetValid,
            _ => Rejection::BadCertificate,
        },
        _ => Rejection::HandshakeFailed,
    }
}
