//! Graceful shutdown through the real binaries: SIGTERM while clients write and Wings is
//! connected. Every request the panel answered has its audit row, none got a server error, and
//! Wings — told "shutting down, reconnect now" — is back online right after the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::{DbKind, eventually, panel_env, signal, start_panel};

use crate::servers::{Stack, field, stack_with};

const WRITERS: usize = 4;
/// How long the panel stays down between its SIGTERM and its restart.
const PANEL_DOWN: Duration = Duration::from_secs(3);
/// Generous against the ~0.3 s expected; plain exponential backoff would mostly miss it.
const ONLINE_CAP: Duration = Duration::from_secs(2);
/// The writers are one user: lift the per-user API limit so they are answered, not throttled.
const RATE_LIMITS: &str = "RATE_LIMITS";
const UNLIMITED: &str = "api=1000000/1m";

async fn sigterm_loses_nothing_and_wings_returns_at_once(kind: DbKind) {
    let Stack {
        tmp,
        pki,
        db_url,
        mut panel,
        grpc,
        alice,
        wings,
        ..
    } = stack_with(kind, &[(RATE_LIMITS, UNLIMITED)]).await;
    let dir = tmp.path();
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "Acme"})).await;
    let tid = tenant["id"].as_str().unwrap().to_owned();

    // Writers: each PUTs secrets until the panel stops answering, keeping what was answered.
    let http = reqwest::Client::new();
    let token = alice.token.clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, token, stop) = (http.clone(), token.clone(), stop.clone());
        let url = format!("{}/api/tenants/{tid}/secrets", alice.base);
        writers.push(tokio::spawn(async move {
            let (mut answered, mut server_errors) = (Vec::new(), 0);
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{w}-{i}");
                let sent = http
                    .put(format!("{url}/{name}"))
                    .bearer_auth(&token)
                    .json(&json!({"value": "v"}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 204 => answered.push(name),
                    Ok(r) if r.status().is_server_error() => server_errors += 1,
                    Ok(_) => {}
                    Err(_) => break, // the panel no longer accepts
                }
            }
            (answered, server_errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(signal(panel.pid(), "-TERM"));
    let exit = panel.wait_exit(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        exit.success(),
        "the panel exited with {exit}: {}",
        panel.log()
    );
    let (mut answered, mut server_errors) = (Vec::new(), 0);
    for writer in writers {
        let (names, errors) = writer.await.unwrap();
        answered.extend(names);
        server_errors += errors;
    }
    assert!(
        answered.len() > 10,
        "only {} writes answered",
        answered.len()
    );
    assert_eq!(server_errors, 0, "server errors during shutdown");

    // Every answered write has its audit row.
    let db = api::db::connect(&db_url).await.unwrap();
    let audited: std::collections::HashSet<String> = api::db::entities::audit_log::Entity::find()
        .filter(api::db::entities::audit_log::Column::Action.eq("secret.write"))
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|row| row.target)
        .collect();
    let lost: Vec<_> = answered.iter().filter(|n| !audited.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} answered writes without an audit row: {lost:?}",
        lost.len()
    );
    let _ = db.close().await;

    // Wings heard "shutting down" and comes back as soon as the panel is up again.
    let wings_log = wings.log();
    assert!(wings_log.contains("shutting_down"), "{wings_log}");
    // A restart that takes a while: with plain backoff Wings would by now wait seconds between
    // attempts; told the panel is restarting, it keeps trying every few hundred milliseconds.
    tokio::time::sleep(PANEL_DOWN).await;
    let restarted = Instant::now();
    let mut env = panel_env(&pki, &db_url, &grpc);
    env.push((RATE_LIMITS.to_owned(), UNLIMITED.to_owned()));
    let (panel, _) = start_panel(dir, &env).await;
    let listening_line = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    let listening = restarted.elapsed();
    let rest = tests::Rest::new(format!("http://{}", field(&listening_line, "http_addr=")))
        .with_token(&token);
    let online = eventually("node-1 online after the restart", ONLINE_CAP, || async {
        rest.get("/api/nodes").await.1["items"][0]["online"] == true
    })
    .await;
    println!(
        "{kind:?}: {} writes answered before SIGTERM, all audited; panel listening {} ms after \
         its start, node-1 online {} ms after that",
        answered.len(),
        listening.as_millis(),
        online.as_millis()
    );
    drop(panel);
    drop(wings);
}

crate::on_both_databases!(sigterm_loses_nothing_and_wings_returns_at_once);
