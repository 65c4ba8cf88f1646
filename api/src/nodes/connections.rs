//! Every admitted node connection, whether or not it has opened a stream yet.
//!
//! Admission runs when the TLS handshake ends, but a connection may stay idle for a while
//! before it opens its stream (or never open one). The kick of an operator (disable,
//! reset-fingerprint, delete) and the watcher must reach such connections too, not only
//! registered streams: [`Connections`] keeps each one with the identity it was admitted with
//! and the token that closes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

/// One admitted connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Unique per connection in this process.
    pub id: u64,
    /// The node (the admitted certificate's CN).
    pub node_id: String,
    /// The fingerprint of the certificate the connection was admitted with.
    pub fingerprint: String,
    /// Cancelled to close the connection (and the stream on it, if any).
    pub close: CancellationToken,
}

/// The admitted connections of this process.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Connection>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Records an admitted connection; returns it with its id.
    pub fn add(&self, node_id: &str, fingerprint: &str, close: CancellationToken) -> Connection {
        let connection = Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id: node_id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            close,
        };
        self.lock().insert(connection.id, connection.clone());
        connection
    }

    /// Forgets a connection that ended.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The connections of `node_id`.
    pub fn of_node(&self, node_id: &str) -> Vec<Connection> {
        self.lock()
            .values()
            .filter(|c| c.node_id == node_id)
            .cloned()
            .collect()
    }

    /// One connection, if it is still open.
    pub fn get(&self, id: u64) -> Option<Connection> {
        self.lock().get(&id).cloned()
    }

    /// A snapshot of every open connection.
    pub fn all(&self) -> Vec<Connection> {
        self.lock().values().cloned().collect()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        // Entries are inserted and removed whole; a poisoned lock leaves a consistent map.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_found_by_node_and_forgotten() {
        let connections = Connections::default();
        let a = connections.add("n1", "aa", CancellationToken::new());
        let b = connections.add("n1", "bb", CancellationToken::new());
        let c = connections.add("n2", "cc", CancellationToken::new());
        assert_ne!(a.id, b.id);
        assert_eq!(connections.of_node("n1").len(), 2);
        connections.remove(b.id);
        assert_eq!(connections.of_node("n1").len(), 1);
        assert!(connections.get(c.id).is_some());
        connections.remove(a.id);
        connections.remove(c.id);
        assert!(connections.is_empty());
    }
}
