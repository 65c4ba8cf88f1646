//! Black-box test harness for Mamba: real certificates from the project's own PKI, the real
//! panel (in-process through `api::Panel`, or the `api` binary), real Wings agents (the `wings`
//! binary) and a raw node client for forged connections, all on loopback ports. The
//! integration tests live in `tests/it/`; the `node-load` benchmark in `src/bin/`.
#![forbid(unsafe_code)]

pub mod bench;
mod client;
pub mod mail;
mod pki;
mod process;
mod redis_cluster;
mod redis_server;
pub mod rest;
pub mod sim;
pub mod smtp;
pub mod totp;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

pub use client::{IdleConnection, NodeClient, Request, connect_idle, dial, dial_with, hello, open};
pub use pki::{NodeCert, TestPki};
pub use process::{Proc, bin_path, panel_env, rss_kib, run, signal, start_panel};
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use rest::{EventReader, Rest};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh database in the PostgreSQL server named by `TEST_POSTGRES_URL`.
    Postgres,
}

/// The admin URL of the test PostgreSQL server (set by `scripts/test.sh`).
pub const TEST_POSTGRES_URL: &str = "TEST_POSTGRES_URL";

/// A database URL of `kind`, fresh for this test.
pub async fn database_url(kind: DbKind, dir: &Path) -> String {
    match kind {
        DbKind::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("panel.db").display()),
        DbKind::Postgres => {
            use sea_orm::ConnectionTrait;
            let admin_url = std::env::var(TEST_POSTGRES_URL).unwrap_or_else(|_| {
                panic!("{TEST_POSTGRES_URL} is not set: run the suite with scripts/test.sh, which starts PostgreSQL")
            });
            let name = format!("mamba_test_{}", uuid_simple());
            let admin = sea_orm::Database::connect(&admin_url)
                .await
                .expect("connect to the test PostgreSQL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a test database");
            let _ = admin.close().await;
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(base, _)| base);
            format!("{base}/{name}")
        }
    }
}

/// A panel configuration on ephemeral loopback ports with the test PKI's files.
pub fn panel_config(pki: &TestPki, database_url: String) -> api::Config {
    api::Config {
        environment: api::config::Environment::Development,
        database_url,
        http_addr: "127.0.0.1:0".parse().expect("literal address"),
        grpc_addr: "127.0.0.1:0".parse().expect("literal address"),
        ca_cert: pki.layout.ca_cert(),
        tls_cert: pki.layout.server_cert(),
        tls_key: pki.layout.server_key(),
        http_tls: None,
        node_watch_interval: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        max_handshakes: (
            api::grpc::gate::MAX_HANDSHAKES,
            api::grpc::gate::MAX_HANDSHAKES_PER_IP,
        ),
        command_timeout: Duration::from_secs(10),
        http_limits: api::config::HttpLimits::default(),
        security: api::config::SecurityConfig::development(pki.layout.root().join("data")),
        node_identity: api::config::NodeIdentityConfig::default(),
        files: api::config::FilesConfig::default(),
        fleet: api::config::FleetConfig::default(),
    }
}

/// A temporary directory with a test PKI and a panel configuration on a fresh `kind` database
/// with [`roomy_limits`]: the start of every in-process panel test that is not about limits.
pub async fn roomy_setup(kind: DbKind) -> (tempfile::TempDir, TestPki, api::Config) {
    security::tls::install_default_provider();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = TestPki::new(dir.path());
    let mut config = panel_config(&pki, database_url(kind, dir.path()).await);
    config.security.rate_limits = roomy_limits();
    (dir, pki, config)
}

/// Adds `node-1` (`node1.example.com`) and the `sleeper` template (`sleep {{SECONDS}}`, an
/// hour by default) to a panel's database: what most tests of servers stand on.
pub async fn node_and_sleeper(db: &sea_orm::DatabaseConnection) {
    api::nodes::store::add(db, "node-1", "node1.example.com", None)
        .await
        .expect("node-1 added");
    api::templates::create(
        db,
        api::templates::NewTemplate {
            sensitive_input: false,
            limits: Default::default(),
            name: "sleeper".into(),
            command: "sleep".into(),
            args: vec!["{{SECONDS}}".into()],
            variables: vec![api::templates::Variable {
                name: "SECONDS".into(),
                pattern: "[0-9]{1,6}".into(),
                default: Some("3600".into()),
            }],
        },
    )
    .await
    .expect("the sleeper template");
}

/// Limits so roomy that tests which are not about limits never meet them (they cannot be
/// turned off).
pub fn roomy_limits() -> api::config::RateLimits {
    api::config::RateLimits::parse(
        "login=1000/1m,register=1000/1m,password_reset=1000/1m,verify=1000/1m,api=10000/1m",
    )
    .expect("literal limits")
}

/// Polls `check` until it returns true; panics naming `what` after `cap`. Returns how long it
/// took, for the figures in the notes.
pub async fn eventually<F, Fut>(what: &str, cap: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() > cap {
            panic!("not true within {cap:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// GETs `path` from the panel's REST port; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET from the REST port");
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

/// Raises this process's soft limit of open files to its hard limit: a test that holds
/// hundreds of connections at once (client and in-process panel sides both count) must not
/// depend on the caller's shell (1,024 is a common soft limit for ordinary users).
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
