//! `sessions`: one per login, the family of its refresh tokens (`sid` in access tokens).

use sea_orm::entity::prelude::*;

/// One session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// The family id, a UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The client's default tenant.
    pub tenant_id: Option<String>,
    /// When the session started.
    pub created_at: DateTimeUtc,
    /// When it was revoked (logout, reuse detected, password reset).
    pub revoked_at: Option<DateTimeUtc>,
    /// Why.
    pub revoked_reason: Option<String>,
    /// The client's IP at login.
    pub ip: Option<String>,
    /// The client's `User-Agent` at login, at most 255 characters.
    pub user_agent: Option<String>,
    /// When an access token of it was last accepted (to the minute).
    pub last_used_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
