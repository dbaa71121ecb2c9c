//! Jittered exponential backoff for reconnecting watches and retrying conflicts.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn at random from the upper half
/// of the current step so that many clients restarted together do not reconnect in step.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    /// The watcher's backoff: 800 ms doubling to 30 s, as kube-rs.
    pub fn watch() -> Backoff {
        Backoff::new(Duration::from_millis(800), Duration::from_secs(30))
    }

    /// The next delay, with jitter from the thread's random generator.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// The next delay given a uniform sample `unit` in `[0, 1)`: a value in
    /// `[step / 2, step]`, after which the step doubles (capped at `max`).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Back to the initial step, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_jitter_bounds() {
        let mut b = Backoff::watch();
        let mut steps = Vec::new();
        for i in 0..10 {
            let lo = b.clone().next_delay_with(0.0);
            let hi = b.clone().next_delay_with(1.0);
            let d = b.next_delay();
            assert!(lo <= d && d <= hi, "step {i}: {d:?} not in {lo:?}..={hi:?}");
            steps.push(hi);
        }
        assert_eq!(steps[0], Duration::from_millis(800));
        assert_eq!(steps[1], Duration::from_millis(1600));
        assert_eq!(steps[5], Duration::from_millis(25600));
        assert_eq!(steps[6], Duration::from_secs(30));
        assert_eq!(steps[9], Duration::from_secs(30));
        assert_eq!(
            Backoff::watch().next_delay_with(0.0),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::watch();
        b.next_delay();
        b.next_delay();
        b.reset();
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(800));
    }
}
