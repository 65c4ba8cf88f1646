//! The hub's publishing task: what this replica's servers do goes to Redis in order, a
//! pipeline at a time, for the other replicas (the channel) and for later subscribers (the
//! console backlog).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use security::redis_link::Conn;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CALL_TIMEOUT, Shared};
use crate::servers::events::CONSOLE_MIRROR_LINES;

/// How long a console backlog outlives its last line.
const CONSOLE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Events sent to Redis in one pipeline.
const BATCH: usize = 256;
/// The published form of a removed server.
pub(super) const REMOVED: &str = "-";

/// What the publishing task sends.
pub(super) enum Out {
    Event {
        server: String,
        payload: String,
        console: bool,
    },
    Clear(String),
    Remove(String),
}

impl Out {
    /// The server it is about.
    pub(super) fn server(&self) -> &str {
        match self {
            Out::Event { server, .. } | Out::Clear(server) | Out::Remove(server) => server,
        }
    }
}

/// Publishes queued events in order, a pipeline at a time: on one server one pipeline for
/// the batch, on a cluster one per server (its channel and backlog share its slot), sent at
/// once; each server's events stay in order either way.
pub(super) async fn publish(
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_warning = None::<tokio::time::Instant>;
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let Some(conn) = shared.conn.get() else {
            shared.metrics.events_fanout_lost.inc_by(n as u64);
            batch.clear();
            continue;
        };
        let per_server = matches!(conn, Conn::Cluster(_));
        let mut pipes: Vec<(redis::Pipeline, u64)> = Vec::new();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        for out in batch.drain(..) {
            let key = if per_server { out.server() } else { "" };
            let index = *index_of.entry(key.to_owned()).or_insert_with(|| {
                pipes.push((redis::pipe(), 0));
                pipes.len() - 1
            });
            let (pipe, events) = &mut pipes[index];
            *events += 1;
            add_to(&shared, pipe, out);
        }
        let sends = pipes.into_iter().map(|(pipe, events)| {
            let mut conn = conn.clone();
            async move {
                let sent = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn));
                match sent.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((events, e.to_string())),
                    Err(_) => Some((events, "timed out".to_owned())),
                }
            }
        });
        let failed: Vec<(u64, String)> = futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        let Some((_, error)) = failed.first() else {
            continue;
        };
        let lost: u64 = failed.iter().map(|(events, _)| events).sum();
        shared.metrics.events_fanout_lost.inc_by(lost);
        if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            last_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                events = lost,
                %error,
                "REDIS_URL: cannot publish server events; other replicas' streams miss them"
            );
        }
    }
}

/// Adds what publishing `out` takes to `pipe`.
fn add_to(shared: &Shared, pipe: &mut redis::Pipeline, out: Out) {
    match out {
        Out::Event {
            server,
            payload,
            console,
        } => {
            // The backlog first: a replica that hears of a line finds it there.
            if console {
                let key = shared.console_key(&server);
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg(CONSOLE_MIRROR_LINES)
                    .arg("*")
                    .arg("m")
                    .arg(&payload)
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(CONSOLE_TTL.as_millis() as u64)
                    .ignore();
            }
            pipe.cmd("PUBLISH")
                .arg(shared.channel(&server))
                .arg(&payload)
                .ignore();
        }
        Out::Clear(server) => {
            // XTRIM first: the cluster client routes a pipeline by its first command naming a
            // key of one slot, and DEL (which may name keys of many) does not count.
            let key = shared.console_key(&server);
            pipe.cmd("XTRIM").arg(&key).arg("MAXLEN").arg(0).ignore();
            pipe.cmd("DEL").arg(&key).ignore();
        }
        Out::Remove(server) => {
            pipe.cmd("DEL").arg(shared.console_key(&server)).ignore();
            pipe.cmd("PUBLISH")
                .arg(shared.channel(&server))
                .arg(REMOVED)
                .ignore();
        }
    }
}
