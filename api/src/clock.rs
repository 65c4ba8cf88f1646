//! The panel's time, injected: every service asks its [`Clock`] rather than the system, so
//! tests move time instead of sleeping through it. [`SystemClock`] is the real one;
//! [`ShiftedClock`] is the system clock moved ahead on demand (time still passes, and a test
//! can jump past a deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the panel reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Now, as the `time` crate's type (certificate validity windows use it).
    fn now_offset(&self) -> time::OffsetDateTime {
        let now = self.now();
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos()),
        )
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
    }
}

/// A clock shared by the panel's services.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock plus an offset that only grows: for tests that need a deadline to pass.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    ahead_ms: AtomicI64,
}

impl ShiftedClock {
    /// Moves the clock `by` ahead.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.ahead_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_it_was_moved() {
        let clock = ShiftedClock::default();
        let before = SystemClock.now();
        clock.advance(Duration::from_secs(3600));
        let ahead = clock.now() - before;
        assert!(ahead >= chrono::Duration::seconds(3600), "{ahead}");
        assert!(ahead < chrono::Duration::seconds(3660), "{ahead}");
    }
}
