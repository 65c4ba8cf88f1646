//! Certificates for tests, made by the project's own PKI code and written where the panel and
//! Wings read them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rustls_pki_types::CertificateDer;
use security::pki::{self, CertLayout, CertificateAuthority, LeafKind, LeafSpec};
use time::{Duration, OffsetDateTime};

/// A CA with the panel's server certificate, in a temporary directory.
pub struct TestPki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// Where its files are.
    pub layout: CertLayout,
    counter: AtomicU32,
}

/// A node certificate written to disk.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// The CN.
    pub node_id: String,
    /// Certificate file.
    pub cert_path: PathBuf,
    /// Key file.
    pub key_path: PathBuf,
    /// SHA-256 fingerprint.
    pub fingerprint: String,
}

impl NodeCert {
    /// The certificate chain and key, for a raw client.
    pub fn identity(&self) -> wings::tls::Identity {
        wings::tls::Identity {
            chain: security::tls::read_certs(&self.cert_path).expect("test certificate"),
            key: security::tls::read_key(&self.key_path).expect("test key"),
        }
    }
}

impl TestPki {
    /// A new CA under `dir`, with a server certificate for `localhost` and `127.0.0.1`.
    pub fn new(dir: &std::path::Path) -> TestPki {
        let layout = CertLayout::new(dir.join("certs"));
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate("Mamba Test CA", now, pki::CA_DAYS).expect("CA");
        pki::write_private(&layout.ca_key(), &ca.key_pem()).expect("write CA key");
        pki::write_public(&layout.ca_cert(), ca.cert_pem()).expect("write CA cert");
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server = ca
            .issue(&LeafSpec::new(
                LeafKind::Server,
                "mamba-panel",
                &hosts,
                now,
                30,
            ))
            .expect("server cert");
        pki::write_private(&layout.server_key(), &server.key_pem).expect("write server key");
        pki::write_public(&layout.server_cert(), &server.cert_pem).expect("write server cert");
        TestPki {
            ca,
            layout,
            counter: AtomicU32::new(0),
        }
    }

    /// Makes the panel's issuing intermediate under this CA and writes it where `dev-ca init`
    /// does (`issuer/issuer-{cert,key}.pem`); returns the panel's node identity settings.
    pub fn issuer(&self, lifetime: std::time::Duration) -> api::config::NodeIdentityConfig {
        let issuer = self
            .ca
            .generate_issuer("Mamba Test Issuer", OffsetDateTime::now_utc(), 365)
            .expect("issuer");
        pki::write_private(&self.layout.issuer_key(), &issuer.key_pem()).expect("issuer key");
        pki::write_public(&self.layout.issuer_cert(), issuer.cert_pem()).expect("issuer cert");
        api::config::NodeIdentityConfig {
            issuer: Some((self.layout.issuer_cert(), self.layout.issuer_key())),
            cert_lifetime: lifetime,
        }
    }

    /// The CA certificate, for clients.
    pub fn ca_certs(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    /// A valid node certificate (fresh key) for `node_id`.
    pub fn node(&self, node_id: &str) -> NodeCert {
        let now = OffsetDateTime::now_utc();
        self.node_valid(
            node_id,
            now - Duration::minutes(5),
            now + Duration::days(90),
        )
    }

    /// A node certificate whose validity ended yesterday.
    pub fn expired_node(&self, node_id: &str) -> NodeCert {
        let now = OffsetDateTime::now_utc();
        self.node_valid(node_id, now - Duration::days(10), now - Duration::days(1))
    }

    /// A node certificate valid only from tomorrow.
    pub fn future_node(&self, node_id: &str) -> NodeCert {
        let now = OffsetDateTime::now_utc();
        self.node_valid(node_id, now + Duration::days(1), now + Duration::days(10))
    }

    fn node_valid(
        &self,
        node_id: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> NodeCert {
        self.issue(LeafSpec {
            kind: LeafKind::Node,
            common_name: node_id.to_owned(),
            hostnames: vec!["node.example.com".into()],
            not_before,
            not_after,
        })
    }

    /// Issues `spec` and writes it under a unique name.
    pub fn issue(&self, spec: LeafSpec) -> NodeCert {
        let issued = self.ca.issue(&spec).expect("issue node cert");
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.layout.root().join("issued");
        let cert_path = dir.join(format!("{n}-cert.pem"));
        let key_path = dir.join(format!("{n}-key.pem"));
        pki::write_private(&key_path, &issued.key_pem).expect("write key");
        pki::write_public(&cert_path, &issued.cert_pem).expect("write cert");
        NodeCert {
            node_id: spec.common_name,
            cert_path,
            key_path,
            fingerprint: pki::fingerprint(&issued.cert_der),
        }
    }
}
