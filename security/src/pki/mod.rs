//! The certificate authority behind the node channel.
//!
//! A CA ([`CertificateAuthority`]) issues two kinds of leaf ([`LeafKind`]): node certificates
//! (CN = node id, SAN = host names, client auth only) and the panel's gRPC server certificate
//! (server auth, and the URI SAN [`PANEL_URI`] that Wings requires, see [`panel`]). A root CA
//! certifies one issuing intermediate for the panel, which signs node CSRs (see `issuer`). All keys are ECDSA P-256. Serials are random 128-bit values, validity windows
//! start a few minutes in the past to absorb clock skew, and leaves carry the authority key
//! identifier of the CA that signed them.

mod inspect;
mod issuer;
mod layout;
pub mod panel;
mod verify;

#[cfg(test)]
mod tests;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

pub use inspect::{CertInfo, Validity, common_name, fingerprint, inspect, validity};
pub use issuer::{
    CsrInfo, ISSUER_DAYS, KeyType, MAX_CSR_BYTES, NODE_CERT_DAYS, SignedLeaf, check_csr, node_csr,
};
pub use layout::{CertLayout, write_private, write_public};
pub use panel::{PANEL_URI, PanelServerVerifier, is_panel_certificate};
pub use verify::{key_matches_cert, verify_chain, verify_issued_by};

use crate::Error;

/// Default lifetime of the CA, in days (five years).
pub const CA_DAYS: u32 = 5 * 365;
/// Default lifetime of node and panel certificates, in days.
pub const LEAF_DAYS: u32 = 90;
/// How far back a new certificate's validity starts, to absorb clock skew between hosts.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Checks a node id against `[a-z0-9][a-z0-9-]{0,62}`: safe as a file name, a CN and a DNS label.
pub fn validate_node_id(id: &str) -> Result<(), Error> {
    let mut bytes = id.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'));
    let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
    if first_ok && rest_ok && id.len() <= 63 {
        Ok(())
    } else {
        Err(Error::InvalidNodeId(id.to_owned()))
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A Wings node: client auth towards the panel, nothing else (a node certificate must
    /// never pass for a server, least of all the panel).
    Node,
    /// The panel's gRPC server: server auth and the URI SAN [`PANEL_URI`].
    Server,
}

/// Everything needed to issue one leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Node or server.
    pub kind: LeafKind,
    /// The subject common name (the node id for nodes).
    pub common_name: String,
    /// DNS names or IP addresses for the subject alternative names.
    pub hostnames: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A leaf valid from `now - CLOCK_SKEW` for `lifetime`.
    pub fn for_lifetime(
        kind: LeafKind,
        common_name: &str,
        hostnames: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Self {
        LeafSpec {
            kind,
            common_name: common_name.to_owned(),
            hostnames: hostnames.to_vec(),
            not_before: now - CLOCK_SKEW,
            not_after: now + lifetime,
        }
    }

    /// A leaf valid from `now - CLOCK_SKEW` for `days` days.
    pub fn new(
        kind: LeafKind,
        common_name: &str,
        hostnames: &[String],
        now: OffsetDateTime,
        days: u32,
    ) -> Self {
        LeafSpec {
            kind,
            common_name: common_name.to_owned(),
            hostnames: hostnames.to_vec(),
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A certificate with its private key, both PEM-encoded, as written to disk.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM. Write it with [`write_private`].
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("fingerprint", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// A certificate authority able to sign leaves.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// The parameters of a CA certificate (a root or the issuing intermediate) that may certify
/// `path_len` CAs below it, valid from `now - CLOCK_SKEW` for `days` days.
pub(crate) fn ca_params(
    common_name: &str,
    path_len: u8,
    now: OffsetDateTime,
    days: u32,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, Some("Mamba Host Panel"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(i64::from(days));
    params
}

impl CertificateAuthority {
    /// Makes a new self-signed CA valid from `now - CLOCK_SKEW` for `days` days.
    pub fn generate(common_name: &str, now: OffsetDateTime, days: u32) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // Path length 1: the root certifies the panel's issuing intermediate (see `issuer`).
        let params = ca_params(common_name, 1, now, days);
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Pem {
            what: "CA key".into(),
            reason: e.to_string(),
        })?;
        let cert_der =
            crate::tls::parse_certs(cert_pem.as_bytes(), "CA certificate")?.swap_remove(0);
        if !key_matches_cert(key_pem, &cert_der)? {
            return Err(Error::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key, PEM (PKCS#8). Write it with [`write_private`].
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf with a fresh P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = self.leaf_params(spec)?.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }

    /// The certificate fields of a leaf: subject, SANs, usages, serial, validity, AKI.
    fn leaf_params(&self, spec: &LeafSpec) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name, None);
        params.subject_alt_names = spec
            .hostnames
            .iter()
            .map(|h| san(h))
            .collect::<Result<_, _>>()?;
        if spec.kind == LeafKind::Server {
            let uri = PANEL_URI
                .try_into()
                .map_err(|_| Error::InvalidHostname(PANEL_URI.to_owned()))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.kind {
            LeafKind::Node => vec![ExtendedKeyUsagePurpose::ClientAuth],
            LeafKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.serial_number = Some(random_serial());
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Checks that `host` can go into a certificate's subject alternative names (a DNS name or an
/// IP address).
pub fn check_hostname(host: &str) -> Result<(), Error> {
    san(host).map(|_| ())
}

fn san(host: &str) -> Result<SanType, Error> {
    if let Ok(ip) = host.parse() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(Error::InvalidHostname(host.to_owned()));
    }
    host.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| Error::InvalidHostname(host.to_owned()))
}

/// A random positive 128-bit serial (the top bit cleared keeps the DER integer positive).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
