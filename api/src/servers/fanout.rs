//! The event hub across replicas, through Redis: what one replica publishes reaches the SSE
//! subscribers of every other, a server's console backlog is one capped Redis stream, and the
//! caps on open streams count every replica's.
//!
//! - **Events**: `PUBLISH <prefix>ev:{<server>}` with the stamped event as JSON; every replica
//!   holds one `PSUBSCRIBE <prefix>ev:*` and hands what others published to its own
//!   subscribers (its own events it delivered already). A removed server is published as `-`.
//! - **Console backlog**: `XADD <prefix>console:{<server>} MAXLEN 200`, read by a new
//!   subscriber with `XREVRANGE … COUNT 200`; it expires a week after its last line.
//! - **Caps**: a sorted set per user and per server (`{<prefix>sse}:u:…`, `{<prefix>sse}:s:…`)
//!   of open streams, scored by the end of their lease ([`LEASE`]); one Lua script drops
//!   expired members, counts both and adds to both in one step. The replica holding a stream
//!   renews its lease every [`RENEW_EVERY`], so a replica that dies frees its streams' slots
//!   within a lease.
//!
//! On a Redis Cluster ([`security::redis_link`]) a script or pipeline must stay within one
//! hash slot, hence the tags in braces: a server's channel and backlog share its id's slot
//! (publishing pipelines one server's events together), and every cap set shares one slot
//! (a user's streams span servers and a server's span users, so no tag of either name could
//! put both sets of one stream together). Publishing goes through one task per replica, in
//! order and pipelined; what Redis refuses is counted in `mamba_events_fanout_lost_total` and
//! logged, and the replica's own subscribers are never held up by it. A Redis that fails
//! leaves each replica its own events, mirror and caps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::StreamExt;
use security::redis_link::{Conn, Target, hash_tag};
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::events::{CONSOLE_MIRROR_LINES, Inner, Refused, STREAMS_PER_SERVER, STREAMS_PER_USER};
use super::events::{Event, Stamped};
use crate::Error;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use publish::{Out, REMOVED, publish};

mod publish;

/// How long a stream's slot holds without being renewed.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a replica renews the slots of the streams it holds.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Events waiting to be published (more are counted as lost).
const QUEUE: usize = 8192;
/// How long one Redis call may take before the hub acts as if Redis were down.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the start waits for Redis before it carries on (and keeps trying).
const START_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the longest wait between attempts to reach Redis again.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// The largest message taken from the channel: a console line is at most 16 KiB, and JSON
/// writes a control character as six bytes (`\u001b`).
const MAX_MESSAGE: usize = 128 << 10;
/// Drops what has expired from the user's and the server's sets, refuses past either cap
/// (0: the user's, -1: the server's), else adds the stream to both (1): `KEYS` the user's set,
/// the server's; `ARGV` now, the user cap, the server cap, the lease's end, the member, the
/// sets' time to live (ms).
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[4], ARGV[5])
  redis.call('PEXPIRE', key, ARGV[6])
end
return 1
";

/// An open stream's slots in the shared caps.
#[derive(Debug)]
pub struct Lease {
    member: String,
}

/// What the tasks share with the hub.
struct Shared {
    prefix: String,
    conn: OnceCell<Conn>,
    /// The leases this replica holds: member → (user key, server key).
    live: Mutex<HashMap<String, (String, String)>>,
    clock: SharedClock,
    metrics: Metrics,
    acquire: redis::Script,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, HashMap<String, (String, String)>> {
        // Entries are inserted and removed whole.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel of a server's events (tagged as its backlog, for one pipeline).
    fn channel(&self, server: &str) -> String {
        format!("{}ev:{}", self.prefix, hash_tag(server))
    }

    fn console_key(&self, server: &str) -> String {
        format!("{}console:{}", self.prefix, hash_tag(server))
    }

    /// The cap sets of a user and of a server, in one slot.
    fn cap_keys(&self, user: &str, server: &str) -> (String, String) {
        let tag = hash_tag(&format!("{}sse", self.prefix));
        (format!("{tag}:u:{user}"), format!("{tag}:s:{server}"))
    }
}

/// The Redis side of one replica's hub.
pub struct Fanout {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Out>,
    /// Stops the tasks when the hub goes.
    _stop: DropGuard,
}

impl Fanout {
    /// Connects (waiting up to [`START_TIMEOUT`], then carrying on while a task keeps
    /// trying), subscribes to the other replicas' events and starts publishing and renewing.
    pub(super) async fn start(
        url: &str,
        prefix: &str,
        origin: u64,
        inner: Weak<Mutex<Inner>>,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Arc<Fanout>, Error> {
        let target = Target::parse(url).map_err(|e| Error::config("REDIS_URL", e.to_string()))?;
        let shared = Arc::new(Shared {
            prefix: prefix.to_owned(),
            conn: OnceCell::new(),
            live: Mutex::default(),
            clock,
            metrics,
            acquire: redis::Script::new(ACQUIRE),
        });
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ready, subscribed) = oneshot::channel();
        tokio::spawn(listen(
            target.pubsub_clients(),
            shared.clone(),
            origin,
            inner,
            ready,
            stop.clone(),
        ));
        tokio::spawn(publish(rx, shared.clone(), stop.clone()));
        tokio::spawn(renew(shared.clone(), stop.clone()));
        tokio::spawn(connect(target, shared.clone(), stop.clone()));
        if tokio::time::timeout(START_TIMEOUT, subscribed)
            .await
            .is_err()
        {
            tracing::error!(
                "REDIS_URL: cannot subscribe; server events reach this replica's streams only until Redis answers"
            );
        }
        Ok(Arc::new(Fanout {
            shared,
            tx,
            _stop: stop.drop_guard(),
        }))
    }

    /// Publishes a server's event (or, with `None`, its removal) for the other replicas.
    pub(super) fn publish(&self, server: &str, stamped: Option<Stamped>) {
        let out = match stamped {
            None => Out::Remove(server.to_owned()),
            Some(stamped) => match serde_json::to_string(&stamped) {
                Ok(payload) => Out::Event {
                    server: server.to_owned(),
                    console: matches!(stamped.event, Event::Console { .. }),
                    payload,
                },
                Err(_) => return self.shared.metrics.events_fanout_lost.inc(),
            },
        };
        self.queue(out);
    }

    /// Forgets a server's console backlog on every replica.
    pub(super) fn clear_console(&self, server: &str) {
        self.queue(Out::Clear(server.to_owned()));
    }

    fn queue(&self, out: Out) {
        if self.tx.try_send(out).is_err() {
            self.shared.metrics.events_fanout_lost.inc();
        }
    }

    /// Takes a slot for a new stream in the user's and the server's shared caps: `Ok(None)`
    /// when Redis cannot say (this replica's own caps then hold alone).
    pub(super) async fn acquire(&self, server: &str, user: &str) -> Result<Option<Lease>, Refused> {
        let Some(conn) = self.shared.conn.get() else {
            return Ok(None);
        };
        let member = uuid::Uuid::new_v4().simple().to_string();
        let (user_key, server_key) = self.shared.cap_keys(user, server);
        let now = self.shared.clock.now_ms();
        let mut c = conn.clone();
        let mut invocation = self.shared.acquire.key(&user_key);
        invocation
            .key(&server_key)
            .arg(now)
            .arg(STREAMS_PER_USER)
            .arg(STREAMS_PER_SERVER)
            .arg(now + lease_ms())
            .arg(&member)
            .arg(lease_ms());
        let taken = tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<i64>(&mut c));
        match taken.await {
            Ok(Ok(1)) => {}
            Ok(Ok(0)) => return Err(Refused::UserCap),
            Ok(Ok(_)) => return Err(Refused::ServerCap),
            failed => {
                match failed {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "REDIS_URL: cannot count event streams; this replica's caps hold alone")
                    }
                    _ => tracing::warn!(
                        "REDIS_URL: counting event streams timed out; this replica's caps hold alone"
                    ),
                }
                // The script may have run: take the stream out again.
                forget(conn.clone(), member, user_key, server_key);
                return Ok(None);
            }
        }
        self.shared
            .live()
            .insert(member.clone(), (user_key, server_key));
        Ok(Some(Lease { member }))
    }

    /// Frees a stream's slots (at once when Redis answers; else when its lease ends).
    pub(super) fn release(&self, lease: Lease) {
        let Some((user_key, server_key)) = self.shared.live().remove(&lease.member) else {
            return;
        };
        if let Some(conn) = self.shared.conn.get() {
            forget(conn.clone(), lease.member, user_key, server_key);
        }
    }

    /// The server's shared console backlog, oldest first; `None` when Redis cannot say.
    pub(super) async fn backlog(&self, server: &str) -> Option<Vec<Stamped>> {
        let mut conn = self.shared.conn.get()?.clone();
        let mut read = redis::cmd("XREVRANGE");
        read.arg(self.shared.console_key(server))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(CONSOLE_MIRROR_LINES);
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            read.query_async::<Vec<(String, Vec<Vec<u8>>)>>(&mut conn),
        )
        .await;
        let entries = match reply {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "REDIS_URL: cannot read a console backlog; this replica's mirror is used");
                return None;
            }
            Err(_) => return None,
        };
        let mut lines: Vec<Stamped> = entries
            .iter()
            .filter_map(|(_, fields)| fields.get(1))
            .filter_map(|payload| serde_json::from_slice(payload).ok())
            .collect();
        lines.reverse();
        Some(lines)
    }
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)
}

/// Removes a stream's member from both sets, in the background.
fn forget(mut conn: Conn, member: String, user_key: String, server_key: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(&user_key).arg(&member).ignore();
        pipe.cmd("ZREM").arg(&server_key).arg(&member).ignore();
        let _ = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
    });
}

/// Sleeps `wait` (or until stopped: then `false`) and doubles it up to [`LAST_RETRY`].
async fn back_off(wait: &mut Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => return false,
        _ = tokio::time::sleep(*wait) => {}
    }
    *wait = (*wait * 2).min(LAST_RETRY);
    true
}

/// Makes the connection the hub's commands use (it reconnects by itself once made).
async fn connect(target: Target, shared: Arc<Shared>, stop: CancellationToken) {
    let mut wait = FIRST_RETRY;
    loop {
        let made = tokio::select! {
            _ = stop.cancelled() => return,
            made = target.connect(None) => made,
        };
        match made {
            Ok(conn) => {
                let _ = shared.conn.set(conn);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "REDIS_URL: no connection for the event hub yet"),
        }
        if !back_off(&mut wait, &stop).await {
            return;
        }
    }
}

/// Hands the other replicas' events to this replica's subscribers, resubscribing after a
/// broken connection (events published meanwhile are not seen here). On a cluster it
/// subscribes on one listed node (each hears every publication) and on the next when that one
/// goes.
async fn listen(
    clients: Vec<redis::Client>,
    shared: Arc<Shared>,
    origin: u64,
    inner: Weak<Mutex<Inner>>,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let channels = format!("{}ev:", shared.prefix);
    let pattern = format!("{channels}*");
    let mut ready = Some(ready);
    let mut wait = FIRST_RETRY;
    for turn in 0.. {
        let Some(client) = clients.get(turn % clients.len().max(1)) else {
            return;
        };
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            wait = FIRST_RETRY;
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(server) = message.get_channel_name().strip_prefix(&channels) else {
                    continue;
                };
                // `{<server>}` (a replica of an older version published `<server>`).
                let server = server
                    .strip_prefix('{')
                    .and_then(|tagged| tagged.strip_suffix('}'))
                    .unwrap_or(server);
                let payload = message.get_payload_bytes();
                if server.len() > 64 || payload.len() > MAX_MESSAGE {
                    continue;
                }
                let Some(inner) = inner.upgrade() else {
                    return Ok(());
                };
                let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
                if payload == REMOVED.as_bytes() {
                    inner.remove(server);
                } else if let Ok(stamped) = serde_json::from_slice::<Stamped>(payload)
                    && stamped.origin != origin
                {
                    inner.deliver_to_subscribers(server, stamped);
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            ended = session => match ended {
                Ok(()) if inner.strong_count() == 0 => return,
                Ok(()) => tracing::warn!("REDIS_URL: the event subscription ended; subscribing again"),
                Err(e) => tracing::debug!(error = %e, "REDIS_URL: cannot subscribe to events yet"),
            },
        }
        if !back_off(&mut wait, &stop).await {
            return;
        }
    }
}

/// Renews the slots of the streams this replica holds.
async fn renew(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(conn) = shared.conn.get() else {
            continue;
        };
        let leases: Vec<(String, (String, String))> = shared
            .live()
            .iter()
            .map(|(member, keys)| (member.clone(), keys.clone()))
            .collect();
        if leases.is_empty() {
            continue;
        }
        let until = shared.clock.now_ms() + lease_ms();
        let mut pipe = redis::pipe();
        for (member, (user_key, server_key)) in &leases {
            for key in [user_key, server_key] {
                // Not `XX`: a member a Redis outage let expire is counted again.
                pipe.cmd("ZADD").arg(key).arg(until).arg(member).ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(lease_ms()).ignore();
            }
        }
        let mut conn = conn.clone();
        if let Ok(Err(e)) =
            tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await
        {
            tracing::warn!(error = %e, "REDIS_URL: cannot renew event streams' slots");
        }
    }
}
