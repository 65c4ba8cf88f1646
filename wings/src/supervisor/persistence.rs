//! What Wings knows survives its own restart: `state/<id>.spec` holds each server's spec and
//! `state/<id>.pid` marks a running process (its pid and start time, so a later process that
//! reused the pid is not mistaken for it). A pid file found at start-up means Wings died while
//! the server ran: the process it left (unsupervised, its console pipe gone) is killed and the
//! server queued to start again, so the panel sees it running as before.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use prost::Message;
use proto::node::v1::ServerSpec;

use super::launch::Launch;
use super::{Supervisor, valid_id};
use crate::Error;

impl<L: Launch> Supervisor<L> {
    pub(super) fn spec_file(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.spec"))
    }

    pub(super) fn pid_file(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.pid"))
    }

    /// Where a confined server's helper reports its exec (root only: `state/` is 0700).
    pub(super) fn exec_socket(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.exec"))
    }

    /// Saves the server's spec (0600: it holds the server's variables). Blocking.
    pub(super) fn save_spec(&self, id: &str, spec: &ServerSpec) -> Result<(), Error> {
        let file = self.spec_file(id);
        std::fs::write(&file, spec.encode_to_vec())
            .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)))
            .map_err(Error::server("cannot save the server's spec"))
    }

    /// Marks `pid` as the server's running process.
    pub(super) fn write_pid(&self, id: &str, pid: u32) {
        let marker = format!("{pid} {}", start_time(pid).unwrap_or_default());
        if let Err(e) = std::fs::write(self.pid_file(id), marker) {
            tracing::warn!(server = %id, error = %e, "cannot write the pid file");
        }
    }

    /// Reads the servers a previous Wings knew (blocking, at start-up): kills what it left
    /// running and returns the ids of those to start again, with every server in its slot.
    pub(super) fn recover(self: &Arc<Self>) -> Result<Vec<String>, Error> {
        let servers = self.data_dir.join("servers");
        let entries =
            std::fs::read_dir(&servers).map_err(|e| Error::Io(format!("servers: {e}")))?;
        let mut resume = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&name) {
                continue;
            }
            let spec = std::fs::read(self.spec_file(&name))
                .ok()
                .and_then(|bytes| ServerSpec::decode(bytes.as_slice()).ok());
            if let Ok(marker) = std::fs::read_to_string(self.pid_file(&name)) {
                self.kill_leftover(&name, &marker);
                let _ = std::fs::remove_file(self.pid_file(&name));
                if spec.is_some() {
                    resume.push(name.clone());
                }
            }
            self.lock().insert(name, super::Entry::new(spec));
        }
        Ok(resume)
    }

    /// Kills the process a pid marker names (if it is still that process), then everything
    /// else of the server.
    fn kill_leftover(&self, id: &str, marker: &str) {
        let mut parts = marker.split_whitespace();
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let started = parts.next().map(str::to_owned);
        if let Some(pid) = pid
            && started.is_some()
            && start_time(pid) == started
        {
            tracing::warn!(server = %id, pid, "killing the process a previous Wings left behind");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if !self.kill_everything(id) {
            tracing::error!(server = %id, "a process a previous Wings left behind could not be killed");
        }
    }

    /// Makes the server's directory (0700, given to its user) and returns it with that user
    /// (made on first use). Mode and owner are set on the opened directory, not by name.
    /// Blocking (it may run `useradd`).
    pub(super) fn make_dir(&self, id: &str) -> Result<(PathBuf, Option<(u32, u32)>), Error> {
        let dir = self.server_dir(id);
        let owner = self.owner(id)?;
        let made = match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => crate::beneath::open_root(&dir),
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
        made.map_err(Error::server(format!("cannot prepare {}", dir.display())))?;
        Ok((dir, owner))
    }

    /// Removes what Wings keeps about a server besides its directory. Blocking.
    pub(super) fn forget_files(&self, id: &str) {
        for file in [self.spec_file(id), self.pid_file(id), self.exec_socket(id)] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The start time of `pid` (in clock ticks since boot), to tell a process from a later one
/// that reused its pid.
fn start_time(pid: u32) -> Option<String> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    Some(process.stat().ok()?.starttime.to_string())
}

/// Creates Wings' directories under `data_dir` and returns it absolute (server users get
/// their directory as home, which must be).
pub(super) fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, Error> {
    let io = |what: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", what.display()));
    for dir in [
        data_dir.join("servers"),
        data_dir.join("state"),
        data_dir.join("backups"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    std::fs::canonicalize(data_dir).map_err(|e| io(data_dir, e))
}

/// As root: server processes may reach their directories, not list them; `state` and
/// `backups` are Wings' own.
pub(super) fn protect_data_dir(data_dir: &Path) -> Result<(), Error> {
    let set = |dir: PathBuf, mode: u32| {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))
    };
    set(data_dir.to_path_buf(), 0o711)?;
    set(data_dir.join("servers"), 0o711)?;
    set(data_dir.join("state"), 0o700)?;
    set(data_dir.join("backups"), 0o700)
}
