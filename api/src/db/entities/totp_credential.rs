//! `totp_credentials`: an account's TOTP secret (envelope-encrypted, bound to the user), whether
//! it is on yet, and the last time step a code was accepted for (codes are never accepted twice).

use sea_orm::entity::prelude::*;

/// Whether the secret is waiting for its first code or in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TotpState {
    /// Set up, not yet confirmed with a code: logins do not ask for it.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Confirmed: logins need a code or a recovery code.
    #[sea_orm(string_value = "active")]
    Active,
}

/// One account's TOTP secret.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "totp_credentials")]
pub struct Model {
    /// The user (bound into the associated data).
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// Pending or active.
    pub state: TotpState,
    /// The envelope format's version.
    pub version: i32,
    /// `AES-256-GCM`.
    pub algorithm: String,
    /// The master key that wrapped the data key.
    pub kek_id: String,
    /// The secret's nonce.
    pub nonce: Vec<u8>,
    /// The secret's ciphertext.
    pub ciphertext: Vec<u8>,
    /// The secret's tag.
    pub tag: Vec<u8>,
    /// The data key's nonce.
    pub dek_nonce: Vec<u8>,
    /// The data key, wrapped.
    pub wrapped_dek: Vec<u8>,
    /// The data key's tag.
    pub dek_tag: Vec<u8>,
    /// The last time step (Unix time / 30) a code was accepted for; only later ones are.
    pub last_step: Option<i64>,
    /// When it was set up.
    pub created_at: DateTimeUtc,
    /// When it was confirmed.
    pub confirmed_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
