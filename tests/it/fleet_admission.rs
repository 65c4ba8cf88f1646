//! Admission from the cache PostgreSQL's announcements keep fresh (issue 16, item 5): a
//! replica follows every change of a node made anywhere (here: by another process's database
//! connection, as `api node disable` does), and a change made while its listener was away is
//! not lost — the cache goes cold and is loaded again — so a disabled node is refused.

use std::time::{Duration, Instant};

use tests::{DbKind, eventually};

const CAP: Duration = Duration::from_secs(20);

/// A stream of `node` to `panel`, welcomed or refused (the status text).
async fn stream(
    pki: &tests::TestPki,
    node: &tests::NodeCert,
    panel: &api::Panel,
) -> Result<tests::NodeClient, String> {
    let tls = wings::tls::client_config(&pki.ca_certs(), Some(node.identity())).unwrap();
    let connection = tests::connect_idle(panel.grpc_addr, tls).await?;
    tests::open(connection, tests::hello(5)).await
}

/// What the panel's cache believes of node-1: `(enabled, pinned fingerprint)`.
fn believed(panel: &api::Panel) -> Option<(bool, Option<String>)> {
    panel
        .state()
        .access
        .lookup("node-1")
        .map(|a| (a.enabled, a.fingerprint))
}

/// A panel on PostgreSQL with node-1 pinned and its cache live; and a connection of "another
/// process" to the same database.
async fn started() -> (
    tempfile::TempDir,
    tests::TestPki,
    api::Panel,
    tests::NodeCert,
    sea_orm::DatabaseConnection,
) {
    let (dir, pki, config) = tests::roomy_setup(DbKind::Postgres).await;
    let other = api::db::connect(&config.database_url).await.unwrap();
    let panel = api::Panel::start(config).await.unwrap();
    tests::node_and_sleeper(&panel.state().db).await;
    let node = pki.node("node-1");
    eventually("the cache is live", CAP, || async {
        panel.state().access.is_live()
    })
    .await;
    // The first stream pins the certificate (the database's conditional write).
    drop(
        stream(&pki, &node, &panel)
            .await
            .expect("first stream welcomed"),
    );
    let pinned = Some((true, Some(node.fingerprint.clone())));
    eventually("the cache learns the pin", CAP, || async {
        believed(&panel) == pinned
    })
    .await;
    (dir, pki, panel, node, other)
}

/// Reconnects are admitted from the cache; a disable made by another process reaches it in
/// milliseconds and the node is refused; enabled again, it is admitted at once (a cache that
/// lags an enabling never refuses: only a yes comes from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_changes_made_by_another_process() {
    let (_dir, pki, panel, node, other) = started().await;
    for _ in 0..5 {
        drop(
            stream(&pki, &node, &panel)
                .await
                .expect("a reconnect welcomed"),
        );
    }

    let disabled_at = Instant::now();
    api::nodes::store::set_enabled(&other, "node-1", false)
        .await
        .unwrap();
    eventually("the cache learns the disable", CAP, || async {
        believed(&panel).is_some_and(|(enabled, _)| !enabled)
    })
    .await;
    eprintln!(
        "the cache learnt the disable {:?} after it was committed",
        disabled_at.elapsed()
    );
    let refused = stream(&pki, &node, &panel).await.err().expect("refused");
    assert!(refused.contains("node_disabled"), "{refused}");

    api::nodes::store::set_enabled(&other, "node-1", true)
        .await
        .unwrap();
    // No wait: the cache may still say disabled, which is not its to say.
    drop(stream(&pki, &node, &panel).await.expect("welcomed at once"));
    panel.shutdown().await;
}

/// The listener's connection is cut and the node disabled while it is away (its announcement
/// reaches nobody): the cache goes cold (admission reads the database meanwhile), is loaded
/// again once the listener is back, and the node is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_the_listener_was_away_is_not_lost() {
    use sea_orm::ConnectionTrait;
    let (_dir, pki, panel, node, other) = started().await;
    let cut = other
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .await
        .unwrap();
    assert!(cut.rows_affected() >= 1, "the listener was found");
    api::nodes::store::set_enabled(&other, "node-1", false)
        .await
        .unwrap();
    eventually("the cache goes cold", CAP, || async {
        !panel.state().access.is_live()
    })
    .await;
    // Cold: judged on the database.
    let refused = stream(&pki, &node, &panel).await.err().expect("refused");
    assert!(refused.contains("node_disabled"), "{refused}");
    eventually("the cache is loaded again", CAP, || async {
        panel.state().access.is_live()
    })
    .await;
    assert_eq!(
        believed(&panel),
        Some((false, Some(node.fingerprint.clone())))
    );
    let refused = stream(&pki, &node, &panel).await.err().expect("refused");
    assert!(refused.contains("node_disabled"), "{refused}");
    panel.shutdown().await;
}

/// The cache only ever says yes: loaded while node-1 was disabled and not told of its
/// enabling (no listener here), it still admits node-1, by asking the database; loaded
/// while node-1 was pinned to another certificate, the same. What it believes is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cache_never_refuses() {
    use api::nodes::access::AccessCache;
    use api::nodes::store::{self, Admission};
    let dir = tempfile::tempdir().unwrap();
    let db = api::db::connect_and_migrate(&tests::database_url(DbKind::Sqlite, dir.path()).await)
        .await
        .unwrap();
    store::add(&db, "node-1", "node1.example.com", None)
        .await
        .unwrap();
    let expiry = chrono::Utc::now() + chrono::Duration::days(30);
    assert_eq!(
        store::admit(&db, "node-1", "aa", expiry).await.unwrap(),
        Ok(Admission::Pinned)
    );
    store::set_enabled(&db, "node-1", false).await.unwrap();
    let cache = AccessCache::new(std::sync::Arc::new(api::clock::SystemClock));
    cache.load(&db).await.unwrap();
    cache.confirm(); // as if an announcement had just arrived
    store::set_enabled(&db, "node-1", true).await.unwrap();
    assert_eq!(
        cache.admit(&db, "node-1", "aa", expiry).await.unwrap(),
        Ok(Admission::Matched),
        "a cache lagging an enabling does not refuse"
    );
    assert_eq!(
        cache.still_admitted(&db, "node-1", "aa").await.unwrap(),
        Ok(())
    );
    assert!(cache.lookup("node-1").is_some_and(|a| !a.enabled));

    // Renewed elsewhere: the next pin is new to the database, not to this cache.
    store::reset_fingerprint(&db, "node-1").await.unwrap();
    assert_eq!(
        store::admit(&db, "node-1", "bb", expiry).await.unwrap(),
        Ok(Admission::Pinned)
    );
    let cache = AccessCache::new(std::sync::Arc::new(api::clock::SystemClock));
    cache.load(&db).await.unwrap();
    cache.confirm(); // as if an announcement had just arrived
    store::reset_fingerprint(&db, "node-1").await.unwrap();
    assert_eq!(
        cache.admit(&db, "node-1", "cc", expiry).await.unwrap(),
        Ok(Admission::Pinned),
        "a cache lagging a reset does not refuse the next certificate"
    );
}
