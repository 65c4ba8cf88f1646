//! Folds repeated pre-authentication refusals of the node channel into one audit row per
//! minute.
//!
//! Anyone can open a TCP connection and fail a TLS handshake; with one audit row per attempt an
//! unauthenticated client would write the audit log as fast as it can dial. So the first
//! refusal from an IP address for a reason writes a row, and further ones within a minute only
//! raise its `details.count` (with `first_at` and `last_at`), flushed once a second by
//! [`run_flusher`]. The metric `mamba_node_rejections_total` still counts each refusal.
//! Refusals after a verified certificate (unknown node, disabled, mismatch) keep a row each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Rejection;
use super::admission::{Attempt, count};
use crate::AppState;
use crate::audit;

/// How long one folded row collects refusals.
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);
/// How often the counts of folded rows are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Addresses tracked at once; past it, refusals fold under `0.0.0.0` (details `overflow`).
const MAX_KEYS: usize = 10_000;

type Key = (IpAddr, &'static str);

/// The open windows, by address and reason.
#[derive(Debug, Default)]
pub struct Folder {
    windows: Mutex<HashMap<Key, Window>>,
}

#[derive(Debug)]
struct Window {
    opened: DateTime<Utc>,
    last: DateTime<Utc>,
    count: u64,
    /// The count last written.
    written: u64,
    /// The row, once inserted.
    row: Option<String>,
    details: Value,
}

/// What the caller does with a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// The first in its window: insert a row, then tell [`Folder::inserted`].
    Insert(Key),
    /// Folded into an open window's row.
    Folded,
}

/// Counts a pre-authentication refusal in the metric and folds its audit row.
pub(super) async fn refuse(
    state: &AppState,
    folder: &Folder,
    rejection: Rejection,
    attempt: &Attempt<'_>,
    detail: Option<String>,
) {
    let mut event = count(state, rejection, attempt, detail);
    let now = state.clock.now();
    let Note::Insert(key) = folder.note(attempt.peer.ip(), rejection.reason(), &event.details, now)
    else {
        return;
    };
    if key.0.is_unspecified() {
        event.ip = Some(key.0.to_string());
    }
    event.details = folded(&event.details, 1, now, now, key.0.is_unspecified());
    match audit::insert(&state.db, event).await {
        Ok(id) => folder.inserted(key, id),
        Err(e) => tracing::error!(error = %e, "cannot write audit row"),
    }
}

/// Writes grown counts once a second until `shutdown`, then once more.
pub(super) async fn run_flusher(
    state: Arc<AppState>,
    folder: Arc<Folder>,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        for (id, details) in folder.due(state.clock.now()) {
            if let Err(e) = audit::update_details(&state.db, &id, details).await {
                tracing::error!(error = %e, "cannot update a folded audit row");
            }
        }
        if stopping {
            return;
        }
    }
}

impl Folder {
    fn note(&self, ip: IpAddr, reason: &'static str, details: &Value, now: DateTime<Utc>) -> Note {
        let mut windows = self.lock();
        let mut key = (ip, reason);
        if !windows.contains_key(&key) && windows.len() >= MAX_KEYS {
            key = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), reason);
        }
        if let Some(window) = windows.get_mut(&key).filter(|w| now - w.opened < WINDOW) {
            window.count += 1;
            window.last = now;
            return Note::Folded;
        }
        windows.insert(
            key,
            Window {
                opened: now,
                last: now,
                count: 1,
                written: 1,
                row: None,
                details: details.clone(),
            },
        );
        Note::Insert(key)
    }

    fn inserted(&self, key: Key, id: String) {
        if let Some(window) = self.lock().get_mut(&key) {
            window.row = Some(id);
        }
    }

    /// The rows whose count grew since last written, with their new details; forgets windows
    /// that are over and fully written.
    fn due(&self, now: DateTime<Utc>) -> Vec<(String, Value)> {
        let mut windows = self.lock();
        let mut due = Vec::new();
        for (key, window) in windows.iter_mut() {
            if let Some(row) = &window.row
                && window.count > window.written
            {
                window.written = window.count;
                let overflow = key.0.is_unspecified();
                let details = folded(
                    &window.details,
                    window.count,
                    window.opened,
                    window.last,
                    overflow,
                );
                due.push((row.clone(), details));
            }
        }
        windows.retain(|_, w| now - w.opened < WINDOW || (w.row.is_some() && w.count > w.written));
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Window>> {
        // Windows are replaced whole; a poisoned lock leaves a consistent map.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `details` of the first refusal with the window's count and times.
fn folded(
    details: &Value,
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    overflow: bool,
) -> Value {
    let mut details = details.clone();
    if let Some(map) = details.as_object_mut() {
        map.insert("count".into(), json!(count));
        map.insert("first_at".into(), json!(first.to_rfc3339()));
        map.insert("last_at".into(), json!(last.to_rfc3339()));
        if overflow {
            map.insert("overflow".into(), json!(true));
        }
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_address_reason_and_minute() {
        let folder = Folder::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Utc::now();
        let d = json!({"reason": "unknown_ca"});
        let Note::Insert(key) = folder.note(ip, "unknown_ca", &d, t0) else {
            panic!("first refusal inserts");
        };
        assert!(
            folder.due(t0).is_empty(),
            "nothing to flush before the row exists"
        );
        folder.inserted(key, "row-1".into());
        for s in 1..5 {
            assert_eq!(
                folder.note(ip, "unknown_ca", &d, t0 + TimeDelta::seconds(s)),
                Note::Folded
            );
        }
        assert!(matches!(
            folder.note(ip, "handshake_failed", &d, t0),
            Note::Insert(_)
        ));
        let due = folder.due(t0 + TimeDelta::seconds(5));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "row-1");
        assert_eq!(due[0].1["count"], json!(5));
        assert!(
            folder.due(t0 + TimeDelta::seconds(6)).is_empty(),
            "written once"
        );
        let later = t0 + WINDOW + TimeDelta::seconds(1);
        folder.due(later);
        assert!(
            matches!(folder.note(ip, "unknown_ca", &d, later), Note::Insert(_)),
            "a new minute, a new row"
        );
    }
}
