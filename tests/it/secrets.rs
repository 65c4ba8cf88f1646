//! Envelope-encrypted secrets through the real REST API and the database: values round-trip,
//! reads are audited without the value, a row copied to another tenant or name does not open,
//! a template variable referring to a secret reaches the node (only it) decrypted, a wrong
//! master key stops the panel at start-up, and a rotation of 10,000 secrets interrupted
//! half-way and resumed leaves every one readable under the new key alone.

use std::time::Duration;

use api::db::entities::{audit_log, secret};
use api::secrets::{self, Vault};
use proto::node::v1::command;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use security::envelope::LocalKek;
use serde_json::json;
use tests::{DbKind, Rest, TestPki, dial};

const VALUE: &str = "pa55-w0rd; with $(shell) bits";

struct Fixture {
    _dir: tempfile::TempDir,
    pki: TestPki,
    panel: api::Panel,
    config: api::Config,
    rest: Rest,
}

async fn start(kind: DbKind) -> Fixture {
    let (dir, pki, config) = tests::roomy_setup(kind).await;
    let panel = api::Panel::start(config.clone()).await.unwrap();
    let rest = Rest::new(format!("http://{}", panel.http_addr));
    Fixture {
        _dir: dir,
        pki,
        panel,
        config,
        rest,
    }
}

async fn secrets_over_rest(kind: DbKind) {
    let f = start(kind).await;
    let outbox = f.config.security.outbox_dir.clone();
    let (alice, _) = f.rest.verified_user(&outbox, "alice@example.com").await;
    let (bob, _) = f.rest.verified_user(&outbox, "bob@example.com").await;
    let (_, a) = alice.post("/api/tenants", json!({"name": "A"})).await;
    let (_, b) = bob.post("/api/tenants", json!({"name": "B"})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let path = format!("/api/tenants/{a}/secrets/db_password");
    let (status, _) = alice
        .call(Method::PUT, &path, Some(json!({"value": VALUE})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = alice.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"name": "db_password", "value": VALUE}));
    let (_, list) = alice.get(&format!("/api/tenants/{a}/secrets")).await;
    assert_eq!(list["items"][0]["name"], "db_password");
    assert!(!list.to_string().contains(VALUE), "lists hold names only");
    for (name, why) in [("bad name!", "name"), (&"x".repeat(65), "long name")] {
        let (status, _) = alice
            .call(
                Method::PUT,
                &format!(
                    "/api/tenants/{a}/secrets/{}",
                    name.replace(' ', "%20").replace('!', "%21")
                ),
                Some(json!({"value": "v"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
    }
    let (status, _) = alice
        .call(
            Method::PUT,
            &format!("/api/tenants/{a}/secrets/big"),
            Some(json!({"value": "x".repeat(64 * 1024 + 1)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Bob's tenant cannot reach it by path…
    assert_eq!(bob.get(&path).await.0, StatusCode::NOT_FOUND);
    // …nor by copying the row into his tenant, or renaming it in A.
    let db = &f.panel.state().db;
    let row = secret::Entity::find()
        .filter(secret::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    for (tenant, name) in [(b, "db_password"), (a, "renamed")] {
        let mut copy: secret::ActiveModel = row.clone().into();
        copy.id = Set(uuid::Uuid::now_v7().to_string());
        copy.tenant_id = Set(tenant.to_owned());
        copy.name = Set(name.to_owned());
        copy.insert(db).await.unwrap();
    }
    let (status, body) = bob
        .get(&format!("/api/tenants/{b}/secrets/db_password"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "secret_unreadable");
    assert!(!body.to_string().contains(VALUE));
    let (status, _) = alice
        .get(&format!("/api/tenants/{a}/secrets/renamed"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Reads are audited; no audit row holds the value.
    let rows = audit_log::Entity::find().all(db).await.unwrap();
    assert!(
        rows.iter()
            .any(|r| r.action == "secret.read" && r.target.as_deref() == Some("db_password"))
    );
    assert!(rows.iter().all(|r| !format!("{r:?}").contains(VALUE)));
    let (status, _) = alice.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get(&path).await.0, StatusCode::NOT_FOUND);
}

async fn secret_variables_reach_only_the_node(kind: DbKind) {
    let f = start(kind).await;
    let db = &f.panel.state().db;
    api::nodes::store::add(db, "node-1", "node1.example.com", None)
        .await
        .unwrap();
    let mut node = dial(
        f.panel.grpc_addr,
        &f.pki.ca_certs(),
        Some(f.pki.node("node-1").identity()),
        5,
    )
    .await
    .unwrap();
    api::templates::create(
        db,
        api::templates::NewTemplate {
            sensitive_input: false,
            limits: Default::default(),
            name: "app".into(),
            command: "/bin/app".into(),
            args: vec!["--password={{PASSWORD}}".into()],
            variables: vec![api::templates::Variable {
                name: "PASSWORD".into(),
                pattern: "(?s).{1,100}".into(),
                default: None,
            }],
        },
    )
    .await
    .unwrap();
    let outbox = f.config.security.outbox_dir.clone();
    let (alice, _) = f.rest.verified_user(&outbox, "alice@example.com").await;
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "A"})).await;
    let base = format!("/api/tenants/{}", tenant["id"].as_str().unwrap());
    let server = json!({"name": "s", "node_id": "node-1", "template": "app",
                        "variables": {"PASSWORD": {"secret": "app_password"}}});
    let (status, body) = alice.post(&format!("{base}/servers"), server.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a missing secret: {body}");
    alice
        .call(
            Method::PUT,
            &format!("{base}/secrets/app_password"),
            Some(json!({"value": VALUE})),
        )
        .await;
    let (status, body) = alice.post(&format!("{base}/servers"), server).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["variables"]["PASSWORD"],
        json!({"secret": "app_password"})
    );
    let install = tokio::time::timeout(Duration::from_secs(10), node.next_command())
        .await
        .unwrap()
        .unwrap();
    let Some(command::Action::Install(spec)) = install.action else {
        panic!("expected install, got {install:?}");
    };
    assert_eq!(spec.args, vec![format!("--password={VALUE}")]);
    assert_eq!(spec.env["PASSWORD"], VALUE);
    let (_, shown) = alice
        .get(&format!("{base}/servers/{}", body["id"].as_str().unwrap()))
        .await;
    assert!(
        !shown.to_string().contains(VALUE),
        "the API shows the reference only"
    );
}

async fn wrong_master_key_stops_the_panel(kind: DbKind) {
    let f = start(kind).await;
    let vault = f.panel.state().vault.clone();
    secrets::put(&f.panel.state().db, &vault, "t", "n", "v")
        .await
        .unwrap();
    let mut config = f.config.clone();
    f.panel.shutdown().await;
    let (_, other) = LocalKek::generate();
    config.security.master_key = Some(api::config::Redacted(other.to_string()));
    let error = match api::Panel::start(config).await {
        Ok(_) => panic!("a wrong master key must stop the panel"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("MASTER_ENCRYPTION_KEY"), "{error}");
    assert!(error.contains("wrong key"), "{error}");
    assert!(!error.contains(other.as_str()), "the key is never printed");
}

async fn rotation_of_10000_resumes(kind: DbKind) {
    let f = start(kind).await;
    let db = f.panel.state().db.clone();
    let (old_hex, new_hex) = (LocalKek::generate().1, LocalKek::generate().1);
    let kek = |hex: &str| LocalKek::from_hex(hex).unwrap();
    let old = Vault::from_keys(kek(&old_hex), vec![]);
    for chunk in 0..10 {
        let rows: Vec<secret::ActiveModel> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                secrets::seal_row(
                    &old,
                    &format!("tenant-{}", n % 7),
                    &format!("s{n}"),
                    &format!("value {n}"),
                )
                .unwrap()
            })
            .collect();
        secret::Entity::insert_many(rows).exec(&db).await.unwrap();
    }
    let both = Vault::from_keys(kek(&new_hex), vec![kek(&old_hex)]);
    // Interrupted half-way: 10 batches of 500, then it stops as a crash would.
    let first = secrets::rotate(&db, &both, 500, Some(10)).await.unwrap();
    assert_eq!(
        (first.rewrapped, first.remaining),
        (5000, 5000),
        "{first:?}"
    );
    let all = secret::Entity::find().all(&db).await.unwrap();
    for row in &all {
        let n = &row.name[1..];
        assert_eq!(
            secrets::open_row(&both, row).unwrap().as_str(),
            format!("value {n}")
        );
    }
    // Resumed by a new process with the same keys.
    let again = Vault::from_keys(kek(&new_hex), vec![kek(&old_hex)]);
    let second = secrets::rotate(&db, &again, 500, None).await.unwrap();
    assert_eq!(
        (second.rewrapped, second.remaining, second.failed),
        (5000, 0, 0)
    );
    let new_only = Vault::from_keys(kek(&new_hex), vec![]);
    for row in secret::Entity::find().all(&db).await.unwrap() {
        let before = all.iter().find(|r| r.id == row.id).unwrap();
        assert_eq!(row.ciphertext, before.ciphertext, "ciphertexts untouched");
        let n = &row.name[1..];
        assert_eq!(
            secrets::open_row(&new_only, &row).unwrap().as_str(),
            format!("value {n}")
        );
    }
}

crate::on_both_databases!(
    secrets_over_rest,
    secret_variables_reach_only_the_node,
    wrong_master_key_stops_the_panel,
    rotation_of_10000_resumes
);
