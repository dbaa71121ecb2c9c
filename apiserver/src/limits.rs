//! What one caller, and everyone together, may hold of the server: a request rate per
//! identity (a token bucket) and a number of open watches per identity and in total. The
//! HTTP-level limits (header and body timeouts, connections) live in
//! `kohakuriver_tls::HttpLimits`, which both of our servers share.
//!
//! The decisions are pure ([`TokenBucket::take`] takes `now`); [`RateLimiter`] and
//! [`WatchCounter`] are the shared handles that keep their state under a std `Mutex` (held
//! for a map lookup, never across an `.await`).
//!
//! Per-identity limits need identities: under `--insecure-no-auth` every caller is the one
//! `anonymous`, so they are off and only the total watch cap holds. Controllers and nodes
//! are never rate limited: their load follows the cluster's size, not a script's loop, and
//! throttling them would slow every task rather than the one runaway caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_tls::HttpLimits;

use crate::error::AppError;

/// How long a refused watch is told to wait before trying again.
const WATCH_RETRY_AFTER_SECONDS: u32 = 5;

/// Every limit of the API server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Header and body timeouts and the connection cap (`--header-timeout`,
    /// `--body-timeout`, `--max-connections`).
    pub http: HttpLimits,
    /// Requests per second each identity may make (`--rate-limit`, default 100; 0 = off).
    pub rate_per_second: u32,
    /// How many requests an identity may make at once above its rate (`--rate-burst`,
    /// default 200).
    pub rate_burst: u32,
    /// Open watches per identity (`--max-watches-per-identity`, default 100).
    pub watches_per_identity: usize,
    /// Open watches in total (`--max-watches`, default 2000).
    pub watches_total: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            http: HttpLimits::server(),
            rate_per_second: 100,
            rate_burst: 200,
            watches_per_identity: 100,
            watches_total: 2000,
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second, one taken per
/// request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket at `now` (any monotonic time, the same clock on every call).
    pub fn full(burst: u32, now: Duration) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    /// Takes a token if there is one at `now`; otherwise says how long until there is.
    pub fn take(&mut self, rate: u32, burst: u32, now: Duration) -> Result<(), Duration> {
        let rate = f64::from(rate.max(1));
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Whether `identity` is rate limited at all (see the module doc).
pub fn rate_limited(identity: &Identity) -> bool {
    !matches!(identity.role, Role::Controllers | Role::Node)
}

/// One token bucket per identity name.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate: u32,
    burst: u32,
    buckets: Arc<Mutex<HashMap<String, TokenBucket>>>,
    started: tokio::time::Instant,
}

impl RateLimiter {
    /// A limiter of `rate` requests per second with bursts of `burst`; `rate` 0 is off.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(rate).max(1),
            buckets: Arc::default(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Counts one request of `identity`: 429 with `Retry-After` when its bucket is empty.
    pub fn check(&self, identity: &Identity) -> Result<(), AppError> {
        if self.rate == 0 || !rate_limited(identity) {
            return Ok(());
        }
        let now = self.started.elapsed();
        let taken = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets
                .entry(identity.name.clone())
                .or_insert_with(|| TokenBucket::full(self.burst, now))
                .take(self.rate, self.burst, now)
        };
        taken.map_err(|wait| {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
            AppError::too_many_requests(
                format!(
                    "{:?} is over its request rate of {} per second (bursts of {}); retry after {seconds}s, or ask the operator to raise the server's --rate-limit/--rate-burst",
                    identity.name, self.rate, self.burst
                ),
                seconds,
            )
        })
    }
}

/// Open watches, per identity name and in total.
#[derive(Clone, Debug)]
pub struct WatchCounter {
    per_identity: usize,
    total: usize,
    open: Arc<Mutex<WatchCounts>>,
}

#[derive(Debug, Default)]
struct WatchCounts {
    total: usize,
    by_identity: HashMap<String, usize>,
}

/// Holds one open watch; dropping it (when the watch's stream ends) frees it.
#[derive(Debug)]
pub struct WatchGuard {
    identity: Option<String>,
    open: Arc<Mutex<WatchCounts>>,
}

impl WatchCounter {
    /// At most `per_identity` watches per identity and `total` in all.
    pub fn new(per_identity: usize, total: usize) -> WatchCounter {
        WatchCounter {
            per_identity,
            total,
            open: Arc::default(),
        }
    }

    /// Opens a watch for `identity` (`None` when there are no identities, i.e. without
    /// authentication: only the total counts), or refuses it with 429.
    pub fn open(&self, identity: Option<&str>) -> Result<WatchGuard, AppError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err(AppError::too_many_requests(
                format!(
                    "the server already serves {} watches, its limit; retry after {WATCH_RETRY_AFTER_SECONDS}s, or raise the server's --max-watches",
                    self.total
                ),
                WATCH_RETRY_AFTER_SECONDS,
            ));
        }
        if let Some(name) = identity {
            let mine = open.by_identity.get(name).copied().unwrap_or(0);
            if mine >= self.per_identity {
                return Err(AppError::too_many_requests(
                    format!(
                        "{name:?} already has {mine} open watches, its limit; close one (or retry after {WATCH_RETRY_AFTER_SECONDS}s), or raise the server's --max-watches-per-identity"
                    ),
                    WATCH_RETRY_AFTER_SECONDS,
                ));
            }
            *open.by_identity.entry(name.to_string()).or_insert(0) += 1;
        }
        open.total += 1;
        Ok(WatchGuard {
            identity: identity.map(str::to_string),
            open: self.open.clone(),
        })
    }

    /// How many watches are open (for tests and logs).
    pub fn total(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(name) = &self.identity
            && let Some(n) = open.by_identity.get_mut(name)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_identity.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::full(3, ms(0));
        for _ in 0..3 {
            assert_eq!(bucket.take(10, 3, ms(0)), Ok(()));
        }
        // Empty: the next token comes in 1/10 s.
        assert_eq!(bucket.take(10, 3, ms(0)), Err(ms(100)));
        assert_eq!(
            bucket.take(10, 3, ms(50)).map_err(|d| d.as_millis()),
            Err(50)
        );
        assert_eq!(bucket.take(10, 3, ms(100)), Ok(()));
        // A long pause refills only up to the burst.
        let mut later = bucket;
        for _ in 0..3 {
            assert_eq!(later.take(10, 3, ms(60_000)), Ok(()));
        }
        assert!(later.take(10, 3, ms(60_000)).is_err());
        // A clock read out of order never adds tokens.
        assert!(later.take(10, 3, ms(59_000)).is_err());
    }

    #[test]
    fn controllers_and_nodes_are_not_rate_limited() {
        assert!(rate_limited(&Identity::new("alice", Role::User)));
        assert!(rate_limited(&Identity::new("root", Role::Admin)));
        assert!(!rate_limited(&Identity::new("c", Role::Controllers)));
        assert!(!rate_limited(&Identity::new("gpu-01", Role::Node)));
    }

    #[test]
    fn watches_are_capped_per_identity_and_in_total_until_released() {
        let counter = WatchCounter::new(2, 3);
        let a1 = counter.open(Some("a")).unwrap();
        let _a2 = counter.open(Some("a")).unwrap();
        let e = counter.open(Some("a")).unwrap_err();
        assert_eq!(e.0.code, 429);
        assert!(e.0.message.contains("--max-watches-per-identity"), "{e}");
        let _b = counter.open(Some("b")).unwrap();
        let e = counter.open(None).unwrap_err();
        assert!(e.0.message.contains("3 watches"), "{e}");
        assert!(e.0.message.contains("--max-watches"), "{e}");
        drop(a1);
        assert_eq!(counter.total(), 2);
        let _a3 = counter.open(Some("a")).unwrap();
    }
}
