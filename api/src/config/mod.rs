//! The panel's configuration: every environment variable is a named constant, parsed once at
//! start-up into [`Config`], and every problem is reported together before exiting. Tests
//! build [`Config`] directly.

use crate::error::ConfigError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod fleet;
mod nodes;
mod security_config;

pub use fleet::*;
pub use nodes::*;
pub use security_config::*;

/// Database URL (`sqlite://…` or `postgres://…`).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Address of the REST listener.
pub const PANEL_HTTP_ADDR: &str = "PANEL_HTTP_ADDR";
/// Address of the gRPC (node channel) listener.
pub const PANEL_GRPC_ADDR: &str = "PANEL_GRPC_ADDR";
/// The CA that node certificates must chain to.
pub const PANEL_CA_CERT: &str = "PANEL_CA_CERT";
/// The panel's gRPC server certificate.
pub const PANEL_TLS_CERT_FILE: &str = "PANEL_TLS_CERT_FILE";
/// The panel's gRPC server key.
pub const PANEL_TLS_KEY_FILE: &str = "PANEL_TLS_KEY_FILE";
/// `development` (default) or `production`.
pub const PANEL_ENV: &str = "PANEL_ENV";
/// `json` or `text` log lines (default: JSON in production, text in development).
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Certificate chain for TLS on the REST listener itself (without a proxy in front).
pub const PANEL_HTTP_TLS_CERT_FILE: &str = "PANEL_HTTP_TLS_CERT_FILE";
/// Private key for TLS on the REST listener.
pub const PANEL_HTTP_TLS_KEY_FILE: &str = "PANEL_HTTP_TLS_KEY_FILE";
/// Node-channel TLS handshakes in progress at once, overall (default 256).
pub const PANEL_GRPC_MAX_HANDSHAKES: &str = "PANEL_GRPC_MAX_HANDSHAKES";
/// Node-channel TLS handshakes in progress at once from one IP address (default 16; raise it
/// when a TCP balancer without the PROXY protocol makes every node come from its address).
pub const PANEL_GRPC_MAX_HANDSHAKES_PER_IP: &str = "PANEL_GRPC_MAX_HANDSHAKES_PER_IP";

/// Seconds a client has to send a request's head; also how long an idle keep-alive connection
/// is kept (the timer starts when the panel starts waiting for the next request).
pub const PANEL_HTTP_HEADER_TIMEOUT_SECS: &str = "PANEL_HTTP_HEADER_TIMEOUT_SECS";
/// Open REST connections at most.
pub const PANEL_HTTP_MAX_CONNECTIONS: &str = "PANEL_HTTP_MAX_CONNECTIONS";
/// Open REST connections per client (IPv4 address or IPv6 /64) at most.
pub const PANEL_HTTP_MAX_CONNECTIONS_PER_IP: &str = "PANEL_HTTP_MAX_CONNECTIONS_PER_IP";

/// Largest upload through the file manager, in MiB (1–1048576, default 1024).
pub const FILES_MAX_UPLOAD_MB: &str = "FILES_MAX_UPLOAD_MB";

/// The default database: a SQLite file under `data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/panel.db?mode=rwc";

/// Where the panel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Embedded defaults, warnings instead of refusals.
    Development,
    /// The preflight gate is on.
    Production,
}

/// Everything `api serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Development or production.
    pub environment: Environment,
    /// Database URL.
    pub database_url: String,
    /// REST listener address (port 0 picks a free one).
    pub http_addr: SocketAddr,
    /// gRPC listener address (port 0 picks a free one).
    pub grpc_addr: SocketAddr,
    /// CA certificate file for node certificates.
    pub ca_cert: PathBuf,
    /// Server certificate file.
    pub tls_cert: PathBuf,
    /// Server key file.
    pub tls_key: PathBuf,
    /// Certificate chain and key of the REST listener's own TLS, when it terminates TLS.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// How often the panel re-reads node rows to drop streams of nodes disabled or reset by
    /// another process.
    pub node_watch_interval: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How many TLS handshakes may be in progress at once: (overall, per IP address).
    pub max_handshakes: (usize, usize),
    /// How long a node has to acknowledge a command before it is marked failed.
    pub command_timeout: Duration,
    /// Bounds of the REST listener's connections.
    pub http_limits: HttpLimits,
    /// Accounts, tokens, mail and rate limits.
    pub security: SecurityConfig,
    /// The issuer of node certificates, if any, and their lifetime.
    pub node_identity: NodeIdentityConfig,
    /// The file manager's bounds.
    pub files: FilesConfig,
    /// This replica's id and the lease on its nodes' streams.
    pub fleet: FleetConfig,
}

/// The file manager's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest upload, in bytes (`FILES_MAX_UPLOAD_MB`).
    pub max_upload_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_upload_bytes: 1024 << 20,
        }
    }
}

/// Bounds of the REST listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's head must arrive within this; an idle keep-alive connection is closed after
    /// it too.
    pub header_timeout: Duration,
    /// Open connections at most (handshaking ones included).
    pub max_connections: usize,
    /// Open connections per client (an IPv4 address or an IPv6 /64) at most;
    /// `TRUSTED_PROXIES` peers count only towards `max_connections`.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 64,
        }
    }
}

impl Config {
    /// Reads the environment. On failure, returns every problem found, one per line.
    pub fn from_env() -> Result<Config, Vec<ConfigError>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, in production).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let (config, errors) = Self::parse(lookup);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Reads configuration through `lookup`, returning it (defaults in place of bad values)
    /// with every problem found, each starting with the variable's name. The preflight goes
    /// on checking what parsed.
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let environment = match get(PANEL_ENV).as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                errors.push(ConfigError::new(
                    PANEL_ENV,
                    format!("{other:?} is neither \"development\" nor \"production\""),
                ));
                Environment::Development
            }
        };
        let mut addr = |name: &str, default: &str| {
            let raw = get(name).unwrap_or_else(|| default.to_owned());
            raw.parse::<SocketAddr>().unwrap_or_else(|_| {
                errors.push(ConfigError::new(
                    name,
                    format!("{raw:?} is not an address like 127.0.0.1:8080"),
                ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let http_addr = addr(PANEL_HTTP_ADDR, "127.0.0.1:8080");
        let grpc_addr = addr(PANEL_GRPC_ADDR, "127.0.0.1:3001");
        let database_url = get(DATABASE_URL).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            errors.push(ConfigError::new(
                DATABASE_URL,
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let mut count = |name: &str, default: usize| match get(name) {
            None => default,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => {
                    errors.push(ConfigError::new(
                        name,
                        format!("{raw:?} is not a number from 1 to 1000000"),
                    ));
                    default
                }
            },
        };
        let max_handshakes = (
            count(PANEL_GRPC_MAX_HANDSHAKES, 256),
            count(PANEL_GRPC_MAX_HANDSHAKES_PER_IP, 16),
        );
        let defaults = HttpLimits::default();
        let http_limits = HttpLimits {
            header_timeout: Duration::from_secs(count(
                PANEL_HTTP_HEADER_TIMEOUT_SECS,
                defaults.header_timeout.as_secs() as usize,
            ) as u64),
            max_connections: count(PANEL_HTTP_MAX_CONNECTIONS, defaults.max_connections),
            max_connections_per_ip: count(
                PANEL_HTTP_MAX_CONNECTIONS_PER_IP,
                defaults.max_connections_per_ip,
            ),
        };
        let path = |name: &str, default: &str| {
            PathBuf::from(get(name).unwrap_or_else(|| default.to_owned()))
        };
        let config = Config {
            environment,
            database_url,
            http_addr,
            grpc_addr,
            ca_cert: path(PANEL_CA_CERT, "certs/ca/ca-cert.pem"),
            tls_cert: path(PANEL_TLS_CERT_FILE, "certs/server/panel-cert.pem"),
            tls_key: path(PANEL_TLS_KEY_FILE, "certs/server/panel-key.pem"),
            http_tls: match (get(PANEL_HTTP_TLS_CERT_FILE), get(PANEL_HTTP_TLS_KEY_FILE)) {
                (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
                (None, None) => None,
                (Some(_), None) | (None, Some(_)) => {
                    errors.push(ConfigError::new(
                        PANEL_HTTP_TLS_CERT_FILE,
                        format!("set it together with {PANEL_HTTP_TLS_KEY_FILE}, or neither"),
                    ));
                    None
                }
            },
            node_watch_interval: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes,
            command_timeout: Duration::from_secs(10),
            http_limits,
            security: SecurityConfig::from_lookup(&get, &mut errors),
            node_identity: NodeIdentityConfig::from_lookup(&get, &mut errors),
            fleet: FleetConfig::from_lookup(&get, &mut errors),
            files: FilesConfig {
                max_upload_bytes: match get(FILES_MAX_UPLOAD_MB) {
                    None => FilesConfig::default().max_upload_bytes,
                    Some(raw) => match raw.trim().parse::<u64>() {
                        Ok(mb @ 1..=1_048_576) => mb << 20,
                        _ => {
                            errors.push(ConfigError::new(
                                FILES_MAX_UPLOAD_MB,
                                format!("{raw:?} is not a number of MiB from 1 to 1048576"),
                            ));
                            FilesConfig::default().max_upload_bytes
                        }
                    },
                },
            },
        };
        let http_tls = config.http_tls.as_ref();
        let issuer = config.node_identity.issuer.as_ref();
        for (name, file) in [
            (PANEL_CA_CERT, Some(&config.ca_cert)),
            (PANEL_TLS_CERT_FILE, Some(&config.tls_cert)),
            (PANEL_TLS_KEY_FILE, Some(&config.tls_key)),
            (PANEL_HTTP_TLS_CERT_FILE, http_tls.map(|(cert, _)| cert)),
            (PANEL_HTTP_TLS_KEY_FILE, http_tls.map(|(_, key)| key)),
            (PANEL_ISSUER_CERT_FILE, issuer.map(|(cert, _)| cert)),
            (PANEL_ISSUER_KEY_FILE, issuer.map(|(_, key)| key)),
        ] {
            if let Some(file) = file
                && let Err(e) = std::fs::File::open(file)
            {
                let hint = match config.environment {
                    Environment::Development => " (make certificates with scripts/dev-ca.sh)",
                    Environment::Production => "",
                };
                errors.push(ConfigError::new(
                    name,
                    format!("cannot read {}: {e}{hint}", file.display()),
                ));
            }
        }
        (config, errors)
    }

    /// The database URL alone, for CLI commands that need nothing else.
    pub fn database_url_from_env() -> String {
        std::env::var(DATABASE_URL)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = Config::from_lookup(|name| match name {
            PANEL_ENV => Some("staging".into()),
            PANEL_GRPC_ADDR => Some("not-an-address".into()),
            DATABASE_URL => Some("mysql://x".into()),
            PANEL_CA_CERT => Some("/nonexistent/ca.pem".into()),
            PANEL_GRPC_MAX_HANDSHAKES_PER_IP => Some("0".into()),
            FILES_MAX_UPLOAD_MB => Some("0".into()),
            REDIS_URL => Some("redis-cluster://u:hunter2@a:1,,b:2".into()),
            _ => None,
        })
        .unwrap_err();
        let named: Vec<&str> = errors.iter().map(|e| e.variable.as_str()).collect();
        for name in [
            PANEL_ENV,
            PANEL_GRPC_ADDR,
            DATABASE_URL,
            PANEL_CA_CERT,
            PANEL_GRPC_MAX_HANDSHAKES_PER_IP,
            FILES_MAX_UPLOAD_MB,
            REDIS_URL,
        ] {
            assert!(named.contains(&name), "{name} missing from {named:?}");
        }
        assert!(
            errors.iter().all(|e| !e.to_string().contains("hunter2")),
            "a Redis password in an error: {errors:?}"
        );
    }
}
