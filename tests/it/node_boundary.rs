//! The node boundary, attacked through the real `api` and `wings` binaries: a tenant's server
//! that swaps links in while it is backed up, leaves processes outside its process group,
//! litters shared directories before it is deleted, or names a loader hook in its template;
//! and a node without the cgroup controllers that confine servers.
//!
//! The tests that need Wings to run as root (per-server users, cgroups) are
//! `#[ignore = "needs root"]`; `scripts/test.sh` runs them when it is root.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{DbKind, EventReader, Proc, Rest, bin_path, eventually};

use crate::binaries::wings_env;
use crate::servers::{
    CAP, Stack, alive, field, power, server_state, stack, started_pid, until_state,
};

/// A template running the ticker with `args`, made by the platform admin.
async fn template(admin: &Rest, name: &str, args: &[&str]) {
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": name,
                "command": bin_path("ticker").display().to_string(),
                "args": args,
                "limits": {"memory_mb": 256, "max_processes": 64},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A new tenant's server of `template`, installed; its path and id. `wings` is the node, whose
/// log a failure shows.
async fn server(rest: &Rest, wings: &Proc, template: &str) -> (String, String) {
    server_with(rest, wings, template, json!({})).await
}

/// [`server`] with these template variables.
async fn server_with(
    rest: &Rest,
    wings: &Proc,
    template: &str,
    variables: Value,
) -> (String, String) {
    let (_, tenant) = rest.post("/api/tenants", json!({"name": "t"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let (status, body) = rest
        .post(
            &servers,
            json!({"name": template, "node_id": "node-1", "template": template,
                   "variables": variables}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["id"].as_str().unwrap().to_owned();
    let server = format!("{servers}/{sid}");
    let deadline = std::time::Instant::now() + CAP;
    loop {
        let (_, body) = rest.get(&server).await;
        if body["state"] == "offline" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not installed: {body}\nWings:\n{}",
            wings.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (server, sid)
}

/// Starts the server and returns its event stream once the ticker said its pid.
async fn start(rest: &Rest, server: &str) -> EventReader {
    let mut events = rest.events(&format!("{server}/events")).await.unwrap();
    power(rest, server, "start").await;
    started_pid(&mut events).await;
    events
}

async fn console_line(events: &mut EventReader, prefix: &str) -> String {
    let line = events
        .until(&format!("console {prefix}"), CAP, |name, v| {
            name == "console" && v["line"].as_str().unwrap_or("").starts_with(prefix)
        })
        .await;
    line["line"].as_str().unwrap().to_owned()
}

fn backup_state(list: &Value, id: &str) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["state"].clone())
        .unwrap_or(Value::Null)
}

/// Item 1: a server exchanges 2 regular files with links to a root-only canary outside its
/// directory, in a loop, while it is backed up several times: no byte of the canary may
/// reach any archive (the old walk checked each name, then opened it by path as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_never_follow_links_swapped_in() {
    let Stack {
        tmp,
        admin,
        alice,
        panel: _panel,
        wings,
        ..
    } = stack(DbKind::Sqlite).await;
    let dir = tmp.path();
    let secret = format!("CANARY-{}", hex::encode(rand::random::<[u8; 16]>()));
    // Exactly as long as the swapped files, so a followed link fills their whole entry.
    let canary_text = format!("{secret:-<64}");
    let canary = dir.join("canary.txt");
    std::fs::write(&canary, &canary_text).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
    const PAIRS: usize = 2;
    const ROUNDS: usize = 100;
    let swap = format!("{PAIRS}:{}", canary.display());
    template(
        &admin,
        "swapper",
        &["--interval-ms", "1000", "--swap-loop", &swap],
    )
    .await;
    let (server, sid) = server(&alice, &wings, "swapper").await;
    let mut events = start(&alice, &server).await;
    console_line(&mut events, &format!("swapping {PAIRS} pairs")).await;

    let backups = format!("{server}/backups");
    let (mut leaked, mut failed, mut swapped_entries) = (Vec::new(), Vec::new(), 0);
    for round in 0..ROUNDS {
        let (status, backup) = alice
            .post(&backups, json!({"name": format!("round {round}")}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{backup}");
        let bid = backup["id"].as_str().unwrap().to_owned();
        eventually("backup finished", CAP, || async {
            let state = backup_state(&alice.get(&backups).await.1, &bid);
            state == "completed" || state == "failed"
        })
        .await;
        if backup_state(&alice.get(&backups).await.1, &bid) != "completed" {
            failed.push(round);
            continue;
        }
        let archive = dir
            .join("wings/backups")
            .join(&sid)
            .join(format!("{bid}.tar.gz"));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        if tar.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            leaked.push(round);
            continue;
        }
        let mut entries = 0;
        for entry in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            entries += 1;
            let kind = entry.header().entry_type();
            assert!(
                kind.is_file() || kind.is_dir() || kind.is_symlink(),
                "{kind:?}"
            );
        }
        swapped_entries += entries;
    }
    assert!(
        leaked.is_empty(),
        "the root-only canary reached the archives of rounds {leaked:?} (of {ROUNDS})"
    );
    assert!(
        failed.is_empty(),
        "the backups of rounds {failed:?} (of {ROUNDS}) failed"
    );
    // The race was run: the swapped names are in the archives (an entry that keeps changing
    // kind while it is reached may be passed by, but not most of them).
    assert!(
        swapped_entries >= ROUNDS * PAIRS,
        "{swapped_entries} entries in {ROUNDS} archives of {} names",
        2 * PAIRS
    );
    power(&alice, &server, "kill").await;
    until_state(&mut events, "offline").await;
}

/// Item 6 (panel side): a template may not declare a loader or interpreter hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_cannot_declare_loader_hooks() {
    let Stack {
        tmp: _tmp,
        admin,
        panel: _panel,
        wings: _wings,
        ..
    } = stack(DbKind::Sqlite).await;
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "GCONV_PATH",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
    ] {
        let (status, body) = admin
            .post(
                "/api/admin/templates",
                json!({
                    "name": format!("hook-{}", name.to_lowercase().replace('_', "-")),
                    "command": bin_path("ticker").display().to_string(),
                    "variables": [{"name": name, "pattern": ".*", "default": ""}],
                }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        // The contract's code for a template that fails validation.
        assert_eq!(body["error"]["code"], "invalid_request", "{name}: {body}");
    }
}

/// Item 3: stop and kill end every process of the server, also one that left its process
/// group (the old stop signalled the group only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn stop_and_kill_end_processes_that_left_the_group() {
    let Stack {
        tmp: _tmp,
        admin,
        alice,
        panel: _panel,
        wings,
        ..
    } = stack(DbKind::Sqlite).await;
    template(&admin, "escaper", &["--interval-ms", "200", "--escape"]).await;
    for action in ["stop", "kill"] {
        // A server each: a new event stream replays the console's backlog.
        let (server, _) = server(&alice, &wings, "escaper").await;
        let mut events = start(&alice, &server).await;
        escapee_dies_with(&alice, &server, &mut events, action).await;
    }
}

/// Reads the escapee's pid from the console, then `action`s the server: once it is offline,
/// the escapee must be gone too.
async fn escapee_dies_with(rest: &Rest, server: &str, events: &mut EventReader, action: &str) {
    let line = console_line(events, "escapee pid=").await;
    let escapee: u32 = field(&line, "pid=").parse().unwrap();
    assert!(alive(escapee), "the escapee runs");
    power(rest, server, action).await;
    until_state(events, "offline").await;
    eventually(&format!("{action} ends the escapee"), CAP, || async {
        !alive(escapee)
    })
    .await;
}

/// Item 4: a deleted server's uid is never given to the next server, and what it left in the
/// shared temporary directories is removed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn uids_are_not_reused_and_leftovers_go() {
    let Stack {
        tmp: _tmp,
        admin,
        alice,
        panel: _panel,
        wings,
        ..
    } = stack(DbKind::Sqlite).await;
    let litter = format!("/dev/shm/mamba-litter-{}", std::process::id());
    template(
        &admin,
        "litterer",
        &["--interval-ms", "200", "--litter", &litter],
    )
    .await;
    let (first, _) = server(&alice, &wings, "litterer").await;
    let mut events = start(&alice, &first).await;
    let uid = console_line(&mut events, "uid=").await;
    console_line(&mut events, "littered").await;
    assert!(Path::new(&litter).exists());
    power(&alice, &first, "kill").await;
    until_state(&mut events, "offline").await;
    let (status, _) = alice.call(reqwest::Method::DELETE, &first, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the deleted server's litter is gone", CAP, || async {
        !Path::new(&litter).exists()
    })
    .await;
    let (second, _) = server(&alice, &wings, "litterer").await;
    let mut events = start(&alice, &second).await;
    let second_uid = console_line(&mut events, "uid=").await;
    assert_ne!(uid, second_uid, "a uid is handed out once per node");
    power(&alice, &second, "kill").await;
    until_state(&mut events, "offline").await;
    let _ = std::fs::remove_file(&litter);
}

/// Item 5: as root without the memory and pids controllers, Wings refuses to start servers
/// (naming the controllers) unless `WINGS_ALLOW_UNCONFINED=1`, and `wings check` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn unconfined_servers_are_refused_unless_allowed() {
    let Stack {
        tmp,
        pki,
        grpc,
        admin,
        alice,
        cert,
        panel: _panel,
        mut wings,
        ..
    } = stack(DbKind::Sqlite).await;
    let dir = tmp.path();
    wings.terminate();
    // A cgroup mount point with no controller in it.
    let empty = dir.join("no-cgroups");
    std::fs::create_dir(&empty).unwrap();
    let mut env = wings_env(&pki, &cert, "node-1", &grpc, &dir.join("wings"));
    env.push(("WINGS_CGROUP_ROOT".into(), empty.display().to_string()));
    let (ok, out, err) = tests::run("wings", &["check"], &env, dir);
    assert!(ok, "{err}");
    assert!(
        out.contains("servers will NOT start") && out.contains("memory and pids"),
        "{out}"
    );
    let wings = Proc::start("wings", &[], &env, dir);
    wings.wait_for_line("connected to the panel", CAP).await;
    template(&admin, "plain", &["--interval-ms", "200", "--escape"]).await;
    let (server, _) = server(&alice, &wings, "plain").await;
    power(&alice, &server, "start").await;
    eventually("refused: unconfined", CAP, || async {
        alice.get(&server).await.1["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("unconfined") && r.contains("memory and pids"))
    })
    .await;
    assert_eq!(server_state(&alice, &server).await, "offline");
    drop(wings);

    env.push(("WINGS_ALLOW_UNCONFINED".into(), "1".into()));
    let (_, out, _) = tests::run("wings", &["check"], &env, dir);
    assert!(out.contains("WINGS_ALLOW_UNCONFINED=1"), "{out}");
    let _wings = Proc::start("wings", &[], &env, dir);
    _wings.wait_for_line("connected to the panel", CAP).await;
    let mut events = start(&alice, &server).await;
    // Without cgroups, the server's processes are found by its uid: one that left the process
    // group dies with it all the same.
    escapee_dies_with(&alice, &server, &mut events, "kill").await;
}

/// Item 6 (node side): a loader variable in a template stored before the panel refused them
/// reaches only the server's own unprivileged program, never a root helper on the way to it
/// (the old chain ran `prlimit` and `setpriv` as root with the tenant's environment, so
/// `LD_PRELOAD` ran the tenant's library as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn loader_variables_never_reach_a_root_helper() {
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
    let Stack {
        tmp,
        db_url,
        admin,
        alice,
        panel: _panel,
        wings,
        ..
    } = stack(DbKind::Sqlite).await;
    let dir = tmp.path();
    // A library that records who loaded it, as a tenant would upload it.
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = marks.join("loaded");
    let source = dir.join("preload.c");
    std::fs::write(
        &source,
        format!(
            r#"#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {{
    char exe[512] = {{0}};
    readlink("/proc/self/exe", exe, sizeof exe - 1);
    FILE *f = fopen("{}", "a");
    if (f) {{ fprintf(f, "euid=%d exe=%s\n", (int)geteuid(), exe); fclose(f); }}
}}
"#,
            log.display()
        ),
    )
    .unwrap();
    let library = dir.join("preload.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("cc (gcc) builds the test's preload library: install gcc");
    assert!(built.status.success(), "{built:?}");
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o755)).unwrap();

    template(&admin, "preload", &["--interval-ms", "200"]).await;
    let db = api::db::connect(&db_url).await.unwrap();
    let row = api::db::entities::template::Entity::find()
        .filter(api::db::entities::template::Column::Name.eq("preload"))
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let mut row: api::db::entities::template::ActiveModel = row.into();
    row.variables = Set(json!([{"name": "LD_PRELOAD", "pattern": ".*", "default": ""}]));
    row.update(&db).await.unwrap();

    let (server, _) = server_with(
        &alice,
        &wings,
        "preload",
        json!({"LD_PRELOAD": library.display().to_string()}),
    )
    .await;
    let mut events = start(&alice, &server).await;
    let loads = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !loads.lines().any(|l| l.starts_with("euid=0 ")),
        "the tenant's library ran as root:\n{loads}\n{}",
        wings.log()
    );
    assert!(
        loads.lines().any(|l| l.contains("/ticker")),
        "the server's own program got its variable:\n{loads}"
    );
    power(&alice, &server, "kill").await;
    until_state(&mut events, "offline").await;
}

/// Items 2 and 3: a restore runs while a process the server left outside its process group
/// keeps exchanging the restored directories with links to a root-owned directory. The old
/// restore stopped only the process group and then gave the tree to the server's user by
/// path (`lchown`, then `read_dir`): through a swapped link it gave root's files away. Now
/// nothing of the server runs during a restore, and entries are owned as they are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn restores_give_nothing_outside_the_server_away() {
    use std::os::unix::fs::MetadataExt;
    const DIRS: usize = 16;
    const ROUNDS: usize = 10;
    let Stack {
        tmp,
        admin,
        alice,
        panel: _panel,
        wings,
        ..
    } = stack(DbKind::Sqlite).await;
    let dir = tmp.path();
    // Root's directory, holding a file of the name each swapped directory holds.
    let rooted = dir.join("root-only");
    std::fs::create_dir(&rooted).unwrap();
    std::fs::write(rooted.join("f"), "root's").unwrap();
    std::fs::set_permissions(rooted.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let swap = format!("{DIRS}:{}", rooted.display());
    template(
        &admin,
        "dirswap",
        &["--interval-ms", "500", "--escape-swap", &swap],
    )
    .await;
    let (server, sid) = server(&alice, &wings, "dirswap").await;
    let files = dir.join("wings/servers").join(&sid);
    let owner = std::fs::metadata(&files).unwrap();
    for i in 0..DIRS {
        let d = files.join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), "tenant's").unwrap();
        for path in [d.join("f"), d] {
            std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
    }
    let backups = format!("{server}/backups");
    let (status, backup) = alice.post(&backups, json!({"name": "dirs"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backup}");
    let bid = backup["id"].as_str().unwrap().to_owned();
    eventually("backup completed", CAP, || async {
        backup_state(&alice.get(&backups).await.1, &bid) == "completed"
    })
    .await;
    let restore_state = |list: Value| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == bid)
            .map(|b| b["restore_state"].clone())
            .unwrap_or(Value::Null)
    };
    let (mut failed, mut survived, mut given_away) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut events = start(&alice, &server).await;
        let line = console_line(&mut events, "escapee pid=").await;
        let escapee: u32 = field(&line, "pid=").parse().unwrap();
        let (status, body) = alice
            .post(&format!("{backups}/{bid}/restore"), json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        eventually("restore finished", CAP, || async {
            let state = restore_state(alice.get(&backups).await.1);
            state == "restored" || state == "failed"
        })
        .await;
        if restore_state(alice.get(&backups).await.1) != "restored" {
            failed.push(round);
        }
        let escaped = alive(escapee);
        if escaped {
            tests::signal(escapee, "KILL");
        }
        if escaped {
            survived.push(round);
        }
        let file = std::fs::metadata(rooted.join("f")).unwrap();
        if (file.uid(), file.mode() & 0o777) != (0, 0o600) {
            given_away.push(round);
            std::os::unix::fs::lchown(rooted.join("f"), Some(0), Some(0)).unwrap();
        }
    }
    assert!(
        given_away.is_empty(),
        "rounds {given_away:?} (of {ROUNDS}): root's file was given to the server's user"
    );
    assert!(
        survived.is_empty(),
        "rounds {survived:?} (of {ROUNDS}): the restore left the server's process running"
    );
    assert!(failed.is_empty(), "restores of rounds {failed:?} failed");
}
