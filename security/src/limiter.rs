//! Sliding-window rate limits: one [`Limiter`] trait, a Redis implementation (one Lua script,
//! atomic, one round trip per check, keys expire with their window) and an in-memory one (for a
//! single process, and as the fallback when Redis is unreachable — never "unlimited").
//!
//! A window is a log of the times of admitted requests: a request is admitted when fewer than
//! `limit` entries are younger than `window`; the slot of an entry frees exactly `window` after
//! it was admitted. Both implementations take the current time from the caller, so they agree
//! on every edge and tests can move the clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use crate::Error;
use crate::redis_link::{Conn, Target, Timeouts, hash_tag};

/// A boxed future, so the trait can be used as `dyn Limiter`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Requests admitted per window (at least 1).
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

impl Rule {
    /// Parses `5/15m`, `3/1h`, `100/1m`, `10/30s`. A zero count or window is refused:
    /// limits cannot be turned off.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let (count, window) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not <count>/<window>"))?;
        let limit: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: bad count"))?;
        let window = window.trim();
        let split = window
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(window.len());
        let (n, unit) = window.split_at(split);
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| format!("{text:?}: bad window"))?
        };
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("{text:?}: window unit must be s, m, h or d")),
        };
        if limit == 0 || secs == 0 {
            return Err(format!("{text:?}: limits cannot be zero"));
        }
        Ok(Rule {
            limit,
            window: Duration::from_secs(secs),
        })
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The rule's limit.
    pub limit: u32,
    /// Requests still admitted in the current window after this one.
    pub remaining: u32,
    /// When the oldest entry ages out and a slot frees (Unix milliseconds).
    pub reset_at_ms: i64,
}

impl Decision {
    /// Whole seconds until a slot frees (at least 1), for `Retry-After`.
    pub fn retry_after_secs(&self, now_ms: i64) -> u64 {
        let ms = (self.reset_at_ms - now_ms).max(0) as u64;
        ms.div_ceil(1000).max(1)
    }
}

/// A rate limiter with a block list.
pub trait Limiter: Send + Sync {
    /// Counts a request under `key` at `now_ms` against `rule`.
    fn check<'a>(
        &'a self,
        key: &'a str,
        rule: Rule,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Decision, Error>>;
    /// Blocks `id` for `duration` from `now_ms`.
    fn block<'a>(
        &'a self,
        id: &'a str,
        duration: Duration,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// Whether `id` is blocked at `now_ms`.
    fn is_blocked<'a>(&'a self, id: &'a str, now_ms: i64) -> BoxFuture<'a, Result<bool, Error>>;
}

/// The in-memory limiter. Forgets a key once its newest entry (or its block) has aged out,
/// found through a min-heap holding one due time per key, so each request does a bounded
/// amount of forgetting however many keys there are; memory stays bounded by the keys active
/// within their windows.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Each key's admitted times and its window (ms).
    windows: HashMap<String, (VecDeque<i64>, i64)>,
    /// Blocked ids and until when.
    blocks: HashMap<String, i64>,
    /// (when, key) at which a window or block may have aged out, one per key.
    expiries: BinaryHeap<Reverse<(i64, Expiry)>>,
}

/// What an expiry entry is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Expiry {
    /// A key of `windows`.
    Window(String),
    /// An id of `blocks`.
    Block(String),
}

/// Expiry entries looked at per call at most: the rest waits for the next calls.
const PRUNE_PER_CALL: usize = 64;

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys and blocks held now (for tests and metrics).
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.windows.len() + state.blocks.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every entry is complete when the lock is released; a panic elsewhere leaves nothing
        // half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_now(&self, key: &str, rule: Rule, now_ms: i64) -> Decision {
        let mut state = self.lock();
        state.prune(now_ms);
        let window = rule.window_ms();
        if !state.windows.contains_key(key) {
            // One expiry entry per key: when it comes due the key goes or is due again later.
            state
                .windows
                .insert(key.to_owned(), (VecDeque::new(), window));
            state
                .expiries
                .push(Reverse((now_ms + window, Expiry::Window(key.to_owned()))));
        }
        let Some((log, kept_window)) = state.windows.get_mut(key) else {
            unreachable!("inserted above");
        };
        *kept_window = window;
        let horizon = now_ms - window;
        while log.front().is_some_and(|&t| t <= horizon) {
            log.pop_front();
        }
        let allowed = (log.len() as u64) < u64::from(rule.limit);
        if allowed {
            log.push_back(now_ms);
        }
        let used = u32::try_from(log.len()).unwrap_or(u32::MAX);
        Decision {
            allowed,
            limit: rule.limit,
            remaining: rule.limit.saturating_sub(used),
            reset_at_ms: log.front().copied().unwrap_or(now_ms) + window,
        }
    }
}

impl MemoryState {
    /// Forgets what has aged out by `now_ms`, looking at most at [`PRUNE_PER_CALL`] entries.
    fn prune(&mut self, now_ms: i64) {
        for _ in 0..PRUNE_PER_CALL {
            match self.expiries.peek() {
                Some(Reverse((at, _))) if *at <= now_ms => {}
                _ => return,
            }
            let Some(Reverse((_, what))) = self.expiries.pop() else {
                return;
            };
            // Each key has one entry: gone when aged out, due again at its new end otherwise.
            let due_again = match &what {
                Expiry::Window(key) => match self.windows.get(key) {
                    Some((log, window)) => match log.back() {
                        Some(&newest) if newest + window > now_ms => Some(newest + window),
                        _ => {
                            self.windows.remove(key);
                            None
                        }
                    },
                    None => None,
                },
                Expiry::Block(id) => match self.blocks.get(id) {
                    Some(&until) if until > now_ms => Some(until),
                    Some(_) => {
                        self.blocks.remove(id);
                        None
                    }
                    None => None,
                },
            };
            if let Some(at) = due_again {
                self.expiries.push(Reverse((at, what)));
            }
        }
    }
}

impl Limiter for MemoryLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        rule: Rule,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Decision, Error>> {
        Box::pin(async move { Ok(self.check_now(key, rule, now_ms)) })
    }

    fn block<'a>(
        &'a self,
        id: &'a str,
        duration: Duration,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let until =
                now_ms.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2));
            let mut state = self.lock();
            state.prune(now_ms);
            if state.blocks.insert(id.to_owned(), until).is_none() {
                state
                    .expiries
                    .push(Reverse((until, Expiry::Block(id.to_owned()))));
            }
            Ok(())
        })
    }

    fn is_blocked<'a>(&'a self, id: &'a str, now_ms: i64) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut state = self.lock();
            state.prune(now_ms);
            Ok(state.blocks.get(id).is_some_and(|&until| until > now_ms))
        })
    }
}

/// The sliding window in one atomic script: drop entries that aged out, admit if there is
/// room, refresh the key's expiry, and report what is left and when the oldest entry leaves.
const SLIDING_WINDOW: &str = r#"
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, member)
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', key, window)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local reset = now + window
if oldest[2] then reset = tonumber(oldest[2]) + window end
return {allowed, limit - count, reset}
"#;

/// The Redis limiter, on one server or a cluster ([`crate::redis_link`]). Each call touches
/// one key, named `<prefix>rl:<key>` or `<prefix>block:<id>`. On a cluster the key or id is
/// a hash tag of the whole of it (`<prefix>rl:{<key>}`, [`hash_tag`]), so its slot follows
/// from all of it and never from braces a client put in its input; one server keeps the
/// plain names, so an upgrade keeps every window, block and remembered network.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: Conn,
    script: redis::Script,
    prefix: String,
    /// Whether keys carry hash tags (on a cluster).
    tagged: bool,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to `url` (`redis://…` or `redis-cluster://…`).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLimiter, Error> {
        let timeouts = Timeouts {
            connect: Duration::from_millis(500),
            response: Duration::from_millis(500),
        };
        let target = Target::parse(url)?;
        let tagged = target.is_cluster();
        let connection = target.connect(Some(timeouts)).await?;
        Ok(RedisLimiter {
            connection,
            script: redis::Script::new(SLIDING_WINDOW),
            prefix: prefix.to_owned(),
            tagged,
        })
    }

    /// PING (every primary of a cluster).
    pub async fn ping(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(|e| Error::Limiter(e.to_string()))
    }

    /// The key of `key`'s window.
    pub fn window_key(&self, key: &str) -> String {
        format!("{}rl:{}", self.prefix, self.name(key))
    }

    /// The key of `id`'s block.
    pub fn block_key(&self, id: &str) -> String {
        format!("{}block:{}", self.prefix, self.name(id))
    }

    fn name(&self, text: &str) -> String {
        if self.tagged {
            hash_tag(text)
        } else {
            text.to_owned()
        }
    }
}

impl Limiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        rule: Rule,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Decision, Error>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let member = format!("{now_ms}-{:016x}", rand::random::<u64>());
            let (allowed, remaining, reset_at_ms): (i64, i64, i64) = self
                .script
                .key(self.window_key(key))
                .arg(now_ms)
                .arg(rule.window_ms())
                .arg(rule.limit)
                .arg(member)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| Error::Limiter(e.to_string()))?;
            Ok(Decision {
                allowed: allowed == 1,
                limit: rule.limit,
                remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
                reset_at_ms,
            })
        })
    }

    fn block<'a>(
        &'a self,
        id: &'a str,
        duration: Duration,
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let ms = u64::try_from(duration.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            redis::cmd("SET")
                .arg(self.block_key(id))
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| Error::Limiter(e.to_string()))
        })
    }

    fn is_blocked<'a>(&'a self, id: &'a str, _now_ms: i64) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            redis::cmd("EXISTS")
                .arg(self.block_key(id))
                .query_async::<bool>(&mut connection)
                .await
                .map_err(|e| Error::Limiter(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_cannot_be_zero() {
        assert_eq!(
            Rule::parse("5/15m").unwrap(),
            Rule {
                limit: 5,
                window: Duration::from_secs(900)
            }
        );
        assert_eq!(
            Rule::parse("3/1h").unwrap().window,
            Duration::from_secs(3600)
        );
        assert_eq!(
            Rule::parse("100/m").unwrap().window,
            Duration::from_secs(60)
        );
        for bad in ["0/1m", "5/0s", "5", "x/1m", "5/1w", ""] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_forgets_keys_by_time_not_by_scanning() {
        let limiter = MemoryLimiter::new();
        let second = Rule {
            limit: 2,
            window: Duration::from_secs(1),
        };
        let hour = Rule {
            limit: 2,
            window: Duration::from_secs(3600),
        };
        for i in 0..20_000 {
            limiter.check_now(&format!("client-{i}"), second, 0);
        }
        limiter.check_now("long", hour, 0);
        let blocked = futures_lite_block(limiter.block("b", Duration::from_millis(2_000), 0));
        assert!(blocked.is_ok());
        assert_eq!(limiter.len(), 20_002);
        // Within the window nothing is forgotten.
        limiter.check_now("client-0", second, 999);
        assert_eq!(limiter.len(), 20_002);
        // Past it each call forgets a bounded batch; enough calls forget them all, but not the
        // key whose window is an hour.
        let mut calls = 0;
        while limiter.len() > 2 && calls < 1_000 {
            limiter.check_now("probe", second, 5_000);
            calls += 1;
        }
        assert_eq!(
            limiter.len(),
            2,
            "probe and long remain after {calls} calls"
        );
        assert!(calls <= 20_002 / PRUNE_PER_CALL + 2, "{calls} calls");
        assert!(limiter.check_now("long", hour, 5_000).remaining == 0);
    }

    /// Polls a future that never waits (the in-memory limiter's) to completion.
    fn futures_lite_block<T>(future: BoxFuture<'_, T>) -> T {
        let mut future = future;
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the in-memory limiter never waits"),
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let d = Decision {
            allowed: false,
            limit: 1,
            remaining: 0,
            reset_at_ms: 10_001,
        };
        assert_eq!(d.retry_after_secs(9_000), 2);
        assert_eq!(d.retry_after_secs(10_001), 1);
    }
}
