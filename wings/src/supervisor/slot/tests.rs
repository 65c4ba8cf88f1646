//! The slot state machine on its own: transitions and the effects they ask for.

use super::*;

const ID: &str = "0190a0a0-0000-7000-8000-0000000000bb";

fn reported(effect: &Effect) -> (ServerState, &str) {
    match effect {
        Effect::Report(status) => (status.state(), status.reason.as_str()),
        other => panic!("not a report: {other:?}"),
    }
}

/// A slot whose process `pid` runs, and its generation.
fn running(pid: u32) -> (Slot, u64) {
    let mut slot = Slot::new(None);
    let (generation, _) = slot.begin_start(ID, ServerSpec::default()).unwrap();
    assert!(slot.spawned(generation, pid));
    slot.exec_confirmed(ID, generation).unwrap();
    (slot, generation)
}

#[test]
fn a_start_is_running_only_once_the_exec_is_confirmed() {
    let mut slot = Slot::new(None);
    let (generation, report) = slot.begin_start(ID, ServerSpec::default()).unwrap();
    assert_eq!(reported(&report), (ServerState::Starting, ""));
    assert_eq!(slot.run(), Run::Launching { generation });
    assert!(slot.spawned(generation, 42));
    assert_eq!(slot.state(), ServerState::Starting, "the helper still runs");
    assert_eq!(slot.run().pid(), Some(42));
    let report = slot.exec_confirmed(ID, generation).unwrap();
    assert_eq!(reported(&report), (ServerState::Running, "pid 42"));
    assert!(matches!(
        slot.begin_start(ID, ServerSpec::default()),
        Err(Error::State("the server is already running"))
    ));
    assert!(
        slot.refuse(ID, "disk_quota: full").is_err(),
        "not while it runs"
    );
}

#[test]
fn a_failed_exec_is_crashed_and_the_process_end_is_not_reported_again() {
    let mut slot = Slot::new(None);
    let (generation, _) = slot.begin_start(ID, ServerSpec::default()).unwrap();
    slot.spawned(generation, 7);
    let report = slot
        .launch_failed(ID, generation, "cannot start x: ENOENT")
        .unwrap();
    assert_eq!(
        reported(&report),
        (ServerState::Crashed, "cannot start x: ENOENT")
    );
    assert_eq!(slot.run(), Run::Idle);
    let exit = Exit {
        description: "exited with status 127".into(),
        code: Some(127),
        oom: false,
    };
    assert_eq!(slot.exited(ID, generation, exit), None);
    assert_eq!(slot.exec_confirmed(ID, generation), None);
}

#[test]
fn sigterm_arms_a_sigkill_deadline_for_that_process_only() {
    let (mut slot, generation) = running(9);
    let effects = slot
        .stop(
            ID,
            Stop::Term {
                grace: Duration::from_secs(30),
            },
        )
        .unwrap();
    assert_eq!(reported(&effects[0]), (ServerState::Stopping, ""));
    assert_eq!(
        effects[1..],
        [
            Effect::Signal {
                pid: 9,
                signal: Signal::SIGTERM
            },
            Effect::KillAfter {
                generation,
                pid: 9,
                after: Duration::from_secs(30)
            }
        ]
    );
    assert_eq!(
        slot.grace_over(generation, 9),
        Some(Effect::Signal {
            pid: 9,
            signal: Signal::SIGKILL
        })
    );
    let exit = Exit {
        description: "killed by signal 15".into(),
        code: None,
        oom: false,
    };
    let report = slot.exited(ID, generation, exit).unwrap();
    assert_eq!(
        reported(&report),
        (ServerState::Offline, "stopped (killed by signal 15)")
    );
    assert_eq!(slot.grace_over(generation, 9), None, "it is gone");
    // The next process has the same pid by chance: still not killed by the old deadline.
    let (next, _) = slot.begin_start(ID, ServerSpec::default()).unwrap();
    slot.spawned(next, 9);
    assert_eq!(slot.grace_over(generation, 9), None);
}

#[test]
fn kill_is_one_signal_and_an_unasked_exit_or_an_oom_is_a_crash() {
    let (mut slot, generation) = running(5);
    assert_eq!(
        slot.stop(ID, Stop::Kill).unwrap(),
        [Effect::Signal {
            pid: 5,
            signal: Signal::SIGKILL
        }]
    );
    let oom = Exit {
        description: "oom: killed".into(),
        code: None,
        oom: true,
    };
    let report = slot.exited(ID, generation, oom).unwrap();
    assert_eq!(reported(&report), (ServerState::Crashed, "oom: killed"));

    let (mut slot, generation) = running(6);
    let late = Exit {
        description: "exited with status 1".into(),
        code: Some(1),
        oom: false,
    };
    assert_eq!(
        slot.exited(ID, generation + 1, late.clone()),
        None,
        "another process"
    );
    let report = slot.exited(ID, generation, late).unwrap();
    assert_eq!(
        reported(&report),
        (ServerState::Crashed, "exited with status 1")
    );
    assert_eq!(slot.status(ID).exit_code, Some(1));
    assert!(matches!(
        slot.stop(ID, Stop::Kill),
        Err(Error::State("the server is not running"))
    ));
}

#[test]
fn the_ring_keeps_the_newest_lines() {
    let mut slot = Slot::new(None);
    for i in 0..RING_LINES + 5 {
        slot.keep_line(Line {
            stream: ConsoleStream::Stdout,
            text: i.to_string(),
            at_unix_ms: 0,
        });
    }
    assert_eq!(slot.ring.len(), RING_LINES);
    assert_eq!(slot.ring[0].text, "5");
}
