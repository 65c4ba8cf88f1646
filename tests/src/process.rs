//! The real binaries as child processes: started with an explicit environment, their stderr
//! kept in a log file, stopped with SIGTERM (or killed) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of a workspace binary built next to the test binary (`target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (scripts/test.sh runs cargo build)",
        path.display()
    );
    path
}

/// A running child process with its stderr collected.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    name: String,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `bin` with `args` and exactly `env` (plus PATH), in `cwd`.
    pub fn start(bin: &str, args: &[&str], env: &[(String, String)], cwd: &Path) -> Proc {
        Proc::spawn(Command::new(bin_path(bin)), bin, args, env, cwd)
    }

    /// Like [`Proc::start`] for a program found on PATH (HAProxy, say).
    pub fn start_program(
        program: &str,
        args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> Proc {
        Proc::spawn(Command::new(program), program, args, env, cwd)
    }

    fn spawn(
        mut command: Command,
        bin: &str,
        args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> Proc {
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Proc {
            child,
            log,
            name: bin.to_owned(),
            reader: Some(reader),
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (VmRSS) in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Waits until a stderr line contains `needle`; returns that line.
    pub async fn wait_for_line(&self, needle: &str, cap: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                start.elapsed() < cap,
                "{} never logged {needle:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status once the process has exited (with all its stderr in the log).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten()?;
        // Everything it wrote is in the log once its stderr reaches end of file.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Waits for the process to exit by itself (panics after `cap`).
    pub async fn wait_exit(&mut self, cap: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                start.elapsed() < cap,
                "{} still running after {cap:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGKILL, no chance to clean up (a crash, a power cut).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (e.g. `-KILL`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Proc {
    /// Stops the process; when a test is failing, prints the end of its log first, so a CI
    /// failure says what the panel or the node was doing.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- the last lines of {} (pid {}) ---\n{tail}\n---",
                self.name,
                self.child.id()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `bin args` to completion with `env`; returns (success, stdout, stderr).
pub fn run(
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
    cwd: &Path,
) -> (bool, String, String) {
    let output = Command::new(bin_path(bin))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The environment of `api serve` for the test PKI, a database and a gRPC address (`:0` picks
/// a free port).
pub fn panel_env(pki: &crate::TestPki, db_url: &str, grpc: &str) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), db_url.to_owned()),
        ("PANEL_GRPC_ADDR".into(), grpc.to_owned()),
        ("PANEL_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        (
            "PANEL_CA_CERT".into(),
            pki.layout.ca_cert().display().to_string(),
        ),
        (
            "PANEL_TLS_CERT_FILE".into(),
            pki.layout.server_cert().display().to_string(),
        ),
        (
            "PANEL_TLS_KEY_FILE".into(),
            pki.layout.server_key().display().to_string(),
        ),
    ]
}

/// Starts `api serve` and returns it with its gRPC address, read from its log.
pub async fn start_panel(dir: &Path, env: &[(String, String)]) -> (Proc, String) {
    let panel = Proc::start("api", &["serve"], env, dir);
    let line = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    // Text (`grpc_addr=…`) in development, one JSON object per line in production.
    let grpc = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(json) => json["grpc_addr"].as_str().map(str::to_owned),
        Err(_) => line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("grpc_addr="))
            .map(str::to_owned),
    }
    .expect("grpc_addr in the log line");
    (panel, grpc)
}

/// Resident memory (VmRSS) of a process in KiB, from `/proc/<pid>/status`; 0 if unknown.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
