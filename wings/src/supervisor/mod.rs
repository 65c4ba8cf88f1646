//! The server supervisor: each server is a child process in its own directory under
//! `WINGS_DATA_DIR/servers/<id>/`, started from the spec the panel sent (program and
//! arguments executed directly, never through a shell, with only the spec's environment),
//! as an unprivileged user in its own cgroups when Wings runs as root.
//!
//! Its parts: commands for one server run one after the other in the order they came
//! ([`queue`]); each server's state is a pure state machine ([`slot`]) whose transitions say
//! what to do; processes are started through the [`launch::Launch`] trait; the process
//! lifecycle (start, stop, monitor, delete) is in [`lifecycle`]; the console in [`console`];
//! what survives Wings' restart in [`persistence`]; usage in [`stats`]; backups and their
//! restore in [`backups`]. Blocking work (user creation, directory walks, cgroup set-up) runs
//! on the blocking pool, never on the runtime's threads.

mod backups;
mod console;
pub mod launch;
mod lifecycle;
mod persistence;
mod queue;
pub mod slot;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::unistd::Uid;
use proto::node::v1::{Limits, NodeMessage, ServerSpec, node_message};
use tokio::sync::mpsc;

pub use console::RING_LINES;
pub use launch::{Host, Launch};
pub use stats::LatestStats;

use crate::{Error, isolation, users};
use slot::{Effect, Slot};

/// What the supervisor needs to know about the node.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where servers, state and backups live.
    pub data_dir: PathBuf,
    /// The uids (and gids) given to servers when Wings is root.
    pub uid_range: std::ops::RangeInclusive<u32>,
    /// Run servers even when the memory or pids controller is missing.
    pub allow_unconfined: bool,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
}

/// Messages for the panel: statuses, acks and backup results (one per state change or
/// command, so bounded by what the panel asks), console lines (dropped when the panel cannot
/// keep up; the ring buffer still has them) and live usage (only the newest per server is
/// kept, however long the panel is away).
pub struct Uplink {
    /// Statuses, acks and backup results.
    pub events: mpsc::UnboundedReceiver<NodeMessage>,
    /// Console lines.
    pub console: mpsc::Receiver<NodeMessage>,
    /// The newest usage report of each running server.
    pub stats: Arc<LatestStats>,
}

/// Limits for a spec from a panel that sends none.
const DEFAULT_LIMITS: Limits = Limits {
    memory_bytes: 1 << 30,
    cpu_percent: 100,
    max_processes: 256,
    open_files: 4096,
    disk_bytes: 10 << 30,
};

/// Whether `name` is a server id (a UUID) and so safe as a file name.
fn valid_id(name: &str) -> bool {
    name.len() == 36 && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A server's slot and the tasks and queues that serve it.
struct Entry {
    slot: Slot,
    /// Its command queue, while its worker runs.
    queue: Option<mpsc::UnboundedSender<queue::Job>>,
    /// Lines for the running process's stdin.
    stdin: Option<mpsc::Sender<String>>,
    /// The task that waits for the running process.
    monitor: Option<tokio::task::JoinHandle<()>>,
}

impl Entry {
    fn new(spec: Option<ServerSpec>) -> Entry {
        Entry {
            slot: Slot::new(spec),
            queue: None,
            stdin: None,
            monitor: None,
        }
    }
}

/// The supervisor of one node's servers, starting processes through `L`.
pub struct Supervisor<L: Launch = Host> {
    data_dir: PathBuf,
    launcher: L,
    /// When Wings is root: each server runs as its own user, inside its own cgroups.
    isolation: Option<isolation::Cgroups>,
    /// Why servers may not start (Wings is root, a required controller is missing and
    /// `WINGS_ALLOW_UNCONFINED` does not allow it).
    refuse_start: Option<String>,
    /// The uids handed out on this node (when Wings is root).
    uids: Mutex<Option<users::UidPool>>,
    /// Command ids seen lately and what came of them.
    recent: Mutex<queue::Recent>,
    backups: backups::Backups,
    slots: Mutex<HashMap<String, Entry>>,
    events: mpsc::UnboundedSender<NodeMessage>,
    console: mpsc::Sender<NodeMessage>,
    stats: Arc<LatestStats>,
    /// The ETags of files Wings hashed lately.
    etags: Arc<crate::files::Etags>,
    /// The file manager's per-server books (operations under way, reserved bytes).
    ledger: Arc<crate::files::Ledger>,
}

impl Supervisor {
    /// Reads what Wings had before it (re)started, kills processes a previous Wings left
    /// behind and queues those servers to start again. As root, servers get their own users
    /// and cgroups.
    pub fn load(options: &Options) -> Result<(Arc<Supervisor>, Uplink), Error> {
        Supervisor::build(options, Host, Uid::effective().is_root())
    }
}

impl<L: Launch> Supervisor<L> {
    /// [`Supervisor::load`] with `launcher`, isolating servers when `isolate`.
    fn build(
        options: &Options,
        launcher: L,
        isolate: bool,
    ) -> Result<(Arc<Supervisor<L>>, Uplink), Error> {
        let data_dir = persistence::prepare_data_dir(&options.data_dir)?;
        let mut refuse_start = None;
        let mut uids = None;
        let isolation = if isolate {
            persistence::protect_data_dir(&data_dir)?;
            let cgroups = isolation::Cgroups::detect_at(&options.cgroup_root);
            refuse_start = confinement(&cgroups, options.allow_unconfined);
            uids = Some(
                users::UidPool::load(&data_dir.join("state"), options.uid_range.clone())
                    .map_err(|e| Error::Io(format!("state/uids: {e}")))?,
            );
            Some(cgroups)
        } else {
            tracing::warn!(
                "not running as root: servers run as Wings' own user, without per-server users or cgroups"
            );
            None
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(LatestStats::default());
        let (console_tx, console) = mpsc::channel(4096);
        let supervisor = Arc::new(Supervisor {
            data_dir,
            launcher,
            isolation,
            refuse_start,
            uids: Mutex::new(uids),
            recent: Mutex::new(queue::Recent::default()),
            backups: backups::Backups::default(),
            slots: Mutex::new(HashMap::new()),
            events: events_tx,
            console: console_tx,
            stats: stats.clone(),
            etags: Arc::default(),
            ledger: Arc::default(),
        });
        for id in supervisor.recover()? {
            tracing::info!(server = %id, "starting again the server that ran when Wings stopped");
            supervisor.enqueue(&id, queue::Job::Resume);
        }
        tokio::spawn(supervisor.clone().report_stats());
        let uplink = Uplink {
            events,
            console,
            stats,
        };
        Ok((supervisor, uplink))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Slots are always left whole; a panic elsewhere does not make them wrong.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn server_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("servers").join(id)
    }

    fn send(&self, kind: node_message::Kind) {
        // The receiver lives as long as the agent; if it is gone, Wings is stopping.
        let _ = self.events.send(NodeMessage { kind: Some(kind) });
    }

    /// Carries out what a transition of server `id` asked for. Call with the slots locked
    /// (reports go out in the order of the transitions); an error when a signal could not
    /// be sent.
    fn apply(self: &Arc<Self>, id: &str, effects: Vec<Effect>) -> Result<(), Error> {
        let mut result = Ok(());
        for effect in effects {
            match effect {
                Effect::Report(status) => self.send(node_message::Kind::Status(status)),
                Effect::Signal { pid, signal } => {
                    if let Err(e) = self.launcher.signal(pid, signal) {
                        result = Err(Error::Isolation(e));
                    }
                }
                Effect::KillAfter {
                    generation,
                    pid,
                    after,
                } => {
                    let me = self.clone();
                    let id = id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let slots = me.lock();
                        let kill = slots
                            .get(&id)
                            .and_then(|e| e.slot.grace_over(generation, pid));
                        if let Some(kill) = kill {
                            tracing::warn!(server = %id, pid, "grace period over: SIGKILL");
                            let _ = me.apply(&id, vec![kill]);
                        }
                    });
                }
            }
        }
        result
    }

    /// The server's own user and group when Wings is root (made on first use). Blocking.
    fn owner(&self, id: &str) -> Result<Option<(u32, u32)>, Error> {
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = uids.as_mut() else {
            return Ok(None);
        };
        let mut uid = pool.allocate(id).map_err(Error::Isolation)?;
        // The uid may have been taken since it was chosen (an administrator, another agent
        // on the host): it stays recorded as used, and the next one is tried.
        for _ in 0..users::TAKEN_RETRIES {
            match users::ensure_user(id, uid, &self.server_dir(id)) {
                Ok(ids) => return Ok(Some(ids)),
                Err(_) if users::taken_elsewhere(id, uid) => {
                    uid = pool.reallocate(id).map_err(Error::Isolation)?;
                }
                Err(e) => return Err(Error::Isolation(e)),
            }
        }
        Err(Error::Isolation(format!(
            "uids keep being taken by others (last {uid})"
        )))
    }

    /// What the file manager needs of server `id`: its directory, its user (when Wings is
    /// root) and its disk quota. A server this node does not have is not found; one being
    /// restored is busy.
    pub fn file_target(&self, id: &str) -> Result<crate::files::Target, crate::files::Fail> {
        use crate::files::Fail;
        if !valid_id(id) {
            return Err(Fail::not_found("no such server on this node"));
        }
        let quota = {
            let slots = self.lock();
            let entry = slots
                .get(id)
                .ok_or_else(|| Fail::not_found("no such server on this node"))?;
            entry
                .slot
                .spec
                .as_ref()
                .and_then(|spec| spec.limits)
                .unwrap_or(DEFAULT_LIMITS)
                .disk_bytes
        };
        // Held until the operation ends: a restore waits for it, and refuses it from here.
        let lease = self.ledger.enter(id)?;
        let isolated = self
            .uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let owner = match (isolated, self.uid_of(id)) {
            (false, _) => None,
            (true, Some(uid)) => Some((uid, uid)),
            (true, None) => return Err(Fail::not_found("the server has no files on this node")),
        };
        Ok(crate::files::Target {
            dir: self.server_dir(id),
            owner,
            quota,
            lease,
        })
    }

    /// The ETags Wings remembers.
    pub fn etags(&self) -> Arc<crate::files::Etags> {
        self.etags.clone()
    }

    /// The uid recorded for a server, if Wings gave it one.
    fn uid_of(&self, id: &str) -> Option<u32> {
        let uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        uids.as_ref().and_then(|pool| pool.of(id))
    }

    /// Kills every process of the server (blocking): its cgroups, then anything left running
    /// as its uid. Without root there is neither. Says whether none is left.
    fn kill_everything(&self, id: &str) -> bool {
        let in_cgroups = self
            .isolation
            .as_ref()
            .is_none_or(|cgroups| cgroups.kill_all(id));
        let as_uid = self.uid_of(id).is_none_or(isolation::kill_user);
        in_cgroups && as_uid
    }

    /// [`Supervisor::kill_everything`] on the blocking pool; an error when a process of the
    /// server survived.
    async fn kill_everything_async(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        if self.isolation.is_none() {
            return Ok(());
        }
        let me = self.clone();
        let id = id.to_owned();
        match tokio::task::spawn_blocking(move || me.kill_everything(&id)).await {
            Ok(true) => Ok(()),
            _ => Err(Error::Process(
                "a process of the server could not be killed",
            )),
        }
    }

    /// Runs `work` on the blocking pool with this supervisor.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        work: impl FnOnce(&Supervisor<L>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || work(&me))
            .await
            .map_err(|source| Error::Task { what, source })?
    }
}

/// Why servers may not start on a node with `cgroups` (a required controller is missing and
/// `allow_unconfined` does not allow it); logs what is and is not enforced.
fn confinement(cgroups: &isolation::Cgroups, allow_unconfined: bool) -> Option<String> {
    let missing = cgroups.missing();
    let unconfined = cgroups.unconfined();
    let mut refuse = None;
    if !unconfined.is_empty() {
        if allow_unconfined {
            tracing::warn!(cgroups = cgroups.version(), missing = ?unconfined, "WINGS_ALLOW_UNCONFINED=1: servers run without these controllers' limits");
        } else {
            let many = unconfined.len() > 1;
            refuse = Some(format!(
                "unconfined: the cgroup controller{} {} {} missing on this node; servers are not started without {} (WINGS_ALLOW_UNCONFINED=1 runs them unconfined)",
                if many { "s" } else { "" },
                unconfined.join(" and "),
                if many { "are" } else { "is" },
                if many { "them" } else { "it" },
            ));
            tracing::error!(cgroups = cgroups.version(), missing = ?unconfined, "required cgroup controllers missing: servers will not start (WINGS_ALLOW_UNCONFINED=1 overrides)");
        }
    }
    if missing.is_empty() {
        tracing::info!(
            cgroups = cgroups.version(),
            "each server runs as its own user, in its own cgroups"
        );
    } else {
        tracing::warn!(cgroups = cgroups.version(), missing = ?missing, "cgroup controllers missing: their limits are not enforced");
    }
    refuse
}

#[cfg(test)]
mod tests;
