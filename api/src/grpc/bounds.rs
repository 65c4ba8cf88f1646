//! Bounds on what an admitted node sends, applied before anything of it is kept or passed on.
//!
//! A node is authenticated, not trusted: its console lines are kept (200 per server, and in a
//! 1,024-event broadcast), its `Hello` inventory drives database work, and its ack, status
//! and backup strings land in rows. So every message is cut to size here first: the whole
//! message by tonic's decoder ([`MAX_MESSAGE_BYTES`]; a larger one ends the stream), console
//! lines to [`MAX_CONSOLE_LINE_BYTES`] (marked `truncated` for subscribers), the `Hello`
//! inventory to [`MAX_HELLO_SERVERS`] entries, free text to [`MAX_TEXT_BYTES`] and identifiers
//! to [`MAX_ID_BYTES`]. Every cut counts in `mamba_node_input_cut_total{what}`.

use proto::node::v1::{FileResult, NodeMessage, ServerStatus, node_message};

use crate::metrics::Metrics;

/// Largest message a node may send (tonic's default would be 4 MiB). A full `Hello` of
/// [`MAX_HELLO_SERVERS`] servers with short reasons stays well under it.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Longest console line kept; longer ones are cut and marked truncated.
pub const MAX_CONSOLE_LINE_BYTES: usize = 16 * 1024;
/// Most servers a `Hello` may report (a node has at most 10,000 ports, one per server).
pub const MAX_HELLO_SERVERS: usize = 10_000;
/// Longest free text kept: ack errors, status reasons, backup errors, version, host name.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest identifier kept: server, command and backup ids (UUIDs), digests.
pub const MAX_ID_BYTES: usize = 128;
/// Longest file name kept (the kernel's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// What was cut: the `what` label of `mamba_node_input_cut_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A message over [`MAX_MESSAGE_BYTES`] (the stream ends).
    Message,
    /// `Hello` entries past [`MAX_HELLO_SERVERS`] (counted per entry).
    HelloServers,
    /// A console line over [`MAX_CONSOLE_LINE_BYTES`].
    ConsoleLine,
    /// A string over [`MAX_TEXT_BYTES`] or [`MAX_ID_BYTES`].
    Text,
}

impl Cut {
    /// Every kind, so each is exported (at 0) before it first happens.
    pub const ALL: [Cut; 4] = [Cut::Message, Cut::HelloServers, Cut::ConsoleLine, Cut::Text];

    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            Cut::Message => "message",
            Cut::HelloServers => "hello_servers",
            Cut::ConsoleLine => "console_line",
            Cut::Text => "text",
        }
    }
}

/// Cuts `message` to size in place and counts each cut; returns whether a console line was
/// truncated (so subscribers see it marked).
pub fn apply(message: &mut NodeMessage, metrics: &Metrics) -> bool {
    let mut cuts = Counter::default();
    let mut console_truncated = false;
    match &mut message.kind {
        Some(node_message::Kind::Hello(hello)) => {
            cuts.text(&mut hello.version, MAX_TEXT_BYTES);
            cuts.text(&mut hello.hostname, MAX_TEXT_BYTES);
            if hello.servers.len() > MAX_HELLO_SERVERS {
                cuts.hello_servers += (hello.servers.len() - MAX_HELLO_SERVERS) as u64;
                hello.servers.truncate(MAX_HELLO_SERVERS);
            }
            for status in &mut hello.servers {
                cuts.status(status);
            }
        }
        Some(node_message::Kind::Status(status)) => cuts.status(status),
        Some(node_message::Kind::Ack(ack)) => {
            cuts.text(&mut ack.command_id, MAX_ID_BYTES);
            cuts.text(&mut ack.error, MAX_TEXT_BYTES);
        }
        Some(node_message::Kind::Console(line)) => {
            cuts.text(&mut line.server_id, MAX_ID_BYTES);
            console_truncated = cut(&mut line.line, MAX_CONSOLE_LINE_BYTES);
        }
        Some(node_message::Kind::Stats(stats)) => cuts.text(&mut stats.server_id, MAX_ID_BYTES),
        Some(node_message::Kind::Backup(result)) => {
            cuts.text(&mut result.server_id, MAX_ID_BYTES);
            cuts.text(&mut result.backup_id, MAX_ID_BYTES);
            cuts.text(&mut result.sha256, MAX_ID_BYTES);
            cuts.text(&mut result.error, MAX_TEXT_BYTES);
        }
        // A CSR is never cut (that would only corrupt it): `security::pki::check_csr` refuses
        // one over 8 KiB whole.
        Some(node_message::Kind::Heartbeat(_) | node_message::Kind::Renew(_)) | None => {}
    }
    let count = |what: Cut, n: u64| {
        if n > 0 {
            metrics
                .node_input_cut
                .with_label_values(&[what.label()])
                .inc_by(n);
        }
    };
    count(Cut::Text, cuts.text);
    count(Cut::HelloServers, cuts.hello_servers);
    count(Cut::ConsoleLine, u64::from(console_truncated));
    console_truncated
}

/// Cuts a node's answer to a file request to size in place, counting each cut: at most
/// `max_entries` entries (what was asked for), names at most 255 bytes, the ETag and cursor as
/// identifiers, the message as free text.
pub fn file_result(result: &mut FileResult, max_entries: usize, metrics: &Metrics) {
    let mut cuts = Counter::default();
    cuts.text(&mut result.message, MAX_TEXT_BYTES);
    cuts.text(&mut result.etag, MAX_ID_BYTES);
    cuts.text(&mut result.next_cursor, MAX_NAME_BYTES);
    if result.entries.len() > max_entries {
        cuts.text += (result.entries.len() - max_entries) as u64;
        result.entries.truncate(max_entries);
    }
    for entry in &mut result.entries {
        cuts.text(&mut entry.name, MAX_NAME_BYTES);
    }
    if cuts.text > 0 {
        metrics
            .node_input_cut
            .with_label_values(&[Cut::Text.label()])
            .inc_by(cuts.text);
    }
}

/// Whether `status` is tonic's refusal of a message over the decoding limit; if so, counts it
/// and returns the status the node is told.
pub fn oversized(status: &tonic::Status, metrics: &Metrics) -> Option<tonic::Status> {
    let too_large = status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large");
    if !too_large {
        return None;
    }
    metrics
        .node_input_cut
        .with_label_values(&[Cut::Message.label()])
        .inc();
    Some(tonic::Status::resource_exhausted(format!(
        "message_too_large: a node message may be at most {MAX_MESSAGE_BYTES} bytes"
    )))
}

/// Cuts pending counts, by kind.
#[derive(Default)]
struct Counter {
    text: u64,
    hello_servers: u64,
}

impl Counter {
    fn text(&mut self, s: &mut String, max: usize) {
        self.text += u64::from(cut(s, max));
    }

    fn status(&mut self, status: &mut ServerStatus) {
        self.text(&mut status.server_id, MAX_ID_BYTES);
        self.text(&mut status.reason, MAX_TEXT_BYTES);
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary; whether it cut anything.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let end = s.floor_char_boundary(max);
    s.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::node::v1::{CommandAck, ConsoleLine, Hello};

    #[test]
    fn strings_are_cut_at_character_boundaries() {
        let mut s = "é".repeat(10);
        assert!(cut(&mut s, 5));
        assert_eq!(s, "éé");
        let mut short = "abc".to_owned();
        assert!(!cut(&mut short, 3));
    }

    #[test]
    fn every_kind_of_cut_is_counted() {
        let metrics = Metrics::new();
        let mut hello = NodeMessage {
            kind: Some(node_message::Kind::Hello(Hello {
                hostname: "h".repeat(MAX_TEXT_BYTES + 1),
                servers: vec![ServerStatus::default(); MAX_HELLO_SERVERS + 3],
                ..Default::default()
            })),
        };
        assert!(!apply(&mut hello, &metrics));
        let mut line = NodeMessage {
            kind: Some(node_message::Kind::Console(ConsoleLine {
                line: "x".repeat(MAX_CONSOLE_LINE_BYTES + 1),
                ..Default::default()
            })),
        };
        assert!(apply(&mut line, &metrics));
        let mut ack = NodeMessage {
            kind: Some(node_message::Kind::Ack(CommandAck {
                command_id: "c".repeat(MAX_ID_BYTES + 1),
                ok: false,
                error: "e".repeat(MAX_TEXT_BYTES * 100),
            })),
        };
        apply(&mut ack, &metrics);
        let get = |what: Cut| {
            metrics
                .node_input_cut
                .with_label_values(&[what.label()])
                .get()
        };
        assert_eq!(get(Cut::HelloServers), 3);
        assert_eq!(get(Cut::ConsoleLine), 1);
        assert_eq!(get(Cut::Text), 3);
        let Some(node_message::Kind::Ack(ack)) = ack.kind else {
            panic!("an ack");
        };
        assert_eq!(ack.error.len(), MAX_TEXT_BYTES);
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        );
        assert!(oversized(&status, &metrics).is_some());
        assert!(oversized(&tonic::Status::cancelled("x"), &metrics).is_none());
        assert_eq!(get(Cut::Message), 1);
    }
}
