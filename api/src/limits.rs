//! Rate limits as the panel applies them: Redis when configured, falling back to the in-memory
//! limiter (never to "unlimited") when Redis fails, with a log line and a metric.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use security::limiter::{Decision, Limiter, MemoryLimiter, RedisLimiter, Rule};

use crate::metrics::Metrics;

/// The panel's limiter.
pub struct Limits {
    redis: Option<RedisLimiter>,
    memory: MemoryLimiter,
    metrics: Metrics,
    last_warning_ms: AtomicI64,
}

impl Limits {
    /// Connects to Redis when `redis_url` is set; if it cannot, limits are kept in memory
    /// until it can (the connection manager keeps trying).
    pub async fn new(redis_url: Option<&str>, key_prefix: &str, metrics: Metrics) -> Limits {
        let redis = match redis_url {
            None => None,
            Some(url) => match RedisLimiter::connect(url, key_prefix).await {
                Ok(limiter) => Some(limiter),
                Err(e) => {
                    tracing::error!(error = %e, "REDIS_URL: cannot connect; rate limits are kept in memory");
                    None
                }
            },
        };
        Limits {
            redis,
            memory: MemoryLimiter::new(),
            metrics,
            last_warning_ms: AtomicI64::new(0),
        }
    }

    /// Counts a request; never fails.
    pub async fn check(&self, key: &str, rule: Rule) -> Decision {
        let now = now_ms();
        if let Some(redis) = &self.redis {
            match redis.check(key, rule, now).await {
                Ok(decision) => return decision,
                Err(e) => self.fell_back(&e),
            }
        }
        self.memory_check(key, rule, now).await
    }

    /// Blocks `id` for `duration`.
    pub async fn block(&self, id: &str, duration: Duration) {
        let now = now_ms();
        if let Some(redis) = &self.redis {
            match redis.block(id, duration, now).await {
                Ok(()) => return,
                Err(e) => self.fell_back(&e),
            }
        }
        let _ = self.memory.block(id, duration, now).await;
    }

    /// Whether `id` is blocked.
    pub async fn is_blocked(&self, id: &str) -> bool {
        let now = now_ms();
        if let Some(redis) = &self.redis {
            match redis.is_blocked(id, now).await {
                Ok(blocked) => return blocked,
                Err(e) => self.fell_back(&e),
            }
        }
        self.memory.is_blocked(id, now).await.unwrap_or(false)
    }

    /// `ok`, `down` or `disabled`, for `/health`.
    pub async fn redis_status(&self) -> &'static str {
        match &self.redis {
            None => "disabled",
            Some(redis) => match redis.ping().await {
                Ok(()) => "ok",
                Err(_) => "down",
            },
        }
    }

    async fn memory_check(&self, key: &str, rule: Rule, now: i64) -> Decision {
        match self.memory.check(key, rule, now).await {
            Ok(decision) => decision,
            // The in-memory limiter has no failure mode; refuse rather than let traffic through.
            Err(_) => Decision {
                allowed: false,
                limit: rule.limit,
                remaining: 0,
                reset_at_ms: now + 1000,
            },
        }
    }

    fn fell_back(&self, error: &security::Error) {
        self.metrics.limiter_fallbacks.inc();
        let now = now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now - last > 10_000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, "Redis rate limiter failed; using in-memory limits");
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
