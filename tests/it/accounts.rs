//! Issue 18's account features over the real REST API of an in-process panel on both
//! databases: changing a password (the policy, the current password throttled like a login,
//! other sessions ended and the caller's kept, the notice mailed); listing one's sessions and
//! ending one; and the real `api` binary's `user lock|unlock|revoke-sessions` against the
//! running panel's database.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::rest::{PASSWORD, Rest};
use tests::{DbKind, mail};

/// A password that passes the policy, other than [`PASSWORD`].
const NEW_PASSWORD: &str = "purple otter on a bicycle";

/// An in-process panel on a fresh database, and where its mail goes.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) panel: api::Panel,
    pub(crate) outbox: PathBuf,
    pub(crate) anon: Rest,
    pub(crate) db_url: String,
}

/// [`start_with`] roomy limits.
pub(crate) async fn start(kind: DbKind) -> Fixture {
    start_with(kind, tests::roomy_limits()).await
}

/// A panel on a fresh `kind` database with these rate limits.
pub(crate) async fn start_with(kind: DbKind, limits: api::config::RateLimits) -> Fixture {
    let (dir, _pki, mut config) = tests::roomy_setup(kind).await;
    config.security.rate_limits = limits;
    let outbox = config.security.outbox_dir.clone();
    let db_url = config.database_url.clone();
    let panel = api::Panel::start(config).await.unwrap();
    let anon = Rest::new(format!("http://{}", panel.http_addr));
    Fixture {
        _dir: dir,
        panel,
        outbox,
        anon,
        db_url,
    }
}

/// Logs `email` in with `password`: the token pair.
async fn login(anon: &Rest, email: &str, password: &str) -> (StatusCode, Value) {
    anon.post(
        "/api/auth/login",
        json!({ "email": email, "password": password }),
    )
    .await
}

/// A logged-in session: its client and its refresh token.
async fn session(anon: &Rest, email: &str) -> (Rest, String) {
    let (status, pair) = login(anon, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    (
        anon.with_token(pair["access_token"].as_str().unwrap()),
        pair["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn change(caller: &Rest, current: &str, new: &str) -> (StatusCode, Value) {
    caller
        .post(
            "/api/auth/password",
            json!({ "current_password": current, "new_password": new }),
        )
        .await
}

/// The `error.code` of an error body.
pub(crate) fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

async fn password_change_ends_other_sessions(kind: DbKind) {
    let f = start(kind).await;
    let email = "rosalind@example.test";
    f.anon.register_verified(&f.outbox, email).await;
    let (caller, caller_refresh) = session(&f.anon, email).await;
    let (other, other_refresh) = session(&f.anon, email).await;

    // The policy, on change as on registration: length, the common list, the email.
    for weak in [
        "short one",
        "qwerty123456",
        "Q1W2E3R4T5Y6",
        &"x".repeat(1025),
        "Rosalind is my name",
    ] {
        let (status, body) = change(&caller, PASSWORD, weak).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some("weak_password")),
            "{weak:.20}: {body}"
        );
    }
    let (status, body) = f
        .anon
        .post(
            "/api/auth/register",
            json!({ "email": "someone@example.test", "password": "1q2w3e4r5t6y" }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("weak_password")),
        "{body}"
    );

    // A wrong current password changes nothing.
    let (status, body) = change(&caller, "not my password at all", NEW_PASSWORD).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{body}"
    );
    assert_eq!(other.get("/api/auth/me").await.0, StatusCode::OK);

    let (status, body) = change(&caller, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // The other session ends at its next request, its refresh family with it.
    let (status, body) = other.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = f
        .anon
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": other_refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The caller's goes on, access and refresh.
    assert_eq!(caller.get("/api/auth/me").await.0, StatusCode::OK);
    let (status, body) = f
        .anon
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": caller_refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Only the new password logs in now; the owner got a notice.
    assert_eq!(
        login(&f.anon, email, PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&f.anon, email, NEW_PASSWORD).await.0, StatusCode::OK);
    let notices: Vec<_> = mail::outbox_for(&f.outbox, email)
        .into_iter()
        .filter(|m| m.subject.contains("password was changed"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(!notices[0].body.contains(NEW_PASSWORD));

    // Reset-confirm applies the policy too, and a refused password leaves the token usable.
    let (status, _) = f
        .anon
        .post("/api/auth/password-reset", json!({ "email": email }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut token = None;
    tests::eventually("the reset mail", std::time::Duration::from_secs(10), || {
        token = mail::outbox_for(&f.outbox, email)
            .into_iter()
            .rev()
            .find(|m| m.body.contains("reset-password?token="))
            .and_then(|m| m.token());
        std::future::ready(token.is_some())
    })
    .await;
    for weak in ["123qweasdzxc", "rosalind forever and ever"] {
        let (status, body) = f
            .anon
            .post(
                "/api/auth/password-reset/confirm",
                json!({ "token": token, "new_password": weak }),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some("weak_password")),
            "{weak}: {body}"
        );
    }
    let (status, body) = f
        .anon
        .post(
            "/api/auth/password-reset/confirm",
            json!({ "token": token, "new_password": "a third fine passphrase" }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A wrong current password counts like a failed login: ten from one client within an hour
/// block it, for password changes and logins alike.
async fn wrong_current_password_is_throttled_like_login(kind: DbKind) {
    let f = start(kind).await;
    let email = "guesser@example.test";
    f.anon.register_verified(&f.outbox, email).await;
    let (caller, _) = session(&f.anon, email).await;
    for n in 0..10 {
        let (status, body) = change(&caller, &format!("guess number {n:02}"), NEW_PASSWORD).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}: {body}");
    }
    let (status, body) = change(&caller, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{body}"
    );
    let (status, body) = login(&f.anon, email, PASSWORD).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "the login limiter is the same: {body}"
    );
}

/// Logs `email` in sending `user_agent`: the session's client and refresh token.
async fn session_as(anon: &Rest, email: &str, user_agent: &str) -> (Rest, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/login", anon.base))
        .header(reqwest::header::USER_AGENT, user_agent)
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    (
        anon.with_token(pair["access_token"].as_str().unwrap()),
        pair["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn list(client: &Rest) -> Vec<Value> {
    let (status, body) = client.get("/api/auth/sessions").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn end(client: &Rest, id: &str) -> (StatusCode, Value) {
    client
        .call(Method::DELETE, &format!("/api/auth/sessions/{id}"), None)
        .await
}

async fn sessions_are_listed_and_ended_one_by_one(kind: DbKind) {
    let f = start(kind).await;
    let email = "listing@example.test";
    f.anon.register_verified(&f.outbox, email).await;
    let (laptop, _) = session_as(&f.anon, email, "accounts-test/laptop").await;
    let (phone, phone_refresh) = session_as(&f.anon, email, &"phone ".repeat(200)).await;

    let items = list(&laptop).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let mine = items.iter().find(|s| s["current"] == true).unwrap();
    let other = items.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(mine["user_agent"], "accounts-test/laptop");
    assert_eq!(mine["ip"], "127.0.0.1");
    assert!(
        mine["created_at"].is_string() && mine["last_used_at"].is_string(),
        "{mine}"
    );
    let phone_agent = other["user_agent"].as_str().unwrap();
    assert!(phone_agent.starts_with("phone phone") && phone_agent.chars().count() <= 255);
    let phone_id = other["id"].as_str().unwrap().to_owned();
    let from_phone = list(&phone).await;
    assert_eq!(
        from_phone
            .iter()
            .find(|s| s["current"] == true)
            .map(|s| s["id"].clone()),
        Some(Value::String(phone_id.clone())),
    );

    // Another user cannot see or end them.
    let stranger_email = "stranger@example.test";
    f.anon.register_verified(&f.outbox, stranger_email).await;
    let (stranger, _) = session(&f.anon, stranger_email).await;
    assert_eq!(list(&stranger).await.len(), 1);
    let (status, body) = end(&stranger, &phone_id).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    assert_eq!(phone.get("/api/auth/me").await.0, StatusCode::OK);
    let (status, body) = end(&laptop, "not-a-uuid").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );

    // The laptop ends the phone's session: its access token stops, its refresh family too.
    let (status, body) = end(&laptop, &phone_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(phone.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = f
        .anon
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": phone_refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(laptop.get("/api/auth/me").await.0, StatusCode::OK);
    let left: Vec<Value> = list(&laptop).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["current"], true);
    assert_eq!(
        end(&laptop, &phone_id).await.0,
        StatusCode::NOT_FOUND,
        "once"
    );
}

async fn refresh_status(anon: &Rest, refresh_token: &str) -> StatusCode {
    anon.post(
        "/api/auth/refresh",
        json!({ "refresh_token": refresh_token }),
    )
    .await
    .0
}

/// `api user <command> <email>` against the fixture's database: (success, stdout, stderr).
fn cli(f: &Fixture, command: &str, email: &str) -> (bool, String, String) {
    let env = [("DATABASE_URL".to_owned(), f.db_url.clone())];
    tests::run("api", &["user", command, email], &env, f._dir.path())
}

async fn cli_locks_unlocks_and_revokes_sessions(kind: DbKind) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let f = start(kind).await;
    let email = "incident@example.test";
    f.anon.register_verified(&f.outbox, email).await;
    let (first, first_refresh) = session(&f.anon, email).await;
    let (second, _) = session(&f.anon, email).await;

    // revoke-sessions: every session ends at its next request; the account stays usable.
    let (ok, out, err) = cli(&f, "revoke-sessions", "INCIDENT@example.test");
    assert!(ok && out.contains("2 sessions ended"), "{out}{err}");
    assert_eq!(first.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(second.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh_status(&f.anon, &first_refresh).await,
        StatusCode::UNAUTHORIZED
    );
    let (third, third_refresh) = session(&f.anon, email).await;

    // lock: sessions end, logins and refreshes are refused (the right password gets 403,
    // a wrong one the usual 401).
    let (ok, out, err) = cli(&f, "lock", email);
    assert!(ok && out.contains("locked; 1 sessions ended"), "{out}{err}");
    assert_eq!(third.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh_status(&f.anon, &third_refresh).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = login(&f.anon, email, PASSWORD).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (status, body) = login(&f.anon, email, "not the password at all").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{body}"
    );

    // unlock: logins work again.
    let (ok, out, err) = cli(&f, "unlock", email);
    assert!(ok && out.contains("unlocked"), "{out}{err}");
    let (fourth, _) = session(&f.anon, email).await;
    assert_eq!(fourth.get("/api/auth/me").await.0, StatusCode::OK);

    let (ok, _, err) = cli(&f, "lock", "nobody@example.test");
    assert!(!ok && err.contains("not found"), "{err}");

    // Audited, with the CLI as the actor.
    use api::db::entities::audit_log;
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::Action.starts_with("user."))
        .all(&f.panel.state().db)
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = rows.into_iter().map(|r| (r.action, r.actor)).collect();
    seen.sort();
    let cli_actor = |a: &str| (a.to_owned(), "cli".to_owned());
    assert_eq!(
        seen,
        vec![
            cli_actor("user.lock"),
            cli_actor("user.revoke_sessions"),
            cli_actor("user.unlock")
        ]
    );
}

crate::on_both_databases!(
    password_change_ends_other_sessions,
    wrong_current_password_is_throttled_like_login,
    sessions_are_listed_and_ended_one_by_one,
    cli_locks_unlocks_and_revokes_sessions,
);
