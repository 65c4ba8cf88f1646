//! `secrets`: one envelope-encrypted value per tenant and name.

use sea_orm::entity::prelude::*;

/// One secret: everything needed to open it but the master key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secrets")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning tenant (bound into the associated data).
    pub tenant_id: String,
    /// The name (bound into the associated data).
    pub name: String,
    /// The envelope format's version.
    pub version: i32,
    /// `AES-256-GCM`.
    pub algorithm: String,
    /// The master key that wrapped the data key.
    pub kek_id: String,
    /// The value's nonce.
    pub nonce: Vec<u8>,
    /// The value's ciphertext.
    pub ciphertext: Vec<u8>,
    /// The value's tag.
    pub tag: Vec<u8>,
    /// The data key's nonce.
    pub dek_nonce: Vec<u8>,
    /// The data key, wrapped.
    pub wrapped_dek: Vec<u8>,
    /// The data key's tag.
    pub dek_tag: Vec<u8>,
    /// When it was first written.
    pub created_at: DateTimeUtc,
    /// When it was last written (rotation does not count).
    pub updated_at: DateTimeUtc,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
