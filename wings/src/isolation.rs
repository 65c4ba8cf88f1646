//! Keeping tenants apart on one node (when Wings runs as root): a system user per server,
//! Linux cgroups for memory, CPU and process count, and the limits each server runs under.
//!
//! cgroup v2 is used where its controllers are available, else the v1 hierarchies; a missing
//! controller is reported by name (at start-up and in `wings check`) and its limit is not
//! enforced rather than silently pretended.

use std::path::{Path, PathBuf};

use proto::node::v1::Limits;

/// The controllers Wings uses.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The system user of a server: `mamba-` and 24 hex digits of its id (the random end of it).
pub fn user_name(server_id: &str) -> String {
    let hex: String = server_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("mamba-{}", &hex[hex.len().saturating_sub(24)..])
}

/// Makes (or finds) the server's system user and group: no login shell, home = its directory.
pub fn ensure_user(server_id: &str, home: &Path) -> Result<(u32, u32), String> {
    let name = user_name(server_id);
    if let Ok(Some(user)) = nix::unistd::User::from_name(&name) {
        return Ok((user.uid.as_raw(), user.gid.as_raw()));
    }
    let status = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg("--home-dir")
        .arg(home)
        .arg(&name)
        .status()
        .map_err(|e| format!("cannot run useradd: {e}"))?;
    if !status.success() {
        return Err(format!("useradd {name} failed ({status})"));
    }
    match nix::unistd::User::from_name(&name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        _ => Err(format!("user {name} was not created")),
    }
}

/// Removes the server's system user and group, if there are.
pub fn remove_user(server_id: &str) {
    let name = user_name(server_id);
    if let Ok(Some(_)) = nix::unistd::User::from_name(&name) {
        // --force: a process of its own that is still being reaped must not keep it.
        let _ = std::process::Command::new("userdel")
            .arg("--force")
            .arg(&name)
            .status();
    }
}

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
    /// Finds the cgroup hierarchy: v2 when it offers memory and pids, else v1.
    pub fn detect() -> Cgroups {
        let base = Path::new("/sys/fs/cgroup");
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

    /// Kills every process in the server's cgroups (whatever process group it moved to),
    /// waits for them to be gone (up to two seconds), and removes the cgroups.
    pub fn remove(&self, server_id: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let pids: Vec<i32> = self
                .procs_files(server_id)
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .flat_map(|t| {
                    t.lines()
                        .filter_map(|l| l.trim().parse().ok())
                        .collect::<Vec<i32>>()
                })
                .collect();
            if pids.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for controller in self.present() {
            let _ = std::fs::remove_dir(self.dir(&controller, server_id));
        }
    }
}

/// `wings enter-cgroups`: writes this process's pid to each `procs` file, then execs
/// `command`. Runs between fork and the server's program, so no process of the server ever
/// runs outside its cgroups (moving it after spawning would race its first forks).
pub fn enter_and_exec(procs: &[PathBuf], command: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let pid = std::process::id().to_string();
    for file in procs {
        if let Err(e) = std::fs::write(file, &pid) {
            eprintln!("wings: cannot join {}: {e}", file.display());
            return std::process::ExitCode::from(126);
        }
    }
    let Some((program, args)) = command.split_first() else {
        return std::process::ExitCode::from(127);
    };
    let error = std::process::Command::new(program).args(args).exec();
    eprintln!("wings: cannot run {}: {error}", program.to_string_lossy());
    std::process::ExitCode::from(127)
}
