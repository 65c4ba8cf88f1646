//! The agent loop: connect, say hello, keep heartbeats flowing (see [`crate::stream`]), and when
//! the stream ends for any reason, log the panel's reason once and reconnect with backoff —
//! forever, until shut down. A panel that is shutting down asks for an immediate reconnect. A
//! renewed certificate hands over to a stream already open on it (make before break: the node
//! is never offline for a renewal).

use std::time::{Duration, Instant};

use std::sync::Arc;

use proto::node::v1::{Capacity, NodeMessage, node_message};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::renew::Renewal;
use crate::stream;
use crate::supervisor::{Supervisor, Uplink};

/// What the agent is doing, for `wings` logs and for tests that embed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentStatus {
    /// Dialling the panel.
    Connecting,
    /// The panel welcomed us; heartbeats are flowing.
    Online,
    /// The last attempt or stream ended; waiting before the next one.
    Retrying {
        /// Why, as the panel or the network said it.
        reason: String,
    },
}

/// How long after the panel announced its restart Wings keeps retrying every ~0.2 s before
/// falling back to exponential backoff: long enough for a restart, short enough that a fleet
/// does not hammer a panel that stays down.
const PANEL_RESTART_WINDOW: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled, publishing progress on `status`; `supervisor` runs the
/// servers and `uplink` carries what they report.
pub async fn run(
    config: Config,
    supervisor: Arc<Supervisor>,
    mut uplink: Uplink,
    status: watch::Sender<AgentStatus>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    // After the panel said it is restarting: until then, retry on a short flat schedule, so
    // the node is back within a fraction of a second of the panel, not a backoff step later.
    let mut restart_window: Option<Instant> = None;
    let mut renewal = Renewal::default();
    let mut handover = None;
    // Which of the listed panels (replicas) this attempt dials: the next one after every
    // ended stream, so a replica that went away is not dialled again and again.
    let mut panel = 0;
    loop {
        let config = config.at_panel(panel);
        let ended = match handover.take() {
            // A stream already open on the renewed certificate: go on on it at once.
            Some(opened) => tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = stream::pump(&config, &supervisor, &mut uplink, &status, &mut renewal, opened) => ended,
            },
            None => {
                let _ = status.send(AgentStatus::Connecting);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ended = stream::session(&config, &supervisor, &mut uplink, &status, &mut renewal) => ended,
                }
            }
        };
        if let Some(opened) = ended.handover {
            tracing::info!("renewed certificate in use; the old connection is closed");
            handover = Some(opened);
            continue;
        }
        panel = panel.wrapping_add(1);
        if ended.was_online {
            backoff.reset();
        }
        if ended.reconnect_now {
            backoff.reset();
            restart_window = Some(Instant::now() + PANEL_RESTART_WINDOW);
        } else if ended.was_online {
            restart_window = None;
        }
        let restarting = restart_window.is_some_and(|until| Instant::now() < until);
        let delay = if restarting {
            // Jittered, so a fleet told together does not arrive together.
            Duration::from_millis(100 + u64::from(rand::random::<u8>()))
        } else {
            backoff.next_delay()
        };
        if restarting && !ended.reconnect_now {
            tracing::debug!(reason = %ended.reason, "the panel is restarting; retrying");
        } else {
            tracing::warn!(reason = %ended.reason, retry_in_ms = delay.as_millis() as u64, "not connected to the panel");
        }
        let _ = status.send(AgentStatus::Retrying {
            reason: ended.reason,
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Empties `events` of what a new stream's snapshot supersedes (statuses), keeping, in order,
/// the answers the panel still waits for: command acks and backup results.
pub fn carry_over(events: &mut mpsc::UnboundedReceiver<NodeMessage>) -> Vec<NodeMessage> {
    let mut kept = Vec::new();
    while let Ok(message) = events.try_recv() {
        if matches!(
            message.kind,
            Some(node_message::Kind::Ack(_) | node_message::Kind::Backup(_))
        ) {
            kept.push(message);
        }
    }
    kept
}

/// A status with its whole source chain (TLS alerts hide in the sources).
pub(crate) fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&crate::error_chain(source));
    }
    text
}

pub(crate) fn capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_bytes = <procfs::Meminfo as procfs::Current>::current().map_or(0, |m| m.mem_total);
    Capacity {
        cpus,
        memory_bytes,
        disk_bytes: 0,
    }
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::node::v1::{BackupResult, CommandAck, ServerStatus};

    #[test]
    fn answers_queued_while_away_follow_the_hello_and_statuses_do_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let kinds = [
            node_message::Kind::Status(ServerStatus::default()),
            node_message::Kind::Ack(CommandAck {
                command_id: "a".into(),
                ..CommandAck::default()
            }),
            node_message::Kind::Status(ServerStatus::default()),
            node_message::Kind::Backup(BackupResult::default()),
            node_message::Kind::Ack(CommandAck {
                command_id: "b".into(),
                ..CommandAck::default()
            }),
        ];
        for kind in kinds {
            tx.send(NodeMessage { kind: Some(kind) }).unwrap();
        }
        let kept = carry_over(&mut rx);
        let ids: Vec<String> = kept
            .iter()
            .map(|m| match &m.kind {
                Some(node_message::Kind::Ack(a)) => a.command_id.clone(),
                Some(node_message::Kind::Backup(_)) => "backup".into(),
                other => panic!("{other:?} kept"),
            })
            .collect();
        assert_eq!(ids, ["a", "backup", "b"]);
        assert!(rx.try_recv().is_err(), "the queue is empty");
    }
}
