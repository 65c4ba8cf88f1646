//! Round trips through rustls's own verifier: rcgen's `signed_by` does not validate its issuer,
//! so these prove the leaves really chain to the CA that issued them.

use std::time::SystemTime;

use time::{Duration, OffsetDateTime};

use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn node_spec(id: &str) -> LeafSpec {
    LeafSpec::new(
        LeafKind::Node,
        id,
        &["node1.example.com".into()],
        now(),
        LEAF_DAYS,
    )
}

#[test]
fn node_ids() {
    for good in ["a", "us-east-1-node-01", "0", &"a".repeat(63)] {
        assert!(validate_node_id(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "../x",
        "A B",
        "A",
        "-a",
        "a_b",
        "a.b",
        "a/b",
        &"a".repeat(64),
        "é",
    ] {
        assert!(validate_node_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn node_cert_chains_to_its_ca() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let leaf = ca.issue(&node_spec("node-1")).unwrap();
    verify_issued_by(
        ca.cert_der(),
        &leaf.cert_der,
        LeafKind::Node,
        None,
        SystemTime::now(),
    )
    .unwrap();
    let info = inspect(&leaf.cert_der).unwrap();
    assert_eq!(info.common_name, "node-1");
    assert_eq!(info.hostnames, vec!["node1.example.com"]);
    assert!(!info.is_ca);
    assert_eq!(info.fingerprint.len(), 64);
    assert_eq!(info.days_left(now()), i64::from(LEAF_DAYS) - 1);
    assert!(key_matches_cert(&leaf.key_pem, &leaf.cert_der).unwrap());
    // Node certificates are client-auth only: never a server, even for their own names.
    assert!(
        verify_issued_by(
            ca.cert_der(),
            &leaf.cert_der,
            LeafKind::Server,
            Some("node1.example.com"),
            SystemTime::now(),
        )
        .is_err()
    );
    assert!(!is_panel_certificate(&leaf.cert_der));
    assert!(inspect(ca.cert_der()).unwrap().is_ca);
}

#[test]
fn validity_is_judged_at_the_given_time() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let info = inspect(&ca.issue(&node_spec("node-1")).unwrap().cert_der).unwrap();
    assert_eq!(info.validity_at(now()), Validity::Valid);
    assert_eq!(info.validity_at(info.not_after), Validity::Valid);
    assert_eq!(
        info.validity_at(info.not_after + Duration::seconds(1)),
        Validity::Expired
    );
    assert_eq!(
        info.validity_at(info.not_before - Duration::seconds(1)),
        Validity::NotYetValid
    );
}

#[test]
fn server_cert_verifies_for_its_names_only() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let leaf = ca
        .issue(&LeafSpec::new(LeafKind::Server, "panel", &hosts, now(), 30))
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        verify_issued_by(
            ca.cert_der(),
            &leaf.cert_der,
            LeafKind::Server,
            Some(host),
            SystemTime::now(),
        )
        .unwrap();
    }
    assert!(
        verify_issued_by(
            ca.cert_der(),
            &leaf.cert_der,
            LeafKind::Server,
            Some("evil.example"),
            SystemTime::now()
        )
        .is_err()
    );
    assert!(is_panel_certificate(&leaf.cert_der), "the panel's URI SAN");
    // A server-only certificate cannot be used as a node's client certificate.
    assert!(
        verify_issued_by(
            ca.cert_der(),
            &leaf.cert_der,
            LeafKind::Node,
            None,
            SystemTime::now()
        )
        .is_err()
    );
}

#[test]
fn foreign_ca_expired_and_future_are_refused() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let other = CertificateAuthority::generate("Other CA", now(), CA_DAYS).unwrap();
    let foreign = other.issue(&node_spec("node-1")).unwrap();
    let err = verify_issued_by(
        ca.cert_der(),
        &foreign.cert_der,
        LeafKind::Node,
        None,
        SystemTime::now(),
    );
    assert!(matches!(err, Err(Error::Verify(_))), "{err:?}");

    let mut expired = node_spec("node-1");
    expired.not_before = now() - Duration::days(10);
    expired.not_after = now() - Duration::days(1);
    let expired = ca.issue(&expired).unwrap();
    let err = verify_issued_by(
        ca.cert_der(),
        &expired.cert_der,
        LeafKind::Node,
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    let mut future = node_spec("node-1");
    future.not_before = now() + Duration::days(1);
    future.not_after = now() + Duration::days(10);
    let future = ca.issue(&future).unwrap();
    let err = verify_issued_by(
        ca.cert_der(),
        &future.cert_der,
        LeafKind::Node,
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid yet"), "{err}");
}

#[test]
fn reloaded_ca_issues_chaining_leaves_and_rejects_a_foreign_key() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    let leaf = reloaded.issue(&node_spec("node-2")).unwrap();
    verify_issued_by(
        ca.cert_der(),
        &leaf.cert_der,
        LeafKind::Node,
        None,
        SystemTime::now(),
    )
    .unwrap();

    let other = CertificateAuthority::generate("Other CA", now(), CA_DAYS).unwrap();
    assert!(matches!(
        CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem()),
        Err(Error::KeyMismatch)
    ));
    assert!(!key_matches_cert(&other.key_pem(), &leaf.cert_der).unwrap());
}

#[test]
fn serials_are_unique_and_fingerprints_differ() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    let a = inspect(&ca.issue(&node_spec("n")).unwrap().cert_der).unwrap();
    let b = inspect(&ca.issue(&node_spec("n")).unwrap().cert_der).unwrap();
    assert_ne!(a.serial, b.serial);
    assert_ne!(a.fingerprint, b.fingerprint);
}

#[test]
fn bad_hostnames_are_refused() {
    let ca = CertificateAuthority::generate("Test CA", now(), CA_DAYS).unwrap();
    for bad in ["", "a b", "-x.example", "x..y", "a/b"] {
        let spec = LeafSpec::new(LeafKind::Node, "n", &[bad.to_owned()], now(), 1);
        assert!(
            matches!(ca.issue(&spec), Err(Error::InvalidHostname(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn keys_are_written_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let layout = CertLayout::new(dir.path());
    write_private(&layout.ca_key(), "secret").unwrap();
    write_public(&layout.ca_cert(), "public").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&layout.ca_key()), 0o600);
    assert_eq!(mode(&layout.ca_cert()), 0o644);
    assert_eq!(std::fs::read_to_string(layout.ca_key()).unwrap(), "secret");
}

#[test]
fn issuer_signs_node_csrs_that_chain_to_the_root() {
    let root = CertificateAuthority::generate("Root", now(), CA_DAYS).unwrap();
    let issuer = root.generate_issuer("Issuer", now(), ISSUER_DAYS).unwrap();
    let (key_pem, csr_pem) = node_csr(Some("node-1")).unwrap();
    let spec = LeafSpec::new(
        LeafKind::Node,
        "node-1",
        &["n1.example.com".into()],
        now(),
        30,
    );
    let leaf = issuer.sign_node_csr(csr_pem.as_bytes(), &spec).unwrap();
    assert!(key_matches_cert(&key_pem, &leaf.cert_der).unwrap());
    let chain = [leaf.cert_der.clone(), issuer.cert_der().clone()];
    verify_chain(
        std::slice::from_ref(root.cert_der()),
        &chain,
        LeafKind::Node,
        None,
        SystemTime::now(),
    )
    .unwrap();
    // Without the issuer in the chain, the leaf does not verify against the root alone.
    assert!(
        verify_issued_by(
            root.cert_der(),
            &leaf.cert_der,
            LeafKind::Node,
            None,
            SystemTime::now()
        )
        .is_err()
    );
    // A CSR for another CN is refused; a CSR without a CN gets the caller's.
    let other = LeafSpec::new(LeafKind::Node, "node-2", &[], now(), 30);
    assert!(matches!(
        issuer.sign_node_csr(csr_pem.as_bytes(), &other),
        Err(Error::CommonNameMismatch { .. })
    ));
    // The issuer cannot certify another CA (path length 0).
    assert!(issuer.generate_issuer("Sub", now(), 30).is_err());
}

#[test]
fn garbage_and_oversized_csrs_are_refused() {
    for bad in [
        &b""[..],
        b"hello",
        b"\x30\x03\x02\x01\x00",
        &[b'A'; MAX_CSR_BYTES + 1],
    ] {
        assert!(matches!(check_csr(bad), Err(Error::Csr(_))), "{bad:?}");
    }
}
