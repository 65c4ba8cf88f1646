//! `refresh_tokens`: opaque 256-bit tokens, stored only as SHA-256 hashes, each used once.

use sea_orm::entity::prelude::*;

/// One refresh token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The family.
    pub session_id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The token this one replaced.
    pub parent_id: Option<String>,
    /// When it was issued.
    pub issued_at: DateTimeUtc,
    /// When it was exchanged; a second exchange is reuse.
    pub used_at: Option<DateTimeUtc>,
    /// When it expires.
    pub expires_at: DateTimeUtc,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
