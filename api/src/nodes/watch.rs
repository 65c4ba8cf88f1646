//! Drops the stream of a node that was disabled, or whose fingerprint was reset or changed,
//! whoever did it: this process's REST API, or `api node …` run in another process against
//! the same database. The watcher re-reads the node rows of live sessions every interval, and
//! fails the commands nobody acked in time ([`crate::servers::commands::sweep`]).

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
        let sessions = state.registry.sessions();
        if sessions.is_empty() {
            continue;
        }
        let rows = match store::list(&state.db).await {
            Ok(rows) => rows
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect::<HashMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = %e, "node watcher cannot read nodes");
                continue;
            }
        };
        for session in sessions {
            let reason = match rows.get(&session.node_id) {
                None => Some(Kick::Deleted),
                Some(row) if !row.enabled => Some(Kick::Disabled),
                Some(row) if row.fingerprint.as_deref() != Some(session.fingerprint.as_str()) => {
                    Some(Kick::FingerprintReset)
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                tracing::info!(node = %session.node_id, reason = reason.label(), "dropping node stream");
                state.registry.kick(&session.node_id, reason);
            }
        }
    }
}
