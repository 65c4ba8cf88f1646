//! A tenant's files, through the node that runs the server: the bridge between the REST edge
//! (`http::files`) and the node channel's edge (`grpc::service`), so an edge itself.
//!
//! A request goes down the node's control stream as a `FileRequest` with a fresh id; the node
//! answers it on a `Files` stream it opens on its own connection for transfers (admitted like
//! every node connection, so the stream is the node's: [`Transfers::arrive`], called by the
//! gRPC service only for a request sent to that very node). Bytes then flow on that stream
//! under HTTP/2 flow control: the panel holds at most a few chunks per transfer
//! ([`DOWN_QUEUE`] each way, the HTTP/2 window up), whatever the file's size; and since the
//! transfers' connection is not the control stream's, a transfer that stalls can never hold
//! up heartbeats and commands.
//!
//! A node whose stream another replica holds is reached through that replica ([`route`]):
//! the request carries this replica's advertised address (`reply_to`) and the node opens the
//! stream here. A replica with no advertised address refuses such a request (409
//! `node_offline`, as when the node is offline).
//!
//! A node has at most [`MAX_PER_NODE`] transfers at once (more are refused, 503); a node that
//! does not open the stream within [`OPEN_TIMEOUT`], does not answer within
//! [`ANSWER_TIMEOUT`], or whose stream breaks before the last answer, ends the request with
//! [`Error::NodeGone`] (502 `node_gone`); a download whose next chunk does not come within
//! [`CHUNK_TIMEOUT`] is broken off, and so is one whose client does not take a chunk within
//! [`STALL`].

pub mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proto::node::v1::{
    FileDown, FileError, FileRequest, FileResult, FileUp, PanelMessage, file_request, file_up,
    panel_message,
};
use tokio::sync::{mpsc, oneshot};
use tonic::Streaming;

use crate::db::entities::server;
use crate::{AppState, Error, FileFailure};

/// How long a node has to open the stream of a request it was sent.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// File requests waiting for their stream at once, over all nodes (more are shed, 503).
pub const MAX_PENDING: usize = 1024;
/// Chunks queued per transfer: towards a node for an upload, towards the client for a download.
pub const DOWN_QUEUE: usize = 4;
/// Transfers of one node at once (file requests of every kind count, from sent to answered
/// or streamed to the end); the next is refused with 503 `unavailable`.
pub const MAX_PER_NODE: usize = 8;
/// File requests one server may have open at once, within its node's [`MAX_PER_NODE`]: one
/// tenant cannot hold every transfer of a node (the others' file routes would all be 503).
pub const MAX_PER_SERVER: usize = 4;
/// How long a download waits for its client to take the next chunk before the download is
/// reset (the REST connection closed, the node's stream dropped).
pub const STALL: Duration = Duration::from_secs(30);
/// `Retry-After` of a request refused for [`MAX_PER_NODE`].
const RETRY_AFTER_SECS: u64 = 5;
/// HTTP/2 flow-control window of a node connection's streams: what one transfer may have in
/// flight from the node.
pub const WINDOW: u32 = 2 << 20;
/// HTTP/2 flow-control window of a node connection: room for every stream's window of a
/// node's [`MAX_PER_NODE`] transfers, so transfers whose clients stopped reading can never
/// hold up the others (nor the answers of new requests) on the transfers' connection.
pub const CONNECTION_WINDOW: u32 = MAX_PER_NODE as u32 * WINDOW;
/// Largest HTTP/2 frame a node may send (a chunk travels in a frame or two).
pub const MAX_FRAME: u32 = 256 << 10;
/// How long a node may take to answer once it opened the stream (a large decompress is
/// slow; a node that never answers must not hold the request for ever).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a download may wait for the node's next chunk.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest chunk sent to a node (its messages stay well under the 4 MiB gRPC default).
pub const CHUNK: usize = 256 * 1024;

/// The two directions of one request's `Files` stream, and its place among the node's
/// transfers (given back when the channel is dropped).
pub struct Channel {
    /// What the node sends: answers and a read's bytes.
    pub up: Streaming<FileUp>,
    /// What goes to the node: a write's bytes.
    pub down: mpsc::Sender<FileDown>,
    /// Held, never read: dropping it gives the slot back.
    _slot: Option<Slot>,
}

impl Channel {
    /// A node's stream as the gRPC service receives it.
    pub fn new(up: Streaming<FileUp>, down: mpsc::Sender<FileDown>) -> Channel {
        Channel {
            up,
            down,
            _slot: None,
        }
    }
}

/// Transfers open per node.
type Active = Arc<Mutex<HashMap<String, usize>>>;

/// One of a node's [`MAX_PER_NODE`] transfers (and of its server's [`MAX_PER_SERVER`]), held
/// until dropped.
struct Slot {
    active: Active,
    /// The counts it holds one of: the node's, the server's.
    keys: [String; 2],
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = active.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    active.remove(key);
                }
            }
        }
    }
}

/// A request waiting for its node's stream, forgotten however `open` ends (a client that
/// hangs up included).
struct Waiting<'a> {
    transfers: &'a Transfers,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.transfers.forget(self.id);
    }
}

/// File requests sent to nodes whose stream has not arrived yet, and the transfers open per
/// node.
#[derive(Default)]
pub struct Transfers {
    pending: Mutex<HashMap<String, (String, oneshot::Sender<Channel>)>>,
    active: Active,
    /// This replica's advertised node-channel address, once bound (unset: none), and whether
    /// it was configured (`PANEL_GRPC_ADVERTISE`) rather than taken from the bound address.
    reply_to: OnceLock<(String, bool)>,
}

impl Transfers {
    /// Sets the `host:port` at which nodes held by other replicas reach this one (once, at
    /// start).
    pub fn advertise(&self, addr: String, configured: bool) {
        let _ = self.reply_to.set((addr, configured));
    }

    /// This replica's advertised address, if any.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.get().map(|(addr, _)| addr.as_str())
    }

    /// Where a node held here sends its `Files` stream: this replica's configured address
    /// (behind a load balancer, the node's own way to the panel may lead to another replica),
    /// else the connection its control stream came through (empty).
    fn reply_here(&self) -> String {
        match self.reply_to.get() {
            Some((addr, true)) => addr.clone(),
            _ => String::new(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, oneshot::Sender<Channel>)>> {
        // Entries are always whole; a panic elsewhere does not make them wrong.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node opened the stream for request `id`: hands it to the waiting request. False when
    /// no request of that id was sent to `node_id` (or it gave up waiting).
    pub fn arrive(&self, id: &str, node_id: &str, channel: Channel) -> bool {
        let mut pending = self.lock();
        match pending.get(id) {
            Some((node, _)) if node == node_id => {}
            _ => return false,
        }
        match pending.remove(id) {
            Some((_, waiter)) => waiter.send(channel).is_ok(),
            None => false,
        }
    }

    fn expect(&self, id: &str, node_id: &str) -> Result<oneshot::Receiver<Channel>, Error> {
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            return Err(Error::Unavailable(1));
        }
        let (tx, rx) = oneshot::channel();
        pending.insert(id.to_owned(), (node_id.to_owned(), tx));
        Ok(rx)
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// A transfer slot of `server_id` on `node_id`, or 503 when the node has [`MAX_PER_NODE`]
    /// or the server [`MAX_PER_SERVER`] open.
    fn slot(&self, node_id: &str, server_id: &str) -> Result<Slot, Error> {
        // Counts are changed whole; a panic elsewhere does not make them wrong.
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let keys = [node_id.to_owned(), format!("server:{server_id}")];
        let full = [MAX_PER_NODE, MAX_PER_SERVER]
            .iter()
            .zip(&keys)
            .any(|(cap, key)| active.get(key).copied().unwrap_or(0) >= *cap);
        if full {
            return Err(Error::Unavailable(RETRY_AFTER_SECS));
        }
        for key in &keys {
            *active.entry(key.clone()).or_insert(0) += 1;
        }
        Ok(Slot {
            active: self.active.clone(),
            keys,
        })
    }

    /// How many transfers `node_id` has open.
    pub fn active(&self, node_id: &str) -> usize {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.get(node_id).copied().unwrap_or(0)
    }
}

/// Sends `op` on `server`'s files to its node (through the replica holding its stream, when
/// that is another) and waits for the node's stream. A node that is not connected (or held
/// by another replica while this one advertises no address) is [`Error::NodeOffline`] (409);
/// one with [`MAX_PER_NODE`] transfers open, [`Error::Unavailable`] (503); a request too
/// large to route, 413; a node that does not answer, [`Error::NodeGone`].
pub async fn open(
    state: &AppState,
    server: &server::Model,
    op: file_request::Op,
) -> Result<Channel, Error> {
    let node_id = &server.node_id;
    let here = state.registry.is_online(node_id);
    let reply_to = match (here, state.transfers.reply_to()) {
        (true, _) => state.transfers.reply_here(),
        (false, Some(addr)) if state.nodes.link.is_online(node_id) => addr.to_owned(),
        _ => return Err(Error::NodeOffline(node_id.clone())),
    };
    let slot = state.transfers.slot(node_id, &server.id)?;
    let id = crate::tenancy::new_id();
    let request = FileRequest {
        id: id.clone(),
        server_id: server.id.clone(),
        op: Some(op),
        reply_to,
    };
    // Built before anything is sent: one too large is refused, never half sent.
    let note = match here {
        true => None,
        false => Some(route::note(node_id, &request)?),
    };
    let arrived = state.transfers.expect(&id, node_id)?;
    let _waiting = Waiting {
        transfers: &state.transfers,
        id: &id,
    };
    let sent = match note {
        None => {
            let message = PanelMessage {
                kind: Some(panel_message::Kind::File(request)),
            };
            state.registry.send(node_id, message).await
        }
        Some(note) => state.fleet.notify(route::FILES_CHANNEL, &note).await,
    };
    if !sent {
        return Err(Error::NodeGone);
    }
    match tokio::time::timeout(OPEN_TIMEOUT, arrived).await {
        Ok(Ok(channel)) => Ok(Channel {
            _slot: Some(slot),
            ..channel
        }),
        _ => Err(Error::NodeGone),
    }
}

/// The node's next answer, bounded and checked: its refusal as an error.
pub async fn answer(
    state: &AppState,
    up: &mut Streaming<FileUp>,
    max_entries: usize,
) -> Result<FileResult, Error> {
    match tokio::time::timeout(ANSWER_TIMEOUT, up.message()).await {
        Ok(Ok(Some(FileUp {
            kind: Some(file_up::Kind::Result(mut result)),
        }))) => {
            crate::grpc::bounds::file_result(&mut result, max_entries, &state.metrics);
            outcome(result)
        }
        _ => Err(Error::NodeGone),
    }
}

/// A node's answer as a result.
pub fn outcome(result: FileResult) -> Result<FileResult, Error> {
    let kind = match FileError::try_from(result.error).unwrap_or(FileError::Failed) {
        FileError::None => return Ok(result),
        FileError::InvalidPath => FileFailure::InvalidPath,
        FileError::NotFound => FileFailure::NotFound,
        FileError::Conflict => FileFailure::Conflict,
        FileError::TooLarge => FileFailure::TooLarge,
        FileError::Invalid => FileFailure::Invalid,
        FileError::Range => FileFailure::Range(result.message.parse().unwrap_or(0)),
        FileError::Failed => FileFailure::Failed,
    };
    let message = match kind {
        FileFailure::Range(size) => format!("the range is outside the file ({size} bytes)"),
        _ => result.message,
    };
    Err(Error::File { kind, message })
}

/// Checks a path before it is sent: at most 4,096 bytes, no NUL, absolute (the node checks
/// it again, and resolves it).
pub fn check_path(path: &str) -> Result<(), Error> {
    let invalid = |message: &str| Error::File {
        kind: FileFailure::InvalidPath,
        message: message.to_owned(),
    };
    if path.len() > 4096 {
        return Err(invalid("the path is longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(invalid("the path holds a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(invalid(
            "the path must be absolute from the server's root (start with /)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_before_they_are_sent() {
        assert!(check_path("/a/b").is_ok());
        for bad in ["a", "", "/a\0b"] {
            assert!(matches!(
                check_path(bad),
                Err(Error::File {
                    kind: FileFailure::InvalidPath,
                    ..
                })
            ));
        }
        assert!(check_path(&format!("/{}", "a".repeat(4096))).is_err());
    }

    #[test]
    fn a_node_has_at_most_its_cap_of_transfers_and_a_server_its_share() {
        let transfers = Transfers::default();
        // One server takes its share and no more; others fill the node's cap.
        let mut slots: Vec<Slot> = (0..MAX_PER_SERVER)
            .map(|_| transfers.slot("n1", "s1").unwrap())
            .collect();
        assert!(matches!(
            transfers.slot("n1", "s1"),
            Err(Error::Unavailable(_))
        ));
        slots.extend(
            (MAX_PER_SERVER..MAX_PER_NODE)
                .map(|i| transfers.slot("n1", &format!("s{}", i + 2)).unwrap()),
        );
        assert!(matches!(
            transfers.slot("n1", "s9"),
            Err(Error::Unavailable(_))
        ));
        assert!(
            matches!(transfers.slot("n2", "s1"), Err(Error::Unavailable(_))),
            "a server's share is its own, whichever node is asked"
        );
        let other = transfers.slot("n2", "t1").unwrap();
        assert_eq!(transfers.active("n1"), MAX_PER_NODE);
        drop(slots);
        assert_eq!(transfers.active("n1"), 0);
        assert!(transfers.slot("n1", "s1").is_ok());
        drop(other);
        assert_eq!(transfers.active("n2"), 0);
    }

    #[test]
    fn node_answers_map_to_the_contract() {
        let refusal = |error: FileError, message: &str| FileResult {
            error: error as i32,
            message: message.into(),
            ..FileResult::default()
        };
        assert!(outcome(FileResult::default()).is_ok());
        assert!(matches!(
            outcome(refusal(FileError::Range, "42")),
            Err(Error::File {
                kind: FileFailure::Range(42),
                ..
            })
        ));
        assert!(matches!(
            outcome(FileResult {
                error: 99,
                ..FileResult::default()
            }),
            Err(Error::File {
                kind: FileFailure::Failed,
                ..
            })
        ));
    }
}
