//! What the platform offers tenants (templates, nodes) and node identity: join tokens,
//! enrolment, renewal. Nodes as admins see them are [`crate::nodes::view::Node`]; templates
//! with their command line are [`crate::templates::Template`].

use serde::Serialize;
use utoipa::ToSchema;

use crate::templates::Variable;

/// An enabled node a server can be placed on.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeSummary {
    /// The node's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is connected.
    pub online: bool,
}

/// What a server can be made from (never its command line).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Template)]
pub struct TemplateSummary {
    /// The template's name.
    pub name: String,
    /// What a server sets.
    pub variables: Vec<Variable>,
}

/// A join token, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinToken {
    /// The token (256 bits).
    pub token: String,
    /// The node it enrols.
    pub node_id: String,
    /// When it stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A renewal was asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotation {
    /// The node.
    pub node_id: String,
    /// Its renewal state now.
    pub renewal: String,
}

/// A node's new certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    /// The node (the token's).
    pub node_id: String,
    /// The leaf, PEM.
    pub certificate: String,
    /// The intermediates, PEM.
    pub chain: String,
    /// Lowercase hex SHA-256 of the certificate, pinned at once.
    pub fingerprint: String,
    /// When it expires.
    #[schema(format = DateTime)]
    pub not_after: String,
}
