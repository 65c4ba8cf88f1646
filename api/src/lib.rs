//! The Mamba panel: the REST API tenant admins drive and the mTLS gRPC server Wings agents dial.
//!
//! - [`grpc`] and [`nodes`]: the node channel — admission by certificate, live streams.
//! - [`identity`], [`http`], [`limits`], [`mailer`]: accounts, sessions and tokens over REST.
//! - [`tenancy`], [`templates`], [`servers`]: tenants and members, what servers run, servers on
//!   nodes driven over the node channel, and their live events.
//! - [`secrets`]: tenants' secrets, envelope-encrypted under the master key ring.
//! - [`db`], [`audit`], [`metrics`], [`pagination`]: storage, the audit log, Prometheus, lists.
//!
//! [`Panel::start`] binds both listeners from a [`Config`] and returns their addresses, so the
//! binary and the tests start the very same thing; `main.rs` only parses the command line.
//! Crypto and certificate work is delegated to the `security` crate.
#![forbid(unsafe_code)]

pub mod apikeys;
pub mod audit;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod mailer;
pub mod metrics;
pub mod nodes;
pub mod pagination;
pub mod preflight;
pub mod secrets;
pub mod servers;
pub mod templates;
pub mod tenancy;
pub mod transfers;

#[cfg(test)]
mod layering;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, FileFailure};

use crate::metrics::Metrics;
use crate::nodes::{Kick, NodeRegistry};

/// State shared by every request and connection.
pub struct AppState {
    /// The configuration the panel started with.
    pub config: Config,
    /// The database.
    pub db: DatabaseConnection,
    /// Accounts, sessions and tokens.
    pub identity: identity::Identity,
    /// Rate limits.
    pub limits: limits::Limits,
    /// Live node streams held by this process (the gRPC edge's side of [`Self::nodes`]).
    pub registry: Arc<NodeRegistry>,
    /// Every node's admission facts, believed while PostgreSQL's announcements keep them
    /// fresh (see [`nodes::access`]).
    pub access: Arc<nodes::access::AccessCache>,
    /// The node channel's audit rows and online marks, committed in groups.
    pub journal: nodes::journal::Journal,
    /// Held (read) by each stream's task for its whole life: a stopping panel takes it
    /// (write) once they all ended, so that each node's last writes (released, offline) are
    /// committed before the process ends.
    pub streams: Arc<tokio::sync::RwLock<()>>,
    /// Which replica holds each node's stream, and this one's holds (the [`nodes::NodeLink`]).
    pub fleet: Arc<nodes::Fleet>,
    /// The node services' handles (database, node link, issuer, clock).
    pub nodes: nodes::Nodes,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// The master keys of envelope-encrypted secrets.
    pub vault: secrets::Vault,
    /// Where every service reads the time.
    pub clock: clock::SharedClock,
    /// The hashing key of tenant API keys.
    pub api_keys: apikeys::Hasher,
    /// The server services' handles (database, node link, events, vault, clock).
    pub servers: servers::Servers,
    /// Cancelled when the panel stops: long-lived responses (SSE) end.
    pub stopping: CancellationToken,
    /// The node channel's TLS set-up (trusted roots, server certificate), re-read on change.
    pub grpc_tls: Arc<grpc::tls::TlsSetup>,
    /// File requests waiting for their node's `Files` stream.
    pub transfers: crate::transfers::Transfers,
}

/// How long a stopping panel waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A running panel.
pub struct Panel {
    /// Where the REST API listens.
    pub http_addr: SocketAddr,
    /// Where the node channel listens.
    pub grpc_addr: SocketAddr,
    state: Arc<AppState>,
    /// Cancelled first: the listeners stop accepting.
    stop_accepting: CancellationToken,
    /// Cancelled last: open connections and background tasks end.
    shutdown: CancellationToken,
    /// The REST server: done once its in-flight requests are.
    http_task: JoinHandle<()>,
    /// The node channel and the node watcher.
    tasks: Vec<JoinHandle<()>>,
}

impl Panel {
    /// Connects to the database, migrates it, loads TLS material and binds both listeners.
    pub async fn start(config: Config) -> Result<Panel, Error> {
        Panel::start_with_clock(config, Arc::new(clock::SystemClock)).await
    }

    /// [`Panel::start`] with the time read from `clock` (tests move it instead of sleeping).
    pub async fn start_with_clock(
        config: Config,
        clock: clock::SharedClock,
    ) -> Result<Panel, Error> {
        let tls = Arc::new(grpc::tls::TlsSetup::load(
            &config.ca_cert,
            &config.tls_cert,
            &config.tls_key,
        )?);
        let http_tls = match &config.http_tls {
            Some((cert, key)) => Some(http::tls::server_config(cert, key)?),
            None => None,
        };
        let issuer = nodes::issuer::IssuerSlot::load(
            config.node_identity.issuer.clone(),
            config.node_identity.cert_lifetime,
        )?;
        let db = db::connect_and_migrate(&config.database_url).await?;
        let metrics = Metrics::new();
        for rejection in grpc::Rejection::ALL {
            metrics
                .node_rejections
                .with_label_values(&[rejection.reason()]);
        }
        for cut in grpc::bounds::Cut::ALL {
            metrics.node_input_cut.with_label_values(&[cut.label()]);
        }
        let identity = identity::Identity::new(
            &config.security,
            config.environment,
            db.clone(),
            metrics.clone(),
            clock.clone(),
        )?;
        let vault = secrets::Vault::load(&config.security, config.environment)?;
        vault.check(&db).await?;
        let limits = limits::Limits::new(
            config.security.redis_url.as_deref(),
            &config.security.redis_key_prefix,
            metrics.clone(),
            clock.clone(),
        )
        .await;
        let events = match &config.security.redis_url {
            Some(url) => {
                servers::Events::with_redis(
                    url,
                    &config.security.redis_key_prefix,
                    clock.clone(),
                    metrics.clone(),
                )
                .await?
            }
            None => servers::Events::default(),
        };
        let registry = Arc::new(NodeRegistry::default());
        let fleet = Arc::new(nodes::Fleet::new(
            registry.clone(),
            db.clone(),
            clock.clone(),
            &config.fleet,
        ));
        fleet.start().await?;
        let servers = servers::Servers {
            db: db.clone(),
            nodes: fleet.clone(),
            events,
            vault: vault.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            command_timeout: config.command_timeout,
        };
        let nodes = nodes::Nodes {
            db: db.clone(),
            link: fleet.clone(),
            issuer: Arc::new(issuer),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        let state = Arc::new(AppState {
            nodes,
            registry,
            access: Arc::new(nodes::access::AccessCache::new(clock.clone())),
            journal: nodes::journal::Journal::start(db.clone(), clock.clone()),
            streams: Arc::default(),
            fleet,
            servers,
            db,
            identity,
            limits,
            metrics,
            handshake_timeout: config.handshake_timeout,
            vault,
            clock,
            api_keys: apikeys::Hasher::default(),
            stopping: CancellationToken::new(),
            grpc_tls: tls.clone(),
            transfers: crate::transfers::Transfers::default(),
            config: config.clone(),
        });
        // Commands a previous run sent and nobody acked: failed now, not left pending.
        let swept = servers::commands::sweep(&state.servers).await?;
        if swept > 0 {
            tracing::warn!(
                swept,
                "commands left pending by a previous run marked failed"
            );
        }
        let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| {
                Error::io(
                    format!(
                        "{}: cannot listen on {}",
                        config::PANEL_GRPC_ADDR,
                        config.grpc_addr
                    ),
                    e,
                )
            })?;
        let http_listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| {
                Error::io(
                    format!(
                        "{}: cannot listen on {}",
                        config::PANEL_HTTP_ADDR,
                        config.http_addr
                    ),
                    e,
                )
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| Error::io("gRPC listener", e))?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|e| Error::io("HTTP listener", e))?;
        let advertised = match &config.fleet.advertise {
            Some(addr) => Some((addr.clone(), true)),
            None => (!grpc_addr.ip().is_unspecified()).then(|| (grpc_addr.to_string(), false)),
        };
        match advertised {
            Some((addr, configured)) => state.transfers.advertise(addr, configured),
            None if state.fleet.shared() => tracing::warn!(
                "{} is unset and {} is unspecified ({grpc_addr}): file requests for nodes held \
                 by other replicas are refused with 409 node_offline",
                config::PANEL_GRPC_ADVERTISE,
                config::PANEL_GRPC_ADDR,
            ),
            None => {}
        }
        let stop_accepting = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let http_task = tokio::spawn(http::serve(
            state.clone(),
            http_listener,
            http_tls.clone(),
            stop_accepting.clone(),
        ));
        let node_changed = Arc::new(tokio::sync::Notify::new());
        let tasks = vec![
            tokio::spawn(grpc::listener::serve(
                state.clone(),
                tls,
                grpc_listener,
                stop_accepting.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(background::watch_nodes(
                state.clone(),
                config.node_watch_interval,
                node_changed.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(background::listen_node_changes(
                state.clone(),
                node_changed,
                shutdown.clone(),
            )),
            tokio::spawn(background::hold_nodes(state.clone(), shutdown.clone())),
            tokio::spawn(background::export_node_metrics(
                state.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(background::reload_certificates(
                state.clone(),
                shutdown.clone(),
            )),
        ];
        let http_scheme = if http_tls.is_some() { "https" } else { "http" };
        tracing::info!(%grpc_addr, %http_addr, http_scheme, "panel listening");
        Ok(Panel {
            http_addr,
            grpc_addr,
            state,
            stop_accepting,
            shutdown,
            http_task,
            tasks,
        })
    }

    /// The shared state (database, registry, metrics).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, ends event streams, lets in-flight requests finish (they write their
    /// audit rows before answering) within [`DRAIN_TIMEOUT`], then tells every node to reconnect
    /// at once (to the next panel, not this one) and waits for the rest.
    pub async fn shutdown(self) {
        self.stop_accepting.cancel();
        self.state.stopping.cancel();
        // Nodes stay connected meanwhile: a request still running may be sending them a command.
        let mut http_task = self.http_task;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut http_task)
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still running after {}s; closing them",
                DRAIN_TIMEOUT.as_secs()
            );
            http_task.abort();
        }
        self.state.registry.kick_all(Kick::Shutdown);
        // Give the streams a moment to deliver their final status and to record their nodes
        // released and offline (through the journal, whose writer still runs).
        let _ = tokio::time::timeout(Duration::from_secs(2), self.state.streams.write()).await;
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs the panel until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), Error> {
    let panel = Panel::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    panel.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
