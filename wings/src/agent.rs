//! The agent loop: connect, say hello, keep heartbeats flowing, and when the stream ends for
//! any reason, log the panel's reason once and reconnect with backoff — forever, until shut
//! down. A panel that is shutting down asks for an immediate reconnect.

use std::time::{Duration, Instant};

use std::sync::Arc;

use proto::node::v1::{Capacity, Heartbeat, Hello, NodeMessage, node_message, panel_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::supervisor::{Supervisor, Uplink};
use crate::{tls, unix_ms};

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

/// How a stream ended.
struct Ended {
    reason: String,
    /// The panel asked for an immediate reconnect (it is restarting).
    reconnect_now: bool,
    /// The stream had been up long enough to count as healthy.
    was_online: bool,
}

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
    loop {
        let _ = status.send(AgentStatus::Connecting);
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = session(&config, &supervisor, &mut uplink, &status) => ended,
        };
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

async fn session(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    uplink: &mut Uplink,
    status: &watch::Sender<AgentStatus>,
) -> Ended {
    let started = Instant::now();
    let failed = |reason: String| Ended {
        reason,
        reconnect_now: false,
        was_online: false,
    };
    let tls = match tls::load(config) {
        Ok(tls) => tls,
        Err(e) => return failed(format!("cannot load credentials: {e}")),
    };
    let (mut client, io_error) =
        match tls::connect(&config.panel_host, config.panel_port, tls).await {
            Ok(connected) => connected,
            Err(e) => return failed(e.to_string()),
        };
    let explain = |status: &tonic::Status| {
        let text = describe(status);
        match io_error.get() {
            Some(io) if !text.contains(&io) => format!("{text} ({io})"),
            _ => text,
        }
    };
    let (tx, rx) = mpsc::channel(256);
    // Statuses, console lines and usage queued while disconnected are older than this
    // snapshot (taken under the same lock as every report), which says where things are now;
    // acks and backup results are answers the panel still waits for: they follow the hello.
    let mut answers = Vec::new();
    let (servers, backlog) = supervisor.snapshot(|| {
        answers = carry_over(&mut uplink.events);
        while uplink.console.try_recv().is_ok() {}
        uplink.stats.take();
    });
    let hello = NodeMessage {
        kind: Some(node_message::Kind::Hello(Hello {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: hostname(),
            capacity: Some(capacity()),
            heartbeat_interval_secs: config.heartbeat.as_secs() as u32,
            servers,
        })),
    };
    // The channel is new and empty: this cannot fail for lack of room.
    let _ = tx.try_send(hello);
    let mut answers = answers.into_iter();
    let mut backlog = backlog.into_iter();
    let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(explain(&status)),
    };
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.tick().await;
    let mut seq = 0u64;
    let closed = |started: Instant| Ended {
        reason: "stream closed".into(),
        reconnect_now: false,
        was_online: started.elapsed() > Duration::from_secs(30),
    };
    loop {
        // In this order: a status goes up before the console lines that follow it (a
        // program's output after its `running`); console output, the one stream that can
        // flood, comes last and so never holds up heartbeats or commands.
        tokio::select! {
            biased;
            Some(message) = uplink.events.recv() => {
                if tx.send(message).await.is_err() {
                    return closed(started);
                }
            }
            () = uplink.stats.ready() => {
                for stats in uplink.stats.take() {
                    let message = NodeMessage { kind: Some(node_message::Kind::Stats(stats)) };
                    if tx.send(message).await.is_err() {
                        return closed(started);
                    }
                }
            }
            _ = ticker.tick() => {
                seq += 1;
                let beat = NodeMessage {
                    kind: Some(node_message::Kind::Heartbeat(Heartbeat {
                        seq,
                        sent_at_unix_ms: unix_ms(),
                    })),
                };
                if tx.send(beat).await.is_err() {
                    return closed(started);
                }
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => match message.kind {
                    Some(panel_message::Kind::Welcome(welcome)) => {
                        tracing::info!(node = %welcome.node_id, "connected to the panel");
                        let _ = status.send(AgentStatus::Online);
                        for message in answers.by_ref() {
                            if tx.send(message).await.is_err() {
                                return closed(started);
                            }
                        }
                        for line in backlog.by_ref() {
                            let message = NodeMessage { kind: Some(node_message::Kind::Console(line)) };
                            if tx.send(message).await.is_err() {
                                return closed(started);
                            }
                        }
                    }
                    Some(panel_message::Kind::Command(command)) => {
                        tracing::debug!(command = %command.id, server = %command.server_id, "command");
                        supervisor.handle(command);
                    }
                    None => {}
                },
                Ok(None) => {
                    return Ended { reason: "the panel closed the stream".into(), reconnect_now: false, was_online: true };
                }
                Err(status) => {
                    return Ended {
                        reason: explain(&status),
                        reconnect_now: status.code() == tonic::Code::Unavailable && status.message().starts_with("shutting_down"),
                        was_online: true,
                    };
                }
            },
            Some(message) = uplink.console.recv() => {
                if tx.send(message).await.is_err() {
                    return closed(started);
                }
            }
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
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&crate::error_chain(source));
    }
    text
}

fn capacity() -> Capacity {
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

fn hostname() -> String {
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
