//! `backups`: a server's backups, made and kept by its node.

use sea_orm::entity::prelude::*;

/// One backup.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backups")]
pub struct Model {
    /// A UUID; also the archive's file name on the node.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The server.
    pub server_id: String,
    /// The server's tenant.
    pub tenant_id: String,
    /// The node that holds the archive.
    pub node_id: String,
    /// Shown to people.
    pub name: String,
    /// `pending`, `completed` or `failed`.
    pub state: super::states::BackupState,
    /// The archive's size, once completed.
    pub size_bytes: Option<i64>,
    /// The archive's SHA-256, once completed; a restore checks it.
    pub sha256: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The last restore: `restoring`, `restored` or `failed`.
    pub restore_state: Option<super::states::RestoreState>,
    /// Why the last restore failed.
    pub restore_error: Option<String>,
    /// When it was asked for.
    pub created_at: DateTimeUtc,
    /// When it completed or failed.
    pub completed_at: Option<DateTimeUtc>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
