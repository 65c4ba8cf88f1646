//! One server's state machine, without processes: what runs (a [`Run`]), what the panel was
//! told (state, reason, exit code), and transitions that return what the supervisor must do
//! next ([`Effect`]s: report a status, signal a process, arm the SIGKILL deadline). The
//! supervisor applies the effects; tests drive the transitions directly.
//!
//! A start goes `Idle → Launching → Started → Running`: `Started` while the root helper that
//! joins the server's cgroups still has to exec the program, `Running` (reported `running`)
//! once the program itself runs. Every process has its own generation, so a late event about
//! an earlier process (its exit, its grace period) cannot touch its successor.

use std::collections::VecDeque;
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::node::v1::{ConsoleStream, ServerSpec, ServerState, ServerStatus};

use super::console::RING_LINES;
use crate::Error;

/// The process side of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// No process.
    Idle,
    /// A start is under way; no process yet.
    Launching {
        /// The coming process's generation.
        generation: u64,
    },
    /// The process exists, but the program has not been seen to run yet.
    Started {
        /// The process's generation.
        generation: u64,
        /// Its pid.
        pid: u32,
    },
    /// The program runs.
    Running {
        /// The process's generation.
        generation: u64,
        /// Its pid.
        pid: u32,
    },
    /// The process was told to stop (SIGTERM, or SIGKILL at once).
    Stopping {
        /// The process's generation.
        generation: u64,
        /// Its pid.
        pid: u32,
    },
}

impl Run {
    /// The generation of the process this is about, if any.
    pub fn generation(self) -> Option<u64> {
        match self {
            Run::Idle => None,
            Run::Launching { generation }
            | Run::Started { generation, .. }
            | Run::Running { generation, .. }
            | Run::Stopping { generation, .. } => Some(generation),
        }
    }

    /// The pid of the server's process, if it has one.
    pub fn pid(self) -> Option<u32> {
        match self {
            Run::Idle | Run::Launching { .. } => None,
            Run::Started { pid, .. } | Run::Running { pid, .. } | Run::Stopping { pid, .. } => {
                Some(pid)
            }
        }
    }
}

/// How a server is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then SIGKILL when the grace period is over.
    Term {
        /// The grace period.
        grace: Duration,
    },
    /// SIGKILL now.
    Kill,
}

/// What the supervisor does after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell the panel the server's status.
    Report(ServerStatus),
    /// Send `signal` to the process group of `pid`.
    Signal {
        /// The process.
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// After `after`, call [`Slot::grace_over`] with this generation and pid.
    KillAfter {
        /// The process's generation.
        generation: u64,
        /// Its pid.
        pid: u32,
        /// The grace period.
        after: Duration,
    },
}

/// How a process ended, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// `exited with status 3`, `killed by signal 9`…
    pub description: String,
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// Whether the kernel's OOM killer acted in the server's cgroup meanwhile.
    pub oom: bool,
}

/// A console line kept in the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// stdout or stderr.
    pub stream: ConsoleStream,
    /// The text.
    pub text: String,
    /// When it was read.
    pub at_unix_ms: i64,
}

/// One server as the supervisor knows it.
#[derive(Debug)]
pub struct Slot {
    /// The spec it was installed or last started with.
    pub spec: Option<ServerSpec>,
    /// What runs.
    run: Run,
    /// The last generation handed out.
    generation: u64,
    state: ServerState,
    reason: String,
    exit_code: Option<i32>,
    /// The last [`RING_LINES`] console lines.
    pub ring: VecDeque<Line>,
}

impl Slot {
    /// A server with no process, `offline`.
    pub fn new(spec: Option<ServerSpec>) -> Slot {
        Slot {
            spec,
            run: Run::Idle,
            generation: 0,
            state: ServerState::Offline,
            reason: String::new(),
            exit_code: None,
            ring: VecDeque::new(),
        }
    }

    /// What runs.
    pub fn run(&self) -> Run {
        self.run
    }

    /// The state the panel was last told.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether a process (or a start) is under way.
    pub fn busy(&self) -> bool {
        self.run != Run::Idle
    }

    /// The status to send for server `id`, stamped now.
    pub fn status(&self, id: &str) -> ServerStatus {
        ServerStatus {
            server_id: id.to_owned(),
            state: self.state as i32,
            reason: self.reason.clone(),
            exit_code: self.exit_code,
            at_unix_ms: crate::unix_ms(),
        }
    }

    /// Keeps a console line, dropping the oldest past [`RING_LINES`].
    pub fn keep_line(&mut self, line: Line) {
        if self.ring.len() == RING_LINES {
            self.ring.pop_front();
        }
        self.ring.push_back(line);
    }

    /// Reports the current state again (after an install changed the spec).
    pub fn touch(&mut self, id: &str) -> Effect {
        let state = self.state;
        self.report(id, state, String::new())
    }

    /// The server may not start (quota, unconfined node): `offline` with the reason. Refused
    /// while a process runs.
    pub fn refuse(&mut self, id: &str, reason: &str) -> Result<Effect, Error> {
        if self.busy() {
            return Err(Error::State("the server is already running"));
        }
        Ok(self.report(id, ServerState::Offline, reason.to_owned()))
    }

    /// A start begins: `starting`. Returns the new process's generation.
    pub fn begin_start(&mut self, id: &str, spec: ServerSpec) -> Result<(u64, Effect), Error> {
        if self.busy() {
            return Err(Error::State("the server is already running"));
        }
        self.generation += 1;
        self.spec = Some(spec);
        self.run = Run::Launching {
            generation: self.generation,
        };
        let report = self.report(id, ServerState::Starting, String::new());
        Ok((self.generation, report))
    }

    /// The process of `generation` exists as `pid`. False when the start was overtaken.
    pub fn spawned(&mut self, generation: u64, pid: u32) -> bool {
        if self.run != (Run::Launching { generation }) {
            return false;
        }
        self.run = Run::Started { generation, pid };
        true
    }

    /// The program of `generation` runs: `running`, with its pid as the reason.
    pub fn exec_confirmed(&mut self, id: &str, generation: u64) -> Option<Effect> {
        let Run::Started { pid, .. } = self.run else {
            return None;
        };
        if self.run.generation() != Some(generation) {
            return None;
        }
        self.run = Run::Running { generation, pid };
        Some(self.report(id, ServerState::Running, format!("pid {pid}")))
    }

    /// The start of `generation` failed before the program ran: `crashed` with the reason.
    pub fn launch_failed(&mut self, id: &str, generation: u64, reason: &str) -> Option<Effect> {
        if self.run.generation() != Some(generation) {
            return None;
        }
        self.run = Run::Idle;
        self.exit_code = None;
        Some(self.report(id, ServerState::Crashed, reason.to_owned()))
    }

    /// Asks the process to stop: SIGTERM (`stopping`, SIGKILL when the grace is over) or
    /// SIGKILL now. An error when nothing runs.
    pub fn stop(&mut self, id: &str, how: Stop) -> Result<Vec<Effect>, Error> {
        let (Some(generation), Some(pid)) = (self.run.generation(), self.run.pid()) else {
            return Err(Error::State("the server is not running"));
        };
        self.run = Run::Stopping { generation, pid };
        Ok(match how {
            Stop::Term { grace } => vec![
                self.report(id, ServerState::Stopping, String::new()),
                Effect::Signal {
                    pid,
                    signal: Signal::SIGTERM,
                },
                Effect::KillAfter {
                    generation,
                    pid,
                    after: grace,
                },
            ],
            Stop::Kill => vec![Effect::Signal {
                pid,
                signal: Signal::SIGKILL,
            }],
        })
    }

    /// The grace period of a SIGTERM is over: SIGKILL if that process still runs.
    pub fn grace_over(&self, generation: u64, pid: u32) -> Option<Effect> {
        (self.run.generation() == Some(generation) && self.run.pid() == Some(pid)).then_some(
            Effect::Signal {
                pid,
                signal: Signal::SIGKILL,
            },
        )
    }

    /// The process of `generation` ended: `offline` when it was asked to stop (and not
    /// killed for its memory), else `crashed`.
    pub fn exited(&mut self, id: &str, generation: u64, exit: Exit) -> Option<Effect> {
        if self.run.generation() != Some(generation) {
            return None;
        }
        let asked = matches!(self.run, Run::Stopping { .. });
        self.run = Run::Idle;
        self.exit_code = exit.code;
        let (state, reason) = if asked && !exit.oom {
            (
                ServerState::Offline,
                format!("stopped ({})", exit.description),
            )
        } else {
            (ServerState::Crashed, exit.description)
        };
        tracing::info!(server = %id, state = ?state, %reason, "server exited");
        Some(self.report(id, state, reason))
    }

    fn report(&mut self, id: &str, state: ServerState, reason: String) -> Effect {
        self.state = state;
        self.reason = reason;
        if state != ServerState::Crashed && state != ServerState::Offline {
            self.exit_code = None;
        }
        Effect::Report(self.status(id))
    }
}

#[cfg(test)]
mod tests;
