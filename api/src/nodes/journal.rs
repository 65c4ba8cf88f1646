//! Group commit for the node channel's writes: its audit rows and when each node was last
//! heard from and whether it is online.
//!
//! A reconnect storm (a replica died, its nodes land here at once) would otherwise be a
//! statement per audit row and per online mark. Writes go to one writer task instead; it
//! takes everything queued (up to [`MAX_BATCH`]) and commits it with one statement per kind,
//! each atomic by itself: one multi-row `INSERT` for the audit rows and one `UPDATE … CASE`
//! for the nodes. While a group is being written the next one queues, so the busier the
//! channel, the larger the groups; a small group also waits [`GATHER`] (1 ms) for the writes
//! in flight to join it, as PostgreSQL's `commit_delay` does.
//!
//! Nothing answered is lost: [`Journal::write`] returns once the group holding the write is
//! committed, and the node channel only answers (a `Welcome`, say) after that. When a group
//! fails, its writes are committed one by one, so one bad write fails only its own caller.
//! The queue is bounded
//! ([`QUEUE`]): when the database falls behind, writers wait.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{CaseStatement, Expr};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::clock::SharedClock;
use crate::db::entities::{audit_log, node};

/// Writes waiting for the writer before callers wait for room.
pub const QUEUE: usize = 4096;
/// A group smaller than this waits [`GATHER`] for more before it is written.
pub const GATHER_BELOW: usize = 16;
/// How long a small group waits for more.
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(1);
/// Most writes in one group.
pub const MAX_BATCH: usize = 512;

/// One write of the node channel.
#[derive(Debug, Clone)]
pub enum Write {
    /// An audit row.
    Audit(AuditEvent),
    /// The node was heard from at `at`; when `online` is set, it went online or offline.
    Seen {
        /// The node.
        node_id: String,
        /// `Some(true)`: its stream was welcomed; `Some(false)`: it ended; `None`: a
        /// heartbeat.
        online: Option<bool>,
        /// When.
        at: DateTime<Utc>,
    },
}

/// A write and who waits for it.
struct Queued {
    write: Write,
    /// When the write was handed over (the audit row's time).
    at: DateTime<Utc>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle writers use; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Queued>,
    clock: SharedClock,
}

impl Journal {
    /// Starts the writer task on `db`; it ends when the last handle is dropped, after
    /// committing what was queued.
    pub fn start(db: DatabaseConnection, clock: SharedClock) -> Journal {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Journal { tx, clock }
    }

    /// Queues `write` and returns once it is committed.
    pub async fn write(&self, write: Write) -> Result<(), Error> {
        let (done, committed) = oneshot::channel();
        let queued = Queued {
            write,
            at: self.clock.now(),
            done,
        };
        self.tx
            .send(queued)
            .await
            .map_err(|_| Error::internal("the journal's writer has stopped"))?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Error::internal(message)),
            Err(_) => Err(Error::internal("the journal's writer has stopped")),
        }
    }

    /// An audit row, committed.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), Error> {
        self.write(Write::Audit(event)).await
    }

    /// The node went online or offline now, committed.
    pub async fn mark(&self, node_id: &str, online: bool) -> Result<(), Error> {
        let at = self.clock.now();
        let node_id = node_id.to_owned();
        self.write(Write::Seen {
            node_id,
            online: Some(online),
            at,
        })
        .await
    }

    /// A heartbeat of the node now, committed.
    pub async fn touch(&self, node_id: &str) -> Result<(), Error> {
        let at = self.clock.now();
        let node_id = node_id.to_owned();
        self.write(Write::Seen {
            node_id,
            online: None,
            at,
        })
        .await
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut group, MAX_BATCH).await > 0 {
        if group.len() < GATHER_BELOW {
            // A small group waits a moment for the writes in flight to join it, as
            // PostgreSQL's `commit_delay` does: fewer, larger statements under load.
            tokio::time::sleep(GATHER).await;
            while group.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(queued) => group.push(queued),
                    Err(_) => break,
                }
            }
        }
        let (audits, seen): (Vec<_>, Vec<_>) = group
            .drain(..)
            .partition(|q| matches!(q.write, Write::Audit(_)));
        // Each kind is one statement, atomic by itself: no transaction around them (three
        // round trips fewer per group), and the two run side by side.
        tokio::join!(commit_kind(&db, audits), commit_kind(&db, seen));
    }
}

/// Commits writes of one kind as one statement and answers each caller; when it fails,
/// each write is committed on its own, so one bad write fails only its own caller.
async fn commit_kind(db: &DatabaseConnection, queued: Vec<Queued>) {
    if queued.is_empty() {
        return;
    }
    let (writes, waiting): (Vec<_>, Vec<_>) = queued
        .into_iter()
        .map(|q| ((q.write, q.at), q.done))
        .unzip();
    match commit(db, &writes).await {
        Ok(()) => {
            for done in waiting {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = writes.len(), "a group of node channel writes failed; committing them one by one");
            for (write, done) in writes.iter().zip(waiting) {
                let alone = commit(db, std::slice::from_ref(write)).await;
                let _ = done.send(alone.map_err(|e| {
                    tracing::error!(error = %e, "cannot commit a node channel write");
                    e.to_string()
                }));
            }
        }
    }
}

/// What one group does to a node: its last `online` and its latest time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeChange {
    online: Option<bool>,
    at: DateTime<Utc>,
}

/// Folds a group's node writes, in order, into one change per node.
fn fold_nodes(
    seen: impl Iterator<Item = (String, Option<bool>, DateTime<Utc>)>,
) -> Vec<(String, NodeChange)> {
    let mut order = Vec::new();
    let mut changes: HashMap<String, NodeChange> = HashMap::new();
    for (node_id, online, at) in seen {
        match changes.get_mut(&node_id) {
            Some(change) => {
                change.online = online.or(change.online);
                change.at = change.at.max(at);
            }
            None => {
                order.push(node_id.clone());
                changes.insert(node_id, NodeChange { online, at });
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| changes.remove(&id).map(|c| (id, c)))
        .collect()
}

/// Writes `writes` with one statement per kind: a multi-row `INSERT` of the audit rows, one
/// `UPDATE … CASE` of the nodes (callers pass one kind at a time, see [`commit_kind`]).
async fn commit(db: &DatabaseConnection, writes: &[(Write, DateTime<Utc>)]) -> Result<(), Error> {
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    for (write, queued_at) in writes {
        match write {
            Write::Audit(event) => {
                rows.push(audit::row(
                    uuid::Uuid::now_v7().to_string(),
                    *queued_at,
                    event.clone(),
                ));
            }
            Write::Seen {
                node_id,
                online,
                at,
            } => seen.push((node_id.clone(), *online, *at)),
        }
    }
    let nodes = fold_nodes(seen.into_iter());
    if !rows.is_empty() {
        audit_log::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    if !nodes.is_empty() {
        let mut last_seen = CaseStatement::new();
        let mut online = CaseStatement::new();
        let mut any_online = false;
        for (id, change) in &nodes {
            last_seen = last_seen.case(node::Column::Id.eq(id.as_str()), Expr::value(change.at));
            if let Some(value) = change.online {
                online = online.case(node::Column::Id.eq(id.as_str()), Expr::value(value));
                any_online = true;
            }
        }
        let ids = nodes.iter().map(|(id, _)| id.as_str());
        let mut update = node::Entity::update_many()
            .col_expr(
                node::Column::LastSeen,
                last_seen.finally(Expr::col(node::Column::LastSeen)).into(),
            )
            .filter(node::Column::Id.is_in(ids));
        if any_online {
            update = update.col_expr(
                node::Column::Online,
                online.finally(Expr::col(node::Column::Online)).into(),
            );
        }
        update.exec(db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_folds_to_the_last_state_and_latest_time_per_node() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let folded = fold_nodes(
            [
                ("a".to_owned(), Some(true), t(10)),
                ("b".to_owned(), None, t(11)),
                ("a".to_owned(), None, t(12)),
                ("a".to_owned(), Some(false), t(11)),
                ("b".to_owned(), None, t(9)),
            ]
            .into_iter(),
        );
        assert_eq!(
            folded,
            vec![
                (
                    "a".to_owned(),
                    NodeChange {
                        online: Some(false),
                        at: t(12)
                    }
                ),
                (
                    "b".to_owned(),
                    NodeChange {
                        online: None,
                        at: t(11)
                    }
                ),
            ]
        );
    }
}
