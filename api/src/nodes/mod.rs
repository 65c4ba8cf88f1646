//! Nodes: their rows in the database ([`store`]), the live streams of connected nodes
//! ([`registry`]), every admitted connection ([`connections`]), and the watcher that drops a stream when its node is disabled or its
//! fingerprint reset, also by another process ([`watch`]), and the node identity lifecycle: the
//! issuer that signs node certificates ([`issuer`]), join tokens and enrolment ([`enroll`]),
//! renewal with overlap over the stream ([`renew`]), renewal states ([`lifecycle`]), and how a
//! node is shown ([`view`]).

pub mod connections;
pub mod enroll;
pub mod issuer;
pub mod lifecycle;
pub mod registry;
pub mod renew;
pub mod store;
pub mod view;
pub mod watch;

pub use registry::{Kick, NodeRegistry, Session};
