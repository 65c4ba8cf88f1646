//! `command-load`: the round trip of a power action, measured from the client's side.
//!
//! The real `api serve` runs as its own process (SQLite, embedded defaults); this separate
//! load process plays the nodes over real mTLS streams (one dev-CA certificate each) and acks
//! every command at once, so what is measured is the panel's path: REST request → authz →
//! command row → down the node's stream → ack up the stream → row updated → `command` event on
//! the server's SSE stream, where the client sees it. Run with 1 connected node, then with
//! `--nodes` (default 500), each time `--commands` restarts from one client, then the same
//! number from 8 concurrent clients (each on a server of its own, spread over the nodes, with
//! its event stream held open); printed as a table.
//!
//! With `--replicas 2` (PostgreSQL and Redis from `TEST_POSTGRES_URL` / `TEST_REDIS_URL`, as
//! `scripts/test.sh` exports them) two `api serve` replicas share the database: the nodes
//! hold their streams on the first, and every row is measured twice, with the client on the
//! replica holding the nodes and on the other one (its command routed to the holder, the
//! ack's event fanned out through Redis).
//!
//! Run by hand (see the README): `cargo run --release -p tests --bin command-load`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tests::{Rest, TestPki, bench, dial, sim};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Power action → node ack round trip, with 1 and with N connected nodes")]
struct Args {
    /// Simulated nodes in the second scenario.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Power actions measured per row.
    #[arg(long, default_value_t = 400)]
    commands: usize,
    /// Panel replicas: 1 (SQLite), or 2 on PostgreSQL and Redis.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    replicas: u8,
}

fn main() -> anyhow::Result<()> {
    security::tls::install_default_provider();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

struct Row {
    /// Where the client is: on the replica holding the nodes, or the other.
    client_on: &'static str,
    nodes: usize,
    clients: usize,
    samples: Vec<f64>,
    wall: Duration,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let db_url = if args.replicas == 2 {
        tests::database_url(tests::DbKind::Postgres, dir).await
    } else {
        format!("sqlite://{}?mode=rwc", dir.join("panel.db").display())
    };
    let db = api::db::connect_and_migrate(&db_url).await?;
    eprintln!("enrolling {} nodes…", args.nodes);
    let mut certs = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let id = format!("load-node-{i:05}");
        api::nodes::store::add(&db, &id, "load.example.com", None).await?;
        certs.push(pki.node(&id));
    }
    api::templates::create(
        &db,
        api::templates::NewTemplate {
            sensitive_input: false,
            limits: Default::default(),
            name: "sleeper".into(),
            command: "sleep".into(),
            args: vec!["3600".into()],
            variables: vec![],
        },
    )
    .await?;
    let mut env = tests::panel_env(&pki, &db_url, "127.0.0.1:0");
    env.push((
        "RATE_LIMITS".into(),
        "login=1000/1m,register=1000/1m,verify=1000/1m,api=1000000/1m".into(),
    ));
    if args.replicas == 2 {
        env.push(("REDIS_URL".into(), std::env::var("TEST_REDIS_URL")?));
    }
    // The nodes' replica first (it makes the development keys the other one reads).
    let (holder, grpc, http) = start(dir, &env, "a").await;
    let grpc: std::net::SocketAddr = grpc.parse()?;
    let rest = Rest::new(format!("http://{http}"));
    let (alice, _) = rest
        .verified_user(&dir.join("data/outbox"), "load@example.com")
        .await;
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "load"})).await;
    let servers = format!(
        "/api/tenants/{}/servers",
        tenant["id"].as_str().unwrap_or_default()
    );
    let mut clients = vec![("holder", alice.clone())];
    let mut _other = None;
    if args.replicas == 2 {
        let (other, _, http) = start(dir, &env, "b").await;
        let on_other = Rest::new(format!("http://{http}"))
            .login("load@example.com")
            .await;
        clients.push(("other", on_other));
        _other = Some(other);
    }
    let _holder = holder;

    let ca = pki.ca_certs();
    let mut rows = Vec::new();
    let mut connected = 0;
    let mut targets: Vec<String> = Vec::new();
    for nodes in [1, args.nodes] {
        eprintln!("connecting {nodes} nodes…");
        while connected < nodes {
            let client = dial(grpc, &ca, Some(certs[connected].identity()), 5)
                .await
                .map_err(anyhow::Error::msg)?;
            sim::obey(client, true, Duration::from_secs(5));
            let (status, server) = alice
                .post(
                    &servers,
                    json!({"name": format!("s{connected}"), "node_id": certs[connected].node_id, "template": "sleeper"}),
                )
                .await;
            anyhow::ensure!(status.is_success(), "create server: {server}");
            targets.push(format!(
                "{servers}/{}",
                server["id"].as_str().unwrap_or_default()
            ));
            connected += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (client_on, rest) in &clients {
            for concurrent in [1, 8] {
                eprintln!(
                    "{nodes} nodes, {concurrent} clients on the {client_on} replica: {} restarts…",
                    args.commands
                );
                let mut row = measure(rest, &targets, nodes, concurrent, args.commands).await?;
                row.client_on = client_on;
                rows.push(row);
            }
        }
    }
    println!(
        "\n{}",
        bench::heading("Power action → node ack, seen on SSE")
    );
    println!(
        "| client on | connected nodes | clients | commands | p50 ms | p99 ms | max ms | commands/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for mut row in rows {
        row.samples.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} |",
            row.client_on,
            row.nodes,
            row.clients,
            row.samples.len(),
            bench::percentile(&row.samples, 50.0),
            bench::percentile(&row.samples, 99.0),
            row.samples.last().copied().unwrap_or(0.0),
            row.samples.len() as f64 / row.wall.as_secs_f64(),
        );
    }
    Ok(())
}

/// Starts `api serve` as replica `id`: (process, gRPC address, REST address).
async fn start(
    dir: &std::path::Path,
    env: &[(String, String)],
    id: &str,
) -> (tests::Proc, String, String) {
    let mut env = env.to_vec();
    env.push(("PANEL_REPLICA_ID".into(), id.into()));
    let (panel, grpc) = tests::start_panel(dir, &env).await;
    let listening = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    let http = listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http_addr="))
        .unwrap_or_default()
        .to_owned();
    (panel, grpc, http)
}

/// `commands` restarts from `clients` concurrent clients, each on its own server (spread
/// over the first `nodes` nodes) with one event stream held open; each timed from the POST to
/// the `command` event of its id.
async fn measure(
    alice: &Rest,
    targets: &[String],
    nodes: usize,
    clients: usize,
    commands: usize,
) -> anyhow::Result<Row> {
    let samples = Arc::new(Mutex::new(Vec::with_capacity(commands)));
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in 0..clients {
        let (alice, samples) = (alice.clone(), samples.clone());
        let server = targets[client * nodes / clients].clone();
        workers.push(tokio::spawn(async move {
            let mut events = alice
                .events(&format!("{server}/events"))
                .await
                .map_err(|(s, b)| anyhow::anyhow!("events {s}: {b}"))?;
            events
                .until("first status", Duration::from_secs(10), |n, _| {
                    n == "status"
                })
                .await;
            for _ in 0..commands / clients {
                let sent = Instant::now();
                let (status, body) = alice
                    .post(&format!("{server}/power"), json!({"action": "restart"}))
                    .await;
                anyhow::ensure!(status.as_u16() == 202, "restart: {status} {body}");
                let id = body["command_id"].clone();
                events
                    .until("the ack", Duration::from_secs(10), |n, v| {
                        n == "command" && v["command_id"] == id
                    })
                    .await;
                samples
                    .lock()
                    .await
                    .push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let wall = started.elapsed();
    let samples = std::mem::take(&mut *samples.lock().await);
    Ok(Row {
        client_on: "holder",
        nodes,
        clients,
        samples,
        wall,
    })
}
