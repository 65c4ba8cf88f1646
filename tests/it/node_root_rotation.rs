//! Node identity lifecycle (issue 15), item 5: moving a fleet of two nodes from one root to
//! another with no node offline, through the real binaries and the README's runbook: the panel
//! trusts both roots (a bundle in `PANEL_CA_CERT`, re-read without a restart), the nodes learn
//! the bundle with a renewal, the panel's server certificate and then its issuer move to the new
//! root, the nodes renew under it, and finally the old root is dropped everywhere.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use security::pki::{self, LeafKind};
use tests::{DbKind, Proc, TestPki, dial, eventually};

use crate::node_enroll::Enrolling;

const CAP: Duration = Duration::from_secs(30);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Waits until the panel has logged `needle` `count` times.
async fn logged(panel: &Proc, needle: &str, count: usize) {
    eventually(&format!("{count} × {needle}"), CAP, || async {
        panel.log().matches(needle).count() >= count
    })
    .await;
}

/// `api node rotate` for both nodes; waits for `total` promotions in the audit log.
async fn rotate_both(p: &Enrolling, total: usize) {
    for id in ["node-1", "node-2"] {
        let (ok, out, err) = p.api(&["node", "rotate", id]);
        assert!(ok, "{out}{err}");
    }
    let db_url = p.db_url.clone();
    eventually(&format!("{total} promotions"), CAP, || async {
        use api::db::entities::audit_log::{Column, Entity};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let db = sea_orm::Database::connect(&db_url).await.unwrap();
        let rows = Entity::find()
            .filter(Column::Action.eq("node.cert_renewed"))
            .all(&db)
            .await
            .unwrap();
        let _ = db.close().await;
        rows.len() >= total
    })
    .await;
}

async fn a_fleet_moves_to_a_new_root_with_no_node_offline(kind: DbKind) {
    let p = Enrolling::start(kind, &[]).await;
    let dir = p.dir().to_owned();
    let mut agents = Vec::new();
    let mut envs = Vec::new();
    for id in ["node-1", "node-2"] {
        let token = p.add_with_token(id);
        let (ok, out, err) = p.enroll(&token, &dir.join(id), &[]);
        assert!(ok, "{out}{err}");
        let env = p.agent_env(&out);
        agents.push(Proc::start("wings", &[], &env, &dir));
        envs.push(env);
    }
    let var = |env: &[(String, String)], name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    for id in ["node-1", "node-2"] {
        eventually(&format!("{id} online"), CAP, || async {
            p.node(id).await.online
        })
        .await;
    }

    // The watcher: both nodes' rows every 25 ms for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, offline) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (stop, samples, offline, db_url) = (
            stop.clone(),
            samples.clone(),
            offline.clone(),
            p.db_url.clone(),
        );
        tokio::spawn(async move {
            let db = sea_orm::Database::connect(&db_url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                for id in ["node-1", "node-2"] {
                    let row = api::nodes::store::get(&db, id).await.unwrap().unwrap();
                    samples.fetch_add(1, Ordering::Relaxed);
                    if !row.online {
                        offline.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = db.close().await;
        })
    };

    // 1. A new root with its issuer and a server certificate, made off-line.
    let old = &p.pki;
    let new = TestPki::new(&dir.join("new-root"));
    new.issuer(Duration::from_secs(30 * 86_400));
    let (old_root, new_root) = (read(&old.layout.ca_cert()), read(&new.layout.ca_cert()));
    let reloaded = "trusted roots or server certificate reloaded";

    // 2. The panel trusts both (no restart), and the nodes learn both with a renewal.
    pki::write_public(&old.layout.ca_cert(), &format!("{old_root}{new_root}")).unwrap();
    logged(&p.panel, reloaded, 1).await;
    rotate_both(&p, 2).await;
    for env in &envs {
        let ca = var(env, "WINGS_API_CA_CERT");
        eventually("the node trusts both roots", CAP, || async {
            read(Path::new(&ca)) == format!("{old_root}{new_root}")
        })
        .await;
    }

    // 3. The panel's server certificate, then its issuer, move to the new root.
    pki::write_private(&old.layout.server_key(), &read(&new.layout.server_key())).unwrap();
    pki::write_public(&old.layout.server_cert(), &read(&new.layout.server_cert())).unwrap();
    logged(&p.panel, reloaded, 2).await;
    pki::write_private(&old.layout.issuer_key(), &read(&new.layout.issuer_key())).unwrap();
    pki::write_public(&old.layout.issuer_cert(), &read(&new.layout.issuer_cert())).unwrap();
    logged(&p.panel, "issuer reloaded", 1).await;
    rotate_both(&p, 4).await;

    // 4. The old root is dropped: by the panel, then by the nodes with their next renewal.
    pki::write_public(&old.layout.ca_cert(), &new_root).unwrap();
    logged(&p.panel, reloaded, 3).await;
    rotate_both(&p, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    println!(
        "root rotation of two nodes: {} state samples, {} offline",
        samples.load(Ordering::Relaxed),
        offline.load(Ordering::Relaxed)
    );
    assert_eq!(
        offline.load(Ordering::Relaxed),
        0,
        "a node was seen offline"
    );
    assert!(samples.load(Ordering::Relaxed) > 50);

    // Each node: online, trusting only the new root, its certificate chaining to it alone.
    let new_roots = security::tls::read_certs(&new.layout.ca_cert()).unwrap();
    for (env, id) in envs.iter().zip(["node-1", "node-2"]) {
        let ca = var(env, "WINGS_API_CA_CERT");
        eventually("the node trusts the new root only", CAP, || async {
            read(Path::new(&ca)) == new_root
        })
        .await;
        let chain = security::tls::read_certs(Path::new(&var(env, "WINGS_TLS_CERT_FILE"))).unwrap();
        pki::verify_chain(
            &new_roots,
            &chain,
            LeafKind::Node,
            None,
            std::time::SystemTime::now(),
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        let row = p.node(id).await;
        assert!(row.online, "{id}");
        assert_eq!(
            row.fingerprint.as_deref(),
            Some(pki::fingerprint(&chain[0]).as_str())
        );
    }
    // A certificate of the old root is refused now.
    let stale = old.node("node-1");
    let err = dial(
        p.grpc.parse().unwrap(),
        &new_roots,
        Some(stale.identity()),
        5,
    )
    .await
    .err()
    .expect("the old root is no longer trusted");
    assert!(!err.is_empty());
    drop(agents);
}

crate::on_both_databases!(a_fleet_moves_to_a_new_root_with_no_node_offline);
