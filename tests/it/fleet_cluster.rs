//! Replicas on a Redis Cluster (issue 16 item 6), through the real `api` binaries: two
//! replicas on one PostgreSQL and a three-master cluster on loopback
//! ([`tests::RedisCluster`], `REDIS_URL=redis-cluster://…`). A rate limit is one limit across
//! them, its keys spread over the nodes by their hash tags; server events, the console backlog
//! and the stream caps span them as on one Redis.

use std::path::Path;

use sea_orm::Database;
use tests::{DbKind, RedisCluster, Rest, TestPki, panel_env};

use crate::fleet::one_limit_across;
use crate::fleet_events::{Replicas, events_span_replicas};
use crate::fleet_proxy::Replica;

/// Replicas a and b (`api serve`, one after the other) on a fresh PostgreSQL database and
/// `cluster`, with `rate_limits`.
async fn replicas_on(
    dir: &Path,
    cluster: &RedisCluster,
    rate_limits: &str,
) -> (TestPki, String, Replica, Replica) {
    security::tls::install_default_provider();
    let pki = TestPki::new(dir);
    let db_url = tests::database_url(DbKind::Postgres, dir).await;
    let mut base = panel_env(&pki, &db_url, "127.0.0.1:0");
    base.extend(
        [
            ("REDIS_URL", cluster.url()),
            ("TRUSTED_PROXIES", "127.0.0.1".into()),
            ("RATE_LIMITS", rate_limits.into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut a = Replica::new("a", &base);
    let mut b = Replica::new("b", &base);
    a.start(dir).await;
    b.start(dir).await;
    (pki, db_url, a, b)
}

/// `register=3/1h` is one limit for each of six clients whichever replica they reach; their
/// windows are keys `mamba:rl:{register:<ip>}`, each hashed by its whole tag, and they lie on
/// more than one node (so the replicas really follow the cluster's slots: a client that spoke
/// to one node only would be answered `MOVED` for the others' keys, and fall back to limits
/// of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_one_limit_across_replicas_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, _db, a, b) = replicas_on(
        tmp.path(),
        &cluster,
        "register=3/1h,login=1000/1m,verify=1000/1m,api=100000/1m",
    )
    .await;
    let clients = [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "203.0.113.4",
        "203.0.113.5",
        "203.0.113.6",
    ];
    one_limit_across(a.http, b.http, &clients).await;

    let per_node = cluster.keys_per_node("mamba:rl:{register:*").await;
    let holding = per_node.iter().filter(|keys| !keys.is_empty()).count();
    assert!(holding >= 2, "windows on {holding} node(s): {per_node:?}");
    for client in clients {
        let key = format!("mamba:rl:{{register:{client}}}");
        let homes = per_node.iter().filter(|keys| keys.contains(&key)).count();
        assert_eq!(homes, 1, "{key} on one node: {per_node:?}");
        assert_eq!(
            cluster.keyslot(&key).await,
            cluster.keyslot(&format!("register:{client}")).await,
            "{key} is hashed by its whole tag"
        );
    }
    for (name, replica) in [("a", &a), ("b", &b)] {
        let log = replica.proc.as_ref().unwrap().log();
        assert!(
            !log.contains("using in-memory limits"),
            "replica {name} fell back to memory: {log}"
        );
    }
}

/// Server events span replicas on a Redis Cluster: node-1's console lines on replica A reach
/// an event stream on B, the backlog is shared, and the cap of 8 streams per user holds across
/// the replicas (the story of `fleet_events`). Nothing the replicas asked of the cluster was
/// refused (`CROSSSLOT`: each pipeline and script stays within one hash slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_events_span_replicas_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (pki, db_url, a, b) = replicas_on(dir, &cluster, &tests_limits()).await;
    let db = Database::connect(&db_url).await.unwrap();
    tests::node_and_sleeper(&db).await;
    let replicas = Replicas {
        a_http: a.http,
        a_grpc: a.grpc().parse().unwrap(),
        b_http: b.http,
        outbox: dir.join("data/outbox"),
    };
    let events_path = events_span_replicas(&pki, &replicas).await;

    // A stream's two cap sets (the user's, the server's) lie in one slot, so one script
    // takes both: with a stream open on each replica, every cap set is on one node.
    let mut open = Vec::new();
    for http in [a.http, b.http] {
        let owner = Rest::new(format!("http://{http}"))
            .login("owner@example.com")
            .await;
        open.push(owner.events(&events_path).await.unwrap());
    }
    let sets = cluster.keys_per_node("{mamba:sse}:*").await;
    let holding: Vec<&Vec<String>> = sets.iter().filter(|keys| !keys.is_empty()).collect();
    assert_eq!(holding.len(), 1, "cap sets on one node: {sets:?}");
    assert_eq!(holding[0].len(), 2, "a user's and a server's set: {sets:?}");
    drop(open);
    for (name, replica) in [("a", &a), ("b", &b)] {
        let log = replica.proc.as_ref().unwrap().log();
        assert!(
            !log.contains("REDIS_URL: cannot") && !log.contains("CROSSSLOT"),
            "replica {name}: {log}"
        );
    }
}

/// Limits roomy enough for the events story.
fn tests_limits() -> String {
    "login=1000/1m,register=1000/1m,password_reset=1000/1m,verify=1000/1m,api=100000/1m".into()
}
