//! `node-load`: the node channel under load, measured side by side in one run.
//!
//! 1. Resident memory of the real `api serve` process per connected node: this separate load
//!    process opens `--nodes` real mTLS streams over loopback, one dev-CA certificate per node,
//!    each sending heartbeats, and reads the panel's VmRSS before and after.
//! 2. Full mTLS handshakes per second (session resumption off), side by side:
//!    - a bare rustls server (this binary in `--bare-server` mode, a separate process) that
//!      writes one byte once the handshake is done;
//!    - the panel's gRPC port up to *admission*: the handshake, the CN + pinned-fingerprint
//!      check and the audit row, proven by the panel's first HTTP/2 frame (it speaks HTTP/2
//!      only to an admitted connection) — the same work as the bare server plus admission;
//!    - a reference gRPC server in the same process as the bare one (same certificates,
//!      HTTP/2 and tonic as the panel, a `Welcome` for every `Hello`, and nothing else): the
//!      cost of the protocol alone;
//!    - the panel up to its `Welcome`: admission, the stream, the node's ownership claim
//!      and its online mark, as a reconnecting Wings sees it.
//!
//!    The ratios say what admission costs over TLS, and what the panel costs over the
//!    protocol.
//!
//! 3. With `--replicas 2` (PostgreSQL and Redis from `TEST_POSTGRES_URL` / `TEST_REDIS_URL`):
//!    the streams are held by a first replica while a second runs beside it on the same
//!    database; the first is then killed (SIGKILL) and every simulated node dials the second,
//!    as Wings does with two URLs: the time until all are welcomed there is printed. The
//!    handshake rates are then measured against the survivor.
//!
//! Run by hand (see the README): `cargo run --release -p tests --bin node-load`.
#![forbid(unsafe_code)]

mod reference;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use proto::node::v1::{Heartbeat, Hello, NodeMessage, node_message};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    about = "Node-channel load: handshakes/s (bare rustls vs panel) and RSS per connected node"
)]
struct Args {
    /// Simulated Wings streams held open for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Handshakes per server in the throughput measurement.
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Concurrent clients in the throughput measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Panel replicas: 1 (SQLite), or 2 on PostgreSQL and Redis (the failover measurement).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    replicas: u8,
    /// glibc's `MALLOC_ARENA_MAX` for the panel processes (unset: glibc's default, 8 arenas
    /// per core), as a deployment would set it in the service's environment.
    #[arg(long)]
    malloc_arena_max: Option<u8>,
    /// Internal: serve bare rustls with the certificates under this directory.
    #[arg(long, hide = true)]
    bare_server: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    security::tls::install_default_provider();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.bare_server {
        Some(dir) => runtime.block_on(reference::serve(dir.clone())),
        None => runtime.block_on(bench(args)),
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let needed = (args.nodes + args.concurrency + 256) as u64;
    if let Some(limit) = open_files_limit() {
        anyhow::ensure!(
            limit >= needed,
            "open-files limit {limit} < {needed}: run `ulimit -n {}` first",
            needed * 2
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let pki = tests::TestPki::new(dir);
    let db_url = if args.replicas == 2 {
        tests::database_url(tests::DbKind::Postgres, dir).await
    } else {
        format!("sqlite://{}?mode=rwc", dir.join("panel.db").display())
    };
    let db = api::db::connect_and_migrate(&db_url).await?;
    eprintln!("issuing {} node certificates…", args.nodes);
    let mut certs = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let id = format!("load-node-{i:05}");
        api::nodes::store::add(&db, &id, "load.example.com", None).await?;
        certs.push(pki.node(&id));
    }
    let ca = pki.ca_certs();
    let configs: Vec<Arc<ClientConfig>> = certs
        .iter()
        .map(|c| full_handshake_config(wings::tls::client_config(&ca, Some(c.identity()))))
        .collect::<Result<_, _>>()?;

    let mut env = load_env(&pki, &db_url);
    if let Some(arenas) = args.malloc_arena_max {
        env.push(("MALLOC_ARENA_MAX".into(), arenas.to_string()));
    }
    if args.replicas == 2 {
        env.push(("REDIS_URL".into(), std::env::var("TEST_REDIS_URL")?));
    }
    let (mut panel, grpc) = tests::start_panel(dir, &env).await;
    let grpc: std::net::SocketAddr = grpc.parse()?;
    // The survivor-to-be, beside it on the same database.
    let survivor = if args.replicas == 2 {
        let (proc, addr) = tests::start_panel(dir, &env).await;
        Some((proc, addr.parse::<std::net::SocketAddr>()?))
    } else {
        None
    };
    let failover = survivor.as_ref().map(|(_, addr)| *addr);
    let bare = tests::Proc::start(
        "node-load",
        &["--bare-server", &pki.layout.root().display().to_string()],
        &[],
        dir,
    );
    let bare_addr = listening(&bare, "bare").await?;
    let floor_addr = listening(&bare, "grpc").await?;

    // 1. Memory per connected node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = panel.rss_kib();
    eprintln!("opening {} streams…", args.nodes);
    let hold = CancellationToken::new();
    let welcomed = Arc::new(AtomicUsize::new(0));
    let moved = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(64));
    let opened_at = Instant::now();
    for config in &configs {
        let (config, hold, welcomed, moved, gate) = (
            config.clone(),
            hold.clone(),
            welcomed.clone(),
            moved.clone(),
            gate.clone(),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let stream = open_stream(grpc, config.clone(), 5).await;
            drop(permit);
            match stream {
                Ok((tx, ended)) => {
                    welcomed.fetch_add(1, Ordering::Relaxed);
                    heartbeat_until(tx, 5, hold.clone(), ended).await;
                }
                Err(e) => return eprintln!("stream failed: {e}"),
            }
            // Its replica went away: on to the other one, as Wings does with two URLs.
            let Some(next) = failover.filter(|_| !hold.is_cancelled()) else {
                return;
            };
            // As Wings does: again and again, backing off (the survivor's handshake caps
            // refuse what is over them), for at most a minute here.
            let (started, mut wait, mut last) = (Instant::now(), 100, String::new());
            while started.elapsed() < Duration::from_secs(60) {
                match open_stream(next, config.clone(), 5).await {
                    Ok((tx, ended)) => {
                        moved.fetch_add(1, Ordering::Relaxed);
                        return heartbeat_until(tx, 5, hold, ended).await;
                    }
                    Err(e) => {
                        last = e.to_string();
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        wait = (wait * 2).min(1_000);
                    }
                }
            }
            eprintln!("a node could not move to the survivor in a minute: {last}");
        });
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while welcomed.load(Ordering::Relaxed) < args.nodes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = welcomed.load(Ordering::Relaxed);
    let open_time = opened_at.elapsed();
    if connected < args.nodes {
        // Say why, from the panel's own words.
        let log = panel.log();
        let alarms: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!(
            "{} of {} streams never came up; the panel's last warnings:\n{}",
            args.nodes - connected,
            args.nodes,
            alarms[alarms.len().saturating_sub(20)..].join("\n")
        );
    }
    tokio::time::sleep(Duration::from_secs(6)).await; // one heartbeat round on every stream
    let rss_loaded = panel.rss_kib();
    let online = api::nodes::store::list(&db)
        .await?
        .iter()
        .filter(|n| n.online)
        .count();
    let load_rss = tests::rss_kib(std::process::id());
    // 3. The replica holding them killed: how long until all are on the survivor.
    let mut move_time = None;
    if let Some((_, survivor_addr)) = &survivor {
        eprintln!("killing the replica holding {connected} nodes…");
        let killed_at = Instant::now();
        panel.kill_hard();
        let deadline = killed_at + Duration::from_secs(300);
        while moved.load(Ordering::Relaxed) < connected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        move_time = Some((moved.load(Ordering::Relaxed), killed_at.elapsed()));
        eprintln!("moved to {survivor_addr}: {move_time:?}");
    }
    let grpc = failover.unwrap_or(grpc);
    hold.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. Handshakes per second.
    let (n, c) = (args.handshakes, args.concurrency);
    let bare_run = run_handshakes("the bare rustls server", n, c, &configs, move |config| {
        bare_handshake(bare_addr, config)
    })
    .await;
    let admit_run = run_handshakes(
        "the panel, up to admission",
        n,
        c,
        &configs,
        move |config| admitted(grpc, config),
    )
    .await;
    let floor_run = run_handshakes("the reference gRPC server", n, c, &configs, move |config| {
        stream_welcomed(floor_addr, config)
    })
    .await;
    let panel_run = run_handshakes("the panel, up to Welcome", n, c, &configs, move |config| {
        stream_welcomed(grpc, config)
    })
    .await;

    let per_node = rss_loaded.saturating_sub(rss_idle) as f64 / connected.max(1) as f64;
    println!();
    println!("{}", tests::bench::heading("node channel under load"));
    println!();
    println!(
        "| full mTLS handshakes ({} × {} clients) | handshakes/s | p50 / p99 (ms) | errors |",
        args.handshakes, args.concurrency
    );
    println!("|---|---:|---:|---:|");
    for (what, run) in [
        ("bare rustls (TLS only)", &bare_run),
        (
            "panel, up to admission (TLS + CN/fingerprint + audit row)",
            &admit_run,
        ),
        (
            "reference gRPC server (TLS + HTTP/2 + Hello/Welcome, no admission)",
            &floor_run,
        ),
        (
            "panel, up to Welcome (+ stream, ownership claim, online mark)",
            &panel_run,
        ),
    ] {
        println!(
            "| {what} | {:.0} | {:.1} / {:.1} | {} |",
            run.rate(),
            run.pct(50.0),
            run.pct(99.0),
            run.errors
        );
    }
    println!();
    let ratio = |a: &Run, b: &Run| a.rate() / b.rate().max(f64::MIN_POSITIVE);
    println!(
        "ratio panel admission / bare rustls handshakes per second: {:.2}",
        ratio(&admit_run, &bare_run)
    );
    println!(
        "ratio panel Welcome / bare rustls: {:.2}; panel Welcome / reference gRPC: {:.2}",
        ratio(&panel_run, &bare_run),
        ratio(&panel_run, &floor_run)
    );
    println!();
    println!(
        "| memory with {} simulated Wings streams (heartbeat 5 s) | value |",
        args.nodes
    );
    println!("|---|---:|");
    println!("| streams welcomed / nodes online in the DB | {connected} / {online} |");
    println!(
        "| time to open them (64 at a time) | {:.1} s |",
        open_time.as_secs_f64()
    );
    println!("| panel RSS idle | {:.1} MiB |", rss_idle as f64 / 1024.0);
    println!(
        "| panel RSS with the streams | {:.1} MiB |",
        rss_loaded as f64 / 1024.0
    );
    println!("| panel RSS per connected node | {per_node:.1} KiB |");
    println!(
        "| panel's MALLOC_ARENA_MAX | {} |",
        args.malloc_arena_max
            .map_or("unset (glibc: 8 per core)".to_owned(), |n| n.to_string())
    );
    println!(
        "| load process RSS (client side, for scale) | {:.1} MiB |",
        load_rss as f64 / 1024.0
    );
    if let Some((moved, took)) = move_time {
        println!(
            "| after SIGKILL of their replica: nodes welcomed on the survivor | {moved} of {connected} in {:.2} s |",
            took.as_secs_f64()
        );
    }
    drop(bare);
    drop(panel);
    drop(survivor);
    Ok(())
}

/// A client configuration that never resumes: every connection is a full handshake.
fn full_handshake_config(
    config: Result<Arc<ClientConfig>, wings::Error>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut config = (*config?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a node stream, sends Hello and waits for Welcome; returns the sender for heartbeats
/// and what ends when the panel ends the stream.
async fn open_stream(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    heartbeat_secs: u32,
) -> anyhow::Result<(mpsc::Sender<NodeMessage>, tokio::task::JoinHandle<()>)> {
    let control = wings::tls::Purpose::Control;
    let (mut client, _) = wings::tls::connect("127.0.0.1", addr.port(), config, control).await?;
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        version: "load".into(),
        hostname: "load".into(),
        capacity: None,
        heartbeat_interval_secs: heartbeat_secs,
        servers: Vec::new(),
    };
    tx.send(NodeMessage {
        kind: Some(node_message::Kind::Hello(hello)),
    })
    .await?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    inbound
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream closed before Welcome"))?;
    // Keep the response stream alive as long as the sender lives.
    let ended = tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    Ok((tx, ended))
}

/// Heartbeats until `hold` is cancelled or the panel ends the stream (`ended`).
async fn heartbeat_until(
    tx: mpsc::Sender<NodeMessage>,
    secs: u64,
    hold: CancellationToken,
    mut ended: tokio::task::JoinHandle<()>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(secs));
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = hold.cancelled() => return,
            _ = &mut ended => return,
            _ = ticker.tick() => {
                seq += 1;
                let beat = NodeMessage { kind: Some(node_message::Kind::Heartbeat(Heartbeat { seq, sent_at_unix_ms: 0 })) };
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A full mTLS handshake with `addr` (the panel's name `localhost`).
async fn dial(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

async fn bare_handshake(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> anyhow::Result<()> {
    let mut tls = dial(addr, config).await?;
    // TLS 1.3 finishes on the client first: the server's byte proves it verified us.
    let mut ack = [0u8; 1];
    tls.read_exact(&mut ack).await?;
    Ok(())
}

/// The address the reference servers' process says its `what` server listens on.
async fn listening(servers: &tests::Proc, what: &str) -> anyhow::Result<std::net::SocketAddr> {
    let line = servers
        .wait_for_line(&format!("{what} listening addr="), Duration::from_secs(30))
        .await;
    Ok(line.rsplit('=').next().unwrap_or_default().trim().parse()?)
}

/// A stream opened and welcomed (the panel's, or the reference gRPC server's), then dropped.
async fn stream_welcomed(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> anyhow::Result<()> {
    open_stream(addr, config, 5).await.map(drop)
}

/// A handshake with the panel up to its first HTTP/2 frame, which the panel sends once it has
/// decided on the connection (CN, pinned fingerprint, audit row committed). A refused node
/// would get one too (and a status on its first stream): every node here is admitted, which
/// the Welcome run shows.
async fn admitted(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<()> {
    let mut tls = dial(addr, config).await?;
    // A frame header: 9 bytes (the server's SETTINGS).
    let mut header = [0u8; 9];
    tls.read_exact(&mut header).await?;
    anyhow::ensure!(header[3] == 0x4, "the first frame is not SETTINGS");
    Ok(())
}

struct Run {
    elapsed: Duration,
    latencies_ms: Vec<f64>,
    errors: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        tests::bench::percentile(&self.latencies_ms, p)
    }
}

async fn run_handshakes<F, Fut>(
    against: &str,
    total: usize,
    concurrency: usize,
    configs: &[Arc<ClientConfig>],
    op: F,
) -> Run
where
    F: Fn(Arc<ClientConfig>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    eprintln!("handshakes against {against}…");
    // Warm-up, not counted.
    for config in configs.iter().take(20) {
        let _ = op(config.clone()).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let configs: Arc<Vec<_>> = Arc::new(configs.to_vec());
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, configs, op) = (next.clone(), configs.clone(), op.clone());
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return (latencies, errors);
                }
                let t = Instant::now();
                match op(configs[i % configs.len()].clone()).await {
                    Ok(()) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let (mut latencies_ms, mut errors) = (Vec::new(), 0);
    for worker in workers {
        if let Ok((l, e)) = worker.await {
            latencies_ms.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    Run {
        elapsed,
        latencies_ms,
        errors,
    }
}

/// The soft open-files limit from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The panel's environment for this run: every simulated node dials from 127.0.0.1, so the
/// per-address handshake cap is raised to the overall one.
fn load_env(pki: &tests::TestPki, db_url: &str) -> Vec<(String, String)> {
    let mut env = tests::panel_env(pki, db_url, "127.0.0.1:0");
    env.push((
        api::config::PANEL_GRPC_MAX_HANDSHAKES_PER_IP.into(),
        api::grpc::gate::MAX_HANDSHAKES.to_string(),
    ));
    env
}
