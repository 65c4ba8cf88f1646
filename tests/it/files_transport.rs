//! The file manager's transport through the real `api` and `wings` binaries, against a tenant
//! who opens downloads and never reads them (`file:read` is enough): the node's control stream
//! (heartbeats, command acks) never waits behind them, the panel caps a node's concurrent
//! transfers, and a download whose client stops pulling is reset on both sides.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::files::{Files, code, noise, server, sha256_hex, template};
use crate::servers::{CAP, Stack, power, stack};
use tests::{DbKind, Rest, eventually};

/// The file the stalled downloads read: far more than every socket buffer and HTTP/2 window
/// on the way can hold.
const BIG: usize = 64 << 20;
/// Concurrent transfers the panel allows per node (`api::transfers::MAX_PER_NODE`).
const MAX_PER_NODE: usize = 8;
/// And per server, within the node's (`api::transfers::MAX_PER_SERVER`).
const MAX_PER_SERVER: usize = 4;

/// Sends `GET …/files/content?path=` on a raw connection and reads only the response head;
/// the body is never read while the socket is kept. Returns the socket and the head.
async fn stalled_download(rest: &Rest, files: &Files, path: &str) -> (TcpStream, String) {
    let addr = rest.base.trim_start_matches("http://").to_owned();
    let token = rest.token.clone().unwrap();
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET {}/content?path={path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n",
        files.base
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + CAP;
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no response head");
        let n = tokio::time::timeout(CAP, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
    }
    (tcp, String::from_utf8_lossy(&received).into_owned())
}

/// How many descriptors of process `pid` have `suffix` open.
fn open_in(pid: u32, suffix: &str) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().ends_with(suffix))
        .count()
}

/// Reads `tcp` to its end, for at most `cap`: the bytes read, or `None` if it never ended.
async fn read_until_closed(tcp: &mut TcpStream, cap: Duration) -> Option<usize> {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    tokio::time::timeout(cap, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .ok()
}

/// Three downloads of 64 MiB whose client reads the head and never the body: for six
/// heartbeat periods (1 s; a node is dropped after three missed) the node stays online, and a
/// power command on another server of the same node is acked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn stalled_downloads_never_take_the_node_offline() {
    let Stack {
        admin,
        alice,
        wings,
        panel,
        tmp: _tmp,
        ..
    } = stack(DbKind::Sqlite).await;
    template(&admin, "roomy", &["--interval-ms", "1000"], 1024).await;
    let (url, _, _) = server(&alice, &wings, "roomy").await;
    let (other, _, _) = server(&alice, &wings, "roomy").await;
    let files = Files::new(&alice, &url);
    let (status, _, body) = files.put("/big", noise(BIG, 5), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut stalled = Vec::new();
    for _ in 0..3 {
        let (tcp, head) = stalled_download(&alice, &files, "/big").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stalled.push(tcp);
    }
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        let node = admin.get("/api/admin/nodes/node-1").await.1;
        assert_eq!(
            node["online"],
            true,
            "the node stays online while downloads stall ({:?} in)\npanel:\n{}",
            watched.elapsed(),
            panel.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let command_id = power(&alice, &other, "start").await;
    let command = format!("{other}/commands/{command_id}");
    let took = eventually(
        "the start of another server of the node acked",
        Duration::from_secs(5),
        || async { alice.get(&command).await.1["state"] == "acked" },
    )
    .await;
    assert!(
        !panel.log().contains("node offline"),
        "the control stream never ended:\n{}",
        panel.log()
    );
    println!(
        "3 stalled downloads: node online for {:?}, a command acked in {took:?}",
        watched.elapsed()
    );
    drop(stalled);
}

/// Past [`MAX_PER_SERVER`] transfers of a server, or [`MAX_PER_NODE`] of its node, the next
/// file request is refused at once (503 `unavailable` with `Retry-After`), so one tenant
/// cannot take every transfer of a node; downloads whose client stops pulling are reset within
/// the stall bound (the REST connection closed short, Wings' file closed), which frees their
/// slots: a whole download then comes through, the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn transfers_are_capped_per_node_and_stalled_ones_reset() {
    let Stack {
        admin,
        alice,
        wings,
        panel: _panel,
        tmp: _tmp,
        ..
    } = stack(DbKind::Sqlite).await;
    template(&admin, "roomy", &["--interval-ms", "1000"], 1024).await;
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(server(&alice, &wings, "roomy").await.0);
    }
    let [first, second, third] = [0, 1, 2].map(|i| Files::new(&alice, &urls[i]));
    let big = noise(BIG, 6);
    for files in [&first, &second] {
        let (status, _, body) = files.put("/big", big.clone(), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let refused = |files: &Files, why: &'static str| {
        let url = format!("{}/content?path=/big", files.base);
        let request = files.request(Method::GET, &url);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{why}");
            assert!(response.headers().contains_key("retry-after"));
            let refused: serde_json::Value = response.json().await.unwrap();
            assert_eq!(code(&refused), "unavailable", "{why}: {refused}");
        }
    };

    // One server takes its share of the node's transfers and no more; another server still
    // gets its own; past the node's cap, a third is refused.
    let mut stalled = Vec::new();
    for files in [&first, &second] {
        for _ in 0..MAX_PER_SERVER {
            let (tcp, head) = stalled_download(&alice, files, "/big").await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            stalled.push(tcp);
        }
        refused(files, "past the server's share").await;
    }
    assert_eq!(stalled.len(), MAX_PER_NODE);
    refused(&third, "past the node's cap").await;
    assert!(
        open_in(wings.pid(), "/big") > 0,
        "Wings is reading the file"
    );

    // Nobody reads: within the stall bound (30 s, once the buffers on the way are full) the
    // panel resets each download, and Wings drops the stream and closes its file.
    let started = Instant::now();
    let wings_pid = wings.pid();
    eventually("Wings closed the file", Duration::from_secs(90), || async {
        open_in(wings_pid, "/big") == 0
    })
    .await;
    let closed = started.elapsed();
    for (i, tcp) in stalled.iter_mut().enumerate() {
        let read = read_until_closed(tcp, CAP).await;
        let read = read.unwrap_or_else(|| panic!("download {i} was never reset"));
        assert!(read < BIG, "download {i} was cut short: {read} bytes");
    }
    println!("{MAX_PER_NODE} stalled downloads reset, Wings' file closed after {closed:?}");
    let (status, _, bytes) = first.get("/big").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&bytes), sha256_hex(&big), "the slots are free");
}
