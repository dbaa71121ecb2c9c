//! Retries: how many attempts a task made, whether it may run again, and after how long.
//!
//! `status.attempts` is written by whoever starts a container: the node agent sets it
//! (previous value + 1) when it starts the container of an attempt. The controllers only
//! read it, with one exception: an attempt that failed before its container ever started
//! (image not found, node lost while pulling) was never counted by an agent, so when such
//! a task is requeued the controller counts that attempt itself (`startedAt` unset means the
//! attempt never started). This keeps a task that can never start from retrying forever.

use std::time::Duration;

use kohakuriver_api::meta::{ConditionStatus, Timestamp, set_condition};
use kohakuriver_api::{Task, TaskPhase, TaskStatus};

use crate::clock::plus;

/// Back-off between attempts: `base × 2^(retry − 1)`, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay (default 10 s).
    pub base: Duration,
    /// The longest delay (default 5 min).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// Attempts made so far, counting an attempt that ended before its container started.
pub fn attempts_made(task: &Task) -> u32 {
    task.attempts_made()
}

/// True when a task whose attempt just ended may run again: retries remain, the user did
/// not kill it, it did not run past its deadline, and it is not being deleted.
pub fn may_retry(task: &Task) -> bool {
    task.may_retry()
}

/// The status that sends a task back to the queue after a failed attempt: Pending, unbound,
/// with `retryAfter` set by the policy. `why` says how the attempt ended.
pub fn requeued(
    task: &Task,
    now: Timestamp,
    policy: &RetryPolicy,
    reason: &str,
    why: &str,
) -> TaskStatus {
    let attempts = attempts_made(task);
    let delay = policy.delay(attempts);
    let mut s = task.status.clone();
    s.phase = TaskPhase::Pending;
    s.node = None;
    s.allocation = None;
    s.container_id = None;
    s.exit_code = None;
    s.started_at = None;
    s.finished_at = None;
    s.attempts = attempts;
    s.retry_after = Some(plus(now, delay));
    s.reason = Some(reason.to_string());
    let message = format!(
        "{why}; retry {attempts} of {} in {}s",
        task.spec.retries,
        delay.as_secs()
    );
    s.message = Some(message.clone());
    s.observed_generation = task.metadata.generation;
    let g = task.metadata.generation;
    let c = &mut s.conditions;
    set_condition(
        c,
        "Scheduled",
        ConditionStatus::False,
        Some(reason),
        Some(&message),
        g,
        now,
    );
    set_condition(
        c,
        "Running",
        ConditionStatus::False,
        Some(reason),
        None,
        g,
        now,
    );
    set_condition(
        c,
        "Failed",
        ConditionStatus::False,
        Some(reason),
        None,
        g,
        now,
    );
    s
}

/// The status of a task that ends for good with `phase`, `reason` and `message`.
pub fn finished(
    task: &Task,
    now: Timestamp,
    phase: TaskPhase,
    reason: &str,
    message: &str,
) -> TaskStatus {
    let mut s = task.status.clone();
    s.phase = phase;
    s.reason = Some(reason.to_string());
    s.message = Some(message.to_string());
    s.finished_at = Some(now);
    s.retry_after = None;
    s.observed_generation = task.metadata.generation;
    let g = task.metadata.generation;
    let c = &mut s.conditions;
    set_condition(
        c,
        "Running",
        ConditionStatus::False,
        Some(reason),
        None,
        g,
        now,
    );
    if phase == TaskPhase::Succeeded {
        set_condition(
            c,
            "Succeeded",
            ConditionStatus::True,
            Some(reason),
            Some(message),
            g,
            now,
        );
    } else {
        set_condition(
            c,
            "Failed",
            ConditionStatus::True,
            Some(reason),
            Some(message),
            g,
            now,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(p.delay(100).as_secs(), 300);
    }

    #[test]
    fn attempts_count_unstarted_attempts() {
        let mut t = Task::test("t");
        assert_eq!(attempts_made(&t), 1);
        t.status.attempts = 1;
        t.status.started_at = Some(chrono::DateTime::UNIX_EPOCH);
        assert_eq!(attempts_made(&t), 1);
        t.status.started_at = None;
        assert_eq!(attempts_made(&t), 2);
    }
}
