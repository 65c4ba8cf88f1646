//! Keeping tenants apart on one node (when Wings runs as root): Linux cgroups for memory,
//! CPU and process count, the way a server's process is started inside them, and the way all
//! of a server's processes are killed.
//!
//! cgroup v2 is used where its controllers are available, else the v1 hierarchies (with the
//! v1 freezer where it is mounted). Memory and pids are required: without them Wings refuses
//! to start servers unless `WINGS_ALLOW_UNCONFINED=1` (see [`Cgroups::unconfined`]).
//!
//! A server's process chain is `wings enter-cgroups` (root, with no variable of the tenant's
//! in its environment: the server's variables travel encoded in `WINGS_SERVER_ENV_<n>`), which
//! joins the cgroups, sets the open-files limit, drops to the server's uid and gid with no
//! supplementary groups and no new privileges, and only then execs the program with the
//! server's environment. No root helper ever sees a loader variable of the tenant's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::node::v1::Limits;

/// The controllers Wings uses.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The controllers without which a server is not confined.
pub const REQUIRED: [&str; 2] = ["memory", "pids"];
/// The prefix of the variables that carry a server's environment, hex-encoded, through
/// `enter-cgroups` (`WINGS_SERVER_ENV_0`, `_1`, …).
pub const SERVER_ENV_VAR: &str = "WINGS_SERVER_ENV";
/// How long killing a server's processes may take before Wings gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// Where the cgroup controllers are.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// One unified hierarchy with these controllers.
    V2 {
        /// The hierarchy's root.
        root: PathBuf,
        /// The controllers Wings needs that it offers.
        controllers: Vec<String>,
    },
    /// One hierarchy per controller (`/sys/fs/cgroup/<controller>`).
    V1 {
        /// `/sys/fs/cgroup`.
        root: PathBuf,
        /// The controllers Wings needs that are mounted.
        controllers: Vec<String>,
    },
}

impl Cgroups {
    /// Finds the cgroup hierarchy under `/sys/fs/cgroup`.
    pub fn detect() -> Cgroups {
        Cgroups::detect_at(Path::new("/sys/fs/cgroup"))
    }

    /// Finds the cgroup hierarchy under `base`: v2 when it offers memory and pids, else v1.
    pub fn detect_at(base: &Path) -> Cgroups {
        for root in [base.to_path_buf(), base.join("unified")] {
            if let Ok(list) = std::fs::read_to_string(root.join("cgroup.controllers")) {
                let controllers: Vec<String> = list.split_whitespace().map(str::to_owned).collect();
                if controllers.iter().any(|c| c == "memory")
                    && controllers.iter().any(|c| c == "pids")
                {
                    return Cgroups::V2 {
                        root,
                        controllers: CONTROLLERS
                            .iter()
                            .filter(|c| controllers.iter().any(|have| have == *c))
                            .map(|c| (*c).to_owned())
                            .collect(),
                    };
                }
            }
        }
        let controllers = CONTROLLERS
            .iter()
            .filter(|c| base.join(c).join("cgroup.procs").exists())
            .map(|c| (*c).to_owned())
            .collect();
        Cgroups::V1 {
            root: base.to_path_buf(),
            controllers,
        }
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1 { .. } => "v1",
        }
    }

    /// Controllers Wings needs but this machine lacks.
    pub fn missing(&self) -> Vec<&'static str> {
        let have = match self {
            Cgroups::V2 { controllers, .. } | Cgroups::V1 { controllers, .. } => controllers,
        };
        CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect()
    }

    /// The required controllers this machine lacks (empty: servers are confined).
    pub fn unconfined(&self) -> Vec<&'static str> {
        self.missing()
            .into_iter()
            .filter(|c| REQUIRED.contains(c))
            .collect()
    }

    /// The v1 freezer's directory for a server, when the freezer is mounted.
    fn freezer(&self, server_id: &str) -> Option<PathBuf> {
        match self {
            Cgroups::V1 { root, .. } if root.join("freezer/cgroup.procs").exists() => {
                Some(root.join("freezer").join("mamba").join(server_id))
            }
            _ => None,
        }
    }

    fn dir(&self, controller: &str, server_id: &str) -> PathBuf {
        match self {
            Cgroups::V2 { root, .. } => root.join("mamba").join(server_id),
            Cgroups::V1 { root, .. } => root.join(controller).join("mamba").join(server_id),
        }
    }

    fn present(&self) -> Vec<String> {
        match self {
            Cgroups::V2 { controllers, .. } | Cgroups::V1 { controllers, .. } => {
                controllers.clone()
            }
        }
    }

    /// Creates the server's cgroups with `limits`.
    pub fn create(&self, server_id: &str, limits: &Limits) -> Result<(), String> {
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), value)
                .map_err(|e| format!("cannot set {}/{file}: {e}", dir.display()))
        };
        if let Cgroups::V2 { root, controllers } = self {
            let parent = root.join("mamba");
            std::fs::create_dir_all(&parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
            let _ = std::fs::write(root.join("cgroup.subtree_control"), enable.join(" "));
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), enable.join(" "));
        }
        for controller in self.present() {
            let dir = self.dir(&controller, server_id);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            match (self, controller.as_str()) {
                (Cgroups::V2 { .. }, "memory") => {
                    write(&dir, "memory.max", limits.memory_bytes.to_string())?;
                    let _ = write(&dir, "memory.swap.max", "0".into());
                }
                (Cgroups::V1 { .. }, "memory") => {
                    write(
                        &dir,
                        "memory.limit_in_bytes",
                        limits.memory_bytes.to_string(),
                    )?;
                    let _ = write(
                        &dir,
                        "memory.memsw.limit_in_bytes",
                        limits.memory_bytes.to_string(),
                    );
                }
                (_, "pids") => write(&dir, "pids.max", limits.max_processes.to_string())?,
                (Cgroups::V2 { .. }, "cpu") => {
                    write(
                        &dir,
                        "cpu.max",
                        format!("{} 100000", u64::from(limits.cpu_percent) * 1000),
                    )?;
                }
                (Cgroups::V1 { .. }, "cpu") => {
                    write(&dir, "cpu.cfs_period_us", "100000".into())?;
                    write(
                        &dir,
                        "cpu.cfs_quota_us",
                        (u64::from(limits.cpu_percent) * 1000).to_string(),
                    )?;
                }
                _ => {}
            }
        }
        if let Some(freezer) = self.freezer(server_id) {
            std::fs::create_dir_all(&freezer)
                .map_err(|e| format!("cannot create {}: {e}", freezer.display()))?;
        }
        // A Wings that died between freezing and thawing must not leave the new process frozen.
        if let Some(freeze) = self.freeze_switch(server_id) {
            freeze.set(false, Instant::now());
        }
        Ok(())
    }

    /// The `cgroup.procs` files of the server's cgroups, for `wings enter-cgroups`.
    pub fn procs_files(&self, server_id: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V2 { .. } => vec![self.dir("memory", server_id).join("cgroup.procs")],
            Cgroups::V1 { .. } => self
                .present()
                .iter()
                .map(|c| self.dir(c, server_id).join("cgroup.procs"))
                .chain(self.freezer(server_id).map(|f| f.join("cgroup.procs")))
                .collect(),
        }
    }

    /// How many times the kernel's OOM killer acted in the server's memory cgroup.
    pub fn oom_kills(&self, server_id: &str) -> u64 {
        let (dir, file) = match self {
            Cgroups::V2 { .. } => (self.dir("memory", server_id), "memory.events"),
            Cgroups::V1 { .. } => (self.dir("memory", server_id), "memory.oom_control"),
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Memory in use now (bytes) and CPU used so far (nanoseconds), where known.
    pub fn usage(&self, server_id: &str) -> (u64, u64) {
        let read = |path: PathBuf| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| {
                    t.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        match self {
            Cgroups::V2 { .. } => {
                let dir = self.dir("memory", server_id);
                let cpu_usec = std::fs::read_to_string(dir.join("cpu.stat"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("usage_usec "))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                (read(dir.join("memory.current")), cpu_usec * 1000)
            }
            Cgroups::V1 { root, .. } => (
                read(self.dir("memory", server_id).join("memory.usage_in_bytes")),
                read(
                    root.join("cpuacct")
                        .join("mamba")
                        .join(server_id)
                        .join("cpuacct.usage"),
                ),
            ),
        }
    }

    /// The pids in the server's cgroups now.
    fn pids(&self, server_id: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files(server_id)
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How the server's cgroup is frozen: the v2 `cgroup.freeze`, else the v1 freezer.
    fn freeze_switch(&self, server_id: &str) -> Option<Freeze> {
        match self {
            Cgroups::V2 { .. } => Some(Freeze {
                dir: self.dir("memory", server_id),
                file: "cgroup.freeze",
                frozen: "1",
                thawed: "0",
            }),
            Cgroups::V1 { .. } => self.freezer(server_id).map(|dir| Freeze {
                dir,
                file: "freezer.state",
                frozen: "FROZEN",
                thawed: "THAWED",
            }),
        }
    }

    /// Kills every process in the server's cgroups, whatever session or process group it
    /// moved to: `cgroup.kill` on v2 (Linux 5.14+); else the cgroup is frozen first (v2
    /// `cgroup.freeze`, the v1 freezer), so nothing forks between reading the list and the
    /// signals, each process killed, then thawed. Waits (up to a few seconds) until the
    /// cgroups are empty and says whether they are.
    pub fn kill_all(&self, server_id: &str) -> bool {
        let deadline = Instant::now() + KILL_WAIT;
        if let Cgroups::V2 { .. } = self {
            let _ = std::fs::write(self.dir("memory", server_id).join("cgroup.kill"), "1");
        }
        let freeze = self.freeze_switch(server_id);
        loop {
            if self.pids(server_id).is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            if let Some(freeze) = &freeze {
                freeze.set(true, deadline);
            }
            for pid in self.pids(server_id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(freeze) = &freeze {
                freeze.set(false, deadline);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server's processes and removes its cgroups.
    pub fn remove(&self, server_id: &str) {
        self.kill_all(server_id);
        for controller in self.present() {
            let _ = std::fs::remove_dir(self.dir(&controller, server_id));
        }
        if let Some(freezer) = self.freezer(server_id) {
            let _ = std::fs::remove_dir(freezer);
        }
    }
}

/// A cgroup's freeze switch.
struct Freeze {
    dir: PathBuf,
    file: &'static str,
    frozen: &'static str,
    thawed: &'static str,
}

impl Freeze {
    /// Freezes or thaws, waiting (until `deadline`) for a freeze to take hold.
    fn set(&self, frozen: bool, deadline: Instant) {
        let value = if frozen { self.frozen } else { self.thawed };
        if std::fs::write(self.dir.join(self.file), value).is_err() || !frozen {
            return;
        }
        let settled = || match self.file {
            "freezer.state" => std::fs::read_to_string(self.dir.join(self.file))
                .is_ok_and(|s| s.trim() != "FREEZING"),
            _ => std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        };
        while Instant::now() < deadline && !settled() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Kills every process whose real, effective or saved uid is `uid` (how a server's processes
/// are found without a cgroup controller, and the sweep after the cgroup kill): first in one
/// step through `wings kill-user` (which becomes `uid` and signals every process it may, so
/// none can fork meanwhile), then by `/proc` until none is left or a few seconds have passed.
/// Says whether none is left.
pub fn kill_user(uid: u32) -> bool {
    if uid == 0 {
        return false;
    }
    if !processes_of(uid).is_empty()
        && let Ok(wings) = std::env::current_exe()
    {
        let _ = std::process::Command::new(wings)
            .arg("kill-user")
            .arg(format!("--uid={uid}"))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes running with `uid` as their real, effective or saved uid.
pub fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter(|process| {
            process
                .status()
                .is_ok_and(|s| [s.ruid, s.euid, s.suid].contains(&uid))
        })
        .map(|process| process.pid)
        .collect()
}

/// Becomes `uid`:`gid` for good: no supplementary groups, real, effective and saved ids all
/// changed (group first, while root may still change it).
fn become_user(uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> nix::Result<()> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)
}

/// `wings kill-user`: becomes `uid` (no groups, no way back) and sends SIGKILL to every
/// process it may signal (`kill(-1)`): every process of that uid, itself included, in one step
/// the kernel takes without letting any of them fork meanwhile.
pub fn kill_as_user(uid: u32) -> std::process::ExitCode {
    use nix::unistd::{Gid, Uid};
    if uid == 0 {
        return std::process::ExitCode::from(126);
    }
    if become_user(Uid::from_raw(uid), Gid::from_raw(uid)).is_err() {
        return std::process::ExitCode::from(126);
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-1),
        nix::sys::signal::Signal::SIGKILL,
    );
    std::process::ExitCode::SUCCESS
}

/// Longest value of one environment variable the kernel takes (`MAX_ARG_STRLEN` is 128 KiB),
/// with room for the name.
const ENV_CHUNK: usize = 120 * 1024;

/// A server's environment as variables for [`SERVER_ENV_VAR`]: `key=value` pairs,
/// NUL-separated, hex-encoded, cut into `WINGS_SERVER_ENV_0`, `_1`, … of at most
/// [`ENV_CHUNK`] characters each.
pub fn encode_env<'a>(
    vars: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut raw = Vec::new();
    for (key, value) in vars {
        raw.extend_from_slice(key.as_bytes());
        raw.push(b'=');
        raw.extend_from_slice(value.as_bytes());
        raw.push(0);
    }
    let encoded = hex::encode(raw);
    encoded
        .as_bytes()
        .chunks(ENV_CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            (
                format!("{SERVER_ENV_VAR}_{i}"),
                String::from_utf8_lossy(chunk).into_owned(),
            )
        })
        .collect()
}

/// The encoded environment from `lookup` (the chunks [`encode_env`] made, in order).
pub fn read_env(lookup: impl Fn(&str) -> Option<String>) -> Option<Vec<(OsString, OsString)>> {
    let mut encoded = String::new();
    for i in 0.. {
        match lookup(&format!("{SERVER_ENV_VAR}_{i}")) {
            Some(chunk) => encoded.push_str(&chunk),
            None => break,
        }
    }
    decode_env(&encoded)
}

/// The pairs the hex text of [`encode_env`] holds.
fn decode_env(encoded: &str) -> Option<Vec<(OsString, OsString)>> {
    let raw = hex::decode(encoded).ok()?;
    raw.split(|b| *b == 0)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let at = pair.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(pair[..at].to_vec()),
                OsString::from_vec(pair[at + 1..].to_vec()),
            ))
        })
        .collect()
}

/// Who a server's process becomes, and what it may hold.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The server's uid.
    pub uid: u32,
    /// The server's gid.
    pub gid: u32,
    /// The open-files limit (soft and hard).
    pub open_files: u64,
}

/// `wings enter-cgroups`: writes this process's pid to each `procs` file, sets the open-files
/// limit, drops to the server's user (no supplementary groups, no new privileges; a root uid
/// is refused), then execs `command` with exactly the environment decoded from
/// [`SERVER_ENV_VAR`]. Runs between fork and the server's program, so no process of the
/// server ever runs outside its cgroups, and nothing of the tenant's runs as root.
///
/// With `exec_report`, it first connects (as root) to that Unix socket over a close-on-exec
/// descriptor: a successful exec closes it with nothing said; a failure writes the reason.
pub fn enter_and_exec(
    procs: &[PathBuf],
    identity: Identity,
    exec_report: Option<&Path>,
    command: &[OsString],
) -> std::process::ExitCode {
    use nix::unistd::{Gid, Uid};
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    // The standard library opens sockets close-on-exec.
    let report = match exec_report.map(std::os::unix::net::UnixStream::connect) {
        Some(Err(e)) => {
            eprintln!("wings: cannot report the exec: {e}");
            return std::process::ExitCode::from(126);
        }
        Some(Ok(stream)) => Some(stream),
        None => None,
    };
    let tell = |reason: &str| {
        if let Some(mut stream) = report.as_ref() {
            let _ = stream.write_all(reason.as_bytes());
        }
    };
    let fail = |what: String| {
        tell(&what);
        eprintln!("wings: {what}");
        std::process::ExitCode::from(126)
    };
    let Some(env) = read_env(|name| std::env::var(name).ok()) else {
        return fail(format!("{SERVER_ENV_VAR} is missing or malformed"));
    };
    let pid = std::process::id().to_string();
    for file in procs {
        if let Err(e) = std::fs::write(file, &pid) {
            return fail(format!("cannot join {}: {e}", file.display()));
        }
    }
    if identity.uid == 0 || identity.gid == 0 {
        return fail("refusing to run a server as root".into());
    }
    let (uid, gid) = (Uid::from_raw(identity.uid), Gid::from_raw(identity.gid));
    let dropped = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        identity.open_files,
        identity.open_files,
    )
    .and_then(|()| become_user(uid, gid))
    .and_then(|()| nix::sys::prctl::set_no_new_privs());
    if let Err(e) = dropped {
        return fail(format!("cannot drop to the server's user: {e}"));
    }
    if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return fail("root could be regained: refusing to run".into());
    }
    let Some((program, args)) = command.split_first() else {
        tell("no program to run");
        return std::process::ExitCode::from(127);
    };
    let error = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .exec();
    tell(&error.to_string());
    eprintln!("wings: cannot run {}: {error}", program.to_string_lossy());
    std::process::ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_round_trips_through_one_variable() {
        let vars = [
            ("LD_PRELOAD".to_owned(), "/x.so".to_owned()),
            ("MOTD".to_owned(), "a=b c\u{e9}".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ];
        let encoded = encode_env(vars.iter().map(|(k, v)| (k, v)));
        assert_eq!(encoded.len(), 1);
        assert!(encoded[0].1.bytes().all(|b| b.is_ascii_hexdigit()));
        let lookup = |vars: &[(String, String)], name: &str| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        };
        let decoded = read_env(|name| lookup(&encoded, name)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1], ("MOTD".into(), "a=b c\u{e9}".into()));
        assert_eq!(decoded[2], ("EMPTY".into(), "".into()));
        assert!(decode_env("zz").is_none());
        // An environment larger than one variable may hold is cut into several.
        let big = [("BIG".to_owned(), "x".repeat(200 * 1024))];
        let encoded = encode_env(big.iter().map(|(k, v)| (k, v)));
        assert_eq!(encoded.len(), 4);
        assert!(encoded.iter().all(|(_, v)| v.len() <= ENV_CHUNK));
        let decoded = read_env(|name| lookup(&encoded, name)).unwrap();
        assert_eq!(decoded[0].1.len(), 200 * 1024);
    }
}
