//! `tls-proxy`: the TLS-terminating proxy the demo puts in front of the panel's REST listener
//! (what HAProxy or nginx do in production), so that `wings enroll` — https only — reaches a
//! panel whose REST listener speaks plain HTTP on loopback. Each connection's TLS is terminated
//! with the given certificate and its bytes are copied to the upstream address; it sets
//! `X-Forwarded-*` nothing (the panel sees the proxy's address).
//!
//! `tls-proxy --listen 127.0.0.1:8443 --upstream 127.0.0.1:8080 --cert cert.pem --key key.pem`
#![forbid(unsafe_code)]

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(
    name = "tls-proxy",
    about = "Terminates TLS and forwards to a plain TCP upstream"
)]
struct Args {
    /// Where to accept TLS connections.
    #[arg(long)]
    listen: String,
    /// Where to forward them.
    #[arg(long)]
    upstream: String,
    /// The certificate chain to present, PEM.
    #[arg(long)]
    cert: std::path::PathBuf,
    /// Its key, PEM.
    #[arg(long)]
    key: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    security::tls::install_default_provider();
    let chain = security::tls::read_certs(&args.cert)?;
    let key = security::tls::read_key(&args.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| args.listen.clone())?;
    eprintln!("tls-proxy: {} → {}", args.listen, args.upstream);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, upstream) = (acceptor.clone(), args.upstream.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}
