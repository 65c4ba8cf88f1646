//! The states and kinds the panel records, as enums stored by name (`DeriveActiveEnum`): the
//! one place each list is written. The API shows the same names (serde), the OpenAPI document
//! lists them from the same enums (`utoipa::ToSchema`), and the database keeps them in the
//! string columns they always had, so no migration was needed.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveEnum, Iterable};
use serde::Serialize;

/// Every stored name of an enum, in declaration order (for the OpenAPI document).
pub fn names<E: ActiveEnum<Value = String> + Iterable>() -> Vec<String> {
    E::iter().map(|e| e.to_value()).collect()
}

/// A server's state: the panel's `installing` until its node confirms it, then only ever what
/// the node reported.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Made on the panel, not yet confirmed by its node.
    #[sea_orm(string_value = "installing")]
    Installing,
    /// Not running.
    #[sea_orm(string_value = "offline")]
    Offline,
    /// Its process is being started.
    #[sea_orm(string_value = "starting")]
    Starting,
    /// Its process runs.
    #[sea_orm(string_value = "running")]
    Running,
    /// Its process was asked to stop.
    #[sea_orm(string_value = "stopping")]
    Stopping,
    /// Its process ended on its own.
    #[sea_orm(string_value = "crashed")]
    Crashed,
}

impl ServerState {
    /// The state a node reported (an unspecified one reads as `installing`).
    pub fn from_node(state: proto::node::v1::ServerState) -> ServerState {
        use proto::node::v1::ServerState as Node;
        match state {
            Node::Installing | Node::Unspecified => ServerState::Installing,
            Node::Offline => ServerState::Offline,
            Node::Starting => ServerState::Starting,
            Node::Running => ServerState::Running,
            Node::Stopping => ServerState::Stopping,
            Node::Crashed => ServerState::Crashed,
        }
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_value())
    }
}

/// Where a command sent to a node stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Sent, not yet answered.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The node acknowledged it.
    #[sea_orm(string_value = "acked")]
    Acked,
    /// The node refused it, or no answer came in time.
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// What a command asks of its node.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Make the server on its node.
    #[sea_orm(string_value = "install")]
    Install,
    /// Start its process.
    #[sea_orm(string_value = "start")]
    Start,
    /// SIGTERM, then SIGKILL after the grace period.
    #[sea_orm(string_value = "stop")]
    Stop,
    /// Stop, then start.
    #[sea_orm(string_value = "restart")]
    Restart,
    /// SIGKILL.
    #[sea_orm(string_value = "kill")]
    Kill,
    /// Remove it from its node.
    #[sea_orm(string_value = "delete")]
    Delete,
    /// A line to its standard input.
    #[sea_orm(string_value = "console")]
    Console,
    /// Archive its directory.
    #[sea_orm(string_value = "backup")]
    Backup,
    /// Put an archive back.
    #[sea_orm(string_value = "restore")]
    Restore,
    /// Remove an archive.
    #[sea_orm(string_value = "delete_backup")]
    DeleteBackup,
}

impl CommandKind {
    /// The name in the commands table, metrics and audit rows.
    pub fn name(self) -> String {
        self.to_value()
    }
}

/// Where a backup stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Asked for; the node has not reported.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The node made it (size and SHA-256 known).
    #[sea_orm(string_value = "completed")]
    Completed,
    /// The node could not make it.
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// How a backup's last restore went.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum RestoreState {
    /// Sent to the node; not finished.
    #[sea_orm(string_value = "restoring")]
    Restoring,
    /// Put back.
    #[sea_orm(string_value = "restored")]
    Restored,
    /// The node could not restore it.
    #[sea_orm(string_value = "failed")]
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_api_names() {
        for state in ServerState::iter() {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.to_value())
            );
        }
        for kind in CommandKind::iter() {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.name())
            );
        }
        assert_eq!(names::<CommandState>(), ["pending", "acked", "failed"]);
        assert_eq!(names::<BackupState>(), ["pending", "completed", "failed"]);
        assert_eq!(names::<RestoreState>(), ["restoring", "restored", "failed"]);
    }
}
