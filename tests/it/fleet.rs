//! Panel replicas on one PostgreSQL and one Redis (issue 16, first parts): a rate limit is one
//! limit across the replicas, whichever one a client reaches.

use reqwest::StatusCode;
use serde_json::json;
use tests::DbKind;

/// Two replicas share `register=3/1h` per client address: two registrations through one and
/// one through the other use it up, and the fourth is refused by either, with the same
/// `Retry-After` horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_one_limit_across_replicas() {
    let (_dir, _pki, mut config) = tests::roomy_setup(DbKind::Postgres).await;
    config.security.redis_url =
        Some(std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)"));
    config.security.redis_key_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    config.security.rate_limits =
        api::config::RateLimits::parse("register=3/1h").expect("a valid rule");
    config.security.trusted_proxies = vec![api::config::Cidr::parse("127.0.0.1").unwrap()];
    let a = api::Panel::start(config.clone()).await.unwrap();
    let b = api::Panel::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let register = |panel: &api::Panel, n: usize| {
        http.post(format!("http://{}/api/auth/register", panel.http_addr))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"email": format!("fleet{n}@example.com"), "password": "a long enough passphrase"}))
            .send()
    };
    let mut answered = Vec::new();
    for (n, panel) in [&a, &b, &a].into_iter().enumerate() {
        let response = register(panel, n).await.unwrap();
        answered.push(response.status());
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            (2 - n).to_string().as_str(),
            "the count goes on across replicas"
        );
    }
    assert_eq!(answered, [StatusCode::CREATED; 3]);
    for panel in [&a, &b] {
        let response = register(panel, 9).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    }
    a.shutdown().await;
    b.shutdown().await;
}
