//! Wings, the node agent of Mamba Host Panel.
//!
//! It proves who it is with a client certificate (CN = node id), checks the panel's server
//! certificate against its CA, and keeps one long-lived bidirectional stream open: hello,
//! heartbeats, server status and console up; commands down, each acknowledged. Anything not received over that
//! authenticated stream is not trusted: the [`supervisor`] runs servers only as the panel's
//! commands say. `main.rs` only parses the command line.
#![forbid(unsafe_code)]

pub mod agent;
pub mod backoff;
pub mod backup;
pub mod beneath;
pub mod config;
pub mod enroll;
pub mod files;
pub mod isolation;
pub mod renew;
pub mod stream;
pub mod supervisor;
pub mod tar_guard;
pub mod tls;
pub mod users;

pub use config::Config;

/// Wings' errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    Security(#[from] security::Error),
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// The panel could not be reached or the handshake failed.
    #[error("cannot connect to the panel: {0}")]
    Connect(String),
    /// Wings' data directory could not be prepared.
    #[error("{0}")]
    Io(String),
    /// A server id or backup id from the panel that is not a UUID.
    #[error("{value:?} is not a {kind} id")]
    BadId {
        /// `server` or `backup`.
        kind: &'static str,
        /// What was sent.
        value: String,
    },
    /// The command does not fit the server's state now (already running, not running, a
    /// backup being made…).
    #[error("{0}")]
    State(&'static str),
    /// The server may not start: over its disk quota, or the node lacks the cgroup
    /// controllers that confine it.
    #[error("{0}")]
    Refused(String),
    /// The program could not be started: the spawn failed, or the program could not be
    /// executed (its helper reports why).
    #[error("cannot start {program}: {reason}")]
    Launch {
        /// The program of the server's spec.
        program: String,
        /// Why.
        reason: String,
    },
    /// The server's users or cgroups could not be set up or torn down.
    #[error("{0}")]
    Isolation(String),
    /// A file or directory of a server could not be read, written or removed.
    #[error("{what}: {source}")]
    Server {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A process of the server did not exit in time, or survived being killed.
    #[error("{0}")]
    Process(&'static str),
    /// Work on the blocking pool panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        /// The work.
        what: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A command this Wings does not know.
    #[error("unknown command: this Wings is older than the panel")]
    UnknownCommand,
}

impl Error {
    /// A [`Error::Server`] for `what`.
    pub fn server(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Server {
            what: what.into(),
            source,
        }
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An error and all its sources, joined by `: ` (TLS alerts hide deep in tonic's chain).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
