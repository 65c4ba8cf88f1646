//! Backups of a server: asked for over REST, made, kept, restored and deleted by its node.
//! The node reports each backup's size and SHA-256; a restore sends that SHA-256 back so
//! the node refuses an archive that is not the one it made.

use proto::node::v1::{BackupOperation, BackupResult};
use sea_orm::ActiveEnum;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, Order, QueryFilter, Set,
};

use super::Servers;
use super::commands::{self, NodeCommand};
use super::events::Event;
use crate::Error;
use crate::db::entities::states::{BackupState, RestoreState};
use crate::db::entities::{backup, server};
use crate::pagination::{self, Page, PageQuery};
use crate::tenancy::{new_id, validate_name};

/// The code an audit row keeps for a failure the node reported (its own text is only logged).
const NODE_ERROR: &str = "node_error";
/// The fixed sentence beside [`NODE_ERROR`].
const NODE_ERROR_MESSAGE: &str = "the node could not complete the operation";

/// Asks the server's node for a backup; the row is `pending` until the node reports.
pub async fn create(
    state: &Servers,
    server: &server::Model,
    name: Option<&str>,
) -> Result<backup::Model, Error> {
    let name = match name {
        Some(name) => validate_name("name", name)?,
        None => format!("backup {}", state.clock.now().format("%Y-%m-%d %H:%M:%S")),
    };
    if !state.nodes.is_online(&server.node_id) {
        return Err(Error::NodeOffline(server.node_id.clone()));
    }
    let row = backup::ActiveModel {
        id: Set(new_id()),
        server_id: Set(server.id.clone()),
        tenant_id: Set(server.tenant_id.clone()),
        node_id: Set(server.node_id.clone()),
        name: Set(name),
        state: Set(BackupState::Pending),
        size_bytes: Set(None),
        sha256: Set(None),
        error: Set(None),
        restore_state: Set(None),
        restore_error: Set(None),
        created_at: Set(state.clock.now()),
        completed_at: Set(None),
    }
    .insert(&state.db)
    .await?;
    let command = NodeCommand::Backup {
        backup_id: row.id.clone(),
    };
    if let Err(e) = commands::send(state, &server.node_id, &server.id, command).await {
        backup::Entity::delete_by_id(&row.id)
            .exec(&state.db)
            .await?;
        return Err(e);
    }
    Ok(row)
}

/// The server's backups, newest first, one page.
pub async fn list(
    db: &DatabaseConnection,
    server_id: &str,
    query: &PageQuery,
) -> Result<Page<backup::Model>, Error> {
    pagination::fetch(
        db,
        backup::Entity::find().filter(backup::Column::ServerId.eq(server_id)),
        backup::Column::Id,
        Order::Desc,
        query,
        |b| b.id.clone(),
    )
    .await
}

/// One backup of the server.
pub async fn get(
    db: &DatabaseConnection,
    server_id: &str,
    backup_id: &str,
) -> Result<backup::Model, Error> {
    backup::Entity::find_by_id(backup_id)
        .filter(backup::Column::ServerId.eq(server_id))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("backup".into()))
}

/// Asks the node to restore a completed backup (it stops the server first).
pub async fn restore(
    state: &Servers,
    server: &server::Model,
    backup: &backup::Model,
) -> Result<String, Error> {
    let sha256 = match (backup.state, &backup.sha256) {
        (BackupState::Completed, Some(sha256)) => sha256.clone(),
        _ => {
            return Err(Error::Conflict(format!(
                "the backup is {}; only a completed backup can be restored",
                backup.state.to_value()
            )));
        }
    };
    if backup.restore_state == Some(RestoreState::Restoring) {
        return Err(Error::Conflict("this backup is being restored".into()));
    }
    let command = NodeCommand::Restore {
        backup_id: backup.id.clone(),
        sha256,
    };
    // Marked before it is sent: a quick node's result must never be overwritten by this mark.
    set_restore(&state.db, &backup.id, Some(RestoreState::Restoring), None).await?;
    match commands::send(state, &server.node_id, &server.id, command).await {
        Ok(command_id) => Ok(command_id),
        Err(e) => {
            let (before, error) = (backup.restore_state, backup.restore_error.clone());
            set_restore(&state.db, &backup.id, before, error).await?;
            Err(e)
        }
    }
}

async fn set_restore(
    db: &DatabaseConnection,
    backup_id: &str,
    restore_state: Option<RestoreState>,
    error: Option<String>,
) -> Result<(), Error> {
    backup::Entity::update_many()
        .col_expr(backup::Column::RestoreState, Expr::value(restore_state))
        .col_expr(backup::Column::RestoreError, Expr::value(error))
        .filter(backup::Column::Id.eq(backup_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a backup: the node removes its archive, then the row goes.
pub async fn delete(
    state: &Servers,
    server: &server::Model,
    backup: &backup::Model,
) -> Result<(), Error> {
    let command = NodeCommand::DeleteBackup {
        backup_id: backup.id.clone(),
    };
    commands::send(state, &backup.node_id, &server.id, command).await?;
    backup::Entity::delete_by_id(&backup.id)
        .exec(&state.db)
        .await?;
    Ok(())
}

/// A node reported a backup or restore outcome (only for its own backups).
pub async fn on_result(state: &Servers, node_id: &str, result: BackupResult) -> Result<(), Error> {
    let Some(row) = backup::Entity::find_by_id(&result.backup_id)
        .filter(backup::Column::NodeId.eq(node_id))
        .filter(backup::Column::ServerId.eq(&result.server_id))
        .one(&state.db)
        .await?
    else {
        tracing::debug!(node = %node_id, backup = %result.backup_id, "result for no backup of this node");
        return Ok(());
    };
    let error = (!result.ok).then(|| result.error.clone());
    let (what, outcome) = match result.operation() {
        BackupOperation::Create => {
            let mut update: backup::ActiveModel = row.clone().into();
            let made = if result.ok {
                BackupState::Completed
            } else {
                BackupState::Failed
            };
            update.state = Set(made);
            update.error = Set(error.clone());
            update.completed_at = Set(Some(state.clock.now()));
            if result.ok {
                update.size_bytes = Set(Some(result.size_bytes as i64));
                update.sha256 = Set(Some(result.sha256.to_ascii_lowercase()));
            }
            update.update(&state.db).await?;
            ("backup", made.to_value())
        }
        BackupOperation::Restore => {
            let outcome = if result.ok {
                RestoreState::Restored
            } else {
                RestoreState::Failed
            };
            set_restore(&state.db, &row.id, Some(outcome), error.clone()).await?;
            ("restore", outcome.to_value())
        }
    };
    if !result.ok {
        // The node's words go to the log only: tenant members read the audit log.
        tracing::warn!(node = %node_id, backup = %row.id, operation = what, error = %result.error, "the node reports a failed {what}");
    }
    let details = match &error {
        None => serde_json::json!({ "backup_id": row.id }),
        Some(_) => serde_json::json!({
            "backup_id": row.id,
            "error": { "code": NODE_ERROR, "message": NODE_ERROR_MESSAGE },
        }),
    };
    crate::audit::record_or_log(
        &state.db,
        crate::audit::AuditEvent {
            actor: format!("node:{node_id}"),
            action: format!("{what}.{outcome}"),
            target: Some(row.server_id.clone()),
            outcome: if result.ok {
                "ok".into()
            } else {
                format!("failed: {NODE_ERROR}")
            },
            ip: None,
            details,
            tenant_id: Some(row.tenant_id.clone()),
        },
    )
    .await;
    state.events.publish(
        &row.server_id,
        Event::Backup {
            backup_id: row.id,
            operation: what.into(),
            state: outcome,
            error,
        },
    );
    Ok(())
}
