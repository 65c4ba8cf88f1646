//! `node_join_tokens`: one-time tokens that let a node enrol (`POST /api/nodes/enroll`),
//! stored only as SHA-256 hashes, bound to one node id, expiring.

use sea_orm::entity::prelude::*;

/// One join token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node_join_tokens")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The node it enrols.
    pub node_id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When it expires.
    pub expires_at: DateTimeUtc,
    /// When it was used; a token works once.
    pub used_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
