//! Servers end to end through the real `api` and `wings` binaries: a platform admin enrols a
//! node and a template, a tenant admin creates a server on the connected Wings, starts it
//! (console over SSE), stops it, sees it `crashed` when its process is killed from outside,
//! and finds it reconciled after Wings itself is killed and restarted. Hostile template
//! variables reach the process verbatim as one argument, never through a shell.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{
    DbKind, EventReader, NodeCert, Proc, Rest, TestPki, bin_path, database_url, eventually,
    panel_env, run, signal, start_panel,
};

use crate::binaries::wings_env;

pub(crate) const CAP: Duration = Duration::from_secs(20);
const ROOMY_LIMITS: &str = "login=1000/1m,register=1000/1m,verify=1000/1m,api=10000/1m";

/// The value every test server's MOTD gets: what a shell would act on.
const HOSTILE: &str = "; rm -rf / $(id) `id` && echo pwned\nsecond line";

pub(crate) fn field<'a>(log_line: &'a str, key: &str) -> &'a str {
    log_line
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in {log_line}"))
}

/// The ticker's `ticker pid=N` console line, as a pid.
pub(crate) async fn started_pid(events: &mut EventReader) -> u32 {
    let line = events
        .until("the ticker's pid line", CAP, |name, v| {
            name == "console" && v["line"].as_str().unwrap_or("").starts_with("ticker pid=")
        })
        .await;
    line["line"].as_str().unwrap()["ticker pid=".len()..]
        .parse()
        .unwrap()
}

pub(crate) async fn until_state(events: &mut EventReader, state: &str) -> Value {
    events
        .until(&format!("status {state}"), CAP, |name, v| {
            name == "status" && v["state"] == state
        })
        .await
}

pub(crate) async fn power(rest: &Rest, server: &str, action: &str) -> String {
    let (status, body) = rest
        .post(&format!("{server}/power"), json!({ "action": action }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
    body["command_id"].as_str().unwrap().to_owned()
}

pub(crate) async fn server_state(rest: &Rest, server: &str) -> String {
    rest.get(server).await.1["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn start_wings(pki: &TestPki, cert: &NodeCert, grpc: &str, dir: &Path) -> Proc {
    Proc::start(
        "wings",
        &[],
        &wings_env(pki, cert, "node-1", grpc, &dir.join("wings")),
        dir,
    )
}

/// The real panel and Wings, a platform admin who enrolled node-1 and the `ticker` template,
/// and a verified tenant admin.
pub(crate) struct Stack {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) pki: TestPki,
    pub(crate) db_url: String,
    pub(crate) panel: Proc,
    pub(crate) grpc: String,
    pub(crate) admin: Rest,
    pub(crate) alice: Rest,
    pub(crate) cert: NodeCert,
    pub(crate) wings: Proc,
}

pub(crate) async fn stack(kind: DbKind) -> Stack {
    stack_with(kind, &[]).await
}

/// [`stack`] with `extra` added to the panel's environment.
pub(crate) async fn stack_with(kind: DbKind, extra: &[(&str, &str)]) -> Stack {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Server processes run as an unprivileged user when the tests run as root: they must be
    // able to reach their directories under this one.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let pki = TestPki::new(dir);
    let db_url = database_url(kind, dir).await;
    let mut env = panel_env(&pki, &db_url, "127.0.0.1:0");
    // Not a test of limits: these tests poll, and one user may well pass 100 calls a minute.
    env.push(("RATE_LIMITS".to_owned(), ROOMY_LIMITS.to_owned()));
    // An issuer, as `dev-ca init` makes it (node-1 itself starts on a certificate of the
    // root, pinned at its first connection, and renews to the issuer's when asked).
    pki.issuer(Duration::from_secs(30 * 86_400));
    for (name, path) in [
        ("PANEL_ISSUER_CERT_FILE", pki.layout.issuer_cert()),
        ("PANEL_ISSUER_KEY_FILE", pki.layout.issuer_key()),
    ] {
        env.push((name.to_owned(), path.display().to_string()));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let (panel, grpc) = start_panel(dir, &env).await;
    let listening = panel.wait_for_line("panel listening", CAP).await;
    let rest = Rest::new(format!("http://{}", field(&listening, "http_addr=")));
    let outbox = dir.join("data/outbox");

    // The platform admin: registered, verified, granted from the CLI.
    let (_, _) = rest.verified_user(&outbox, "root@example.com").await;
    let db_env = [("DATABASE_URL".to_owned(), db_url.clone())];
    let (ok, _, err) = run("api", &["admin", "grant", "root@example.com"], &db_env, dir);
    assert!(ok, "{err}");
    let admin = rest.login("root@example.com").await;
    let (status, body) = admin
        .post(
            "/api/admin/nodes",
            json!({"id": "node-1", "fqdn": "node1.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["online"], false);
    let cert = pki.node("node-1");
    let wings = start_wings(&pki, &cert, &grpc, dir);
    eventually("node-1 online in GET /api/nodes", CAP, || async {
        admin.get("/api/nodes").await.1["items"][0]["online"] == true
    })
    .await;
    let ticker = bin_path("ticker").display().to_string();
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": "ticker",
                "command": ticker,
                "args": ["--interval-ms", "{{INTERVAL}}", "--motd={{MOTD}}"],
                "variables": [
                    {"name": "INTERVAL", "pattern": "[0-9]{1,5}", "default": "100"},
                    {"name": "MOTD", "pattern": "(?s).*", "default": "hello"},
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (alice, _) = rest.verified_user(&outbox, "alice@example.com").await;
    Stack {
        tmp,
        pki,
        db_url,
        panel,
        grpc,
        admin,
        alice,
        cert,
        wings,
    }
}

async fn servers_through_real_binaries(kind: DbKind) {
    let Stack {
        tmp,
        pki,
        db_url,
        panel: _panel,
        grpc,
        admin,
        alice,
        cert,
        mut wings,
    } = stack(kind).await;
    let dir = tmp.path();
    // A tenant admin sees the template without its command line.
    let (_, templates) = alice.get("/api/templates").await;
    assert_eq!(templates["items"][0]["name"], "ticker");
    assert!(
        templates["items"][0].get("command").is_none(),
        "{templates}"
    );
    let (status, tenant) = alice.post("/api/tenants", json!({"name": "Acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    for (variables, why) in [
        (json!({"MOTD": "x".repeat(10 * 1024)}), "10 KB"),
        (json!({"INTERVAL": "1; reboot"}), "pattern"),
        (json!({"NOPE": "x"}), "undeclared"),
    ] {
        let (status, body) = alice
            .post(
                &servers,
                json!({"name": "bad", "node_id": "node-1", "template": "ticker", "variables": variables}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let (status, created) = alice
        .post(
            &servers,
            json!({"name": "web", "node_id": "node-1", "template": "ticker",
                   "variables": {"MOTD": HOSTILE, "INTERVAL": "50"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "installing");
    let sid = created["id"].as_str().unwrap().to_owned();
    let server = format!("{servers}/{sid}");
    eventually("installed: offline", CAP, || async {
        server_state(&alice, &server).await == "offline"
    })
    .await;
    let server_dir = dir.join("wings/servers").join(&sid);
    assert!(server_dir.is_dir(), "Wings made the server's directory");

    // Start: running, console over SSE, the hostile value one argument, verbatim.
    let mut events = alice.events(&format!("{server}/events")).await.unwrap();
    let first = events
        .until("first status", CAP, |n, _| n == "status")
        .await;
    assert_eq!(first["state"], "offline");
    let command_id = power(&alice, &server, "start").await;
    until_state(&mut events, "running").await;
    let pid = started_pid(&mut events).await;
    let args = events
        .until("args line", CAP, |n, v| {
            n == "console" && v["line"].as_str().unwrap_or("").starts_with("args=")
        })
        .await;
    let argv: Vec<String> =
        serde_json::from_str(&args["line"].as_str().unwrap()["args=".len()..]).unwrap();
    assert_eq!(
        argv,
        vec!["--interval-ms", "50", &format!("--motd={HOSTILE}")],
        "each template argument is exactly one argument, the value verbatim"
    );
    let uid = events
        .until("uid line", CAP, |n, v| {
            n == "console" && v["line"].as_str().unwrap_or("").starts_with("uid=")
        })
        .await;
    if nix_is_root() {
        assert_ne!(
            uid["line"], "uid=0",
            "Wings as root runs servers unprivileged"
        );
    }
    events
        .until("tick 3 on the console", CAP, |n, v| {
            n == "console" && v["line"] == "tick 3"
        })
        .await;
    let command_path = format!("{server}/commands/{command_id}");
    eventually("the start command acked", CAP, || async {
        alice.get(&command_path).await.1["state"] == "acked"
    })
    .await;
    assert_eq!(server_state(&alice, &server).await, "running");
    let (status, body) = alice
        .post(&format!("{server}/power"), json!({"action": "start"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "start while running: {body}");

    // Console input reaches the process's stdin and comes back on the console.
    let (status, _) = alice
        .post(&format!("{server}/console"), json!({"line": "say hello"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    events
        .until("the echoed input", CAP, |n, v| {
            n == "console" && v["line"] == "stdin: say hello"
        })
        .await;

    // Stop: offline, the process gone.
    power(&alice, &server, "stop").await;
    until_state(&mut events, "offline").await;
    assert!(!alive(pid), "the stopped process is gone");

    // Killed from outside: crashed.
    power(&alice, &server, "start").await;
    until_state(&mut events, "running").await;
    let pid = started_pid(&mut events).await;
    assert!(signal(pid, "-KILL"), "kill -KILL {pid}");
    let crashed = until_state(&mut events, "crashed").await;
    assert!(
        crashed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("signal 9"),
        "{crashed}"
    );
    assert_eq!(server_state(&alice, &server).await, "crashed");

    // Wings killed while the server runs, the panel's record made wrong meanwhile: when Wings
    // is back, the server runs again (a new process) and the record says so.
    power(&alice, &server, "start").await;
    until_state(&mut events, "running").await;
    let old_pid = started_pid(&mut events).await;
    wings.kill_hard();
    eventually("node-1 offline after Wings died", CAP, || async {
        admin.get("/api/nodes").await.1["items"][0]["online"] == false
    })
    .await;
    let (status, body) = alice
        .post(&format!("{server}/power"), json!({"action": "stop"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "node_offline");
    let db = api::db::connect(&db_url).await.unwrap();
    api::db::entities::server::Entity::update_many()
        .col_expr(
            api::db::entities::server::Column::State,
            Expr::value("offline"),
        )
        .filter(api::db::entities::server::Column::Id.eq(&sid))
        .exec(&db)
        .await
        .unwrap();
    let _wings = start_wings(&pki, &cert, &grpc, dir);
    let took = eventually("reconciled: running again", CAP, || async {
        server_state(&alice, &server).await == "running"
    })
    .await;
    println!("Wings restart -> server reconciled running: {took:?}");
    let new_pid = started_pid(&mut events).await;
    assert_ne!(new_pid, old_pid, "a new process");
    assert!(!alive(old_pid), "the process the dead Wings left is gone");

    // Deleted: gone from the panel and, once the node has it done, from the node.
    let (status, _) = alice.call(reqwest::Method::DELETE, &server, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(alice.get(&server).await.0, StatusCode::NOT_FOUND);
    eventually("the node removed the server's directory", CAP, || async {
        !server_dir.exists()
    })
    .await;
    assert!(!alive(new_pid), "the deleted server's process is gone");

    // The tenant's audit has its own rows.
    let (status, audit) = alice
        .get(&format!(
            "/api/tenants/{}/audit",
            tenant["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "tenant.create",
        "server.create",
        "server.power",
        "server.delete",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    assert!(!actions.contains(&"node.connect"), "platform rows stay out");
    assert!(
        !audit.to_string().contains("rm -rf"),
        "variable values are not audited"
    );
}

crate::on_both_databases!(servers_through_real_binaries);

/// Every file under `dir` with its contents (links as `-> target`), for before/after checks.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.push((
                    name,
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                ));
            } else if meta.is_dir() {
                out.push((name, "dir".into()));
                stack.push(path);
            } else {
                out.push((
                    name,
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// A gzipped tar with a harmless file, then one hostile entry: a `../` path, an absolute path,
/// or a link leading out of the directory.
fn hostile_archive(kind: &str, absolute: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut append = |name: &[u8], kind: tar::EntryType, link: Option<&[u8]>, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // Written raw: the tar crate itself refuses to make such names.
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };
    append(b"harmless.txt", tar::EntryType::Regular, None, b"fine");
    match kind {
        "traversal" => append(b"../escaped.txt", tar::EntryType::Regular, None, b"pwned"),
        "absolute" => append(
            absolute.to_str().unwrap().as_bytes(),
            tar::EntryType::Regular,
            None,
            b"pwned",
        ),
        _ => append(b"link", tar::EntryType::Symlink, Some(b"../../.."), b""),
    }
    builder.into_inner().unwrap().finish().unwrap()
}

async fn backups_through_real_binaries(kind: DbKind) {
    let Stack {
        tmp,
        db_url,
        panel: _panel,
        admin,
        alice,
        wings: _wings,
        ..
    } = stack(kind).await;
    let dir = tmp.path();
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "Acme"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let (status, created) = alice
        .post(
            &servers,
            json!({"name": "db", "node_id": "node-1", "template": "ticker"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let sid = created["id"].as_str().unwrap().to_owned();
    let server = format!("{servers}/{sid}");
    eventually("installed", CAP, || async {
        server_state(&alice, &server).await == "offline"
    })
    .await;
    let files = dir.join("wings/servers").join(&sid);
    std::fs::create_dir_all(files.join("world")).unwrap();
    std::fs::write(files.join("server.properties"), "motd=v1\n").unwrap();
    std::fs::write(files.join("world/level.dat"), "level one").unwrap();
    // As a tenant would have made them: the server's own (Wings backs up nothing else).
    give_to_owner_of(&files);
    let original = tree(&files);

    // Back up: completed with the archive's size and SHA-256.
    let (status, backup) = alice
        .post(&format!("{server}/backups"), json!({"name": "before"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backup}");
    assert_eq!(backup["state"], "pending");
    let bid = backup["id"].as_str().unwrap().to_owned();
    let backups = format!("{server}/backups");
    let find = |list: &Value, id: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    eventually("backup completed", CAP, || async {
        find(&alice.get(&backups).await.1, &bid)["state"] == "completed"
    })
    .await;
    let made = find(&alice.get(&backups).await.1, &bid);
    let archive = dir
        .join("wings/backups")
        .join(&sid)
        .join(format!("{bid}.tar.gz"));
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(made["size_bytes"], bytes.len() as u64);
    assert_eq!(
        made["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );

    // Change and delete files, start the server, restore: stopped, files as they were.
    std::fs::write(files.join("server.properties"), "motd=v2\n").unwrap();
    std::fs::remove_dir_all(files.join("world")).unwrap();
    std::fs::write(files.join("new.txt"), "new").unwrap();
    power(&alice, &server, "start").await;
    eventually("running", CAP, || async {
        server_state(&alice, &server).await == "running"
    })
    .await;
    let (status, body) = alice
        .post(&format!("{backups}/{bid}/restore"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("restored", CAP, || async {
        find(&alice.get(&backups).await.1, &bid)["restore_state"] == "restored"
    })
    .await;
    assert_eq!(
        server_state(&alice, &server).await,
        "offline",
        "stopped for the restore"
    );
    assert_eq!(tree(&files), original, "the files are as they were");

    // Hostile archives with their correct SHA-256 registered: the path checks refuse them and
    // nothing inside or outside the server's directory changes.
    let db = api::db::connect(&db_url).await.unwrap();
    let outside = dir.join("wings/servers");
    let absolute = dir.join("absolute-escape.txt");
    for kind in ["traversal", "absolute", "symlink"] {
        let id = uuid::Uuid::now_v7().to_string();
        let bytes = hostile_archive(kind, &absolute);
        std::fs::write(
            dir.join("wings/backups")
                .join(&sid)
                .join(format!("{id}.tar.gz")),
            &bytes,
        )
        .unwrap();
        use sea_orm::ActiveModelTrait;
        api::db::entities::backup::ActiveModel {
            id: sea_orm::Set(id.clone()),
            server_id: sea_orm::Set(sid.clone()),
            tenant_id: sea_orm::Set(tenant["id"].as_str().unwrap().to_owned()),
            node_id: sea_orm::Set("node-1".into()),
            name: sea_orm::Set(format!("planted {kind}")),
            state: sea_orm::Set(api::db::entities::states::BackupState::Completed),
            size_bytes: sea_orm::Set(Some(bytes.len() as i64)),
            sha256: sea_orm::Set(Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                &bytes,
            )))),
            error: sea_orm::Set(None),
            restore_state: sea_orm::Set(None),
            restore_error: sea_orm::Set(None),
            created_at: sea_orm::Set(chrono::Utc::now()),
            completed_at: sea_orm::Set(Some(chrono::Utc::now())),
        }
        .insert(&db)
        .await
        .unwrap();
        let siblings = tree(&outside);
        let (status, body) = alice
            .post(&format!("{backups}/{id}/restore"), json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        eventually(&format!("{kind} restore refused"), CAP, || async {
            find(&alice.get(&backups).await.1, &id)["restore_state"] == "failed"
        })
        .await;
        let refused = find(&alice.get(&backups).await.1, &id);
        assert!(
            refused["restore_error"]
                .as_str()
                .unwrap()
                .contains("path traversal"),
            "{kind}: {refused}"
        );
        assert_eq!(tree(&files), original, "{kind}: nothing inside changed");
        assert_eq!(
            tree(&outside),
            siblings,
            "{kind}: nothing beside it changed"
        );
        assert!(!absolute.exists() && !dir.join("wings/escaped.txt").exists());
    }

    // A backup of 100 MB does not hold up the agent's heartbeats: last_seen keeps moving
    // while it is made.
    let mut noise = vec![0u8; 100 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(files.join("big.bin"), &noise).unwrap();
    drop(noise);
    let (_, big) = alice.post(&backups, json!({"name": "big"})).await;
    let big = big["id"].as_str().unwrap().to_owned();
    let node = || async { admin.get("/api/admin/nodes/node-1").await.1 };
    let mut heartbeats = 0;
    let mut previous = node().await["last_seen"].clone();
    let started = std::time::Instant::now();
    while find(&alice.get(&backups).await.1, &big)["state"] == "pending" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the 100 MB backup never finished"
        );
        let now = node().await;
        assert_eq!(
            now["online"], true,
            "the node stays online during the backup"
        );
        let seen: chrono::DateTime<chrono::Utc> =
            now["last_seen"].as_str().unwrap().parse().unwrap();
        let age = chrono::Utc::now() - seen;
        assert!(
            age < chrono::TimeDelta::seconds(4),
            "a heartbeat within the last 3 s (1 s interval): {age}"
        );
        if now["last_seen"] != previous {
            heartbeats += 1;
            previous = now["last_seen"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = find(&alice.get(&backups).await.1, &big);
    assert_eq!(done["state"], "completed", "{done}");
    println!(
        "100 MB backup: {:?}, {heartbeats} heartbeats recorded meanwhile",
        started.elapsed()
    );

    // Deleting a backup removes its archive.
    let (status, _) = alice
        .call(reqwest::Method::DELETE, &format!("{backups}/{bid}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually("the archive is gone", CAP, || async { !archive.exists() }).await;
    let (status, _) = alice.call(reqwest::Method::DELETE, &server, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(
        "the server and its backups are gone from the node",
        CAP,
        || async { !files.exists() && !dir.join("wings/backups").join(&sid).exists() },
    )
    .await;
}

crate::on_both_databases!(backups_through_real_binaries);

/// Starts a server of the `isolated` template and returns its path and its ticker's pid.
async fn started(
    rest: &Rest,
    servers: &str,
    name: &str,
    variables: Value,
    events: &mut Option<EventReader>,
) -> (String, String, u32) {
    let (status, body) = rest
        .post(
            servers,
            json!({"name": name, "node_id": "node-1", "template": "isolated", "variables": variables}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["id"].as_str().unwrap().to_owned();
    let server = format!("{servers}/{sid}");
    eventually("installed", CAP, || async {
        server_state(rest, &server).await == "offline"
    })
    .await;
    let mut reader = rest.events(&format!("{server}/events")).await.unwrap();
    power(rest, &server, "start").await;
    let pid = started_pid(&mut reader).await;
    *events = Some(reader);
    (sid, server, pid)
}

async fn tenants_are_isolated_on_the_node(kind: DbKind) {
    assert!(
        nix_is_root(),
        "Wings must run as root to give each server its own user and cgroups"
    );
    let cgroups = wings::isolation::Cgroups::detect();
    let missing = cgroups.missing();
    for controller in &missing {
        println!(
            "cgroup controller {controller} is missing here ({}): its limit is not enforced and not tested",
            cgroups.version()
        );
    }
    let Stack {
        tmp,
        panel: _panel,
        admin,
        alice,
        cert,
        wings: _wings,
        ..
    } = stack(kind).await;
    let dir = tmp.path();
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": "isolated",
                "command": bin_path("ticker").display().to_string(),
                "args": ["--interval-ms", "200", "--probe", "{{PROBE}}", "--allocate-mb", "{{ALLOC}}", "{{MODE}}"],
                "variables": [
                    {"name": "PROBE", "pattern": "[A-Za-z0-9/._,-]{0,2000}", "default": ""},
                    {"name": "ALLOC", "pattern": "[0-9]{1,4}", "default": "0"},
                    {"name": "MODE", "pattern": "--idle|--fork-loop", "default": "--idle"},
                    {"name": "MOTD", "pattern": "[A-Za-z0-9-]{0,64}", "default": ""},
                ],
                "limits": {"memory_mb": 64, "max_processes": 32},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (bob, _) = Rest::new(alice.base.clone())
        .verified_user(&dir.join("data/outbox"), "bob@example.com")
        .await;
    let tenant_servers = |rest: Rest| async move {
        let (_, tenant) = rest.post("/api/tenants", json!({"name": "t"})).await;
        format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap())
    };
    let (a_servers, b_servers) = (
        tenant_servers(alice.clone()).await,
        tenant_servers(bob.clone()).await,
    );

    // Tenant A's server, with a secret in its environment and a file in its directory.
    let mut events = None;
    let (a_sid, _, a_pid) = started(
        &alice,
        &a_servers,
        "a",
        json!({"MOTD": "A-secret-value"}),
        &mut events,
    )
    .await;
    // Live usage reaches the SSE stream as `stats` events.
    let stats = events
        .as_mut()
        .unwrap()
        .until("a stats event", CAP, |n, v| {
            n == "stats" && v["memory_bytes"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(stats["memory_limit_bytes"], 64u64 << 20, "{stats}");
    assert!(stats["cpu_percent"].as_f64().is_some(), "{stats}");
    let a_dir = dir.join("wings/servers").join(&a_sid);
    std::fs::write(a_dir.join("secret.txt"), "tenant A's file").unwrap();
    let environ = std::fs::read(format!("/proc/{a_pid}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("A-secret-value"),
        "the probe target holds the secret"
    );
    assert!(
        !String::from_utf8_lossy(&environ).contains("WINGS_"),
        "no Wings variable reaches a server"
    );
    // Tenant B's server tries to read them, and Wings' key.
    let probes = [
        a_dir.join("secret.txt").display().to_string(),
        format!("/proc/{a_pid}/environ"),
        cert.key_path.display().to_string(),
        "/etc/hostname".to_owned(),
    ];
    let mut b_events = None;
    let (b_sid, _, b_pid) = started(
        &bob,
        &b_servers,
        "b",
        json!({"PROBE": probes.join(",")}),
        &mut b_events,
    )
    .await;
    let b_events = b_events.as_mut().unwrap();
    for (i, path) in probes.iter().enumerate() {
        let line = b_events
            .until(&format!("probe of {path}"), CAP, |n, v| {
                n == "console"
                    && v["line"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("probe {path}:"))
            })
            .await;
        let line = line["line"].as_str().unwrap();
        if i < 3 {
            assert!(line.contains("denied"), "{line}");
        } else {
            assert!(
                line.contains("read"),
                "control: a world-readable file is readable: {line}"
            );
        }
    }
    let uid = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert_ne!(uid(a_pid), uid(b_pid), "a user per server");
    assert_ne!(uid(a_pid), "0");
    let groups = std::fs::read_to_string(format!("/proc/{b_pid}/status")).unwrap();
    assert!(
        groups.lines().any(|l| l
            .strip_prefix("Groups:")
            .is_some_and(|g| g.trim().is_empty())),
        "no supplementary groups: {groups}"
    );
    assert!(
        groups
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "no new privileges"
    );

    // Over its memory limit: killed, crashed with reason oom.
    if !missing.contains(&"memory") {
        let mut c_events = None;
        let (_, c_server, _) = started(
            &alice,
            &a_servers,
            "c",
            json!({"ALLOC": "200"}),
            &mut c_events,
        )
        .await;
        let crashed = until_state(c_events.as_mut().unwrap(), "crashed").await;
        assert!(
            crashed["reason"].as_str().unwrap_or("").starts_with("oom"),
            "{crashed}"
        );
        assert!(
            alice.get(&c_server).await.1["state_reason"]
                .as_str()
                .unwrap()
                .starts_with("oom"),
            "the reason is recorded"
        );
    }
    // A fork loop stops at the process limit; the node keeps its heartbeats.
    if !missing.contains(&"pids") {
        let mut d_events = None;
        started(
            &alice,
            &a_servers,
            "d",
            json!({"MODE": "--fork-loop"}),
            &mut d_events,
        )
        .await;
        let forked = d_events
            .as_mut()
            .unwrap()
            .until("the fork loop's end", CAP, |n, v| {
                n == "console" && v["line"].as_str().unwrap_or("").starts_with("forked ")
            })
            .await;
        let n: u32 = forked["line"].as_str().unwrap()["forked ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n < 32, "stopped below the limit of 32 processes: {forked}");
        println!("fork loop: {}", forked["line"]);
        // Heartbeats keep flowing: last_seen moves on after the fork loop was reported.
        let (_, before) = admin.get("/api/admin/nodes/node-1").await;
        eventually(
            "a heartbeat after the fork loop",
            Duration::from_secs(10),
            || async {
                let (_, node) = admin.get("/api/admin/nodes/node-1").await;
                node["online"] == true && node["last_seen"] != before["last_seen"]
            },
        )
        .await;
    }

    // Over its disk quota: the node refuses to start it and says why.
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": "tiny",
                "command": bin_path("ticker").display().to_string(),
                "limits": {"disk_mb": 1},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, tiny) = alice
        .post(
            &a_servers,
            json!({"name": "tiny", "node_id": "node-1", "template": "tiny"}),
        )
        .await;
    let tiny = format!("{a_servers}/{}", tiny["id"].as_str().unwrap());
    eventually("installed", CAP, || async {
        server_state(&alice, &tiny).await == "offline"
    })
    .await;
    let tiny_dir = dir
        .join("wings/servers")
        .join(tiny.rsplit('/').next().unwrap());
    std::fs::write(tiny_dir.join("world.dat"), vec![0u8; 2 << 20]).unwrap();
    power(&alice, &tiny, "start").await;
    eventually("refused over quota", CAP, || async {
        alice.get(&tiny).await.1["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("disk_quota"))
    })
    .await;
    assert_eq!(server_state(&alice, &tiny).await, "offline");

    // Deleting servers removes their users and cgroups.
    for (servers, sid) in [(&a_servers, &a_sid), (&b_servers, &b_sid)] {
        let rest = if servers == &a_servers { &alice } else { &bob };
        rest.call(reqwest::Method::DELETE, &format!("{servers}/{sid}"), None)
            .await;
        let user = wings::users::user_name(sid);
        eventually("the server's user is removed", CAP, || async {
            !std::fs::read_to_string("/etc/passwd")
                .unwrap()
                .contains(&format!("{user}:"))
        })
        .await;
        for procs in cgroups.procs_files(sid) {
            let group = procs.parent().unwrap().to_owned();
            eventually("the server's cgroups are removed", CAP, || async {
                !group.exists()
            })
            .await;
        }
    }
    // The rest of tenant A's servers go with the tenant.
    let tenant = a_servers.trim_end_matches("/servers").to_owned();
    assert_eq!(
        alice.call(reqwest::Method::DELETE, &tenant, None).await.0,
        StatusCode::ACCEPTED
    );
    eventually("every server user of this test is gone", CAP, || async {
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains(&dir.display().to_string())
    })
    .await;
}

/// Gives everything under `dir` to `dir`'s owner (files a test planted as root).
fn give_to_owner_of(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).unwrap();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(meta.uid()), Some(meta.gid())).unwrap();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

pub(crate) fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

crate::on_both_databases_as_root!(tenants_are_isolated_on_the_node);
