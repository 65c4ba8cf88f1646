//! File requests across replicas: a replica that does not hold a node's stream hands the
//! `FileRequest` to the one that does with a note on [`FILES_CHANNEL`] (PostgreSQL `NOTIFY`,
//! as commands are routed: [`crate::servers::routing`]). The request names this replica's
//! advertised node-channel address in `reply_to`, so the node opens the request's `Files`
//! stream here, where [`super::Transfers::arrive`] takes it as for a request sent directly.
//!
//! A note carries one request and nothing else: the holder decodes it as a `FileRequest`
//! and sends it down the node's stream only while it is the node's current holder (fenced as
//! commands are, [`crate::nodes::Fleet::send_file`]). A note is bounded by PostgreSQL's
//! 8000-byte payload; a request too large for it (very long paths) is refused with 413.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use proto::node::v1::FileRequest;
use serde::{Deserialize, Serialize};

use crate::nodes::NodeLink;
use crate::{AppState, Error, FileFailure};

pub use crate::nodes::fleet::FILES_CHANNEL;

/// The largest note PostgreSQL takes (its payload must be shorter than 8000 bytes).
pub const MAX_NOTE: usize = 7999;

/// The note that hands one file request to the holder of its node.
#[derive(Debug, Serialize, Deserialize)]
struct Note {
    node: String,
    /// The encoded `FileRequest`, base64.
    request: String,
}

/// The note for `request` to `node_id`, or 413 when it does not fit in a note.
pub fn note(node_id: &str, request: &FileRequest) -> Result<String, Error> {
    let note = Note {
        node: node_id.to_owned(),
        request: STANDARD.encode(request.encode_to_vec()),
    };
    let text = serde_json::to_string(&note)
        .map_err(|e| Error::internal(format!("cannot encode a file note: {e}")))?;
    if text.len() > MAX_NOTE {
        return Err(Error::File {
            kind: FileFailure::TooLarge,
            message: format!(
                "this file request is too large ({} bytes encoded, at most {MAX_NOTE}) to be \
                 passed to the panel replica that holds the node; shorten its paths",
                text.len()
            ),
        });
    }
    Ok(text)
}

/// A note on [`FILES_CHANNEL`]: when this replica is the node's current holder, the request
/// (and only a `FileRequest`) goes down the node's stream. Other replicas ignore it.
pub async fn on_note(state: &AppState, note: &str) {
    let Some((node, request)) = decode(note) else {
        tracing::debug!("ignoring a malformed file note");
        return;
    };
    if !state.fleet.holds(&node) {
        return;
    }
    let id = request.id.clone();
    if state.fleet.send_file(&node, request).await {
        tracing::debug!(request = %id, %node, "file request sent for another replica");
    } else {
        tracing::debug!(request = %id, %node, "file request for another replica not sent");
    }
}

/// A note's node and request; `None` unless it is a note of [`note`]'s with a `reply_to`
/// (a request without one would be answered to this replica, which did not ask).
fn decode(note: &str) -> Option<(String, FileRequest)> {
    let note: Note = serde_json::from_str(note).ok()?;
    let bytes = STANDARD.decode(note.request).ok()?;
    let request = FileRequest::decode(bytes.as_slice()).ok()?;
    (!request.reply_to.is_empty()).then_some((note.node, request))
}

#[cfg(test)]
mod tests {
    use proto::node::v1::{FileMkdir, FileRename, file_request::Op};

    use super::*;

    fn request(op: Op, reply_to: &str) -> FileRequest {
        FileRequest {
            id: "r1".into(),
            server_id: "s1".into(),
            op: Some(op),
            reply_to: reply_to.into(),
        }
    }

    #[test]
    fn a_request_round_trips_within_postgres_bound() {
        let sent = request(
            Op::Mkdir(FileMkdir {
                path: format!("/{}", "a".repeat(4000)),
            }),
            "10.0.0.2:3001",
        );
        let text = note("node-1", &sent).unwrap();
        assert!(text.len() <= MAX_NOTE);
        let (node, got) = decode(&text).unwrap();
        assert_eq!(node, "node-1");
        assert_eq!(got, sent);
    }

    #[test]
    fn a_request_too_large_for_a_note_is_413_and_odd_notes_are_ignored() {
        let path = format!("/{}", "a".repeat(4095));
        let big = request(
            Op::Rename(FileRename {
                from: path.clone(),
                to: path,
            }),
            "10.0.0.2:3001",
        );
        assert!(matches!(
            note("node-1", &big),
            Err(Error::File {
                kind: FileFailure::TooLarge,
                ..
            })
        ));
        let unrouted = request(Op::Mkdir(FileMkdir { path: "/a".into() }), "");
        assert!(decode(&note("node-1", &unrouted).unwrap()).is_none());
        assert!(decode("{\"node\":\"n\",\"request\":\"!!\"}").is_none());
        assert!(decode("not json").is_none());
    }
}
