//! The two rate limiters, Redis (the real redis-server `scripts/test.sh` starts) and in-memory,
//! driven through the same script of requests with the same clock: they must agree on every
//! decision, edge included.

use std::time::Duration;

use security::limiter::{Decision, Limiter, MemoryLimiter, RedisLimiter, Rule};

async fn redis() -> RedisLimiter {
    let url = std::env::var("TEST_REDIS_URL").expect(
        "TEST_REDIS_URL is not set: run the suite with scripts/test.sh, which starts redis-server",
    );
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    RedisLimiter::connect(&url, &prefix)
        .await
        .expect("connect to the test redis-server")
}

/// (time in ms, expected allowed, expected remaining, expected reset) for 3 requests / 1 s.
const SCRIPT: &[(i64, bool, u32, i64)] = &[
    (1_000, true, 2, 2_000),
    (1_100, true, 1, 2_000),
    (1_200, true, 0, 2_000),
    (1_300, false, 0, 2_000), // limit reached
    (1_999, false, 0, 2_000), // one millisecond before the oldest entry ages out
    (2_000, true, 0, 2_100),  // the 1 000 entry left exactly now: a slot, taken at once
    (2_050, false, 0, 2_100),
    (2_100, true, 0, 2_200),
    (3_500, true, 2, 4_500), // everything aged out
];

async fn run_script(limiter: &dyn Limiter) -> Vec<Decision> {
    let rule = Rule {
        limit: 3,
        window: Duration::from_secs(1),
    };
    let mut decisions = Vec::new();
    for &(now, _, _, _) in SCRIPT {
        decisions.push(limiter.check("client-a", rule, now).await.expect("check"));
    }
    // Another key is counted apart.
    let other = limiter.check("client-b", rule, 1_300).await.expect("check");
    assert!(other.allowed && other.remaining == 2);
    decisions
}

#[tokio::test]
async fn redis_and_memory_agree_on_every_window_edge() {
    let memory = MemoryLimiter::new();
    let redis = redis().await;
    let from_memory = run_script(&memory).await;
    let from_redis = run_script(&redis).await;
    for (i, &(now, allowed, remaining, reset)) in SCRIPT.iter().enumerate() {
        let expected = Decision {
            allowed,
            limit: 3,
            remaining,
            reset_at_ms: reset,
        };
        assert_eq!(from_memory[i], expected, "memory at t={now}");
        assert_eq!(from_redis[i], expected, "redis at t={now}");
    }
    assert_eq!(from_memory[3].retry_after_secs(1_300), 1);
}

#[tokio::test]
async fn block_list_on_both() {
    let redis = redis().await;
    let memory = MemoryLimiter::new();
    for limiter in [&redis as &dyn Limiter, &memory] {
        assert!(!limiter.is_blocked("198.51.100.7", 0).await.unwrap());
        limiter
            .block("198.51.100.7", Duration::from_millis(300), 0)
            .await
            .unwrap();
        assert!(limiter.is_blocked("198.51.100.7", 10).await.unwrap());
        assert!(!limiter.is_blocked("198.51.100.8", 10).await.unwrap());
    }
    // Memory follows the caller's clock; Redis expires the key by its own.
    assert!(!memory.is_blocked("198.51.100.7", 301).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!redis.is_blocked("198.51.100.7", 0).await.unwrap());
}

#[tokio::test]
async fn redis_keys_expire_with_their_window() {
    let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL");
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let limiter = RedisLimiter::connect(&url, &prefix).await.unwrap();
    let rule = Rule {
        limit: 5,
        window: Duration::from_secs(2),
    };
    limiter.check("k", rule, 1_000).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(limiter.window_key("k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 2_000, "ttl {ttl}");
}
