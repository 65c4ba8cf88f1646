//! Bounds on the node channel (issue 13, items 11 and 12) against the real panel and real
//! TLS: what an admitted node sends is cut to size and counted, and what unauthenticated
//! clients can do to the audit log and the accept loop is capped.

use std::time::Duration;

use api::db::entities::server;
use api::grpc::gate::MAX_HANDSHAKES_PER_IP;
use proto::node::v1::{CommandAck, ConsoleLine, NodeMessage, ServerStatus, node_message};
use sea_orm::{ActiveModelTrait, Set};
use tests::{DbKind, connect_idle, dial, eventually, hello, open};
use tokio::io::AsyncReadExt;

use crate::node_channel::{CAP, Fixture};

/// The value of one sample of `/metrics`, e.g. `mamba_node_input_cut_total{what="message"}`.
async fn metric(f: &Fixture, sample: &str) -> Option<u64> {
    let (_, body) = tests::http_get(f.panel.http_addr, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

async fn cut(f: &Fixture, what: &str) -> Option<u64> {
    metric(f, &format!("mamba_node_input_cut_total{{what=\"{what}\"}}")).await
}

fn console(server_id: &str, line: String) -> NodeMessage {
    NodeMessage {
        kind: Some(node_message::Kind::Console(ConsoleLine {
            server_id: server_id.into(),
            line,
            ..Default::default()
        })),
    }
}

async fn oversized_message_ends_the_stream(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let mut client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 60)
        .await
        .expect("admitted");
    assert!(client.send(console("nope", "x".repeat(2 << 20))).await);
    let status = tokio::time::timeout(CAP, client.closed())
        .await
        .expect("the panel ends a stream that sends a 2 MiB message");
    println!("after a 2 MiB message: {status:?}");
    eventually("counted", CAP, || async {
        cut(&f, "message").await == Some(1)
    })
    .await;
    eventually("offline", CAP, || async { !f.node("node-1").await.online }).await;
}

async fn long_console_lines_are_cut_and_marked(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let server_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    server::ActiveModel {
        id: Set(server_id.clone()),
        tenant_id: Set(uuid::Uuid::new_v4().to_string()),
        node_id: Set("node-1".into()),
        name: Set("s".into()),
        template_id: Set(uuid::Uuid::new_v4().to_string()),
        variables: Set(serde_json::json!({})),
        state: Set(api::servers::ServerState::Running),
        state_reason: Set(None),
        port: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&f.panel.state().db)
    .await
    .expect("server row");
    let Ok(mut events) = f
        .panel
        .state()
        .servers
        .events
        .subscribe(&server_id, "tester")
        .await
    else {
        panic!("cannot subscribe");
    };
    let cert = f.pki.node("node-1");
    let client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 60)
        .await
        .expect("admitted");
    assert!(
        client
            .send(console(&server_id, "é".repeat(20 * 1024)))
            .await
    );
    let event = tokio::time::timeout(CAP, async {
        loop {
            let event = events.recv().await.expect("an event");
            let value = serde_json::to_value(&event).expect("json");
            if value["type"] == "console" {
                return value;
            }
        }
    })
    .await
    .expect("the console line arrives");
    let line = event["line"].as_str().expect("line");
    assert!(line.len() <= 16 * 1024, "{} bytes kept", line.len());
    assert!(
        line.len() >= 16 * 1024 - 4,
        "cut at a character boundary, not earlier"
    );
    assert_eq!(event["truncated"], serde_json::json!(true), "{event}");
    eventually("counted", CAP, || async {
        cut(&f, "console_line").await == Some(1)
    })
    .await;
}

async fn hello_list_and_strings_are_capped(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let config = wings::tls::client_config(&f.pki.ca_certs(), Some(cert.identity())).unwrap();
    let idle = connect_idle(f.addr(), config).await.expect("connected");
    let mut greeting = hello(60);
    greeting.hostname = "h".repeat(10_000);
    let status = ServerStatus {
        server_id: "reported".into(),
        ..Default::default()
    };
    greeting.servers = vec![status; 10_001];
    greeting.servers[0].reason = "r".repeat(10_000);
    let client = open(idle, greeting).await.expect("welcomed");
    let ack = NodeMessage {
        kind: Some(node_message::Kind::Ack(CommandAck {
            command_id: "c".repeat(10_000),
            ok: false,
            error: "e".repeat(100_000),
        })),
    };
    assert!(client.send(ack).await);
    eventually("the list is cut to 10,000", CAP, || async {
        cut(&f, "hello_servers").await == Some(1)
    })
    .await;
    eventually("the strings are cut", CAP, || async {
        cut(&f, "text").await.is_some_and(|n| n >= 3)
    })
    .await;
}

async fn refusals_from_one_ip_fold_into_one_audit_row(kind: DbKind) {
    let f = Fixture::start(kind).await;
    for _ in 0..12 {
        assert!(dial(f.addr(), &f.pki.ca_certs(), None, 5).await.is_err());
    }
    eventually("each refusal counted", CAP, || async {
        f.rejections("no_client_certificate") == 12
    })
    .await;
    eventually("one row with a count of 12", CAP, || async {
        let rows: Vec<_> = f
            .audit()
            .await
            .into_iter()
            .filter(|r| r.outcome == "rejected: no_client_certificate")
            .collect();
        rows.len() == 1 && rows[0].details["count"] == serde_json::json!(12)
    })
    .await;
    let row = f.audit().await.remove(0);
    assert_eq!(
        (row.actor.as_str(), row.ip.as_deref()),
        ("unknown", Some("127.0.0.1"))
    );
    assert!(row.details["first_at"].is_string() && row.details["last_at"].is_string());
}

async fn handshakes_are_capped_per_ip(kind: DbKind) {
    let f = Fixture::start_with(kind, |c| c.handshake_timeout = Duration::from_secs(60)).await;
    f.add_node("node-1").await;
    let mut stalled = Vec::new();
    for _ in 0..MAX_HANDSHAKES_PER_IP {
        stalled.push(tokio::net::TcpStream::connect(f.addr()).await.expect("tcp"));
    }
    for i in 0..4 {
        let mut extra = tokio::net::TcpStream::connect(f.addr()).await.expect("tcp");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(CAP, extra.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} over the cap is closed at once"));
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    eventually("each refused handshake counted", CAP, || async {
        f.rejections("too_many_handshakes") == 4
    })
    .await;
    drop(stalled);
    let cert = f.pki.node("node-1");
    eventually("a node gets in once the stalled ones left", CAP, || async {
        dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
            .await
            .is_ok()
    })
    .await;
}

crate::on_both_databases!(
    oversized_message_ends_the_stream,
    long_console_lines_are_cut_and_marked,
    hello_list_and_strings_are_capped,
    refusals_from_one_ip_fold_into_one_audit_row,
    handshakes_are_capped_per_ip,
);
