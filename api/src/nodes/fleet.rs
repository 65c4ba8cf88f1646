//! [`Fleet`]: the [`NodeLink`] of a panel that is one replica among several on one database.
//!
//! A node's stream lives on one replica. Admitting it takes the node's row in `node_owners`
//! with one conditional write (`epoch + 1`, this replica, a lease), and announces the new epoch
//! on the [`OWNERS_CHANNEL`] (`NOTIFY`, PostgreSQL): the replica that held the node hears it and
//! drops its stream at once. Each replica renews the leases of the streams it holds every
//! quarter of the lease ([`Fleet::tick`]) and re-reads every hold, so a replica that dies
//! stops renewing and its nodes are offline everywhere once their lease passed, and a replica
//! that missed an announcement still finds out at its next tick.
//!
//! Fencing: a replica delivers a command or writes a node's state only while the row still
//! names it with the epoch of its stream ([`Fleet::is_current`]); a stale one is dropped.
//! Acks are recorded whichever stream they come on: they only move a pending row of that
//! node to its end, by command id, so a late one cannot undo anything.
//!
//! On SQLite (one process) the same rows are written and read; there is no channel, and no
//! other replica to wake.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use proto::node::v1::{FileRequest, PanelMessage, panel_message};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement, Value,
};

use super::link::{Delivery, NodeLink};
use super::registry::{Kick, NodeRegistry, Session};
use crate::Error;
use crate::clock::SharedClock;
use crate::config::FleetConfig;
use crate::db::entities::node_owner;

/// Where a new hold (or the end of one) is announced: `claim|release <node> <epoch> <replica>`.
pub const OWNERS_CHANNEL: &str = "mamba_owners";
/// Where the holder of a node is woken for a command (see [`crate::servers::commands`]).
pub const COMMANDS_CHANNEL: &str = "mamba_commands";
/// Where the holder of a node is handed a file request of another replica (see
/// [`crate::transfers`]).
pub const FILES_CHANNEL: &str = "mamba_files";

/// Command ids remembered per held stream, so one stream gets each command once.
const SENT_IDS: usize = 256;

/// What this replica knows of a node's holder.
#[derive(Debug, Clone)]
struct Owner {
    replica_id: String,
    epoch: i64,
    lease_until: DateTime<Utc>,
}

/// A stream this replica holds.
#[derive(Debug)]
struct Hold {
    session: u64,
    connection: u64,
    epoch: i64,
    sent: VecDeque<String>,
}

/// A replica's view of the fleet and its own holds.
pub struct Fleet {
    registry: Arc<NodeRegistry>,
    db: DatabaseConnection,
    clock: SharedClock,
    replica_id: String,
    lease: Duration,
    /// Every node's holder as last read or announced.
    owners: Mutex<HashMap<String, Owner>>,
    /// The streams held here, by node.
    holds: Mutex<HashMap<String, Hold>>,
}

impl Fleet {
    /// The fleet view of one replica, over its registry.
    pub fn new(
        registry: Arc<NodeRegistry>,
        db: DatabaseConnection,
        clock: SharedClock,
        config: &FleetConfig,
    ) -> Fleet {
        Fleet {
            registry,
            db,
            clock,
            replica_id: config.replica_id.clone(),
            lease: config.lease,
            owners: Mutex::default(),
            holds: Mutex::default(),
        }
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// How often [`Fleet::tick`] runs: a quarter of the lease.
    pub fn tick_interval(&self) -> Duration {
        self.lease / 4
    }

    /// Whether the database is PostgreSQL (has channels, and may have other replicas).
    pub fn shared(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// At start: no stream is held here yet. On SQLite (one process) every hold left by an
    /// earlier run is gone and every node offline; on PostgreSQL only this replica's own
    /// (a restart under the same id), and nodes no live lease holds are marked offline.
    pub async fn start(&self) -> Result<(), Error> {
        // Ended, not deleted: a row keeps its epoch, so the next claim still counts up.
        let mut stale = node_owner::Entity::update_many().col_expr(
            node_owner::Column::LeaseUntil,
            Expr::value(self.clock.now()),
        );
        if self.shared() {
            stale = stale.filter(node_owner::Column::ReplicaId.eq(&self.replica_id));
        }
        stale.exec(&self.db).await?;
        self.tick().await
    }

    /// Takes `session`'s node for this replica: one conditional write raises the epoch, then
    /// the previous holder is told. Returns the new epoch.
    pub async fn claim(&self, session: &Session) -> Result<i64, Error> {
        let until = self.lease_end();
        // On PostgreSQL the announcement goes with the write: one round trip.
        let sql = if self.shared() {
            "WITH claimed AS (INSERT INTO node_owners (node_id, replica_id, epoch, lease_until) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (node_id) DO UPDATE SET \
             replica_id = excluded.replica_id, epoch = node_owners.epoch + 1, \
             lease_until = excluded.lease_until RETURNING epoch) \
             SELECT epoch, pg_notify('mamba_owners', \
             'claim ' || $1 || ' ' || epoch || ' ' || $2) FROM claimed"
        } else {
            "INSERT INTO node_owners (node_id, replica_id, epoch, lease_until) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (node_id) DO UPDATE SET \
             replica_id = excluded.replica_id, epoch = node_owners.epoch + 1, \
             lease_until = excluded.lease_until RETURNING epoch"
        };
        let row = self
            .db
            .query_one(self.statement(
                sql,
                vec![
                    session.node_id.clone().into(),
                    self.replica_id.clone().into(),
                    until.into(),
                ],
            ))
            .await?
            .ok_or_else(|| Error::internal("the ownership write returned no row"))?;
        let epoch: i64 = row.try_get("", "epoch")?;
        lock(&self.holds).insert(
            session.node_id.clone(),
            Hold {
                session: session.id,
                connection: session.connection,
                epoch,
                sent: VecDeque::new(),
            },
        );
        self.learn(&session.node_id, &self.replica_id, epoch, Some(until));
        Ok(epoch)
    }

    /// Gives up `session`'s node when its stream ended. True when this replica still held it
    /// (the node is now offline everywhere); false when another stream took it meanwhile
    /// (nothing may be written for the node by this one).
    pub async fn release(&self, session: &Session) -> Result<bool, Error> {
        let epoch = {
            let mut holds = lock(&self.holds);
            match holds.get(&session.node_id) {
                Some(hold) if hold.session == session.id => {
                    let epoch = hold.epoch;
                    holds.remove(&session.node_id);
                    epoch
                }
                _ => return Ok(false),
            }
        };
        // The lease ends now; the row (and its epoch) stays, so a claim racing this one on
        // another stream still counts up from it and is never undone by it. On PostgreSQL
        // the announcement goes with the write.
        let sql = if self.shared() {
            "WITH ended AS (UPDATE node_owners SET lease_until = $1 \
             WHERE node_id = $2 AND replica_id = $3 AND epoch = $4 RETURNING epoch) \
             SELECT pg_notify('mamba_owners', \
             'release ' || $2 || ' ' || epoch || ' ' || $3) FROM ended"
        } else {
            "UPDATE node_owners SET lease_until = $1 \
             WHERE node_id = $2 AND replica_id = $3 AND epoch = $4 RETURNING epoch"
        };
        let ended = self
            .db
            .query_one(self.statement(
                sql,
                vec![
                    self.clock.now().into(),
                    session.node_id.clone().into(),
                    self.replica_id.clone().into(),
                    epoch.into(),
                ],
            ))
            .await?
            .is_some();
        if ended {
            self.forget(&session.node_id, epoch);
        }
        Ok(ended)
    }

    /// Whether `session` is still its node's current stream: held here, and the row names
    /// this replica with its epoch (read from the database: the fence).
    pub async fn is_current(&self, session: &Session) -> bool {
        let Some(epoch) = self.held_epoch(&session.node_id, Some(session.id)) else {
            return false;
        };
        self.row_is_ours(&session.node_id, epoch).await
    }

    /// Whether this replica still holds `session` (in memory: no newer stream is known).
    pub fn holds_stream(&self, session: &Session) -> bool {
        self.held_epoch(&session.node_id, Some(session.id))
            .is_some()
    }

    /// An announcement on [`OWNERS_CHANNEL`]: the view follows, and a stream held here under
    /// an older epoch is dropped.
    pub fn on_announcement(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let (Some(what), Some(node), Some(epoch), Some(replica)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(epoch) = epoch.parse::<i64>() else {
            return;
        };
        match what {
            "claim" => {
                self.learn(node, replica, epoch, None);
                self.drop_if_older(node, epoch, replica);
            }
            "release" => self.forget(node, epoch),
            _ => {}
        }
    }

    /// Renews the leases of the streams held here, re-reads every holder, drops a stream
    /// whose row names another holder (an announcement missed), and marks offline the nodes
    /// no live lease holds (their replica died). Run every [`Fleet::tick_interval`].
    pub async fn tick(&self) -> Result<(), Error> {
        let held: Vec<(String, u64, i64)> = lock(&self.holds)
            .iter()
            .map(|(node, h)| (node.clone(), h.session, h.epoch))
            .collect();
        let now = self.clock.now();
        if !held.is_empty() {
            node_owner::Entity::update_many()
                .col_expr(
                    node_owner::Column::LeaseUntil,
                    Expr::value(self.lease_end()),
                )
                .filter(node_owner::Column::ReplicaId.eq(&self.replica_id))
                .filter(node_owner::Column::NodeId.is_in(held.iter().map(|(n, _, _)| n.clone())))
                .exec(&self.db)
                .await?;
        }
        let rows = node_owner::Entity::find().all(&self.db).await?;
        let owners: HashMap<String, Owner> = rows
            .into_iter()
            .map(|r| {
                let owner = Owner {
                    replica_id: r.replica_id,
                    epoch: r.epoch,
                    lease_until: r.lease_until,
                };
                (r.node_id, owner)
            })
            .collect();
        for (node, session, epoch) in held {
            let ours = owners
                .get(&node)
                .is_some_and(|o| o.replica_id == self.replica_id && o.epoch == epoch);
            if !ours && self.held_epoch(&node, Some(session)) == Some(epoch) {
                tracing::info!(%node, epoch, "another replica holds the node now; dropping its stream here");
                self.drop_hold(&node, session);
            }
        }
        *lock(&self.owners) = owners;
        self.db
            .execute(self.statement(
                "UPDATE nodes SET online = false WHERE online = true AND id NOT IN \
                 (SELECT node_id FROM node_owners WHERE lease_until > $1)",
                vec![now.into()],
            ))
            .await?;
        // And the other way: a node whose stream is held here is online, whatever a late
        // write (an older stream's end, a replica that thought the lease gone) said.
        let ours: Vec<String> = lock(&self.holds).keys().cloned().collect();
        if !ours.is_empty() {
            crate::db::entities::node::Entity::update_many()
                .col_expr(crate::db::entities::node::Column::Online, Expr::value(true))
                .filter(crate::db::entities::node::Column::Online.eq(false))
                .filter(crate::db::entities::node::Column::Id.is_in(ours))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Sends the command `command_id` down the node's stream held here, once per stream.
    /// `None` when this replica is not (or no longer) the node's holder: the caller wakes the
    /// one that is; otherwise whether the stream took it.
    async fn deliver_here(
        &self,
        node_id: &str,
        command_id: &str,
        message: PanelMessage,
    ) -> Option<bool> {
        let epoch = self.held_epoch(node_id, None)?;
        if !self.row_is_ours(node_id, epoch).await {
            return None;
        }
        {
            let mut holds = lock(&self.holds);
            let hold = holds.get_mut(node_id).filter(|h| h.epoch == epoch)?;
            if hold.sent.iter().any(|id| id == command_id) {
                return Some(true);
            }
            if hold.sent.len() == SENT_IDS {
                hold.sent.pop_front();
            }
            hold.sent.push_back(command_id.to_owned());
        }
        let sent = self.registry.send(node_id, message).await;
        if !sent {
            // Not sent after all: a later redelivery on this stream must try again.
            if let Some(hold) = lock(&self.holds).get_mut(node_id) {
                hold.sent.retain(|id| id != command_id);
            }
        }
        Some(sent)
    }

    /// Sends a file request of another replica down the node's stream held here, fenced as a
    /// command is: only while the row names this replica with the stream's epoch. False when
    /// this replica is not (or no longer) the holder, or the stream did not take it.
    pub async fn send_file(&self, node_id: &str, request: FileRequest) -> bool {
        let Some(epoch) = self.held_epoch(node_id, None) else {
            return false;
        };
        if !self.row_is_ours(node_id, epoch).await {
            return false;
        }
        let message = PanelMessage {
            kind: Some(panel_message::Kind::File(request)),
        };
        self.registry.send(node_id, message).await
    }

    /// `NOTIFY` on `channel` (PostgreSQL only). False when it could not be sent.
    pub async fn notify(&self, channel: &str, payload: &str) -> bool {
        if !self.shared() {
            return false;
        }
        let sent = self
            .db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), payload.into()],
            ))
            .await;
        if let Err(e) = &sent {
            tracing::warn!(channel, error = %e, "cannot notify the other replicas");
        }
        sent.is_ok()
    }

    async fn row_is_ours(&self, node_id: &str, epoch: i64) -> bool {
        match node_owner::Entity::find_by_id(node_id).one(&self.db).await {
            Ok(Some(row)) => row.replica_id == self.replica_id && row.epoch == epoch,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(node = %node_id, error = %e, "cannot read the node's holder");
                false
            }
        }
    }

    /// The epoch of the stream held here for `node_id` (of that very session, if given).
    fn held_epoch(&self, node_id: &str, session: Option<u64>) -> Option<i64> {
        lock(&self.holds)
            .get(node_id)
            .filter(|h| session.is_none_or(|s| h.session == s))
            .map(|h| h.epoch)
    }

    fn learn(&self, node: &str, replica: &str, epoch: i64, until: Option<DateTime<Utc>>) {
        let lease_until = until.unwrap_or_else(|| self.lease_end());
        let mut owners = lock(&self.owners);
        if owners.get(node).is_some_and(|o| o.epoch > epoch) {
            return;
        }
        owners.insert(
            node.to_owned(),
            Owner {
                replica_id: replica.to_owned(),
                epoch,
                lease_until,
            },
        );
    }

    fn forget(&self, node: &str, epoch: i64) {
        let mut owners = lock(&self.owners);
        if owners.get(node).is_some_and(|o| o.epoch <= epoch) {
            owners.remove(node);
        }
    }

    fn drop_if_older(&self, node: &str, epoch: i64, replica: &str) {
        let older = lock(&self.holds)
            .get(node)
            .filter(|h| h.epoch < epoch && replica != self.replica_id)
            .map(|h| h.session);
        if let Some(session) = older {
            tracing::info!(%node, epoch, holder = %replica, "a newer stream of the node was admitted elsewhere; dropping ours");
            self.drop_hold(node, session);
        }
    }

    /// Forgets the hold of `session` and kicks its connection (a newer stream took the node).
    fn drop_hold(&self, node: &str, session: u64) {
        let connection = {
            let mut holds = lock(&self.holds);
            match holds.get(node) {
                Some(h) if h.session == session => holds.remove(node).map(|h| h.connection),
                _ => None,
            }
        };
        if let Some(connection) = connection {
            self.registry.kick_connection(connection, Kick::Replaced);
        }
    }

    fn lease_end(&self) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::from_std(self.lease).unwrap_or_default()
    }

    /// A statement written with `$n` placeholders, for either backend.
    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => sql.to_owned(),
            _ => sql.replace('$', "?"),
        };
        Statement::from_sql_and_values(backend, sql, values)
    }
}

impl NodeLink for Fleet {
    fn is_online(&self, node_id: &str) -> bool {
        if self.registry.is_online(node_id) {
            return true;
        }
        let now = self.clock.now();
        lock(&self.owners)
            .get(node_id)
            .is_some_and(|o| o.lease_until > now)
    }

    fn online_count(&self) -> usize {
        let now = self.clock.now();
        let mut online: HashSet<String> = self
            .registry
            .sessions()
            .into_iter()
            .map(|s| s.node_id)
            .collect();
        online.extend(
            lock(&self.owners)
                .iter()
                .filter(|(_, o)| o.lease_until > now)
                .map(|(node, _)| node.clone()),
        );
        online.len()
    }

    fn send<'a>(&'a self, node_id: &'a str, message: PanelMessage) -> BoxFuture<'a, bool> {
        Box::pin(self.registry.send(node_id, message))
    }

    /// Held by this replica (and not known to be fenced off).
    fn holds(&self, node_id: &str) -> bool {
        self.registry.is_online(node_id) && self.held_epoch(node_id, None).is_some()
    }

    fn deliver<'a>(
        &'a self,
        node_id: &'a str,
        command_id: &'a str,
        message: PanelMessage,
        wake: Option<String>,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            if self.holds(node_id) {
                match self.deliver_here(node_id, command_id, message).await {
                    Some(true) => return Delivery::Sent,
                    Some(false) => return Delivery::Unreachable,
                    // Fenced: a newer stream elsewhere holds the node; wake its replica.
                    None => {}
                }
            }
            match wake {
                Some(note) if self.notify(COMMANDS_CHANNEL, &note).await => Delivery::Routed,
                _ => Delivery::Unreachable,
            }
        })
    }

    fn kick(&self, node_id: &str, reason: Kick) -> bool {
        self.registry.kick(node_id, reason)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update replaces whole entries: a poisoned lock leaves a consistent map.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
