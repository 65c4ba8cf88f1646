//! Starting a server's process, behind the [`Launch`] trait so the supervisor's state machine
//! runs in tests without processes. [`Host`] is the real one.
//!
//! Unconfined (Wings not root), the program is spawned directly: `spawn` returns only once
//! the program was executed (the standard library learns an exec error through a
//! close-on-exec pipe), so the program runs when the spawn succeeds.
//!
//! Confined, the child is `wings enter-cgroups` (root), which joins the cgroups, drops to the
//! server's user and only then execs the program. It reports back the way the standard
//! library and runc do: it connects, while still root, to a Unix socket that only root can
//! reach (`state/<id>.exec`), over a close-on-exec descriptor. A successful exec closes the
//! connection with nothing said; a failure sends the reason first. So the supervisor reports
//! `running` once the program itself runs, and a failed exec as a failed start.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::UnixListener;
use tokio::process::Child;

use crate::isolation;

/// Longest reason a helper may send about a failed exec.
const MAX_REASON_BYTES: u64 = 4096;
/// How long a helper may take to exec the program before the start counts as failed.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The program, executed directly (never through a shell).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub dir: PathBuf,
    /// Its cgroups and user, when Wings is root.
    pub confine: Option<Confine>,
}

/// How a confined server's process is set up by `wings enter-cgroups`.
#[derive(Debug, Clone)]
pub struct Confine {
    /// The server's uid.
    pub uid: u32,
    /// The server's gid.
    pub gid: u32,
    /// Its open-files limit.
    pub open_files: u64,
    /// The `cgroup.procs` files to join.
    pub procs: Vec<PathBuf>,
    /// The socket the helper reports its exec on (in Wings' private state directory).
    pub exec_report: PathBuf,
}

/// A process's standard streams, as far as the launcher gives them.
pub struct Io {
    /// Its input.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Its output.
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Its errors.
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
}

/// Starts and signals server processes.
pub trait Launch: Send + Sync + 'static {
    /// A started process.
    type Process: Process;

    /// Spawns the process of `plan`; the reason when it cannot be.
    fn launch(&self, plan: Plan) -> Result<Self::Process, String>;

    /// Sends `signal` to the process group led by `pid`.
    fn signal(&self, pid: u32, signal: Signal) -> Result<(), String>;
}

/// A process a [`Launch`] started.
pub trait Process: Send + 'static {
    /// Its pid (the program's too, once it was executed).
    fn pid(&self) -> u32;

    /// Its standard streams (once; later calls give none).
    fn io(&mut self) -> Io;

    /// Resolves once the program itself runs, or with the reason it never will.
    fn confirm(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// Resolves when the process has ended (and was reaped).
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send;
}

/// The real launcher: processes on this host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

/// A process [`Host`] started.
pub struct HostProcess {
    child: Child,
    pid: u32,
    /// The helper's report socket and its path, until the report was read.
    report: Option<(UnixListener, PathBuf)>,
}

impl Launch for Host {
    type Process = HostProcess;

    fn launch(&self, plan: Plan) -> Result<HostProcess, String> {
        let mut report = None;
        let mut command = match &plan.confine {
            Some(confine) => {
                let wings = std::env::current_exe()
                    .map_err(|e| format!("cannot find the wings binary: {e}"))?;
                // A socket left by an earlier start is replaced.
                let _ = std::fs::remove_file(&confine.exec_report);
                let listener = UnixListener::bind(&confine.exec_report)
                    .map_err(|e| format!("cannot listen for the exec report: {e}"))?;
                report = Some((listener, confine.exec_report.clone()));
                let mut command = tokio::process::Command::new(wings);
                command.arg("enter-cgroups");
                for file in &confine.procs {
                    command.arg("--procs").arg(file);
                }
                // Its own environment holds nothing of the tenant's but the encoded variables,
                // applied only at the final exec.
                command
                    .arg(format!("--uid={}", confine.uid))
                    .arg(format!("--gid={}", confine.gid))
                    .arg(format!("--nofile={}", confine.open_files))
                    .arg("--exec-report")
                    .arg(&confine.exec_report)
                    .arg("--")
                    .arg(&plan.program)
                    .env_clear()
                    .envs(isolation::encode_env(plan.env.iter().map(|(k, v)| (k, v))));
                command
            }
            None => {
                let mut command = tokio::process::Command::new(&plan.program);
                command.env_clear().envs(plan.env.iter().cloned());
                command
            }
        };
        command
            .args(&plan.args)
            .current_dir(&plan.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| e.to_string())?;
        // A child not yet reaped always has its pid.
        let pid = child.id().unwrap_or(0);
        Ok(HostProcess { child, pid, report })
    }

    fn signal(&self, pid: u32, signal: Signal) -> Result<(), String> {
        killpg(Pid::from_raw(pid as i32), signal)
            .map_err(|e| format!("cannot signal the process: {e}"))
    }
}

impl Process for HostProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn io(&mut self) -> Io {
        Io {
            stdin: self
                .child
                .stdin
                .take()
                .map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>),
            stdout: self
                .child
                .stdout
                .take()
                .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>),
            stderr: self
                .child
                .stderr
                .take()
                .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>),
        }
    }

    async fn confirm(&mut self) -> Result<(), String> {
        let Some((listener, path)) = self.report.take() else {
            // Spawned directly: the spawn succeeded only once the exec had.
            return Ok(());
        };
        let reported = read_report(listener);
        tokio::pin!(reported);
        let outcome = tokio::time::timeout(EXEC_TIMEOUT, async {
            tokio::select! {
                report = &mut reported => report,
                status = self.child.wait() => {
                    // The helper ended: what it said, if it said anything, else how it ended.
                    match tokio::time::timeout(Duration::from_secs(1), &mut reported).await {
                        Ok(report) => report,
                        Err(_) => Err(format!(
                            "the helper {} before the program ran",
                            describe(&status).0
                        )),
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the program did not run within {} s",
                EXEC_TIMEOUT.as_secs()
            ))
        });
        let _ = std::fs::remove_file(path);
        outcome
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// The helper's report: its connection closed with nothing said (the exec happened), or
/// the reason it failed.
async fn read_report(listener: UnixListener) -> Result<(), String> {
    let (stream, _) = listener
        .accept()
        .await
        .map_err(|e| format!("cannot read the exec report: {e}"))?;
    let mut reason = Vec::new();
    stream
        .take(MAX_REASON_BYTES)
        .read_to_end(&mut reason)
        .await
        .map_err(|e| format!("cannot read the exec report: {e}"))?;
    if reason.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&reason).into_owned())
    }
}

/// `exited with status 3`, `killed by signal 9`… and the exit code, if any.
pub fn describe(status: &std::io::Result<ExitStatus>) -> (String, Option<i32>) {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (format!("exited with status {code}"), Some(code)),
            (None, Some(signal)) => (format!("killed by signal {signal}"), None),
            _ => ("exited".into(), None),
        },
        Err(e) => (format!("cannot wait for the process: {e}"), None),
    }
}
