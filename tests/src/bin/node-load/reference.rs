//! The reference servers `node-load` compares the panel with, in one process of their own
//! (`node-load --bare-server DIR`), both with the same CA, server certificate and client
//! verification as the panel:
//!
//! - the bare rustls server writes one byte after each handshake and closes: TLS alone;
//! - the reference gRPC server speaks HTTP/2 and the node protocol as the panel does (hyper,
//!   tonic, the same generated `NodeControl` service) and answers every `Hello` with a
//!   `Welcome`, with no admission, no database, nothing else: the protocol alone.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proto::node::v1::node_control_server::{NodeControl, NodeControlServer};
use proto::node::v1::{FileDown, FileUp, NodeMessage, PanelMessage, Welcome, panel_message};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Serves both reference servers until killed; prints `bare listening addr=…` and
/// `grpc listening addr=…`.
pub async fn serve(dir: PathBuf) -> anyhow::Result<()> {
    let layout = security::pki::CertLayout::new(dir);
    let roots = Arc::new(security::tls::root_store(&security::tls::read_certs(
        &layout.ca_cert(),
    )?)?);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots,
        security::tls::provider(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            security::tls::read_certs(&layout.server_cert())?,
            security::tls::read_key(&layout.server_key())?,
        )?;
    let mut grpc_config = config.clone();
    grpc_config.alpn_protocols = vec![b"h2".to_vec()];
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("bare listening addr={}", bare.local_addr()?);
    eprintln!("grpc listening addr={}", grpc.local_addr()?);
    tokio::spawn(serve_grpc(grpc, TlsAcceptor::from(Arc::new(grpc_config))));
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, _) = bare.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"k").await;
                let _ = tls.shutdown().await;
            }
        });
    }
}

async fn serve_grpc(listener: tokio::net::TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(NodeControlServer::new(Welcomer));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Welcomes every `Hello`, then reads the stream until it ends.
struct Welcomer;

type Down<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl NodeControl for Welcomer {
    type ConnectStream = Down<PanelMessage>;
    type FilesStream = Down<FileDown>;

    async fn connect(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        if inbound.message().await?.is_none() {
            return Err(Status::invalid_argument("no Hello"));
        }
        let (tx, rx) = mpsc::channel(4);
        let welcome = PanelMessage {
            kind: Some(panel_message::Kind::Welcome(Welcome {
                node_id: String::new(),
                server_time_unix_ms: 0,
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {}
            drop(tx);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn files(
        &self,
        _request: Request<Streaming<FileUp>>,
    ) -> Result<Response<Self::FilesStream>, Status> {
        Err(Status::unimplemented("no files here"))
    }
}
