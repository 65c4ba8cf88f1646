//! Identity through the real REST API (in-process panel on an ephemeral port), with the real
//! redis-server as the limiter and both databases: registration, mail, verification, login,
//! refresh rotation and reuse detection, logout, password reset, limits, and JWT rotation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::Panel;
use api::config::RateLimits;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tests::{DbKind, TestPki, database_url, mail};

use tests::rest::PASSWORD;

struct Fixture {
    _dir: tempfile::TempDir,
    panel: Panel,
    db_url: String,
    outbox: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn start(kind: DbKind, tune: impl FnOnce(&mut api::Config)) -> Fixture {
        Fixture::start_with_clock(kind, tune, Arc::new(api::clock::SystemClock)).await
    }

    /// [`Fixture::start`] with the panel reading the time from `clock`.
    async fn start_with_clock(
        kind: DbKind,
        tune: impl FnOnce(&mut api::Config),
        clock: api::clock::SharedClock,
    ) -> Fixture {
        security::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path());
        let mut config = tests::panel_config(&pki, database_url(kind, dir.path()).await);
        config.security.redis_url =
            Some(std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)"));
        config.security.redis_key_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        // Not a test of limits: roomy ones (they cannot be turned off).
        config.security.rate_limits = tests::roomy_limits();
        tune(&mut config);
        let outbox = config.security.outbox_dir.clone();
        let db_url = config.database_url.clone();
        let panel = Panel::start_with_clock(config, clock).await.unwrap();
        let base = format!("http://{}", panel.http_addr);
        Fixture {
            _dir: dir,
            panel,
            db_url,
            outbox,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// The status of `GET /api/auth/me` with the access token of a login or refresh response.
    async fn me_status(&self, pair: &Value) -> StatusCode {
        self.get_with("/api/auth/me", pair["access_token"].as_str().unwrap())
            .await
            .0
    }

    async fn refresh(&self, refresh_token: &Value) -> (StatusCode, Value) {
        self.post(
            "/api/auth/refresh",
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn get_with(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Registers and verifies `email` through the mailed link; returns the user id.
    async fn verified_user(&self, email: &str) -> String {
        tests::Rest::new(self.base.clone())
            .register_verified(&self.outbox, email)
            .await
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/api/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    async fn audit_outcomes(&self, action: &str) -> Vec<String> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        api::db::entities::audit_log::Entity::find()
            .filter(api::db::entities::audit_log::Column::Action.eq(action))
            .all(&self.panel.state().db)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.outcome)
            .collect()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn register_verify_login_refresh_reuse(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    let (status, body) = f
        .post(
            "/api/auth/register",
            json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["email_verified"], false);

    let mails = mail::outbox_for(&f.outbox, "ada@example.com");
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .body
            .contains("http://127.0.0.1:8080/verify-email?token="),
        "{}",
        mails[0].body
    );
    let token = mails[0].token().unwrap();
    let (status, body) = f
        .post("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(
        (status, body["user"]["email_verified"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, body) = f
        .post("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "one-time"
    );

    let (wrong_status, wrong) = f.login("ada@example.com", "not the password").await;
    let (unknown_status, unknown) = f.login("nobody@example.com", PASSWORD).await;
    assert_eq!(
        (wrong_status, unknown_status),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        wrong, unknown,
        "same answer for unknown email and wrong password"
    );
    assert_eq!(error_code(&wrong), "invalid_credentials");

    let (status, first) = f.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["token_type"].clone(), first["expires_in"].clone()),
        (json!("Bearer"), json!(900))
    );
    let access = first["access_token"].as_str().unwrap();
    let (status, me) = f.get_with("/api/auth/me", access).await;
    assert_eq!(
        (status, me["user"]["email"].clone()),
        (StatusCode::OK, json!("ada@example.com"))
    );
    let (status, table) = f.get_with("/api/permissions", access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        table["member"],
        json!([
            "server:read",
            "server:start",
            "server:stop",
            "server:console",
            "file:read",
            "file:write"
        ])
    );
    assert_eq!(table["owner"].as_array().map(Vec::len), Some(21));
    let (status, _) = f
        .send(f.http.get(format!("{}/api/permissions", f.base)))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the table is for signed-in users"
    );

    let (status, second) = f.refresh(&first["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"], "rotated");
    let (status, third) = f.refresh(&second["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{third}");

    // The first token again: reuse. The family is revoked, the newest token dies with it.
    let (status, body) = f.refresh(&first["refresh_token"]).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "token_reused")
    );
    let (status, _) = f.refresh(&third["refresh_token"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "family revoked");
    let (status, _) = f
        .get_with("/api/auth/me", third["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "access tokens of the session end too"
    );
    assert!(
        f.audit_outcomes("auth.refresh")
            .await
            .contains(&"rejected: token_reused".to_owned())
    );
    assert_eq!(f.panel.state().metrics.refresh_reuse.get(), 1);
    // A new login still works.
    assert_eq!(f.login("ada@example.com", PASSWORD).await.0, StatusCode::OK);
}

async fn concurrent_refresh_has_one_winner(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    f.verified_user("bob@example.com").await;
    let (_, pair) = f.login("bob@example.com", PASSWORD).await;
    let token = pair["refresh_token"].clone();
    let attempts = (0..20).map(|_| f.refresh(&token));
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let reused = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::UNAUTHORIZED && error_code(b) == "token_reused")
        .count();
    assert_eq!((ok, reused), (1, 19), "{results:?}");
}

async fn refresh_grace_tolerates_two_tabs_then_expires(kind: DbKind) {
    let clock = Arc::new(api::clock::ShiftedClock::default());
    let f = Fixture::start_with_clock(
        kind,
        |c| c.security.refresh_grace = Duration::from_secs(2),
        clock.clone(),
    )
    .await;
    f.verified_user("tabs@example.com").await;
    let (_, pair) = f.login("tabs@example.com", PASSWORD).await;
    let token = pair["refresh_token"].clone();
    let attempts = (0..20).map(|_| f.refresh(&token));
    let results = futures::future::join_all(attempts).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "no revocation inside the grace: {results:?}"
    );
    let newest = results[0].1["refresh_token"].clone();
    assert_eq!(
        f.get_with(
            "/api/auth/me",
            results[5].1["access_token"].as_str().unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );

    // The grace passes on the panel's clock: no sleeping through it.
    clock.advance(Duration::from_millis(2300));
    let (status, body) = f.refresh(&token).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "token_reused"),
        "after the grace: reuse"
    );
    assert_eq!(f.refresh(&newest).await.0, StatusCode::UNAUTHORIZED);
}

async fn logout_logout_all_and_password_reset(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    f.verified_user("cy@example.com").await;
    let (_, one) = f.login("cy@example.com", PASSWORD).await;
    let (_, two) = f.login("cy@example.com", PASSWORD).await;
    let (_, three) = f.login("cy@example.com", PASSWORD).await;

    let (status, _) = f
        .post(
            "/api/auth/logout",
            json!({"refresh_token": one["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        f.refresh(&one["refresh_token"]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(f.me_status(&one).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.me_status(&two).await,
        StatusCode::OK,
        "other sessions live"
    );

    let response = f
        .http
        .post(format!("{}/api/auth/logout-all", f.base))
        .bearer_auth(two["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for session in [&two, &three] {
        assert_eq!(f.me_status(session).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            f.refresh(&session["refresh_token"]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    let (_, live) = f.login("cy@example.com", PASSWORD).await;
    let (status, _) = f
        .post(
            "/api/auth/password-reset",
            json!({"email": "cy@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = f
        .post(
            "/api/auth/password-reset",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "no hint whether the account exists"
    );
    // Mailed after the answer.
    let reset = || {
        mail::outbox_for(&f.outbox, "cy@example.com")
            .into_iter()
            .find(|m| m.body.contains("reset-password?token="))
    };
    tests::eventually("the reset mail", Duration::from_secs(10), || {
        std::future::ready(reset().is_some())
    })
    .await;
    let token = reset().and_then(|m| m.token()).unwrap();
    let (status, body) = f
        .post(
            "/api/auth/password-reset/confirm",
            json!({"token": token, "new_password": "short"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "weak_password")
    );
    let (status, _) = f
        .post(
            "/api/auth/password-reset/confirm",
            json!({"token": token, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f
        .post(
            "/api/auth/password-reset/confirm",
            json!({"token": token, "new_password": "another new passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "one-time");
    assert_eq!(f.me_status(&live).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.login("cy@example.com", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.login("cy@example.com", "a brand new passphrase").await.0,
        StatusCode::OK
    );
}

async fn bad_input_gets_contract_errors(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    let register = |body: Value| f.post("/api/auth/register", body);
    assert_eq!(
        error_code(
            &register(json!({"email": "d@example.com", "password": "short"}))
                .await
                .1
        ),
        "weak_password"
    );
    assert_eq!(
        error_code(
            &register(json!({"email": "not-an-email", "password": PASSWORD}))
                .await
                .1
        ),
        "invalid_request"
    );
    assert_eq!(
        error_code(&register(json!({"password": PASSWORD})).await.1),
        "invalid_request"
    );
    assert_eq!(
        register(json!({"email": "d@example.com", "password": PASSWORD}))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = register(json!({"email": "D@example.com", "password": PASSWORD})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );

    let url = format!("{}/api/auth/login", f.base);
    let (status, body) = f.send(f.http.post(&url).body("{}")).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, body) = f
        .send(
            f.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let big = format!(
        "{{\"email\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    // The panel answers 413 without reading the rest and closes the connection: use a client
    // of its own, so no pooled connection is reused after it.
    let (status, body) = f
        .send(
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, body) = f.get_with("/api/auth/me", "not.a.jwt").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, body) = f.send(f.http.get(format!("{}/api/auth/me", f.base))).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, body) = f.send(f.http.get(format!("{}/nope", f.base))).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

async fn limits_headers_proxies_and_lockout(kind: DbKind) {
    let f = Fixture::start(kind, |c| {
        c.security.rate_limits = RateLimits::parse("register=3/1h,login=50/15m").unwrap();
        c.security.trusted_proxies = vec![api::config::Cidr::parse("127.0.0.1").unwrap()];
    })
    .await;
    let register = |n: usize, ip: &'static str| {
        f.http
            .post(format!("{}/api/auth/register", f.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": format!("r{n}@example.com"), "password": PASSWORD}))
            .send()
    };
    for n in 0..3 {
        let response = register(n, "203.0.113.1").await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.headers()
        );
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            (2 - n).to_string().as_str()
        );
        assert!(
            response.headers()["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .ends_with('Z')
        );
    }
    let refused = register(3, "203.0.113.1").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3500 && retry <= 3600, "{retry}");
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    assert!(!f.audit_outcomes("auth.register").await.is_empty());
    // Another client behind the same proxy has its own window.
    assert_eq!(
        register(4, "203.0.113.2").await.unwrap().status(),
        StatusCode::CREATED
    );

    // Ten failed logins from one address block it, even for the right password.
    f.verified_user("lock@example.com").await;
    let login_from = |ip: &'static str, password: &'static str| {
        f.http
            .post(format!("{}/api/auth/login", f.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": "lock@example.com", "password": password}))
            .send()
    };
    // The owner's network: familiar to the account, so its throttle never applies there.
    assert_eq!(
        login_from("198.51.100.10", PASSWORD)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for _ in 0..10 {
        let response = login_from("198.51.100.9", "wrong password!").await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let blocked = login_from("198.51.100.9", PASSWORD).await.unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = login_from("198.51.100.10", PASSWORD).await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

async fn jwks_and_key_rotation_across_restart(kind: DbKind) {
    let dir = tempfile::tempdir().unwrap();
    let old_key = dir.path().join("old.pem");
    let new_key = dir.path().join("new.pem");
    std::fs::write(
        &old_key,
        security::jwt::SigningKey::generate_ed25519_pem().unwrap(),
    )
    .unwrap();
    let p256 = p256_pem();
    std::fs::write(&new_key, p256).unwrap();

    let db_dir = tempfile::tempdir().unwrap();
    let db_url = database_url(kind, db_dir.path()).await;
    let start = |active: PathBuf, retired: Vec<PathBuf>| {
        let db_url = db_url.clone();
        let dir = db_dir.path().to_owned();
        async move {
            let pki = TestPki::new(&dir.join(uuid::Uuid::new_v4().to_string()));
            let mut config = tests::panel_config(&pki, db_url);
            config.security.jwt_key_file = Some(active);
            config.security.jwt_retired_key_files = retired;
            config.security.outbox_dir = dir.join("outbox");
            Panel::start(config).await.unwrap()
        }
    };
    let http = reqwest::Client::new();
    let panel = start(old_key.clone(), vec![]).await;
    let base = format!("http://{}", panel.http_addr);
    http.post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "k@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "k@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_token = login["access_token"].as_str().unwrap().to_owned();
    panel.shutdown().await;

    let panel = start(new_key.clone(), vec![old_key.clone()]).await;
    let base = format!("http://{}", panel.http_addr);
    let jwks: Value = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert_eq!(
        algs,
        vec!["ES256", "EdDSA"],
        "active first, retired after: {jwks}"
    );
    let me = http
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "a token of the retired key still works"
    );
    panel.shutdown().await;

    let panel = start(new_key, vec![]).await;
    let me = http
        .get(format!("http://{}/api/auth/me", panel.http_addr))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::UNAUTHORIZED,
        "once the old key is dropped, its tokens are refused"
    );
}

async fn redis_killed_mid_test_falls_back_to_memory(kind: DbKind) {
    let mut redis = tests::RedisServer::start().await;
    let url = redis.url();
    let f = Fixture::start(kind, |c| {
        c.security.redis_url = Some(url);
        c.security.rate_limits = RateLimits::parse("register=4/1h").unwrap();
    })
    .await;
    let health = |f: &Fixture| {
        let url = format!("{}/health", f.base);
        let http = f.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(health(&f).await["redis"], "ok");
    let register = |n: usize| {
        f.post(
            "/api/auth/register",
            json!({"email": format!("f{n}@example.com"), "password": PASSWORD}),
        )
    };
    assert_eq!(register(0).await.0, StatusCode::CREATED);

    redis.kill();
    // Still limited (in memory now: a fresh window of 4), never a 500.
    let statuses: Vec<StatusCode> = futures::future::join_all((1..7).map(register))
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(health(&f).await["redis"], "down");
    assert!(f.panel.state().metrics.limiter_fallbacks.get() >= 6);
}

/// Item 19: with Redis down at start the panel keeps limits in memory, says `redis: down`, and
/// uses Redis as soon as a redis-server answers on `REDIS_URL`.
async fn redis_down_at_start_is_used_once_it_answers(kind: DbKind) {
    let port = tests::RedisServer::free_port();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let f = Fixture::start(kind, |c| {
        c.security.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
        c.security.redis_key_prefix = prefix.clone();
    })
    .await;
    let redis_health =
        || async { f.send(f.http.get(format!("{}/health", f.base))).await.1["redis"].clone() };
    assert_eq!(
        redis_health().await,
        "down",
        "REDIS_URL is set but nothing answers"
    );
    let (status, _) = f.login("nobody@example.com", PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "limits kept in memory meanwhile"
    );

    let redis = tests::RedisServer::start_on(port).await;
    tests::eventually(
        "Redis used once it answers",
        Duration::from_secs(20),
        || async { redis_health().await == "ok" },
    )
    .await;
    f.login("nobody@example.com", PASSWORD).await;
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}rl:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the login was counted in Redis");
}

/// `/health` answers 503 with `db: down` while the panel cannot reach its database, and
/// recovers by itself. PostgreSQL only: the test cuts the panel off for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_database_is_down() {
    use sea_orm::ConnectionTrait;
    let f = Fixture::start(DbKind::Postgres, |_| {}).await;
    let health = || async {
        let response = f
            .http
            .get(format!("{}/health", f.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let (status, body) = health().await;
    assert_eq!((status, body["db"].clone()), (StatusCode::OK, json!("ok")));

    let name = f.db_url.rsplit('/').next().unwrap().to_owned();
    let admin = sea_orm::Database::connect(std::env::var(tests::TEST_POSTGRES_URL).unwrap())
        .await
        .unwrap();
    let cut = |allow: bool| format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}");
    admin.execute_unprepared(&cut(false)).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    let (status, body) = health().await;
    assert_eq!(
        (status, body["db"].clone(), body["status"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("down"),
            json!("degraded")
        )
    );
    // Other endpoints say 503 `unavailable`, never 500.
    let (status, body) = f
        .post(
            "/api/auth/login",
            json!({"email": "a@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );

    admin.execute_unprepared(&cut(true)).await.unwrap();
    tests::eventually("health recovers", Duration::from_secs(15), || async {
        health().await.0 == StatusCode::OK
    })
    .await;
}

async fn admin_grant_from_the_cli(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    let user_id = f.verified_user("root@example.com").await;
    let env = [("DATABASE_URL".to_owned(), f.db_url.clone())];
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = tests::run(
        "api",
        &["admin", "grant", "ROOT@example.com"],
        &env,
        dir.path(),
    );
    assert!(
        ok && out.contains("root@example.com is now a platform administrator"),
        "{out}{err}"
    );
    let user = api::db::entities::user::Entity::find_by_id(&user_id)
        .one(&f.panel.state().db)
        .await
        .unwrap()
        .unwrap();
    assert!(user.is_platform_admin);
    assert_eq!(
        f.audit_outcomes("admin.grant").await,
        vec!["success".to_owned()]
    );
    let (ok, _, err) = tests::run(
        "api",
        &["admin", "grant", "nobody@example.com"],
        &env,
        dir.path(),
    );
    assert!(!ok && err.contains("not found"), "{err}");
}

/// Item 16: a login naming a tenant signs it into the token only for a member; any other
/// tenant (another's, unknown, malformed) is 400 `invalid_request` and opens no session.
async fn login_tenant_must_be_a_membership(kind: DbKind) {
    let f = Fixture::start(kind, |_| {}).await;
    let rest = tests::Rest::new(f.base.clone());
    let (dee, _) = rest.verified_user(&f.outbox, "dee@example.com").await;
    let (eve, _) = rest.verified_user(&f.outbox, "eve@example.com").await;
    let (_, own) = dee.post("/api/tenants", json!({"name": "dee-co"})).await;
    let (_, foreign) = eve.post("/api/tenants", json!({"name": "eve-co"})).await;
    let login = |tenant: Value| {
        f.post(
            "/api/auth/login",
            json!({"email": "dee@example.com", "password": PASSWORD, "tenant_id": tenant}),
        )
    };
    let sessions = || async {
        api::db::entities::session::Entity::find()
            .all(&f.panel.state().db)
            .await
            .unwrap()
            .len()
    };
    let before = sessions().await;
    for bad in [
        foreign["id"].clone(),
        json!(uuid::Uuid::new_v4().to_string()),
        json!("not-a-tenant"),
    ] {
        let (status, body) = login(bad.clone()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "tenant_id {bad}: {body}"
        );
    }
    assert_eq!(sessions().await, before, "no session for a refused login");
    let (status, pair) = login(own["id"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let session = api::db::entities::session::Entity::find()
        .all(&f.panel.state().db)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.tenant_id.is_some())
        .expect("the session of the tenant login");
    assert_eq!(
        session.tenant_id.as_ref(),
        own["id"].as_str().map(str::to_owned).as_ref()
    );
}

/// A P-256 PKCS#8 key, generated by the same code the PKI uses.
fn p256_pem() -> String {
    let ca = security::pki::CertificateAuthority::generate("k", time::OffsetDateTime::now_utc(), 1)
        .unwrap();
    ca.key_pem()
}

crate::on_both_databases!(
    register_verify_login_refresh_reuse,
    concurrent_refresh_has_one_winner,
    refresh_grace_tolerates_two_tabs_then_expires,
    logout_logout_all_and_password_reset,
    bad_input_gets_contract_errors,
    limits_headers_proxies_and_lockout,
    jwks_and_key_rotation_across_restart,
    redis_killed_mid_test_falls_back_to_memory,
    admin_grant_from_the_cli,
    login_tenant_must_be_a_membership,
    redis_down_at_start_is_used_once_it_answers,
);
