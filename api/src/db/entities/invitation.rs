//! `invitations`: a tenant's one-time invitation links, stored only as SHA-256 hashes.

use sea_orm::entity::prelude::*;

/// One invitation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The tenant the invited person joins.
    pub tenant_id: String,
    /// The invited address, normalised.
    pub email: String,
    /// The role given on acceptance.
    pub role: String,
    /// Hex SHA-256 of the link's token.
    pub token_hash: String,
    /// Who invited.
    pub invited_by: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When the link stops working (7 days).
    pub expires_at: DateTimeUtc,
    /// When it was accepted; a link works once.
    pub accepted_at: Option<DateTimeUtc>,
    /// The user who accepted it.
    pub accepted_by: Option<String>,
    /// When a member with `member:manage` withdrew it.
    pub withdrawn_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
