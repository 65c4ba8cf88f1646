//! The reference deployment through the real binaries (issue 16 item 7): two `api serve`
//! replicas on one PostgreSQL and one Redis behind HAProxy with `deploy/haproxy.cfg`, as
//! `scripts/fleet.sh` runs them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tests::{DbKind, Proc, Rest, TestPki, panel_env};

/// How long HAProxy may take to see a replica go or come (two checks 500 ms apart).
pub(crate) const CHECK_CAP: Duration = Duration::from_secs(20);

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One replica's addresses and its running `api serve`.
pub(crate) struct Replica {
    pub(crate) name: &'static str,
    pub(crate) http: SocketAddr,
    env: Vec<(String, String)>,
    pub(crate) proc: Option<Proc>,
}

impl Replica {
    pub(crate) fn new(name: &'static str, base: &[(String, String)]) -> Replica {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut env = base.to_vec();
        env.retain(|(k, _)| k != "PANEL_HTTP_ADDR" && k != "PANEL_GRPC_ADDR");
        env.push(("PANEL_HTTP_ADDR".into(), http.to_string()));
        env.push(("PANEL_GRPC_ADVERTISE".into(), grpc.clone()));
        env.push(("PANEL_GRPC_ADDR".into(), grpc));
        env.push(("PANEL_REPLICA_ID".into(), name.into()));
        Replica {
            name,
            http,
            env,
            proc: None,
        }
    }

    pub(crate) async fn start(&mut self, dir: &Path) {
        let (proc, _) = tests::start_panel(dir, &self.env).await;
        self.proc = Some(proc);
    }

    pub(crate) fn grpc(&self) -> &str {
        &self
            .env
            .iter()
            .find(|(k, _)| k == "PANEL_GRPC_ADDR")
            .expect("set in new")
            .1
    }
}

/// HAProxy running the repository's configuration in front of two replicas.
pub(crate) struct Haproxy {
    _proc: Proc,
    /// REST, in HTTP mode.
    pub(crate) front: SocketAddr,
    /// The node channel, in TCP passthrough.
    pub(crate) nodes: SocketAddr,
    /// Its stats page.
    pub(crate) stats: SocketAddr,
}

/// HAProxy in front of `a` and `b` with the repository's configuration.
pub(crate) fn haproxy(dir: &Path, a: &Replica, b: &Replica) -> Haproxy {
    let [front, nodes, stats] =
        [0; 3].map(|_| -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() });
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let env = [
        ("FLEET_HTTP_BIND", front.to_string()),
        ("FLEET_GRPC_BIND", nodes.to_string()),
        ("FLEET_A_HTTP", a.http.to_string()),
        ("FLEET_B_HTTP", b.http.to_string()),
        ("FLEET_A_GRPC", a.grpc().to_owned()),
        ("FLEET_B_GRPC", b.grpc().to_owned()),
        ("FLEET_STATS_BIND", stats.to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let proc = Proc::start_program(
        "haproxy",
        &["-db", "-f", &config.display().to_string()],
        &env,
        dir,
    );
    Haproxy {
        _proc: proc,
        front,
        nodes,
        stats,
    }
}

/// Waits until HAProxy's health checks count `server` of the REST backend as `status`
/// (`UP` or `DOWN`).
pub(crate) async fn behind_haproxy(stats: SocketAddr, server: &str, status: &str) -> Duration {
    let start = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let csv = match http.get(format!("http://{stats}/;csv")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let up = csv.lines().any(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            fields.len() > 17
                && fields[0] == "panel_http"
                && fields[1] == server
                && fields[17] == status
        });
        if up {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < CHECK_CAP,
            "{server} not {status} behind HAProxy: {csv}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reference deployment in one directory.
pub(crate) struct Deployment {
    pub(crate) pki: TestPki,
    pub(crate) db_url: String,
    pub(crate) a: Replica,
    pub(crate) b: Replica,
    pub(crate) proxy: Haproxy,
}

/// Starts the reference deployment in `dir`: a fresh PostgreSQL database, the test Redis,
/// replicas a and b (with `extra` in their environment) one after the other, and HAProxy in
/// front of them; returns once HAProxy counts both up.
pub(crate) async fn deploy(dir: &Path, extra: &[(&str, &str)]) -> Deployment {
    security::tls::install_default_provider();
    let pki = TestPki::new(dir);
    let db_url = tests::database_url(DbKind::Postgres, dir).await;
    let mut base = panel_env(&pki, &db_url, "127.0.0.1:0");
    base.extend(
        [
            (
                "REDIS_URL",
                std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)"),
            ),
            ("TRUSTED_PROXIES", "127.0.0.1".into()),
            // Nodes come through HAProxy, all from its address (deploy/haproxy.cfg).
            ("PANEL_GRPC_MAX_HANDSHAKES_PER_IP", "256".into()),
            (
                "RATE_LIMITS",
                "api=1000000/1m,login=1000/1m,register=1000/1m,verify=1000/1m".into(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    base.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut a = Replica::new("a", &base);
    let mut b = Replica::new("b", &base);
    // One after the other: the first makes the development keys both use (under data/).
    a.start(dir).await;
    b.start(dir).await;
    let proxy = haproxy(dir, &a, &b);
    for server in ["a", "b"] {
        behind_haproxy(proxy.stats, server, "UP").await;
    }
    Deployment {
        pki,
        db_url,
        a,
        b,
        proxy,
    }
}

/// A rolling restart behind HAProxy fails no request: a client reads and writes through the
/// proxy every few milliseconds while replica a gets SIGTERM, stays down until HAProxy's
/// checks have marked it down, comes back and is marked up, and then b does the same; every
/// answer is a success (requests reaching a stopping or stopped replica are retried on the
/// other by HAProxy, and a stopping one finishes what it started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let Deployment {
        mut a,
        mut b,
        proxy,
        ..
    } = deploy(dir.path(), &[]).await;
    let (front, stats) = (proxy.front, proxy.stats);
    let rest = Rest::new(format!("http://{front}"));
    let outbox = dir.path().join("data/outbox");
    let (owner, _) = rest.verified_user(&outbox, "ops@example.com").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (status, body) = if n % 2 == 0 {
                    owner.get("/api/tenants").await
                } else {
                    owner
                        .post("/api/tenants", json!({"name": format!("t{n}")}))
                        .await
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !status.is_success() {
                    failures.push(format!("{status} {body}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };

    for replica in [&mut a, &mut b] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = sent.load(Ordering::Relaxed);
        let mut proc = replica.proc.take().expect("running");
        let down = Instant::now();
        tokio::task::spawn_blocking(move || proc.terminate())
            .await
            .unwrap();
        let stopped = down.elapsed();
        let marked_down = behind_haproxy(stats, replica.name, "DOWN").await;
        replica.start(dir.path()).await;
        let up = behind_haproxy(stats, replica.name, "UP").await;
        println!(
            "replica {}: stopped in {stopped:?}, marked down {marked_down:?} later, marked up {up:?} after its start; {} requests while it was away",
            replica.name,
            sent.load(Ordering::Relaxed) - before
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = client.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    println!("{sent} requests through HAProxy, {} failed", failures.len());
    assert!(sent > 100, "the client kept sending ({sent})");
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let (status, _) = rest.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}
