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
pub mod isolation;
pub mod renew;
pub mod stream;
pub mod supervisor;
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
