//! Node identity lifecycle (issue 15), item 1: the issuer under an offline root. `dev-ca init`
//! writes the root and the panel's issuing intermediate; `dev-ca issuer` renews it;
//! `dev-ca sign-csr` signs a node's CSR (the key never leaves the node) into a whole chain that
//! `dev-ca verify` accepts; `api preflight` says when enrolment and renewal are off.

use std::path::Path;

use tests::run;

fn dev_ca(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--dir", "certs"];
    all.extend_from_slice(args);
    run("dev-ca", &all, &[], dir)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An RSA CSR and a P-192 one made by openssl (rcgen cannot make either), PEM.
pub(crate) fn openssl_csr(dir: &Path, kind: &str, cn: &str) -> String {
    let key = dir.join(format!("{kind}-key.pem"));
    let csr = dir.join(format!("{kind}-csr.pem"));
    let key_args: Vec<String> = match kind {
        "rsa" => vec![
            "genpkey".into(),
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            "rsa_keygen_bits:2048".into(),
        ],
        _ => vec![
            "ecparam".into(),
            "-genkey".into(),
            "-name".into(),
            "prime192v1".into(),
            "-noout".into(),
        ],
    };
    let status = std::process::Command::new("openssl")
        .args(&key_args)
        .arg("-out")
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl {kind} key");
    let status = std::process::Command::new("openssl")
        .args(["req", "-new", "-subj", &format!("/CN={cn}"), "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl req");
    assert!(status.success(), "openssl {kind} csr");
    std::fs::read_to_string(csr).unwrap()
}

#[test]
fn dev_ca_init_writes_an_issuer_that_signs_csrs_into_whole_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ok, out, err) = dev_ca(dir, &["init"]);
    assert!(ok, "{out}{err}");
    let issuer_cert = dir.join("certs/issuer/issuer-cert.pem");
    let issuer_key = dir.join("certs/issuer/issuer-key.pem");
    assert_eq!(mode(&issuer_key), 0o600);
    let before = std::fs::read_to_string(&issuer_cert).unwrap();
    assert!(out.contains("issuer written"), "{out}");

    // The issuer is not replaced without --force; with it, a new one under the same root.
    let (ok, _, err) = dev_ca(dir, &["issuer"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, err) = dev_ca(dir, &["issuer", "--force", "--days", "90"]);
    assert!(ok, "{out}{err}");
    assert_ne!(std::fs::read_to_string(&issuer_cert).unwrap(), before);

    // A node's CSR, its key kept "on the node".
    let (key_pem, csr_pem) = security::pki::node_csr(Some("node-7")).unwrap();
    std::fs::write(dir.join("node-7.csr"), &csr_pem).unwrap();
    let (ok, out, err) = dev_ca(
        dir,
        &[
            "sign-csr",
            "node-7",
            "node-7.csr",
            "--hostname",
            "n7.example.com",
        ],
    );
    assert!(ok, "{out}{err}");
    let chain = security::tls::read_certs(&dir.join("certs/nodes/node-7-cert.pem")).unwrap();
    assert_eq!(chain.len(), 2, "the leaf and the issuer");
    assert!(security::pki::key_matches_cert(&key_pem, &chain[0]).unwrap());
    assert_eq!(
        security::pki::inspect(&chain[1]).unwrap().fingerprint,
        security::pki::inspect(&security::tls::read_certs(&issuer_cert).unwrap()[0])
            .unwrap()
            .fingerprint
    );
    assert!(
        !dir.join("certs/nodes/node-7-key.pem").exists(),
        "no key was made here"
    );
    // The whole chain verifies against the root alone.
    let (ok, out, err) = dev_ca(dir, &["verify", "node-7"]);
    assert!(ok && out.contains("OK"), "{out}{err}");
    let roots = security::tls::read_certs(&dir.join("certs/ca/ca-cert.pem")).unwrap();
    security::pki::verify_chain(
        &roots,
        &chain,
        security::pki::LeafKind::Node,
        None,
        std::time::SystemTime::now(),
    )
    .unwrap();

    // A CSR for another CN, an RSA key and a weak curve are refused, and nothing is written.
    let (ok, _, err) = dev_ca(dir, &["sign-csr", "node-8", "node-7.csr"]);
    assert!(!ok && err.contains("CN"), "{err}");
    for kind in ["rsa", "p192"] {
        let csr = openssl_csr(dir, kind, "node-8");
        std::fs::write(dir.join("bad.csr"), csr).unwrap();
        let (ok, _, err) = dev_ca(dir, &["sign-csr", "node-8", "bad.csr"]);
        assert!(
            !ok && err.contains("certificate request refused"),
            "{kind}: {err}"
        );
    }
    assert!(!dir.join("certs/nodes/node-8-cert.pem").exists());
}

#[test]
fn preflight_says_when_enrolment_and_renewal_are_off() {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = tests::TestPki::new(dir);
    let db = format!("sqlite://{}?mode=rwc", dir.join("p.db").display());
    let env = tests::panel_env(&pki, &db, "127.0.0.1:0");
    let (_, out, _) = run("api", &["preflight"], &env, dir);
    let line = out
        .lines()
        .find(|l| l.contains("PANEL_ISSUER_CERT_FILE"))
        .unwrap_or_else(|| panic!("no issuer finding:\n{out}"));
    assert!(
        line.contains("enrolment and certificate renewal are off"),
        "{line}"
    );

    // With an issuer: no such finding; with a key of another certificate: named.
    pki.issuer(std::time::Duration::from_secs(3600));
    let mut with_issuer = env.clone();
    with_issuer.push((
        "PANEL_ISSUER_CERT_FILE".into(),
        pki.layout.issuer_cert().display().to_string(),
    ));
    with_issuer.push((
        "PANEL_ISSUER_KEY_FILE".into(),
        pki.layout.issuer_key().display().to_string(),
    ));
    let (_, out, _) = run("api", &["preflight"], &with_issuer, dir);
    assert!(!out.contains("PANEL_ISSUER"), "{out}");
    let mut wrong_key = env.clone();
    wrong_key.push((
        "PANEL_ISSUER_CERT_FILE".into(),
        pki.layout.issuer_cert().display().to_string(),
    ));
    wrong_key.push((
        "PANEL_ISSUER_KEY_FILE".into(),
        pki.layout.server_key().display().to_string(),
    ));
    let (_, out, _) = run("api", &["preflight"], &wrong_key, dir);
    assert!(
        out.lines()
            .any(|l| l.contains("PANEL_ISSUER_KEY_FILE") && l.contains("not the key")),
        "{out}"
    );
    // Half of the pair is a configuration error.
    let mut half = env.clone();
    half.push((
        "PANEL_ISSUER_CERT_FILE".into(),
        pki.layout.issuer_cert().display().to_string(),
    ));
    let (ok, out, _) = run("api", &["preflight"], &half, dir);
    assert!(!ok && out.contains("PANEL_ISSUER_KEY_FILE"), "{out}");
}
