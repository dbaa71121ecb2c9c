//! Time behind a trait, so lifecycle decisions are tested without sleeping.
//!
//! Decisions take `now` as an argument; only the loops ask a [`Clock`] for it. Unit tests of
//! code that reads a clock use [`FakeClock`] and move it forward by hand. Tests of the
//! running loops use [`TokioClock`] on a paused runtime (`#[tokio::test(start_paused =
//! true)]`): the loops sleep on tokio timers, so the time they read must move with those
//! timers, and on a paused runtime both move only when every task waits on one, however
//! slow the machine is.

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

/// Tokio's clock, read as wall time from where the clock was made. On a paused runtime
/// (`start_paused`, or `tokio::time::pause`) it is virtual: it moves only when every task
/// is waiting on a timer (tokio then jumps to the next one) or the test calls
/// `tokio::time::advance`, and it never moves while a `spawn_blocking` job runs. So a grace
/// period, a back-off or a TTL takes the same virtual time on a loaded machine as on an
/// idle one. Outside a paused runtime it is the monotonic clock. Cheap to clone; clones
/// share the origin.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    /// The wall time at `origin`.
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the wall time now and moving with tokio's clock from here. Needs a
    /// runtime only when it is read.
    pub fn new() -> TokioClock {
        TokioClock {
            start: chrono::Utc::now(),
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        plus(self.start, self.elapsed())
    }

    fn elapsed(&self) -> std::time::Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
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

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_moves_with_paused_time_also_in_blocking_jobs() {
        let c = TokioClock::new();
        let start = c.now();
        assert_eq!(c.elapsed(), std::time::Duration::ZERO);
        // Every task waits on this timer, so the paused runtime jumps straight to it.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(c.elapsed().as_secs(), 3600);
        assert_eq!(until(start, c.now()).as_secs(), 3600);
        // The scheduler reads the clock inside `spawn_blocking`: the same virtual time.
        let blocking = tokio::task::spawn_blocking(move || c.elapsed())
            .await
            .unwrap();
        assert_eq!(blocking.as_secs(), 3600);
    }
}
