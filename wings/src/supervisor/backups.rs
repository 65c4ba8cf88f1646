//! Backups of a server's directory and their restore. A backup is made on the blocking pool
//! while the server may keep running (one at a time per server, [`BACKUPS_AT_ONCE`] per
//! node); a restore stops the server, kills whatever of it is left and replaces its tree.
//! Outcomes go to the panel as `BackupResult`s.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::node::v1::{BackupOperation, BackupResult, node_message};
use tokio::sync::Semaphore;

use super::launch::Launch;
use super::{DEFAULT_LIMITS, Supervisor, valid_id};
use crate::{Error, backup};

/// Backups made at once on one node (more wait their turn).
const BACKUPS_AT_ONCE: usize = 2;
/// How long a running server has to stop before a restore kills it.
const RESTORE_STOP_GRACE: Duration = Duration::from_secs(10);

/// The node's backups under way.
pub(super) struct Backups {
    /// Servers with a backup being made (one at a time each).
    making: Mutex<HashSet<String>>,
    /// Backups made at once on this node.
    permits: Arc<Semaphore>,
}

impl Default for Backups {
    fn default() -> Backups {
        Backups {
            making: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(BACKUPS_AT_ONCE)),
        }
    }
}

impl Backups {
    /// Marks a backup of `id` as being made; false when one already is.
    fn begin(&self, id: &str) -> bool {
        self.making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned())
    }

    fn end(&self, id: &str) {
        self.making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

impl<L: Launch> Supervisor<L> {
    /// Where backup `backup_id` of server `id` is kept; an error for a bad id.
    pub(super) fn backup_path(&self, id: &str, backup_id: &str) -> Result<PathBuf, Error> {
        if !valid_id(backup_id) {
            return Err(Error::BadId {
                kind: "backup",
                value: backup_id.to_owned(),
            });
        }
        Ok(self
            .data_dir
            .join("backups")
            .join(id)
            .join(format!("{backup_id}.tar.gz")))
    }

    /// Starts archiving the server's directory on the blocking pool; the outcome is sent as
    /// a `BackupResult`. The server may keep running meanwhile.
    pub(super) fn backup(self: &Arc<Self>, id: &str, backup_id: &str) -> Result<(), Error> {
        let out = self.backup_path(id, backup_id)?;
        let dir = self.server_dir(id);
        if !dir.is_dir() {
            return Err(Error::State("the server has no directory on this node"));
        }
        if !self.backups.begin(id) {
            return Err(Error::State("a backup of this server is being made"));
        }
        let me = self.clone();
        let owner = self.uid_of(id);
        let budget = self
            .lock()
            .get(id)
            .and_then(|e| e.slot.spec.as_ref())
            .and_then(|spec| spec.limits)
            .unwrap_or(DEFAULT_LIMITS)
            .disk_bytes;
        let permits = self.backups.permits.clone();
        let (id, backup_id) = (id.to_owned(), backup_id.to_owned());
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let made = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                backup::create(&dir, &out, owner, budget)
                    .map_err(Error::server("cannot archive the server"))
            })
            .await
            .map_err(|source| Error::Task {
                what: "the backup task",
                source,
            })
            .and_then(|made| made);
            me.backups.end(&id);
            match &made {
                Ok(a) => {
                    tracing::info!(server = %id, backup = %backup_id, bytes = a.size_bytes, "backup made")
                }
                Err(e) => {
                    tracing::warn!(server = %id, backup = %backup_id, error = %e, "backup failed")
                }
            }
            me.backup_result(&id, &backup_id, BackupOperation::Create, made);
        });
        Ok(())
    }

    /// Removes a backup (gone already is fine).
    pub(super) fn delete_backup(&self, id: &str, backup_id: &str) -> Result<(), Error> {
        let path = self.backup_path(id, backup_id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::server("cannot remove the backup")(e)),
        }
    }

    /// Stops the server if it runs, then restores the backup over its directory.
    pub(super) async fn restore(self: &Arc<Self>, id: &str, backup_id: &str, sha256: &str) {
        // File operations are refused from now on, and those under way end first: a restore
        // and a write never overlap.
        let restoring = self.ledger.restore(id).await;
        let result = self.restore_inner(id, backup_id, sha256).await;
        drop(restoring);
        match &result {
            Ok(_) => tracing::info!(server = %id, backup = %backup_id, "backup restored"),
            Err(e) => {
                tracing::warn!(server = %id, backup = %backup_id, error = %e, "restore refused")
            }
        }
        self.backup_result(id, backup_id, BackupOperation::Restore, result);
    }

    async fn restore_inner(
        self: &Arc<Self>,
        id: &str,
        backup_id: &str,
        sha256: &str,
    ) -> Result<backup::Archive, Error> {
        let archive = self.backup_path(id, backup_id)?;
        if !archive.is_file() {
            return Err(Error::State("no such backup on this node"));
        }
        self.stop_and_reap(id, RESTORE_STOP_GRACE).await?;
        // Nothing of the server runs while its tree is replaced.
        self.kill_everything_async(id).await?;
        let expected = sha256.to_owned();
        let owned_id = id.to_owned();
        self.blocking("the restore task", move |me| {
            let owner = me.owner(&owned_id)?;
            backup::restore(&archive, &expected, &me.server_dir(&owned_id), owner)
                .map_err(|e| Error::Refused(e.to_string()))?;
            Ok(backup::Archive {
                size_bytes: 0,
                sha256: expected,
            })
        })
        .await
    }

    fn backup_result(
        &self,
        id: &str,
        backup_id: &str,
        operation: BackupOperation,
        result: Result<backup::Archive, Error>,
    ) {
        let (ok, error, archive) = match result {
            Ok(archive) => (true, String::new(), archive),
            Err(e) => (
                false,
                e.to_string(),
                backup::Archive {
                    size_bytes: 0,
                    sha256: String::new(),
                },
            ),
        };
        self.send(node_message::Kind::Backup(BackupResult {
            server_id: id.to_owned(),
            backup_id: backup_id.to_owned(),
            operation: operation as i32,
            ok,
            error,
            size_bytes: archive.size_bytes,
            sha256: archive.sha256,
        }));
    }
}
