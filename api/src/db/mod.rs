//! The panel's database: sea-orm entities, migrations and connecting. SQLite by default
//! (a file under `data/`), PostgreSQL in production; the same entities and migrations serve both.

pub mod entities;
mod migration;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

pub use migration::Migrator;
pub use migration::node_notify::CHANNEL as NODE_CHANGES_CHANNEL;

use crate::Error;

/// Opens the database named by `url`, creating a SQLite file's directory when needed.
pub async fn connect(url: &str) -> Result<DatabaseConnection, Error> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(
                "DATABASE_URL",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(16)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await.map_err(Error::Db)?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets the CLI write while a running panel reads; the busy timeout makes writers
        // from two processes wait for each other instead of failing.
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA synchronous=NORMAL;",
        )
        .await
        .map_err(Error::Db)?;
    }
    Ok(db)
}

/// Connects, refusing a database whose schema is behind this binary (pending migrations): the
/// operator runs `api migrate` first.
pub async fn connect_current(url: &str) -> Result<DatabaseConnection, Error> {
    let db = connect(url).await?;
    let pending = Migrator::get_pending_migrations(&db)
        .await
        .map_err(Error::Db)?
        .len();
    if pending > 0 {
        return Err(Error::config(
            "DATABASE_URL",
            format!(
                "the schema is {pending} migration(s) behind this binary; run `api migrate` first"
            ),
        ));
    }
    Ok(db)
}

/// The PostgreSQL advisory lock that serialises migrations: panel replicas (and `api migrate`)
/// starting at once on one database migrate one after the other, the later ones finding
/// nothing left to do ("MHPMIGR" in ASCII).
const MIGRATION_LOCK: i64 = 0x004d_4850_4d49_4752;

/// Connects and brings the schema up to date. On PostgreSQL the migration runs under an
/// advisory lock held on a connection of its own, so concurrent starts never run the same
/// migration twice; SQLite serialises writers itself.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, Error> {
    let db = connect(url).await?;
    if db.get_database_backend() != DbBackend::Postgres {
        Migrator::up(&db, None).await.map_err(Error::Db)?;
        return Ok(db);
    }
    let pool = db.get_postgres_connection_pool();
    let mut holder = pool
        .acquire()
        .await
        .map_err(|e| Error::Db(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))))?;
    let sql_err = |e| Error::Db(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)));
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *holder)
        .await
        .map_err(sql_err)?;
    let migrated = Migrator::up(&db, None).await.map_err(Error::Db);
    // Released even when the migration failed (and by PostgreSQL if this process dies).
    let unlocked = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *holder)
        .await
        .map_err(sql_err);
    migrated?;
    unlocked?;
    Ok(db)
}

/// The file path of a `sqlite:` URL, without its query string; `None` for other databases and
/// in-memory SQLite.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/panel.db?mode=rwc"),
            Some("data/panel.db")
        );
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }
}
