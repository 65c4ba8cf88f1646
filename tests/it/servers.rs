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

const CAP: Duration = Duration::from_secs(20);

/// The value every test server's MOTD gets: what a shell would act on.
const HOSTILE: &str = "; rm -rf / $(id) `id` && echo pwned\nsecond line";

fn field<'a>(log_line: &'a str, key: &str) -> &'a str {
    log_line
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in {log_line}"))
}

/// The ticker's `ticker pid=N` console line, as a pid.
async fn started_pid(events: &mut EventReader) -> u32 {
    let line = events
        .until("the ticker's pid line", CAP, |name, v| {
            name == "console" && v["line"].as_str().unwrap_or("").starts_with("ticker pid=")
        })
        .await;
    line["line"].as_str().unwrap()["ticker pid=".len()..]
        .parse()
        .unwrap()
}

async fn until_state(events: &mut EventReader, state: &str) -> Value {
    events
        .until(&format!("status {state}"), CAP, |name, v| {
            name == "status" && v["state"] == state
        })
        .await
}

async fn power(rest: &Rest, server: &str, action: &str) -> String {
    let (status, body) = rest
        .post(&format!("{server}/power"), json!({ "action": action }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
    body["command_id"].as_str().unwrap().to_owned()
}

async fn server_state(rest: &Rest, server: &str) -> String {
    rest.get(server).await.1["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn alive(pid: u32) -> bool {
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

async fn servers_through_real_binaries(kind: DbKind) {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Server processes run as an unprivileged user when the tests run as root: they must be
    // able to reach their directories under this one.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let pki = TestPki::new(dir);
    let db_url = database_url(kind, dir).await;
    let (panel, grpc) = start_panel(dir, &panel_env(&pki, &db_url, "127.0.0.1:0")).await;
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
    let mut wings = start_wings(&pki, &cert, &grpc, dir);
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

    // A tenant admin sees the template without its command line.
    let (alice, _) = rest.verified_user(&outbox, "alice@example.com").await;
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
    if std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
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
