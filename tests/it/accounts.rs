//! Issue 18's account features over the real REST API of an in-process panel on both
//! databases: changing a password (the policy, the current password throttled like a login,
//! other sessions ended and the caller's kept, the notice mailed).

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::rest::{PASSWORD, Rest};
use tests::{DbKind, mail};

/// A password that passes the policy, other than [`PASSWORD`].
const NEW_PASSWORD: &str = "purple otter on a bicycle";

struct Fixture {
    _dir: tempfile::TempDir,
    _panel: api::Panel,
    outbox: PathBuf,
    anon: Rest,
}

async fn start(kind: DbKind) -> Fixture {
    let (dir, _pki, config) = tests::roomy_setup(kind).await;
    let outbox = config.identity.outbox_dir.clone();
    let panel = api::Panel::start(config).await.unwrap();
    let anon = Rest::new(format!("http://{}", panel.http_addr));
    Fixture {
        _dir: dir,
        _panel: panel,
        outbox,
        anon,
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

fn code(body: &Value) -> Option<&str> {
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

crate::on_both_databases!(
    password_change_ends_other_sessions,
    wrong_current_password_is_throttled_like_login,
);
