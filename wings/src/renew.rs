//! Certificate renewal with overlap, so that the node is never without a valid certificate
//! and never offline.
//!
//! - **When**: at a random point between 2/3 and 3/4 of the certificate's lifetime
//!   ([`renew_at`]), at once when the panel sends `Rotate`, and after a failure with backoff
//!   (5 s doubling to 10 min). The schedule is computed from the certificate and the current
//!   time handed in, never read inside.
//! - **How**: a new P-256 key is made here; its CSR goes up the authenticated stream; the
//!   panel answers with the certificate (now its *next* pin) or a refusal.
//! - **Files** ([`Files`]): the new key and certificate are written beside the current ones
//!   (`*.next`, atomically, key 0600), the current pair is kept as `*.prev`, then the new ones
//!   are renamed into place. Loading ([`Files::load`]) takes the first pair whose key matches
//!   its certificate and which is valid now — current, then the half-renamed combinations —
//!   so a crash at any point leaves a usable identity. The `*.prev` pair is deleted only once
//!   the panel has welcomed a stream on the new certificate (it promoted it); if the panel
//!   refuses the new one, the previous pair is put back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::Error;
use crate::tls::Identity;

/// First retry after a failed renewal; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between failed renewals.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long the panel has to answer a CSR.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// When to renew a certificate valid `not_before..not_after`: at 2/3 of its lifetime plus
/// `jitter` (0..1) of a further 1/12, so a fleet issued together does not renew together.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let lifetime = not_after - not_before;
    not_before + lifetime * (2.0 / 3.0) + lifetime * (jitter.clamp(0.0, 1.0) / 12.0)
}

/// The facts about the certificate a stream was opened with.
#[derive(Debug, Clone)]
pub struct Presented {
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
    /// Start of its validity.
    pub not_before: OffsetDateTime,
    /// End of its validity.
    pub not_after: OffsetDateTime,
    /// Whether it is the kept previous pair (the renewed one was refused).
    pub previous: bool,
}

/// The node's key and certificate files, with their `.next` and `.prev` companions.
#[derive(Debug, Clone)]
pub struct Files {
    /// `WINGS_TLS_KEY_FILE`.
    pub key: PathBuf,
    /// `WINGS_TLS_CERT_FILE`.
    pub cert: PathBuf,
    /// `WINGS_API_CA_CERT`: replaced by the roots the panel sends with a renewal, the old ones
    /// kept as `.prev` until the panel welcomes the renewed certificate.
    pub ca: PathBuf,
}

impl Files {
    /// Loads the identity to present at `now`: the first of current, half-renamed and previous
    /// pairs whose key matches and whose certificate is valid (`previous_first` after the panel
    /// refused the renewed certificate).
    pub fn load(
        &self,
        now: OffsetDateTime,
        previous_first: bool,
    ) -> Result<(Identity, Presented), Error> {
        let (key, cert) = (self.key.clone(), self.cert.clone());
        let (key_prev, cert_prev) = (with(&key, ".prev"), with(&cert, ".prev"));
        let mut candidates = vec![
            (key.clone(), cert.clone(), false),
            (key.clone(), with(&cert, ".next"), false),
            (key_prev.clone(), cert.clone(), true),
            (key_prev.clone(), cert_prev.clone(), true),
        ];
        if previous_first {
            candidates.rotate_right(1);
        }
        let mut first_error = None;
        for (key_file, cert_file, previous) in candidates {
            match pair(&key_file, &cert_file, now) {
                Ok((identity, mut presented)) => {
                    presented.previous = previous;
                    return Ok((identity, presented));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::Io("no usable key and certificate".into())))
    }

    /// Writes a renewed pair: beside the current one first, the current one kept as `.prev`,
    /// then renamed into place. `key_pem` must be the key of the chain's leaf.
    pub fn install(&self, key_pem: &str, chain_pem: &str) -> Result<(), Error> {
        let leaf = security::tls::parse_certs(chain_pem.as_bytes(), "the renewed certificate")?;
        let matches = leaf
            .first()
            .map(|cert| security::pki::key_matches_cert(key_pem, cert))
            .transpose()?;
        if matches != Some(true) {
            return Err(Error::Io(
                "the renewed certificate is not for the key made here".into(),
            ));
        }
        let (key_next, cert_next) = (with(&self.key, ".next"), with(&self.cert, ".next"));
        security::pki::write_private(&key_next, key_pem)?;
        security::pki::write_public(&cert_next, chain_pem)?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))
        };
        security::pki::write_private(&with(&self.key, ".prev"), &read(&self.key)?)?;
        security::pki::write_public(&with(&self.cert, ".prev"), &read(&self.cert)?)?;
        rename(&key_next, &self.key)?;
        rename(&cert_next, &self.cert)
    }

    /// Trusts `bundle` (roots, PEM) for the panel from now on, keeping the current roots as
    /// `.prev` until [`Files::retire_previous`]. Unusable or unchanged roots change nothing.
    pub fn trust(&self, bundle: &str) -> Result<bool, Error> {
        let roots = security::tls::parse_certs(bundle.as_bytes(), "the panel's roots")?;
        security::tls::root_store(&roots)?;
        let current = std::fs::read_to_string(&self.ca)
            .map_err(|e| Error::Io(format!("{}: {e}", self.ca.display())))?;
        if current == bundle {
            return Ok(false);
        }
        security::pki::write_public(&with(&self.ca, ".prev"), &current)?;
        security::pki::write_public(&self.ca, bundle)?;
        Ok(true)
    }

    /// The panel welcomed the renewed certificate: the previous pair is no longer needed.
    pub fn retire_previous(&self) {
        for path in [
            with(&self.key, ".prev"),
            with(&self.cert, ".prev"),
            with(&self.ca, ".prev"),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The panel refused the renewed certificate: put the previous pair (and roots) back.
    pub fn restore_previous(&self) -> Result<(), Error> {
        let ca_prev = with(&self.ca, ".prev");
        if ca_prev.exists() {
            rename(&ca_prev, &self.ca)?;
        }
        let (key_prev, cert_prev) = (with(&self.key, ".prev"), with(&self.cert, ".prev"));
        if !key_prev.exists() || !cert_prev.exists() {
            return Ok(());
        }
        rename(&key_prev, &self.key)?;
        rename(&cert_prev, &self.cert)
    }

    /// Whether a previous pair is kept.
    pub fn has_previous(&self) -> bool {
        with(&self.key, ".prev").exists()
    }
}

/// Where a renewal stands on this node, across streams.
#[derive(Debug, Default)]
pub struct Renewal {
    /// The key whose CSR is with the panel, and when it was sent.
    pending: Option<(String, tokio::time::Instant)>,
    /// Failures in a row.
    failures: u32,
    /// Do not try again before this (after a failure).
    not_before: Option<tokio::time::Instant>,
    /// Load the previous pair first (the panel refused the renewed one).
    pub previous_first: bool,
    /// The jitter of the current certificate's renewal point.
    jitter: f64,
}

impl Renewal {
    /// A fresh jitter, for a newly presented certificate.
    pub fn new_certificate(&mut self) {
        self.jitter = rand::random::<f64>();
    }

    /// When to start a renewal of `presented` (`now` is the current time), as a tokio instant.
    pub fn deadline(&self, presented: &Presented, now: OffsetDateTime) -> tokio::time::Instant {
        let at = renew_at(presented.not_before, presented.not_after, self.jitter);
        let wait = Duration::try_from(at - now).unwrap_or_default();
        let scheduled = tokio::time::Instant::now() + wait;
        // After a failure, the backoff decides (the schedule has passed already).
        self.not_before.unwrap_or(scheduled)
    }

    /// Whether a CSR is with the panel.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When the pending CSR times out.
    pub fn answer_deadline(&self) -> Option<tokio::time::Instant> {
        self.pending
            .as_ref()
            .map(|(_, sent)| *sent + ANSWER_TIMEOUT)
    }

    /// Makes a key and CSR for `node_id`; returns the CSR to send.
    pub fn start(&mut self, node_id: &str) -> Result<String, Error> {
        let (key_pem, csr_pem) = security::pki::node_csr(Some(node_id))?;
        self.pending = Some((key_pem, tokio::time::Instant::now()));
        Ok(csr_pem)
    }

    /// The key of the pending CSR, taken (the answer arrived).
    pub fn take_key(&mut self) -> Option<String> {
        self.pending.take().map(|(key, _)| key)
    }

    /// A renewal failed: forget the key, back off.
    pub fn failed(&mut self) -> Duration {
        self.pending = None;
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << self.failures.min(16).saturating_sub(1))
            .min(MAX_BACKOFF);
        self.not_before = Some(tokio::time::Instant::now() + backoff);
        backoff
    }

    /// A renewal succeeded (the panel welcomed the new certificate).
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
        self.previous_first = false;
    }
}

fn pair(key: &Path, cert: &Path, now: OffsetDateTime) -> Result<(Identity, Presented), Error> {
    let chain: Vec<CertificateDer<'static>> = security::tls::read_certs(cert)?;
    let key_pem =
        std::fs::read_to_string(key).map_err(|e| Error::Io(format!("{}: {e}", key.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| Error::Io(format!("{}: no certificate", cert.display())))?;
    if !security::pki::key_matches_cert(&key_pem, leaf)? {
        return Err(Error::Io(format!(
            "{} is not the key of {}",
            key.display(),
            cert.display()
        )));
    }
    let info = security::pki::inspect(leaf)?;
    if info.validity_at(now) != security::pki::Validity::Valid {
        return Err(Error::Io(format!("{} is not valid now", cert.display())));
    }
    let key: PrivateKeyDer<'static> = security::tls::read_key(key)?;
    Ok((
        Identity { chain, key },
        Presented {
            fingerprint: info.fingerprint,
            not_before: info.not_before,
            not_after: info.not_after,
            previous: false,
        },
    ))
}

fn with(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to)
        .map_err(|e| Error::Io(format!("{} → {}: {e}", from.display(), to.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_two_thirds_and_three_quarters() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let end = start + time::Duration::seconds(1200);
        assert_eq!(
            renew_at(start, end, 0.0),
            start + time::Duration::seconds(800)
        );
        assert_eq!(
            renew_at(start, end, 1.0),
            start + time::Duration::seconds(900)
        );
    }

    #[test]
    fn every_interrupted_install_leaves_a_usable_pair() {
        security::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ca = security::pki::CertificateAuthority::generate("T", now, 30).unwrap();
        let issuer = ca.generate_issuer("I", now, 30).unwrap();
        let issue = || {
            let (key, csr) = security::pki::node_csr(Some("node-1")).unwrap();
            let spec =
                security::pki::LeafSpec::new(security::pki::LeafKind::Node, "node-1", &[], now, 1);
            let leaf = issuer.sign_node_csr(csr.as_bytes(), &spec).unwrap();
            (
                key,
                format!("{}{}", leaf.cert_pem, issuer.cert_pem()),
                security::pki::fingerprint(&leaf.cert_der),
            )
        };
        let files = Files {
            key: dir.path().join("key.pem"),
            cert: dir.path().join("cert.pem"),
            ca: dir.path().join("ca.pem"),
        };
        let (old_key, old_chain, old_fp) = issue();
        security::pki::write_private(&files.key, &old_key).unwrap();
        security::pki::write_public(&files.cert, &old_chain).unwrap();
        let (new_key, new_chain, new_fp) = issue();
        files.install(&new_key, &new_chain).unwrap();
        assert_eq!(files.load(now, false).unwrap().1.fingerprint, new_fp);
        assert_eq!(files.load(now, true).unwrap().1.fingerprint, old_fp);
        // A crash between the two renames: new key, old certificate.
        std::fs::copy(&files.key, with(&files.key, ".x")).unwrap();
        security::pki::write_public(&with(&files.cert, ".next"), &new_chain).unwrap();
        security::pki::write_public(&files.cert, &old_chain).unwrap();
        assert_eq!(
            files.load(now, false).unwrap().1.fingerprint,
            new_fp,
            "key with cert.next"
        );
        std::fs::remove_file(with(&files.cert, ".next")).unwrap();
        let (loaded, presented) = files.load(now, false).unwrap();
        assert_eq!(
            presented.fingerprint, old_fp,
            "the kept previous key with the old cert"
        );
        assert!(presented.previous);
        drop(loaded);
        // The panel refused the new one: the previous pair goes back.
        files.restore_previous().unwrap();
        assert_eq!(files.load(now, false).unwrap().1.fingerprint, old_fp);
        assert!(!files.has_previous());
    }
}
