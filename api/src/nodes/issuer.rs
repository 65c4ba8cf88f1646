//! The panel's issuer of node certificates: the intermediate under the offline root
//! (`PANEL_ISSUER_CERT_FILE`, `PANEL_ISSUER_KEY_FILE`), signing the CSRs of enrolling and
//! renewing nodes. The root key is never loaded here. A panel without an issuer does no
//! enrolment and no renewal. The issuer files are re-read when they change ([`IssuerSlot`]),
//! so a new issuer (under a new root, during a root rotation) takes over without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use security::pki::{self, CertificateAuthority, LeafKind, LeafSpec};
use time::OffsetDateTime;

use crate::Error;
use crate::config::{PANEL_ISSUER_CERT_FILE, PANEL_ISSUER_KEY_FILE};

/// The issuing intermediate, loaded once at start.
pub struct Issuer {
    ca: CertificateAuthority,
    /// Every certificate of the issuer file (the issuer first), PEM: sent with each leaf.
    chain_pem: String,
    not_after: OffsetDateTime,
    lifetime: Duration,
}

/// A node certificate the issuer signed.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    /// The leaf, PEM.
    pub cert_pem: String,
    /// The intermediates that go with it, PEM.
    pub chain_pem: String,
    /// The leaf's SHA-256 fingerprint (what is pinned).
    pub fingerprint: String,
    /// End of its validity.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The current issuer, if any, swapped when its files change.
#[derive(Debug, Default)]
pub struct IssuerSlot {
    files: Option<(PathBuf, PathBuf)>,
    lifetime: Duration,
    current: RwLock<Option<Arc<Issuer>>>,
    source: Mutex<Vec<u8>>,
}

impl IssuerSlot {
    /// Loads the issuer from `files` (none: no issuer).
    pub fn load(files: Option<(PathBuf, PathBuf)>, lifetime: Duration) -> Result<Self, Error> {
        let slot = IssuerSlot {
            files,
            lifetime,
            ..IssuerSlot::default()
        };
        slot.reload()?;
        Ok(slot)
    }

    /// The issuer now.
    pub fn get(&self) -> Option<Arc<Issuer>> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files; a changed, usable issuer replaces the current one. Returns whether
    /// it did; an unusable file is an error and the current issuer stays.
    pub fn reload(&self) -> Result<bool, Error> {
        let Some((cert, key)) = &self.files else {
            return Ok(false);
        };
        let mut source = std::fs::read(cert).map_err(|e| {
            Error::config(PANEL_ISSUER_CERT_FILE, format!("{}: {e}", cert.display()))
        })?;
        source.extend(std::fs::read(key).map_err(|e| {
            Error::config(PANEL_ISSUER_KEY_FILE, format!("{}: {e}", key.display()))
        })?);
        let Ok(mut last) = self.source.lock() else {
            return Ok(false);
        };
        if *last == source {
            return Ok(false);
        }
        let issuer = Issuer::load(cert, key, self.lifetime)?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(issuer));
        }
        *last = source;
        Ok(true)
    }
}

impl Issuer {
    /// Loads the issuer's certificate and key; errors name the variable.
    pub fn load(cert: &Path, key: &Path, lifetime: Duration) -> Result<Issuer, Error> {
        let cert_pem = std::fs::read_to_string(cert).map_err(|e| {
            Error::config(PANEL_ISSUER_CERT_FILE, format!("{}: {e}", cert.display()))
        })?;
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| Error::config(PANEL_ISSUER_KEY_FILE, format!("{}: {e}", key.display())))?;
        let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| {
            Error::config(
                PANEL_ISSUER_CERT_FILE,
                format!("does not make a CA with {PANEL_ISSUER_KEY_FILE}: {e}"),
            )
        })?;
        let info = pki::inspect(ca.cert_der())
            .map_err(|e| Error::config(PANEL_ISSUER_CERT_FILE, format!("{e}")))?;
        if !info.is_ca {
            return Err(Error::config(
                PANEL_ISSUER_CERT_FILE,
                format!(
                    "{} is not a CA certificate (make one with `dev-ca issuer`)",
                    cert.display()
                ),
            ));
        }
        Ok(Issuer {
            ca,
            chain_pem: cert_pem,
            not_after: info.not_after,
            lifetime,
        })
    }

    /// When the issuer itself expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The lifetime of the certificates it signs.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs a node certificate for `node_id` (CN) and `fqdn` (SAN, when it is a host name)
    /// over the CSR's key, valid from `now` for the configured lifetime (never past the
    /// issuer's own expiry).
    pub fn sign(
        &self,
        csr: &[u8],
        node_id: &str,
        fqdn: &str,
        now: OffsetDateTime,
    ) -> Result<NodeCertificate, security::Error> {
        let lifetime = time::Duration::try_from(self.lifetime).unwrap_or(time::Duration::days(30));
        let hostnames: Vec<String> = std::iter::once(fqdn.to_owned())
            .filter(|h| security::pki::check_hostname(h).is_ok())
            .collect();
        let mut spec = LeafSpec::for_lifetime(LeafKind::Node, node_id, &hostnames, now, lifetime);
        // The clock-skew margin, at most a tenth of the lifetime: Wings renews at two thirds
        // of not_before..not_after, which must stay in the future for short lifetimes.
        spec.not_before = now - security::pki::CLOCK_SKEW.min(lifetime / 10);
        spec.not_after = spec.not_after.min(self.not_after);
        let leaf = self.ca.sign_node_csr(csr, &spec)?;
        Ok(NodeCertificate {
            fingerprint: pki::fingerprint(&leaf.cert_der),
            cert_pem: leaf.cert_pem,
            chain_pem: self.chain_pem.clone(),
            not_after: spec.not_after,
        })
    }
}
