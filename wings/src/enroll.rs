//! `wings enroll`: a node joins with a one-time token, and its key never leaves it.
//!
//! A fresh P-256 key is made here, a CSR signed with it goes with the token to the panel's
//! `POST /api/nodes/enroll` over https only (the REST listener's own TLS or a TLS proxy in
//! front; the server is verified against `--ca-cert`), and the answer — the certificate and
//! the issuer chain, whose fingerprint the panel has already pinned — is written with the key
//! and the root where the agent reads them: `WINGS_TLS_KEY_FILE` (0600), `WINGS_TLS_CERT_FILE`
//! and `WINGS_API_CA_CERT`, by default `$WINGS_DATA_DIR/identity/{key,cert,ca}.pem`, each
//! atomically. The token is never printed or logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::config::{
    WINGS_API_CA_CERT, WINGS_DATA_DIR, WINGS_NODE_ID, WINGS_TLS_CERT_FILE, WINGS_TLS_KEY_FILE,
};

/// The largest answer read from the panel (a certificate chain is a few KiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// The node channel's default port, for the `WINGS_API_URL` line printed at the end.
const DEFAULT_GRPC_PORT: u16 = 3001;

/// What `wings enroll` was given.
#[derive(Debug, Clone)]
pub struct Request {
    /// The panel's REST base URL, `https://host[:port]`.
    pub panel: String,
    /// The root (bundle) that the panel's certificates chain to.
    pub ca_cert: PathBuf,
    /// The join token.
    pub token: String,
}

/// Where the credentials went.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The node id the panel certified (the certificate's CN).
    pub node_id: String,
    /// The certificate's fingerprint, pinned by the panel already.
    pub fingerprint: String,
    /// The `WINGS_*` lines to run the agent with.
    pub env: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Answer {
    node_id: String,
    certificate: String,
    chain: String,
    fingerprint: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Enrols: key and CSR here, token and CSR to the panel, credentials written. `lookup` reads
/// the `WINGS_*` variables that say where the files go.
pub async fn enroll(
    request: &Request,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Enrolled, Error> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let (host, port) = parse_panel_url(&request.panel)?;
    let roots = security::tls::read_certs(&request.ca_cert)?;
    let root_pem = std::fs::read_to_string(&request.ca_cert)
        .map_err(|e| Error::Io(format!("{}: {e}", request.ca_cert.display())))?;
    let (key_pem, csr_pem) = security::pki::node_csr(get(WINGS_NODE_ID).as_deref())?;
    let body = serde_json::json!({ "token": request.token, "csr": csr_pem }).to_string();
    let (status, answer) = post_json(&host, port, &roots, "/api/nodes/enroll", body).await?;
    if status != 201 {
        let why = serde_json::from_slice::<ErrorBody>(&answer)
            .map(|b| format!("{} {}: {}", status, b.error.code, b.error.message))
            .unwrap_or_else(|_| format!("HTTP {status}"));
        return Err(Error::Connect(format!(
            "the panel refused the enrolment ({why})"
        )));
    }
    let answer: Answer = serde_json::from_slice(&answer)
        .map_err(|e| Error::Connect(format!("unexpected answer from the panel: {e}")))?;
    security::pki::validate_node_id(&answer.node_id)?;
    let chain = format!("{}{}", answer.certificate, answer.chain);
    let certs = security::tls::parse_certs(chain.as_bytes(), "the panel's answer")?;
    let leaf = certs
        .first()
        .ok_or_else(|| Error::Connect("the panel's answer holds no certificate".into()))?;
    if !security::pki::key_matches_cert(&key_pem, leaf)? {
        return Err(Error::Connect(
            "the panel's certificate is not for the key made here".into(),
        ));
    }
    let data_dir = get(WINGS_DATA_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("data/wings/{}", answer.node_id)));
    let path = |name: &str, file: &str| {
        get(name).map_or_else(|| data_dir.join("identity").join(file), PathBuf::from)
    };
    let (key_file, cert_file, ca_file) = (
        path(WINGS_TLS_KEY_FILE, "key.pem"),
        path(WINGS_TLS_CERT_FILE, "cert.pem"),
        path(WINGS_API_CA_CERT, "ca.pem"),
    );
    security::pki::write_private(&key_file, &key_pem)?;
    security::pki::write_public(&cert_file, &chain)?;
    if !same_file(&ca_file, &request.ca_cert) {
        security::pki::write_public(&ca_file, &root_pem)?;
    }
    let show = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let env = vec![
        (WINGS_NODE_ID.to_owned(), answer.node_id.clone()),
        (
            crate::config::WINGS_API_URL.to_owned(),
            format!("https://{}:{DEFAULT_GRPC_PORT}", bracketed(&host)),
        ),
        (
            WINGS_TLS_CERT_FILE.to_owned(),
            show(&cert_file).display().to_string(),
        ),
        (
            WINGS_TLS_KEY_FILE.to_owned(),
            show(&key_file).display().to_string(),
        ),
        (
            WINGS_API_CA_CERT.to_owned(),
            show(&ca_file).display().to_string(),
        ),
        (
            WINGS_DATA_DIR.to_owned(),
            show(&data_dir).display().to_string(),
        ),
    ];
    Ok(Enrolled {
        node_id: answer.node_id,
        fingerprint: answer.fingerprint,
        env,
    })
}

/// One HTTP/1.1 POST of JSON over TLS verified against `roots`; returns status and body.
pub async fn post_json(
    host: &str,
    port: u16,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    path: &str,
    body: String,
) -> Result<(u16, Bytes), Error> {
    let roots = Arc::new(security::tls::root_store(roots)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, security::tls::provider())
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Tls(format!("invalid server name {host:?}")))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Connect(format!("{host}:{port}: {e}")))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Connect(format!("TLS with {host}:{port}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, format!("{}:{port}", bracketed(host)))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Error::Connect(crate::error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| Error::Connect(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// `https://host[:port][/]` → host and port (443 by default); anything else is refused.
pub fn parse_panel_url(url: &str) -> Result<(String, u16), Error> {
    let bad = |why: &str| Error::Connect(format!("--panel {url:?}: {why}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must start with https:// (the token and the key's CSR go over TLS only)",
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("must be https://host[:port] with no path"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user information"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok((host.to_owned(), authority.port_u16().unwrap_or(443)))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_urls_are_https_only() {
        assert_eq!(
            parse_panel_url("https://panel.example.com").unwrap(),
            ("panel.example.com".into(), 443)
        );
        assert_eq!(
            parse_panel_url("https://127.0.0.1:8443/").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            parse_panel_url("https://[::1]:9").unwrap(),
            ("::1".into(), 9)
        );
        for bad in [
            "http://x",
            "x:1",
            "https://x/api",
            "https://u@x",
            "https://x?a=b",
        ] {
            assert!(parse_panel_url(bad).is_err(), "{bad}");
        }
    }
}
