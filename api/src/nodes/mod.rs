//! Nodes: their rows in the database ([`store`]), the live streams of connected nodes
//! ([`registry`]), every admitted connection ([`connections`]), and the watcher that drops a stream when its node is disabled or its
//! fingerprint reset, also by another process ([`watch`]), and the issuer that signs node
//! certificates ([`issuer`]).

pub mod connections;
pub mod issuer;
pub mod registry;
pub mod store;
pub mod watch;

pub use registry::{Kick, NodeRegistry, Session};
