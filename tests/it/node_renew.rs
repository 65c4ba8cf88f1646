//! Node identity lifecycle (issue 15), item 3: renewal with overlap over the authenticated
//! stream, through the real binaries. node-1 starts on a root-signed certificate pinned at its
//! first connection; `api node rotate` forces a renewal onto the issuer's certificates, whose
//! test-only lifetime (`NODE_CERT_SECS=30`) makes Wings renew by itself every ~20–23 s. A
//! tenant admin keeps sending power commands and a watcher polls the node's state all along:
//! no command is refused, none fails, and the node is never seen offline. After promotion the
//! old certificate is refused, the old key is gone, and each renewal is audited with both
//! fingerprints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::{DbKind, dial, eventually};

use crate::servers::{CAP, Stack, server_state, stack_with};

/// Renewals the test waits for after the forced one.
const AUTOMATIC_RENEWALS: usize = 3;

async fn renewed_rows(db_url: &str) -> Vec<api::db::entities::audit_log::Model> {
    use api::db::entities::audit_log::{Column, Entity};
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let mut rows = Entity::find()
        .filter(Column::Action.eq("node.cert_renewed"))
        .all(&db)
        .await
        .unwrap();
    let _ = db.close().await;
    rows.sort_by_key(|r| r.at);
    rows
}

async fn renews_with_overlap_and_is_never_offline(kind: DbKind) {
    let Stack {
        tmp,
        pki,
        db_url,
        panel,
        grpc,
        admin,
        alice,
        cert,
        wings,
    } = stack_with(kind, &[("NODE_CERT_SECS", "30")]).await;
    let dir = tmp.path();
    // The original identity, read now: Wings replaces these files when it renews.
    let original = cert.identity();
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "Acme"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let (status, created) = alice
        .post(
            &servers,
            json!({"name": "web", "node_id": "node-1", "template": "ticker", "variables": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let server = format!("{servers}/{}", created["id"].as_str().unwrap());
    eventually("installed", CAP, || async {
        server_state(&alice, &server).await == "offline"
    })
    .await;

    // The watcher: the node's state as the panel serves it, and its row, every 25 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, offline) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (admin, stop, samples, offline) = (
            admin.clone(),
            stop.clone(),
            samples.clone(),
            offline.clone(),
        );
        let db_url = db_url.clone();
        tokio::spawn(async move {
            let db = sea_orm::Database::connect(&db_url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let (_, live) = admin.get("/api/admin/nodes/node-1").await;
                let row = api::nodes::store::get(&db, "node-1")
                    .await
                    .unwrap()
                    .unwrap();
                samples.fetch_add(1, Ordering::Relaxed);
                if live["online"] != true || !row.online {
                    offline.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = db.close().await;
        })
    };
    // The client: a power command every 300 ms. `restart` is valid in every state but
    // `installing` (start/stop alternating would meet 409s of the state machine when a
    // status report lags, which say nothing about the node).
    let commands = {
        let (alice, stop, server) = (alice.clone(), stop.clone(), server.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut refused = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = alice
                    .post(&format!("{server}/power"), json!({ "action": "restart" }))
                    .await;
                match body["command_id"].as_str() {
                    Some(id) if status == StatusCode::ACCEPTED => sent.push(id.to_owned()),
                    _ => refused.push(format!("{status} {body}")),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (sent, refused)
        })
    };

    // `api node rotate` forces the first renewal; the rest come by themselves.
    let started = Instant::now();
    let env = [("DATABASE_URL".to_owned(), db_url.clone())];
    let (ok, out, err) = tests::run("api", &["node", "rotate", "node-1"], &env, dir);
    assert!(ok, "{out}{err}");
    let forced = eventually("the forced renewal is promoted", CAP, || async {
        !renewed_rows(&db_url).await.is_empty()
    })
    .await;
    eventually(
        "three more renewals by themselves",
        Duration::from_secs(40 * AUTOMATIC_RENEWALS as u64),
        || async { renewed_rows(&db_url).await.len() > AUTOMATIC_RENEWALS },
    )
    .await;
    let elapsed = started.elapsed();
    // Let the last handover settle before stopping the client and the watcher.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, refused) = commands.await.unwrap();
    watcher.await.unwrap();

    // Every command accepted and answered by the node: none refused, none lost (a command the
    // node answers with an error, e.g. a start while it is still stopping, is an answer).
    let (mut lost, mut answered_with_error) = (Vec::new(), 0);
    for id in &sent {
        let path = format!("{server}/commands/{id}");
        eventually("the command is settled", CAP, || async {
            alice.get(&path).await.1["state"] != "pending"
        })
        .await;
        let (_, command) = alice.get(&path).await;
        match command["state"].as_str() {
            Some("acked") => {}
            Some("failed")
                if !command["error"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no ack") =>
            {
                answered_with_error += 1;
            }
            _ => lost.push(command),
        }
    }
    let rows = renewed_rows(&db_url).await;
    println!(
        "renewal under load: {} renewals ({} automatic) in {:.1} s (forced one promoted {:.2} s after `api node rotate`); \
         {} power commands sent, {} refused, {} lost (no ack), {} answered with an error; {} state samples, {} offline",
        rows.len(),
        rows.len() - 1,
        elapsed.as_secs_f64(),
        forced.as_secs_f64(),
        sent.len(),
        refused.len(),
        lost.len(),
        answered_with_error,
        samples.load(Ordering::Relaxed),
        offline.load(Ordering::Relaxed),
    );
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(
        offline.load(Ordering::Relaxed),
        0,
        "the node was seen offline"
    );
    assert!(samples.load(Ordering::Relaxed) > 100);
    assert!(sent.len() > 20);

    // Each renewal audited with both fingerprints, each a new certificate.
    let mut seen = vec![cert.fingerprint.clone()];
    for row in &rows {
        let previous = row.details["previous"].as_str().unwrap();
        let next = row.details["fingerprint"].as_str().unwrap();
        assert_eq!(previous, seen.last().unwrap(), "promotions chain");
        assert!(!seen.contains(&next.to_owned()));
        seen.push(next.to_owned());
    }
    // The original certificate is refused now; the old key is gone.
    let err = dial(grpc.parse().unwrap(), &pki.ca_certs(), Some(original), 5)
        .await
        .err()
        .expect("the retired certificate is refused");
    assert!(err.contains("fingerprint_mismatch"), "{err}");
    let prev = format!("{}.prev", cert.key_path.display());
    eventually("the old key is deleted after promotion", CAP, || async {
        !std::path::Path::new(&prev).exists()
    })
    .await;
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&cert.key_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);
    let (_, metrics) = tests::http_get(
        admin.base.trim_start_matches("http://").parse().unwrap(),
        "/metrics",
    )
    .await;
    let promoted = metrics
        .lines()
        .find(|l| l.starts_with("mamba_node_cert_renewals_total{outcome=\"promoted\"}"))
        .unwrap_or_else(|| panic!("no promoted count:\n{metrics}"));
    assert!(
        promoted.ends_with(&format!(" {}", rows.len())),
        "{promoted}"
    );
    let (_, node) = admin.get("/api/admin/nodes/node-1").await;
    assert_eq!(
        node["fingerprint"].as_str(),
        seen.last().map(String::as_str)
    );
    assert!(node["last_renewed_at"].is_string(), "{node}");
    let renewal = node["renewal"].as_str().unwrap_or_default().to_owned();
    assert!(
        ["ok", "due", "renewing"].contains(&renewal.as_str()),
        "{node}"
    );

    // Expiry you can see: the node's certificate expiry and the issuer's in /metrics (refreshed
    // from the database every 10 s), and the columns of `api node list`.
    let addr = admin.base.trim_start_matches("http://").parse().unwrap();
    eventually(
        "the node's expiry in /metrics",
        Duration::from_secs(25),
        || async {
            let (_, node) = admin.get("/api/admin/nodes/node-1").await;
            let not_after =
                chrono::DateTime::parse_from_rfc3339(node["cert_not_after"].as_str().unwrap())
                    .unwrap()
                    .timestamp();
            let (_, metrics) = tests::http_get(addr, "/metrics").await;
            metrics.contains(&format!(
                "mamba_node_cert_expiry_timestamp_seconds{{node=\"node-1\"}} {not_after}"
            )) && metrics.contains("mamba_node_online{node=\"node-1\"} 1")
        },
    )
    .await;
    let (_, metrics) = tests::http_get(addr, "/metrics").await;
    let issuer = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mamba_issuer_cert_expiry_timestamp_seconds "))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no issuer expiry:\n{metrics}"));
    assert!(
        issuer > chrono::Utc::now().timestamp() + 300 * 86_400,
        "{issuer}"
    );
    let (ok, table, err) = tests::run("api", &["node", "list"], &env, dir);
    assert!(ok, "{err}");
    let header = table.lines().next().unwrap();
    for column in ["CERT EXPIRES", "RENEWAL", "LAST RENEWED"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with("node-1")).unwrap();
    assert!(
        ["ok", "due", "renewing"]
            .iter()
            .any(|state| row.contains(state)),
        "{table}"
    );
    assert!(!panel.log().contains("panicked") && !wings.log().contains("panicked"));
}

crate::on_both_databases!(renews_with_overlap_and_is_never_offline);
