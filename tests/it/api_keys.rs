//! Issue 18's API keys over the real REST API of an in-process panel on both databases: a key
//! is shown once, reaches its own tenant only, only with the permissions it was given and its
//! creator's role still grants, stops at expiry and on revocation, is refused on account
//! routes and on key routes, is audited under its own id and is rate-limited on its own.

use reqwest::{Method, StatusCode};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::DbKind;
use tests::rest::Rest;

use crate::accounts::{code, start, start_with};

/// Makes a key in `tid` with `permissions`: the status and the body.
async fn make_key(caller: &Rest, tid: &str, permissions: &[&str]) -> (StatusCode, Value) {
    caller
        .post(
            &format!("/api/tenants/{tid}/api-keys"),
            json!({ "name": "deploy script", "permissions": permissions }),
        )
        .await
}

async fn tenant(owner: &Rest, name: &str) -> String {
    let (status, body) = owner.post("/api/tenants", json!({ "name": name })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn api_keys_reach_their_tenant_and_permissions_only(kind: DbKind) {
    let f = start(kind).await;
    let (owner, _) = f.anon.verified_user(&f.outbox, "ada@example.test").await;
    let tid = tenant(&owner, "Ada's").await;
    let other_tid = tenant(&owner, "Ada's other").await;

    let (status, made) = make_key(&owner, &tid, &["server:read"]).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    let scan = regex::Regex::new(r"^mhp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$").unwrap();
    assert!(scan.is_match(&key), "{key}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["prefix"], format!("mhp_{id}"));

    let script = f.anon.with_token(&key);
    assert_eq!(
        script.get(&format!("/api/tenants/{tid}/servers")).await.0,
        StatusCode::OK
    );
    // A permission it was not given, another tenant of the same creator, account routes and
    // key routes: all refused.
    let (status, body) = script.get(&format!("/api/tenants/{tid}/secrets")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (status, _) = script
        .get(&format!("/api/tenants/{other_tid}/servers"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/api/auth/me", "/api/auth/sessions", "/api/tenants"] {
        assert_eq!(script.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = make_key(&script, &tid, &["server:read"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        script.get(&format!("/api/tenants/{tid}/api-keys")).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = script
        .post(
            "/api/auth/password",
            json!({ "current_password": "x", "new_password": "y" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A wrong secret with a real id, and garbage: 401.
    let forged = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('A') { 'B' } else { 'A' }
    );
    for bad in [forged.as_str(), "mhp_nothing", "mhp_0123456789abcdef_short"] {
        let (status, body) = f
            .anon
            .with_token(bad)
            .get(&format!("/api/tenants/{tid}/servers"))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{bad}: {body}"
        );
    }

    // Listed without the secret; audited under the key's own id.
    let (status, list) = owner.get(&format!("/api/tenants/{tid}/api-keys")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.to_string().contains(&key[21..]), "{list}");
    assert_eq!(list["items"][0]["prefix"], format!("mhp_{id}"));
    assert!(!list["items"][0]["last_used_at"].is_null(), "{list}");
    let (_, audit) = owner
        .get(&format!("/api/tenants/{tid}/audit?limit=200"))
        .await;
    let denied = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "authz.denied" && r["actor"] == format!("apikey:{id}"));
    assert!(denied.is_some(), "{audit}");
    assert!(!audit.to_string().contains(&key[21..]));

    // Never more than the creator holds: a member cannot give a key `secret:read`.
    let (member, member_id) = f.anon.verified_user(&f.outbox, "bo@example.test").await;
    let (status, _) = owner
        .post(
            &format!("/api/tenants/{tid}/members"),
            json!({ "email": "bo@example.test", "role": "admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, made) = make_key(&member, &tid, &["secret:read", "server:read"]).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let admins_key = f.anon.with_token(made["key"].as_str().unwrap());
    // Memberships are people's business: a key given `member:manage` still cannot add,
    // promote, remove or invite anyone (it could hand a stranger more than the key holds).
    let (status, made) = make_key(&member, &tid, &["member:manage", "member:read"]).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let manager = f.anon.with_token(made["key"].as_str().unwrap());
    assert_eq!(
        manager.get(&format!("/api/tenants/{tid}/members")).await.0,
        StatusCode::OK
    );
    for (method, path, body) in [
        (
            Method::POST,
            format!("/api/tenants/{tid}/members"),
            json!({ "email": "mallory@example.test", "role": "admin" }),
        ),
        (
            Method::POST,
            format!("/api/tenants/{tid}/invitations"),
            json!({ "email": "mallory@example.test", "role": "admin" }),
        ),
        (
            Method::PATCH,
            format!("/api/tenants/{tid}/members/{member_id}"),
            json!({ "role": "owner" }),
        ),
    ] {
        let (status, body) = manager.call(method, &path, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    assert_eq!(
        admins_key
            .get(&format!("/api/tenants/{tid}/secrets"))
            .await
            .0,
        StatusCode::OK
    );
    // The creator is demoted: the key shrinks with them; removed: it stops.
    let member_path = format!("/api/tenants/{tid}/members/{member_id}");
    let (status, _) = owner
        .call(
            Method::PATCH,
            &member_path,
            Some(json!({ "role": "member" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        admins_key
            .get(&format!("/api/tenants/{tid}/secrets"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admins_key
            .get(&format!("/api/tenants/{tid}/servers"))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = make_key(&member, &tid, &["secret:read"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A member lists only their own keys.
    let (_, own) = member.get(&format!("/api/tenants/{tid}/api-keys")).await;
    assert_eq!(own["items"].as_array().unwrap().len(), 2, "{own}");
    // Removed, the member's keys go with them: added back, they get none of them again.
    assert_eq!(
        owner.call(Method::DELETE, &member_path, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _) = owner
        .post(
            &format!("/api/tenants/{tid}/members"),
            json!({ "email": "bo@example.test", "role": "admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        admins_key
            .get(&format!("/api/tenants/{tid}/servers"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // An account taken back (its password changed) keeps no key an intruder made.
    let (status, made) = make_key(&member, &tid, &["server:read"]).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let intruders = f.anon.with_token(made["key"].as_str().unwrap());
    let (status, body) = member
        .post(
            "/api/auth/password",
            json!({ "current_password": tests::rest::PASSWORD, "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        intruders
            .get(&format!("/api/tenants/{tid}/servers"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Expiry: in the past is refused; a key whose time has come stops.
    let (status, body) = owner
        .post(
            &format!("/api/tenants/{tid}/api-keys"),
            json!({ "name": "old", "permissions": ["server:read"], "expires_at": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, made) = owner
        .post(
            &format!("/api/tenants/{tid}/api-keys"),
            json!({ "name": "soon", "permissions": ["server:read"], "expires_at": soon }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let expiring = f.anon.with_token(made["key"].as_str().unwrap());
    assert_eq!(
        expiring.get(&format!("/api/tenants/{tid}/servers")).await.0,
        StatusCode::OK
    );
    // The hour passes: moved back in the database rather than waited for.
    let db = sea_orm::Database::connect(&f.db_url).await.unwrap();
    use api::db::entities::api_key;
    api_key::Entity::update_many()
        .col_expr(
            api_key::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(api_key::Column::Id.eq(made["id"].as_str().unwrap()))
        .exec(&db)
        .await
        .unwrap();
    let (status, body) = expiring.get(&format!("/api/tenants/{tid}/servers")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Revoked: stops at its next request.
    let path = format!("/api/tenants/{tid}/api-keys/{id}");
    assert_eq!(
        owner.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        script.get(&format!("/api/tenants/{tid}/servers")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        owner.call(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    drop(f.panel);
}

async fn api_keys_are_rate_limited_per_key(kind: DbKind) {
    let limits = api::config::RateLimits::parse(
        "login=1000/1m,register=1000/1m,password_reset=1000/1m,verify=1000/1m,api=12/1m",
    )
    .unwrap();
    let f = start_with(kind, limits).await;
    let (owner, _) = f.anon.verified_user(&f.outbox, "cy@example.test").await;
    let tid = tenant(&owner, "Cy's").await;
    let (_, made) = make_key(&owner, &tid, &["server:read"]).await;
    let script = f.anon.with_token(made["key"].as_str().unwrap());
    let mut statuses = Vec::new();
    for _ in 0..13 {
        statuses.push(script.get(&format!("/api/tenants/{tid}/servers")).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // The creator's own calls count apart from the key's.
    assert_eq!(
        owner.get(&format!("/api/tenants/{tid}")).await.0,
        StatusCode::OK
    );
    drop(f.panel);
}

crate::on_both_databases!(
    api_keys_reach_their_tenant_and_permissions_only,
    api_keys_are_rate_limited_per_key,
);
