//! A fake [`Launch`]: processes that are channels. Each launch gets a pid (counting up), its
//! plan is recorded, its exec can be held or failed, signals are recorded and end the
//! process (SIGTERM unless told to ignore it), and a test can make it exit or print.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::node::v1::{
    Command, CommandAck, NodeMessage, ServerSpec, ServerState, ServerStatus, command, node_message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use crate::supervisor::launch::{Io, Launch, Plan, Process};
use crate::supervisor::{Options, Supervisor, Uplink};

/// The first pid handed out (high, so no live process of the host is read for its usage).
const FIRST_PID: u32 = 3_900_000;

#[derive(Default)]
struct State {
    launched: u32,
    plans: Vec<Plan>,
    signals: Vec<(u32, Signal)>,
    ignore_term: bool,
    fail_spawn: Option<String>,
    held: VecDeque<oneshot::Receiver<Result<(), String>>>,
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    stdout: HashMap<u32, DuplexStream>,
    stdin: HashMap<u32, DuplexStream>,
}

/// The fake launcher; clones share their processes.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The next launch waits to exec until the returned sender says how it went.
    pub fn hold_exec(&self) -> oneshot::Sender<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.state().held.push_back(rx);
        tx
    }

    /// The next spawn fails with `reason`.
    pub fn fail_next_spawn(&self, reason: &str) {
        self.state().fail_spawn = Some(reason.into());
    }

    /// Processes no longer end on SIGTERM.
    pub fn ignore_sigterm(&self) {
        self.state().ignore_term = true;
    }

    /// The pid of the last launch.
    pub fn last_pid(&self) -> u32 {
        FIRST_PID + self.state().launched - 1
    }

    /// Every plan launched, in order.
    pub fn plans(&self) -> Vec<Plan> {
        self.state().plans.clone()
    }

    /// Every signal sent, in order.
    pub fn signals(&self) -> Vec<(u32, Signal)> {
        self.state().signals.clone()
    }

    /// Process `pid` exits with `code`.
    pub fn exit(&self, pid: u32, code: i32) {
        if let Some(exit) = self.state().exits.remove(&pid) {
            let _ = exit.send(ExitStatus::from_raw(code << 8));
        }
    }

    /// Process `pid` writes `text` to its stdout.
    pub async fn print(&self, pid: u32, text: &str) {
        let mut out = self.state().stdout.remove(&pid).unwrap();
        out.write_all(text.as_bytes()).await.unwrap();
        self.state().stdout.insert(pid, out);
    }

    /// What process `pid` has read from its stdin so far (at least something).
    pub async fn stdin(&self, pid: u32) -> String {
        let mut input = self.state().stdin.remove(&pid).unwrap();
        let mut buffer = vec![0; 4096];
        let n = input.read(&mut buffer).await.unwrap();
        self.state().stdin.insert(pid, input);
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }
}

/// A process of [`Fake`].
pub struct FakeProcess {
    pid: u32,
    io: Option<Io>,
    held: Option<oneshot::Receiver<Result<(), String>>>,
    exit: oneshot::Receiver<ExitStatus>,
}

impl Launch for Fake {
    type Process = FakeProcess;

    fn launch(&self, plan: Plan) -> Result<FakeProcess, String> {
        let mut state = self.state();
        if let Some(reason) = state.fail_spawn.take() {
            return Err(reason);
        }
        let pid = FIRST_PID + state.launched;
        state.launched += 1;
        state.plans.push(plan);
        let (exit_tx, exit) = oneshot::channel();
        state.exits.insert(pid, exit_tx);
        let (stdout, their_stdout) = tokio::io::duplex(4096);
        let (stdin, their_stdin) = tokio::io::duplex(4096);
        state.stdout.insert(pid, their_stdout);
        state.stdin.insert(pid, their_stdin);
        let (_, stderr) = tokio::io::duplex(16);
        Ok(FakeProcess {
            pid,
            io: Some(Io {
                stdin: Some(Box::pin(stdin)),
                stdout: Some(Box::pin(stdout)),
                stderr: Some(Box::pin(stderr)),
            }),
            held: state.held.pop_front(),
            exit,
        })
    }

    fn signal(&self, pid: u32, signal: Signal) -> Result<(), String> {
        let mut state = self.state();
        state.signals.push((pid, signal));
        if (signal == Signal::SIGKILL || !state.ignore_term)
            && let Some(exit) = state.exits.remove(&pid)
        {
            let _ = exit.send(ExitStatus::from_raw(signal as i32));
        }
        Ok(())
    }
}

impl Process for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn io(&mut self) -> Io {
        self.io.take().unwrap_or(Io {
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    async fn confirm(&mut self) -> Result<(), String> {
        match self.held.take() {
            Some(held) => held
                .await
                .unwrap_or(Err("the test dropped the exec".into())),
            None => Ok(()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        Ok((&mut self.exit)
            .await
            .unwrap_or(ExitStatus::from_raw(Signal::SIGKILL as i32)))
    }
}

/// A supervisor on [`Fake`], in a temporary directory, without isolation.
pub struct Harness {
    pub fake: Fake,
    pub supervisor: Arc<Supervisor<Fake>>,
    pub uplink: Uplink,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            data_dir: dir.path().join("wings"),
            uid_range: crate::users::DEFAULT_UID_RANGE,
            allow_unconfined: false,
            cgroup_root: dir.path().join("no-cgroups"),
        };
        let fake = Fake::default();
        let (supervisor, uplink) = Supervisor::build(&options, fake.clone(), false).unwrap();
        Harness {
            fake,
            supervisor,
            uplink,
            _dir: dir,
        }
    }

    pub fn spec(&self) -> ServerSpec {
        ServerSpec {
            program: "/srv/game".into(),
            args: vec!["--port".into(), "25565".into()],
            env: [("MOTD".to_owned(), "hi".to_owned())].into(),
            limits: None,
        }
    }

    pub fn stop(&self, grace_secs: u32) -> command::Action {
        command::Action::Stop(proto::node::v1::Stop { grace_secs })
    }

    pub fn console(&self, line: &str) -> command::Action {
        command::Action::ConsoleInput(proto::node::v1::ConsoleInput { line: line.into() })
    }

    /// Sends command `id` for the test's server.
    pub fn send(&self, id: &str, action: command::Action) {
        self.supervisor.handle(Command {
            id: id.into(),
            server_id: super::ID.into(),
            action: Some(action),
        });
    }

    /// Starts the server (command `id`) and returns its pid once it runs.
    pub async fn running(&mut self, id: &str) -> u32 {
        self.send(id, command::Action::Start(self.spec()));
        self.expect_status(ServerState::Starting, "").await;
        let pid = self.expect_running().await;
        self.expect_ack(id, Ok(())).await;
        pid
    }

    /// The next event is `running` with the last launch's pid, which it returns.
    pub async fn expect_running(&mut self) -> u32 {
        let status = self.next().await;
        let pid = self.fake.last_pid();
        match status {
            node_message::Kind::Status(status) => {
                assert_eq!(status.state(), ServerState::Running, "{status:?}");
                assert_eq!(status.reason, format!("pid {pid}"));
            }
            other => panic!("expected running, got {other:?}"),
        }
        pid
    }

    async fn next(&mut self) -> node_message::Kind {
        let message: NodeMessage =
            tokio::time::timeout(Duration::from_secs(600), self.uplink.events.recv())
                .await
                .expect("an event")
                .expect("the supervisor lives");
        message.kind.expect("a kind")
    }

    /// The next event is this status of the test's server.
    pub async fn expect_status(&mut self, state: ServerState, reason: &str) -> ServerStatus {
        match self.next().await {
            node_message::Kind::Status(status) => {
                assert_eq!(
                    (
                        status.state(),
                        status.reason.as_str(),
                        status.server_id.as_str()
                    ),
                    (state, reason, super::ID),
                    "{status:?}"
                );
                status
            }
            other => panic!("expected {state:?} ({reason}), got {other:?}"),
        }
    }

    /// The next event is the ack of command `id` with this outcome.
    pub async fn expect_ack(&mut self, id: &str, outcome: Result<(), &str>) {
        match self.next().await {
            node_message::Kind::Ack(CommandAck {
                command_id,
                ok,
                error,
            }) => {
                assert_eq!(command_id, id);
                match outcome {
                    Ok(()) => assert!(ok, "{id} failed: {error}"),
                    Err(expected) => {
                        assert!(!ok, "{id} succeeded");
                        assert_eq!(error, expected);
                    }
                }
            }
            other => panic!("expected the ack of {id}, got {other:?}"),
        }
    }

    /// Nothing more is sent once everything that can run has (paused time runs ahead).
    pub async fn quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.uplink.events.recv()).await;
        assert!(next.is_err(), "unexpected {next:?}");
    }
}
