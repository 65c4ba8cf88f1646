//! `commands`: what the panel sent down a node's stream, and what became of it.

use sea_orm::entity::prelude::*;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    /// A UUID; the node's ack carries it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The server it acts on.
    pub server_id: String,
    /// The node it was sent to.
    pub node_id: String,
    /// `install`, `start`, `stop`, `restart`, `kill`, `delete`.
    pub action: super::states::CommandKind,
    /// `pending`, `acked` or `failed`.
    pub state: super::states::CommandState,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was sent.
    pub created_at: DateTimeUtc,
    /// When the ack came, or when it was given up on.
    pub completed_at: Option<DateTimeUtc>,
    /// What the command needs beyond its server (a backup's id and SHA-256), so the replica
    /// holding the node can build it again; never a secret or a console line.
    pub args: Option<Json>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
