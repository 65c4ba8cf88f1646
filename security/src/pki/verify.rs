//! Verifying issued certificates with rustls's own webpki verifiers, the same code the panel
//! and Wings run during the handshake, so `dev-ca verify` and the channel never disagree.

use std::time::SystemTime;

use rcgen::{KeyPair, PublicKeyData};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::LeafKind;
use crate::Error;

/// Checks that `leaf` chains to `ca`, is inside its validity window at `now`, and carries the
/// extended key usage its kind needs (client auth for nodes; server auth for `hostname` for the
/// panel's server certificate).
pub fn verify_issued_by(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    kind: LeafKind,
    hostname: Option<&str>,
    now: SystemTime,
) -> Result<(), Error> {
    verify_chain(
        std::slice::from_ref(ca),
        std::slice::from_ref(leaf),
        kind,
        hostname,
        now,
    )
}

/// As [`verify_issued_by`], for a chain (leaf first, then intermediates such as the panel's
/// issuer) against any of several roots (a bundle, during a root rotation).
pub fn verify_chain(
    roots: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    kind: LeafKind,
    hostname: Option<&str>,
    now: SystemTime,
) -> Result<(), Error> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Error::Parse("empty certificate chain".into()))?;
    let roots = std::sync::Arc::new(crate::tls::root_store(roots)?);
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| Error::Tls("clock before 1970".into()))?,
    );
    match kind {
        LeafKind::Node => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots, crate::tls::provider())
                    .build()
                    .map_err(|e| Error::Tls(e.to_string()))?;
            verifier
                .verify_client_cert(leaf, intermediates, now)
                .map_err(Error::Verify)?;
        }
        LeafKind::Server => {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(roots, crate::tls::provider())
                    .build()
                    .map_err(|e| Error::Tls(e.to_string()))?;
            let host = hostname.unwrap_or("localhost");
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| Error::InvalidHostname(host.to_owned()))?;
            verifier
                .verify_server_cert(leaf, intermediates, &name, &[], now)
                .map_err(Error::Verify)?;
        }
    }
    Ok(())
}

/// Whether the PEM private key is the one whose public key the certificate carries.
pub fn key_matches_cert(key_pem: &str, cert: &CertificateDer<'_>) -> Result<bool, Error> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Pem {
        what: "private key".into(),
        reason: e.to_string(),
    })?;
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| Error::Parse(e.to_string()))?;
    Ok(parsed.tbs_certificate.subject_pki.raw == key.subject_public_key_info().as_slice())
}
