//! `users`: accounts with argon2id password hashes.

use sea_orm::entity::prelude::*;

/// One user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Lower-cased email, unique.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Whether the email address was verified.
    pub email_verified: bool,
    /// Platform administrators manage nodes and templates.
    pub is_platform_admin: bool,
    /// When the account was created.
    pub created_at: DateTimeUtc,
    /// When a platform administrator locked it (`api user lock`); null when usable.
    pub locked_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
