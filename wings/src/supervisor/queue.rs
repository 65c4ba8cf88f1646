//! Commands from the panel: each server has a queue and a worker, so commands for one server
//! run one after the other in the order they came, while different servers do not wait for
//! each other. Each command is acknowledged with its id once done (a restore once accepted;
//! its outcome follows as a `BackupResult`).
//!
//! A command id seen lately (the last [`RECENT_IDS`]) is not run again: a duplicate of a
//! finished command gets the same answer again, one of a command still queued or running
//! gets its answer when that is done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use proto::node::v1::{Command, CommandAck, command, node_message};
use tokio::sync::mpsc;

use super::launch::Launch;
use super::slot::Stop;
use super::{Entry, Supervisor, valid_id};
use crate::Error;

/// How many command ids are remembered.
pub const RECENT_IDS: usize = 1024;

/// What a server's worker runs.
#[derive(Debug)]
pub enum Job {
    /// A command from the panel, acknowledged when done.
    Command(Command),
    /// Start the server again after Wings' restart (nobody waits for an answer).
    Resume,
}

/// The last [`RECENT_IDS`] command ids and their answers (`None` while not yet done).
#[derive(Debug, Default)]
pub struct Recent {
    order: VecDeque<String>,
    answers: HashMap<String, Option<Result<(), String>>>,
}

impl Recent {
    /// Records `id` as queued; `Err` with what to do when it was seen already: resend the
    /// answer (`Some`) or wait for it (`None`).
    fn admit(&mut self, id: &str) -> Result<(), Option<Result<(), String>>> {
        if let Some(answer) = self.answers.get(id) {
            return Err(answer.clone());
        }
        if self.order.len() == RECENT_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.answers.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.answers.insert(id.to_owned(), None);
        Ok(())
    }

    /// Keeps the answer to `id`, if it is still remembered.
    fn answered(&mut self, id: &str, answer: &Result<(), String>) {
        if let Some(kept) = self.answers.get_mut(id) {
            *kept = Some(answer.clone());
        }
    }
}

impl<L: Launch> Supervisor<L> {
    /// Queues a command from the panel; commands for one server run in order.
    pub fn handle(self: &Arc<Self>, command: Command) {
        if !valid_id(&command.server_id) {
            let error = Error::BadId {
                kind: "server",
                value: command.server_id.clone(),
            };
            self.ack(&command.id, Err(error));
            return;
        }
        if !command.id.is_empty() {
            let seen = self
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(&command.id);
            match seen {
                Ok(()) => {}
                Err(Some(answer)) => return self.send_ack(&command.id, answer),
                Err(None) => return,
            }
        }
        let id = command.server_id.clone();
        self.enqueue(&id, Job::Command(command));
    }

    /// Puts `job` on the server's queue, starting its worker when it has none.
    pub(super) fn enqueue(self: &Arc<Self>, id: &str, job: Job) {
        let mut slots = self.lock();
        let entry = slots
            .entry(id.to_owned())
            .or_insert_with(|| Entry::new(None));
        let queue = match &entry.queue {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().worker(id.to_owned(), rx));
                entry.queue = Some(tx.clone());
                tx
            }
        };
        drop(slots);
        let _ = queue.send(job);
    }

    async fn worker(self: Arc<Self>, id: String, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let command = match job {
                Job::Resume => {
                    if let Err(e) = self.resume(&id).await {
                        tracing::warn!(server = %id, error = %e, "cannot start the server again");
                    }
                    continue;
                }
                Job::Command(command) => command,
            };
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
            // Once per command id: a duplicate never gets here (the trail a test of
            // redelivery counts).
            tracing::info!(server = %id, command = %command.id, "running a command");
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

    fn ack(&self, command_id: &str, result: Result<(), Error>) {
        let answer = result.map_err(|e| e.to_string());
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered(command_id, &answer);
        self.send_ack(command_id, answer);
    }

    fn send_ack(&self, command_id: &str, answer: Result<(), String>) {
        self.send(node_message::Kind::Ack(CommandAck {
            command_id: command_id.to_owned(),
            ok: answer.is_ok(),
            error: answer.err().unwrap_or_default(),
        }));
    }

    async fn execute(
        self: &Arc<Self>,
        id: &str,
        action: Option<command::Action>,
    ) -> Result<(), Error> {
        let grace = |secs: u32| Duration::from_secs(u64::from(secs));
        match action {
            Some(command::Action::Install(spec)) => self.install(id, spec).await,
            Some(command::Action::Start(spec)) => self.start(id, spec).await,
            Some(command::Action::Stop(stop)) => self.stop(
                id,
                Stop::Term {
                    grace: grace(stop.grace_secs),
                },
            ),
            Some(command::Action::Kill(_)) => self.stop(id, Stop::Kill),
            Some(command::Action::Restart(restart)) => {
                let spec = restart.spec.ok_or(Error::State("restart without a spec"))?;
                self.stop_and_reap(id, grace(restart.grace_secs)).await?;
                self.start(id, spec).await
            }
            Some(command::Action::Delete(_)) => self.delete(id).await,
            Some(command::Action::Backup(backup)) => self.backup(id, &backup.backup_id),
            Some(command::Action::DeleteBackup(backup)) => {
                self.delete_backup(id, &backup.backup_id)
            }
            Some(command::Action::Restore(_)) => Err(Error::State("restore is run by the worker")),
            Some(command::Action::ConsoleInput(input)) => self.console_input(id, input.line),
            None => Err(Error::UnknownCommand),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_remembered_boundedly() {
        let mut recent = Recent::default();
        assert_eq!(recent.admit("a"), Ok(()));
        assert_eq!(recent.admit("a"), Err(None), "queued: wait for its answer");
        recent.answered("a", &Err("no".into()));
        assert_eq!(recent.admit("a"), Err(Some(Err("no".into()))));
        for i in 0..RECENT_IDS {
            assert_eq!(recent.admit(&i.to_string()), Ok(()));
        }
        assert_eq!(recent.order.len(), RECENT_IDS);
        assert_eq!(recent.answers.len(), RECENT_IDS);
        assert_eq!(recent.admit("a"), Ok(()), "forgotten once past the bound");
    }
}
