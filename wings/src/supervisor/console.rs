//! A server's console: stdout and stderr read line by line into the slot's ring buffer (the
//! last [`RING_LINES`]) and up the stream, lines for its stdin, and the backlog a new stream
//! gets.

use std::pin::Pin;
use std::sync::Arc;

use proto::node::v1::{ConsoleLine, ConsoleStream, NodeMessage, ServerStatus, node_message};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::Supervisor;
use super::launch::Launch;
use super::slot::Line;
use crate::Error;

/// Console lines kept per server.
pub const RING_LINES: usize = 1000;
/// Console lines of each server sent to the panel on a new stream.
const BACKLOG_LINES: usize = 200;
/// Longest console line; longer output is split.
const MAX_LINE_BYTES: usize = 4096;
/// Lines waiting for a server's stdin.
const STDIN_LINES: usize = 64;

impl<L: Launch> Supervisor<L> {
    /// Every server's state and the tail of its console, for a new stream. `before` runs
    /// under the same lock, so nothing reported after the snapshot is also in it.
    pub fn snapshot(&self, before: impl FnOnce()) -> (Vec<ServerStatus>, Vec<ConsoleLine>) {
        let slots = self.lock();
        before();
        let mut statuses = Vec::with_capacity(slots.len());
        let mut backlog = Vec::new();
        for (id, entry) in slots.iter() {
            statuses.push(entry.slot.status(id));
            let ring = &entry.slot.ring;
            let skip = ring.len().saturating_sub(BACKLOG_LINES);
            backlog.extend(ring.iter().skip(skip).map(|line| ConsoleLine {
                server_id: id.clone(),
                line: line.text.clone(),
                stream: line.stream as i32,
                at_unix_ms: line.at_unix_ms,
                backlog: true,
            }));
        }
        (statuses, backlog)
    }

    /// The last console lines of a server (tests and diagnostics).
    pub fn console_tail(&self, id: &str) -> Vec<String> {
        self.lock()
            .get(id)
            .map(|e| e.slot.ring.iter().map(|l| l.text.clone()).collect())
            .unwrap_or_default()
    }

    /// Queues `line` for the server's stdin.
    pub(super) fn console_input(&self, id: &str, line: String) -> Result<(), Error> {
        if line.contains(['\n', '\r']) {
            return Err(Error::State("a console line cannot hold a line break"));
        }
        let stdin = self.lock().get(id).and_then(|e| e.stdin.clone());
        let stdin = stdin.ok_or(Error::State("the server is not running"))?;
        stdin
            .try_send(line)
            .map_err(|_| Error::State("the process is not reading its input"))
    }

    /// Reads `pipe` line by line into the server's console until it closes.
    pub(super) async fn read_lines(
        self: Arc<Self>,
        id: String,
        stream: ConsoleStream,
        pipe: Pin<Box<dyn AsyncRead + Send>>,
    ) {
        let mut reader = BufReader::new(pipe);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut buffer)
                .await;
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while buffer.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buffer.pop();
            }
            let line = String::from_utf8_lossy(&buffer).into_owned();
            self.console_line(&id, stream, line);
        }
    }

    fn console_line(&self, id: &str, stream: ConsoleStream, text: String) {
        let at_unix_ms = crate::unix_ms();
        let mut slots = self.lock();
        let Some(entry) = slots.get_mut(id) else {
            return;
        };
        entry.slot.keep_line(Line {
            stream,
            text: text.clone(),
            at_unix_ms,
        });
        let message = NodeMessage {
            kind: Some(node_message::Kind::Console(ConsoleLine {
                server_id: id.to_owned(),
                line: text,
                stream: stream as i32,
                at_unix_ms,
                backlog: false,
            })),
        };
        // Full means the panel is not keeping up: the ring buffer keeps the line.
        let _ = self.console.try_send(message);
    }
}

/// A writer task for a process's stdin: lines sent to the returned queue are written with a
/// line break, until the process stops reading.
pub(super) fn stdin_writer(mut pipe: Pin<Box<dyn AsyncWrite + Send>>) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(STDIN_LINES);
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let written = async {
                pipe.write_all(line.as_bytes()).await?;
                pipe.write_all(b"\n").await?;
                pipe.flush().await
            };
            if written.await.is_err() {
                return;
            }
        }
    });
    tx
}
