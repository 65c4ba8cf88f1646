//! Simulated Wings on a raw node stream: obeys every command at once, reporting the state it
//! leads to (and a made or restored backup), answers every file request as done on an empty
//! server (on a `Files` stream, as Wings does), and keeps heartbeating. For tests and load runs that need many nodes or a node
//! that misbehaves (one that never acks). [`obey_remembering`] runs one node over several
//! streams (panel replicas) with Wings' rule: a command id runs once, a repeat is re-acked.

use std::sync::{Arc, Mutex};

use proto::node::v1::{
    BackupOperation, BackupResult, CommandAck, NodeMessage, ServerState, ServerStatus, command,
    node_message,
};

use crate::{NodeClient, Request};

/// Runs `client` as an obedient node until its stream ends, heartbeating every `beat`. With
/// `ack` false it takes commands and never answers them.
pub fn obey(
    client: NodeClient,
    ack: bool,
    beat: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    run(client, ack, beat, None)
}

/// What one simulated node keeps across its streams, as Wings keeps its recent command ids.
#[derive(Debug, Default)]
pub struct Memory {
    /// Every command received: (the stream's label, the command id).
    pub deliveries: Vec<(String, String)>,
    /// The command ids run, each once.
    pub executed: Vec<String>,
}

/// [`obey`] on one stream of a node whose `memory` spans its streams: every delivery is
/// logged under `label`, and a command id already run is acked again without running.
pub fn obey_remembering(
    client: NodeClient,
    beat: std::time::Duration,
    label: &str,
    memory: Arc<Mutex<Memory>>,
) -> tokio::task::JoinHandle<()> {
    run(client, true, beat, Some((label.to_owned(), memory)))
}

fn run(
    mut client: NodeClient,
    ack: bool,
    beat: std::time::Duration,
    memory: Option<(String, Arc<Mutex<Memory>>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0;
        let mut beat = tokio::time::interval(beat);
        loop {
            let command = tokio::select! {
                _ = beat.tick() => {
                    seq += 1;
                    if !client.heartbeat(seq).await {
                        return;
                    }
                    continue;
                }
                request = client.next_request() => match request {
                    Some(Request::Command(command)) => command,
                    Some(Request::File(request)) => {
                        if ack {
                            tokio::spawn(answer_file(client.client.clone(), request));
                        }
                        continue;
                    }
                    None => return,
                },
            };
            if !ack {
                continue;
            }
            let repeat = memory.as_ref().is_some_and(|(label, memory)| {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                memory.deliveries.push((label.clone(), command.id.clone()));
                let repeat = memory.executed.contains(&command.id);
                if !repeat {
                    memory.executed.push(command.id.clone());
                }
                repeat
            });
            let state = match &command.action {
                _ if repeat => None,
                Some(
                    command::Action::Install(_)
                    | command::Action::Stop(_)
                    | command::Action::Kill(_),
                ) => Some(ServerState::Offline),
                Some(command::Action::Start(_) | command::Action::Restart(_)) => {
                    Some(ServerState::Running)
                }
                _ => None,
            };
            if let Some(state) = state {
                let status = NodeMessage {
                    kind: Some(node_message::Kind::Status(ServerStatus {
                        server_id: command.server_id.clone(),
                        state: state as i32,
                        reason: String::new(),
                        exit_code: None,
                        at_unix_ms: 0,
                    })),
                };
                if !client.send(status).await {
                    return;
                }
            }
            let result = match &command.action {
                _ if repeat => None,
                Some(command::Action::Backup(b)) => {
                    Some((b.backup_id.clone(), BackupOperation::Create))
                }
                Some(command::Action::Restore(r)) => {
                    Some((r.backup_id.clone(), BackupOperation::Restore))
                }
                _ => None,
            };
            let server_id = command.server_id.clone();
            let ack = NodeMessage {
                kind: Some(node_message::Kind::Ack(CommandAck {
                    command_id: command.id,
                    ok: true,
                    error: String::new(),
                })),
            };
            if !client.send(ack).await {
                return;
            }
            if let Some((backup_id, operation)) = result {
                let done = NodeMessage {
                    kind: Some(node_message::Kind::Backup(BackupResult {
                        server_id,
                        backup_id,
                        operation: operation as i32,
                        ok: true,
                        error: String::new(),
                        size_bytes: 1,
                        sha256: "0".repeat(64),
                    })),
                };
                if !client.send(done).await {
                    return;
                }
            }
        }
    })
}

/// Answers a file request as done: an empty listing, an empty file, an upload taken whole.
async fn answer_file(
    mut client: proto::node::v1::node_control_client::NodeControlClient<tonic::transport::Channel>,
    request: proto::node::v1::FileRequest,
) {
    use proto::node::v1::{FileEnd, FileResult, FileUp, file_down, file_request, file_up};
    let up = |kind| FileUp { kind: Some(kind) };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx.try_send(up(file_up::Kind::Open(request.id)));
    let Ok(response) = client
        .files(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut down = response.into_inner();
    let etag = "0".repeat(64);
    match request.op {
        Some(file_request::Op::Read(_)) => {
            let header = FileResult {
                etag,
                ..FileResult::default()
            };
            let _ = tx.send(up(file_up::Kind::Result(header))).await;
            let _ = tx.send(up(file_up::Kind::End(FileEnd {}))).await;
        }
        Some(file_request::Op::Write(_)) => {
            let _ = tx
                .send(up(file_up::Kind::Result(FileResult::default())))
                .await;
            while let Ok(Some(message)) = down.message().await {
                if matches!(message.kind, Some(file_down::Kind::End(_))) {
                    break;
                }
            }
            let done = FileResult {
                created: true,
                etag,
                ..FileResult::default()
            };
            let _ = tx.send(up(file_up::Kind::Result(done))).await;
        }
        _ => {
            let _ = tx
                .send(up(file_up::Kind::Result(FileResult::default())))
                .await;
        }
    }
    drop(tx);
    while let Ok(Some(_)) = down.message().await {}
}
