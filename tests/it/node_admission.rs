//! Node admission (issue 13, items 8 and 9) against the real panel and real TLS:
//! admitted connections that sit idle without a stream, and expired certificates through TLS
//! 1.3 resumption.

use std::sync::Arc;
use std::time::Duration;

use security::pki::{LeafKind, LeafSpec};
use tests::{DbKind, NodeCert, connect_idle, dial_with, eventually, hello, open};

use crate::node_channel::{CAP, Fixture};

/// The panel's Hello timeout (`api::grpc::service`), plus a margin.
const PAST_HELLO_TIMEOUT: Duration = Duration::from_secs(12);

fn client_config(f: &Fixture, cert: &NodeCert) -> Arc<rustls::ClientConfig> {
    wings::tls::client_config(&f.pki.ca_certs(), Some(cert.identity())).expect("client config")
}

/// Connects without opening a stream and waits until the panel has admitted (pinned) it.
async fn admitted_idle(f: &Fixture, cert: &NodeCert) -> tests::IdleConnection {
    let idle = connect_idle(f.addr(), client_config(f, cert))
        .await
        .expect("TLS and HTTP/2 up");
    // Pinned first, then registered: wait for both.
    eventually("the idle connection is admitted", CAP, || async {
        f.node("node-1").await.fingerprint.as_deref() == Some(cert.fingerprint.as_str())
            && !f.panel.state().registry.connections.is_empty()
    })
    .await;
    idle
}

/// Waits until the panel holds no admitted connection any more.
async fn all_connections_closed(f: &Fixture) {
    eventually("every admitted connection closed", CAP, || async {
        f.panel.state().registry.connections.is_empty()
    })
    .await;
}

async fn idle_connection_is_closed_after_the_hello_timeout(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let cert = f.pki.node("node-1");
    let idle = admitted_idle(&f, &cert).await;
    assert_eq!(f.panel.state().registry.connections.len(), 1);
    tokio::time::sleep(PAST_HELLO_TIMEOUT).await;
    all_connections_closed(&f).await;
    let err = open(idle, hello(5))
        .await
        .err()
        .expect("no stream on a connection closed for want of Hello");
    println!("stream after the Hello timeout: {err}");
    assert!(!f.panel.state().registry.is_online("node-1"));
}

/// `api node disable` and `api node reset-fingerprint` in another process: the watcher
/// closes the idle connection, and it cannot open a stream afterwards.
async fn idle_connection_dropped_by_cli_from_another_process(kind: DbKind) {
    for (command, reason) in [
        ("reset-fingerprint", "fingerprint_reset"),
        ("disable", "node_disabled"),
    ] {
        let f = Fixture::start(kind).await;
        f.add_node("node-1").await;
        let cert = f.pki.node("node-1");
        let idle = admitted_idle(&f, &cert).await;
        let env = [("DATABASE_URL".to_owned(), f.db_url.clone())];
        let (ok, out, err) = tests::run("api", &["node", command, "node-1"], &env, f.dir.path());
        assert!(ok, "{out}{err}");
        all_connections_closed(&f).await;
        let err = open(idle, hello(5))
            .await
            .err()
            .unwrap_or_else(|| panic!("a stream after `api node {command}`"));
        println!("stream after `api node {command}` ({reason}): {err}");
        assert!(!f.panel.state().registry.is_online("node-1"));
        assert_eq!(
            f.node("node-1").await.fingerprint.is_some(),
            command == "disable",
            "the idle connection pinned nothing again"
        );
    }
}

/// With the watcher asleep, only admission re-run on the new stream keeps the node out. On
/// SQLite only: on PostgreSQL the change is pushed and the watcher wakes at once, dropping
/// the idle connection before the stream can be tried
/// (`node_channel::node_changes_are_pushed_on_postgres`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_on_idle_connection_is_admitted_again() {
    let kind = DbKind::Sqlite;
    let hour = Duration::from_secs(3600);
    for (change, reason) in [("reset", "fingerprint_reset"), ("disable", "node_disabled")] {
        let f = Fixture::start_with(kind, |c| c.node_watch_interval = hour).await;
        f.add_node("node-1").await;
        let cert = f.pki.node("node-1");
        let idle = admitted_idle(&f, &cert).await;
        let db = &f.panel.state().db;
        match change {
            "reset" => api::nodes::store::reset_fingerprint(db, "node-1").await,
            _ => api::nodes::store::set_enabled(db, "node-1", false).await,
        }
        .expect("change the node");
        let err = open(idle, hello(5))
            .await
            .err()
            .unwrap_or_else(|| panic!("a stream after {change}"));
        assert!(err.contains(reason), "{err}");
        f.assert_rejected("node-1", reason, Some(&cert.fingerprint))
            .await;
        let row = f
            .audit()
            .await
            .into_iter()
            .rev()
            .find(|r| r.outcome.ends_with(reason));
        assert_eq!(
            row.expect("row").details["detail"].as_str(),
            Some("stream opened")
        );
        assert!(!f.panel.state().registry.is_online("node-1"));
        if change == "reset" {
            assert!(
                f.node("node-1").await.fingerprint.is_none(),
                "an idle connection must not pin itself again after a reset"
            );
        }
        all_connections_closed(&f).await;
    }
}

/// A certificate that expires while its TLS session is cached: the resumed connection is
/// refused at admission although TLS 1.3 resumption does not look at the certificate again.
async fn expired_certificate_refused_through_resumption(kind: DbKind) {
    let f = Fixture::start(kind).await;
    f.add_node("node-1").await;
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::seconds(4);
    let cert = f.pki.issue(LeafSpec {
        kind: LeafKind::Node,
        common_name: "node-1".into(),
        hostnames: vec!["node.example.com".into()],
        not_before: now - time::Duration::minutes(5),
        not_after,
    });
    let config = client_config(&f, &cert);
    let first = dial_with(f.addr(), config.clone(), 5)
        .await
        .expect("admitted while valid");
    drop(first);
    wait_offline(&f).await;
    // Real time has to pass: the TLS session cache keys on it, and so does rustls.
    let wait = (not_after - time::OffsetDateTime::now_utc()) + time::Duration::seconds(2);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let err = dial_with(f.addr(), config, 5)
        .await
        .err()
        .expect("an expired certificate is refused");
    assert!(err.contains("certificate_expired"), "{err}");
    f.assert_rejected("node-1", "certificate_expired", Some(&cert.fingerprint))
        .await;
    let rows = f.audit().await;
    let refused = rows
        .iter()
        .find(|r| r.outcome == "rejected: certificate_expired")
        .expect("row");
    assert_eq!(
        refused.details["resumed"],
        serde_json::json!(true),
        "the refused connection resumed TLS"
    );
    assert!(!f.panel.state().registry.is_online("node-1"));
}

async fn wait_offline(f: &Fixture) {
    eventually("offline", CAP, || async { !f.node("node-1").await.online }).await;
}

crate::on_both_databases!(
    idle_connection_is_closed_after_the_hello_timeout,
    idle_connection_dropped_by_cli_from_another_process,
    expired_certificate_refused_through_resumption,
);
