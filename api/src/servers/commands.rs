//! Commands down a node's stream: each gets an id and a row, is answered by the node's ack,
//! and is marked failed by [`sweep`] if no ack arrives in time (a sweep of the database, not a
//! timer per command, so it holds across restarts). A server's `state` is only ever what its
//! node reported, so a lost command leaves the truth in place.

use proto::node::v1::{
    Command, CommandAck, Delete, Kill, PanelMessage, Restart, ServerSpec, Stop, command,
    panel_message,
};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::Servers;
use super::events::Event;
use crate::Error;
use crate::db::entities::states::{CommandKind, CommandState, ServerState};
use crate::db::entities::{command as command_row, server};
use crate::nodes::Delivery;
use crate::templates::Expanded;

/// Seconds a stopping process has between SIGTERM and SIGKILL.
pub const STOP_GRACE_SECS: u32 = 10;

/// A power action a tenant asks for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start its process.
    Start,
    /// SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// Stop, then start.
    Restart,
    /// SIGKILL.
    Kill,
}

impl Action {
    /// A power action by name: `start`, `stop`, `restart`, `kill`.
    pub fn power(name: &str) -> Option<Action> {
        match name {
            "start" => Some(Action::Start),
            "stop" => Some(Action::Stop),
            "restart" => Some(Action::Restart),
            "kill" => Some(Action::Kill),
            _ => None,
        }
    }

    /// The name the API uses.
    pub fn kind(self) -> CommandKind {
        match self {
            Action::Start => CommandKind::Start,
            Action::Stop => CommandKind::Stop,
            Action::Restart => CommandKind::Restart,
            Action::Kill => CommandKind::Kill,
        }
    }

    /// The permission a power action needs.
    pub fn permission(self) -> authz::Permission {
        match self {
            Action::Start => authz::Permission::ServerStart,
            _ => authz::Permission::ServerStop,
        }
    }
}

/// A command for a node, carrying what it needs: a start cannot be sent without the
/// server's expanded spec, a restore without the archive's SHA-256.
#[derive(Debug, Clone)]
pub enum NodeCommand {
    /// Make the server on its node.
    Install(Expanded),
    /// Start its process.
    Start(Expanded),
    /// Stop, then start with this spec.
    Restart(Expanded),
    /// SIGTERM, then SIGKILL after [`STOP_GRACE_SECS`].
    Stop,
    /// SIGKILL.
    Kill,
    /// Remove it from its node.
    Delete,
    /// A line to its standard input.
    ConsoleInput(String),
    /// Archive its directory as this backup.
    Backup {
        /// The backup's id (the archive's name on the node).
        backup_id: String,
    },
    /// Put this archive back, refusing one whose SHA-256 differs.
    Restore {
        /// The backup.
        backup_id: String,
        /// Its SHA-256 as the node reported it.
        sha256: String,
    },
    /// Remove this archive.
    DeleteBackup {
        /// The backup.
        backup_id: String,
    },
}

impl NodeCommand {
    /// What it is, as the commands table, metrics and audit rows name it.
    pub fn kind(&self) -> CommandKind {
        match self {
            NodeCommand::Install(_) => CommandKind::Install,
            NodeCommand::Start(_) => CommandKind::Start,
            NodeCommand::Restart(_) => CommandKind::Restart,
            NodeCommand::Stop => CommandKind::Stop,
            NodeCommand::Kill => CommandKind::Kill,
            NodeCommand::Delete => CommandKind::Delete,
            NodeCommand::ConsoleInput(_) => CommandKind::Console,
            NodeCommand::Backup { .. } => CommandKind::Backup,
            NodeCommand::Restore { .. } => CommandKind::Restore,
            NodeCommand::DeleteBackup { .. } => CommandKind::DeleteBackup,
        }
    }

    /// What the row keeps beyond the server, so the command can be built again from it by
    /// the replica holding the node (never a secret or a console line: those are not kept).
    fn args(&self) -> Option<serde_json::Value> {
        match self {
            NodeCommand::Backup { backup_id } | NodeCommand::DeleteBackup { backup_id } => {
                Some(serde_json::json!({ "backup_id": backup_id }))
            }
            NodeCommand::Restore { backup_id, sha256 } => {
                Some(serde_json::json!({ "backup_id": backup_id, "sha256": sha256 }))
            }
            _ => None,
        }
    }

    /// The message's payload on the node channel.
    fn into_proto(self) -> command::Action {
        use proto::node::v1 as pb;
        match self {
            NodeCommand::Install(expanded) => command::Action::Install(spec(expanded)),
            NodeCommand::Start(expanded) => command::Action::Start(spec(expanded)),
            NodeCommand::Restart(expanded) => command::Action::Restart(Restart {
                grace_secs: STOP_GRACE_SECS,
                spec: Some(spec(expanded)),
            }),
            NodeCommand::Stop => command::Action::Stop(Stop {
                grace_secs: STOP_GRACE_SECS,
            }),
            NodeCommand::Kill => command::Action::Kill(Kill {}),
            NodeCommand::Delete => command::Action::Delete(Delete {}),
            NodeCommand::ConsoleInput(line) => {
                command::Action::ConsoleInput(pb::ConsoleInput { line })
            }
            NodeCommand::Backup { backup_id } => command::Action::Backup(pb::Backup { backup_id }),
            NodeCommand::Restore { backup_id, sha256 } => {
                command::Action::Restore(pb::Restore { backup_id, sha256 })
            }
            NodeCommand::DeleteBackup { backup_id } => {
                command::Action::DeleteBackup(pb::DeleteBackup { backup_id })
            }
        }
    }
}

fn spec(expanded: Expanded) -> ServerSpec {
    let limits = expanded.limits;
    ServerSpec {
        limits: Some(proto::node::v1::Limits {
            memory_bytes: limits.memory_mb << 20,
            cpu_percent: limits.cpu_percent,
            max_processes: limits.max_processes,
            open_files: limits.open_files,
            disk_bytes: limits.disk_mb << 20,
        }),
        program: expanded.program,
        args: expanded.args,
        env: expanded.env.into_iter().collect(),
    }
}

/// Sends `command` for `server_id` to `node_id` and returns the command id; [`sweep`] fails
/// it if no ack comes in time. Answers [`Error::NodeOffline`] when the node has no stream.
///
/// The row is written first; then the command goes down the node's stream when this replica
/// holds it, or the replica that does is woken to send it (see [`super::routing`]).
pub async fn send(
    state: &Servers,
    node_id: &str,
    server_id: &str,
    command: NodeCommand,
) -> Result<String, Error> {
    if !state.nodes.is_online(node_id) {
        return Err(Error::NodeOffline(node_id.to_owned()));
    }
    let kind = command.kind();
    let id = crate::tenancy::new_id();
    command_row::ActiveModel {
        id: Set(id.clone()),
        server_id: Set(server_id.to_owned()),
        node_id: Set(node_id.to_owned()),
        action: Set(kind),
        state: Set(CommandState::Pending),
        error: Set(None),
        created_at: Set(state.clock.now()),
        completed_at: Set(None),
        args: Set(command.args()),
    }
    .insert(&state.db)
    .await?;
    let wake = super::routing::wake_note(node_id, &id, &command);
    let message = message(&id, server_id, command);
    match state.nodes.deliver(node_id, &id, message, Some(wake)).await {
        Delivery::Sent | Delivery::Routed => {}
        Delivery::Unreachable => {
            finish(
                state,
                &id,
                None,
                false,
                "the node went offline before it got the command",
            )
            .await?;
            return Err(Error::NodeOffline(node_id.to_owned()));
        }
    }
    state
        .metrics
        .commands
        .with_label_values(&[kind.name().as_str()])
        .inc();
    Ok(id)
}

/// The message that carries command `id` for `server_id`.
pub(super) fn message(id: &str, server_id: &str, command: NodeCommand) -> PanelMessage {
    PanelMessage {
        kind: Some(panel_message::Kind::Command(Command {
            id: id.to_owned(),
            server_id: server_id.to_owned(),
            action: Some(command.into_proto()),
        })),
    }
}

/// Marks failed every command still `pending` past its deadline (sent longer ago than the
/// command timeout), from the database: run at start and on every node-watcher tick, so a
/// command outlives no restart of the panel that sent it. Returns how many it failed.
pub async fn sweep(state: &Servers) -> Result<usize, Error> {
    let timeout = state.command_timeout;
    let cutoff = state.clock.now()
        - chrono::Duration::from_std(timeout).unwrap_or_else(|_| chrono::Duration::days(1));
    let overdue = command_row::Entity::find()
        .filter(command_row::Column::State.eq(CommandState::Pending))
        .filter(command_row::Column::CreatedAt.lt(cutoff))
        .all(&state.db)
        .await?;
    let error = format!("no ack from the node within {} s", timeout.as_secs());
    let mut failed = 0;
    for command in overdue {
        if finish(state, &command.id, None, false, &error).await? {
            tracing::warn!(command = %command.id, node = %command.node_id, "command timed out");
            failed += 1;
        }
    }
    Ok(failed)
}

/// Moves a pending command to `acked` or `failed` (only the node it was sent to may answer,
/// when `node_id` is given). Returns whether it was still pending.
pub(super) async fn finish(
    state: &Servers,
    command_id: &str,
    node_id: Option<&str>,
    ok: bool,
    error: &str,
) -> Result<bool, Error> {
    let mut update = command_row::Entity::update_many()
        .col_expr(
            command_row::Column::State,
            Expr::value(if ok {
                CommandState::Acked
            } else {
                CommandState::Failed
            }),
        )
        .col_expr(
            command_row::Column::Error,
            Expr::value((!ok).then(|| error.to_owned())),
        )
        .col_expr(
            command_row::Column::CompletedAt,
            Expr::value(state.clock.now()),
        )
        .filter(command_row::Column::Id.eq(command_id))
        .filter(command_row::Column::State.eq(CommandState::Pending));
    if let Some(node_id) = node_id {
        update = update.filter(command_row::Column::NodeId.eq(node_id));
    }
    if update.exec(&state.db).await?.rows_affected == 0 {
        return Ok(false);
    }
    if let Some(row) = command_row::Entity::find_by_id(command_id)
        .one(&state.db)
        .await?
    {
        if ok && row.action == CommandKind::Install {
            server::Entity::update_many()
                .col_expr(server::Column::State, Expr::value(ServerState::Offline))
                .col_expr(server::Column::UpdatedAt, Expr::value(state.clock.now()))
                .filter(server::Column::Id.eq(&row.server_id))
                .filter(server::Column::State.eq(ServerState::Installing))
                .exec(&state.db)
                .await?;
        }
        state.events.publish(
            &row.server_id,
            Event::Command {
                command_id: row.id,
                action: row.action,
                state: row.state,
                error: row.error,
            },
        );
    }
    Ok(true)
}

/// A node's ack.
pub async fn on_ack(state: &Servers, node_id: &str, ack: CommandAck) -> Result<(), Error> {
    if !finish(state, &ack.command_id, Some(node_id), ack.ok, &ack.error).await? {
        tracing::debug!(node = %node_id, command = %ack.command_id, "ack for no pending command of this node");
    }
    Ok(())
}

/// One command's row, when it acts on `server_id`.
pub async fn get(
    state: &Servers,
    server_id: &str,
    command_id: &str,
) -> Result<command_row::Model, Error> {
    command_row::Entity::find_by_id(command_id)
        .filter(command_row::Column::ServerId.eq(server_id))
        .one(&state.db)
        .await?
        .ok_or_else(|| Error::NotFound("command".into()))
}
