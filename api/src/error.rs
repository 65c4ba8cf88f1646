//! The one error type of the panel. What each error becomes for a peer lives at the edges:
//! the REST status and code in `http::error`, the gRPC status in `grpc::status`.

/// Any error, kept as the source of an [`Error::Internal`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One configuration problem: the variable (or file setting) it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable, e.g. `DATABASE_URL`.
    pub variable: String,
    /// What is wrong with it, for the operator.
    pub message: String,
}

impl ConfigError {
    /// A problem with `variable`.
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

/// Every configuration problem found at once (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => many.iter().try_for_each(|e| write!(f, "\n  {e}")),
        }
    }
}

/// Everything the panel's services can fail with. Internal details are logged, never sent to
/// the peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Configuration is invalid: each problem names its variable.
    #[error("configuration: {0}")]
    Config(ConfigErrors),
    /// A fault of the panel itself (a broken invariant, a task that died, stored data that
    /// no longer parses): logged with its source, answered as an internal error.
    #[error("internal: {0}")]
    Internal(#[source] BoxError),
    /// The preflight found problems; its report lists them.
    #[error("the preflight failed (`api preflight` lists why)")]
    PreflightFailed,
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A security primitive failed (certificates, keys).
    #[error(transparent)]
    Security(#[from] security::Error),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing already exists or is in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// Input failed validation.
    #[error("{0}")]
    Invalid(String),
    /// A password does not meet the rules.
    #[error("{0}")]
    WeakPassword(String),
    /// Mail could not be built or sent.
    #[error("mail: {0}")]
    Mail(String),
    /// No valid credentials (missing, malformed, expired or revoked token).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Wrong email or password.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// A second-factor code (TOTP or recovery) that is wrong, expired or already used.
    #[error("the code is wrong, expired or already used")]
    InvalidCode,
    /// A used refresh token was presented again; its family is revoked.
    #[error("refresh token reused; the session was revoked")]
    TokenReused,
    /// Stored ciphertext does not open: tampered, copied to another tenant or name, or sealed
    /// under a key that is not configured.
    #[error("the stored secret cannot be decrypted (tampered, moved, or sealed under another key)")]
    Undecryptable,
    /// Every port of the node's range is taken.
    #[error("node {0} has no free port left in its range")]
    NoFreePort(String),
    /// The node went away while it served a request (a file transfer), or never answered it.
    #[error("the node went away before it finished")]
    NodeGone,
    /// A file operation the node refused; `kind` says why.
    #[error("{message}")]
    File {
        /// Why.
        kind: FileFailure,
        /// For the client (never file contents).
        message: String,
    },
    /// The node has no live stream, so the command cannot reach it.
    #[error("node {0} is not connected")]
    NodeOffline(String),
    /// Authenticated but not allowed; the code says why.
    #[error("{message}")]
    Forbidden {
        /// `forbidden`, `email_not_verified`.
        code: &'static str,
        /// The sentence for the client.
        message: &'static str,
    },
    /// Too many requests.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a request will be admitted.
        retry_after_secs: u64,
    },
    /// The panel is over capacity (e.g. the password-hashing queue is full): shed at once.
    #[error("over capacity; retry in {0} s")]
    Unavailable(u64),
    /// An I/O failure, e.g. binding a port.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Why a node refused a file operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFailure {
    /// Malformed, outside the server's root, or through a link (400 `invalid_path`).
    InvalidPath,
    /// No such file (404).
    NotFound,
    /// Exists, wrong kind, changed since its ETag, server busy (409).
    Conflict,
    /// Past the quota or the upload cap, an archive too big (413 `payload_too_large`).
    TooLarge,
    /// A bad request that is not about the path: an unsafe archive entry, a mode (400).
    Invalid,
    /// A byte range outside a file of this size (416).
    Range(u64),
    /// The node failed otherwise (503).
    Failed,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A configuration problem with `variable`.
    pub fn config(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config(ConfigErrors(vec![ConfigError::new(variable, message)]))
    }

    /// A fault of the panel itself, keeping `source` for the log.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Error::Internal(source.into())
    }

    /// Each configuration problem as `(variable, message)`; empty for other errors.
    pub fn config_problems(&self) -> &[ConfigError] {
        match self {
            Error::Config(ConfigErrors(problems)) => problems,
            _ => &[],
        }
    }
}
