//! Mamba's security primitives, with no knowledge of HTTP, gRPC or the database.
//!
//! - [`pki`]: the certificate authority behind the node channel — issuing CA, node and panel
//!   certificates, inspecting and verifying them, SHA-256 fingerprints, the `certs/` layout.
//! - [`tls`]: the one rustls crypto provider of the workspace and PEM loading.
//! - [`password`]: argon2id password hashing with upgrade-on-login.
//! - [`limiter`]: sliding-window rate limits, in Redis and in memory, with a block list.
//! - [`redis_link`]: one Redis or a Redis Cluster behind one URL and one connection type.
//! - [`jwt`]: access tokens (`at+jwt`, EdDSA or ES256, `kid` thumbprints, key rotation).
//! - [`envelope`]: envelope encryption (AES-256-GCM data keys wrapped by a master key).
//!
//! Functions take plain values and, where time matters, the current time as an argument, so
//! tests can move the clock.
#![forbid(unsafe_code)]

#[cfg(feature = "envelope")]
pub mod envelope;
mod error;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "limiter")]
pub mod limiter;
#[cfg(feature = "password")]
pub mod password;
pub mod pki;
#[cfg(feature = "limiter")]
pub mod redis_link;
pub mod tls;

pub use error::Error;
