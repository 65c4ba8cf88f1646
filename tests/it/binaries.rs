//! The real `api` and `wings` binaries, started as the README starts them: a Wings agent comes
//! online, survives a panel restart, and agents with bad credentials refuse to start or are
//! told why they are turned away.

use std::path::Path;
use std::time::{Duration, Instant};

use tests::{
    DbKind, NodeCert, Proc, TestPki, database_url, eventually, panel_env, run, start_panel,
};

const CAP: Duration = Duration::from_secs(20);

/// The environment `dev-ca env` prints for a node, with a 1 s heartbeat.
pub(crate) fn wings_env(
    pki: &TestPki,
    cert: &NodeCert,
    node_id: &str,
    grpc: &str,
    data: &Path,
) -> Vec<(String, String)> {
    vec![
        ("WINGS_NODE_ID".into(), node_id.to_owned()),
        ("WINGS_API_URL".into(), format!("https://{grpc}")),
        (
            "WINGS_TLS_CERT_FILE".into(),
            cert.cert_path.display().to_string(),
        ),
        (
            "WINGS_TLS_KEY_FILE".into(),
            cert.key_path.display().to_string(),
        ),
        (
            "WINGS_API_CA_CERT".into(),
            pki.layout.ca_cert().display().to_string(),
        ),
        ("WINGS_DATA_DIR".into(), data.display().to_string()),
        ("WINGS_HEARTBEAT_SECS".into(), "1".into()),
    ]
}

async fn node_list(dir: &Path, db_url: &str) -> serde_json::Value {
    let env = [("DATABASE_URL".to_owned(), db_url.to_owned())];
    let (ok, out, err) = run("api", &["node", "list", "--json"], &env, dir);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("node list --json")
}

async fn wings_online_and_reconnects_after_panel_restart(kind: DbKind) {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let db_url = database_url(kind, dir).await;
    let db_env = [("DATABASE_URL".to_owned(), db_url.clone())];
    let (ok, _, err) = run(
        "api",
        &["node", "add", "node-1", "node1.example.com"],
        &db_env,
        dir,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        "api",
        &["node", "add", "node-1", "node1.example.com"],
        &db_env,
        dir,
    );
    assert!(
        !ok && err.contains("already exists"),
        "duplicate node refused: {err}"
    );

    let (mut panel, grpc) = start_panel(dir, &panel_env(&pki, &db_url, "127.0.0.1:0")).await;
    let cert = pki.node("node-1");
    let wings = Proc::start(
        "wings",
        &[],
        &wings_env(&pki, &cert, "node-1", &grpc, &dir.join("wings")),
        dir,
    );
    eventually("node-1 online in `api node list --json`", CAP, || async {
        node_list(dir, &db_url).await[0]["online"] == true
    })
    .await;
    let listed = node_list(dir, &db_url).await;
    assert_eq!(listed[0]["id"], "node-1");
    assert_eq!(listed[0]["fingerprint"], cert.fingerprint.as_str());
    assert!(
        listed[0]["last_seen"].is_string() && listed[0]["cert_not_after"].is_string(),
        "{listed}"
    );

    // Restart the panel on the same port: Wings comes back by itself.
    panel.terminate();
    eventually("node-1 offline while the panel is down", CAP, || async {
        node_list(dir, &db_url).await[0]["online"] == false
    })
    .await;
    let restarted_at = Instant::now();
    let (_panel, _) = start_panel(dir, &panel_env(&pki, &db_url, &grpc)).await;
    eventually("node-1 online again after the restart", CAP, || async {
        node_list(dir, &db_url).await[0]["online"] == true
    })
    .await;
    println!(
        "panel restart -> Wings online again: {:?}",
        restarted_at.elapsed()
    );
    eventually("Wings logs its second welcome", CAP, || async {
        wings.log().matches("connected to the panel node=").count() == 2
    })
    .await;
}

async fn turned_away_agents_log_the_reason(kind: DbKind) {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let db_url = database_url(kind, dir).await;
    let (_panel, grpc) = start_panel(dir, &panel_env(&pki, &db_url, "127.0.0.1:0")).await;
    let rogue = pki.node("rogue-node");
    let wings = Proc::start(
        "wings",
        &[],
        &wings_env(&pki, &rogue, "rogue-node", &grpc, &dir.join("w")),
        dir,
    );
    let line = wings.wait_for_line("not connected to the panel", CAP).await;
    assert!(line.contains("unknown_node"), "{line}");
}

/// Operators' commands never migrate a production database behind the replicas' back: on a
/// schema behind the binary they say to run `api migrate`, and work once it ran. In
/// development they migrate as the panel does.
async fn production_commands_need_a_migrated_database(kind: DbKind) {
    let dir = tempfile::tempdir().unwrap();
    let db_url = database_url(kind, dir.path()).await;
    let env = |production: bool| {
        let mut env = vec![("DATABASE_URL".to_owned(), db_url.clone())];
        if production {
            env.push(("PANEL_ENV".to_owned(), "production".to_owned()));
        }
        env
    };
    let grant = ["admin", "grant", "nobody@example.com"];
    let (ok, out, err) = run("api", &grant, &env(true), dir.path());
    assert!(!ok, "{out}");
    assert!(err.contains("run `api migrate` first"), "{err}");
    let (ok, _, err) = run("api", &["node", "list"], &env(true), dir.path());
    assert!(!ok && err.contains("api migrate"), "{err}");
    let (ok, out, err) = run("api", &["migrate"], &env(true), dir.path());
    assert!(ok, "{out}{err}");
    // Now it gets as far as the account, which does not exist.
    let (ok, _, err) = run("api", &grant, &env(true), dir.path());
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, out, err) = run("api", &["node", "list"], &env(true), dir.path());
    assert!(ok, "{out}{err}");
}

/// Replicas (and operators) starting at once on one unmigrated PostgreSQL database: every
/// `api migrate` succeeds, one after the other (without the lock, two ran the same migration
/// and one failed on PostgreSQL's catalogue), and the schema serves.
#[tokio::test]
async fn concurrent_migrations_on_postgres_run_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = database_url(DbKind::Postgres, dir.path()).await;
    let env = vec![
        ("DATABASE_URL".to_owned(), db_url.clone()),
        ("PANEL_ENV".to_owned(), "production".to_owned()),
    ];
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (env, cwd) = (env.clone(), dir.path().to_owned());
            std::thread::spawn(move || run("api", &["migrate"], &env, &cwd))
        })
        .collect();
    for handle in runs {
        let (ok, out, err) = handle.join().expect("the thread ran");
        assert!(ok, "a concurrent `api migrate` failed: {out}{err}");
    }
    let (ok, out, err) = run("api", &["node", "list"], &env, dir.path());
    assert!(ok, "the migrated schema serves: {out}{err}");
}

/// `WINGS_API_URL` may list several panels (replicas): a Wings whose first URL has nobody
/// listening comes online on the next one, and `wings check` lists both.
#[tokio::test]
async fn wings_tries_each_listed_panel_in_turn() {
    security::tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let db_url = database_url(DbKind::Sqlite, dir).await;
    let db_env = [("DATABASE_URL".to_owned(), db_url.clone())];
    let (ok, _, err) = run(
        "api",
        &["node", "add", "node-1", "node1.example.com"],
        &db_env,
        dir,
    );
    assert!(ok, "{err}");
    let (_panel, grpc) = start_panel(dir, &panel_env(&pki, &db_url, "127.0.0.1:0")).await;
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let cert = pki.node("node-1");
    let mut env = wings_env(&pki, &cert, "node-1", &grpc, &dir.join("wings"));
    for (k, v) in &mut env {
        if k == "WINGS_API_URL" {
            *v = format!("https://{nobody}, https://{grpc}");
        }
    }
    let (ok, out, err) = run("wings", &["check"], &env, dir);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("panel:       {nobody}"))
            && out.contains(&format!("panel:       {grpc}")),
        "{out}"
    );
    let started = Instant::now();
    let _wings = Proc::start("wings", &[], &env, dir);
    eventually("node-1 online through the second URL", CAP, || async {
        node_list(dir, &db_url).await[0]["online"] == true
    })
    .await;
    println!(
        "online through the second of two URLs in {:?}",
        started.elapsed()
    );
}

crate::on_both_databases!(
    wings_online_and_reconnects_after_panel_restart,
    turned_away_agents_log_the_reason,
    production_commands_need_a_migrated_database
);

#[test]
fn wings_refuses_bad_credentials_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let data = dir.join("w");
    let good = pki.node("node-1");

    let (ok, out, err) = run(
        "wings",
        &["check"],
        &wings_env(&pki, &good, "node-1", "127.0.0.1:1", &data),
        dir,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains(&good.fingerprint));

    let (ok, _, err) = run(
        "wings",
        &["check"],
        &wings_env(&pki, &good, "node-2", "127.0.0.1:1", &data),
        dir,
    );
    assert!(
        !ok && err.contains("CN is \"node-1\"") && err.contains("WINGS_NODE_ID"),
        "{err}"
    );

    let expired = pki.expired_node("node-1");
    let (ok, _, err) = run(
        "wings",
        &[],
        &wings_env(&pki, &expired, "node-1", "127.0.0.1:1", &data),
        dir,
    );
    assert!(!ok && err.contains("expired"), "{err}");

    let mut missing = wings_env(&pki, &good, "node-1", "127.0.0.1:1", &data);
    missing.retain(|(k, _)| k != "WINGS_TLS_KEY_FILE");
    missing.push((
        "WINGS_TLS_KEY_FILE".into(),
        dir.join("nope.pem").display().to_string(),
    ));
    let (ok, _, err) = run("wings", &[], &missing, dir);
    assert!(!ok && err.contains("WINGS_TLS_KEY_FILE"), "{err}");

    let other = pki.node("node-1");
    let mut mismatched = wings_env(&pki, &good, "node-1", "127.0.0.1:1", &data);
    mismatched.retain(|(k, _)| k != "WINGS_TLS_KEY_FILE");
    mismatched.push((
        "WINGS_TLS_KEY_FILE".into(),
        other.key_path.display().to_string(),
    ));
    let (ok, _, err) = run("wings", &["check"], &mismatched, dir);
    assert!(!ok && err.contains("does not match"), "{err}");

    let (ok, _, err) = run("wings", &[], &[], dir);
    assert!(
        !ok && err.contains("WINGS_NODE_ID") && err.contains("WINGS_API_URL"),
        "{err}"
    );
}
