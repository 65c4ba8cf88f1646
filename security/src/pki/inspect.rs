//! Reading certificates: the single common name, SANs, validity and the SHA-256 fingerprint.
//!
//! webpki never looks at a client certificate's CN or SAN, so binding a certificate to a node
//! is ours to do: [`common_name`] insists on exactly one UTF-8 CN.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// Lowercase hex SHA-256 of the DER certificate, no separators: the pinned fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The facts about a certificate the tools print and the panel records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The single common name of the subject.
    pub common_name: String,
    /// Subject alternative names (DNS names and IP addresses) as text.
    pub hostnames: Vec<String>,
    /// The issuer's distinguished name as text.
    pub issuer: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// See [`fingerprint`].
    pub fingerprint: String,
    /// Whether basic constraints mark it as a CA.
    pub is_ca: bool,
}

/// Where a moment falls in a certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Before `not_before`.
    NotYetValid,
    /// Within the window (both ends included, as webpki counts them).
    Valid,
    /// After `not_after`.
    Expired,
}

impl CertInfo {
    /// Whole days from `now` until `not_after` (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// Whether the certificate is valid at `now`.
    pub fn validity_at(&self, now: OffsetDateTime) -> Validity {
        validity(self.not_before, self.not_after, now)
    }
}

/// Where `now` falls in the window `not_before..=not_after`.
pub fn validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Validity {
    if now < not_before {
        Validity::NotYetValid
    } else if now > not_after {
        Validity::Expired
    } else {
        Validity::Valid
    }
}

/// Parses a DER certificate into [`CertInfo`].
pub fn inspect(der: &[u8]) -> Result<CertInfo, Error> {
    let cert = parse(der)?;
    let hostnames = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => ip_text(bytes),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(Error::Parse(format!("subject alternative names: {e}"))),
    };
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    Ok(CertInfo {
        common_name: single_cn(&cert)?,
        hostnames,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        fingerprint: fingerprint(der),
        is_ca,
    })
}

/// For a CA certificate, its path length constraint (`None`: unconstrained or not a CA).
pub(super) fn parse_ca(der: &[u8]) -> Result<Option<u32>, Error> {
    let cert = parse(der)?;
    Ok(match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => bc.value.path_len_constraint,
        _ => None,
    })
}

/// The certificate's one UTF-8 common name; zero, several or a non-UTF-8 one is an error.
pub fn common_name(der: &[u8]) -> Result<String, Error> {
    single_cn(&parse(der)?)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::Parse("trailing bytes after the certificate".into())),
        Err(e) => Err(Error::Parse(e.to_string())),
    }
}

fn single_cn(cert: &X509Certificate<'_>) -> Result<String, Error> {
    let mut names = cert.subject().iter_common_name();
    let first = names.next().ok_or(Error::CommonName("no CN"))?;
    if names.next().is_some() {
        return Err(Error::CommonName("more than one CN"));
    }
    // `as_str` accepts UTF8String, PrintableString and IA5String, all valid UTF-8.
    let cn = first
        .as_str()
        .map_err(|_| Error::CommonName("CN is not a UTF-8 string"))?;
    if cn.is_empty() {
        return Err(Error::CommonName("CN is empty"));
    }
    Ok(cn.to_owned())
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
