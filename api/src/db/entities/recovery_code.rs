//! `recovery_codes`: the ten single-use codes given when TOTP is turned on, stored only as the
//! SHA-256 of the code (they are random enough that a fast hash is safe).

use sea_orm::entity::prelude::*;

/// One recovery code.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_codes")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The user.
    pub user_id: String,
    /// Hex SHA-256 of the code, as normalised.
    pub code_hash: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When it was used; a code works once.
    pub used_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
