//! Killing the replica that holds the nodes (issue 16's first must-show), through the real
//! binaries: two `api serve` replicas on PostgreSQL and Redis behind HAProxy
//! (`deploy/haproxy.cfg`), two Wings dialling HAProxy's node front, a tenant sending a power
//! command every 100 ms through HAProxy's REST front, and an event stream on the replica that
//! does not hold the nodes. `kill -9` of the holder: the nodes come back on the survivor, every
//! command ends acked or failed with a reason, none runs twice, and console lines keep coming.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tests::{Proc, Rest, bin_path, run};

use crate::binaries::wings_env;
use crate::fleet_proxy::{Deployment, deploy};
use crate::servers::CAP;

/// Between two power commands.
const EVERY: Duration = Duration::from_millis(100);

/// Which replica holds `node`'s stream now, with a live lease.
async fn holder(db: &DatabaseConnection, node: &str) -> Option<String> {
    let row = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT replica_id FROM node_owners WHERE node_id = $1 AND lease_until > now()",
            [node.into()],
        ))
        .await
        .ok()??;
    row.try_get::<String>("", "replica_id").ok()
}

/// A platform admin (granted with the CLI) and a tenant owner, both logged in through `rest`.
async fn people(dir: &Path, db_url: &str, rest: &Rest) -> (Rest, Rest) {
    let outbox = dir.join("data/outbox");
    rest.verified_user(&outbox, "root@example.com").await;
    let env = [("DATABASE_URL".to_owned(), db_url.to_owned())];
    let (ok, _, err) = run("api", &["admin", "grant", "root@example.com"], &env, dir);
    assert!(ok, "{err}");
    let admin = rest.login("root@example.com").await;
    let (owner, _) = rest.verified_user(&outbox, "owner@example.com").await;
    (admin, owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_replica_holding_the_nodes_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Server processes may run as their own users (the suite as root): they must reach here.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let Deployment {
        pki,
        db_url,
        mut a,
        mut b,
        proxy,
    } = deploy(dir, &[]).await;
    let db = Database::connect(&db_url).await.unwrap();
    let rest = Rest::new(format!("http://{}", proxy.front));
    let (admin, owner) = people(dir, &db_url, &rest).await;

    let mut wings = Vec::new();
    for node in ["node-1", "node-2"] {
        let (status, body) = admin
            .post(
                "/api/admin/nodes",
                json!({"id": node, "fqdn": format!("{node}.example.com")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let cert = pki.node(node);
        let env = wings_env(
            &pki,
            &cert,
            node,
            &proxy.nodes.to_string(),
            &dir.join(format!("wings-{node}")),
        );
        wings.push(Proc::start("wings", &[], &env, dir));
    }
    tests::eventually("both nodes online", CAP, || async {
        let (_, nodes) = admin.get("/api/nodes").await;
        nodes["items"]
            .as_array()
            .is_some_and(|items| items.len() == 2 && items.iter().all(|n| n["online"] == true))
    })
    .await;
    let ticker = bin_path("ticker").display().to_string();
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({"name": "ticker", "command": ticker, "args": ["--interval-ms", "50"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, tenant) = owner.post("/api/tenants", json!({"name": "Acme"})).await;
    let tid = tenant["id"].as_str().unwrap().to_owned();
    let (status, server) = owner
        .post(
            &format!("/api/tenants/{tid}/servers"),
            json!({"name": "s", "node_id": "node-1", "template": "ticker"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{server}");
    let path = format!(
        "/api/tenants/{tid}/servers/{}",
        server["id"].as_str().unwrap()
    );
    tests::eventually("installed", CAP, || async {
        owner.get(&path).await.1["state"] == "offline"
    })
    .await;

    // File requests through HAProxy, so through either replica: the holder has node-1 send
    // the transfer to its own address (the node's way in, HAProxy, may lead to the other
    // replica), the other routes it to the holder and has the node send it back to itself.
    for n in 0..6 {
        let (status, body) = owner.get(&format!("{path}/files?path=/")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "listing {n} through HAProxy: {body}"
        );
    }

    // The holder of node-1 is the replica to kill; the event stream is on the other one.
    let held_by = holder(&db, "node-1").await.expect("node-1 is held");
    let (victim, survivor) = if held_by == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let on_survivor = Rest::new(format!("http://{}", survivor.http))
        .login("owner@example.com")
        .await;
    let mut events = on_survivor
        .events(&format!("{path}/events"))
        .await
        .expect("an event stream on the survivor");

    // The tenant: start, then stop and start in turn every 100 ms, through HAProxy.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, path) = (stop.clone(), path.clone());
        let url = format!("http://{}{path}/power", proxy.front);
        let token = owner.token.clone().expect("logged in");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut sent, mut refused, mut unanswered) = (Vec::new(), Vec::new(), Vec::new());
            let mut tick = tokio::time::interval(EVERY);
            for action in ["start", "stop"].into_iter().cycle() {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let answer = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"action": action}))
                    .send()
                    .await;
                let (status, body) = match answer {
                    Ok(answer) => {
                        let status = answer.status();
                        (status, answer.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    // The one in flight when its replica died (HAProxy does not send a POST
                    // again once it reached a replica): its row, if it was written, is
                    // checked below with all the others.
                    Err(e) => {
                        unanswered.push(format!("{action}: {e}"));
                        continue;
                    }
                };
                match body["command_id"].as_str() {
                    Some(id) if status == StatusCode::ACCEPTED => sent.push(id.to_owned()),
                    // The server's own state refuses it (a start while it is starting): an
                    // answer, not a loss.
                    _ if status == StatusCode::CONFLICT && body["error"]["code"] == "conflict" => {
                        refused.push(format!("{action}: {}", body["error"]["message"]));
                    }
                    _ if status.is_server_error() => {
                        unanswered.push(format!("{action}: {status} {body}"))
                    }
                    _ => panic!("{action}: {status} {body}"),
                }
            }
            (sent, refused, unanswered)
        })
    };
    // Console lines, with when they came.
    let lines = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let reader = {
        let lines = lines.clone();
        tokio::spawn(async move {
            loop {
                let _ = events
                    .until("console lines", Duration::from_secs(3600), |name, _| {
                        name == "console"
                    })
                    .await;
                lines.lock().unwrap().push(Instant::now());
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = lines.lock().unwrap().len();
    assert!(
        before > 0,
        "console lines reach the survivor's stream before the kill"
    );

    let mut moved = Vec::new();
    for node in ["node-1", "node-2"] {
        if holder(&db, node).await.as_deref() == Some(victim.name) {
            moved.push(node);
        }
    }
    let killed_at = Instant::now();
    victim.proc.take().expect("running").kill_hard();
    let mut back = HashMap::new();
    while back.len() < moved.len() && killed_at.elapsed() < CAP {
        for node in &moved {
            if !back.contains_key(node) && holder(&db, node).await.as_deref() == Some(survivor.name)
            {
                back.insert(*node, killed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        back.len(),
        moved.len(),
        "{moved:?} moved to {}: {back:?}",
        survivor.name
    );
    tests::eventually("both nodes online on the survivor", CAP, || async {
        let (_, nodes) = admin.get("/api/nodes").await;
        nodes["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|n| n["online"] == true))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, refused, unanswered) = client.await.unwrap();
    reader.abort();

    // Every command ends acked or failed with a reason.
    let mut ends: HashMap<String, usize> = HashMap::new();
    let mut reasons = Vec::new();
    for id in &sent {
        let url = format!("{path}/commands/{id}");
        let took = Instant::now();
        let row = loop {
            let (status, row) = owner.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{row}");
            if row["state"] != "pending" {
                break row;
            }
            assert!(took.elapsed() < CAP, "{id} still pending: {row}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if row["state"] == "failed" {
            reasons.push(row["error"].to_string());
            assert!(
                row["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a failed command says why: {row}"
            );
        } else {
            assert_eq!(row["state"], "acked", "{row}");
        }
        *ends
            .entry(row["state"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Every row the server has, the unanswered POSTs' included, has ended.
    let sid = server["id"].as_str().unwrap();
    let rows = db
        .query_all(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT id, state FROM commands WHERE server_id = $1",
            [sid.into()],
        ))
        .await
        .unwrap();
    let states: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "id").unwrap(),
                r.try_get("", "state").unwrap(),
            )
        })
        .collect();
    assert!(
        states
            .iter()
            .all(|(_, state)| state == "acked" || state == "failed"),
        "a command row left pending: {states:?}"
    );
    assert!(
        unanswered.len() <= 2,
        "only the POSTs in flight at the kill went unanswered: {unanswered:?}"
    );
    // None ran twice: Wings logs each command it runs; an acked one ran exactly once.
    let log = wings[0].log();
    for id in &sent {
        let needle = format!("command={id}");
        let runs = log
            .lines()
            .filter(|l| l.contains("running a command") && l.contains(&needle))
            .count();
        assert!(runs <= 1, "{id} ran {runs} times");
    }
    let gaps = {
        let lines = lines.lock().unwrap();
        let after = lines.iter().filter(|at| **at > killed_at).count();
        assert!(
            after > 0,
            "console lines keep reaching the stream after the kill"
        );
        lines
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    };
    println!(
        "kill -9 of replica {}: its nodes back on {}: {back:?}; {} commands sent ({ends:?}, failed because {reasons:?}), {} refused by the server's state (409) {refused:?}, {} unanswered at the kill {unanswered:?}, {} rows for the server, all ended; longest gap between console lines {gaps:?}",
        victim.name,
        survivor.name,
        sent.len(),
        refused.len(),
        unanswered.len(),
        states.len(),
    );
    assert!(sent.len() > 30, "the client kept sending ({})", sent.len());
}
