//! Node identity lifecycle (issue 15), item 2: join tokens and `wings enroll`, through the real
//! binaries. A node enrolled by token only (its key made on the node, never copied) is pinned
//! before it first connects and then comes online; every refusal — replay, expiry, a revoked
//! (disabled node's) token, a CSR for another node's id, RSA and weak keys, garbage — gets its
//! status and an audit row, and issues nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tests::{DbKind, Proc, TestPki, database_url, eventually, panel_env, run};

use crate::node_identity::openssl_csr;

const CAP: Duration = Duration::from_secs(20);

/// A real `api serve` with its REST listener on TLS (the panel's certificate) and an issuer.
pub(crate) struct Enrolling {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) pki: TestPki,
    pub(crate) db_url: String,
    pub(crate) panel: Proc,
    pub(crate) https: String,
    pub(crate) grpc: String,
}

impl Enrolling {
    /// Starts the panel; `extra` adds variables (e.g. `NODE_CERT_SECS`).
    pub(crate) async fn start(kind: DbKind, extra: &[(&str, &str)]) -> Enrolling {
        security::tls::install_default_provider();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let pki = TestPki::new(dir);
        pki.issuer(Duration::from_secs(30 * 86_400));
        let db_url = database_url(kind, dir).await;
        let mut env = panel_env(&pki, &db_url, "127.0.0.1:0");
        let file = |p: PathBuf| p.display().to_string();
        for (name, value) in [
            ("PANEL_HTTP_TLS_CERT_FILE", file(pki.layout.server_cert())),
            ("PANEL_HTTP_TLS_KEY_FILE", file(pki.layout.server_key())),
            ("PANEL_ISSUER_CERT_FILE", file(pki.layout.issuer_cert())),
            ("PANEL_ISSUER_KEY_FILE", file(pki.layout.issuer_key())),
            ("RATE_LIMITS", "enroll=1000/1m".to_owned()),
        ] {
            env.push((name.to_owned(), value));
        }
        for (name, value) in extra {
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        let panel = Proc::start("api", &["serve"], &env, dir);
        let line = panel.wait_for_line("panel listening", CAP).await;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .to_owned()
        };
        let (http, grpc) = (field("http_addr"), field("grpc_addr"));
        Enrolling {
            https: format!("https://{http}"),
            grpc,
            db_url,
            panel,
            pki,
            tmp,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn api(&self, args: &[&str]) -> (bool, String, String) {
        let env = [("DATABASE_URL".to_owned(), self.db_url.clone())];
        run("api", args, &env, self.dir())
    }

    /// `api node add <id> … --join-token`: the token it prints.
    pub(crate) fn add_with_token(&self, id: &str) -> String {
        let (ok, out, err) = self.api(&[
            "node",
            "add",
            id,
            &format!("{id}.example.com"),
            "--join-token",
            "--ttl",
            "10m",
        ]);
        assert!(ok, "{out}{err}");
        out.lines()
            .find(|l| l.starts_with("mjt_"))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .to_owned()
    }

    /// `wings enroll` with `token` into `$data/identity/`; `extra` adds variables.
    pub(crate) fn enroll(
        &self,
        token: &str,
        data: &Path,
        extra: &[(&str, &str)],
    ) -> (bool, String, String) {
        let ca = self.pki.layout.ca_cert().display().to_string();
        let mut env = vec![
            ("WINGS_DATA_DIR".to_owned(), data.display().to_string()),
            ("WINGS_JOIN_TOKEN".to_owned(), token.to_owned()),
        ];
        for (name, value) in extra {
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        run(
            "wings",
            &["enroll", "--panel", &self.https, "--ca-cert", &ca],
            &env,
            self.dir(),
        )
    }

    /// The agent's environment from `wings enroll`'s output, pointed at the gRPC port.
    pub(crate) fn agent_env(&self, enroll_out: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = enroll_out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .filter(|(k, _)| k != "WINGS_API_URL")
            .collect();
        env.push(("WINGS_API_URL".into(), format!("https://{}", self.grpc)));
        env.push(("WINGS_HEARTBEAT_SECS".into(), "1".into()));
        env
    }

    pub(crate) async fn db(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.db_url).await.unwrap()
    }

    pub(crate) async fn node(&self, id: &str) -> api::db::entities::node::Model {
        let db = self.db().await;
        let node = api::nodes::store::get(&db, id).await.unwrap().unwrap();
        let _ = db.close().await;
        node
    }

    /// The `node.enroll` audit outcomes for `actor`, oldest first.
    pub(crate) async fn enroll_outcomes(&self, actor: &str) -> Vec<String> {
        use api::db::entities::audit_log::{Column, Entity};
        let db = self.db().await;
        let mut rows = Entity::find()
            .filter(Column::Action.eq("node.enroll"))
            .filter(Column::Actor.eq(actor))
            .all(&db)
            .await
            .unwrap();
        rows.sort_by_key(|r| r.at);
        let _ = db.close().await;
        rows.into_iter().map(|r| r.outcome).collect()
    }

    /// POSTs a crafted body to the enrolment endpoint over TLS (Wings' own client).
    pub(crate) async fn post_enroll(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (host, port) = wings::enroll::parse_panel_url(&self.https).unwrap();
        let roots = self.pki.ca_certs();
        let (status, body) =
            wings::enroll::post_json(&host, port, &roots, "/api/nodes/enroll", body.to_string())
                .await
                .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }
}

/// The CSR with one character of its last base64 line changed: inside the signature.
fn tamper_signature(pem: &str) -> String {
    let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
    let last = lines.len() - 2; // the line before `-----END …`
    let mut chars: Vec<char> = lines[last].chars().collect();
    chars[4] = if chars[4] == 'A' { 'B' } else { 'A' };
    lines[last] = chars.into_iter().collect();
    lines.join("\n") + "\n"
}

fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

async fn enrolled_by_token_only_pinned_before_it_connects(kind: DbKind) {
    let p = Enrolling::start(kind, &[]).await;
    let token = p.add_with_token("node-1");
    assert!(token.len() >= 4 + 43, "256 bits, base64url: {token}");
    let data = p.dir().join("w1");
    let (ok, out, err) = p.enroll(&token, &data, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        !err.contains(&token) && !out.contains(&token),
        "the token is printed"
    );
    let env = p.agent_env(&out);
    assert_eq!(env_value(&env, "WINGS_NODE_ID"), "node-1");
    let key = env_value(&env, "WINGS_TLS_KEY_FILE").to_owned();
    assert!(key.ends_with("w1/identity/key.pem"), "{key}");
    assert_eq!(mode(&key), 0o600);
    let chain =
        security::tls::read_certs(Path::new(env_value(&env, "WINGS_TLS_CERT_FILE"))).unwrap();
    assert_eq!(chain.len(), 2, "leaf and issuer, the whole chain");
    let fingerprint = security::pki::fingerprint(&chain[0]);
    // Pinned at issue, before any connection.
    let row = p.node("node-1").await;
    assert_eq!(row.fingerprint.as_deref(), Some(fingerprint.as_str()));
    assert!(!row.online && row.last_renewed_at.is_some() && row.cert_not_after.is_some());
    assert_eq!(p.enroll_outcomes("node-1").await, ["ok"]);

    let wings = Proc::start("wings", &[], &env, p.dir());
    eventually(
        "node-1 online with the enrolled certificate",
        CAP,
        || async { p.node("node-1").await.online },
    )
    .await;
    assert_eq!(
        p.node("node-1").await.fingerprint.as_deref(),
        Some(fingerprint.as_str())
    );
    let (ok, out, _) = p.api(&["node", "list", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["renewal"], "ok", "{listed}");
    assert!(listed[0]["last_renewed_at"].is_string(), "{listed}");

    // The same token again: a replay, refused, nothing changes.
    let (ok, _, err) = p.enroll(&token, &p.dir().join("w1b"), &[]);
    assert!(
        !ok && err.contains("401") && err.contains("used already"),
        "{err}"
    );
    assert!(!p.dir().join("w1b/identity/cert.pem").exists());
    assert_eq!(
        p.node("node-1").await.fingerprint.as_deref(),
        Some(fingerprint.as_str())
    );
    assert_eq!(
        p.enroll_outcomes("node-1").await,
        ["ok", "rejected: used_token"]
    );
    assert!(
        p.node("node-1").await.online,
        "the enrolled node stays online"
    );
    drop(wings);
}

async fn every_refused_enrolment_is_audited_and_issues_nothing(kind: DbKind) {
    let p = Enrolling::start(kind, &[]).await;

    // Expired: a token made an hour ago with a minute to live (time injected, not slept).
    p.api(&["node", "add", "node-2", "node-2.example.com"]);
    let db = p.db().await;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let (expired, _) =
        api::nodes::enroll::create_token(&db, "node-2", Duration::from_secs(60), an_hour_ago)
            .await
            .unwrap();
    let (ok, _, err) = p.enroll(&expired, &p.dir().join("w2"), &[]);
    assert!(
        !ok && err.contains("401") && err.contains("expired"),
        "{err}"
    );

    // Disabled node: its tokens are revoked at once, and stay dead when it is enabled again.
    let revoked = p.add_with_token("node-3");
    let (ok, _, err) = p.api(&["node", "disable", "node-3"]);
    assert!(ok, "{err}");
    let (ok, _, err) = p.enroll(&revoked, &p.dir().join("w3"), &[]);
    assert!(!ok && err.contains("401"), "{err}");
    p.api(&["node", "enable", "node-3"]);
    let (ok, _, err) = p.enroll(&revoked, &p.dir().join("w3"), &[]);
    assert!(!ok && err.contains("401"), "{err}");

    // Another node's id: node-4's token with a CSR naming node-2.
    let token = p.add_with_token("node-4");
    let (ok, _, err) = p.enroll(&token, &p.dir().join("w4"), &[("WINGS_NODE_ID", "node-2")]);
    assert!(
        !ok && err.contains("403") && err.contains("another node"),
        "{err}"
    );

    // RSA and a weak curve, a garbage CSR, a CSR whose signature fails: 400, never a 500.
    for kind in ["rsa", "p192"] {
        let csr = openssl_csr(p.dir(), kind, "node-4");
        let (status, body) = p
            .post_enroll(serde_json::json!({"token": token, "csr": csr}))
            .await;
        assert_eq!(status, 400, "{kind}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    let (_, good_csr) = security::pki::node_csr(Some("node-4")).unwrap();
    let tampered = tamper_signature(&good_csr);
    for csr in ["not a csr", tampered.as_str()] {
        let (status, body) = p
            .post_enroll(serde_json::json!({"token": token, "csr": csr}))
            .await;
        assert_eq!(status, 400, "{csr}: {body}");
    }
    // Oversized bodies are cut before they are parsed.
    let (status, body) = p
        .post_enroll(serde_json::json!({"token": token, "csr": "A".repeat(20_000)}))
        .await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = p
        .post_enroll(serde_json::json!({"token": "x", "csr": good_csr}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    // Nothing was issued to anyone: no pin, no certificate written.
    for id in ["node-2", "node-3", "node-4"] {
        let row = p.node(id).await;
        assert!(
            row.fingerprint.is_none() && row.last_renewed_at.is_none(),
            "{row:?}"
        );
    }
    for w in ["w2", "w3", "w4"] {
        assert!(!p.dir().join(w).join("identity/cert.pem").exists(), "{w}");
        assert!(!p.dir().join(w).join("identity/key.pem").exists(), "{w}");
    }
    assert_eq!(
        p.enroll_outcomes("node-2").await,
        ["rejected: expired_token"]
    );
    assert_eq!(
        p.enroll_outcomes("unknown")
            .await
            .iter()
            .filter(|o| *o == "rejected: unknown_token")
            .count(),
        3
    );
    assert_eq!(
        p.enroll_outcomes("node-4").await,
        ["rejected: foreign_name"],
        "the CSR is checked before the token: the key refusals carry no node"
    );
    let anonymous = p.enroll_outcomes("unknown").await;
    for reason in ["weak_key", "bad_csr"] {
        assert!(
            anonymous.iter().filter(|o| o.ends_with(reason)).count() == 2,
            "{reason}: {anonymous:?}"
        );
    }

    // The token refused for another node's CSR still enrols its own node, once.
    let (ok, out, err) = p.enroll(&token, &p.dir().join("w4"), &[]);
    assert!(ok, "{out}{err}");
    assert!(p.node("node-4").await.fingerprint.is_some());
    let _ = db.close().await;
    assert!(!p.panel.log().contains("panicked"), "{}", p.panel.log());
}

/// `POST /api/admin/nodes/{id}/join-tokens`: a token shown once and stored hashed, deleted when
/// the node is disabled over REST; a panel without an issuer answers 503 and audits it.
async fn join_tokens_over_rest(kind: DbKind) {
    use api::db::entities::node_join_token;
    let (_dir, pki, mut config) = tests::roomy_setup(kind).await;
    config.node_identity = pki.issuer(Duration::from_secs(86_400));
    let outbox = config.security.outbox_dir.clone();
    let panel = api::Panel::start(config).await.unwrap();
    let db = &panel.state().db;
    let rest = tests::Rest::new(format!("http://{}", panel.http_addr));
    rest.register_verified(&outbox, "root@example.com").await;
    api::identity::grant_platform_admin(db, "root@example.com")
        .await
        .unwrap();
    let admin = rest.login("root@example.com").await;
    let node = serde_json::json!({ "id": "node-1", "fqdn": "n1.example.com" });
    assert_eq!(admin.post("/api/admin/nodes", node).await.0, 201);
    let (status, body) = admin
        .post("/api/admin/nodes/node-1/join-tokens", serde_json::json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let rows = node_join_token::Entity::find().all(db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token_hash, api::identity::tokens::hash(&token));
    assert!(!rows[0].token_hash.contains(&token));
    // Only platform admins make tokens.
    let (member, _) = rest.verified_user(&outbox, "bob@example.com").await;
    let (status, _) = member
        .post("/api/admin/nodes/node-1/join-tokens", serde_json::json!({}))
        .await;
    assert_eq!(status, 403);
    // Disabled over REST: the token is gone.
    let (status, _) = admin
        .post("/api/admin/nodes/node-1/disable", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        node_join_token::Entity::find()
            .all(db)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, csr) = security::pki::node_csr(None).unwrap();
    let (status, body) = rest
        .post(
            "/api/nodes/enroll",
            serde_json::json!({ "token": token, "csr": csr }),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    panel.shutdown().await;

    // Without an issuer: 503, audited, nothing pinned.
    let (_dir, _pki, config) = tests::roomy_setup(kind).await;
    let panel = api::Panel::start(config).await.unwrap();
    let db = &panel.state().db;
    api::nodes::store::add(db, "node-1", "n1.example.com", None)
        .await
        .unwrap();
    let (token, _) = api::nodes::enroll::create_token(
        db,
        "node-1",
        Duration::from_secs(600),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let rest = tests::Rest::new(format!("http://{}", panel.http_addr));
    let (status, body) = rest
        .post(
            "/api/nodes/enroll",
            serde_json::json!({ "token": token, "csr": csr }),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let rows = api::db::entities::audit_log::Entity::find()
        .filter(api::db::entities::audit_log::Column::Action.eq("node.enroll"))
        .all(db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "rejected: issuer_off");
    assert!(
        api::nodes::store::get(db, "node-1")
            .await
            .unwrap()
            .unwrap()
            .fingerprint
            .is_none()
    );
    panel.shutdown().await;
}

crate::on_both_databases!(
    enrolled_by_token_only_pinned_before_it_connects,
    every_refused_enrolment_is_audited_and_issues_nothing,
    join_tokens_over_rest,
);
