//! The workspace's one rustls crypto provider (ring) and PEM loading helpers.
//!
//! Every TLS configuration in the panel, Wings and the tests is built from [`provider`], so two
//! providers never meet in one process; binaries also call [`install_default_provider`] once at
//! start-up for libraries that consult the process default.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The crypto provider every TLS configuration of the workspace uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default. Idempotent: a second call is a no-op.
pub fn install_default_provider() {
    // `Err` means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate of a PEM file (leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_certs(&bytes, &path.display().to_string())
}

/// Parses every certificate of PEM text; `what` names the source in errors.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::Pem {
        what: path.display().to_string(),
        reason: format!("no usable private key ({e})"),
    })
}

/// A root store holding the certificates of one CA file.
pub fn root_store(ca_certs: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca_certs {
        roots
            .add(cert.clone())
            .map_err(|e| Error::Tls(format!("CA certificate not usable as a trust anchor: {e}")))?;
    }
    Ok(roots)
}
