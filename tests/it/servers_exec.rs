//! A start is reported `running` only once the server's program itself runs: a program that
//! cannot be executed is a failed start with its reason (through the real binaries; as root,
//! the exec happens in the `wings enter-cgroups` helper, which reports it back to Wings).

use reqwest::StatusCode;
use serde_json::json;
use tests::{DbKind, eventually};

use crate::servers::{CAP, Stack, power, server_state, stack};

/// Where no program is.
const MISSING: &str = "/nonexistent/mamba-no-such-program";

async fn a_program_that_cannot_run_is_a_failed_start(kind: DbKind) {
    let Stack {
        admin,
        alice,
        panel: _panel,
        wings,
        tmp: _tmp,
        ..
    } = stack(kind).await;
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({"name": "missing", "command": MISSING, "args": ["x"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "t"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let (status, body) = alice
        .post(
            &servers,
            json!({"name": "m", "node_id": "node-1", "template": "missing"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let server = format!("{servers}/{}", body["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + CAP;
    while server_state(&alice, &server).await != "offline" {
        assert!(
            std::time::Instant::now() < deadline,
            "not installed\nWings:\n{}",
            wings.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut events = alice.events(&format!("{server}/events")).await.unwrap();
    let command_id = power(&alice, &server, "start").await;
    // The first state after `starting` is the failure: never `running`.
    let status = events
        .until("running or crashed", CAP, |n, v| {
            n == "status" && (v["state"] == "running" || v["state"] == "crashed")
        })
        .await;
    assert_eq!(
        status["state"],
        "crashed",
        "{status}\nWings:\n{}",
        wings.log()
    );
    let reason = status["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with(&format!("cannot start {MISSING}: "))
            && reason.contains("No such file or directory"),
        "{status}"
    );
    // The start command failed, with the same reason.
    let command_path = format!("{server}/commands/{command_id}");
    eventually("the start command failed", CAP, || async {
        alice.get(&command_path).await.1["state"] == "failed"
    })
    .await;
    let (_, command) = alice.get(&command_path).await;
    assert_eq!(command["error"], reason, "{command}");
    assert_eq!(server_state(&alice, &server).await, "crashed");
}

crate::on_both_databases!(a_program_that_cannot_run_is_a_failed_start);
