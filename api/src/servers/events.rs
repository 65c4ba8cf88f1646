//! Live events of servers for SSE subscribers: status changes, console lines and command
//! outcomes. One broadcast channel per server, a mirror of its last console lines for new
//! subscribers, and caps on open streams per user and per server.
//!
//! With Redis ([`Events::with_redis`]) the hub spans the replicas ([`super::fanout`]): every
//! event is also published for the others, the console mirror is a capped Redis stream, and
//! the caps count the streams open on every replica. Each event carries its origin and a
//! sequence number, so a line both in a new subscriber's backlog and in its live feed is shown
//! once.

use crate::db::entities::states::{CommandKind, CommandState, ServerState};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::fanout::{Fanout, Lease};

/// Console lines the panel keeps per server for subscribers that join later.
pub const CONSOLE_MIRROR_LINES: usize = 200;
/// Open event streams one user may hold.
pub const STREAMS_PER_USER: usize = 8;
/// Open event streams one server may have.
pub const STREAMS_PER_SERVER: usize = 32;

/// One event of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The server's state changed.
    Status {
        /// The new state.
        state: ServerState,
        /// Why, as the node said.
        reason: Option<String>,
        /// When (RFC 3339).
        at: String,
    },
    /// A line the process wrote.
    Console {
        /// The line, without its newline.
        line: String,
        /// Whether the line was cut to the panel's limit (16 KiB).
        truncated: bool,
        /// `stdout` or `stderr`.
        stream: Cow<'static, str>,
        /// When (RFC 3339).
        at: String,
    },
    /// What the server uses now (every few seconds while it runs).
    Stats {
        /// Resident memory.
        memory_bytes: u64,
        /// Its limit.
        memory_limit_bytes: u64,
        /// Percent of one core.
        cpu_percent: f64,
        /// The server directory's size.
        disk_bytes: u64,
        /// Its quota.
        disk_limit_bytes: u64,
        /// When (RFC 3339).
        at: String,
    },
    /// A backup or restore finished.
    Backup {
        /// The backup.
        backup_id: String,
        /// `backup` or `restore`.
        operation: Cow<'static, str>,
        /// `completed`, `restored` or `failed`.
        state: String,
        /// Why it failed.
        error: Option<String>,
    },
    /// A command was acknowledged or gave up on.
    Command {
        /// Its id.
        command_id: String,
        /// `start`, `stop`, …
        action: CommandKind,
        /// `acked` or `failed`.
        state: CommandState,
        /// Why it failed.
        error: Option<String>,
    },
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Status { .. } => "status",
            Event::Console { .. } => "console",
            Event::Command { .. } => "command",
            Event::Backup { .. } => "backup",
            Event::Stats { .. } => "stats",
        }
    }
}

/// An event with where it was made: the replica's random origin and its sequence number there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped {
    /// The replica that published it.
    #[serde(rename = "o")]
    pub origin: u64,
    /// Its number on that replica.
    #[serde(rename = "s")]
    pub seq: u64,
    /// The event.
    #[serde(rename = "e")]
    pub event: Event,
}

struct Channel {
    tx: broadcast::Sender<Stamped>,
    console: VecDeque<Stamped>,
    subscribers: usize,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            tx: broadcast::channel(1024).0,
            console: VecDeque::new(),
            subscribers: 0,
        }
    }
}

#[derive(Default)]
pub(super) struct Inner {
    servers: HashMap<String, Channel>,
    users: HashMap<String, usize>,
    next_seq: u64,
}

impl Inner {
    /// Hands `stamped` to this replica's subscribers of the server (and mirrors console lines).
    pub(super) fn deliver(&mut self, server_id: &str, stamped: Stamped) {
        let channel = self
            .servers
            .entry(server_id.to_owned())
            .or_insert_with(Channel::new);
        if matches!(stamped.event, Event::Console { .. }) {
            if channel.console.len() == CONSOLE_MIRROR_LINES {
                channel.console.pop_front();
            }
            channel.console.push_back(stamped.clone());
        }
        // No receivers is not an error: nobody is watching.
        let _ = channel.tx.send(stamped);
    }

    /// Hands another replica's event to this replica's subscribers of the server, if it has
    /// any: the backlog lives in Redis, so no mirror is kept here for servers nobody here
    /// watches.
    pub(super) fn deliver_to_subscribers(&mut self, server_id: &str, stamped: Stamped) {
        if let Some(channel) = self.servers.get(server_id)
            && channel.subscribers > 0
        {
            let _ = channel.tx.send(stamped);
        }
    }

    /// Forgets a server here: its open streams on this replica end.
    pub(super) fn remove(&mut self, server_id: &str) {
        self.servers.remove(server_id);
    }

    pub(super) fn clear_console(&mut self, server_id: &str) {
        if let Some(channel) = self.servers.get_mut(server_id) {
            channel.console.clear();
        }
    }
}

/// The hub.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Mutex<Inner>>,
    /// This replica's origin stamp.
    origin: u64,
    /// The other replicas, through Redis.
    fanout: Option<Arc<Fanout>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            inner: Arc::default(),
            origin: rand::random(),
            fanout: None,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The user has [`STREAMS_PER_USER`] open.
    UserCap,
    /// The server has [`STREAMS_PER_SERVER`] open.
    ServerCap,
}

/// An open subscription; dropping it frees its slots.
pub struct Subscription {
    receiver: broadcast::Receiver<Stamped>,
    /// The mirrored console lines at the time of subscribing, oldest first.
    pub backlog: Vec<Event>,
    /// The backlog's stamps, skipped when they come again live.
    seen: HashSet<(u64, u64)>,
    hub: Events,
    server_id: String,
    user_id: String,
    /// Its slots on every replica (with Redis).
    lease: Option<Lease>,
}

impl Subscription {
    /// The next live event (one already in the backlog is skipped). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        loop {
            let stamped = self.receiver.recv().await?;
            if !self.seen.is_empty() && self.seen.remove(&(stamped.origin, stamped.seq)) {
                continue;
            }
            return Ok(stamped.event);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let (Some(fanout), Some(lease)) = (&self.hub.fanout, self.lease.take()) {
            fanout.release(lease);
        }
        let mut inner = self.hub.lock();
        if let Some(channel) = inner.servers.get_mut(&self.server_id) {
            channel.subscribers = channel.subscribers.saturating_sub(1);
        }
        if let Some(n) = inner.users.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.users.remove(&self.user_id);
            }
        }
    }
}

impl Events {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Entries are always complete; a panic elsewhere leaves nothing half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A hub whose events, console mirror and caps span every replica on the same Redis
    /// (`key_prefix` keeps deployments sharing one Redis apart). A Redis that does not answer
    /// leaves the hub working for this replica alone until it does.
    pub async fn with_redis(
        url: &str,
        key_prefix: &str,
        clock: crate::clock::SharedClock,
        metrics: crate::metrics::Metrics,
    ) -> Result<Events, crate::Error> {
        let hub = Events::default();
        let fanout = Fanout::start(
            url,
            key_prefix,
            hub.origin,
            Arc::downgrade(&hub.inner),
            clock,
            metrics,
        )
        .await?;
        Ok(Events {
            fanout: Some(fanout),
            ..hub
        })
    }

    /// Sends `event` to the server's subscribers on every replica (and mirrors console lines).
    pub fn publish(&self, server_id: &str, event: Event) {
        let stamped = {
            let mut inner = self.lock();
            inner.next_seq += 1;
            let stamped = Stamped {
                origin: self.origin,
                seq: inner.next_seq,
                event,
            };
            inner.deliver(server_id, stamped.clone());
            stamped
        };
        if let Some(fanout) = &self.fanout {
            fanout.publish(server_id, Some(stamped));
        }
    }

    /// Forgets a server's mirrored console (its node reconnected and sends its backlog anew).
    pub fn clear_console(&self, server_id: &str) {
        self.lock().clear_console(server_id);
        if let Some(fanout) = &self.fanout {
            fanout.clear_console(server_id);
        }
    }

    /// Forgets a deleted server: its open streams end, on every replica.
    pub fn remove(&self, server_id: &str) {
        self.lock().remove(server_id);
        if let Some(fanout) = &self.fanout {
            fanout.publish(server_id, None);
        }
    }

    /// Opens a subscription for `user_id`, within the caps (on every replica, with Redis; a
    /// Redis that fails leaves this replica's own caps).
    pub async fn subscribe(&self, server_id: &str, user_id: &str) -> Result<Subscription, Refused> {
        let mut subscription = self.subscribe_here(server_id, user_id)?;
        let Some(fanout) = &self.fanout else {
            return Ok(subscription);
        };
        subscription.lease = fanout.acquire(server_id, user_id).await?;
        if let Some(backlog) = fanout.backlog(server_id).await {
            subscription.seen = backlog.iter().map(|s| (s.origin, s.seq)).collect();
            subscription.backlog = backlog.into_iter().map(|s| s.event).collect();
        }
        Ok(subscription)
    }

    /// A subscription within this replica's caps, with its console mirror as the backlog.
    fn subscribe_here(&self, server_id: &str, user_id: &str) -> Result<Subscription, Refused> {
        let mut inner = self.lock();
        if inner.users.get(user_id).copied().unwrap_or(0) >= STREAMS_PER_USER {
            return Err(Refused::UserCap);
        }
        let channel = inner
            .servers
            .entry(server_id.to_owned())
            .or_insert_with(Channel::new);
        if channel.subscribers >= STREAMS_PER_SERVER {
            return Err(Refused::ServerCap);
        }
        channel.subscribers += 1;
        let receiver = channel.tx.subscribe();
        let backlog = channel.console.iter().map(|s| s.event.clone()).collect();
        *inner.users.entry(user_id.to_owned()).or_default() += 1;
        Ok(Subscription {
            receiver,
            backlog,
            seen: HashSet::new(),
            hub: self.clone(),
            server_id: server_id.to_owned(),
            user_id: user_id.to_owned(),
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Event {
        Event::Console {
            line: n.to_string(),
            truncated: false,
            stream: "stdout".into(),
            at: String::new(),
        }
    }

    #[test]
    fn caps_hold_and_dropping_frees_slots() {
        let hub = Events::default();
        let mut held: Vec<Subscription> = (0..STREAMS_PER_USER)
            .map(|_| hub.subscribe_here("s1", "u1").unwrap())
            .collect();
        assert_eq!(
            hub.subscribe_here("s2", "u1").err(),
            Some(Refused::UserCap),
            "a user's cap spans servers"
        );
        held.pop();
        assert!(hub.subscribe_here("s2", "u1").is_ok());
        drop(held);
        let others: Vec<Subscription> = (0..STREAMS_PER_SERVER)
            .map(|i| hub.subscribe_here("s3", &format!("user{i}")).unwrap())
            .collect();
        assert_eq!(
            hub.subscribe_here("s3", "late").err(),
            Some(Refused::ServerCap)
        );
        drop(others);
        assert!(hub.subscribe_here("s3", "late").is_ok());
    }

    #[test]
    fn the_console_mirror_keeps_the_last_lines() {
        let hub = Events::default();
        for n in 0..CONSOLE_MIRROR_LINES + 5 {
            hub.publish("s", line(n));
        }
        let sub = hub.subscribe_here("s", "u").unwrap();
        assert_eq!(sub.backlog.len(), CONSOLE_MIRROR_LINES);
        assert!(matches!(&sub.backlog[0], Event::Console { line, .. } if line == "5"));
    }

    /// A line both in a subscriber's backlog (from the shared one) and in its live feed is
    /// handed over once; others pass.
    #[tokio::test]
    async fn a_backlog_line_coming_again_live_is_skipped() {
        let hub = Events::default();
        let mut sub = hub.subscribe_here("s", "u").unwrap();
        sub.seen.insert((7, 1));
        for (origin, seq, n) in [(7, 1, 1), (7, 2, 2), (8, 1, 3)] {
            hub.lock().deliver(
                "s",
                Stamped {
                    origin,
                    seq,
                    event: line(n),
                },
            );
        }
        for n in [2, 3] {
            let event = sub.recv().await.unwrap();
            assert!(matches!(&event, Event::Console { line, .. } if *line == n.to_string()));
        }
        assert!(sub.seen.is_empty());
    }
}
