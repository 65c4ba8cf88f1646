//! Issue 18.5, the TOTP second factor, over REST on both databases: set up and confirmed with
//! codes from the independent RFC 6238 implementation of [`tests::totp`] (checked here against
//! the RFC's own test vectors); logins then need the second step; a code is never accepted
//! twice, not even by two logins at once; a recovery code works once; a lock or a password
//! change between the steps ends the second; wrong codes run into the login limit; turning it
//! off needs the password and a code; the secret is sealed under the master keys and rotated
//! with them. One test drives the real `api` binary and looks for the secret, codes and tokens
//! in its log and in the audit rows.
//!
//! Codes are computed for the test's clock; the panel accepts one step either side. A step is
//! only waited for when every code the panel would take was already used.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::rest::{PASSWORD, Rest};
use tests::totp::{App, STEP, base32_decode, hotp, totp, unix_now};
use tests::{DbKind, mail};

use crate::accounts::{code, start};

#[test]
fn the_independent_totp_gives_rfc_6238_appendix_b() {
    let key = b"12345678901234567890";
    for (time, expected) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp(key, time, 8), expected, "{time}");
    }
    assert_eq!(
        base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        key.to_vec()
    );
}

async fn login(anon: &Rest, email: &str) -> (StatusCode, Value) {
    anon.post(
        "/api/auth/login",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await
}

/// Logs in with the password: the `mfa_token` the panel asks to finish with.
async fn mfa_token(anon: &Rest, email: &str) -> String {
    let (status, body) = login(anon, email).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn finish(anon: &Rest, token: &str, proof: Value) -> (StatusCode, Value) {
    let mut body = json!({ "mfa_token": token });
    body.as_object_mut()
        .unwrap()
        .extend(proof.as_object().unwrap().clone());
    anon.post("/api/auth/login/mfa", body).await
}

/// Sets TOTP up for the logged-in `caller` and confirms it: the app and the recovery codes.
async fn turn_on(caller: &Rest) -> (App, Vec<String>, Value) {
    let (status, setup) = caller.post("/api/auth/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{setup}");
    let mut app = App::new(setup["secret"].as_str().unwrap());
    let (status, body) = caller
        .post(
            "/api/auth/totp/confirm",
            json!({ "code": app.next_code().await }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (app, codes, setup)
}

async fn logins_need_the_second_step_and_codes_work_once(kind: DbKind) {
    let f = start(kind).await;
    let email = "ada@example.test";
    let (caller, _) = f.anon.verified_user(&f.outbox, email).await;

    // A first setup left pending is replaced by the next; logins do not ask for it yet.
    let (status, first) = caller.post("/api/auth/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, body) = login(&f.anon, email).await;
    assert!(
        status == StatusCode::OK && body["access_token"].is_string(),
        "{body}"
    );
    let (status, setup) = caller.post("/api/auth/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{setup}");
    let secret = setup["secret"].as_str().unwrap();
    assert_ne!(first["secret"], setup["secret"]);
    assert_eq!(base32_decode(secret).len(), 20, "160 bits");
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Mamba:ada%40example.test?")
            && uri.contains(&format!("secret={secret}"))
            && uri.contains("issuer=Mamba"),
        "{uri}"
    );
    let svg = setup["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg:.80}");

    // The first secret's code does not confirm the second; a wrong code is 400.
    let mut stale = App::new(first["secret"].as_str().unwrap());
    let (status, body) = caller
        .post(
            "/api/auth/totp/confirm",
            json!({ "code": stale.next_code().await }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    let mut app = App::new(secret);
    let (status, body) = caller
        .post(
            "/api/auth/totp/confirm",
            json!({ "code": app.next_code().await }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recovery = body["recovery_codes"].as_array().unwrap();
    assert_eq!(recovery.len(), 10);
    let distinct: std::collections::HashSet<_> = recovery.iter().collect();
    assert_eq!(distinct.len(), 10);

    // On now: a second setup or confirm is 409.
    let (status, body) = caller.post("/api/auth/totp/setup", json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, body) = caller
        .post("/api/auth/totp/confirm", json!({ "code": app.last_code() }))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    // The password alone no longer logs in.
    let token = mfa_token(&f.anon, email).await;
    // The code that confirmed is spent: its step was accepted.
    let (status, body) = finish(&f.anon, &token, json!({ "code": app.last_code() })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_code")),
        "{body}"
    );
    let (status, body) = finish(&f.anon, &token, json!({ "code": app.stale_code() })).await;
    assert_eq!(code(&body), Some("invalid_code"), "{status} {body}");
    for both in [json!({}), json!({ "code": "123456", "recovery_code": "x" })] {
        let (status, body) = finish(&f.anon, &token, both).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, pair) = finish(&f.anon, &token, json!({ "code": app.next_code().await })).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let session = f.anon.with_token(pair["access_token"].as_str().unwrap());
    assert_eq!(session.get("/api/auth/me").await.0, StatusCode::OK);
    let (status, body) = f
        .anon
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": pair["refresh_token"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The token is used up, and the code is spent on any token.
    let (status, body) = finish(&f.anon, &token, json!({ "code": app.last_code() })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "{body}"
    );
    let fresh = mfa_token(&f.anon, email).await;
    let (status, body) = finish(&f.anon, &fresh, json!({ "code": app.last_code() })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_code")),
        "replayed: {body}"
    );

    // Turning it off needs the password and a code.
    let off = |password: &str, code: String| {
        let body = json!({ "password": password, "code": code });
        let session = session.clone();
        async move {
            session
                .call(Method::DELETE, "/api/auth/totp", Some(body))
                .await
        }
    };
    let (status, body) = off("not the password at all", app.next_code().await).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{body}"
    );
    let (status, body) = off(PASSWORD, app.stale_code()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_code")),
        "{body}"
    );
    let (status, body) = off(PASSWORD, app.last_code()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = off(PASSWORD, app.last_code()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, body) = login(&f.anon, email).await;
    assert!(
        status == StatusCode::OK && body["access_token"].is_string(),
        "{body}"
    );
    // The pending token of before does not outlive it.
    let (status, _) = finish(&f.anon, &fresh, json!({ "code": app.last_code() })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        mail::outbox_for(&f.outbox, email).iter().any(|m| m
            .subject
            .contains("Two-factor authentication was turned off")),
        "a notice"
    );
    f.panel.shutdown().await;
}

async fn a_recovery_code_works_once(kind: DbKind) {
    let f = start(kind).await;
    let email = "grace@example.test";
    let (caller, _) = f.anon.verified_user(&f.outbox, email).await;
    let (_app, recovery, _) = turn_on(&caller).await;

    let token = mfa_token(&f.anon, email).await;
    let (status, body) = finish(
        &f.anon,
        &token,
        json!({ "recovery_code": "0000-0000-0000-0000" }),
    )
    .await;
    assert_eq!(code(&body), Some("invalid_code"), "{status} {body}");
    // Typed in upper case without the dashes, it is the same code.
    let typed = recovery[0].replace('-', "").to_uppercase();
    let (status, pair) = finish(&f.anon, &token, json!({ "recovery_code": typed })).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    assert!(pair["access_token"].is_string());

    let token = mfa_token(&f.anon, email).await;
    let (status, body) = finish(&f.anon, &token, json!({ "recovery_code": recovery[0] })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("invalid_code")),
        "used once: {body}"
    );
    let (status, body) = finish(&f.anon, &token, json!({ "recovery_code": recovery[1] })).await;
    assert_eq!(status, StatusCode::OK, "another one: {body}");

    // Another account's codes are not this one's.
    let other = "hopper@example.test";
    let (other_caller, _) = f.anon.verified_user(&f.outbox, other).await;
    let (_, other_recovery, _) = turn_on(&other_caller).await;
    let token = mfa_token(&f.anon, email).await;
    let (status, body) = finish(
        &f.anon,
        &token,
        json!({ "recovery_code": other_recovery[0] }),
    )
    .await;
    assert_eq!(code(&body), Some("invalid_code"), "{status} {body}");
    f.panel.shutdown().await;
}

/// Two logins presenting the same code (or recovery code) at once: exactly one gets in.
async fn one_code_opens_one_session_even_at_once(kind: DbKind) {
    let f = start(kind).await;
    let email = "race@example.test";
    let (caller, _) = f.anon.verified_user(&f.outbox, email).await;
    let (mut app, recovery, _) = turn_on(&caller).await;
    for proof in [
        json!({ "code": app.next_code().await }),
        json!({ "recovery_code": recovery[0] }),
    ] {
        let (a, b) = (
            mfa_token(&f.anon, email).await,
            mfa_token(&f.anon, email).await,
        );
        let ((status_a, body_a), (status_b, body_b)) = tokio::join!(
            finish(&f.anon, &a, proof.clone()),
            finish(&f.anon, &b, proof.clone())
        );
        let mut statuses = [status_a, status_b];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::UNAUTHORIZED],
            "{proof}: {body_a} {body_b}"
        );
    }
    f.panel.shutdown().await;
}

/// A lock or a password change between the two steps ends the second one, without using up
/// the recovery code presented.
async fn a_lock_or_password_change_ends_the_second_step(kind: DbKind) {
    use api::identity::lock::{self, UserCommand};
    let f = start(kind).await;
    let db = &f.panel.state().db;
    let email = "between@example.test";
    let (caller, _) = f.anon.verified_user(&f.outbox, email).await;
    let (_, recovery, _) = turn_on(&caller).await;

    let token = mfa_token(&f.anon, email).await;
    lock::run(db, UserCommand::Lock, email, chrono::Utc::now())
        .await
        .unwrap();
    let (status, body) = finish(&f.anon, &token, json!({ "recovery_code": recovery[0] })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    lock::run(db, UserCommand::Unlock, email, chrono::Utc::now())
        .await
        .unwrap();
    let token = mfa_token(&f.anon, email).await;
    let (status, pair) = finish(&f.anon, &token, json!({ "recovery_code": recovery[0] })).await;
    assert_eq!(status, StatusCode::OK, "{pair}");

    let pending = mfa_token(&f.anon, email).await;
    let session = f.anon.with_token(pair["access_token"].as_str().unwrap());
    let new_password = "a different long passphrase";
    let (status, body) = session
        .post(
            "/api/auth/password",
            json!({ "current_password": PASSWORD, "new_password": new_password }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = finish(&f.anon, &pending, json!({ "recovery_code": recovery[1] })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "{body}"
    );
    let (status, body) = f
        .anon
        .post(
            "/api/auth/login",
            json!({ "email": email, "password": new_password }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["mfa_token"].as_str().unwrap();
    let (status, body) = finish(&f.anon, token, json!({ "recovery_code": recovery[1] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    f.panel.shutdown().await;
}

async fn wrong_codes_run_into_the_login_limit(kind: DbKind) {
    use api::db::entities::audit_log;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let f = start(kind).await;
    let email = "mallory@example.test";
    let (caller, _) = f.anon.verified_user(&f.outbox, email).await;
    let (mut app, _, _) = turn_on(&caller).await;
    let right = app.next_code().await;
    // A code of no step the panel could take while the test runs.
    let near: Vec<String> = (unix_now() / STEP - 2..=unix_now() / STEP + 4)
        .map(|step| hotp(&app.key, step, 6))
        .collect();
    let wrong = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !near.iter().any(|n| n == c))
        .unwrap();

    // One token takes five wrong codes, then it is gone (a sixth failure).
    let token = mfa_token(&f.anon, email).await;
    refused_codes(&f.anon, &token, wrong, 5).await;
    let (status, body) = finish(&f.anon, &token, json!({ "code": right })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "{body}"
    );
    // Four more failures make ten from this client within the hour: it is blocked, the right
    // code included, and so are its logins.
    let token = mfa_token(&f.anon, email).await;
    refused_codes(&f.anon, &token, wrong, 4).await;
    let (status, body) = finish(&f.anon, &token, json!({ "code": right })).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{body}"
    );
    let (status, body) = login(&f.anon, email).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{body}"
    );

    // Every failure is audited, with the kind of proof and never the code.
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("auth.login_mfa"))
        .all(&f.panel.state().db)
        .await
        .unwrap();
    let mut outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    outcomes.sort_unstable();
    let mut expected = vec!["failure: invalid_code"; 9];
    expected.push("failure: invalid_token");
    assert_eq!(outcomes, expected);
    assert!(
        rows.iter()
            .all(|r| r.details == json!({ "method": "code" }))
    );
    f.panel.shutdown().await;
}

/// The real `api` binary at debug level: neither its log nor the audit rows ever hold the
/// secret, its URI, a code, a recovery code or an `mfa_token`.
async fn secrets_stay_out_of_logs_and_audit(kind: DbKind) {
    use api::db::entities::audit_log;
    use sea_orm::EntityTrait;
    security::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = tests::TestPki::new(dir.path());
    let db_url = tests::database_url(kind, dir.path()).await;
    let mut env = tests::panel_env(&pki, &db_url, "127.0.0.1:0");
    env.push(("RUST_LOG".into(), "debug".into()));
    // Not a test of limits: several logins from one address.
    env.push((
        "RATE_LIMITS".into(),
        "login=1000/1m,register=1000/1m,password_reset=1000/1m,verify=1000/1m,api=10000/1m".into(),
    ));
    let (panel, _) = tests::start_panel(dir.path(), &env).await;
    let listening = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    let http = listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http_addr="))
        .unwrap();
    let anon = Rest::new(format!("http://{http}"));
    let outbox = dir.path().join("data/outbox");
    let email = "lovelace@example.test";
    let (caller, _) = anon.verified_user(&outbox, email).await;

    let (mut app, recovery, setup) = turn_on(&caller).await;
    let mut spent = vec![app.last_code()];
    let token = mfa_token(&anon, email).await;
    finish(&anon, &token, json!({ "code": app.stale_code() })).await;
    let code = app.next_code().await;
    let (status, _) = finish(&anon, &token, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK);
    spent.push(code);
    let token2 = mfa_token(&anon, email).await;
    let (status, _) = finish(&anon, &token2, json!({ "recovery_code": recovery[3] })).await;
    assert_eq!(status, StatusCode::OK);

    let db = sea_orm::Database::connect(&db_url).await.unwrap();
    let rows = audit_log::Entity::find().all(&db).await.unwrap();
    assert!(rows.iter().any(|r| r.action == "auth.totp_enable"));
    let audit = format!("{rows:?}");
    // Debug lines are written: a refused token is one.
    let (status, _) = anon.with_token("not-a-token").get("/api/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    panel
        .wait_for_line("access token refused", Duration::from_secs(10))
        .await;
    let log = panel.log();
    let secret = setup["secret"].as_str().unwrap();
    let mut needles: Vec<&str> = vec![
        secret,
        &secret[..16],
        setup["otpauth_uri"].as_str().unwrap(),
    ];
    needles.extend(recovery.iter().map(String::as_str));
    needles.extend([token.as_str(), token2.as_str()]);
    for needle in &needles {
        assert!(!log.contains(needle), "{needle} in the log");
        assert!(!audit.contains(needle), "{needle} in the audit rows");
    }
    // Six digits may occur by chance in ids or times; not in the audit rows' own words.
    for row in &rows {
        let words = format!("{} {} {}", row.action, row.outcome, row.details);
        for code in &spent {
            assert!(!words.contains(code.as_str()), "{code} in {words}");
        }
    }
}

/// The secret is sealed under the master key (not stored in clear), the start-up check knows
/// it, and `api keys rotate` re-wraps it: after rotation the old key can go.
async fn the_secret_is_sealed_and_rotated_with_the_master_keys(kind: DbKind) {
    use api::config::Redacted;
    use api::db::entities::totp_credential;
    use sea_orm::EntityTrait;
    use security::envelope::LocalKek;
    let (dir, _pki, mut config) = tests::roomy_setup(kind).await;
    let outbox = config.security.outbox_dir.clone();
    let (old_hex, new_hex) = (LocalKek::generate().1, LocalKek::generate().1);
    let kek = |hex: &str| LocalKek::from_hex(hex).unwrap();
    config.security.master_key = Some(Redacted(old_hex.to_string()));
    let panel = api::Panel::start(config.clone()).await.unwrap();
    let anon = Rest::new(format!("http://{}", panel.http_addr));
    let email = "turing@example.test";
    let (caller, _) = anon.verified_user(&outbox, email).await;
    let (mut app, _, setup) = turn_on(&caller).await;
    let row = totp_credential::Entity::find()
        .one(&panel.state().db)
        .await
        .unwrap()
        .unwrap();
    let key = base32_decode(setup["secret"].as_str().unwrap());
    assert!(
        !row.ciphertext
            .windows(8)
            .any(|w| key.windows(8).any(|k| k == w)),
        "sealed, not stored in clear"
    );
    assert_eq!(
        row.kek_id,
        api::secrets::Vault::from_keys(kek(&old_hex), vec![]).active_id()
    );
    let db = panel.state().db.clone();
    panel.shutdown().await;

    // The new key alone cannot open it: the panel refuses to start.
    let mut new_only = config.clone();
    new_only.security.master_key = Some(Redacted(new_hex.to_string()));
    match api::Panel::start(new_only.clone()).await {
        Ok(_) => panic!("a TOTP secret under a key that is not configured must stop the panel"),
        Err(e) => assert!(e.to_string().contains("MASTER_ENCRYPTION_KEY"), "{e}"),
    }
    // Rotated to the new key, which then suffices.
    let both = api::secrets::Vault::from_keys(kek(&new_hex), vec![kek(&old_hex)]);
    let report = api::secrets::rotate(&db, &both, 100, None).await.unwrap();
    assert_eq!(
        (report.rewrapped, report.failed, report.remaining),
        (1, 0, 0)
    );
    let panel = api::Panel::start(new_only).await.unwrap();
    let anon = Rest::new(format!("http://{}", panel.http_addr));
    let token = mfa_token(&anon, email).await;
    let (status, body) = finish(&anon, &token, json!({ "code": app.next_code().await })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    panel.shutdown().await;
    drop(dir);
}

crate::on_both_databases!(
    the_secret_is_sealed_and_rotated_with_the_master_keys,
    logins_need_the_second_step_and_codes_work_once,
    a_recovery_code_works_once,
    one_code_opens_one_session_even_at_once,
    a_lock_or_password_change_ends_the_second_step,
    wrong_codes_run_into_the_login_limit,
    secrets_stay_out_of_logs_and_audit,
);

/// Presents the wrong `code` `times` times on `token`: each is refused as `invalid_code`.
async fn refused_codes(anon: &Rest, token: &str, code_given: &str, times: usize) {
    for n in 0..times {
        let (status, body) = finish(anon, token, json!({ "code": code_given })).await;
        assert_eq!(
            code(&body),
            Some("invalid_code"),
            "wrong code {n}: {status} {body}"
        );
    }
}
