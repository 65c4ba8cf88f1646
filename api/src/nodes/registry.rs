//! The live streams of connected nodes, one per node.
//!
//! Everything that needs to reach a connected node goes through [`NodeRegistry`], so that a
//! registry spanning several panel replicas (routing through Redis pub/sub) can replace this
//! in-process one behind the same methods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proto::node::v1::PanelMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages to a node's stream (a status ends it).
pub type Outbound = mpsc::Sender<Result<PanelMessage, tonic::Status>>;

/// How long a send waits for room in a node's stream before the node counts as gone.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One live, authenticated stream.
#[derive(Debug, Clone)]
pub struct Session {
    /// Unique per stream in this process.
    pub id: u64,
    /// The node.
    pub node_id: String,
    /// The fingerprint of the certificate the stream was admitted with.
    pub fingerprint: String,
    /// Cancelled to drop the stream and its connection.
    pub kick: CancellationToken,
    /// Why it was kicked, set before `kick` is cancelled.
    reason: Arc<Mutex<Option<Kick>>>,
    /// Down the stream.
    outbound: Outbound,
}

/// Why the panel drops a node's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// An operator disabled the node.
    Disabled,
    /// An operator reset the pinned fingerprint (or another one was pinned).
    FingerprintReset,
    /// The node row is gone.
    Deleted,
    /// The same node connected again; the newer stream wins.
    Replaced,
    /// The panel is shutting down; the node should reconnect at once.
    Shutdown,
}

impl Kick {
    /// The gRPC status the node receives as the stream's end.
    pub fn status(self) -> tonic::Status {
        match self {
            Kick::Disabled => tonic::Status::permission_denied(
                "node_disabled: this node was disabled in the panel",
            ),
            Kick::FingerprintReset => tonic::Status::permission_denied(
                "fingerprint_reset: the pinned certificate of this node was reset; reconnect to pin again",
            ),
            Kick::Deleted => tonic::Status::permission_denied(
                "unknown_node: this node was removed from the panel",
            ),
            Kick::Replaced => {
                tonic::Status::aborted("replaced: a newer connection of this node took over")
            }
            Kick::Shutdown => {
                tonic::Status::unavailable("shutting_down: the panel is restarting, reconnect now")
            }
        }
    }

    /// A short label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Kick::Disabled => "node disabled",
            Kick::FingerprintReset => "fingerprint reset",
            Kick::Deleted => "node deleted",
            Kick::Replaced => "replaced by a newer connection",
            Kick::Shutdown => "panel shutting down",
        }
    }
}

impl Session {
    /// Why the session was dropped, if it was.
    pub fn kick_reason(&self) -> Option<Kick> {
        self.reason.lock().map(|r| *r).unwrap_or(None)
    }

    fn kick(&self, reason: Kick) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.kick.cancel();
    }
}

/// The registry of live sessions.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
}

impl NodeRegistry {
    /// Registers a new stream for `node_id`, dropping any older one of the same node (a node
    /// has one stream; a reconnect replaces a half-dead one at once).
    pub fn register(
        &self,
        node_id: &str,
        fingerprint: &str,
        kick: CancellationToken,
        outbound: Outbound,
    ) -> Session {
        let session = Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id: node_id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            kick,
            reason: Arc::default(),
            outbound,
        };
        let previous = self.lock().insert(node_id.to_owned(), session.clone());
        if let Some(previous) = previous {
            previous.kick(Kick::Replaced);
        }
        session
    }

    /// Removes `session` if it is still the node's current one. Returns whether it was.
    pub fn unregister(&self, session: &Session) -> bool {
        let mut sessions = self.lock();
        match sessions.get(&session.node_id) {
            Some(current) if current.id == session.id => {
                sessions.remove(&session.node_id);
                true
            }
            _ => false,
        }
    }

    /// Drops the live stream of `node_id`, if any, giving `reason` to the node.
    pub fn kick(&self, node_id: &str, reason: Kick) -> bool {
        let session = self.lock().get(node_id).cloned();
        match session {
            Some(s) => {
                s.kick(reason);
                true
            }
            None => false,
        }
    }

    /// Drops every live stream (shutdown).
    pub fn kick_all(&self, reason: Kick) {
        let all: Vec<Session> = self.lock().values().cloned().collect();
        for s in all {
            s.kick(reason);
        }
    }

    /// Sends `message` down `node_id`'s live stream. False when the node has none, or its
    /// stream did not take the message in time.
    pub async fn send(&self, node_id: &str, message: PanelMessage) -> bool {
        let outbound = self.lock().get(node_id).map(|s| s.outbound.clone());
        match outbound {
            Some(tx) => tx.send_timeout(Ok(message), SEND_TIMEOUT).await.is_ok(),
            None => false,
        }
    }

    /// Whether `node_id` has a live stream.
    pub fn is_online(&self, node_id: &str) -> bool {
        self.lock().contains_key(node_id)
    }

    /// How many nodes have a live stream.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no node is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the live sessions.
    pub fn sessions(&self) -> Vec<Session> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A poisoned lock only means another thread panicked mid-update of a HashMap whose
        // entries are always complete; keep serving.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_replaces_and_kicks_the_old_one() {
        let registry = NodeRegistry::default();
        let (tx, _rx) = mpsc::channel(1);
        let first = registry.register("n1", "aa", CancellationToken::new(), tx.clone());
        let second = registry.register("n1", "aa", CancellationToken::new(), tx);
        assert!(first.kick.is_cancelled());
        assert_eq!(first.kick_reason(), Some(Kick::Replaced));
        assert!(
            !registry.unregister(&first),
            "a stale session must not remove the new one"
        );
        assert!(registry.is_online("n1"));
        assert!(registry.kick("n1", Kick::Disabled));
        assert_eq!(second.kick_reason(), Some(Kick::Disabled));
        assert!(registry.unregister(&second));
        assert!(registry.is_empty());
    }
}
