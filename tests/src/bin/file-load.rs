//! `file-load`: the file manager's throughput and memory, measured from the client's side.
//!
//! The real `api serve` and the real `wings` run as their own processes (SQLite, embedded
//! defaults, one server on the node). One upload and one download of `--mb` MiB (default
//! 1024) go REST → panel → node channel (the `Files` stream over mTLS) → Wings → disk and
//! back; beside each, the same bytes are copied over a plain loopback TCP connection to disk
//! (upload: the receiver writes and fsyncs a file, as Wings does; download: from the same file
//! on disk to a reader that discards, as the client here does). The ratio of the two is the
//! figure; the peak RSS of the panel and of Wings above their idle RSS, sampled every 20 ms
//! during each transfer, is the memory one transfer holds. Printed as a table.
//!
//! Run by hand (see the README): `cargo run --release -p tests --bin file-load`.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tests::{Proc, Rest, TestPki, bench};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(about = "File upload and download through the panel and Wings, beside a plain TCP copy")]
struct Args {
    /// MiB per transfer.
    #[arg(long, default_value_t = 1024)]
    mb: u64,
}

fn main() -> anyhow::Result<()> {
    security::tls::install_default_provider();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

const BLOCK: usize = 1 << 20;

struct Row {
    direction: &'static str,
    through: f64,
    plain: f64,
    panel_kib: u64,
    wings_kib: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bytes = args.mb << 20;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let pki = TestPki::new(dir);
    let db_url = format!("sqlite://{}?mode=rwc", dir.join("panel.db").display());
    let db = api::db::connect_and_migrate(&db_url).await?;
    api::nodes::store::add(&db, "node-1", "node1.example.com", None).await?;
    let limits = api::templates::Limits {
        disk_mb: (args.mb * 3).max(1024),
        ..Default::default()
    };
    api::templates::create(
        &db,
        api::templates::NewTemplate {
            sensitive_input: false,
            limits,
            name: "sleeper".into(),
            command: "sleep".into(),
            args: vec!["3600".into()],
            variables: vec![],
        },
    )
    .await?;
    let cert = pki.node("node-1");
    let mut env = tests::panel_env(&pki, &db_url, "127.0.0.1:0");
    env.push((
        "RATE_LIMITS".into(),
        "login=1000/1m,register=1000/1m,verify=1000/1m,api=1000000/1m".into(),
    ));
    env.push(("FILES_MAX_UPLOAD_MB".into(), (args.mb + 1).to_string()));
    let (panel, grpc) = tests::start_panel(dir, &env).await;
    let listening = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    let http = listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http_addr="))
        .unwrap_or_default()
        .to_owned();
    let wings_env = vec![
        ("WINGS_NODE_ID".to_owned(), "node-1".to_owned()),
        ("WINGS_API_URL".to_owned(), format!("https://{grpc}")),
        (
            "WINGS_TLS_CERT_FILE".to_owned(),
            cert.cert_path.display().to_string(),
        ),
        (
            "WINGS_TLS_KEY_FILE".to_owned(),
            cert.key_path.display().to_string(),
        ),
        (
            "WINGS_API_CA_CERT".to_owned(),
            pki.layout.ca_cert().display().to_string(),
        ),
        (
            "WINGS_DATA_DIR".to_owned(),
            dir.join("wings").display().to_string(),
        ),
        ("WINGS_ALLOW_UNCONFINED".to_owned(), "1".to_owned()),
    ];
    let wings = Proc::start("wings", &[], &wings_env, dir);
    let rest = Rest::new(format!("http://{http}"));
    let (alice, _) = rest
        .verified_user(&dir.join("data/outbox"), "load@example.com")
        .await;
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "load"})).await;
    let servers = format!(
        "/api/tenants/{}/servers",
        tenant["id"].as_str().unwrap_or_default()
    );
    let mut server = None;
    for _ in 0..100 {
        let (status, body) = alice
            .post(
                &servers,
                json!({"name": "files", "node_id": "node-1", "template": "sleeper"}),
            )
            .await;
        if status.is_success() {
            server = body["id"].as_str().map(|id| format!("{servers}/{id}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let server =
        server.ok_or_else(|| anyhow::anyhow!("no server: is Wings online?\n{}", wings.log()))?;
    let mut installed = false;
    for _ in 0..200 {
        if alice.get(&server).await.1["state"] == "offline" {
            installed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(installed, "the server was not installed:\n{}", wings.log());

    eprintln!("writing {} MiB of test data…", args.mb);
    let source = dir.join("source.bin");
    write_noise(&source, bytes)?;
    let token = alice.token.clone().unwrap_or_default();
    let content = format!("{server}/files/content?path=/data.bin");
    let mut rows = Vec::new();

    eprintln!("upload through the panel…");
    let (through, panel_kib, wings_kib) = sampled(&panel, &wings, async {
        put(&http, &token, &content, &source, bytes).await
    })
    .await?;
    eprintln!("upload over plain TCP…");
    let plain = plain_upload(&source, &dir.join("plain.bin"), bytes).await?;
    rows.push(Row {
        direction: "upload",
        through: mbps(bytes, through),
        plain: mbps(bytes, plain),
        panel_kib,
        wings_kib,
    });

    eprintln!("download through the panel…");
    let (through, panel_kib, wings_kib) = sampled(&panel, &wings, async {
        get(&http, &token, &content, bytes).await
    })
    .await?;
    eprintln!("download over plain TCP…");
    let plain = plain_download(&dir.join("plain.bin"), bytes).await?;
    rows.push(Row {
        direction: "download",
        through: mbps(bytes, through),
        plain: mbps(bytes, plain),
        panel_kib,
        wings_kib,
    });

    println!(
        "\n{}",
        bench::heading(&format!("File transfer of {} MiB", args.mb))
    );
    println!(
        "| direction | REST → panel → node channel → Wings → disk, MB/s | plain loopback TCP → disk, MB/s | ratio | panel peak RSS above idle, MiB | Wings peak RSS above idle, MiB |\n|---|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} |",
            row.direction,
            row.through,
            row.plain,
            row.through / row.plain,
            row.panel_kib as f64 / 1024.0,
            row.wings_kib as f64 / 1024.0,
        );
    }
    drop(wings);
    drop(panel);
    Ok(())
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// `bytes` that do not compress, written to `path`.
fn write_noise(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; BLOCK];
    let mut written = 0;
    while written < bytes {
        rand::fill(&mut block[..]);
        let n = (bytes - written).min(BLOCK as u64) as usize;
        out.write_all(&block[..n])?;
        written += n as u64;
    }
    out.flush()?;
    Ok(())
}

/// Runs `transfer` while sampling both processes' RSS; its time and the peaks above idle.
async fn sampled<F>(panel: &Proc, wings: &Proc, transfer: F) -> anyhow::Result<(Duration, u64, u64)>
where
    F: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let idle = (panel.rss_kib(), wings.rss_kib());
    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new((AtomicU64::new(idle.0), AtomicU64::new(idle.1)));
    let sampler = {
        let (done, peaks) = (done.clone(), peaks.clone());
        let pids = (panel.pid(), wings.pid());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peaks.0.fetch_max(tests::rss_kib(pids.0), Ordering::Relaxed);
                peaks.1.fetch_max(tests::rss_kib(pids.1), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let took = transfer.await;
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let took = took?;
    Ok((
        took,
        peaks.0.load(Ordering::Relaxed).saturating_sub(idle.0),
        peaks.1.load(Ordering::Relaxed).saturating_sub(idle.1),
    ))
}

/// A raw HTTP/1.1 PUT of the file, read from disk a block at a time.
async fn put(
    http: &str,
    token: &str,
    url: &str,
    source: &Path,
    bytes: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(http).await?;
    let (mut rx, mut tx) = tcp.into_split();
    let head = format!(
        "PUT {url} HTTP/1.1\r\nhost: {http}\r\nauthorization: Bearer {token}\r\nconnection: close\r\ncontent-length: {bytes}\r\n\r\n"
    );
    tx.write_all(head.as_bytes()).await?;
    let mut file = tokio::fs::File::open(source).await?;
    let mut block = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut block).await?;
        if n == 0 {
            break;
        }
        tx.write_all(&block[..n]).await?;
    }
    let mut response = Vec::new();
    rx.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 201") || text.starts_with("HTTP/1.1 204"),
        "upload: {text}"
    );
    Ok(started.elapsed())
}

/// A GET of the file, its bytes counted and dropped.
async fn get(http: &str, token: &str, url: &str, bytes: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut response = reqwest::Client::new()
        .get(format!("http://{http}{url}"))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "download: {}",
        response.status()
    );
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await? {
        received += chunk.len() as u64;
    }
    anyhow::ensure!(received == bytes, "download: {received} of {bytes} bytes");
    Ok(started.elapsed())
}

/// The same bytes from `source` over a loopback TCP connection to a file that is fsynced.
async fn plain_upload(source: &Path, target: &Path, bytes: u64) -> anyhow::Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let target = target.to_owned();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut tcp, _) = listener.accept()?;
        let mut out = std::fs::File::create(&target)?;
        let copied = std::io::copy(&mut tcp, &mut out)?;
        out.sync_all()?;
        Ok(copied)
    });
    let mut tcp = std::net::TcpStream::connect(addr)?;
    let mut file = std::fs::File::open(source)?;
    std::io::copy(&mut file, &mut tcp)?;
    drop(tcp);
    let copied = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    anyhow::ensure!(copied == bytes, "plain upload: {copied} of {bytes} bytes");
    Ok(started.elapsed())
}

/// The same bytes from a file on disk over a loopback TCP connection to a reader that drops
/// them.
async fn plain_download(source: &Path, bytes: u64) -> anyhow::Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let source = source.to_owned();
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut tcp, _) = listener.accept()?;
        let mut file = std::fs::File::open(&source)?;
        std::io::copy(&mut file, &mut tcp)
    });
    let mut tcp = std::net::TcpStream::connect(addr)?;
    let mut received = 0u64;
    let mut block = vec![0u8; BLOCK];
    loop {
        let n = tcp.read(&mut block)?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    anyhow::ensure!(
        received == bytes,
        "plain download: {received} of {bytes} bytes"
    );
    Ok(started.elapsed())
}
