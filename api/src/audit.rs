//! Writing audit rows in the contract's shape.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::Value;

use crate::Error;
use crate::db::entities::audit_log;

/// Most paths an audit row names; the others are only counted.
pub const MAX_PATHS: usize = 20;
/// Most characters of one path an audit row keeps (a longer one ends in `…`).
pub const MAX_PATH_CHARS: usize = 256;

/// A path as an audit row keeps it: at most [`MAX_PATH_CHARS`] characters.
pub fn bounded_path(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_CHARS) {
        None => path.to_owned(),
        Some((at, _)) => format!("{}…", &path[..at]),
    }
}

/// Paths as an audit row keeps them: the first [`MAX_PATHS`], each bounded; the count of all
/// goes beside them (`path_count`), so a row stays a few KiB whatever the request held.
pub fn bounded_paths(paths: &[String]) -> Value {
    Value::Array(
        paths
            .iter()
            .take(MAX_PATHS)
            .map(|p| Value::String(bounded_path(p)))
            .collect(),
    )
}

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
    row(id.clone(), Utc::now(), event).insert(db).await?;
    Ok(id)
}

/// The row of `event`, with its id and time (see also `nodes::journal`, which inserts
/// many at once).
pub fn row(id: String, at: DateTime<Utc>, event: AuditEvent) -> audit_log::ActiveModel {
    audit_log::ActiveModel {
        id: Set(id),
        at: Set(at),
        actor: Set(event.actor),
        action: Set(event.action),
        target: Set(event.target),
        outcome: Set(event.outcome),
        ip: Set(event.ip),
        details: Set(event.details),
        tenant_id: Set(event.tenant_id),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_a_row_are_bounded() {
        let long = "é".repeat(4000);
        assert_eq!(bounded_path("/a/b"), "/a/b");
        let kept = bounded_path(&long);
        assert_eq!(kept.chars().count(), MAX_PATH_CHARS + 1);
        assert!(kept.ends_with('…'));
        let many: Vec<String> = (0..1000).map(|i| format!("/{i}/{long}")).collect();
        let row = bounded_paths(&many);
        assert_eq!(row.as_array().unwrap().len(), MAX_PATHS);
        assert!(
            row.to_string().len() < 16 << 10,
            "{}",
            row.to_string().len()
        );
    }
}
