//! The server supervisor: each server is a child process in its own directory under
//! `WINGS_DATA_DIR/servers/<id>/`, started from the spec the panel sent (program and
//! arguments executed directly, never through a shell, with only the spec's environment),
//! as an unprivileged user when Wings runs as root.
//!
//! stdout and stderr go line by line into a ring buffer (the last 1,000 lines) and up the
//! stream. An exit nobody asked for is `crashed`. Commands for one server run one after the
//! other, in the order they came; different servers do not wait for each other.
//!
//! What Wings knows survives its own restart: `state/<id>.spec` holds each server's spec and
//! `state/<id>.pid` marks a running process. A pid file found at start-up means Wings died
//! while the server ran: the process it left (unsupervised, its console pipe gone) is killed
//! and the server started again, so the panel sees it running as before.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, Uid};
use prost::Message;
use proto::node::v1::{
    BackupOperation, BackupResult, Command, CommandAck, ConsoleLine, ConsoleStream, NodeMessage,
    ServerSpec, ServerState, ServerStatus, command, node_message,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::{backup, beneath, isolation, users};

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

/// Console lines kept per server.
pub const RING_LINES: usize = 1000;
/// Console lines of each server sent to the panel on a new stream.
const BACKLOG_LINES: usize = 200;
/// Longest console line; longer output is split.
const MAX_LINE_BYTES: usize = 4096;
/// The search path given to server processes.
const SERVER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long delete and restart wait for a killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The newest usage report per server, waiting to be sent: a bounded queue that keeps the
/// newest (one entry per server; a newer report replaces the one not yet sent).
#[derive(Default)]
pub struct LatestStats {
    waiting: Mutex<std::collections::BTreeMap<String, proto::node::v1::ServerStats>>,
    ready: tokio::sync::Notify,
}

impl LatestStats {
    /// Keeps `stats` as its server's newest report.
    pub fn put(&self, stats: proto::node::v1::ServerStats) {
        self.lock().insert(stats.server_id.clone(), stats);
        self.ready.notify_one();
    }

    /// Takes every waiting report.
    pub fn take(&self) -> Vec<proto::node::v1::ServerStats> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// How many reports wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves when a report was put since the last call.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(
        &self,
    ) -> MutexGuard<'_, std::collections::BTreeMap<String, proto::node::v1::ServerStats>> {
        // The map is always left whole.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Slot {
    spec: Option<ServerSpec>,
    state: ServerState,
    reason: String,
    exit_code: Option<i32>,
    ring: VecDeque<(ConsoleStream, String, i64)>,
    pid: Option<u32>,
    /// Bumped per process, so a late monitor cannot touch its successor.
    generation: u64,
    stop_requested: bool,
    monitor: Option<tokio::task::JoinHandle<()>>,
    queue: Option<mpsc::UnboundedSender<Command>>,
    /// Lines for the running process's stdin.
    stdin: Option<mpsc::Sender<String>>,
}

impl Slot {
    fn new(spec: Option<ServerSpec>) -> Slot {
        Slot {
            spec,
            state: ServerState::Offline,
            reason: String::new(),
            exit_code: None,
            ring: VecDeque::new(),
            pid: None,
            generation: 0,
            stop_requested: false,
            monitor: None,
            queue: None,
            stdin: None,
        }
    }

    fn status(&self, id: &str) -> ServerStatus {
        ServerStatus {
            server_id: id.to_owned(),
            state: self.state as i32,
            reason: self.reason.clone(),
            exit_code: self.exit_code,
            at_unix_ms: crate::unix_ms(),
        }
    }
}

/// The supervisor of one node's servers.
pub struct Supervisor {
    data_dir: PathBuf,
    /// When Wings is root: each server runs as its own user, inside its own cgroups.
    isolation: Option<isolation::Cgroups>,
    /// Why servers may not start (Wings is root, a required controller is missing and
    /// `WINGS_ALLOW_UNCONFINED` does not allow it).
    refuse_start: Option<String>,
    /// The uids handed out on this node (when Wings is root).
    uids: Mutex<Option<users::UidPool>>,
    /// Servers with a backup being made (one at a time each).
    backing_up: Mutex<std::collections::HashSet<String>>,
    /// Backups made at once on this node.
    backup_permits: Arc<tokio::sync::Semaphore>,
    slots: Mutex<HashMap<String, Slot>>,
    events: mpsc::UnboundedSender<NodeMessage>,
    console: mpsc::Sender<NodeMessage>,
    stats: Arc<LatestStats>,
}

/// Limits for a spec from a panel that sends none.
const DEFAULT_LIMITS: proto::node::v1::Limits = proto::node::v1::Limits {
    memory_bytes: 1 << 30,
    cpu_percent: 100,
    max_processes: 256,
    open_files: 4096,
    disk_bytes: 10 << 30,
};

/// Resident memory (bytes) and CPU time (ns) of one process, from `/proc`.
fn process_usage(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024;
    // utime + stime, fields 14 and 15, in clock ticks (100 per second on Linux).
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit(')').next()?.to_owned();
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (rss, ticks * 10_000_000)
}

/// The bytes of files under `dir`, walked by descriptor (links not followed); an error when
/// the tree cannot be measured (deeper than [`beneath::MAX_DEPTH`]). A missing directory
/// holds nothing.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsFd;
    match beneath::open_root(dir) {
        Ok(root) => beneath::disk_usage(root.as_fd()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Why a server with `limits` may not start from `dir`, if it may not: over its disk quota,
/// or a tree that cannot be measured (which would otherwise hide what is under it).
fn over_quota(dir: &Path, limits: &proto::node::v1::Limits) -> Option<String> {
    if limits.disk_bytes == 0 {
        return None;
    }
    match dir_size(dir) {
        Ok(used) if used > limits.disk_bytes => Some(format!(
            "disk_quota: the server's directory holds {} MiB, over its {} MiB",
            used >> 20,
            limits.disk_bytes >> 20
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "disk_quota: the server's directory cannot be measured ({e})"
        )),
    }
}

/// Backups made at once on one node (more wait their turn).
const BACKUPS_AT_ONCE: usize = 2;

/// Seconds a running server has to stop before a restore kills it.
const RESTORE_STOP_GRACE_SECS: u32 = 10;

/// Whether `name` is a server id (a UUID) and so safe as a file name.
fn valid_id(name: &str) -> bool {
    name.len() == 36 && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`), to tell a process from a later
/// one that reused its pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_owned)
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> (String, Option<i32>) {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (format!("exited with status {code}"), Some(code)),
            (None, Some(signal)) => (format!("killed by signal {signal}"), None),
            _ => ("exited".into(), None),
        },
        Err(e) => (format!("cannot wait for the process: {e}"), None),
    }
}

impl Supervisor {
    /// Reads what Wings had before it (re)started, kills processes a previous Wings left
    /// behind and starts those servers again.
    pub fn load(options: &Options) -> Result<(Arc<Supervisor>, Uplink), crate::Error> {
        let data_dir = &options.data_dir;
        let io = |what: &str, e: std::io::Error| crate::Error::Io(format!("{what}: {e}"));
        for dir in [
            data_dir.join("servers"),
            data_dir.join("state"),
            data_dir.join("backups"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir.display().to_string(), e))?;
        }
        // Absolute from here on: server users get their directory as home, which must be.
        let data_dir =
            &std::fs::canonicalize(data_dir).map_err(|e| io(&data_dir.display().to_string(), e))?;
        let mut refuse_start = None;
        let mut uids = None;
        let isolation = if Uid::effective().is_root() {
            // Server processes must be able to reach their directories, not list them.
            for dir in [data_dir.to_path_buf(), data_dir.join("servers")] {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                    .map_err(|e| io(&dir.display().to_string(), e))?;
            }
            for private in ["state", "backups"] {
                std::fs::set_permissions(
                    data_dir.join(private),
                    std::fs::Permissions::from_mode(0o700),
                )
                .map_err(|e| io(private, e))?;
            }
            let cgroups = isolation::Cgroups::detect_at(&options.cgroup_root);
            let missing = cgroups.missing();
            let unconfined = cgroups.unconfined();
            if !unconfined.is_empty() {
                if options.allow_unconfined {
                    tracing::warn!(cgroups = cgroups.version(), missing = ?unconfined, "WINGS_ALLOW_UNCONFINED=1: servers run without these controllers' limits");
                } else {
                    refuse_start = Some(format!(
                        "unconfined: the cgroup controller{} {} {} missing on this node; servers are not started without {} (WINGS_ALLOW_UNCONFINED=1 runs them unconfined)",
                        if unconfined.len() > 1 { "s" } else { "" },
                        unconfined.join(" and "),
                        if unconfined.len() > 1 { "are" } else { "is" },
                        if unconfined.len() > 1 { "them" } else { "it" },
                    ));
                    tracing::error!(cgroups = cgroups.version(), missing = ?unconfined, "required cgroup controllers missing: servers will not start (WINGS_ALLOW_UNCONFINED=1 overrides)");
                }
            }
            uids = Some(
                users::UidPool::load(&data_dir.join("state"), options.uid_range.clone())
                    .map_err(|e| io("state/uids", e))?,
            );
            if missing.is_empty() {
                tracing::info!(
                    cgroups = cgroups.version(),
                    "each server runs as its own user, in its own cgroups"
                );
            } else {
                tracing::warn!(cgroups = cgroups.version(), missing = ?missing, "cgroup controllers missing: their limits are not enforced");
            }
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
            data_dir: data_dir.to_path_buf(),
            isolation,
            refuse_start,
            uids: Mutex::new(uids),
            backing_up: Mutex::new(std::collections::HashSet::new()),
            backup_permits: Arc::new(tokio::sync::Semaphore::new(BACKUPS_AT_ONCE)),
            slots: Mutex::new(HashMap::new()),
            events: events_tx,
            console: console_tx,
            stats: stats.clone(),
        });
        let mut resume = Vec::new();
        let entries = std::fs::read_dir(data_dir.join("servers")).map_err(|e| io("servers", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&name) {
                continue;
            }
            let spec = std::fs::read(supervisor.spec_file(&name))
                .ok()
                .and_then(|bytes| ServerSpec::decode(bytes.as_slice()).ok());
            if let Ok(marker) = std::fs::read_to_string(supervisor.pid_file(&name)) {
                let mut parts = marker.split_whitespace();
                let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
                let started = parts.next().map(str::to_owned);
                if let Some(pid) = pid
                    && started.is_some()
                    && start_time(pid) == started
                {
                    tracing::warn!(server = %name, pid, "killing the process a previous Wings left behind");
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                if !supervisor.kill_everything(&name) {
                    tracing::error!(server = %name, "a process a previous Wings left behind could not be killed");
                }
                let _ = std::fs::remove_file(supervisor.pid_file(&name));
                if spec.is_some() {
                    resume.push(name.clone());
                }
            }
            supervisor.lock().insert(name, Slot::new(spec));
        }
        for id in resume {
            let spec = supervisor.lock().get(&id).and_then(|s| s.spec.clone());
            if let Some(spec) = spec {
                tracing::info!(server = %id, "starting again the server that ran when Wings stopped");
                let limits = spec.limits.unwrap_or(DEFAULT_LIMITS);
                if let Some(reason) = over_quota(&supervisor.server_dir(&id), &limits) {
                    tracing::warn!(server = %id, %reason, "not started again");
                    let mut slots = supervisor.lock();
                    supervisor.set_state(&mut slots, &id, ServerState::Offline, reason);
                    continue;
                }
                if let Err(e) = supervisor.spawn(&id, spec) {
                    tracing::warn!(server = %id, error = %e, "cannot start the server again");
                }
            }
        }
        tokio::spawn(supervisor.clone().report_stats());
        Ok((
            supervisor,
            Uplink {
                events,
                console,
                stats,
            },
        ))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Slots are always left whole; a panic elsewhere does not make them wrong.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn server_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("servers").join(id)
    }

    fn spec_file(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.spec"))
    }

    fn pid_file(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.pid"))
    }

    /// Every server's state and the tail of its console, for a new stream. `before` runs
    /// under the same lock, so nothing reported after the snapshot is also in it.
    pub fn snapshot(&self, before: impl FnOnce()) -> (Vec<ServerStatus>, Vec<ConsoleLine>) {
        let slots = self.lock();
        before();
        let mut statuses = Vec::with_capacity(slots.len());
        let mut backlog = Vec::new();
        for (id, slot) in slots.iter() {
            statuses.push(slot.status(id));
            let skip = slot.ring.len().saturating_sub(BACKLOG_LINES);
            backlog.extend(
                slot.ring
                    .iter()
                    .skip(skip)
                    .map(|(stream, line, at)| ConsoleLine {
                        server_id: id.clone(),
                        line: line.clone(),
                        stream: *stream as i32,
                        at_unix_ms: *at,
                        backlog: true,
                    }),
            );
        }
        (statuses, backlog)
    }

    /// The last console lines of a server (tests and diagnostics).
    pub fn console_tail(&self, id: &str) -> Vec<String> {
        self.lock()
            .get(id)
            .map(|s| s.ring.iter().map(|(_, l, _)| l.clone()).collect())
            .unwrap_or_default()
    }

    fn send(&self, kind: node_message::Kind) {
        // The receiver lives as long as the agent; if it is gone, Wings is stopping.
        let _ = self.events.send(NodeMessage { kind: Some(kind) });
    }

    fn set_state(
        &self,
        slots: &mut HashMap<String, Slot>,
        id: &str,
        state: ServerState,
        reason: String,
    ) {
        if let Some(slot) = slots.get_mut(id) {
            slot.state = state;
            slot.reason = reason;
            if state != ServerState::Crashed && state != ServerState::Offline {
                slot.exit_code = None;
            }
            self.send(node_message::Kind::Status(slot.status(id)));
        }
    }

    /// Queues a command from the panel; commands for one server run in order.
    pub fn handle(self: &Arc<Self>, command: Command) {
        let id = command.server_id.clone();
        if !valid_id(&id) {
            self.ack(&command.id, Err(format!("{id:?} is not a server id")));
            return;
        }
        let mut slots = self.lock();
        let slot = slots.entry(id.clone()).or_insert_with(|| Slot::new(None));
        let queue = match &slot.queue {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().worker(id.clone(), rx));
                slot.queue = Some(tx.clone());
                tx
            }
        };
        drop(slots);
        let _ = queue.send(command);
    }

    async fn worker(self: Arc<Self>, id: String, mut queue: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = queue.recv().await {
            if let Some(command::Action::Restore(restore)) = &command.action {
                // Acked when accepted; the outcome comes as a BackupResult. Nothing else runs
                // for this server meanwhile.
                let accepted = self.backup_path(&id, &restore.backup_id).map(|_| ());
                let ok = accepted.is_ok();
                self.ack(&command.id, accepted);
                if ok {
                    self.restore(&id, &restore.backup_id, &restore.sha256).await;
                }
                continue;
            }
            let deleting = matches!(command.action, Some(command::Action::Delete(_)));
            let result = self.execute(&id, command.action).await;
            if let Err(e) = &result {
                tracing::warn!(server = %id, command = %command.id, error = %e, "command failed");
            }
            self.ack(&command.id, result);
            if deleting {
                break;
            }
        }
    }

    fn ack(&self, command_id: &str, result: Result<(), String>) {
        self.send(node_message::Kind::Ack(CommandAck {
            command_id: command_id.to_owned(),
            ok: result.is_ok(),
            error: result.err().unwrap_or_default(),
        }));
    }

    async fn execute(
        self: &Arc<Self>,
        id: &str,
        action: Option<command::Action>,
    ) -> Result<(), String> {
        match action {
            Some(command::Action::Install(spec)) => self.install(id, spec),
            Some(command::Action::Start(spec)) => self.start(id, spec).await,
            Some(command::Action::Stop(stop)) => self.stop(id, Signal::SIGTERM, stop.grace_secs),
            Some(command::Action::Kill(_)) => self.stop(id, Signal::SIGKILL, 0),
            Some(command::Action::Restart(restart)) => {
                let spec = restart.spec.ok_or("restart without a spec")?;
                if self.is_running(id) {
                    self.stop(id, Signal::SIGTERM, restart.grace_secs)?;
                    self.reaped(
                        id,
                        Duration::from_secs(u64::from(restart.grace_secs)) + REAP_TIMEOUT,
                    )
                    .await?;
                }
                self.start(id, spec).await
            }
            Some(command::Action::Delete(_)) => self.delete(id).await,
            Some(command::Action::Backup(backup)) => self.backup(id, &backup.backup_id),
            Some(command::Action::DeleteBackup(backup)) => {
                let path = self.backup_path(id, &backup.backup_id)?;
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot remove the backup: {e}")),
                }
            }
            Some(command::Action::Restore(_)) => Err("restore is run by the worker".into()),
            Some(command::Action::ConsoleInput(input)) => {
                if input.line.contains(['\n', '\r']) {
                    return Err("a console line cannot hold a line break".into());
                }
                let stdin = self.lock().get(id).and_then(|s| s.stdin.clone());
                let stdin = stdin.ok_or("the server is not running")?;
                stdin
                    .try_send(input.line)
                    .map_err(|_| "the process is not reading its input".to_owned())
            }
            None => Err("unknown command: this Wings is older than the panel".into()),
        }
    }

    fn backup_path(&self, id: &str, backup_id: &str) -> Result<PathBuf, String> {
        if !valid_id(backup_id) {
            return Err(format!("{backup_id:?} is not a backup id"));
        }
        Ok(self
            .data_dir
            .join("backups")
            .join(id)
            .join(format!("{backup_id}.tar.gz")))
    }

    fn backup_result(
        &self,
        id: &str,
        backup_id: &str,
        operation: BackupOperation,
        result: Result<backup::Archive, String>,
    ) {
        let (ok, error, archive) = match result {
            Ok(archive) => (true, String::new(), archive),
            Err(e) => (
                false,
                e,
                backup::Archive {
                    size_bytes: 0,
                    sha256: String::new(),
                },
            ),
        };
        self.send(node_message::Kind::Backup(BackupResult {
            server_id: id.to_owned(),
            backup_id: backup_id.to_owned(),
            operation: operation as i32,
            ok,
            error,
            size_bytes: archive.size_bytes,
            sha256: archive.sha256,
        }));
    }

    /// Starts archiving the server's directory on the blocking pool; the outcome is sent as a
    /// `BackupResult`. The server may keep running meanwhile.
    fn backup(self: &Arc<Self>, id: &str, backup_id: &str) -> Result<(), String> {
        let out = self.backup_path(id, backup_id)?;
        let dir = self.server_dir(id);
        if !dir.is_dir() {
            return Err("the server has no directory on this node".into());
        }
        if !self
            .backing_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned())
        {
            return Err("a backup of this server is being made".into());
        }
        let me = self.clone();
        let owner = self.uid_of(id);
        let budget = self
            .lock()
            .get(id)
            .and_then(|slot| slot.spec.as_ref())
            .and_then(|spec| spec.limits)
            .unwrap_or(DEFAULT_LIMITS)
            .disk_bytes;
        let permits = self.backup_permits.clone();
        let (id, backup_id) = (id.to_owned(), backup_id.to_owned());
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let made = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                backup::create(&dir, &out, owner, budget)
            })
            .await
            .map_err(|e| format!("the backup task failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("cannot archive the server: {e}")));
            me.backing_up
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            match &made {
                Ok(a) => {
                    tracing::info!(server = %id, backup = %backup_id, bytes = a.size_bytes, "backup made")
                }
                Err(e) => {
                    tracing::warn!(server = %id, backup = %backup_id, error = %e, "backup failed")
                }
            }
            me.backup_result(&id, &backup_id, BackupOperation::Create, made);
        });
        Ok(())
    }

    /// Stops the server if it runs, then restores the backup over its directory.
    async fn restore(self: &Arc<Self>, id: &str, backup_id: &str, sha256: &str) {
        let result = self.restore_inner(id, backup_id, sha256).await;
        match &result {
            Ok(_) => tracing::info!(server = %id, backup = %backup_id, "backup restored"),
            Err(e) => {
                tracing::warn!(server = %id, backup = %backup_id, error = %e, "restore refused")
            }
        }
        self.backup_result(id, backup_id, BackupOperation::Restore, result);
    }

    async fn restore_inner(
        self: &Arc<Self>,
        id: &str,
        backup_id: &str,
        sha256: &str,
    ) -> Result<backup::Archive, String> {
        let archive = self.backup_path(id, backup_id)?;
        if !archive.is_file() {
            return Err("no such backup on this node".into());
        }
        if self.is_running(id) {
            self.stop(id, Signal::SIGTERM, RESTORE_STOP_GRACE_SECS)?;
            self.reaped(
                id,
                Duration::from_secs(u64::from(RESTORE_STOP_GRACE_SECS)) + REAP_TIMEOUT,
            )
            .await?;
        }
        // Nothing of the server runs while its tree is replaced.
        self.kill_everything_async(id).await?;
        let dir = self.server_dir(id);
        let expected = sha256.to_owned();
        let owner = self.owner(id)?;
        tokio::task::spawn_blocking(move || {
            backup::restore(&archive, &expected, &dir, owner).map_err(|e| e.to_string())?;
            Ok(backup::Archive {
                size_bytes: 0,
                sha256: expected,
            })
        })
        .await
        .map_err(|e| format!("the restore task failed: {e}"))?
    }

    /// Every two seconds, each running server's memory and CPU (its cgroups when isolated,
    /// else its main process), and every thirty its directory's size, sent as `stats`.
    async fn report_stats(self: Arc<Self>) {
        const EVERY: Duration = Duration::from_secs(2);
        let mut ticker = tokio::time::interval(EVERY);
        let mut cpu_before: HashMap<String, u64> = HashMap::new();
        let mut disk: HashMap<String, u64> = HashMap::new();
        let mut round = 0u64;
        loop {
            ticker.tick().await;
            let running: Vec<(String, u32, proto::node::v1::Limits)> = self
                .lock()
                .iter()
                .filter_map(|(id, slot)| {
                    let limits = slot
                        .spec
                        .as_ref()
                        .and_then(|s| s.limits)
                        .unwrap_or(DEFAULT_LIMITS);
                    slot.pid.map(|pid| (id.clone(), pid, limits))
                })
                .collect();
            cpu_before.retain(|id, _| running.iter().any(|(r, _, _)| r == id));
            if round.is_multiple_of(15) {
                let dirs: Vec<(String, PathBuf)> = running
                    .iter()
                    .map(|(id, _, _)| (id.clone(), self.server_dir(id)))
                    .collect();
                if let Ok(sizes) = tokio::task::spawn_blocking(move || {
                    dirs.into_iter()
                        .map(|(id, dir)| (id, dir_size(&dir).unwrap_or(0)))
                        .collect::<Vec<_>>()
                })
                .await
                {
                    disk = sizes.into_iter().collect();
                }
            }
            round += 1;
            for (id, pid, limits) in running {
                let (memory, cpu_ns) = match &self.isolation {
                    Some(cgroups) => cgroups.usage(&id),
                    None => process_usage(pid),
                };
                let cpu_percent = cpu_before.insert(id.clone(), cpu_ns).map_or(0.0, |before| {
                    cpu_ns.saturating_sub(before) as f64 / EVERY.as_nanos() as f64 * 100.0
                });
                self.stats.put(proto::node::v1::ServerStats {
                    server_id: id.clone(),
                    memory_bytes: memory,
                    memory_limit_bytes: limits.memory_bytes,
                    cpu_percent,
                    disk_bytes: disk.get(&id).copied().unwrap_or(0),
                    disk_limit_bytes: limits.disk_bytes,
                    at_unix_ms: crate::unix_ms(),
                });
            }
        }
    }

    fn is_running(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|s| s.pid.is_some())
    }

    fn save_spec(&self, id: &str, spec: &ServerSpec) -> Result<(), String> {
        let file = self.spec_file(id);
        std::fs::write(&file, spec.encode_to_vec())
            .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| format!("cannot save the server's spec: {e}"))
    }

    /// The server's own user and group when Wings is root (made on first use).
    fn owner(&self, id: &str) -> Result<Option<(u32, u32)>, String> {
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        match uids.as_mut() {
            Some(pool) => {
                let mut uid = pool.allocate(id)?;
                // The uid may have been taken since it was chosen (an administrator, another
                // agent on the host): it stays recorded as used, and the next one is tried.
                for _ in 0..users::TAKEN_RETRIES {
                    match users::ensure_user(id, uid, &self.server_dir(id)) {
                        Ok(ids) => return Ok(Some(ids)),
                        Err(_) if users::taken_elsewhere(id, uid) => uid = pool.reallocate(id)?,
                        Err(e) => return Err(e),
                    }
                }
                Err(format!("uids keep being taken by others (last {uid})"))
            }
            None => Ok(None),
        }
    }

    /// The uid recorded for a server, if Wings gave it one.
    fn uid_of(&self, id: &str) -> Option<u32> {
        let uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        uids.as_ref().and_then(|pool| pool.of(id))
    }

    /// Kills every process of the server (blocking): its cgroups, then anything left running
    /// as its uid. Without root there is neither, and only its process group is signalled.
    /// Says whether none is left.
    fn kill_everything(&self, id: &str) -> bool {
        let in_cgroups = self
            .isolation
            .as_ref()
            .is_none_or(|cgroups| cgroups.kill_all(id));
        let as_uid = self.uid_of(id).is_none_or(isolation::kill_user);
        in_cgroups && as_uid
    }

    /// [`Supervisor::kill_everything`] off the async threads; an error when a process of the
    /// server survived.
    async fn kill_everything_async(self: &Arc<Self>, id: &str) -> Result<(), String> {
        if self.isolation.is_none() {
            return Ok(());
        }
        let me = self.clone();
        let id = id.to_owned();
        match tokio::task::spawn_blocking(move || me.kill_everything(&id)).await {
            Ok(true) => Ok(()),
            _ => Err("a process of the server could not be killed".into()),
        }
    }

    /// Makes the server's directory (0700, given to its user) and returns it with that user.
    /// Mode and owner are set on the opened directory, not by name.
    fn make_dir(&self, id: &str) -> Result<(PathBuf, Option<(u32, u32)>), String> {
        let dir = self.server_dir(id);
        let owner = self.owner(id)?;
        let made = match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => beneath::open_root(&dir),
        }
        .and_then(|fd| {
            rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o700))?;
            if let Some((uid, gid)) = owner {
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )?;
            }
            Ok(())
        });
        made.map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        Ok((dir, owner))
    }

    fn install(&self, id: &str, spec: ServerSpec) -> Result<(), String> {
        self.make_dir(id)?;
        self.save_spec(id, &spec)?;
        let mut slots = self.lock();
        let slot = slots
            .entry(id.to_owned())
            .or_insert_with(|| Slot::new(None));
        slot.spec = Some(spec);
        let state = slot.state;
        self.set_state(&mut slots, id, state, String::new());
        Ok(())
    }

    /// Starts the server: its directory's size is measured on the blocking pool (a tree of
    /// millions of entries must not hold up the node's other work), then [`Supervisor::spawn`].
    async fn start(self: &Arc<Self>, id: &str, spec: ServerSpec) -> Result<(), String> {
        let limits = spec.limits.unwrap_or(DEFAULT_LIMITS);
        let dir = self.server_dir(id);
        let refusal = tokio::task::spawn_blocking(move || over_quota(&dir, &limits))
            .await
            .map_err(|e| format!("the disk check failed: {e}"))?;
        if let Some(reason) = refusal {
            let mut slots = self.lock();
            if slots.contains_key(id) {
                self.set_state(&mut slots, id, ServerState::Offline, reason.clone());
            }
            return Err(reason);
        }
        self.spawn(id, spec)
    }

    /// Starts the server's process with `spec` (its disk quota already checked).
    fn spawn(self: &Arc<Self>, id: &str, spec: ServerSpec) -> Result<(), String> {
        if self.is_running(id) {
            return Err("the server is already running".into());
        }
        if let Some(reason) = &self.refuse_start {
            let mut slots = self.lock();
            if slots.contains_key(id) {
                self.set_state(&mut slots, id, ServerState::Offline, reason.clone());
            }
            return Err(reason.clone());
        }
        let (dir, owner) = self.make_dir(id)?;
        self.save_spec(id, &spec)?;
        {
            let mut slots = self.lock();
            let slot = slots
                .entry(id.to_owned())
                .or_insert_with(|| Slot::new(None));
            slot.spec = Some(spec.clone());
            self.set_state(&mut slots, id, ServerState::Starting, String::new());
        }
        let limits = spec.limits.unwrap_or(DEFAULT_LIMITS);
        // The server's own variables, then what Wings sets itself.
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("PATH".into(), SERVER_PATH.into()));
        env.push(("HOME".into(), dir.to_string_lossy().into_owned()));
        // As root: `wings enter-cgroups` joins the server's cgroups, sets its limits and drops
        // to its user before the program runs; its own environment holds nothing of the
        // tenant's but the encoded variables, applied only at the final exec.
        let mut command = match (owner, &self.isolation) {
            (Some((uid, gid)), Some(cgroups)) => {
                cgroups.create(id, &limits)?;
                let wings = std::env::current_exe()
                    .map_err(|e| format!("cannot find the wings binary: {e}"))?;
                let mut command = tokio::process::Command::new(wings);
                command.arg("enter-cgroups");
                for file in cgroups.procs_files(id) {
                    command.arg("--procs").arg(file);
                }
                command
                    .arg(format!("--uid={uid}"))
                    .arg(format!("--gid={gid}"))
                    .arg(format!("--nofile={}", limits.open_files))
                    .arg("--")
                    .arg(&spec.program)
                    .env_clear()
                    .envs(isolation::encode_env(env.iter().map(|(k, v)| (k, v))));
                command
            }
            _ => {
                let mut command = tokio::process::Command::new(&spec.program);
                command.env_clear().envs(env);
                command
            }
        };
        command
            .args(&spec.args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let oom_before = self.isolation.as_ref().map_or(0, |c| c.oom_kills(id));
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let reason = format!("cannot start {}: {e}", spec.program);
                let mut slots = self.lock();
                self.set_state(&mut slots, id, ServerState::Crashed, reason.clone());
                return Err(reason);
            }
        };
        let pid = child.id().unwrap_or(0);
        let marker = format!("{pid} {}", start_time(pid).unwrap_or_default());
        if let Err(e) = std::fs::write(self.pid_file(id), marker) {
            tracing::warn!(server = %id, error = %e, "cannot write the pid file");
        }
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(id) else {
            return Err("the server was deleted while starting".into());
        };
        slot.generation += 1;
        slot.pid = Some(pid);
        slot.stop_requested = false;
        let generation = slot.generation;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        slot.stdin = child.stdin.take().map(|mut pipe| {
            let (tx, mut rx) = mpsc::channel::<String>(64);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
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
        });
        slot.monitor = Some(tokio::spawn(self.clone().monitor(
            id.to_owned(),
            generation,
            oom_before,
            child,
            stdout,
            stderr,
        )));
        self.set_state(&mut slots, id, ServerState::Running, format!("pid {pid}"));
        tracing::info!(server = %id, pid, "server started");
        Ok(())
    }

    async fn monitor(
        self: Arc<Self>,
        id: String,
        generation: u64,
        oom_before: u64,
        mut child: Child,
        stdout: Option<tokio::process::ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
    ) {
        let out = stdout.map(|s| {
            tokio::spawn(
                self.clone()
                    .read_lines(id.clone(), ConsoleStream::Stdout, s),
            )
        });
        let err = stderr.map(|s| {
            tokio::spawn(
                self.clone()
                    .read_lines(id.clone(), ConsoleStream::Stderr, s),
            )
        });
        let status = child.wait().await;
        // The server is its main process: what it leaves running dies with it.
        if let Err(e) = self.kill_everything_async(&id).await {
            tracing::error!(server = %id, error = %e, "processes outlived the server's main process");
        }
        // Output still in the pipes belongs before the exit; a grandchild holding them open
        // does not hold up the exit report for long.
        for reader in [out, err].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let (mut description, code) = describe_exit(status);
        let oom = self
            .isolation
            .as_ref()
            .is_some_and(|c| c.oom_kills(&id) > oom_before);
        if oom {
            description =
                format!("oom: killed for using more memory than its limit ({description})");
        }
        let _ = std::fs::remove_file(self.pid_file(&id));
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&id) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        slot.pid = None;
        slot.stdin = None;
        slot.exit_code = code;
        let (state, reason) = if slot.stop_requested && !oom {
            (ServerState::Offline, format!("stopped ({description})"))
        } else {
            (ServerState::Crashed, description)
        };
        tracing::info!(server = %id, state = ?state, %reason, "server exited");
        slot.state = state;
        slot.reason = reason;
        self.send(node_message::Kind::Status(slot.status(&id)));
    }

    async fn read_lines(
        self: Arc<Self>,
        id: String,
        stream: ConsoleStream,
        pipe: impl AsyncRead + Unpin,
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

    fn console_line(&self, id: &str, stream: ConsoleStream, line: String) {
        let at = crate::unix_ms();
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(id) else {
            return;
        };
        if slot.ring.len() == RING_LINES {
            slot.ring.pop_front();
        }
        slot.ring.push_back((stream, line.clone(), at));
        let message = NodeMessage {
            kind: Some(node_message::Kind::Console(ConsoleLine {
                server_id: id.to_owned(),
                line,
                stream: stream as i32,
                at_unix_ms: at,
                backlog: false,
            })),
        };
        // Full means the panel is not keeping up: the ring buffer keeps the line.
        let _ = self.console.try_send(message);
    }

    /// Signals the process group; SIGTERM escalates to SIGKILL after `grace_secs`.
    fn stop(self: &Arc<Self>, id: &str, signal: Signal, grace_secs: u32) -> Result<(), String> {
        let mut slots = self.lock();
        let slot = slots.get_mut(id).ok_or("no such server")?;
        let pid = slot.pid.ok_or("the server is not running")?;
        slot.stop_requested = true;
        let generation = slot.generation;
        if signal == Signal::SIGTERM {
            self.set_state(&mut slots, id, ServerState::Stopping, String::new());
        }
        drop(slots);
        killpg(Pid::from_raw(pid as i32), signal)
            .map_err(|e| format!("cannot signal the process: {e}"))?;
        if signal == Signal::SIGTERM {
            let me = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(grace_secs))).await;
                let still = me
                    .lock()
                    .get(&id)
                    .is_some_and(|s| s.generation == generation && s.pid == Some(pid));
                if still {
                    tracing::warn!(server = %id, pid, "grace period over: SIGKILL");
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            });
        }
        Ok(())
    }

    /// Waits until the server's process has been reaped.
    async fn reaped(&self, id: &str, within: Duration) -> Result<(), String> {
        let monitor = self.lock().get_mut(id).and_then(|s| s.monitor.take());
        if let Some(monitor) = monitor {
            tokio::time::timeout(within, monitor)
                .await
                .map_err(|_| "the process did not exit in time".to_owned())?
                .map_err(|e| format!("the monitor failed: {e}"))?;
        }
        Ok(())
    }

    async fn delete(self: &Arc<Self>, id: &str) -> Result<(), String> {
        if self.is_running(id) {
            self.stop(id, Signal::SIGKILL, 0)?;
            self.reaped(id, REAP_TIMEOUT).await?;
        }
        self.kill_everything_async(id).await?;
        self.lock().remove(id);
        let dir = self.server_dir(id);
        tokio::task::spawn_blocking(move || beneath::remove_tree(&dir))
            .await
            .map_err(|e| format!("the removal task failed: {e}"))?
            .map_err(|e| format!("cannot remove the server's directory: {e}"))?;
        for file in [self.spec_file(id), self.pid_file(id)] {
            let _ = std::fs::remove_file(file);
        }
        if let Some(cgroups) = self.isolation.clone() {
            let id = id.to_owned();
            let uid = self.uid_of(&id);
            let _ = tokio::task::spawn_blocking(move || {
                cgroups.remove(&id);
                users::remove_user(&id, uid);
            })
            .await;
        }
        let backups = self.data_dir.join("backups").join(id);
        beneath::remove_tree(&backups)
            .map_err(|e| format!("cannot remove {}: {e}", backups.display()))?;
        tracing::info!(server = %id, "server deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However long the panel is away, what waits to be sent about usage is one report per
    /// running server, the newest (it used to be one more queued message every two seconds).
    #[tokio::test(start_paused = true)]
    async fn usage_waiting_for_the_panel_stays_one_report_per_server() {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            data_dir: tmp.path().join("wings"),
            uid_range: users::DEFAULT_UID_RANGE,
            allow_unconfined: true,
            cgroup_root: tmp.path().join("no-cgroups"),
        };
        let (supervisor, uplink) = Supervisor::load(&options).unwrap();
        let id = "0190a0a0-0000-7000-8000-000000000001";
        let mut slot = Slot::new(None);
        slot.pid = Some(std::process::id());
        supervisor.lock().insert(id.to_owned(), slot);
        let mut newest = 0;
        for _ in 0..100 {
            // Paused time: the clock moves as soon as nothing else can (the disk walk of
            // every 15th round runs on a real thread, and holds it until it is done).
            tokio::time::sleep(Duration::from_secs(2)).await;
            newest = newest.max(crate::unix_ms());
        }
        assert_eq!(uplink.events.len(), 0, "no usage report queued as an event");
        assert_eq!(uplink.stats.len(), 1, "one report for the one server");
        let report = uplink.stats.take().remove(0);
        assert_eq!(report.server_id, id);
        assert!(report.at_unix_ms <= newest);
        assert!(uplink.stats.is_empty());
    }
}
