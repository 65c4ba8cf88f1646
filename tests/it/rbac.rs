//! Authorisation through the real REST API (in-process panel, a simulated node that obeys):
//! the route table declares access for every route; every role × every tenant route gives the
//! status the `authz` table says; a user of another tenant using this tenant's ids gets 404 and
//! changes nothing; the last owner stays; a demoted admin loses access on the next request; a
//! command nobody acks is marked failed and the server's state stays the truth.

use std::time::Duration;

use api::http::{Access, Route};
use authz::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{DbKind, Rest, dial, eventually, sim};

const CAP: Duration = Duration::from_secs(20);

struct World {
    _dir: tempfile::TempDir,
    panel: api::Panel,
    rest: Rest,
    outbox: std::path::PathBuf,
}

impl World {
    async fn start(kind: DbKind, ack: bool) -> World {
        let (dir, pki, mut config) = tests::roomy_setup(kind).await;
        config.command_timeout = Duration::from_secs(1);
        let outbox = config.security.outbox_dir.clone();
        let panel = api::Panel::start(config).await.unwrap();
        tests::node_and_sleeper(&panel.state().db).await;
        let cert = pki.node("node-1");
        let client = dial(panel.grpc_addr, &pki.ca_certs(), Some(cert.identity()), 5)
            .await
            .unwrap();
        sim::obey(client, ack, Duration::from_secs(1));
        let rest = Rest::new(format!("http://{}", panel.http_addr));
        World {
            _dir: dir,
            panel,
            rest,
            outbox,
        }
    }

    async fn user(&self, email: &str) -> (Rest, String) {
        self.rest.verified_user(&self.outbox, email).await
    }
}

/// A tenant with a founding owner, a server on the node (installed) and a started+stopped
/// command history.
struct Tenant {
    backup: String,
    id: String,
    owner: Rest,
    server: String,
    command: String,
}

async fn tenant(world: &World, owner: &Rest, name: &str) -> Tenant {
    let (status, body) = owner.post("/api/tenants", json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = owner
        .post(
            &format!("/api/tenants/{id}/servers"),
            json!({"name": "srv", "node_id": "node-1", "template": "sleeper"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let server = body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/tenants/{id}/servers/{server}");
    eventually("installed", CAP, || async {
        owner.get(&path).await.1["state"] == "offline"
    })
    .await;
    let (status, body) = owner
        .post(&format!("{path}/power"), json!({"action": "start"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = body["command_id"].as_str().unwrap().to_owned();
    eventually("running", CAP, || async {
        owner.get(&path).await.1["state"] == "running"
    })
    .await;
    let (status, body) = owner
        .call(
            Method::PUT,
            &format!("/api/tenants/{id}/secrets/db"),
            Some(json!({"value": "hunter2"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = owner.post(&format!("{path}/backups"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let backup = body["id"].as_str().unwrap().to_owned();
    eventually("backup completed", CAP, || async {
        owner.get(&format!("{path}/backups")).await.1["items"][0]["state"] == "completed"
    })
    .await;
    let _ = world;
    Tenant {
        backup,
        id,
        owner: owner.clone(),
        server,
        command,
    }
}

async fn add_member(tenant: &Tenant, email: &str, role: &str) {
    let (status, body) = tenant
        .owner
        .post(
            &format!("/api/tenants/{}/members", tenant.id),
            json!({"email": email, "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A pending invitation of the tenant (by its owner) and an API key of `caller` in it: the ids
/// the invitation and key routes take.
async fn invitation_and_key(t: &Tenant, caller: &Rest, name: &str) -> (String, String) {
    let (status, invitation) = t
        .owner
        .post(
            &format!("/api/tenants/{}/invitations", t.id),
            json!({"email": format!("invitee-{name}@example.com"), "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{invitation}");
    // Every role may make keys for itself (holding what the role grants).
    let (status, key) = caller
        .post(
            &format!("/api/tenants/{}/api-keys", t.id),
            json!({"name": "own", "permissions": ["server:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    (id(&invitation), id(&key))
}

/// The example request of a tenant route: the path filled in, a body that succeeds for a
/// caller allowed to make it, and the success status.
fn example(
    route: &Route,
    ids: &Ids,
    fresh_email: &str,
) -> (Method, String, Option<Value>, StatusCode) {
    let path = route
        .path
        .replace("{tid}", &ids.tenant)
        .replace("{sid}", &ids.server)
        .replace("{cid}", &ids.command)
        .replace("{uid}", &ids.member)
        .replace("{bid}", &ids.backup)
        .replace("{iid}", &ids.invitation)
        .replace("{kid}", &ids.key)
        .replace("{name}", "db");
    // The file content routes take the file's path as a query.
    let path = if route.path.ends_with("/files/content") {
        format!("{path}?path=/f")
    } else {
        path
    };
    let method = Method::from_bytes(route.method.as_bytes()).unwrap();
    let (body, ok) = match (route.method, route.path) {
        ("GET", _) => (None, StatusCode::OK),
        ("DELETE", "/api/tenants/{tid}/members/{uid}") => (None, StatusCode::NO_CONTENT),
        ("DELETE", "/api/tenants/{tid}/secrets/{name}") => (None, StatusCode::NO_CONTENT),
        ("DELETE", "/api/tenants/{tid}/invitations/{iid}") => (None, StatusCode::NO_CONTENT),
        ("DELETE", "/api/tenants/{tid}/api-keys/{kid}") => (None, StatusCode::NO_CONTENT),
        ("POST", "/api/tenants/{tid}/invitations") => (
            Some(json!({"email": format!("invited-{fresh_email}"), "role": "member"})),
            StatusCode::ACCEPTED,
        ),
        ("POST", "/api/tenants/{tid}/api-keys") => (
            Some(json!({"name": "ci", "permissions": ["server:read"]})),
            StatusCode::CREATED,
        ),
        ("DELETE", "/api/tenants/{tid}/servers/{sid}/backups/{bid}") => {
            (None, StatusCode::NO_CONTENT)
        }
        ("POST", "/api/tenants/{tid}/servers/{sid}/backups") => {
            (Some(json!({"name": "nightly"})), StatusCode::ACCEPTED)
        }
        ("POST", "/api/tenants/{tid}/servers/{sid}/backups/{bid}/restore") => {
            (None, StatusCode::ACCEPTED)
        }
        ("PUT", "/api/tenants/{tid}/secrets/{name}") => {
            (Some(json!({"value": "s3cret"})), StatusCode::NO_CONTENT)
        }
        ("DELETE", _) => (None, StatusCode::ACCEPTED),
        ("POST", "/api/tenants/{tid}/members") => (
            Some(json!({"email": fresh_email, "role": "member"})),
            StatusCode::CREATED,
        ),
        ("PATCH", "/api/tenants/{tid}/members/{uid}") => {
            (Some(json!({"role": "support"})), StatusCode::OK)
        }
        ("POST", "/api/tenants/{tid}/servers") => (
            Some(json!({"name": "new", "node_id": "node-1", "template": "sleeper"})),
            StatusCode::CREATED,
        ),
        ("PATCH", "/api/tenants/{tid}/servers/{sid}") => {
            (Some(json!({"name": "renamed"})), StatusCode::OK)
        }
        ("POST", "/api/tenants/{tid}/servers/{sid}/console") => {
            (Some(json!({"line": "say hi"})), StatusCode::NO_CONTENT)
        }
        ("POST", "/api/tenants/{tid}/servers/{sid}/power") => {
            (Some(json!({"action": "restart"})), StatusCode::ACCEPTED)
        }
        ("PUT", "/api/tenants/{tid}/servers/{sid}/files/content") => (None, StatusCode::CREATED),
        ("POST", p) if p.ends_with("/files/mkdir") => {
            (Some(json!({"path": "/d"})), StatusCode::NO_CONTENT)
        }
        ("POST", p) if p.ends_with("/files/rename") => (
            Some(json!({"from": "/a", "to": "/b"})),
            StatusCode::NO_CONTENT,
        ),
        ("POST", p) if p.ends_with("/files/delete") => {
            (Some(json!({"paths": ["/a"]})), StatusCode::NO_CONTENT)
        }
        ("POST", p) if p.ends_with("/files/chmod") => (
            Some(json!({"path": "/a", "mode": 420})),
            StatusCode::NO_CONTENT,
        ),
        ("POST", p) if p.ends_with("/files/compress") => (
            Some(json!({"paths": ["/a"], "into": "/a.tar.gz"})),
            StatusCode::NO_CONTENT,
        ),
        ("POST", p) if p.ends_with("/files/decompress") => (
            Some(json!({"path": "/a.tar.gz", "into": "/"})),
            StatusCode::NO_CONTENT,
        ),
        other => panic!("no example request for {other:?}: add one to the matrix"),
    };
    (method, path, body, ok)
}

struct Ids {
    backup: String,
    invitation: String,
    key: String,
    tenant: String,
    server: String,
    command: String,
    member: String,
}

/// Makes the request; an event stream is opened and closed (its status is what counts).
async fn status_of(rest: &Rest, method: Method, path: &str, body: Option<Value>) -> StatusCode {
    if path.ends_with("/events") {
        return match rest.events(path).await {
            Ok(_) => StatusCode::OK,
            Err((status, _)) => status,
        };
    }
    rest.call(method, path, body).await.0
}

/// Tenant routes, destructive ones last.
fn tenant_routes() -> Vec<Route> {
    let mut routes: Vec<Route> = api::http::routes()
        .into_iter()
        .filter(|r| matches!(r.access, Access::Tenant(_)))
        .collect();
    routes.sort_by_key(|r| match (r.method, r.path) {
        ("DELETE", "/api/tenants/{tid}") => 3,
        ("DELETE", p) if p.ends_with("{sid}") => 2,
        ("DELETE", _) => 1,
        _ => 0,
    });
    routes
}

#[test]
fn every_route_declares_its_access() {
    let routes = api::http::routes();
    let public_ok = [
        "/health",
        "/metrics",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/api/auth/register",
        "/api/auth/verify-email",
        "/api/auth/resend-verification",
        "/api/auth/login",
        "/api/auth/login/mfa",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/password-reset",
        "/api/auth/password-reset/confirm",
        // A node's first certificate: the join token in the body is its credential.
        "/api/nodes/enroll",
    ];
    for route in &routes {
        match route.access {
            Access::Public => assert!(
                public_ok.contains(&route.path),
                "{} {} is public: declare its access",
                route.method,
                route.path
            ),
            Access::Tenant(permissions) => {
                assert!(route.path.starts_with("/api/tenants/{tid}"), "{route:?}");
                assert!(!permissions.is_empty(), "{route:?} names no permission");
            }
            Access::PlatformAdmin => assert!(route.path.starts_with("/api/admin/"), "{route:?}"),
            Access::Authenticated | Access::Verified => {}
        }
        if route.path.starts_with("/api/tenants/{tid}") {
            assert!(matches!(route.access, Access::Tenant(_)), "{route:?}");
        }
        if route.path.starts_with("/api/admin/") {
            assert_eq!(route.access, Access::PlatformAdmin, "{route:?}");
        }
    }
    let mut seen = std::collections::HashSet::new();
    for route in &routes {
        assert!(seen.insert((route.method, route.path)), "{route:?} twice");
    }
}

async fn role_matrix(kind: DbKind) {
    let world = World::start(kind, true).await;
    let (founder, _) = world.user("founder@example.com").await;
    for role in Role::ALL {
        let name = role.as_str();
        let (caller, _) = world.user(&format!("{name}@example.com")).await;
        let (_, victim_id) = world.user(&format!("victim-{name}@example.com")).await;
        world.user(&format!("fresh-{name}@example.com")).await;
        let t = tenant(&world, &founder, name).await;
        add_member(&t, &format!("{name}@example.com"), name).await;
        add_member(&t, &format!("victim-{name}@example.com"), "member").await;
        let (invitation, key) = invitation_and_key(&t, &caller, name).await;
        let ids = Ids {
            backup: t.backup.clone(),
            invitation,
            key,
            tenant: t.id.clone(),
            server: t.server.clone(),
            command: t.command.clone(),
            member: victim_id,
        };
        for route in tenant_routes() {
            let (method, path, body, ok) =
                example(&route, &ids, &format!("fresh-{name}@example.com"));
            let Access::Tenant(permissions) = route.access else {
                unreachable!()
            };
            let allowed = permissions.iter().any(|&p| role.grants(p));
            let expected = if allowed { ok } else { StatusCode::FORBIDDEN };
            let got = status_of(&caller, method, &path, body).await;
            assert_eq!(
                got, expected,
                "{name}: {} {} (permissions {permissions:?})",
                route.method, route.path
            );
        }
    }
    // Denials were audited in the tenant's log.
    let db = &world.panel.state().db;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let denied = api::db::entities::audit_log::Entity::find()
        .filter(api::db::entities::audit_log::Column::Outcome.eq("rejected: forbidden"))
        .all(db)
        .await
        .unwrap();
    assert!(denied.iter().all(|r| r.tenant_id.is_some()));
    assert!(!denied.is_empty());
}

async fn snapshot(t: &Tenant) -> Vec<Value> {
    let base = format!("/api/tenants/{}", t.id);
    let mut out = Vec::new();
    for path in [
        base.clone(),
        format!("{base}/members"),
        format!("{base}/servers"),
        format!("{base}/audit"),
        format!("{base}/invitations"),
        format!("{base}/api-keys"),
    ] {
        let (status, body) = t.owner.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        out.push(body);
    }
    out
}

async fn other_tenants_ids_are_not_found(kind: DbKind) {
    let world = World::start(kind, true).await;
    let (alice, _) = world.user("alice@example.com").await;
    let (bob, _) = world.user("bob@example.com").await;
    let (_, member_a) = world.user("member-a@example.com").await;
    world.user("fresh@example.com").await;
    let a = tenant(&world, &alice, "A").await;
    add_member(&a, "member-a@example.com", "member").await;
    let b = tenant(&world, &bob, "B").await;
    let (invitation, key) = invitation_and_key(&a, &alice, "a").await;
    let before = snapshot(&a).await;
    let theirs = Ids {
        backup: a.backup.clone(),
        invitation: invitation.clone(),
        key: key.clone(),
        tenant: a.id.clone(),
        server: a.server.clone(),
        command: a.command.clone(),
        member: member_a.clone(),
    };
    let mixed = Ids {
        backup: a.backup.clone(),
        invitation,
        key,
        tenant: b.id.clone(),
        server: a.server.clone(),
        command: a.command.clone(),
        member: member_a.clone(),
    };
    for route in tenant_routes() {
        // Tenant A's ids outright: A's existence is not even confirmed.
        let (method, path, body, _) = example(&route, &theirs, "fresh@example.com");
        let got = status_of(&bob, method, &path, body).await;
        assert_eq!(got, StatusCode::NOT_FOUND, "{} {path}", route.method);
        // A's server, command or member under B's own tenant.
        if ["{sid}", "{uid}", "{iid}", "{kid}"]
            .iter()
            .any(|p| route.path.contains(p))
        {
            let (method, path, body, _) = example(&route, &mixed, "fresh@example.com");
            let got = status_of(&bob, method, &path, body).await;
            assert_eq!(got, StatusCode::NOT_FOUND, "{} {path}", route.method);
        }
    }
    assert_eq!(snapshot(&a).await, before, "nothing in tenant A changed");
    // Not-a-member probes are audited platform-wide, not in A's log.
    let (status, _) = bob.get(&format!("/api/tenants/{}/audit", a.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // And a non-admin is refused every admin route.
    for route in api::http::routes()
        .into_iter()
        .filter(|r| r.access == Access::PlatformAdmin)
    {
        let path = route.path.replace("{id}", "node-1");
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let body = (route.method == "POST").then(|| json!({}));
        assert_eq!(
            bob.call(method, &path, body).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // Malformed ids are 400, not 404 or 500.
    let (status, body) = bob.get("/api/tenants/not-a-uuid/servers").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn last_owner_and_demotion(kind: DbKind) {
    let world = World::start(kind, true).await;
    let (alice, alice_id) = world.user("alice@example.com").await;
    let (carol, carol_id) = world.user("carol@example.com").await;
    let t = tenant(&world, &alice, "A").await;
    let members = format!("/api/tenants/{}/members", t.id);
    let (status, body) = alice
        .call(
            Method::PATCH,
            &format!("{members}/{alice_id}"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "the last owner: {body}");
    let (status, _) = alice
        .call(Method::DELETE, &format!("{members}/{alice_id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    add_member(&t, "carol@example.com", "admin").await;
    // An admin cannot make anyone owner nor touch the owner.
    let (status, _) = carol
        .call(
            Method::PATCH,
            &format!("{members}/{alice_id}"),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = carol
        .call(
            Method::PATCH,
            &format!("{members}/{carol_id}"),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(carol.get(&members).await.0, StatusCode::OK);
    // Demoted: the very next request with the same token is refused.
    let (status, _) = alice
        .call(
            Method::PATCH,
            &format!("{members}/{carol_id}"),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(carol.get(&members).await.0, StatusCode::FORBIDDEN);
    // Removed: the tenant is gone for her.
    let (status, _) = alice
        .call(Method::DELETE, &format!("{members}/{carol_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        carol.get(&format!("/api/tenants/{}", t.id)).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, me) = carol.get("/api/auth/me").await;
    assert_eq!(me["memberships"], json!([]));
    // Two owners: one may step down.
    add_member(&t, "carol@example.com", "owner").await;
    let (status, _) = alice
        .call(
            Method::PATCH,
            &format!("{members}/{alice_id}"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn unacked_commands_fail_and_state_stays_true(kind: DbKind) {
    let world = World::start(kind, false).await;
    let (alice, _) = world.user("alice@example.com").await;
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "A"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let (status, server) = alice
        .post(
            &servers,
            json!({"name": "s", "node_id": "node-1", "template": "sleeper"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{server}");
    let path = format!("{servers}/{}", server["id"].as_str().unwrap());
    let db = &world.panel.state().db;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let install = || async {
        api::db::entities::command::Entity::find()
            .filter(api::db::entities::command::Column::ServerId.eq(server["id"].as_str().unwrap()))
            .one(db)
            .await
            .unwrap()
            .unwrap()
    };
    eventually("the unacked install failed", CAP, || async {
        install().await.state == api::db::entities::states::CommandState::Failed
    })
    .await;
    assert!(install().await.error.unwrap().contains("no ack"));
    assert_eq!(alice.get(&path).await.1["state"], "installing");
    // The node goes away: power actions are 409 node_offline.
    world
        .panel
        .state()
        .registry
        .kick("node-1", api::nodes::Kick::Disabled);
    eventually("node offline", CAP, || async {
        !world.panel.state().registry.is_online("node-1")
    })
    .await;
    let (status, body) = alice
        .post(
            &servers,
            json!({"name": "s2", "node_id": "node-1", "template": "sleeper"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "node_offline");
}

async fn ports_and_console_input(kind: DbKind) {
    let world = World::start(kind, true).await;
    let db = &world.panel.state().db;
    api::nodes::store::set_ports(db, "node-1", (30000, 30009))
        .await
        .unwrap();
    api::templates::create(
        db,
        api::templates::NewTemplate {
            sensitive_input: true,
            limits: Default::default(),
            name: "secretive".into(),
            command: "sleep".into(),
            args: vec!["--port={{SERVER_PORT}}".into()],
            variables: vec![],
        },
    )
    .await
    .unwrap();
    let (alice, _) = world.user("alice@example.com").await;
    let (_, tenant) = alice.post("/api/tenants", json!({"name": "A"})).await;
    let servers = format!("/api/tenants/{}/servers", tenant["id"].as_str().unwrap());
    let create = |name: String| {
        let (alice, servers) = (alice.clone(), servers.clone());
        async move {
            alice
                .post(
                    &servers,
                    json!({"name": name, "node_id": "node-1", "template": "secretive"}),
                )
                .await
        }
    };
    let mut ports = Vec::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, body) = create(format!("s{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ports.push(body["port"].as_i64().unwrap());
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (30000..30010).collect::<Vec<_>>(),
        "ten distinct ports of the range"
    );
    for i in 10..20 {
        let (status, body) = create(format!("s{i}")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "no_free_port");
    }
    let (status, _) = alice
        .call(Method::DELETE, &format!("{servers}/{}", ids[3]), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = create("again".into()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["port"], ports[3], "the freed port is taken again");

    // Console input: 409 unless running; sensitive input is audited without its content.
    let server = format!("{servers}/{}", ids[0]);
    eventually("installed", CAP, || async {
        alice.get(&server).await.1["state"] == "offline"
    })
    .await;
    let line = json!({"line": "login hunter2"});
    let (status, _) = alice.post(&format!("{server}/console"), line.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "not running");
    alice
        .post(&format!("{server}/power"), json!({"action": "start"}))
        .await;
    eventually("running", CAP, || async {
        alice.get(&server).await.1["state"] == "running"
    })
    .await;
    let (status, body) = alice
        .post(&format!("{server}/console"), json!({"line": "a\nb"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = alice.post(&format!("{server}/console"), line).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, audit) = alice
        .get(&format!(
            "/api/tenants/{}/audit",
            tenant["id"].as_str().unwrap()
        ))
        .await;
    let row = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "server.console")
        .cloned()
        .unwrap();
    assert_eq!(row["details"]["sensitive"], true, "{row}");
    assert!(!audit.to_string().contains("hunter2"), "{audit}");
}

crate::on_both_databases!(
    ports_and_console_input,
    role_matrix,
    other_tenants_ids_are_not_found,
    last_owner_and_demotion,
    unacked_commands_fail_and_state_stays_true
);
