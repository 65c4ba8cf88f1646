//! Rate limits as the panel applies them: Redis when configured, falling back to the in-memory
//! limiter (never to "unlimited") when Redis fails, with a log line and a metric. When Redis
//! does not answer at start, a background task keeps connecting and Redis is used as soon as it
//! answers; `/health` says `down` meanwhile.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use security::limiter::{Decision, Limiter, MemoryLimiter, RedisLimiter, Rule};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// The first wait between connection attempts to a Redis that did not answer at start.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between them.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// The panel's limiter.
pub struct Limits {
    /// Whether `REDIS_URL` is set.
    configured: bool,
    /// Set once a connection is made (at start, or later by the connector task).
    redis: Arc<OnceLock<RedisLimiter>>,
    memory: MemoryLimiter,
    metrics: Metrics,
    last_warning_ms: AtomicI64,
    /// Stops the connector task when the panel's state goes.
    _connector: Option<DropGuard>,
    /// Where windows read the time.
    clock: SharedClock,
}

impl Limits {
    /// Connects to Redis when `redis_url` is set; if it cannot, limits are kept in memory and a
    /// background task keeps trying until it can (then the connection manager reconnects by
    /// itself).
    pub async fn new(
        redis_url: Option<&str>,
        key_prefix: &str,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Limits {
        let redis = Arc::new(OnceLock::new());
        let mut connector = None;
        if let Some(url) = redis_url {
            match RedisLimiter::connect(url, key_prefix).await {
                Ok(limiter) => {
                    let _ = redis.set(limiter);
                }
                Err(e) => {
                    tracing::error!(error = %e, "REDIS_URL: cannot connect; rate limits are kept in memory until it answers");
                    let stop = CancellationToken::new();
                    tokio::spawn(connect_later(
                        url.to_owned(),
                        key_prefix.to_owned(),
                        redis.clone(),
                        stop.clone(),
                    ));
                    connector = Some(stop.drop_guard());
                }
            }
        }
        Limits {
            configured: redis_url.is_some(),
            redis,
            memory: MemoryLimiter::new(),
            metrics,
            clock,
            last_warning_ms: AtomicI64::new(0),
            _connector: connector,
        }
    }

    /// Now on the panel's clock, in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Counts a request; never fails.
    pub async fn check(&self, key: &str, rule: Rule) -> Decision {
        let now = self.now_ms();
        match self.redis.get() {
            Some(redis) => match redis.check(key, rule, now).await {
                Ok(decision) => return decision,
                Err(e) => self.fell_back(&e),
            },
            None if self.configured => self.metrics.limiter_fallbacks.inc(),
            None => {}
        }
        self.memory_check(key, rule, now).await
    }

    /// Blocks `id` for `duration`.
    pub async fn block(&self, id: &str, duration: Duration) {
        let now = self.now_ms();
        if let Some(redis) = self.redis.get() {
            match redis.block(id, duration, now).await {
                Ok(()) => return,
                Err(e) => self.fell_back(&e),
            }
        }
        let _ = self.memory.block(id, duration, now).await;
    }

    /// Whether `id` is blocked.
    pub async fn is_blocked(&self, id: &str) -> bool {
        let now = self.now_ms();
        if let Some(redis) = self.redis.get() {
            match redis.is_blocked(id, now).await {
                Ok(blocked) => return blocked,
                Err(e) => self.fell_back(&e),
            }
        }
        self.memory.is_blocked(id, now).await.unwrap_or(false)
    }

    /// `ok`, `down` or `disabled`, for `/health`.
    pub async fn redis_status(&self) -> RedisStatus {
        match self.redis.get() {
            None if self.configured => RedisStatus::Down,
            None => RedisStatus::Disabled,
            Some(redis) => match redis.ping().await {
                Ok(()) => RedisStatus::Ok,
                Err(_) => RedisStatus::Down,
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
        let now = self.now_ms();
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

/// Connects to `url` until it answers (backing off to [`LAST_RETRY`]) or `stop` is cancelled.
async fn connect_later(
    url: String,
    prefix: String,
    redis: Arc<OnceLock<RedisLimiter>>,
    stop: CancellationToken,
) {
    let mut wait = FIRST_RETRY;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match RedisLimiter::connect(&url, &prefix).await {
            Ok(limiter) => {
                let _ = redis.set(limiter);
                tracing::info!("REDIS_URL: connected; rate limits are kept in Redis from now on");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "REDIS_URL: still no answer"),
        }
        wait = (wait * 2).min(LAST_RETRY);
    }
}

/// Whether Redis answers (`/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedisStatus {
    /// It answers.
    Ok,
    /// None is configured: the in-memory limiter is used.
    Disabled,
    /// It does not answer: the in-memory limiter stands in.
    Down,
}
