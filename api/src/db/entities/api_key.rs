//! `api_keys`: tenant-scoped keys for scripts; the secret is stored only as a keyed hash.

use sea_orm::entity::prelude::*;

/// One API key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// 16 hex characters, part of the key as shown (`mhp_<id>_<secret>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The one tenant it reaches.
    pub tenant_id: String,
    /// Its creator: the key never holds more than their role grants now.
    pub user_id: String,
    /// A label.
    pub name: String,
    /// JSON array of the permissions it was given.
    pub permissions: String,
    /// Hex HMAC-SHA256 of the secret under the panel's API-key hashing key.
    pub secret_hash: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When it was last accepted (to the minute).
    pub last_used_at: Option<DateTimeUtc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTimeUtc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
