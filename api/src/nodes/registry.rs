//! The live streams of connected nodes, one per node, and every admitted connection
//! ([`Connections`]), so that a kick reaches a connection that has not opened its stream yet.
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

use super::connections::{Connection, Connections};

/// Messages to a node's stream (a status ends it). Boxed: a channel allocates its slots 32 at
/// a time and lives as long as its stream, so unboxed messages (192 bytes each) would cost
/// every connected node 6 KiB of slots that are nearly always empty.
pub type Outbound = mpsc::Sender<Result<Box<PanelMessage>, tonic::Status>>;

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
    /// The id of the connection the stream runs on (see [`Connections`]).
    pub connection: u64,
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
    /// Every admitted connection, with or without a stream.
    pub connections: Connections,
}

impl NodeRegistry {
    /// Registers a new stream for `node_id`, dropping any older one of the same node (a node
    /// has one stream; a reconnect replaces a half-dead one at once).
    pub fn register(
        &self,
        node_id: &str,
        fingerprint: &str,
        connection: &Connection,
        outbound: Outbound,
    ) -> Session {
        let session = Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id: node_id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            connection: connection.id,
            kick: connection.close.clone(),
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

    /// Drops the live stream of `node_id`, if any, giving `reason` to the node, and closes
    /// every other admitted connection of the node (idle ones included). Returns whether
    /// there was anything to drop.
    pub fn kick(&self, node_id: &str, reason: Kick) -> bool {
        let session = self.lock().get(node_id).cloned();
        let had_session = session.is_some();
        if let Some(s) = session {
            s.kick(reason);
        }
        let connections = self.connections.of_node(node_id);
        for c in &connections {
            c.close.cancel();
        }
        had_session || !connections.is_empty()
    }

    /// Closes one admitted connection, giving `reason` to the stream on it, if any.
    pub fn kick_connection(&self, connection: u64, reason: Kick) {
        let Some(c) = self.connections.get(connection) else {
            return;
        };
        let session = self.lock().get(&c.node_id).cloned();
        if let Some(s) = session.filter(|s| s.connection == connection) {
            s.kick(reason);
        }
        c.close.cancel();
    }

    /// Drops every live stream and closes every admitted connection (shutdown).
    pub fn kick_all(&self, reason: Kick) {
        let all: Vec<Session> = self.lock().values().cloned().collect();
        for s in all {
            s.kick(reason);
        }
        for c in self.connections.all() {
            c.close.cancel();
        }
    }

    /// Sends `message` down `node_id`'s live stream. False when the node has none, or its
    /// stream did not take the message in time.
    pub async fn send(&self, node_id: &str, message: PanelMessage) -> bool {
        let outbound = self.lock().get(node_id).map(|s| s.outbound.clone());
        match outbound {
            Some(tx) => tx
                .send_timeout(Ok(Box::new(message)), SEND_TIMEOUT)
                .await
                .is_ok(),
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
        let c1 = registry
            .connections
            .add("n1", "aa", CancellationToken::new());
        let c2 = registry
            .connections
            .add("n1", "aa", CancellationToken::new());
        let first = registry.register("n1", "aa", &c1, tx.clone());
        let second = registry.register("n1", "aa", &c2, tx);
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

    #[test]
    fn a_kick_closes_idle_connections_of_the_node_only() {
        let registry = NodeRegistry::default();
        let idle = registry
            .connections
            .add("n1", "aa", CancellationToken::new());
        let other = registry
            .connections
            .add("n2", "bb", CancellationToken::new());
        assert!(
            registry.kick("n1", Kick::Disabled),
            "an idle connection counts"
        );
        assert!(idle.close.is_cancelled());
        assert!(!other.close.is_cancelled());
        let (tx, _rx) = mpsc::channel(1);
        let session = registry.register("n2", "bb", &other, tx);
        registry.kick_connection(other.id, Kick::FingerprintReset);
        assert_eq!(session.kick_reason(), Some(Kick::FingerprintReset));
        assert!(other.close.is_cancelled());
    }
}
