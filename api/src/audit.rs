//! Writing audit rows in the contract's shape.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::Value;

use crate::Error;
use crate::db::entities::audit_log;

/// One audit event before it is stored.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who acted (a user id, or the presented CN / `unknown` on the node channel).
    pub actor: String,
    /// What, e.g. `node.connect`.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// `accepted` or `rejected: <reason>`, and the like.
    pub outcome: String,
    /// The peer address.
    pub ip: Option<String>,
    /// Details as a JSON object; never secrets.
    pub details: Value,
    /// The tenant, `None` for platform-wide events.
    pub tenant_id: Option<String>,
}

/// Appends `event` to the audit log.
pub async fn record(db: &DatabaseConnection, event: AuditEvent) -> Result<(), Error> {
    insert(db, event).await.map(drop)
}

/// Appends `event` to the audit log and returns the new row's id.
pub async fn insert(db: &DatabaseConnection, event: AuditEvent) -> Result<String, Error> {
    let id = uuid::Uuid::now_v7().to_string();
    audit_log::ActiveModel {
        id: Set(id.clone()),
        at: Set(Utc::now()),
        actor: Set(event.actor),
        action: Set(event.action),
        target: Set(event.target),
        outcome: Set(event.outcome),
        ip: Set(event.ip),
        details: Set(event.details),
        tenant_id: Set(event.tenant_id),
    }
    .insert(db)
    .await?;
    Ok(id)
}

/// Replaces the details of row `id` (a folded row's count grows).
pub async fn update_details(
    db: &DatabaseConnection,
    id: &str,
    details: Value,
) -> Result<(), Error> {
    audit_log::Entity::update_many()
        .col_expr(audit_log::Column::Details, Expr::value(details))
        .filter(audit_log::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Appends `event`, logging (not failing) when the database refuses: used where the action
/// itself already happened or was already refused.
pub async fn record_or_log(db: &DatabaseConnection, event: AuditEvent) {
    let action = event.action.clone();
    if let Err(e) = record(db, event).await {
        tracing::error!(action, error = %e, "cannot write an audit row");
    }
}
