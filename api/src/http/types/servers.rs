//! Servers, their commands and backups.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::entities::states::{
    BackupState, CommandKind, CommandState, RestoreState, ServerState,
};
use crate::db::entities::{backup, command};
use crate::servers::ServerView;
pub use crate::servers::schema::ServerVariables;

/// A server.
#[derive(Debug, Serialize, ToSchema)]
pub struct Server {
    /// The server's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its tenant.
    #[schema(format = Uuid)]
    pub tenant_id: String,
    /// Its name.
    pub name: String,
    /// The node it is placed on.
    pub node_id: String,
    /// The template's name.
    pub template: String,
    /// Its variables.
    #[schema(value_type = ServerVariables)]
    pub variables: serde_json::Value,
    /// The port it was given on its node.
    #[schema(required = true)]
    pub port: Option<i32>,
    /// What its node last reported.
    pub state: ServerState,
    /// Why, when it crashed.
    #[schema(required = true)]
    pub state_reason: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<ServerView> for Server {
    fn from(view: ServerView) -> Server {
        let s = view.server;
        Server {
            id: s.id,
            tenant_id: s.tenant_id,
            name: s.name,
            node_id: s.node_id,
            template: view.template,
            variables: s.variables,
            port: s.port,
            state: s.state,
            state_reason: s.state_reason,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// `{"command_id"}`: a command was sent; follow it at `…/commands/{cid}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The command's id.
    #[schema(format = Uuid)]
    pub command_id: String,
}

/// What became of a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct Command {
    /// The command's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// What it asks of the node.
    pub action: CommandKind,
    /// Where it stands.
    pub state: CommandState,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When its node answered.
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<command::Model> for Command {
    fn from(row: command::Model) -> Command {
        Command {
            id: row.id,
            action: row.action,
            state: row.state,
            error: row.error,
            created_at: row.created_at,
            completed_at: row.completed_at,
        }
    }
}

/// A backup of a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backup {
    /// The backup's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: BackupState,
    /// The archive's size.
    #[schema(required = true, minimum = 0)]
    pub size_bytes: Option<i64>,
    /// The archive's SHA-256, hex.
    #[schema(required = true)]
    pub sha256: Option<String>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Where its last restore stands; null: never restored.
    #[schema(required = true)]
    pub restore_state: Option<RestoreState>,
    /// Why its last restore failed.
    #[schema(required = true)]
    pub restore_error: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its node finished it.
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<backup::Model> for Backup {
    fn from(b: backup::Model) -> Backup {
        Backup {
            id: b.id,
            name: b.name,
            state: b.state,
            size_bytes: b.size_bytes,
            sha256: b.sha256,
            error: b.error,
            restore_state: b.restore_state,
            restore_error: b.restore_error,
            created_at: b.created_at,
            completed_at: b.completed_at,
        }
    }
}
