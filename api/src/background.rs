//! The panel's background loops, wired to its whole state (they are edges, like the REST and
//! gRPC servers, not services):
//!
//! - [`watch_nodes`] drops the connections (and the stream on each) of a node that was
//!   disabled, or whose fingerprint was reset or changed, whoever did it: this process's REST
//!   API, or `api node …` run in another process against the same database. It re-reads the
//!   node rows of every admitted connection every interval, idle connections without a stream
//!   included, and fails the commands nobody acked in time ([`crate::servers::commands::sweep`]).
//!   A connection on the node's next pin (a renewal under way) is kept; rotations asked for by
//!   `api node rotate` are passed to the connected nodes ([`crate::nodes::renew`]).
//! - [`listen_node_changes`] wakes the watcher as soon as PostgreSQL announces a node change
//!   (`LISTEN` on the channel a trigger `NOTIFY`s, whoever changed the row), so a disabled
//!   node is dropped within milliseconds on every replica, not at the next poll (which stays,
//!   as the fallback and for SQLite).
//!   The same connection listens for the fleet: a new holder of a node
//!   ([`crate::nodes::fleet::OWNERS_CHANNEL`]: the old one drops its stream) and a command for
//!   a node held here ([`crate::nodes::fleet::COMMANDS_CHANNEL`], see
//!   [`crate::servers::routing`]), and a file request for a node held here
//!   ([`crate::nodes::fleet::FILES_CHANNEL`], see [`crate::transfers::route`]).
//! - [`hold_nodes`] renews this replica's leases and re-reads every holder.
//! - [`export_node_metrics`] refreshes the node gauges from the database.
//! - [`reload_certificates`] picks up changed certificate and issuer files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::nodes::registry::Kick;
use crate::nodes::{lifecycle, store};

/// The node watcher: runs every `interval`, and at once when `wake` is notified (a node
/// change announced by PostgreSQL, see [`listen_node_changes`]), until `shutdown` is cancelled.
pub async fn watch_nodes(
    state: Arc<AppState>,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
        }
        if let Err(e) = crate::servers::commands::sweep(&state.servers).await {
            tracing::warn!(error = %e, "cannot sweep overdue commands");
        }
        let connections = state.registry.connections.all();
        if connections.is_empty() {
            continue;
        }
        let rows = match store::list(&state.db).await {
            Ok(rows) => {
                crate::nodes::renew::deliver_rotations(&state.nodes, &rows).await;
                rows.into_iter()
                    .map(|r| (r.id.clone(), r))
                    .collect::<HashMap<_, _>>()
            }
            Err(e) => {
                tracing::warn!(error = %e, "node watcher cannot read nodes");
                continue;
            }
        };
        for connection in connections {
            let reason = match rows.get(&connection.node_id) {
                None => Some(Kick::Deleted),
                Some(row) if !row.enabled => Some(Kick::Disabled),
                Some(row)
                    if row.fingerprint.as_deref() != Some(connection.fingerprint.as_str())
                        && row.next_fingerprint.as_deref()
                            != Some(connection.fingerprint.as_str()) =>
                {
                    Some(Kick::FingerprintReset)
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                tracing::info!(node = %connection.node_id, reason = reason.label(), "dropping node connection");
                state.registry.kick_connection(connection.id, reason);
            }
        }
    }
}

/// How often the node metrics are refreshed from the database.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(10);

/// How often the panel looks for changed certificate files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Re-reads `PANEL_CA_CERT`, `PANEL_TLS_CERT_FILE`/`KEY_FILE` and the issuer files every
/// [`RELOAD_INTERVAL`] until `shutdown` is cancelled: a changed, usable file applies to new
/// connections and signatures (a root rotation needs no restart); a broken one is logged and
/// the previous setup kept.
pub async fn reload_certificates(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(RELOAD_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let config = &state.config;
        match state
            .grpc_tls
            .reload(&config.ca_cert, &config.tls_cert, &config.tls_key)
        {
            Ok(true) => {
                tracing::info!("node channel: trusted roots or server certificate reloaded")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "node channel: cannot reload the certificate files; keeping the loaded ones")
            }
        }
        match state.nodes.issuer.reload() {
            Ok(true) => tracing::info!("issuer reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the issuer; keeping the loaded one")
            }
        }
    }
}

/// Refreshes the node metrics every [`EXPORT_INTERVAL`] until `shutdown` is cancelled.
pub async fn export_node_metrics(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(EXPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Some(issuer) = state.nodes.issuer.get() {
            state
                .metrics
                .issuer_cert_expiry
                .set(issuer.not_after().unix_timestamp());
        }
        match crate::nodes::store::list(&state.db).await {
            Ok(rows) => lifecycle::set_node_metrics(&state.metrics, &rows),
            Err(e) => tracing::warn!(error = %e, "cannot read nodes for the metrics"),
        }
    }
}

/// How long the listener waits before listening again after its connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// On PostgreSQL, notifies `wake` for every node change announced on
/// [`crate::db::NODE_CHANGES_CHANNEL`] until `shutdown` is cancelled; returns at once on
/// SQLite. A lost connection is re-established (the poll covers the gap).
pub async fn listen_node_changes(
    state: Arc<AppState>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    if state.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = state.db.get_postgres_connection_pool().clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(e) = listen(&state, &pool, &wake) => {
                // Nothing announced from now on reaches this replica: admission reads the
                // database until the listener is back and has loaded every node again.
                state.access.go_cold();
                tracing::warn!(error = %e, "node change listener lost its connection; polling meanwhile");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// Listens on the node, owners, commands and files channels and acts on each announcement;
/// returns only when the connection fails.
async fn listen(
    state: &Arc<AppState>,
    pool: &sea_orm::sqlx::PgPool,
    wake: &Notify,
) -> Result<std::convert::Infallible, crate::Error> {
    use crate::nodes::fleet::{COMMANDS_CHANNEL, FILES_CHANNEL, OWNERS_CHANNEL};
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool)
        .await
        .map_err(crate::Error::internal)?;
    // A lost connection returns at once (and the cache goes cold), not after a reconnect.
    listener.eager_reconnect(false);
    listener
        .listen_all([
            crate::db::NODE_CHANGES_CHANNEL,
            OWNERS_CHANNEL,
            COMMANDS_CHANNEL,
            FILES_CHANNEL,
        ])
        .await
        .map_err(crate::Error::internal)?;
    // Listening: every change committed after this read is announced after it.
    let known = state.access.load(&state.db).await?;
    tracing::info!(
        nodes = known,
        "admission cache loaded; following node announcements"
    );
    // A silently dead connection looks like a quiet one: ping ourselves, and give up on a
    // connection that heard nothing, not even a ping, for a while.
    let pings = CancellationToken::new();
    let _stop_pings = pings.clone().drop_guard();
    tokio::spawn(ping_ourselves(state.clone(), pings));
    // Announced nodes are re-read together, however many were announced at once.
    let (announced, to_read) = tokio::sync::mpsc::channel(REREAD_QUEUE);
    tokio::spawn(reread(state.clone(), to_read));
    // Announcements made while no connection listened: holders are re-read by the next
    // tick; commands of the nodes held here are sent again (once per stream).
    for session in state.registry.sessions() {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) =
                crate::servers::routing::redeliver(&state.servers, &session.node_id).await
            {
                tracing::warn!(node = %session.node_id, error = %e, "cannot send pending commands");
            }
        });
    }
    loop {
        // `try_recv`, not `recv`: `recv` reconnects by itself and silently loses what was
        // announced meanwhile; a lost connection must make the cache cold and be reloaded.
        let note = tokio::time::timeout(crate::nodes::access::CONFIRMED_FOR, listener.try_recv())
            .await
            .map_err(|_| crate::Error::internal("no announcement arrived, not even our own ping"))?
            .map_err(crate::Error::internal)?
            .ok_or_else(|| crate::Error::internal("the listening connection was lost"))?;
        match note.channel() {
            OWNERS_CHANNEL => state.fleet.on_announcement(note.payload()),
            COMMANDS_CHANNEL => {
                let state = state.clone();
                let payload = note.payload().to_owned();
                tokio::spawn(async move {
                    if let Err(e) = crate::servers::routing::on_wake(&state.servers, &payload).await
                    {
                        tracing::warn!(error = %e, "cannot send a command for another replica");
                    }
                });
            }
            FILES_CHANNEL => {
                let state = state.clone();
                let payload = note.payload().to_owned();
                tokio::spawn(async move {
                    crate::transfers::route::on_note(&state, &payload).await;
                });
            }
            // A ping (ours or another replica's; node ids never start with a dot).
            _ if note.payload().starts_with(PING) => {}
            _ => {
                tracing::debug!(node = note.payload(), "node change announced");
                // Judged on the database from now on, until the re-read lands; then the
                // watcher drops what may no longer stay.
                let read = state.access.announced(note.payload());
                if announced
                    .send((note.payload().to_owned(), read))
                    .await
                    .is_err()
                {
                    return Err(crate::Error::internal("the re-reading task stopped"));
                }
                wake.notify_one();
            }
        }
        // Whatever arrived, the connection delivers; believed from here (after an announced
        // node was marked, never before).
        state.access.confirm();
    }
}

/// Announced nodes waiting to be re-read before the listener waits for room.
const REREAD_QUEUE: usize = 4096;
/// Most nodes re-read in one query.
const REREAD_BATCH: usize = 512;

/// Re-reads announced nodes into the admission cache, all those waiting in one query,
/// until the listener drops its end.
async fn reread(state: Arc<AppState>, mut to_read: tokio::sync::mpsc::Receiver<(String, u64)>) {
    let mut batch = Vec::with_capacity(REREAD_BATCH);
    while to_read.recv_many(&mut batch, REREAD_BATCH).await > 0 {
        state.access.refresh(&state.db, &batch).await;
        batch.clear();
    }
}

/// What a listener's ping announces on the node channel: `.ping <replica> <n>`.
const PING: &str = ".ping ";
/// How often a listener pings itself.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Announces a ping on the node channel every [`PING_EVERY`] until `stop` is cancelled, so
/// that a listener hears something at least that often while its connection delivers.
async fn ping_ourselves(state: Arc<AppState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(PING_EVERY);
    for n in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let payload = format!("{PING}{} {n}", state.fleet.replica_id());
        state
            .fleet
            .notify(crate::db::NODE_CHANGES_CHANNEL, &payload)
            .await;
    }
}

/// Renews this replica's leases and re-reads every node's holder every
/// [`crate::nodes::Fleet::tick_interval`] until `shutdown` is cancelled.
pub async fn hold_nodes(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(state.fleet.tick_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = state.fleet.tick().await {
            tracing::warn!(error = %e, "cannot renew the leases of the nodes held here");
        }
    }
}
