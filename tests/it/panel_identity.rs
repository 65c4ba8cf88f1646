//! Wings checks that the server it dials is the panel (issue 13, item 10): certificates made
//! by the real `dev-ca` binary are served on a loopback port by a stand-in server, and Wings'
//! own TLS client configuration (`wings::tls::client_config`, what the agent dials with)
//! must accept the panel's certificate and refuse a node's, although both come from the CA
//! it trusts and name the address it dials.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn dev_ca(dir: &Path, args: &[&str]) {
    let (ok, out, err) = tests::run("dev-ca", args, &[], dir);
    assert!(ok, "dev-ca {args:?}: {out}{err}");
}

fn read(
    dir: &Path,
    cert: &str,
    key: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        security::tls::read_certs(&dir.join(cert)).expect("certificate"),
        security::tls::read_key(&dir.join(key)).expect("key"),
    )
}

/// Serves one TLS handshake on 127.0.0.1 with `chain`; returns what Wings' client config
/// made of it.
async fn wings_dials(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    dir: &Path,
) -> Result<(), String> {
    let server = rustls::ServerConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let serving = tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let ca = security::tls::read_certs(&dir.join("certs/ca/ca-cert.pem")).expect("CA");
    let (node_chain, node_key) = read(
        dir,
        "certs/nodes/node-1-cert.pem",
        "certs/nodes/node-1-key.pem",
    );
    let identity = wings::tls::Identity {
        chain: node_chain,
        key: node_key,
    };
    let config = wings::tls::client_config(&ca, Some(identity)).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("literal name");
    let result = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    serving.abort();
    result
}

#[tokio::test]
async fn wings_refuses_a_node_certificate_served_as_the_panel() {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    dev_ca(dir, &["init"]);
    dev_ca(dir, &["server", "localhost", "127.0.0.1"]);
    dev_ca(dir, &["generate", "node-1", "127.0.0.1"]);
    dev_ca(dir, &["generate", "node-2", "127.0.0.1", "localhost"]);

    // The panel's own certificate is accepted.
    let (chain, key) = read(
        dir,
        "certs/server/panel-cert.pem",
        "certs/server/panel-key.pem",
    );
    wings_dials(chain, key, dir)
        .await
        .expect("the panel's certificate is accepted");

    // A valid node certificate of the same CA, naming the dialled address, is not.
    let (chain, key) = read(
        dir,
        "certs/nodes/node-2-cert.pem",
        "certs/nodes/node-2-key.pem",
    );
    let err = wings_dials(chain, key, dir)
        .await
        .expect_err("a node certificate posing as the panel is refused");
    println!("node certificate as the panel: {err}");
}

/// A certificate with server auth for the dialled address, from the trusted CA, but without
/// the panel's identity (as node certificates issued before this change carry): refused by
/// the explicit identity check, not only by the key usage.
#[tokio::test]
async fn wings_requires_the_panel_identity_not_only_server_auth() {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    dev_ca(dir, &["init"]);
    dev_ca(dir, &["generate", "node-1", "127.0.0.1"]);
    let ca_pem = std::fs::read_to_string(dir.join("certs/ca/ca-cert.pem")).expect("CA");
    let ca_key = std::fs::read_to_string(dir.join("certs/ca/ca-key.pem")).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &ca_pem,
        rcgen::KeyPair::from_pem(&ca_key).expect("CA key"),
    )
    .expect("issuer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mamba-panel");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).expect("signed");
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let err = wings_dials(vec![cert.der().clone()], key, dir)
        .await
        .expect_err("server auth alone does not make the panel");
    assert!(err.contains("panel"), "{err}");
}
