//! `GET /openapi.json` over real HTTP: it is JSON, its operations are exactly the route table's
//! (both ways), and the answers of a real panel — with a platform admin, a connected node that
//! obeys, a tenant, a member, a server, a backup and a secret — conform to it: every status is
//! documented, 2xx ones explicitly, with the documented content type and a body valid against
//! the documented schema.

use std::collections::BTreeSet;
use std::time::Duration;

use api::db::entities::command;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::rest::PASSWORD;
use tests::{DbKind, TestPki, dial, eventually};

const CAP: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    pki: TestPki,
    panel: api::Panel,
    outbox: std::path::PathBuf,
}

async fn start(kind: DbKind) -> Fixture {
    let (dir, pki, mut config) = tests::roomy_setup(kind).await;
    config.node_identity = pki.issuer(Duration::from_secs(30 * 86_400));
    let outbox = config.security.outbox_dir.clone();
    let panel = api::Panel::start(config).await.unwrap();
    Fixture {
        _dir: dir,
        pki,
        panel,
        outbox,
    }
}

async fn served_document(panel: &api::Panel) -> Value {
    let response = reqwest::get(format!("http://{}/openapi.json", panel.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_route_table() {
    let f = start(DbKind::Sqlite).await;
    let doc = served_document(&f.panel).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routes: BTreeSet<(String, String)> = api::http::routes()
        .iter()
        .map(|r| (r.method.to_ascii_lowercase(), r.path.to_owned()))
        .collect();
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        routes.difference(&listed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes missing from the document"
    );
    assert_eq!(
        listed.difference(&routes).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations that are not routes"
    );
    assert_eq!(doc, api::http::document(), "served as built");
    f.panel.shutdown().await;
}

/// `METHOD path` of every operation of `doc`, sorted.
fn operation_set(doc: &Value) -> Vec<String> {
    let mut listed: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |method| format!("{} {path}", method.to_ascii_uppercase()))
        })
        .collect();
    listed.sort();
    listed
}

/// The operations of the document are those it listed before it was derived with utoipa
/// (`fixtures/operations.txt`, captured from the hand-written document's `/openapi.json`),
/// plus the file manager's, which landed beside it (`fixtures/files-operations.txt`).
#[test]
fn the_operation_set_is_the_one_before() {
    let before: Vec<&str> = include_str!("fixtures/operations.txt").lines().collect();
    assert_eq!(before.len(), 69);
    let files: Vec<&str> = include_str!("fixtures/files-operations.txt")
        .lines()
        .collect();
    let mut expected: Vec<&str> = before.into_iter().chain(files).collect();
    expected.sort_unstable();
    assert_eq!(operation_set(&api::http::document()), expected);
}

/// A client that checks every answer against the served document.
#[derive(Clone)]
struct Checked {
    http: reqwest::Client,
    base: String,
    doc: std::sync::Arc<Value>,
    token: Option<String>,
}

impl Checked {
    fn with_token(&self, token: &Value) -> Checked {
        Checked {
            token: Some(token.as_str().unwrap().to_owned()),
            ..self.clone()
        }
    }

    /// `method template` with the `{…}` segments replaced by `params` in order; panics unless
    /// the answer conforms. Returns the status and the JSON body (null when there is none).
    async fn call(
        &self,
        method: &str,
        template: &str,
        params: &[&str],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut params = params.iter();
        let path: Vec<String> = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    (*params.next().expect("a value per parameter")).to_owned()
                } else {
                    segment.to_owned()
                }
            })
            .collect();
        let url = format!("{}{}", self.base, path.join("/"));
        let mut request = self.http.request(method.parse().unwrap(), url).timeout(CAP);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        if content_type.as_deref() == Some("text/event-stream") {
            let value = conform(&self.doc, method, template, status, content_type, b"")
                .unwrap_or_else(|e| panic!("{method} {template} → {status}: {e}"));
            return (status, value);
        }
        let bytes = response.bytes().await.unwrap();
        let value = conform(&self.doc, method, template, status, content_type, &bytes)
            .unwrap_or_else(|e| {
                panic!(
                    "{method} {template} → {status}: {e}\n{}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        (status, value)
    }

    async fn expect(
        &self,
        expected: StatusCode,
        method: &str,
        template: &str,
        params: &[&str],
        body: Option<Value>,
    ) -> Value {
        let (status, value) = self.call(method, template, params, body).await;
        assert_eq!(status, expected, "{method} {template}: {value}");
        value
    }
}

/// Checks one answer against the document's operation `method template`.
fn conform(
    doc: &Value,
    method: &str,
    template: &str,
    status: StatusCode,
    content_type: Option<String>,
    body: &[u8],
) -> Result<Value, String> {
    let op = &doc["paths"][template][method.to_ascii_lowercase()];
    let responses = op["responses"]
        .as_object()
        .ok_or("no such operation in the document")?;
    let response = match responses.get(status.as_str()) {
        Some(response) => response,
        None if status.is_success() => return Err("a success status not documented".into()),
        None => &responses["default"],
    };
    let response = resolve(doc, response)?;
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if !body.is_empty() {
            return Err("a body where the document has none".into());
        }
        return Ok(Value::Null);
    };
    let media = content_type.ok_or("no content type")?;
    let media = media.split(';').next().unwrap_or_default().trim();
    let entry = content
        .get(media)
        .ok_or_else(|| format!("content type {media} not documented"))?;
    if media != "application/json" {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    validate(doc, &entry["schema"], &value)?;
    Ok(value)
}

fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Result<&'a Value, String> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let found = doc
                .pointer(target.trim_start_matches('#'))
                .ok_or_else(|| format!("{target} does not resolve"))?;
            resolve(doc, found)
        }
        None => Ok(value),
    }
}

/// Validates `value` against `schema` of the document (OpenAPI 3.1: JSON Schema 2020-12) with
/// the `jsonschema` crate, formats asserted: the schema is checked with the document's
/// `components` beside it, so its `#/components/...` references resolve.
fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let mut root = schema.clone();
    let components = doc["components"].clone();
    match &mut root {
        Value::Object(map) => {
            map.insert("components".into(), components);
        }
        other => return Err(format!("the schema is not an object: {other}")),
    }
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("the document's schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The validator refuses what the document does not allow: a missing field, a wrong type, a
/// malformed format; and admits null where the schema is nullable.
#[test]
fn the_validator_refuses_bodies_outside_the_document() {
    let doc = api::http::document();
    let tenant = json!({ "$ref": "#/components/schemas/Tenant" });
    let good = json!({
        "id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b",
        "name": "acme",
        "created_at": "2026-11-28T22:00:00Z",
    });
    validate(&doc, &tenant, &good).unwrap();
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("name");
    assert!(validate(&doc, &tenant, &missing).is_err());
    let mut wrong = good.clone();
    wrong["created_at"] = json!("yesterday");
    assert!(validate(&doc, &tenant, &wrong).is_err());
    wrong = good.clone();
    wrong["name"] = json!(7);
    assert!(validate(&doc, &tenant, &wrong).is_err());
    let session = json!({ "$ref": "#/components/schemas/Session" });
    let mut row = json!({
        "id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b",
        "created_at": "2026-11-28T22:00:00Z",
        "last_used_at": null,
        "ip": null,
        "user_agent": null,
        "current": true,
    });
    validate(&doc, &session, &row).unwrap();
    row["id"] = json!("not-a-uuid");
    assert!(validate(&doc, &session, &row).is_err());
}

async fn register(anon: &Checked, outbox: &std::path::Path, email: &str) -> Value {
    let body = json!({ "email": email, "password": PASSWORD, "name": null });
    anon.expect(
        StatusCode::CREATED,
        "POST",
        "/api/auth/register",
        &[],
        Some(body),
    )
    .await;
    let token = tests::mail::outbox_for(outbox, email)
        .last()
        .and_then(tests::mail::Mail::token)
        .unwrap();
    let body = json!({ "token": token });
    let verified = anon
        .expect(
            StatusCode::OK,
            "POST",
            "/api/auth/verify-email",
            &[],
            Some(body),
        )
        .await;
    assert_eq!(verified["user"]["email_verified"], true);
    let body = json!({ "email": email, "password": PASSWORD });
    anon.expect(StatusCode::OK, "POST", "/api/auth/login", &[], Some(body))
        .await
}

async fn answers_conform_to_the_document(kind: DbKind) {
    use StatusCode as S;
    let f = start(kind).await;
    let anon = Checked {
        http: reqwest::Client::new(),
        base: format!("http://{}", f.panel.http_addr),
        doc: std::sync::Arc::new(served_document(&f.panel).await),
        token: None,
    };
    let db = &f.panel.state().db;
    let outbox = f.outbox.as_path();

    // Public routes and refusals of anonymous callers.
    anon.expect(S::OK, "GET", "/health", &[], None).await;
    anon.expect(S::OK, "GET", "/metrics", &[], None).await;
    anon.expect(S::OK, "GET", "/.well-known/jwks.json", &[], None)
        .await;
    anon.expect(S::UNAUTHORIZED, "GET", "/api/auth/me", &[], None)
        .await;
    let weak = json!({ "email": "weak@example.com", "password": "short" });
    anon.expect(
        S::BAD_REQUEST,
        "POST",
        "/api/auth/register",
        &[],
        Some(weak),
    )
    .await;
    let email = json!({ "email": "nobody@example.com" });
    for path in ["/api/auth/resend-verification", "/api/auth/password-reset"] {
        anon.expect(S::ACCEPTED, "POST", path, &[], Some(email.clone()))
            .await;
    }
    let confirm = json!({ "token": "nope", "new_password": PASSWORD });
    let path = "/api/auth/password-reset/confirm";
    anon.expect(S::BAD_REQUEST, "POST", path, &[], Some(confirm))
        .await;
    let wrong = json!({ "email": "nobody@example.com", "password": PASSWORD });
    anon.expect(S::UNAUTHORIZED, "POST", "/api/auth/login", &[], Some(wrong))
        .await;

    // Accounts: alice becomes a platform admin; bob a member of her tenant.
    let pair = register(&anon, outbox, "alice@example.com").await;
    let body = json!({ "email": "alice@example.com", "password": PASSWORD });
    anon.expect(S::CONFLICT, "POST", "/api/auth/register", &[], Some(body))
        .await;
    let body = json!({ "refresh_token": pair["refresh_token"] });
    let pair = anon
        .expect(S::OK, "POST", "/api/auth/refresh", &[], Some(body))
        .await;
    let alice = anon.with_token(&pair["access_token"]);
    let bob_pair = register(&anon, outbox, "bob@example.com").await;
    let bob = anon.with_token(&bob_pair["access_token"]);
    api::identity::grant_platform_admin(db, "alice@example.com")
        .await
        .unwrap();
    let me = alice.expect(S::OK, "GET", "/api/auth/me", &[], None).await;
    let bob_id = bob.expect(S::OK, "GET", "/api/auth/me", &[], None).await["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me["memberships"], json!([]));
    alice
        .expect(S::OK, "GET", "/api/permissions", &[], None)
        .await;
    bob.expect(S::FORBIDDEN, "GET", "/api/admin/nodes", &[], None)
        .await;

    // Account: sessions and password change.
    let sessions = alice
        .expect(S::OK, "GET", "/api/auth/sessions", &[], None)
        .await;
    let alice_sid = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    let path = "/api/auth/sessions/{id}";
    bob.expect(S::NOT_FOUND, "DELETE", path, &[&alice_sid], None)
        .await;
    bob.expect(S::BAD_REQUEST, "DELETE", path, &["nope"], None)
        .await;
    let body = json!({ "email": "bob@example.com", "password": PASSWORD });
    anon.expect(S::OK, "POST", "/api/auth/login", &[], Some(body))
        .await;
    let sessions = bob
        .expect(S::OK, "GET", "/api/auth/sessions", &[], None)
        .await;
    let other = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.expect(S::NO_CONTENT, "DELETE", path, &[&other], None)
        .await;
    let body =
        json!({ "current_password": "not the password", "new_password": "a fine new passphrase" });
    bob.expect(
        S::UNAUTHORIZED,
        "POST",
        "/api/auth/password",
        &[],
        Some(body),
    )
    .await;
    let body = json!({ "current_password": PASSWORD, "new_password": "qwerty123456" });
    bob.expect(
        S::BAD_REQUEST,
        "POST",
        "/api/auth/password",
        &[],
        Some(body),
    )
    .await;

    // Platform: a node with ports that connects and obeys, a template.
    let node = json!({ "id": "node-1", "fqdn": "node1.example.com", "ports": "30000-30009" });
    alice
        .expect(S::CREATED, "POST", "/api/admin/nodes", &[], Some(node))
        .await;
    let template = json!({
        "name": "app",
        "command": "/bin/app",
        "args": ["--motd={{MOTD}}", "--port={{SERVER_PORT}}"],
        "variables": [{ "name": "MOTD", "pattern": ".{0,64}", "default": "hi" }],
        "limits": { "memory_mb": 64 },
    });
    alice
        .expect(
            S::CREATED,
            "POST",
            "/api/admin/templates",
            &[],
            Some(template),
        )
        .await;
    alice
        .expect(S::OK, "GET", "/api/admin/templates", &[], None)
        .await;
    for path in [
        "/api/admin/nodes/{id}/disable",
        "/api/admin/nodes/{id}/enable",
    ] {
        alice.expect(S::OK, "POST", path, &["node-1"], None).await;
    }

    // Node identity: a join token, and enrolment with it (another node: node-1 is pinned at
    // its first connection below).
    let node = json!({ "id": "node-2", "fqdn": "node2.example.com" });
    alice
        .expect(S::CREATED, "POST", "/api/admin/nodes", &[], Some(node))
        .await;
    let tokens = "/api/admin/nodes/{id}/join-tokens";
    let token = alice
        .expect(
            S::CREATED,
            "POST",
            tokens,
            &["node-2"],
            Some(json!({ "ttl_secs": 600 })),
        )
        .await;
    alice
        .expect(S::CREATED, "POST", tokens, &["node-2"], None)
        .await;
    alice
        .expect(S::NOT_FOUND, "POST", tokens, &["node-9"], None)
        .await;
    alice
        .expect(
            S::BAD_REQUEST,
            "POST",
            tokens,
            &["node-2"],
            Some(json!({ "ttl_secs": 1 })),
        )
        .await;
    let (_, csr) = security::pki::node_csr(None).unwrap();
    let enroll = json!({ "token": token["token"], "csr": csr });
    anon.expect(
        S::CREATED,
        "POST",
        "/api/nodes/enroll",
        &[],
        Some(enroll.clone()),
    )
    .await;
    anon.expect(
        S::UNAUTHORIZED,
        "POST",
        "/api/nodes/enroll",
        &[],
        Some(enroll),
    )
    .await;
    let garbage = json!({ "token": "mjt_x", "csr": "garbage" });
    anon.expect(
        S::BAD_REQUEST,
        "POST",
        "/api/nodes/enroll",
        &[],
        Some(garbage),
    )
    .await;
    let rotate = "/api/admin/nodes/{id}/rotate";
    alice
        .expect(S::ACCEPTED, "POST", rotate, &["node-2"], None)
        .await;
    alice
        .expect(S::NOT_FOUND, "POST", rotate, &["node-9"], None)
        .await;
    let client = dial(
        f.panel.grpc_addr,
        &f.pki.ca_certs(),
        Some(f.pki.node("node-1").identity()),
        5,
    )
    .await
    .unwrap();
    let _node = tests::sim::obey(client, true, Duration::from_secs(1));
    eventually("node-1 online", CAP, || async {
        let nodes = alice.expect(S::OK, "GET", "/api/nodes", &[], None).await;
        nodes["items"][0]["online"] == true
    })
    .await;
    alice
        .expect(S::OK, "GET", "/api/admin/nodes/{id}", &["node-1"], None)
        .await;
    alice
        .expect(
            S::NOT_FOUND,
            "GET",
            "/api/admin/nodes/{id}",
            &["node-9"],
            None,
        )
        .await;
    alice
        .expect(S::OK, "GET", "/api/templates", &[], None)
        .await;

    // A tenant and its members.
    let body = json!({ "name": "Acme" });
    let tenant = alice
        .expect(S::CREATED, "POST", "/api/tenants", &[], Some(body))
        .await;
    let tid = tenant["id"].as_str().unwrap().to_owned();
    let tid = tid.as_str();
    alice.expect(S::OK, "GET", "/api/tenants", &[], None).await;
    alice
        .expect(S::OK, "GET", "/api/tenants/{tid}", &[tid], None)
        .await;
    bob.expect(S::NOT_FOUND, "GET", "/api/tenants/{tid}", &[tid], None)
        .await;
    alice
        .expect(
            S::BAD_REQUEST,
            "GET",
            "/api/tenants/{tid}",
            &["not-a-uuid"],
            None,
        )
        .await;
    let members = "/api/tenants/{tid}/members";
    let body = json!({ "email": "bob@example.com", "role": "member" });
    alice
        .expect(S::CREATED, "POST", members, &[tid], Some(body))
        .await;
    alice.expect(S::OK, "GET", members, &[tid], None).await;
    let member = "/api/tenants/{tid}/members/{uid}";
    let body = json!({ "role": "support" });
    alice
        .expect(S::OK, "PATCH", member, &[tid, &bob_id], Some(body))
        .await;
    bob.expect(S::FORBIDDEN, "DELETE", "/api/tenants/{tid}", &[tid], None)
        .await;

    // Secrets.
    let secret = "/api/tenants/{tid}/secrets/{name}";
    let body = json!({ "value": "s3cret" });
    alice
        .expect(
            S::NO_CONTENT,
            "PUT",
            secret,
            &[tid, "db_password"],
            Some(body),
        )
        .await;
    alice
        .expect(S::OK, "GET", "/api/tenants/{tid}/secrets", &[tid], None)
        .await;
    alice
        .expect(S::OK, "GET", secret, &[tid, "db_password"], None)
        .await;
    alice
        .expect(S::NO_CONTENT, "DELETE", secret, &[tid, "db_password"], None)
        .await;
    alice
        .expect(S::NOT_FOUND, "GET", secret, &[tid, "db_password"], None)
        .await;

    // Invitations and API keys.
    let invitations = "/api/tenants/{tid}/invitations";
    let body = json!({ "email": "carol@example.com", "role": "support" });
    let invited = alice
        .expect(S::ACCEPTED, "POST", invitations, &[tid], Some(body))
        .await;
    alice.expect(S::OK, "GET", invitations, &[tid], None).await;
    let iid = invited["id"].as_str().unwrap();
    let withdraw = "/api/tenants/{tid}/invitations/{iid}";
    alice
        .expect(S::NO_CONTENT, "DELETE", withdraw, &[tid, iid], None)
        .await;
    alice
        .expect(S::NOT_FOUND, "DELETE", withdraw, &[tid, iid], None)
        .await;
    let body = json!({ "token": "not a real token" });
    let accept = "/api/invitations/accept";
    bob.expect(S::BAD_REQUEST, "POST", accept, &[], Some(body))
        .await;
    let keys = "/api/tenants/{tid}/api-keys";
    let body = json!({ "name": "ci", "permissions": ["server:read"], "expires_at": null });
    let made = alice
        .expect(S::CREATED, "POST", keys, &[tid], Some(body))
        .await;
    let body = json!({ "name": "too much", "permissions": ["secret:read"] });
    bob.expect(S::FORBIDDEN, "POST", keys, &[tid], Some(body))
        .await;
    alice.expect(S::OK, "GET", keys, &[tid], None).await;
    let script = anon.with_token(&made["key"]);
    script
        .expect(S::FORBIDDEN, "GET", "/api/auth/me", &[], None)
        .await;
    let key = "/api/tenants/{tid}/api-keys/{kid}";
    let kid = made["id"].as_str().unwrap();
    alice
        .expect(S::NO_CONTENT, "DELETE", key, &[tid, kid], None)
        .await;
    alice
        .expect(S::NOT_FOUND, "DELETE", key, &[tid, kid], None)
        .await;

    // A server: made, started, written to, watched, backed up, restored.
    let body = json!({ "name": "web", "node_id": "node-1", "template": "app" });
    let servers = "/api/tenants/{tid}/servers";
    let server = alice
        .expect(S::CREATED, "POST", servers, &[tid], Some(body))
        .await;
    assert!(server["port"].is_i64(), "{server}");
    let sid = server["id"].as_str().unwrap().to_owned();
    let sid = sid.as_str();
    let one = "/api/tenants/{tid}/servers/{sid}";
    eventually("the server installed", CAP, || async {
        let server = alice.expect(S::OK, "GET", one, &[tid, sid], None).await;
        server["state"] == "offline"
    })
    .await;
    alice.expect(S::OK, "GET", servers, &[tid], None).await;
    let body = json!({ "name": "www", "variables": { "MOTD": "hello" } });
    alice
        .expect(S::OK, "PATCH", one, &[tid, sid], Some(body))
        .await;
    let console = "/api/tenants/{tid}/servers/{sid}/console";
    let body = json!({ "line": "say hi" });
    alice
        .expect(
            S::CONFLICT,
            "POST",
            console,
            &[tid, sid],
            Some(body.clone()),
        )
        .await;
    let power = "/api/tenants/{tid}/servers/{sid}/power";
    let start = json!({ "action": "start" });
    let accepted = alice
        .expect(S::ACCEPTED, "POST", power, &[tid, sid], Some(start))
        .await;
    let cid = accepted["command_id"].as_str().unwrap().to_owned();
    let command_path = "/api/tenants/{tid}/servers/{sid}/commands/{cid}";
    eventually("the start acked", CAP, || async {
        let command = alice
            .expect(S::OK, "GET", command_path, &[tid, sid, &cid], None)
            .await;
        command["state"] == "acked"
    })
    .await;
    eventually("the server running", CAP, || async {
        let server = alice.expect(S::OK, "GET", one, &[tid, sid], None).await;
        server["state"] == "running"
    })
    .await;
    alice
        .expect(S::NO_CONTENT, "POST", console, &[tid, sid], Some(body))
        .await;
    let events = "/api/tenants/{tid}/servers/{sid}/events";
    alice.expect(S::OK, "GET", events, &[tid, sid], None).await;
    let backups = "/api/tenants/{tid}/servers/{sid}/backups";
    let backup = alice
        .expect(S::ACCEPTED, "POST", backups, &[tid, sid], Some(json!({})))
        .await;
    let bid = backup["id"].as_str().unwrap().to_owned();
    eventually("the backup completed", CAP, || async {
        let list = alice.expect(S::OK, "GET", backups, &[tid, sid], None).await;
        list["items"][0]["state"] == "completed"
    })
    .await;
    let restore = "/api/tenants/{tid}/servers/{sid}/backups/{bid}/restore";
    alice
        .expect(S::ACCEPTED, "POST", restore, &[tid, sid, &bid], None)
        .await;
    let rows = command::Entity::find()
        .filter(command::Column::ServerId.eq(sid))
        .all(db)
        .await
        .unwrap();
    for row in rows {
        alice
            .expect(S::OK, "GET", command_path, &[tid, sid, &row.id], None)
            .await;
    }
    eventually("the restore reported", CAP, || async {
        let list = alice.expect(S::OK, "GET", backups, &[tid, sid], None).await;
        list["items"][0]["restore_state"] != "restoring"
    })
    .await;
    let backup = "/api/tenants/{tid}/servers/{sid}/backups/{bid}";
    alice
        .expect(S::NO_CONTENT, "DELETE", backup, &[tid, sid, &bid], None)
        .await;
    // Every field of a backup is optional: so is its body.
    alice
        .expect(S::ACCEPTED, "POST", backups, &[tid, sid], None)
        .await;
    alice
        .expect(S::ACCEPTED, "DELETE", one, &[tid, sid], None)
        .await;

    // The second factor: setup, confirm, the login's two steps, turning it off.
    let carol_pair = register(&anon, outbox, "carol@example.com").await;
    let carol = anon.with_token(&carol_pair["access_token"]);
    let setup = carol
        .expect(S::OK, "POST", "/api/auth/totp/setup", &[], None)
        .await;
    let mut app = tests::totp::App::new(setup["secret"].as_str().unwrap());
    let confirm = "/api/auth/totp/confirm";
    let body = json!({ "code": "12345" });
    carol
        .expect(S::BAD_REQUEST, "POST", confirm, &[], Some(body))
        .await;
    let body = json!({ "code": app.next_code().await });
    carol.expect(S::OK, "POST", confirm, &[], Some(body)).await;
    carol
        .expect(S::CONFLICT, "POST", "/api/auth/totp/setup", &[], None)
        .await;
    let body = json!({ "email": "carol@example.com", "password": PASSWORD });
    let challenge = anon
        .expect(S::OK, "POST", "/api/auth/login", &[], Some(body))
        .await;
    let mfa = "/api/auth/login/mfa";
    let body = json!({ "mfa_token": challenge["mfa_token"], "code": app.last_code() });
    anon.expect(S::UNAUTHORIZED, "POST", mfa, &[], Some(body))
        .await;
    let body = json!({ "mfa_token": challenge["mfa_token"] });
    anon.expect(S::BAD_REQUEST, "POST", mfa, &[], Some(body))
        .await;
    let body = json!({ "mfa_token": challenge["mfa_token"], "code": app.next_code().await });
    anon.expect(S::OK, "POST", mfa, &[], Some(body)).await;
    let body = json!({ "password": "not the password", "code": app.next_code().await });
    carol
        .expect(S::UNAUTHORIZED, "DELETE", "/api/auth/totp", &[], Some(body))
        .await;
    let body = json!({ "password": PASSWORD, "code": app.last_code() });
    carol
        .expect(S::NO_CONTENT, "DELETE", "/api/auth/totp", &[], Some(body))
        .await;
    let body = json!({ "password": PASSWORD, "code": app.last_code() });
    carol
        .expect(S::CONFLICT, "DELETE", "/api/auth/totp", &[], Some(body))
        .await;

    // The audit logs, then the ends of memberships, tenants and sessions.
    let audit = "/api/tenants/{tid}/audit";
    let page = alice.expect(S::OK, "GET", audit, &[tid], None).await;
    assert!(!page["items"].as_array().unwrap().is_empty());
    alice
        .expect(S::OK, "GET", "/api/admin/audit", &[], None)
        .await;
    let path = "/api/admin/nodes/{id}/reset-fingerprint";
    alice.expect(S::OK, "POST", path, &["node-1"], None).await;
    alice
        .expect(S::OK, "GET", "/api/admin/nodes", &[], None)
        .await;
    alice
        .expect(S::NO_CONTENT, "DELETE", member, &[tid, &bob_id], None)
        .await;
    alice
        .expect(S::ACCEPTED, "DELETE", "/api/tenants/{tid}", &[tid], None)
        .await;
    let body = json!({ "refresh_token": bob_pair["refresh_token"] });
    anon.expect(S::NO_CONTENT, "POST", "/api/auth/logout", &[], Some(body))
        .await;
    alice
        .expect(S::NO_CONTENT, "POST", "/api/auth/logout-all", &[], None)
        .await;
    alice
        .expect(S::UNAUTHORIZED, "GET", "/api/auth/me", &[], None)
        .await;
    f.panel.shutdown().await;
}

crate::on_both_databases!(answers_conform_to_the_document);

/// The platform lists page like every other list: `?limit=` bounds a page, `next_cursor`
/// continues it, and walking the pages yields every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_lists_page() {
    let f = start(DbKind::Sqlite).await;
    let rest = tests::Rest::new(format!("http://{}", f.panel.http_addr));
    rest.register_verified(&f.outbox, "root@example.com").await;
    api::identity::grant_platform_admin(&f.panel.state().db, "root@example.com")
        .await
        .unwrap();
    let admin = rest.login("root@example.com").await;
    for i in 0..5 {
        let node = json!({ "id": format!("node-{i}"), "fqdn": format!("n{i}.example.com") });
        assert_eq!(
            admin.post("/api/admin/nodes", node).await.0,
            StatusCode::CREATED
        );
        let template = json!({ "name": format!("t{i}"), "command": "/bin/true", "variables": [] });
        let (status, body) = admin.post("/api/admin/templates", template).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for (list, key) in [
        ("/api/admin/nodes", "id"),
        ("/api/nodes", "id"),
        ("/api/admin/templates", "name"),
        ("/api/templates", "name"),
    ] {
        let (mut seen, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let path = match &cursor {
                Some(c) => format!("{list}?limit=2&cursor={c}"),
                None => format!("{list}?limit=2"),
            };
            let (status, page) = admin.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2, "{path}: {page}");
            seen.extend(items.iter().map(|i| i[key].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "{list}: in order, each once");
        assert_eq!(seen.len(), 5, "{list}: {seen:?}");
        let (status, body) = admin.get(&format!("{list}?limit=0")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{list}: {body}");
    }
    f.panel.shutdown().await;
}
