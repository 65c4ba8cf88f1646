//! Mamba's security primitives, with no knowledge of HTTP, gRPC or the database.
//!
//! - [`pki`]: the certificate authority behind the node channel — issuing CA, node and panel
//!   certificates, inspecting and verifying them, SHA-256 fingerprints, the `certs/` layout.
//! - [`tls`]: the one rustls crypto provider of the workspace and PEM loading.
//!
//! Functions take plain values and, where time matters, the current time as an argument, so
//! tests can move the clock.
#![forbid(unsafe_code)]

mod error;
pub mod pki;
pub mod tls;

pub use error::Error;
