//! File transfers across replicas, through the real `api` and `wings` binaries on one
//! PostgreSQL: Wings holds its control stream on replica A; a tenant whose requests land on
//! replica B (round-robin behind a balancer) uploads, downloads, lists and makes a directory
//! through B, which routes each request to A and receives the node's `Files` stream itself
//! (at its advertised address). A replica without an advertised address refuses as before.

use reqwest::StatusCode;
use serde_json::json;
use tests::{DbKind, Proc, Rest, panel_env, start_panel};

use crate::files::{Files, code, noise, server, sha256_hex};
use crate::servers::{CAP, Stack, stack_with};

/// Limits roomy enough for polling tests (as the stack's panel has them).
const ROOMY_LIMITS: &str = "login=1000/1m,register=1000/1m,verify=1000/1m,api=10000/1m";

/// A second `api serve` on the stack's database and data directory (same keys), with `extra`
/// in its environment; its REST client carries `rest`'s token.
async fn replica(stack: &Stack, rest: &Rest, extra: &[(&str, &str)]) -> (Proc, Rest) {
    let mut env = panel_env(&stack.pki, &stack.db_url, "127.0.0.1:0");
    env.push(("RATE_LIMITS".to_owned(), ROOMY_LIMITS.to_owned()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let (panel, _) = start_panel(stack.tmp.path(), &env).await;
    let listening = panel.wait_for_line("panel listening", CAP).await;
    let http = listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http_addr="))
        .expect("http_addr in the log line")
        .to_owned();
    let mut other = Rest::new(format!("http://{http}"));
    other.token = rest.token.clone();
    (panel, other)
}

/// Upload, download (same SHA-256), listing and mkdir all through replica B while node-1's
/// control stream is on replica A; a request too large to route is 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn files_work_through_a_replica_that_does_not_hold_the_node() {
    let stack = stack_with(DbKind::Postgres, &[]).await;
    let (url, _, _) = server(&stack.alice, &stack.wings, "ticker").await;
    let (panel_b, alice_b) = replica(&stack, &stack.alice, &[]).await;
    let files = Files::new(&alice_b, &url);
    let body = noise(3 << 20, 7);
    let (status, etag, error) = files.put("/data.bin", body.clone(), None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{error}\nreplica B:\n{}\nreplica A:\n{}\nWings:\n{}",
        panel_b.log(),
        stack.panel.log(),
        stack.wings.log()
    );
    assert!(etag.is_some());
    let (status, _, got) = files.get("/data.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
    let (status, error) = files.op("mkdir", json!({"path": "/made"})).await;
    assert!(status.is_success(), "{status} {error}");
    let (status, listing) = files.list("/").await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let names: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"data.bin"), "{listing}");
    assert!(names.contains(&"made"), "{listing}");
    // A request too large for a PostgreSQL note cannot be routed: 413, nothing half sent.
    let long = format!("/{}", "a".repeat(4000));
    let (status, error) = files
        .op("rename", json!({"from": long, "to": format!("{long}b")}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(code(&error), "payload_too_large");
    let message = error["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("replica that holds the node"), "{error}");
    // Through A (the holder), the same file.
    let (status, _, again) = Files::new(&stack.alice, &url).get("/data.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&again), sha256_hex(&body));
}

/// A replica whose node-channel address is unspecified (`0.0.0.0`) and that advertises none
/// cannot route a file request: 409 `node_offline`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_replica_without_an_advertised_address_answers_node_offline() {
    let stack = stack_with(DbKind::Postgres, &[]).await;
    let (url, _, _) = server(&stack.alice, &stack.wings, "ticker").await;
    let (panel_b, alice_b) =
        replica(&stack, &stack.alice, &[("PANEL_GRPC_ADDR", "0.0.0.0:0")]).await;
    let (status, body) = Files::new(&alice_b, &url).list("/").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "node_offline");
    assert!(
        panel_b.log().contains("PANEL_GRPC_ADVERTISE"),
        "the refusal is explained once in the log:\n{}",
        panel_b.log()
    );
}
