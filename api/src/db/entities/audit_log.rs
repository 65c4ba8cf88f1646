//! `audit_log`: an append-only record of every mutation, denial and node-channel decision.

use sea_orm::entity::prelude::*;

/// One audit row, in the contract's shape.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// When it happened.
    pub at: DateTimeUtc,
    /// Who: a user id, or for the node channel the presented CN or `unknown`.
    pub actor: String,
    /// What, e.g. `node.connect`.
    pub action: String,
    /// On what, e.g. the node id.
    pub target: Option<String>,
    /// `accepted`, or `rejected: <reason>`.
    pub outcome: String,
    /// The peer address.
    pub ip: Option<String>,
    /// JSON object with details (never secrets).
    pub details: Json,
    /// The tenant the row belongs to; `None` for platform-wide rows.
    pub tenant_id: Option<String>,
}

/// No relations yet.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
