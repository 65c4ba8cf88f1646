//! Live events of servers for SSE subscribers: status changes, console lines and command
//! outcomes. One broadcast channel per server, a mirror of its last console lines for new
//! subscribers, and caps on open streams per user and per server.

use crate::db::entities::states::{CommandKind, CommandState, ServerState};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::broadcast;

/// Console lines the panel keeps per server for subscribers that join later.
pub const CONSOLE_MIRROR_LINES: usize = 200;
/// Open event streams one user may hold.
pub const STREAMS_PER_USER: usize = 8;
/// Open event streams one server may have.
pub const STREAMS_PER_SERVER: usize = 32;

/// One event of a server.
#[derive(Debug, Clone, Serialize)]
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
        stream: &'static str,
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
        operation: &'static str,
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

struct Channel {
    tx: broadcast::Sender<Event>,
    console: VecDeque<Event>,
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
struct Inner {
    servers: HashMap<String, Channel>,
    users: HashMap<String, usize>,
}

/// The hub.
#[derive(Default, Clone)]
pub struct Events {
    inner: Arc<Mutex<Inner>>,
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
    /// Live events.
    pub receiver: broadcast::Receiver<Event>,
    /// The mirrored console lines at the time of subscribing, oldest first.
    pub backlog: Vec<Event>,
    hub: Events,
    server_id: String,
    user_id: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
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

    /// Sends `event` to the server's subscribers (and mirrors console lines).
    pub fn publish(&self, server_id: &str, event: Event) {
        let mut inner = self.lock();
        let channel = inner
            .servers
            .entry(server_id.to_owned())
            .or_insert_with(Channel::new);
        if matches!(event, Event::Console { .. }) {
            if channel.console.len() == CONSOLE_MIRROR_LINES {
                channel.console.pop_front();
            }
            channel.console.push_back(event.clone());
        }
        // No receivers is not an error: nobody is watching.
        let _ = channel.tx.send(event);
    }

    /// Forgets a server's mirrored console (its node reconnected and sends its backlog anew).
    pub fn clear_console(&self, server_id: &str) {
        if let Some(channel) = self.lock().servers.get_mut(server_id) {
            channel.console.clear();
        }
    }

    /// Forgets a deleted server: its open streams end.
    pub fn remove(&self, server_id: &str) {
        self.lock().servers.remove(server_id);
    }

    /// Opens a subscription for `user_id`, within the caps.
    pub fn subscribe(&self, server_id: &str, user_id: &str) -> Result<Subscription, Refused> {
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
        let backlog = channel.console.iter().cloned().collect();
        *inner.users.entry(user_id.to_owned()).or_default() += 1;
        Ok(Subscription {
            receiver,
            backlog,
            hub: self.clone(),
            server_id: server_id.to_owned(),
            user_id: user_id.to_owned(),
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
            stream: "stdout",
            at: String::new(),
        }
    }

    #[test]
    fn caps_hold_and_dropping_frees_slots() {
        let hub = Events::default();
        let mut held: Vec<Subscription> = (0..STREAMS_PER_USER)
            .map(|_| hub.subscribe("s1", "u1").unwrap())
            .collect();
        assert_eq!(
            hub.subscribe("s2", "u1").err(),
            Some(Refused::UserCap),
            "a user's cap spans servers"
        );
        held.pop();
        assert!(hub.subscribe("s2", "u1").is_ok());
        drop(held);
        let others: Vec<Subscription> = (0..STREAMS_PER_SERVER)
            .map(|i| hub.subscribe("s3", &format!("user{i}")).unwrap())
            .collect();
        assert_eq!(hub.subscribe("s3", "late").err(), Some(Refused::ServerCap));
        drop(others);
        assert!(hub.subscribe("s3", "late").is_ok());
    }

    #[test]
    fn the_console_mirror_keeps_the_last_lines() {
        let hub = Events::default();
        for n in 0..CONSOLE_MIRROR_LINES + 5 {
            hub.publish("s", line(n));
        }
        let sub = hub.subscribe("s", "u").unwrap();
        assert_eq!(sub.backlog.len(), CONSOLE_MIRROR_LINES);
        assert!(matches!(&sub.backlog[0], Event::Console { line, .. } if line == "5"));
    }
}
