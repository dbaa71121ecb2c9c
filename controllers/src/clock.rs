//! Time behind a trait, so lifecycle decisions are tested without sleeping.
//!
//! Decisions take `now` as an argument; only the loops ask a [`Clock`] for it. Tests use
//! [`FakeClock`] and move it forward by hand.

use std::sync::{Arc, Mutex};

use kohakuriver_api::meta::Timestamp;

/// Where the loops get the time from.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time (for timestamps written into objects and for deadlines users set).
    fn now(&self) -> Timestamp;
    /// A monotonic reading from an arbitrary origin: never goes back when the wall clock
    /// is set, so intervals measured with it (how long a node has been silent) are sound.
    fn elapsed(&self) -> std::time::Duration;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }

    fn elapsed(&self) -> std::time::Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// A clock that only moves when told to. Cheap to clone; clones share the time.
#[derive(Clone, Debug)]
pub struct FakeClock {
    // A std mutex: it guards one copy of a timestamp and is never held across an await.
    now: Arc<Mutex<Timestamp>>,
    /// The time it was made at: its monotonic reading is `now - start`.
    start: Timestamp,
}

impl FakeClock {
    /// A clock showing `now`.
    pub fn new(now: Timestamp) -> FakeClock {
        FakeClock {
            now: Arc::new(Mutex::new(now)),
            start: now,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self) -> std::time::Duration {
        until(self.start, self.now())
    }
}

/// `later - now` as a std duration, zero when `later` is past.
pub fn until(now: Timestamp, later: Timestamp) -> std::time::Duration {
    (later - now).to_std().unwrap_or_default()
}

/// `t + d`, saturating.
pub fn plus(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let start = chrono::DateTime::UNIX_EPOCH;
        let c = FakeClock::new(start);
        assert_eq!(c.now(), start);
        c.advance(std::time::Duration::from_secs(5));
        assert_eq!(until(start, c.now()).as_secs(), 5);
        assert_eq!(until(c.now(), start).as_secs(), 0);
    }
}
