//! Server events across replicas (issue 16 item 3): a node's stream on one replica, the
//! tenant's event streams on another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use proto::node::v1::{ConsoleLine, NodeMessage, node_message};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Rest, dial, eventually, sim};

use crate::fleet::replica_setup;
use crate::node_channel::CAP;
fn console(server_id: &str, line: &str) -> NodeMessage {
    NodeMessage {
        kind: Some(node_message::Kind::Console(ConsoleLine {
            server_id: server_id.into(),
            line: line.into(),
            ..Default::default()
        })),
    }
}

/// The console lines among `events`, in order.
fn lines(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(name, _)| name == "console")
        .filter_map(|(_, data)| data["line"].as_str().map(str::to_owned))
        .collect()
}

/// Server events span replicas (issue 16 item 3). The node's stream is on replica A, the
/// tenant's event streams on B: the node's console lines reach B's stream live; a stream
/// opened later on B starts with the shared console backlog, each line once and in order; the
/// cap of 8 streams per user counts the streams on both replicas, and a closed one frees its
/// slot for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_events_backlog_and_stream_caps_span_replicas() {
    let (_dir, pki, config) = replica_setup().await;
    let outbox = config.security.outbox_dir.clone();
    let a = api::Panel::start(config.clone()).await.unwrap();
    let b = api::Panel::start(config).await.unwrap();
    tests::node_and_sleeper(&a.state().db).await;
    let replicas = Replicas {
        a_http: a.http_addr,
        a_grpc: a.grpc_addr,
        b_http: b.http_addr,
        outbox,
    };
    events_span_replicas(&pki, &replicas).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Two replicas of one panel whose database has node-1 and the sleeper template
/// ([`tests::node_and_sleeper`]).
pub(crate) struct Replicas {
    pub(crate) a_http: SocketAddr,
    pub(crate) a_grpc: SocketAddr,
    pub(crate) b_http: SocketAddr,
    /// Where both send mail.
    pub(crate) outbox: PathBuf,
}

/// The story of [`server_events_backlog_and_stream_caps_span_replicas`] on any two replicas:
/// node-1's stream on A, the owner's event streams on B (and A). Returns the server's events
/// path, every stream closed.
pub(crate) async fn events_span_replicas(pki: &tests::TestPki, replicas: &Replicas) -> String {
    let outbox = &replicas.outbox;
    let client = dial(
        replicas.a_grpc,
        &pki.ca_certs(),
        Some(pki.node("node-1").identity()),
        5,
    )
    .await
    .unwrap();
    let node = client.sender();
    sim::obey(client, true, Duration::from_secs(1));

    let (owner_a, _) = Rest::new(format!("http://{}", replicas.a_http))
        .verified_user(outbox, "owner@example.com")
        .await;
    let owner_b = Rest::new(format!("http://{}", replicas.b_http))
        .login("owner@example.com")
        .await;
    let (_, tenant) = owner_a.post("/api/tenants", json!({"name": "T"})).await;
    let tid = tenant["id"].as_str().unwrap().to_owned();
    let (status, server) = owner_a
        .post(
            &format!("/api/tenants/{tid}/servers"),
            json!({"name": "s", "node_id": "node-1", "template": "sleeper"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{server}");
    let sid = server["id"].as_str().unwrap().to_owned();
    let path = format!("/api/tenants/{tid}/servers/{sid}");
    eventually("installed", CAP, || async {
        owner_b.get(&path).await.1["state"] == "offline"
    })
    .await;

    // Lines before any stream, then a stream on B: it has them once, from the backlog or
    // live, and then the live ones.
    for n in 0..3 {
        node.send(console(&sid, &format!("early {n}")))
            .await
            .unwrap();
    }
    let events_path = format!("{path}/events");
    let mut first = owner_b.events(&events_path).await.unwrap();
    first
        .until("the status event", CAP, |name, _| name == "status")
        .await;
    let mut seen = Vec::new();
    let took = std::time::Instant::now();
    while seen.len() < 3 && took.elapsed() < CAP {
        let event = first
            .until("the early lines on B", CAP, |name, _| name == "console")
            .await;
        seen.push(event["line"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["early 0", "early 1", "early 2"]);
    let took = std::time::Instant::now();
    for n in 0..3 {
        node.send(console(&sid, &format!("live {n}")))
            .await
            .unwrap();
    }
    for n in 0..3 {
        let event = first
            .until("a live line on B", CAP, |name, _| name == "console")
            .await;
        assert_eq!(event["line"], format!("live {n}"));
    }
    println!(
        "three console lines from A's node reached B's stream in {:?}",
        took.elapsed()
    );

    let mut second = owner_b.events(&events_path).await.unwrap();
    second
        .until(
            "the second stream's last backlog line",
            CAP,
            |name, data| name == "console" && data["line"] == "live 2",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lines(&second.drain()).is_empty(), "each line came once");
    let mut third = owner_a.events(&events_path).await.unwrap();
    let mut backlog = Vec::new();
    while backlog.len() < 6 {
        let event = third
            .until("A's backlog", CAP, |name, _| name == "console")
            .await;
        backlog.push(event["line"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        backlog,
        [
            "early 0", "early 1", "early 2", "live 0", "live 1", "live 2"
        ]
    );

    // Three streams are open (two on B, one on A); five more on A make the cap of 8.
    let mut held = vec![first, second, third];
    for _ in 0..api::servers::events::STREAMS_PER_USER - 3 {
        held.push(owner_a.events(&events_path).await.unwrap());
    }
    for (replica, owner) in [("A", &owner_a), ("B", &owner_b)] {
        let Err((status, body)) = owner.events(&events_path).await else {
            panic!("a ninth stream on {replica} was opened");
        };
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{replica}: {body}");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // Closing one on B frees a slot on A (once B's panel sees the client gone).
    drop(held.remove(0));
    let took = std::time::Instant::now();
    loop {
        match owner_a.events(&events_path).await {
            Ok(reader) => break held.push(reader),
            Err(refused) if took.elapsed() > CAP => panic!("no slot freed: {refused:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    drop(held);
    events_path
}
