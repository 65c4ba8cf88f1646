//! The supervisor with a fake launcher: commands in, statuses and acks out, no processes.

use super::*;
use std::time::Duration;

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
    let mut entry = Entry::new(None);
    let (generation, _) = entry.slot.begin_start(id, ServerSpec::default()).unwrap();
    assert!(entry.slot.spawned(generation, std::process::id()));
    supervisor.lock().insert(id.to_owned(), entry);
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

mod fake;

use fake::Harness;
use nix::sys::signal::Signal;
use proto::node::v1::{ServerState, command};

const ID: &str = "0190a0a0-0000-7000-8000-0000000000aa";

#[tokio::test(start_paused = true)]
async fn start_reports_running_only_once_the_program_runs() {
    let mut h = Harness::new();
    let gate = h.fake.hold_exec();
    h.send("c1", command::Action::Start(h.spec()));
    h.expect_status(ServerState::Starting, "").await;
    // The helper has not exec'd yet: no `running`, no ack.
    h.quiet().await;
    gate.send(Ok(())).unwrap();
    let pid = h.fake.last_pid();
    h.expect_status(ServerState::Running, &format!("pid {pid}"))
        .await;
    h.expect_ack("c1", Ok(())).await;
    let plan = h.fake.plans().remove(0);
    assert_eq!(plan.program, "/srv/game");
    assert!(plan.env.iter().any(|(k, v)| k == "MOTD" && v == "hi"));
    assert!(plan.env.iter().any(|(k, _)| k == "PATH"));
    assert!(plan.confine.is_none(), "not isolated in this test");
}

#[tokio::test(start_paused = true)]
async fn an_exec_failure_is_a_failed_start_with_its_reason() {
    let mut h = Harness::new();
    let gate = h.fake.hold_exec();
    h.send("c1", command::Action::Start(h.spec()));
    h.expect_status(ServerState::Starting, "").await;
    gate.send(Err("No such file or directory (os error 2)".into()))
        .unwrap();
    let reason = "cannot start /srv/game: No such file or directory (os error 2)";
    h.expect_status(ServerState::Crashed, reason).await;
    h.expect_ack("c1", Err(reason)).await;
    // What is left of the helper is killed, and its end is not reported again.
    let pid = h.fake.last_pid();
    assert_eq!(h.fake.signals(), [(pid, Signal::SIGKILL)]);
    h.quiet().await;
    // The server can be started again.
    h.send("c2", command::Action::Start(h.spec()));
    h.expect_status(ServerState::Starting, "").await;
    assert_eq!(h.expect_running().await, pid + 1);
    h.expect_ack("c2", Ok(())).await;
}

#[tokio::test(start_paused = true)]
async fn a_spawn_failure_is_a_failed_start() {
    let mut h = Harness::new();
    h.fake.fail_next_spawn("Permission denied (os error 13)");
    h.send("c1", command::Action::Start(h.spec()));
    h.expect_status(ServerState::Starting, "").await;
    let reason = "cannot start /srv/game: Permission denied (os error 13)";
    h.expect_status(ServerState::Crashed, reason).await;
    h.expect_ack("c1", Err(reason)).await;
}

#[tokio::test(start_paused = true)]
async fn stop_sends_sigterm_then_sigkill_when_the_grace_period_is_over() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    h.fake.ignore_sigterm();
    h.send("c2", h.stop(30));
    h.expect_status(ServerState::Stopping, "").await;
    h.expect_ack("c2", Ok(())).await;
    assert_eq!(h.fake.signals(), [(pid, Signal::SIGTERM)]);
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(
        h.fake.signals(),
        [(pid, Signal::SIGTERM)],
        "not before 30 s"
    );
    assert!(h.uplink.events.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.fake.signals(),
        [(pid, Signal::SIGTERM), (pid, Signal::SIGKILL)]
    );
    h.expect_status(ServerState::Offline, "stopped (killed by signal 9)")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_process_that_obeys_sigterm_is_offline_and_not_killed_later() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    h.send("c2", h.stop(10));
    h.expect_status(ServerState::Stopping, "").await;
    h.expect_ack("c2", Ok(())).await;
    h.expect_status(ServerState::Offline, "stopped (killed by signal 15)")
        .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        h.fake.signals(),
        [(pid, Signal::SIGTERM)],
        "no late SIGKILL"
    );
    h.send("c3", h.stop(10));
    h.expect_ack("c3", Err("the server is not running")).await;
}

#[tokio::test(start_paused = true)]
async fn kill_is_sigkill_at_once_and_reported_stopped() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    h.send("c2", command::Action::Kill(Default::default()));
    h.expect_ack("c2", Ok(())).await;
    h.expect_status(ServerState::Offline, "stopped (killed by signal 9)")
        .await;
    assert_eq!(h.fake.signals(), [(pid, Signal::SIGKILL)]);
}

#[tokio::test(start_paused = true)]
async fn an_exit_nobody_asked_for_is_a_crash_with_its_code() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    h.fake.exit(pid, 3);
    let status = h
        .expect_status(ServerState::Crashed, "exited with status 3")
        .await;
    assert_eq!(status.exit_code, Some(3));
    // A new start clears the exit code.
    h.send("c2", command::Action::Start(h.spec()));
    let status = h.expect_status(ServerState::Starting, "").await;
    assert_eq!(status.exit_code, None);
}

#[tokio::test(start_paused = true)]
async fn restart_stops_waits_and_starts_a_new_process_that_old_timers_leave_alone() {
    let mut h = Harness::new();
    let old = h.running("c1").await;
    h.send(
        "c2",
        command::Action::Restart(proto::node::v1::Restart {
            grace_secs: 10,
            spec: Some(h.spec()),
        }),
    );
    h.expect_status(ServerState::Stopping, "").await;
    h.expect_status(ServerState::Offline, "stopped (killed by signal 15)")
        .await;
    h.expect_status(ServerState::Starting, "").await;
    let new = h.expect_running().await;
    assert_ne!(new, old);
    h.expect_ack("c2", Ok(())).await;
    // The first process's grace period ends: nothing happens to its successor.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(h.fake.signals(), [(old, Signal::SIGTERM)]);
    assert!(h.uplink.events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn delete_while_running_kills_reaps_and_forgets_the_server() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    let dir = h.supervisor.server_dir(ID);
    assert!(dir.is_dir());
    assert!(h.supervisor.spec_file(ID).is_file());
    h.send("c2", command::Action::Delete(Default::default()));
    h.expect_status(ServerState::Offline, "stopped (killed by signal 9)")
        .await;
    h.expect_ack("c2", Ok(())).await;
    assert_eq!(h.fake.signals(), [(pid, Signal::SIGKILL)]);
    assert!(!dir.exists(), "the directory is removed");
    assert!(!h.supervisor.spec_file(ID).exists(), "the spec is removed");
    let (statuses, _) = h.supervisor.snapshot(|| ());
    assert!(statuses.is_empty(), "{statuses:?}");
}

#[tokio::test(start_paused = true)]
async fn commands_wait_while_the_server_is_busy_and_run_in_order() {
    let mut h = Harness::new();
    let gate = h.fake.hold_exec();
    h.send("c1", command::Action::Start(h.spec()));
    h.send("c2", h.console("say hi"));
    h.send("c3", h.stop(5));
    h.expect_status(ServerState::Starting, "").await;
    h.quiet().await;
    assert!(h.fake.signals().is_empty(), "the stop waits for the start");
    gate.send(Ok(())).unwrap();
    let pid = h.fake.last_pid();
    h.expect_status(ServerState::Running, &format!("pid {pid}"))
        .await;
    h.expect_ack("c1", Ok(())).await;
    h.expect_ack("c2", Ok(())).await;
    h.expect_status(ServerState::Stopping, "").await;
    h.expect_ack("c3", Ok(())).await;
    assert_eq!(h.fake.stdin(pid).await, "say hi\n");
    h.expect_status(ServerState::Offline, "stopped (killed by signal 15)")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_command_id_is_answered_again_not_run_again() {
    let mut h = Harness::new();
    let gate = h.fake.hold_exec();
    h.send("c1", command::Action::Start(h.spec()));
    h.send("c1", command::Action::Start(h.spec()));
    h.expect_status(ServerState::Starting, "").await;
    gate.send(Ok(())).unwrap();
    h.expect_running().await;
    h.expect_ack("c1", Ok(())).await;
    h.quiet().await;
    // Once answered, the same id gets the same answer, and nothing runs.
    h.send("c1", command::Action::Start(h.spec()));
    h.expect_ack("c1", Ok(())).await;
    h.quiet().await;
    assert_eq!(h.fake.plans().len(), 1, "launched once");
    // A second start under a new id is refused: it runs already.
    h.send("c2", command::Action::Start(h.spec()));
    h.expect_ack("c2", Err("the server is already running"))
        .await;
}

#[tokio::test(start_paused = true)]
async fn console_lines_are_kept_and_sent_and_input_is_checked() {
    let mut h = Harness::new();
    let pid = h.running("c1").await;
    h.fake.print(pid, "hello\nworld\n").await;
    for expected in ["hello", "world"] {
        let line = h.uplink.console.recv().await.unwrap();
        let Some(node_message::Kind::Console(line)) = line.kind else {
            panic!("{line:?}")
        };
        assert_eq!(line.line, expected);
        assert_eq!(line.server_id, ID);
    }
    assert_eq!(h.supervisor.console_tail(ID), ["hello", "world"]);
    h.send("c2", h.console("a\nb"));
    h.expect_ack("c2", Err("a console line cannot hold a line break"))
        .await;
    h.send("c3", h.console("list"));
    h.expect_ack("c3", Ok(())).await;
    assert_eq!(h.fake.stdin(pid).await, "list\n");
    let (_, backlog) = h.supervisor.snapshot(|| ());
    assert_eq!(backlog.len(), 2);
    assert!(backlog.iter().all(|l| l.backlog));
}

#[tokio::test(start_paused = true)]
async fn bad_ids_and_unknown_commands_are_refused() {
    let mut h = Harness::new();
    h.supervisor.handle(proto::node::v1::Command {
        id: "c1".into(),
        server_id: "../etc".into(),
        action: Some(command::Action::Kill(Default::default())),
    });
    h.expect_ack("c1", Err("\"../etc\" is not a server id"))
        .await;
    h.send(
        "c2",
        command::Action::Restore(proto::node::v1::Restore {
            backup_id: "x".into(),
            sha256: String::new(),
        }),
    );
    h.expect_ack("c2", Err("\"x\" is not a backup id")).await;
    h.supervisor.handle(proto::node::v1::Command {
        id: "c3".into(),
        server_id: ID.into(),
        action: None,
    });
    h.expect_ack(
        "c3",
        Err("unknown command: this Wings is older than the panel"),
    )
    .await;
}

/// The file manager reaches a server this node has, with its own quota; never one it does
/// not have, nor one being restored (409), nor (as root) one without its own user.
#[tokio::test]
async fn file_targets_are_the_servers_own_and_busy_while_restored() {
    use proto::node::v1::FileError;
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        data_dir: tmp.path().join("wings"),
        uid_range: users::DEFAULT_UID_RANGE,
        allow_unconfined: true,
        cgroup_root: tmp.path().join("no-cgroups"),
    };
    let (supervisor, _uplink) = Supervisor::load(&options).unwrap();
    let id = "0190a0a0-0000-7000-8000-000000000002";
    for unknown in [id, "../../etc", ""] {
        let fail = supervisor.file_target(unknown).unwrap_err();
        assert_eq!(fail.kind, FileError::NotFound, "{unknown:?}");
    }
    let spec = ServerSpec {
        limits: Some(Limits {
            disk_bytes: 5 << 20,
            ..DEFAULT_LIMITS
        }),
        ..ServerSpec::default()
    };
    supervisor
        .lock()
        .insert(id.to_owned(), Entry::new(Some(spec)));
    let restoring = supervisor.ledger.restore(id).await;
    let fail = supervisor.file_target(id).unwrap_err();
    assert_eq!(fail.kind, FileError::Conflict, "busy while restored");
    drop(restoring);
    match supervisor.file_target(id) {
        Ok(target) => {
            assert!(!Uid::effective().is_root());
            assert_eq!(target.quota, 5 << 20);
            assert_eq!(target.dir, supervisor.server_dir(id));
            assert_eq!(target.owner, None);
        }
        Err(fail) => {
            assert!(Uid::effective().is_root(), "{fail:?}");
            assert_eq!(fail.kind, FileError::NotFound, "no user of its own yet");
        }
    }
}
