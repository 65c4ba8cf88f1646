//! Nodes: their rows in the database ([`store`]), who may speak for one ([`access`]: the
//! admission facts, and their cache), the node channel's writes committed in groups
//! ([`journal`]), how services reach a node ([`link`]), the
//! live streams of connected nodes ([`registry`]), which replica holds each ([`fleet`]), every admitted connection ([`connections`]),
//! and the node identity lifecycle: the
//! issuer that signs node certificates ([`issuer`]), join tokens and enrolment ([`enroll`]),
//! renewal with overlap over the stream ([`renew`]), renewal states ([`lifecycle`]), and how a
//! node is shown ([`view`]).

pub mod access;
pub mod connections;
pub mod enroll;
pub mod fleet;
pub mod issuer;
pub mod journal;
pub mod lifecycle;
pub mod link;
pub mod registry;
pub mod renew;
pub mod store;
pub mod view;

pub use fleet::Fleet;
pub use link::{Delivery, NodeLink};
pub use registry::{Kick, NodeRegistry, Session};

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// What the node services (enrolment, renewal, rotation) use, and only that: the database,
/// the link to connected nodes, the issuer, the counters and the clock.
#[derive(Clone)]
pub struct Nodes {
    /// The database.
    pub db: DatabaseConnection,
    /// How a connected node is reached.
    pub link: Arc<dyn NodeLink>,
    /// The issuer of node certificates (empty: no enrolment, no renewal).
    pub issuer: Arc<issuer::IssuerSlot>,
    /// Counters.
    pub metrics: Metrics,
    /// Where the time comes from.
    pub clock: SharedClock,
}
