//! `encryption_keys`: each master key ever used, by id, with its key check value.

use sea_orm::entity::prelude::*;

/// One master key's record (never the key).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "encryption_keys")]
pub struct Model {
    /// The id derived from the key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// AES of a zero block under the key, truncated: tells a wrong key.
    pub check_value: String,
    /// When it was first used.
    pub created_at: DateTimeUtc,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
