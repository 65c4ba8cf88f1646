//! Commands across replicas. A command is a row before anything is sent ([`super::commands`]);
//! the replica that holds the node's stream sends it:
//!
//! - when the command was asked of another replica, that one wakes the holder with a note
//!   on [`crate::nodes::fleet::COMMANDS_CHANNEL`] ([`wake_note`]); the holder reads the row and
//!   builds the command again from it ([`on_wake`]);
//! - when a node's stream is admitted (on any replica), the commands of the node still
//!   pending are sent down it again ([`redeliver`]): one sent to a stream that was replaced
//!   before its ack is not lost. Wings runs a command id at most once (it remembers recent
//!   ids and answers a repeat with the first answer), so a second delivery is harmless.
//!
//! A start or restart is built with the server's spec read again (secrets included) by the
//! holder: secrets never travel between replicas. A console line is not kept in the database;
//! it rides in the note (base64), so a console line whose node moves before its ack is not
//! sent again: its ack (if the node had it) or the sweep settles it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};

use super::Servers;
use super::commands::{NodeCommand, finish, message};
use crate::Error;
use crate::db::entities::states::{CommandKind, CommandState};
use crate::db::entities::{command as command_row, server};
use crate::nodes::Delivery;

/// Why a console line is not sent again to a node that moved.
const CONSOLE_NOT_KEPT: &str = "the node moved to another panel replica before it acknowledged this console line, which is not kept";

/// The note that wakes the holder of a node for one command.
#[derive(Debug, Serialize, Deserialize)]
struct Wake {
    node: String,
    command: String,
    /// A console line, base64 (at most 4096 bytes before: the note stays under PostgreSQL's
    /// 8000-byte bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
}

/// The note for command `command_id` of `node_id`.
pub(super) fn wake_note(node_id: &str, command_id: &str, command: &NodeCommand) -> String {
    let wake = Wake {
        node: node_id.to_owned(),
        command: command_id.to_owned(),
        line: match command {
            NodeCommand::ConsoleInput(line) => Some(STANDARD.encode(line)),
            _ => None,
        },
    };
    serde_json::to_string(&wake).unwrap_or_default()
}

/// A note on the commands channel: when this replica holds the node, the command is built
/// from its row and sent (once per stream). Other replicas ignore it.
pub async fn on_wake(state: &Servers, note: &str) -> Result<(), Error> {
    let Ok(wake) = serde_json::from_str::<Wake>(note) else {
        tracing::debug!("ignoring a malformed command note");
        return Ok(());
    };
    if !state.nodes.holds(&wake.node) {
        return Ok(());
    }
    let Some(row) = pending(&wake.node)
        .filter(command_row::Column::Id.eq(&wake.command))
        .one(&state.db)
        .await?
    else {
        return Ok(());
    };
    let line = wake
        .line
        .and_then(|l| STANDARD.decode(l).ok())
        .and_then(|l| String::from_utf8(l).ok());
    send_again(state, row, line).await
}

/// Sends every command of `node_id` still pending down its stream, just admitted here.
pub async fn redeliver(state: &Servers, node_id: &str) -> Result<usize, Error> {
    let rows = pending(node_id)
        .order_by_asc(command_row::Column::CreatedAt)
        .all(&state.db)
        .await?;
    let count = rows.len();
    for row in rows {
        send_again(state, row, None).await?;
    }
    Ok(count)
}

fn pending(node_id: &str) -> sea_orm::Select<command_row::Entity> {
    command_row::Entity::find()
        .filter(command_row::Column::NodeId.eq(node_id))
        .filter(command_row::Column::State.eq(CommandState::Pending))
}

/// Builds `row`'s command again and sends it down the stream held here. A command that
/// cannot be built is failed with the reason; one the stream does not take stays pending
/// (the node's next holder sends it, or the sweep fails it).
async fn send_again(
    state: &Servers,
    row: command_row::Model,
    line: Option<String>,
) -> Result<(), Error> {
    if row.action == CommandKind::Console && line.is_none() {
        // A console line is never stored: it may well have reached the node already (its ack
        // settles the row); if not, the sweep fails it with its reason.
        return Ok(());
    }
    let command = match rebuild(state, &row, line).await {
        Ok(command) => command,
        Err(reason) => {
            tracing::warn!(command = %row.id, %reason, "cannot send the command again");
            finish(state, &row.id, None, false, &reason).await?;
            return Ok(());
        }
    };
    let message = message(&row.id, &row.server_id, command);
    match state
        .nodes
        .deliver(&row.node_id, &row.id, message, None)
        .await
    {
        Delivery::Sent => tracing::debug!(command = %row.id, node = %row.node_id, "command sent"),
        Delivery::Routed | Delivery::Unreachable => {
            tracing::debug!(command = %row.id, node = %row.node_id, "command not taken; left pending")
        }
    }
    Ok(())
}

/// The command of `row`, built again (`line`: the console line, when the note carried it).
/// `Err` holds why it cannot be.
async fn rebuild(
    state: &Servers,
    row: &command_row::Model,
    line: Option<String>,
) -> Result<NodeCommand, String> {
    let arg = |name: &str| {
        row.args
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("the command's row has no {name}"))
    };
    let spec = || async {
        let server = server::Entity::find_by_id(&row.server_id)
            .one(&state.db)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the server no longer exists".to_owned())?;
        super::expanded(state, &server)
            .await
            .map_err(|e| format!("cannot build the server's spec: {e}"))
    };
    Ok(match row.action {
        CommandKind::Install => NodeCommand::Install(spec().await?),
        CommandKind::Start => NodeCommand::Start(spec().await?),
        CommandKind::Restart => NodeCommand::Restart(spec().await?),
        CommandKind::Stop => NodeCommand::Stop,
        CommandKind::Kill => NodeCommand::Kill,
        CommandKind::Delete => NodeCommand::Delete,
        CommandKind::Console => NodeCommand::ConsoleInput(line.ok_or(CONSOLE_NOT_KEPT)?),
        CommandKind::Backup => NodeCommand::Backup {
            backup_id: arg("backup_id")?,
        },
        CommandKind::Restore => NodeCommand::Restore {
            backup_id: arg("backup_id")?,
            sha256: arg("sha256")?,
        },
        CommandKind::DeleteBackup => NodeCommand::DeleteBackup {
            backup_id: arg("backup_id")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_line_rides_in_the_note_within_postgres_bound() {
        let line = "\u{1}".repeat(4096);
        let note = wake_note("node-1", "c1", &NodeCommand::ConsoleInput(line.clone()));
        assert!(note.len() < 8000, "{} bytes", note.len());
        let wake: Wake = serde_json::from_str(&note).unwrap();
        assert_eq!(wake.node, "node-1");
        let decoded = STANDARD.decode(wake.line.unwrap()).unwrap();
        assert_eq!(decoded, line.as_bytes());
        assert!(!wake_note("n", "c", &NodeCommand::Stop).contains("line"));
    }
}
