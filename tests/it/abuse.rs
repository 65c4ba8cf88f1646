//! Anonymous abuse of the REST API through an in-process panel on real sockets: what the mail
//! endpoints' timing says about an account, rotating IPv6 addresses, guessing one account's
//! password from many addresses, and a flood of logins against the password-hashing queue.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::config::RateLimits;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::rest::PASSWORD;
use tests::smtp::SmtpSink;
use tests::{DbKind, Rest, eventually};

/// What the SMTP sink takes to accept each mail: far above a request's own time.
const SMTP_DELAY: Duration = Duration::from_millis(1500);

async fn timed(rest: &Rest, path: &str, body: Value) -> Duration {
    let start = Instant::now();
    let (status, body) = rest.post(path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {body}");
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Item 15: `password-reset` and `resend-verification` answer as fast for an existing account
/// (whose mail takes [`SMTP_DELAY`] to send) as for a missing one; the mail still goes out.
async fn mail_endpoints_take_the_same_time_for_any_email(kind: DbKind) {
    let sink = SmtpSink::start(SMTP_DELAY).await;
    let (_dir, _pki, mut config) = tests::roomy_setup(kind).await;
    config.security.smtp_url = Some(sink.url());
    let panel = api::Panel::start(config).await.unwrap();
    let rest = Rest::new(format!("http://{}", panel.http_addr));
    let known = "known@example.com";
    let (status, body) = rest
        .post(
            "/api/auth/register",
            json!({"email": known, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mails_to_known = || sink.recipients().iter().filter(|r| *r == known).count();
    eventually("the verification mail", Duration::from_secs(10), || {
        std::future::ready(mails_to_known() == 1)
    })
    .await;

    const ROUNDS: usize = 3;
    for path in ["/api/auth/password-reset", "/api/auth/resend-verification"] {
        let before = mails_to_known();
        let (mut existing, mut missing) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            existing.push(timed(&rest, path, json!({ "email": known })).await);
            let nobody = format!("nobody{round}@example.com");
            missing.push(timed(&rest, path, json!({ "email": nobody })).await);
        }
        let (existing, missing) = (median(existing), median(missing));
        // Generous: half the mail's own time. Sent before answering, the existing account's
        // answer would take all of it.
        assert!(
            existing < missing + SMTP_DELAY / 2,
            "{path}: an existing account answers in {existing:?}, a missing one in {missing:?}"
        );
        eventually(
            &format!("{path}: the {ROUNDS} mails sent after the answers"),
            Duration::from_secs(30),
            || std::future::ready(mails_to_known() == before + ROUNDS),
        )
        .await;
    }
    assert!(
        sink.recipients().iter().all(|r| r == known),
        "no mail to a missing account: {:?}",
        sink.recipients()
    );
    panel.shutdown().await;
}

/// A panel believing `X-Forwarded-For` from loopback, with `limits`; its outbox.
async fn behind_a_proxy(kind: DbKind, limits: &str) -> (tempfile::TempDir, api::Panel, PathBuf) {
    let (dir, _pki, mut config) = tests::roomy_setup(kind).await;
    config.security.trusted_proxies = vec![api::config::Cidr::parse("127.0.0.1").unwrap()];
    config.security.rate_limits = RateLimits::parse(limits).unwrap();
    let outbox = config.security.outbox_dir.clone();
    (dir, api::Panel::start(config).await.unwrap(), outbox)
}

/// POSTs `body` to `path` as if from `ip` (through the trusted proxy).
async fn post_from(
    http: &reqwest::Client,
    panel: &api::Panel,
    ip: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let response = http
        .post(format!("http://{}{path}", panel.http_addr))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

/// Item 14: an IPv6 client counts by its /64 for per-IP limits and the block list; failures on
/// one account from many addresses throttle unfamiliar places, never the owner's network.
async fn ipv6_counts_by_64_and_accounts_are_throttled(kind: DbKind) {
    let (_dir, panel, outbox) = behind_a_proxy(kind, "register=3/1h,login=1000/15m").await;
    let http = reqwest::Client::new();
    let register = |ip: String, n: usize| {
        let (http, panel) = (&http, &panel);
        async move {
            let body = json!({"email": format!("r{n}@example.com"), "password": PASSWORD});
            post_from(http, panel, &ip, "/api/auth/register", body)
                .await
                .0
        }
    };
    for n in 1..=3 {
        assert_eq!(
            register(format!("2001:db8:1:2::{n:x}"), n).await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        register("2001:db8:1:2:ffff:1:2:3".into(), 4).await,
        StatusCode::TOO_MANY_REQUESTS,
        "another address of the same /64 shares its window"
    );
    assert_eq!(
        register("2001:db8:1:3::1".into(), 5).await,
        StatusCode::CREATED,
        "the next /64 is another client"
    );

    // Ten failures from rotating addresses of one /64 block the whole /64.
    let rest = Rest::new(format!("http://{}", panel.http_addr));
    rest.register_verified(&outbox, "v6@example.com").await;
    let login = |ip: String, email: String, password: &'static str| {
        let (http, panel) = (&http, &panel);
        async move {
            let body = json!({"email": email, "password": password});
            post_from(http, panel, &ip, "/api/auth/login", body).await
        }
    };
    for n in 0..10 {
        let (status, _, _) = login(
            format!("2001:db8:9:9::{n:x}"),
            format!("nobody{n}@example.com"),
            "wrong password!",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry, _) = login(
        "2001:db8:9:9:abcd::1".into(),
        "v6@example.com".into(),
        PASSWORD,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the /64 is blocked");
    assert!(retry.is_some());
    let (status, _, body) =
        login("2001:db8:9:a::1".into(), "v6@example.com".into(), PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "another /64: {body}");

    // The owner logs in from home once; then an attacker guesses from many addresses.
    rest.register_verified(&outbox, "victim@example.com").await;
    let victim = || "victim@example.com".to_owned();
    let home = "192.0.2.50".to_owned();
    assert_eq!(
        login(home.clone(), victim(), PASSWORD).await.0,
        StatusCode::OK
    );
    for n in 0..20 {
        let (status, _, _) = login(format!("198.18.0.{n}"), victim(), "guess one two three").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}");
    }
    for password in ["guess one two three", PASSWORD] {
        let (status, retry, body) = login("198.18.1.1".into(), victim(), password).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
            "a fresh address meets the account's throttle before any password check"
        );
        assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s > 0)));
    }
    let (status, _, body) = login(home, victim(), PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the owner is not locked out: {body}"
    );
    panel.shutdown().await;
}

/// Item 21: with 300 failed logins in flight from 300 addresses the hashing queue sheds what is
/// over its bound at once (503 `unavailable`, `Retry-After`), and a correct login meanwhile
/// gets an answer, a token or that 503, within a generous cap (the goal is 1 s; unbounded, it
/// waited for the whole queue); from a network that logged into the account before, a token.
async fn a_login_flood_is_shed_and_a_correct_login_answers(kind: DbKind) {
    tests::raise_open_files_limit();
    let (_dir, panel, outbox) = behind_a_proxy(kind, "login=1000/1m,register=1000/1m").await;
    let rest = Rest::new(format!("http://{}", panel.http_addr));
    rest.register_verified(&outbox, "owner@example.com").await;
    let http = reqwest::Client::new();
    let body = json!({"email": "owner@example.com", "password": PASSWORD});
    let (status, _, _) = post_from(&http, &panel, "192.0.2.1", "/api/auth/login", body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the owner logs in from home before the flood"
    );
    // 300 workers keep a failed login each in flight, every one from a new address for a new
    // unknown email, until told to stop (at most 500 each).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..300u32)
        .map(|worker| {
            let (http, url) = (http.clone(), format!("http://{}/api/auth/login", panel.http_addr));
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut refused, mut shed, mut odd) = (0u64, 0u64, Vec::new());
                for k in 0..500u32 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let n = worker * 500 + k;
                    let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
                    let body = json!({"email": format!("flood{n}@example.com"), "password": "wrong password!"});
                    let response = http.post(&url).header("x-forwarded-for", ip).json(&body).send().await.unwrap();
                    let status = response.status();
                    let retry = response.headers().contains_key("retry-after");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    match (status, body["error"]["code"].as_str()) {
                        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")) => refused += 1,
                        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")) if retry => shed += 1,
                        _ => odd.push(format!("{status} {body}")),
                    }
                }
                (refused, shed, odd)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let correct = |ip: &'static str| {
        let (http, panel) = (&http, &panel);
        async move {
            let start = Instant::now();
            let body = json!({"email": "owner@example.com", "password": PASSWORD});
            let (status, _, body) = post_from(http, panel, ip, "/api/auth/login", body).await;
            (status, body, start.elapsed())
        }
    };
    // From a fresh address: a token or an immediate 503.
    let (status, body, waited) = correct("192.0.2.200").await;
    assert!(
        status == StatusCode::OK
            || (status == StatusCode::SERVICE_UNAVAILABLE
                && body["error"]["code"] == "unavailable"),
        "{status}: {body}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "a correct login waited {waited:?} during the flood"
    );
    // From the owner's own network: places the flood cannot take, so a token.
    let (status, body, waited) = correct("192.0.2.1").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the owner's network during the flood: {body}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the owner waited {waited:?} during the flood"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut shed) = (0, 0);
    for task in flood {
        let (r, s, odd) = task.await.unwrap();
        assert!(odd.is_empty(), "flood logins answered otherwise: {odd:?}");
        (refused, shed) = (refused + r, shed + s);
    }
    assert!(refused > 0, "some flood logins were hashed and refused");
    assert!(shed > 0, "the queue is bounded: flood logins were shed");
    let (_, metrics) = tests::http_get(panel.http_addr, "/metrics").await;
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mamba_argon2_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        counted >= shed,
        "mamba_argon2_shed_total {counted} < {shed}"
    );
    panel.shutdown().await;
}

crate::on_both_databases!(
    mail_endpoints_take_the_same_time_for_any_email,
    ipv6_counts_by_64_and_accounts_are_throttled,
    a_login_flood_is_shed_and_a_correct_login_answers,
);
