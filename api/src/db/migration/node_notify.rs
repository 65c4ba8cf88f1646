//! On PostgreSQL, a change that decides whether a node's connections may stay (enabled, the
//! pinned or next fingerprint, a rotation asked for) or the node's removal is announced on the
//! `mamba_nodes` channel (`NOTIFY`), whoever made it: any replica, or `api node …` in another
//! process. Panels `LISTEN` and act at once instead of at their next poll. Heartbeats
//! (`last_seen`, `online`) are not announced. SQLite has no channel: panels poll.
//!
//! A node added is announced too ([`AnnounceAddedNodes`]): the admission cache
//! (`nodes::access`) learns of it without a restart.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// The channel panels listen on; the payload is the node id.
pub const CHANNEL: &str = "mamba_nodes";

/// Runs `sql` on PostgreSQL; nothing on SQLite (no channels there).
async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    db.execute_unprepared(sql).await.map(drop)
}

/// Adds the trigger that announces node changes.
pub struct AddNodeNotify;

impl MigrationName for AddNodeNotify {
    fn name(&self) -> &str {
        "m20261129_000013_node_notify"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddNodeNotify {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(
            manager,
            "CREATE OR REPLACE FUNCTION mamba_notify_node_change() RETURNS trigger AS $$
             BEGIN
               IF TG_OP = 'DELETE' THEN
                 PERFORM pg_notify('mamba_nodes', OLD.id);
               ELSE
                 PERFORM pg_notify('mamba_nodes', NEW.id);
               END IF;
               RETURN NULL;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER nodes_access_changed AFTER UPDATE ON nodes FOR EACH ROW
               WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
                  OR OLD.fingerprint IS DISTINCT FROM NEW.fingerprint
                  OR OLD.next_fingerprint IS DISTINCT FROM NEW.next_fingerprint
                  OR OLD.renewal IS DISTINCT FROM NEW.renewal)
               EXECUTE FUNCTION mamba_notify_node_change();
             CREATE TRIGGER nodes_removed AFTER DELETE ON nodes FOR EACH ROW
               EXECUTE FUNCTION mamba_notify_node_change();",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(
            manager,
            "DROP TRIGGER IF EXISTS nodes_access_changed ON nodes;
             DROP TRIGGER IF EXISTS nodes_removed ON nodes;
             DROP FUNCTION IF EXISTS mamba_notify_node_change();",
        )
        .await
    }
}

/// Announces added nodes on the same channel.
pub struct AnnounceAddedNodes;

impl MigrationName for AnnounceAddedNodes {
    fn name(&self) -> &str {
        "m20261129_000015_node_notify_insert"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AnnounceAddedNodes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(
            manager,
            "CREATE TRIGGER nodes_added AFTER INSERT ON nodes FOR EACH ROW
               EXECUTE FUNCTION mamba_notify_node_change();",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(manager, "DROP TRIGGER IF EXISTS nodes_added ON nodes;").await
    }
}
