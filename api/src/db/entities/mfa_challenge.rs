//! `mfa_challenges`: what a login with the right password gets when TOTP is on — a short-lived,
//! single-use token (stored as its SHA-256) that `POST /api/auth/login/mfa` exchanges, with a
//! code, for a session.

use sea_orm::entity::prelude::*;

/// One pending second step of a login.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mfa_challenges")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The user whose password was right.
    pub user_id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Hex SHA-256 of the password hash at login: a password changed since ends the challenge.
    pub password_tag: String,
    /// The tenant the login asked for (checked at login).
    pub tenant_id: Option<String>,
    /// Wrong codes presented with it so far.
    pub attempts: i32,
    /// When the password was checked.
    pub created_at: DateTimeUtc,
    /// When it stops working.
    pub expires_at: DateTimeUtc,
    /// When it was exchanged for a session; it works once.
    pub used_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
