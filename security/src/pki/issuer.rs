//! The online issuer under an offline root, and certificate signing requests.
//!
//! The root CA ([`CertificateAuthority::generate`], path length 1) signs one intermediate, the
//! *issuer* ([`CertificateAuthority::generate_issuer`], path length 0), which is all a running
//! panel holds: it signs node CSRs ([`CertificateAuthority::sign_node_csr`]) and never sees the
//! root key. A CSR is checked before anything else is done with it ([`check_csr`]): its
//! signature (proof that the requester holds the key), and its key type — ECDSA P-256 or P-384,
//! or Ed25519; RSA and every other curve are refused. The certificate's subject is never taken
//! from the CSR: the caller names the node, and a CSR asking for another CN is refused.

use rcgen::{CertificateParams, CertificateSigningRequestParams, KeyPair};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use super::{CertificateAuthority, LeafKind, LeafSpec, name};
use crate::Error;

/// Default lifetime of the issuing intermediate, in days (one year).
pub const ISSUER_DAYS: u32 = 365;
/// Default lifetime of a node certificate signed from a CSR, in days.
pub const NODE_CERT_DAYS: u32 = 30;
/// The largest CSR accepted, PEM or DER (a P-384 CSR is well under 1 KiB).
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// The key types a node may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (what Wings generates).
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// What a checked CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// The subject CN, if the CSR names one.
    pub common_name: Option<String>,
    /// The key's type.
    pub key: KeyType,
}

/// A certificate signed from a CSR (the key stayed with the requester).
#[derive(Debug, Clone)]
pub struct SignedLeaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

/// Parses a CSR from PEM (or DER), bounded in size, checks its signature and key type.
pub fn check_csr(input: &[u8]) -> Result<(CsrInfo, Vec<u8>), Error> {
    if input.len() > MAX_CSR_BYTES {
        return Err(Error::Csr(format!("larger than {MAX_CSR_BYTES} bytes")));
    }
    let der = csr_der(input)?;
    let info = inspect_csr(&der)?;
    Ok((info, der))
}

fn inspect_csr(der: &[u8]) -> Result<CsrInfo, Error> {
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|_| Error::Csr("not a PKCS#10 certificate signing request".into()))?;
    if !rest.is_empty() {
        return Err(Error::Csr("trailing bytes after the request".into()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    let key = if *algorithm == OID_SIG_ED25519 {
        KeyType::Ed25519
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => KeyType::EcdsaP256,
            Some(c) if c == OID_NIST_EC_P384 => KeyType::EcdsaP384,
            _ => {
                return Err(Error::Csr(
                    "weak or unsupported elliptic curve (P-256, P-384 or Ed25519 only)".into(),
                ));
            }
        }
    } else {
        return Err(Error::Csr(
            "unsupported key type (RSA and others refused: P-256, P-384 or Ed25519 only)".into(),
        ));
    };
    // After the key type: a weak curve's signature may not even be checkable.
    csr.verify_signature()
        .map_err(|_| Error::Csr("its signature does not verify".into()))?;
    let mut names = csr.certification_request_info.subject.iter_common_name();
    let common_name = match (names.next(), names.next()) {
        (None, _) => None,
        (Some(cn), None) => Some(
            cn.as_str()
                .map_err(|_| Error::Csr("its CN is not a string".into()))?
                .to_owned(),
        ),
        (Some(_), Some(_)) => return Err(Error::Csr("more than one CN".into())),
    };
    Ok(CsrInfo { common_name, key })
}

/// A fresh P-256 key and a CSR signed with it, both PEM: what Wings sends. The CSR names
/// `node_id` as its CN when given (the issuer sets the CN anyway, and refuses another).
pub fn node_csr(node_id: Option<&str>) -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(node_id) = node_id {
        super::validate_node_id(node_id)?;
        params.distinguished_name = name(node_id, None);
    }
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

impl CertificateAuthority {
    /// Makes the issuing intermediate under this root: path length 0, so it signs leaves only.
    /// Refused when this root was made with path length 0 (before issuers existed).
    pub fn generate_issuer(
        &self,
        common_name: &str,
        now: OffsetDateTime,
        days: u32,
    ) -> Result<CertificateAuthority, Error> {
        let root = super::inspect::parse_ca(self.cert_der())?;
        if root == Some(0) {
            return Err(Error::Csr(
                "this root CA was made with path length 0 and cannot certify an issuer: make a new root (`dev-ca init --force`) and move the fleet to it (README: rotating the root)".into(),
            ));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = super::ca_params(common_name, 0, now, days);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        CertificateAuthority::from_pem(&cert_pem, &key.serialize_pem())
    }

    /// Signs a node certificate for `spec` (kind node, CN and SANs from the caller) over the
    /// public key of a CSR that passed [`check_csr`]. A CSR naming another CN is refused.
    pub fn sign_node_csr(&self, csr_der: &[u8], spec: &LeafSpec) -> Result<SignedLeaf, Error> {
        let (info, der) = check_csr(csr_der)?;
        if let Some(cn) = &info.common_name
            && *cn != spec.common_name
        {
            return Err(Error::CommonNameMismatch {
                found: cn.clone(),
                expected: spec.common_name.clone(),
            });
        }
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            der.as_slice(),
        ))
        .map_err(|e| Error::Csr(e.to_string()))?;
        let params = self.leaf_params(&LeafSpec {
            kind: LeafKind::Node,
            ..spec.clone()
        })?;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(SignedLeaf {
            cert_pem: signed.pem(),
            cert_der: signed.der().clone(),
        })
    }
}

/// DER from PEM (`CERTIFICATE REQUEST`) or DER input.
fn csr_der(input: &[u8]) -> Result<Vec<u8>, Error> {
    use rustls_pki_types::pem::PemObject;
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    CertificateSigningRequestDer::from_pem_slice(input)
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| Error::Csr("no CERTIFICATE REQUEST block found".into()))
}
