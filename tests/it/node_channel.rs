//! The node channel against the real panel (in-process, ephemeral ports) with certificates from
//! the project's PKI: every way in is tried, and each test asserts the node row, the audit row
//! and the metric, not only the error. Every test runs on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::Panel;
use api::db::entities::{audit_log, node};
use api::nodes::store;
use sea_orm::{EntityTrait, QueryOrder};
use security::pki::{LeafKind, LeafSpec};
use tests::{DbKind, TestPki, database_url, dial, eventually, panel_config};

pub(crate) const CAP: Duration = Duration::from_secs(10);

/// A panel started in-process on a fresh database with a test PKI.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pki: TestPki,
    pub(crate) panel: Panel,
    pub(crate) db_url: String,
    /// The panel's clock: the system's, moved ahead by tests instead of sleeping.
    pub(crate) clock: Arc<api::clock::ShiftedClock>,
}

impl Fixture {
    pub(crate) async fn start(kind: DbKind) -> Fixture {
        Self::start_with(kind, |_| {}).await
    }

    /// Starts the panel with `adjust` applied to the test configuration.
    pub(crate) async fn start_with(kind: DbKind, adjust: impl FnOnce(&mut api::Config)) -> Fixture {
        security::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(dir.path());
        let db_url = database_url(kind, dir.path()).await;
        let mut config = panel_config(&pki, db_url.clone());
        adjust(&mut config);
        let clock = Arc::new(api::clock::ShiftedClock::default());
        let panel = Panel::start_with_clock(config, clock.clone())
            .await
            .expect("panel starts");
        Fixture {
            dir,
            pki,
            panel,
            db_url,
            clock,
        }
    }

    pub(crate) async fn add_node(&self, id: &str) {
        store::add(&self.panel.state().db, id, "node.example.com", None)
            .await
            .expect("add node");
    }

    pub(crate) async fn node(&self, id: &str) -> node::Model {
        store::get(&self.panel.state().db, id)
            .await
            .expect("db")
            .expect("node exists")
    }

    pub(crate) async fn audit(&self) -> Vec<audit_log::Model> {
        audit_log::Entity::find()
            .order_by_asc(audit_log::Column::At)
            .all(&self.panel.state().db)
            .await
            .expect("read audit")
    }

    pub(crate) fn rejections(&self, reason: &str) -> u64 {
        self.panel
            .state()
            .metrics
            .node_rejections
            .with_label_values(&[reason])
            .get()
    }

    /// Waits for the audit row of a rejection and checks its shape and the metric.
    pub(crate) async fn assert_rejected(
        &self,
        actor: &str,
        reason: &str,
        fingerprint: Option<&str>,
    ) {
        let outcome = format!("rejected: {reason}");
        let matches = |row: &audit_log::Model| {
            row.actor == actor
                && row.outcome == outcome
                && row.details["fingerprint"].as_str() == fingerprint
        };
        let what = format!("audit row {actor} {outcome} {fingerprint:?}");
        eventually(&what, CAP, || async {
            self.audit().await.iter().any(matches)
        })
        .await;
        let rows = self.audit().await;
        let row = rows.iter().find(|r| matches(r)).expect("row");
        assert_eq!(row.action, "node.connect");
        assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(row.tenant_id, None);
        if actor != "unknown" {
            assert_eq!(row.target.as_deref(), Some(actor));
        }
        assert!(self.rejections(reason) >= 1, "metric for {reason}");
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.panel.grpc_addr
    }
}

async fn no_client_cert(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    assert!(dial(f.addr(), &f.pki.ca_certs(), None, 5).await.is_err());
    f.assert_rejected("unknown", "no_client_certificate", None)
        .await;
    let row = f.node("node-1").await;
    assert!(!row.online && row.fingerprint.is_none());
}

async fn cert_from_another_ca(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let other = TestPki::new(&f.dir.path().join("other"));
    let foreign = other.node("node-1");
    let err = dial(f.addr(), &f.pki.ca_certs(), Some(foreign.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(!err.is_empty());
    f.assert_rejected("node-1", "unknown_ca", Some(&foreign.fingerprint))
        .await;
    let row = f.node("node-1").await;
    assert!(
        !row.online && row.fingerprint.is_none(),
        "nothing pinned: {row:?}"
    );
}

async fn expired_cert(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.expired_node("node-1");
    assert!(
        dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
            .await
            .is_err()
    );
    f.assert_rejected("node-1", "certificate_expired", Some(&cert.fingerprint))
        .await;
    assert!(f.node("node-1").await.fingerprint.is_none());
}

async fn not_yet_valid_cert(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.future_node("node-1");
    assert!(
        dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
            .await
            .is_err()
    );
    f.assert_rejected(
        "node-1",
        "certificate_not_yet_valid",
        Some(&cert.fingerprint),
    )
    .await;
    assert!(f.node("node-1").await.fingerprint.is_none());
}

async fn cn_not_in_db(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("ghost-node");
    let err = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("Unauthenticated") && err.contains("unknown_node"),
        "{err}"
    );
    f.assert_rejected("ghost-node", "unknown_node", Some(&cert.fingerprint))
        .await;
}

async fn empty_cn(kind: DbKind) {
    let f = Fixture::start(kind).await;
    let now = time::OffsetDateTime::now_utc();
    let cert = f.pki.issue(LeafSpec::new(
        LeafKind::Node,
        "",
        &["node.example.com".into()],
        now,
        1,
    ));
    let err = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("invalid_common_name"), "{err}");
    f.assert_rejected("unknown", "invalid_common_name", Some(&cert.fingerprint))
        .await;
}

async fn disabled_node(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    store::set_enabled(&f.panel.state().db, "node-1", false)
        .await
        .expect("disable");
    let cert = f.pki.node("node-1");
    let err = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("PermissionDenied") && err.contains("node_disabled"),
        "{err}"
    );
    f.assert_rejected("node-1", "node_disabled", Some(&cert.fingerprint))
        .await;
    let row = f.node("node-1").await;
    assert!(
        !row.online && row.fingerprint.is_none(),
        "a disabled node pins nothing"
    );
}

async fn new_key_after_pinning(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let first = f.pki.node("node-1");
    let client = dial(f.addr(), &f.pki.ca_certs(), Some(first.identity()), 5)
        .await
        .expect("first cert pinned");
    drop(client);
    let second = f.pki.node("node-1");
    let err = dial(f.addr(), &f.pki.ca_certs(), Some(second.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("fingerprint_mismatch"), "{err}");
    f.assert_rejected("node-1", "fingerprint_mismatch", Some(&second.fingerprint))
        .await;
    assert_eq!(
        f.node("node-1").await.fingerprint.as_deref(),
        Some(first.fingerprint.as_str())
    );
    // The pinned certificate still gets in.
    dial(f.addr(), &f.pki.ca_certs(), Some(first.identity()), 5)
        .await
        .expect("pinned cert admitted");
}

async fn pin_race(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    for round in 0..5 {
        store::reset_fingerprint(&f.panel.state().db, "node-1")
            .await
            .expect("reset");
        let (a, b) = (f.pki.node("node-1"), f.pki.node("node-1"));
        let ca = f.pki.ca_certs();
        let (ra, rb) = tokio::join!(
            dial(f.addr(), &ca, Some(a.identity()), 5),
            dial(f.addr(), &ca, Some(b.identity()), 5),
        );
        let (winner, loser, loser_err) = match (&ra, &rb) {
            (Ok(_), Err(e)) => (&a, &b, e.clone()),
            (Err(e), Ok(_)) => (&b, &a, e.clone()),
            _ => panic!(
                "round {round}: exactly one must win: {:?} / {:?}",
                ra.is_ok(),
                rb.is_ok()
            ),
        };
        assert!(loser_err.contains("fingerprint_mismatch"), "{loser_err}");
        assert_eq!(
            f.node("node-1").await.fingerprint.as_deref(),
            Some(winner.fingerprint.as_str())
        );
        f.assert_rejected("node-1", "fingerprint_mismatch", Some(&loser.fingerprint))
            .await;
    }
}

async fn happy_path(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 1)
        .await
        .expect("admitted");
    assert_eq!(client.welcome.node_id, "node-1");
    eventually("node online", CAP, || async {
        f.node("node-1").await.online
    })
    .await;
    let row = f.node("node-1").await;
    assert_eq!(row.fingerprint.as_deref(), Some(cert.fingerprint.as_str()));
    assert!(row.cert_not_after.is_some());
    let first_seen = row.last_seen.expect("last_seen set");
    let accepted = f
        .audit()
        .await
        .into_iter()
        .find(|r| r.outcome == "accepted")
        .expect("accepted row");
    assert_eq!(
        (accepted.actor.as_str(), accepted.action.as_str()),
        ("node-1", "node.connect")
    );
    assert_eq!(
        accepted.details["fingerprint"].as_str(),
        Some(cert.fingerprint.as_str())
    );
    assert_eq!(accepted.details["pinned_now"], serde_json::json!(true));
    assert!(f.panel.state().registry.is_online("node-1"));

    // last_seen keeps whole seconds: move the panel's clock past the next one.
    f.clock.advance(Duration::from_secs(2));
    assert!(client.heartbeat(1).await);
    eventually("heartbeat moves last_seen", CAP, || async {
        f.node("node-1")
            .await
            .last_seen
            .is_some_and(|seen| seen > first_seen)
    })
    .await;

    let (status, body) = tests::http_get(f.panel.http_addr, "/health").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"nodes_online\":1"), "{body}");

    drop(client);
    eventually("node offline after its stream ends", CAP, || async {
        !f.node("node-1").await.online
    })
    .await;
    assert!(!f.panel.state().registry.is_online("node-1"));
}

async fn heartbeats_stop(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    // Promise a heartbeat every second, then send none: dropped after three missed.
    let mut client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 1)
        .await
        .expect("admitted");
    let start = Instant::now();
    let status = tokio::time::timeout(CAP, client.closed())
        .await
        .expect("dropped in time")
        .expect("a status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(status.message().contains("heartbeat_timeout"), "{status:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(2900),
        "not before three intervals"
    );
    eventually("offline", CAP, || async { !f.node("node-1").await.online }).await;
}

async fn disable_while_connected_from_another_process(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let mut client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
        .await
        .expect("admitted");
    eventually("online", CAP, || async { f.node("node-1").await.online }).await;

    let env = [("DATABASE_URL".to_owned(), f.db_url.clone())];
    let (ok, out, err) = tests::run("api", &["node", "disable", "node-1"], &env, f.dir.path());
    assert!(ok, "{out}{err}");
    let disabled_at = Instant::now();
    let status = tokio::time::timeout(CAP, client.closed())
        .await
        .expect("dropped in time")
        .expect("a status");
    let latency = disabled_at.elapsed();
    println!("disable (api node disable, another process) -> stream dropped: {latency:?}");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("node_disabled"), "{status:?}");
    eventually("offline", CAP, || async { !f.node("node-1").await.online }).await;
    assert!(
        dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
            .await
            .is_err()
    );
}

/// On PostgreSQL the panel hears of a change at once (LISTEN/NOTIFY), not at its next poll:
/// with the watcher polling once a minute, `api node disable` in another process drops the
/// node's stream within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_changes_are_pushed_on_postgres() {
    let f = Fixture::start_with(DbKind::Postgres, |c| {
        c.node_watch_interval = Duration::from_secs(60);
    })
    .await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let mut client = dial(f.addr(), &f.pki.ca_certs(), Some(cert.identity()), 5)
        .await
        .expect("admitted");
    eventually("online", CAP, || async { f.node("node-1").await.online }).await;
    let env = [("DATABASE_URL".to_owned(), f.db_url.clone())];
    let (ok, out, err) = tests::run("api", &["node", "disable", "node-1"], &env, f.dir.path());
    assert!(ok, "{out}{err}");
    let disabled_at = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("dropped long before the next poll")
        .expect("a status");
    println!(
        "disable (api node disable, another process, watcher polling every 60 s) -> stream dropped: {:?}",
        disabled_at.elapsed()
    );
    assert!(status.message().contains("node_disabled"), "{status:?}");
}

async fn reset_fingerprint_while_connected(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let old = f.pki.node("node-1");
    let mut client = dial(f.addr(), &f.pki.ca_certs(), Some(old.identity()), 5)
        .await
        .expect("admitted");
    store::reset_fingerprint(&f.panel.state().db, "node-1")
        .await
        .expect("reset");
    let status = tokio::time::timeout(CAP, client.closed())
        .await
        .expect("dropped in time")
        .expect("a status");
    assert!(status.message().contains("fingerprint_reset"), "{status:?}");
    // A renewed certificate is pinned on its first connection.
    let renewed = f.pki.node("node-1");
    dial(f.addr(), &f.pki.ca_certs(), Some(renewed.identity()), 5)
        .await
        .expect("renewed cert admitted");
    assert_eq!(
        f.node("node-1").await.fingerprint.as_deref(),
        Some(renewed.fingerprint.as_str())
    );
}

async fn resumed_session_is_still_checked(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let config = wings::tls::client_config(&f.pki.ca_certs(), Some(cert.identity())).unwrap();
    let first = tests::dial_with(f.addr(), config.clone(), 5)
        .await
        .expect("admitted");
    drop(first);
    eventually("offline", CAP, || async { !f.node("node-1").await.online }).await;
    store::set_enabled(&f.panel.state().db, "node-1", false)
        .await
        .unwrap();
    let err = tests::dial_with(f.addr(), config, 5)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("node_disabled"), "{err}");
    f.assert_rejected("node-1", "node_disabled", Some(&cert.fingerprint))
        .await;
    let rows = f.audit().await;
    let accepted = rows.iter().find(|r| r.outcome == "accepted").unwrap();
    let refused = rows
        .iter()
        .find(|r| r.outcome == "rejected: node_disabled")
        .unwrap();
    assert_eq!(accepted.details["resumed"], serde_json::json!(false));
    assert_eq!(
        refused.details["resumed"],
        serde_json::json!(true),
        "the second connection resumed TLS"
    );
}

async fn wings_refuses_a_panel_certificate_from_another_ca(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let other = TestPki::new(&f.dir.path().join("other"));
    let cert = f.pki.node("node-1");
    // The node trusts another CA for the panel: the panel's certificate is refused.
    let err = dial(f.addr(), &other.ca_certs(), Some(cert.identity()), 5)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
    assert!(
        f.node("node-1").await.fingerprint.is_none(),
        "the panel admitted nothing"
    );
}

async fn metrics_count_rejections(kind: DbKind) {
    let f = Fixture::start(kind).await;
    for _ in 0..3 {
        let _ = dial(f.addr(), &f.pki.ca_certs(), None, 5).await;
    }
    f.assert_rejected("unknown", "no_client_certificate", None)
        .await;
    eventually("three rejections counted", CAP, || async {
        f.rejections("no_client_certificate") == 3
    })
    .await;
    let (status, body) = tests::http_get(f.panel.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("mamba_node_rejections_total{reason=\"no_client_certificate\"} 3"),
        "{body}"
    );
}

crate::on_both_databases!(
    no_client_cert,
    cert_from_another_ca,
    expired_cert,
    not_yet_valid_cert,
    cn_not_in_db,
    empty_cn,
    disabled_node,
    new_key_after_pinning,
    pin_race,
    happy_path,
    heartbeats_stop,
    disable_while_connected_from_another_process,
    reset_fingerprint_while_connected,
    resumed_session_is_still_checked,
    wings_refuses_a_panel_certificate_from_another_ca,
    metrics_count_rejections,
);
