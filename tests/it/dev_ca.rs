//! The `dev-ca` binary, run as a user would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tests::run;

fn dev_ca(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run("dev-ca", args, &[], dir)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_generate_verify_env_list_fingerprint() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (ok, out, err) = dev_ca(dir, &["init"]);
    assert!(ok, "{out}{err}");
    assert_eq!(mode(&dir.join("certs/ca/ca-key.pem")), 0o600);
    let ca_before = std::fs::read(dir.join("certs/ca/ca-cert.pem")).expect("ca");

    let (ok, _, err) = dev_ca(dir, &["init"]);
    assert!(
        !ok && err.contains("already exists"),
        "init must not overwrite: {err}"
    );
    assert_eq!(
        std::fs::read(dir.join("certs/ca/ca-cert.pem")).expect("ca"),
        ca_before
    );

    let (ok, out, err) = dev_ca(dir, &["generate", "us-east-1-node-01", "node1.example.com"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        mode(&dir.join("certs/nodes/us-east-1-node-01-key.pem")),
        0o600
    );
    let (ok, _, err) = dev_ca(dir, &["generate", "us-east-1-node-01", "node1.example.com"]);
    assert!(!ok && err.contains("--force"), "{err}");

    let (ok, out, err) = dev_ca(dir, &["verify", "us-east-1-node-01", "--json"]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["ok"], true);
    assert_eq!(report["common_name"], "us-east-1-node-01");
    assert_eq!(
        report["hostnames"],
        serde_json::json!(["node1.example.com"])
    );
    assert_eq!(report["days_left"], 89);
    let pem = std::fs::read(dir.join("certs/nodes/us-east-1-node-01-cert.pem")).expect("cert");
    let der = security::tls::parse_certs(&pem, "cert")
        .expect("pem")
        .remove(0);
    assert_eq!(report["fingerprint"], security::pki::fingerprint(&der));

    let (ok, out, _) = dev_ca(dir, &["fingerprint", "us-east-1-node-01"]);
    assert!(ok);
    assert_eq!(out.trim(), security::pki::fingerprint(&der));

    let (ok, out, _) = dev_ca(dir, &["env", "us-east-1-node-01"]);
    assert!(ok);
    for var in [
        "WINGS_NODE_ID=us-east-1-node-01",
        "WINGS_API_URL=https://",
        "WINGS_TLS_CERT_FILE=/",
        "WINGS_TLS_KEY_FILE=/",
        "WINGS_API_CA_CERT=/",
    ] {
        assert!(out.contains(var), "{var} in {out}");
    }

    let (ok, out, _) = dev_ca(dir, &["list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let (ok, out, err) = dev_ca(dir, &["server", "localhost", "127.0.0.1", "--days", "30"]);
    assert!(ok, "{out}{err}");
    assert_eq!(mode(&dir.join("certs/server/panel-key.pem")), 0o600);
}

#[test]
fn invalid_node_ids_touch_no_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    assert!(dev_ca(dir, &["init"]).0);
    let too_long = "a".repeat(64);
    for bad in ["../x", "A B", "", too_long.as_str(), "-x", "x/y"] {
        let (ok, _, err) = dev_ca(dir, &["generate", "--", bad, "h.example.com"]);
        assert!(!ok && err.contains("invalid node id"), "{bad:?}: {err}");
    }
    assert!(
        !dir.join("certs/nodes").exists(),
        "no file written for an invalid id"
    );
    assert!(!dir.join("x-cert.pem").exists() && !dir.join("certs/x-cert.pem").exists());
}

#[test]
fn verify_fails_on_wrong_key_cn_mismatch_and_foreign_ca() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    assert!(dev_ca(dir, &["init"]).0);
    assert!(dev_ca(dir, &["generate", "node-a", "a.example.com"]).0);
    assert!(dev_ca(dir, &["generate", "node-b", "b.example.com"]).0);
    let nodes = dir.join("certs/nodes");

    // A key that belongs to another certificate.
    std::fs::copy(nodes.join("node-b-key.pem"), nodes.join("node-a-key.pem")).expect("copy");
    let (ok, out, _) = dev_ca(dir, &["verify", "node-a"]);
    assert!(!ok && out.contains("does not match"), "{out}");

    // node-c's files hold node-b's certificate: the CN is wrong.
    std::fs::copy(nodes.join("node-b-cert.pem"), nodes.join("node-c-cert.pem")).expect("copy");
    std::fs::copy(nodes.join("node-b-key.pem"), nodes.join("node-c-key.pem")).expect("copy");
    let (ok, out, _) = dev_ca(dir, &["verify", "node-c"]);
    assert!(!ok && out.contains("CN is \"node-b\""), "{out}");

    // A new CA: the old certificates no longer chain.
    assert!(dev_ca(dir, &["init", "--force"]).0);
    let (ok, out, _) = dev_ca(dir, &["verify", "node-b"]);
    assert!(!ok && out.contains("chain"), "{out}");
}
