//! Panel replicas on one PostgreSQL and one Redis (issue 16): a rate limit is one limit across
//! the replicas, whichever one a client reaches; a node's stream is held by one replica at a
//! time (the newest stream wins, fenced by an epoch), `online` is the same answer on every
//! replica, a command asked of any replica reaches the node through the one holding it and
//! ends acked or failed, and the nodes of a replica that died go offline everywhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::node::v1::{ServerState, ServerStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::sim::{Memory, obey_remembering};
use tests::{DbKind, NodeClient, Rest, TestPki, eventually};

const CAP: Duration = Duration::from_secs(20);
/// The heartbeat of the simulated node in these tests.
const BEAT: Duration = Duration::from_secs(2);

/// A configuration for replicas of one panel: PostgreSQL, the test Redis, keys of their own.
pub(crate) async fn replica_setup() -> (tempfile::TempDir, tests::TestPki, api::Config) {
    let (dir, pki, mut config) = tests::roomy_setup(DbKind::Postgres).await;
    config.security.redis_url =
        Some(std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)"));
    config.security.redis_key_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    (dir, pki, config)
}

/// Two replicas share `register=3/1h` per client address: two registrations through one and
/// one through the other use it up, and the fourth is refused by either, with the same
/// `Retry-After` horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_one_limit_across_replicas() {
    let (_dir, _pki, mut config) = replica_setup().await;
    config.security.rate_limits =
        api::config::RateLimits::parse("register=3/1h").expect("a valid rule");
    config.security.trusted_proxies = vec![api::config::Cidr::parse("127.0.0.1").unwrap()];
    let a = api::Panel::start(config.clone()).await.unwrap();
    let b = api::Panel::start(config).await.unwrap();
    one_limit_across(a.http_addr, b.http_addr, &["203.0.113.9"]).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// For each client address (sent as `X-Forwarded-For`; the replicas trust 127.0.0.1 and limit
/// `register=3/1h`): registrations through `a`, `b`, `a` are admitted with the count going on
/// across the replicas, and the fourth is refused by either.
pub(crate) async fn one_limit_across(a: SocketAddr, b: SocketAddr, clients: &[&str]) {
    let http = reqwest::Client::new();
    let register = |replica: SocketAddr, client: &str, n: usize| {
        http.post(format!("http://{replica}/api/auth/register"))
            .header("x-forwarded-for", client)
            .json(&json!({"email": format!("fleet{n}-{client}@example.com"), "password": "a long enough passphrase"}))
            .send()
    };
    for client in clients {
        let mut answered = Vec::new();
        for (n, replica) in [a, b, a].into_iter().enumerate() {
            let response = register(replica, client, n).await.unwrap();
            answered.push(response.status());
            assert_eq!(
                response.headers()["x-ratelimit-remaining"],
                (2 - n).to_string().as_str(),
                "{client}: the count goes on across replicas"
            );
        }
        assert_eq!(answered, [StatusCode::CREATED; 3], "{client}");
        for replica in [a, b] {
            let response = register(replica, client, 9).await.unwrap();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{client}");
            assert!(response.headers().contains_key("retry-after"));
        }
    }
}

/// Two in-process replicas (`a`, `b`) on one fresh PostgreSQL database, with node-1 and a
/// template; REST clients of one verified owner on each.
struct Pair {
    dir: tempfile::TempDir,
    pki: TestPki,
    config: api::Config,
    a: api::Panel,
    b: api::Panel,
    owner_a: Rest,
    owner_b: Rest,
    /// node-1's one certificate (pinned at its first stream).
    node: tests::NodeCert,
    /// The servers node-1 reports in its `Hello` (as Wings does on every stream).
    servers: Mutex<Vec<String>>,
}

impl Pair {
    async fn start() -> Pair {
        let (dir, pki, mut config) = tests::roomy_setup(DbKind::Postgres).await;
        config.fleet.lease = Duration::from_secs(3);
        let replica = |id: &str| {
            let mut config = config.clone();
            config.fleet.replica_id = id.to_owned();
            config
        };
        let a = api::Panel::start(replica("a")).await.unwrap();
        let b = api::Panel::start(replica("b")).await.unwrap();
        tests::node_and_sleeper(&a.state().db).await;
        let rest_a = Rest::new(format!("http://{}", a.http_addr));
        let outbox = config.security.outbox_dir.clone();
        let (owner_a, _) = rest_a.verified_user(&outbox, "fleet@example.com").await;
        let owner_b = Rest::new(format!("http://{}", b.http_addr))
            .login("fleet@example.com")
            .await;
        let node = pki.node("node-1");
        Pair {
            dir,
            node,
            servers: Mutex::default(),
            pki,
            config,
            a,
            b,
            owner_a,
            owner_b,
        }
    }

    /// A stream of node-1 to the replica listening on `grpc`; its `Hello` reports the
    /// node's servers stopped.
    async fn stream(&self, grpc: std::net::SocketAddr) -> NodeClient {
        let tls =
            wings::tls::client_config(&self.pki.ca_certs(), Some(self.node.identity())).unwrap();
        let connection = tests::connect_idle(grpc, tls).await.unwrap();
        let mut hello = tests::hello(BEAT.as_secs() as u32);
        hello.servers = self
            .servers
            .lock()
            .unwrap()
            .iter()
            .map(|id| ServerStatus {
                server_id: id.clone(),
                state: ServerState::Offline as i32,
                reason: String::new(),
                exit_code: None,
                at_unix_ms: 0,
            })
            .collect();
        tests::open(connection, hello).await.unwrap()
    }

    /// A tenant with one server on node-1, made through replica a: its REST path.
    async fn server(&self) -> String {
        let (_, tenant) = self
            .owner_a
            .post("/api/tenants", json!({"name": "T"}))
            .await;
        let tid = tenant["id"].as_str().unwrap().to_owned();
        let (status, server) = self
            .owner_a
            .post(
                &format!("/api/tenants/{tid}/servers"),
                json!({"name": "s", "node_id": "node-1", "template": "sleeper"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{server}");
        let id = server["id"].as_str().unwrap().to_owned();
        self.servers.lock().unwrap().push(id);
        let path = format!(
            "/api/tenants/{tid}/servers/{}",
            server["id"].as_str().unwrap()
        );
        eventually("the server installed", CAP, || async {
            self.owner_a.get(&path).await.1["state"] == "offline"
        })
        .await;
        path
    }
}

/// `online` of node-1 as `GET /api/nodes` of one replica answers it.
async fn online(owner: &Rest) -> bool {
    let (status, page) = owner.get("/api/nodes").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|n| n["id"] == "node-1"))
        .is_some_and(|n| n["online"] == true)
}

/// The state of command `id` of the server at `path`.
async fn command_state(owner: &Rest, path: &str, id: &str) -> Value {
    let (status, command) = owner.get(&format!("{path}/commands/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{command}");
    command["state"].clone()
}

fn deliveries(memory: &Mutex<Memory>) -> Vec<(String, String)> {
    memory.lock().unwrap().deliveries.clone()
}

/// Must show: a node's stream on replica A and a second stream for the same node on replica
/// B leave exactly one live (the newer, on B), `online` is true on both, and a power command
/// asked of A goes down B's stream and is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_stream_on_another_replica_wins_and_gets_the_command() {
    let pair = Pair::start().await;
    let memory = Arc::new(Mutex::new(Memory::default()));
    let on_a = obey_remembering(
        pair.stream(pair.a.grpc_addr).await,
        BEAT,
        "a",
        memory.clone(),
    );
    eventually("node-1 online on both replicas", CAP, || async {
        online(&pair.owner_a).await && online(&pair.owner_b).await
    })
    .await;
    let path = pair.server().await;

    let start = Instant::now();
    let on_b = obey_remembering(
        pair.stream(pair.b.grpc_addr).await,
        BEAT,
        "b",
        memory.clone(),
    );
    eventually(
        "the older stream (on a) ended",
        Duration::from_secs(5),
        || async { on_a.is_finished() },
    )
    .await;
    eprintln!(
        "the stream on a ended {:?} after the newer one began dialling b (handshake included)",
        start.elapsed()
    );
    assert!(!on_b.is_finished(), "the newer stream lives");
    for owner in [&pair.owner_a, &pair.owner_b] {
        eventually("node-1 online on each replica", CAP, || online(owner)).await;
    }
    let holder = owner_row(&pair).await;
    assert_eq!((holder.replica_id.as_str(), holder.epoch), ("b", 2));

    let (status, accepted) = pair
        .owner_a
        .post(&format!("{path}/power"), json!({"action": "start"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["command_id"].as_str().unwrap().to_owned();
    eventually("the command acked", CAP, || async {
        command_state(&pair.owner_a, &path, &id).await == "acked"
    })
    .await;
    let got: Vec<String> = deliveries(&memory)
        .into_iter()
        .filter(|(_, c)| *c == id)
        .map(|(stream, _)| stream)
        .collect();
    assert_eq!(got, ["b"], "delivered once, on the live stream");
    assert_eq!(pair.owner_b.get(&path).await.1["state"], "running");
    assert!(!on_b.is_finished());
    on_b.abort();
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

async fn owner_row(pair: &Pair) -> api::db::entities::node_owner::Model {
    use sea_orm::EntityTrait;
    api::db::entities::node_owner::Entity::find_by_id("node-1")
        .one(&pair.a.state().db)
        .await
        .unwrap()
        .expect("node-1 has a holder")
}

/// Commands asked of either replica every 150 ms while node-1's stream moves from a to b and
/// back: every one is answered 202, reaches the node, runs once (the node, like Wings, runs
/// an id once), is sent at most once down any one stream, and ends acked or failed, never
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_asked_while_the_holder_moves_run_once_and_end() {
    let pair = Pair::start().await;
    let memory = Arc::new(Mutex::new(Memory::default()));
    let mut streams = vec![obey_remembering(
        pair.stream(pair.a.grpc_addr).await,
        BEAT,
        "a1",
        memory.clone(),
    )];
    eventually("node-1 online on both replicas", CAP, || async {
        online(&pair.owner_a).await && online(&pair.owner_b).await
    })
    .await;
    let path = pair.server().await;
    let mut ids = Vec::new();
    for round in 0..12 {
        if round == 3 {
            streams.push(obey_remembering(
                pair.stream(pair.b.grpc_addr).await,
                BEAT,
                "b",
                memory.clone(),
            ));
        }
        if round == 8 {
            streams.push(obey_remembering(
                pair.stream(pair.a.grpc_addr).await,
                BEAT,
                "a2",
                memory.clone(),
            ));
        }
        let owner = if round % 2 == 0 {
            &pair.owner_a
        } else {
            &pair.owner_b
        };
        let (status, accepted) = owner
            .post(&format!("{path}/power"), json!({"action": "restart"}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "round {round}: {accepted}");
        ids.push(accepted["command_id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut ends = Vec::new();
    for id in &ids {
        eventually("the command ended", CAP, || async {
            command_state(&pair.owner_b, &path, id).await != "pending"
        })
        .await;
        ends.push(command_state(&pair.owner_a, &path, id).await);
    }
    let memory = std::mem::take(&mut *memory.lock().unwrap());
    let acked = ends.iter().filter(|s| *s == "acked").count();
    eprintln!(
        "{} commands: {acked} acked, {} failed; {} deliveries",
        ids.len(),
        ids.len() - acked,
        memory.deliveries.len()
    );
    for (id, end) in ids.iter().zip(&ends) {
        assert!(end == "acked" || end == "failed", "{id}: {end}");
        let runs = memory.executed.iter().filter(|e| *e == id).count();
        assert_eq!(
            runs,
            usize::from(end == "acked"),
            "{id} ({end}) ran {runs} times"
        );
        let mut per_stream: Vec<&str> = memory
            .deliveries
            .iter()
            .filter(|(_, c)| c == id)
            .map(|(s, _)| s.as_str())
            .collect();
        let sent = per_stream.len();
        per_stream.dedup();
        assert_eq!(per_stream.len(), sent, "{id} sent twice down one stream");
    }
    assert_eq!(acked, ids.len(), "a live node acks every command");
    let live: Vec<bool> = streams.iter().map(|s| !s.is_finished()).collect();
    assert_eq!(
        live,
        [false, false, true],
        "exactly one stream lives: the newest"
    );
    for stream in streams {
        stream.abort();
    }
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

/// A replica (the real `api` binary) holding node-1 is killed with SIGKILL: the other
/// replica shows node-1 offline within three heartbeats (its lease ran out; nobody released
/// it), in the REST answer and in the node row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_node_goes_offline_on_the_other() {
    let pair = Pair::start().await;
    let root = pair.pki.layout.root().to_path_buf();
    let db_url = pair.config.database_url.clone();
    let mut env = tests::panel_env(&pair.pki, &db_url, "127.0.0.1:0");
    env.push(("PANEL_REPLICA_ID".into(), "killed".into()));
    env.push(("PANEL_LEASE_SECS".into(), "3".into()));
    let (mut killed, grpc) = tests::start_panel(&root, &env).await;
    let grpc = grpc.parse().unwrap();
    let node = tests::sim::obey(pair.stream(grpc).await, true, BEAT);
    eventually("node-1 online on the other replicas", CAP, || async {
        online(&pair.owner_a).await && online(&pair.owner_b).await
    })
    .await;
    assert_eq!(owner_row(&pair).await.replica_id, "killed");
    killed.kill_hard();
    let gone = eventually("node-1 offline on b", BEAT * 3, || async {
        !online(&pair.owner_b).await
    })
    .await;
    eprintln!("node-1 offline on b {gone:?} after its replica was killed");
    assert!(!online(&pair.owner_a).await);
    eventually("the node row says offline", CAP, || async {
        !api::nodes::store::get(&pair.b.state().db, "node-1")
            .await
            .unwrap()
            .unwrap()
            .online
    })
    .await;
    node.abort();
    // It comes back on a live replica.
    let back = tests::sim::obey(pair.stream(pair.b.grpc_addr).await, true, BEAT);
    eventually("node-1 online again on a", CAP, || online(&pair.owner_a)).await;
    back.abort();
    let _ = &pair.dir;
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

/// SQLite is one replica with the same rows: admitting a stream takes node-1 (epoch 1), a
/// reconnect raises the epoch and ends the older stream, and the end of the last stream
/// gives the node up (no row, offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_holder_rows_of_its_one_replica() {
    use sea_orm::EntityTrait;
    let (_dir, pki, mut config) = tests::roomy_setup(DbKind::Sqlite).await;
    config.fleet.replica_id = "solo".into();
    let panel = api::Panel::start(config).await.unwrap();
    let db = &panel.state().db;
    api::nodes::store::add(db, "node-1", "node1.example.com", None)
        .await
        .unwrap();
    let cert = pki.node("node-1");
    let ca = pki.ca_certs();
    let dial = || tests::dial(panel.grpc_addr, &ca, Some(cert.identity()), 2);
    let holder = || async {
        api::db::entities::node_owner::Entity::find_by_id("node-1")
            .one(db)
            .await
            .unwrap()
            .map(|row| (row.replica_id, row.epoch))
    };
    let mut first = dial().await.unwrap();
    assert_eq!(holder().await, Some(("solo".to_owned(), 1)));
    let second = dial().await.unwrap();
    assert_eq!(holder().await, Some(("solo".to_owned(), 2)));
    let ended = tokio::time::timeout(Duration::from_secs(5), first.closed()).await;
    assert!(ended.is_ok(), "the older stream ends");
    assert!(
        api::nodes::store::get(db, "node-1")
            .await
            .unwrap()
            .unwrap()
            .online
    );
    drop(second);
    // Given up: its lease ended, the row and its epoch kept for the next claim.
    eventually("node-1 given up", CAP, || async {
        api::db::entities::node_owner::Entity::find_by_id("node-1")
            .one(db)
            .await
            .unwrap()
            .is_some_and(|row| row.epoch == 2 && row.lease_until <= chrono::Utc::now())
    })
    .await;
    let third = dial().await.unwrap();
    assert_eq!(
        holder().await,
        Some(("solo".to_owned(), 3)),
        "the epoch counts on"
    );
    drop(third);
    eventually("node-1 offline", CAP, || async {
        !api::nodes::store::get(db, "node-1")
            .await
            .unwrap()
            .unwrap()
            .online
    })
    .await;
    panel.shutdown().await;
}
