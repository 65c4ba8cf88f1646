//! The one error type of the `security` crate.

use std::path::PathBuf;

/// Everything that can go wrong in `security`. Messages are safe to show to an operator: they
/// never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node id outside `[a-z0-9][a-z0-9-]{0,62}`.
    #[error("invalid node id {0:?}: it must match [a-z0-9][a-z0-9-]{{0,62}}")]
    InvalidNodeId(String),
    /// A host name that cannot go into a certificate's subject alternative names.
    #[error("invalid host name {0:?}")]
    InvalidHostname(String),
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held no usable item of the expected kind.
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read (usually a path).
        what: String,
        /// Why it could not be used.
        reason: String,
    },
    /// A DER certificate could not be parsed.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// The subject does not hold exactly one UTF-8 common name.
    #[error("certificate subject must hold exactly one UTF-8 common name: {0}")]
    CommonName(&'static str),
    /// The certificate's common name is not the expected one.
    #[error("certificate CN is {found:?}, expected {expected:?}")]
    CommonNameMismatch {
        /// The CN the certificate carries.
        found: String,
        /// The CN it should carry.
        expected: String,
    },
    /// The chain, validity window or usage check failed.
    #[error("certificate rejected: {0}")]
    Verify(rustls::Error),
    /// The private key is not the one the certificate was issued for.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Refused to overwrite an existing file.
    #[error("{} already exists (use --force to replace it)", .0.display())]
    AlreadyExists(PathBuf),
    /// A password does not meet the rules.
    #[error("weak password: {0}")]
    WeakPassword(String),
    /// Hashing, signing or key generation failed.
    #[error("{0}")]
    Hash(String),
    /// The rate limiter's store failed (Redis unreachable, script error).
    #[error("rate limiter: {0}")]
    Limiter(String),
    /// A Redis URL is malformed; the message says how (never the URL: it may hold a password).
    #[error("{0}")]
    RedisUrl(String),
    /// Envelope encryption failed: a wrong key, or tampered data (never says which byte).
    #[error("decryption failed: {0}")]
    Decrypt(&'static str),
    /// A master key is malformed; the message says how (never the key).
    #[error("{0}")]
    MasterKey(String),
    /// A certificate signing request (or an issuer) is unusable; the message says why.
    #[error("certificate request refused: {0}")]
    Csr(String),
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
