//! `email_tokens`: one-time tokens mailed for email verification and password reset, stored
//! only as SHA-256 hashes.

use sea_orm::entity::prelude::*;

/// One email token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_tokens")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The user.
    pub user_id: String,
    /// `verify_email` or `password_reset`.
    pub purpose: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When it expires (24 h for verification, 1 h for reset).
    pub expires_at: DateTimeUtc,
    /// When it was used; a token works once.
    pub used_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
