//! A server's process from start to end: install, start (disk quota and confinement checked,
//! directory, user and cgroups prepared on the blocking pool, the program launched and
//! reported `running` once it runs), the monitor that reports its exit, stop and kill,
//! restart and delete. Each step is a transition of the server's [`Slot`](super::slot::Slot)
//! whose effects the supervisor applies.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::node::v1::{ConsoleStream, ServerSpec};
use tokio::task::JoinHandle;

use super::launch::{Confine, Launch, Plan, Process, describe};
use super::slot::{Exit, Stop};
use super::stats::over_quota;
use super::{DEFAULT_LIMITS, Entry, Supervisor, console};
use crate::{Error, beneath, users};

/// The search path given to server processes.
const SERVER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long delete and restart wait for a killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long output still in a dead process's pipes is waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

impl<L: Launch> Supervisor<L> {
    /// Prepares the server's directory and keeps its spec; its state does not change.
    pub(super) async fn install(self: &Arc<Self>, id: &str, spec: ServerSpec) -> Result<(), Error> {
        let (owned_id, saved) = (id.to_owned(), spec.clone());
        self.blocking("the install", move |me| {
            me.make_dir(&owned_id)?;
            me.save_spec(&owned_id, &saved)
        })
        .await?;
        let mut slots = self.lock();
        let entry = slots
            .entry(id.to_owned())
            .or_insert_with(|| Entry::new(None));
        entry.slot.spec = Some(spec);
        let report = entry.slot.touch(id);
        self.apply(id, vec![report])
    }

    /// Starts the server again after Wings' restart, with the spec it had.
    pub(super) async fn resume(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let spec = self.lock().get(id).and_then(|e| e.slot.spec.clone());
        match spec {
            Some(spec) => self.start(id, spec).await,
            None => Err(Error::State("the server has no spec")),
        }
    }

    /// Starts the server: refused while it runs, over its disk quota (measured on the
    /// blocking pool) or on a node that cannot confine it; else launched, and `Ok` once the
    /// program runs.
    pub(super) async fn start(self: &Arc<Self>, id: &str, spec: ServerSpec) -> Result<(), Error> {
        if self.lock().get(id).is_some_and(|e| e.slot.busy()) {
            return Err(Error::State("the server is already running"));
        }
        let limits = spec.limits.unwrap_or(DEFAULT_LIMITS);
        let dir = self.server_dir(id);
        let refusal = tokio::task::spawn_blocking(move || over_quota(&dir, &limits))
            .await
            .map_err(|source| Error::Task {
                what: "the disk check",
                source,
            })?
            .or_else(|| self.refuse_start.clone());
        if let Some(reason) = refusal {
            let mut slots = self.lock();
            if let Some(entry) = slots.get_mut(id) {
                let report = entry.slot.refuse(id, &reason)?;
                self.apply(id, vec![report])?;
            }
            return Err(Error::Refused(reason));
        }
        let generation = {
            let mut slots = self.lock();
            let entry = slots
                .entry(id.to_owned())
                .or_insert_with(|| Entry::new(None));
            let (generation, report) = entry.slot.begin_start(id, spec.clone())?;
            self.apply(id, vec![report])?;
            generation
        };
        let launched = self.launch(id, generation, spec).await;
        if let Err(e) = &launched {
            let mut slots = self.lock();
            if let Some(entry) = slots.get_mut(id)
                && let Some(report) = entry.slot.launch_failed(id, generation, &e.to_string())
            {
                self.apply(id, vec![report])?;
            }
        }
        launched
    }

    /// Prepares and launches the process of `generation`, waits until the program runs and
    /// leaves a monitor waiting for its end.
    async fn launch(
        self: &Arc<Self>,
        id: &str,
        generation: u64,
        spec: ServerSpec,
    ) -> Result<(), Error> {
        let limits = spec.limits.unwrap_or(DEFAULT_LIMITS);
        let (owned_id, saved) = (id.to_owned(), spec.clone());
        let (dir, owner) = self
            .blocking("preparing the server", move |me| {
                let (dir, owner) = me.make_dir(&owned_id)?;
                me.save_spec(&owned_id, &saved)?;
                if let (Some(_), Some(cgroups)) = (owner, &me.isolation) {
                    cgroups
                        .create(&owned_id, &limits)
                        .map_err(Error::Isolation)?;
                }
                Ok((dir, owner))
            })
            .await?;
        // The server's own variables, then what Wings sets itself.
        let mut env: Vec<(String, String)> = spec.env.into_iter().collect();
        env.push(("PATH".into(), SERVER_PATH.into()));
        env.push(("HOME".into(), dir.to_string_lossy().into_owned()));
        let confine = match (owner, &self.isolation) {
            (Some((uid, gid)), Some(cgroups)) => Some(Confine {
                uid,
                gid,
                open_files: limits.open_files,
                procs: cgroups.procs_files(id),
                exec_report: self.exec_socket(id),
            }),
            _ => None,
        };
        let program = spec.program;
        let plan = Plan {
            program: program.clone(),
            args: spec.args,
            env,
            dir,
            confine,
        };
        let oom_before = self.isolation.as_ref().map_or(0, |c| c.oom_kills(id));
        let mut process = self.launcher.launch(plan).map_err(|reason| Error::Launch {
            program: program.clone(),
            reason,
        })?;
        let pid = process.pid();
        self.write_pid(id, pid);
        let io = process.io();
        {
            let mut slots = self.lock();
            let Some(entry) = slots.get_mut(id) else {
                return Err(Error::State("the server was deleted while starting"));
            };
            entry.slot.spawned(generation, pid);
            entry.stdin = io.stdin.map(console::stdin_writer);
        }
        let confirmed = process.confirm().await;
        let mut slots = self.lock();
        let Some(entry) = slots.get_mut(id) else {
            return Err(Error::State("the server was deleted while starting"));
        };
        let report = match &confirmed {
            Ok(()) => entry.slot.exec_confirmed(id, generation),
            Err(reason) => {
                entry.stdin = None;
                // Whatever is left of the helper dies; the monitor reaps it.
                let _ = self.launcher.signal(pid, Signal::SIGKILL);
                entry.slot.launch_failed(
                    id,
                    generation,
                    &format!("cannot start {program}: {reason}"),
                )
            }
        };
        // Only reports, which cannot fail.
        let _ = self.apply(id, report.into_iter().collect());
        // Output is read once the state it belongs to was reported (a program's lines follow
        // its `running`; a failing helper's, its failed start); the pipes hold it meanwhile.
        let readers: Vec<JoinHandle<()>> = [
            (ConsoleStream::Stdout, io.stdout),
            (ConsoleStream::Stderr, io.stderr),
        ]
        .into_iter()
        .filter_map(|(stream, pipe)| {
            let pipe = pipe?;
            Some(tokio::spawn(self.clone().read_lines(
                id.to_owned(),
                stream,
                pipe,
            )))
        })
        .collect();
        let monitor = self
            .clone()
            .monitor(id.to_owned(), generation, oom_before, process, readers);
        entry.monitor = Some(tokio::spawn(monitor));
        drop(slots);
        match confirmed {
            Ok(()) => {
                tracing::info!(server = %id, pid, "server started");
                Ok(())
            }
            Err(reason) => Err(Error::Launch { program, reason }),
        }
    }

    /// Waits for the process to end, kills what it left, and reports the exit.
    async fn monitor(
        self: Arc<Self>,
        id: String,
        generation: u64,
        oom_before: u64,
        mut process: L::Process,
        readers: Vec<JoinHandle<()>>,
    ) {
        let status = process.wait().await;
        // The server is its main process: what it leaves running dies with it.
        if let Err(e) = self.kill_everything_async(&id).await {
            tracing::error!(server = %id, error = %e, "processes outlived the server's main process");
        }
        // Output still in the pipes belongs before the exit; a grandchild holding them open
        // does not hold up the exit report for long.
        for reader in readers {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, reader).await;
        }
        let (mut description, code) = describe(&status);
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
        let Some(entry) = slots.get_mut(&id) else {
            return;
        };
        let exit = Exit {
            description,
            code,
            oom,
        };
        if let Some(report) = entry.slot.exited(&id, generation, exit) {
            entry.stdin = None;
            let _ = self.apply(&id, vec![report]);
        }
    }

    /// Signals the server's process: SIGTERM (SIGKILL after the grace period) or SIGKILL.
    pub(super) fn stop(self: &Arc<Self>, id: &str, how: Stop) -> Result<(), Error> {
        let mut slots = self.lock();
        let entry = slots.get_mut(id).ok_or(Error::State("no such server"))?;
        let effects = entry.slot.stop(id, how)?;
        self.apply(id, effects)
    }

    /// Stops the server if it runs (SIGTERM, SIGKILL after `grace`) and waits until it was
    /// reaped.
    pub(super) async fn stop_and_reap(
        self: &Arc<Self>,
        id: &str,
        grace: Duration,
    ) -> Result<(), Error> {
        if self.has_process(id) {
            self.stop(id, Stop::Term { grace })?;
            self.reaped(id, grace + REAP_TIMEOUT).await?;
        }
        Ok(())
    }

    fn has_process(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|e| e.slot.run().pid().is_some())
    }

    /// Waits until the server's process has been reaped.
    async fn reaped(&self, id: &str, within: Duration) -> Result<(), Error> {
        let monitor = self.lock().get_mut(id).and_then(|e| e.monitor.take());
        if let Some(monitor) = monitor {
            tokio::time::timeout(within, monitor)
                .await
                .map_err(|_| Error::Process("the process did not exit in time"))?
                .map_err(|source| Error::Task {
                    what: "the monitor",
                    source,
                })?;
        }
        Ok(())
    }

    /// Kills the server, removes its directory, spec, user, cgroups and backups.
    pub(super) async fn delete(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        if self.has_process(id) {
            self.stop(id, Stop::Kill)?;
            self.reaped(id, REAP_TIMEOUT).await?;
        }
        self.kill_everything_async(id).await?;
        self.lock().remove(id);
        let owned_id = id.to_owned();
        self.blocking("the removal", move |me| {
            let id = owned_id.as_str();
            beneath::remove_tree(&me.server_dir(id))
                .map_err(Error::server("cannot remove the server's directory"))?;
            me.forget_files(id);
            if let Some(cgroups) = &me.isolation {
                cgroups.remove(id);
                users::remove_user(id, me.uid_of(id));
            }
            let backups = me.data_dir.join("backups").join(id);
            beneath::remove_tree(&backups).map_err(Error::server(format!(
                "cannot remove {}",
                backups.display()
            )))
        })
        .await?;
        tracing::info!(server = %id, "server deleted");
        Ok(())
    }
}
