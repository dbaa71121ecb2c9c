//! The per-object write budget (pure): a token bucket of `burst` tokens refilled one per
//! `refill`, as Kubernetes' event spam filter (burst 25, one token per 5 minutes). Time is a
//! monotonic `Duration` since any fixed start, so tests move it by hand.

use std::time::Duration;

/// How many writes an object may have at once, and how fast the budget comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Writes allowed in a burst (at least 1).
    pub burst: u32,
    /// One more write allowed per this long.
    pub refill: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            burst: 25,
            refill: Duration::from_secs(300),
        }
    }
}

/// One object's bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Duration,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(budget: &Budget, now: Duration) -> Bucket {
        Bucket {
            tokens: f64::from(budget.burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, budget: &Budget, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        let rate = 1.0 / budget.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(budget.burst.max(1)));
        self.at = self.at.max(now);
    }

    /// Takes one token when there is one.
    pub fn take(&mut self, budget: &Budget, now: Duration) -> bool {
        self.refill(budget, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long from `now` until a token is there (zero when one is).
    pub fn wait(&self, budget: &Budget, now: Duration) -> Duration {
        let mut b = self.clone();
        b.refill(budget, now);
        if b.tokens >= 1.0 {
            return Duration::ZERO;
        }
        budget.refill.mul_f64(1.0 - b.tokens)
    }

    /// True when the bucket is full again at `now` (it can be forgotten).
    pub fn is_full(&self, budget: &Budget, now: Duration) -> bool {
        let mut b = self.clone();
        b.refill(budget, now);
        b.tokens >= f64::from(budget.burst.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn burst_then_one_per_refill() {
        let budget = Budget {
            burst: 3,
            refill: S(300),
        };
        let mut b = Bucket::full(&budget, S(0));
        // (time, takes a token?)
        let steps = [
            (0, true),
            (0, true),
            (1, true),
            (2, false),
            (299, false),
            (301, true),
            (302, false),
            (1500, true),
            (1500, true),
            (1500, true),
            (1500, false),
        ];
        for (t, want) in steps {
            assert_eq!(b.take(&budget, S(t)), want, "at {t}s");
        }
        assert_eq!(b.wait(&budget, S(1500)), S(300));
        assert_eq!(b.wait(&budget, S(1650)), S(150));
        assert!(!b.is_full(&budget, S(1700)));
        assert!(b.is_full(&budget, S(1500 + 900)));
    }

    #[test]
    fn defaults_are_kubernetes_ones() {
        let budget = Budget::default();
        let mut b = Bucket::full(&budget, S(0));
        let taken = (0..100).filter(|_| b.take(&budget, S(10))).count();
        assert_eq!(taken, 25);
        assert_eq!(b.wait(&budget, S(10)), S(300));
    }
}
