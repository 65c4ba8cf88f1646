//! Drops the connections (and the stream on each) of a node that was disabled, or whose
//! fingerprint was reset or changed, whoever did it: this process's REST API, or `api node …`
//! run in another process against the same database. The watcher re-reads the node rows of
//! every admitted connection every interval, idle connections without a stream included, and
//! fails the commands nobody acked in time ([`crate::servers::commands::sweep`]). A
//! connection on the node's next pin (a renewal under way) is kept; rotations asked for by
//! `api node rotate` are passed to the connected nodes ([`crate::nodes::renew`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::nodes::registry::Kick;
use crate::nodes::store;

/// Runs until `shutdown` is cancelled.
pub async fn run(state: Arc<AppState>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = crate::servers::commands::sweep(&state).await {
            tracing::warn!(error = %e, "cannot sweep overdue commands");
        }
        let connections = state.registry.connections.all();
        if connections.is_empty() {
            continue;
        }
        let rows = match store::list(&state.db).await {
            Ok(rows) => {
                crate::nodes::renew::deliver_rotations(&state, &rows).await;
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
