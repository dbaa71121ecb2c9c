//! Task lifecycle: retries with back-off, the deadline, TTL deletion, finalizers of unbound
//! tasks, and conditions kept true for GitOps health checks.
//!
//! [`plan_task`] is the decision, a pure function of (task, now, policy); the loop in
//! in `lifecycle.rs` acts on it. Rules, in order:
//! - Being deleted: an unbound task that still carries the container finalizer (it was
//!   bound once, then requeued) has no container any agent tracks, so the finalizer goes.
//! - Pending, unbound, desired state Killed: phase Killed at once (no agent will see it).
//! - Past `submittedAt + timeoutSeconds`: unbound → phase Failed, reason DeadlineExceeded;
//!   bound → desired state Killed (main endpoint) and reason DeadlineExceeded; the agent
//!   kills it. Deadline failures are never retried.
//! - Failed with retries left (see [`crate::retry`]) → Pending again after the back-off.
//!   Tasks killed by the user are never retried (their phase is Killed, not Failed).
//! - Terminal: `finishedAt` and the Succeeded/Failed condition are filled in when missing;
//!   with `ttlSecondsAfterFinished`, the task is deleted that long after `finishedAt`.

use std::time::Duration;

use kohakuriver_api::meta::{ConditionStatus, Timestamp, find_condition, set_condition};
use kohakuriver_api::{CONTAINER_FINALIZER, DesiredState, Task, TaskPhase, TaskStatus};

use crate::clock::{plus, until};
use crate::retry::{RetryPolicy, finished, may_retry, requeued};

/// What the task lifecycle controller does to one task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskAction {
    /// Write this status (with the task's `resourceVersion` as precondition).
    Status(Box<TaskStatus>),
    /// Set the desired state to Killed with this reason and message on the status.
    Kill {
        /// `DeadlineExceeded`.
        reason: String,
        /// Why.
        message: String,
    },
    /// Delete the task.
    Delete,
    /// Remove the container finalizer.
    RemoveFinalizer,
}

impl TaskAction {
    /// A status write.
    pub fn status(status: TaskStatus) -> TaskAction {
        TaskAction::Status(Box::new(status))
    }
}

/// The decision for one task: an action, and when to look again even if nothing changes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TaskPlan {
    /// What to do now.
    pub action: Option<TaskAction>,
    /// Look again after this long (a deadline or TTL ahead).
    pub requeue_after: Option<Duration>,
}

impl TaskPlan {
    fn act(action: TaskAction) -> TaskPlan {
        TaskPlan {
            action: Some(action),
            requeue_after: None,
        }
    }
}

/// The deadline of a task, when it has one.
pub fn deadline(task: &Task) -> Option<Timestamp> {
    let timeout = task.spec.timeout_seconds?;
    let from = task
        .status
        .submitted_at
        .or(task.metadata.creation_timestamp)?;
    Some(plus(from, Duration::from_secs(timeout)))
}

/// Decides what to do with one task at `now`.
pub fn plan_task(task: &Task, now: Timestamp, policy: &RetryPolicy) -> TaskPlan {
    let status = &task.status;
    if task.metadata.is_deleting() {
        let unbound = status.node.is_none();
        if unbound
            && task
                .metadata
                .finalizers
                .iter()
                .any(|f| f == CONTAINER_FINALIZER)
        {
            return TaskPlan::act(TaskAction::RemoveFinalizer);
        }
        return TaskPlan::default();
    }
    if status.phase.is_terminal() {
        return plan_finished(task, now, policy);
    }
    let unbound = status.node.is_none();
    if unbound && status.phase == TaskPhase::Pending && task.spec.state == DesiredState::Killed {
        return TaskPlan::act(TaskAction::status(finished(
            task,
            now,
            TaskPhase::Killed,
            "Killed",
            "killed before it was scheduled",
        )));
    }
    if let Some(deadline) = deadline(task) {
        let timeout = task.spec.timeout_seconds.unwrap_or(0);
        if now < deadline {
            return TaskPlan {
                action: None,
                requeue_after: Some(until(now, deadline)),
            };
        }
        if unbound {
            let message = format!("not scheduled within its {timeout}s deadline");
            return TaskPlan::act(TaskAction::status(finished(
                task,
                now,
                TaskPhase::Failed,
                "DeadlineExceeded",
                &message,
            )));
        }
        if task.spec.state != DesiredState::Killed {
            return TaskPlan::act(TaskAction::Kill {
                reason: "DeadlineExceeded".to_string(),
                message: format!("ran past its {timeout}s deadline"),
            });
        }
    }
    TaskPlan::default()
}

fn plan_finished(task: &Task, now: Timestamp, policy: &RetryPolicy) -> TaskPlan {
    let status = &task.status;
    if status.phase == TaskPhase::Failed && may_retry(task) {
        let why = match (status.reason.as_deref(), status.exit_code) {
            (Some(reason), Some(code)) => format!("attempt failed ({reason}, exit code {code})"),
            (Some(reason), None) => format!("attempt failed ({reason})"),
            (None, Some(code)) => format!("attempt failed (exit code {code})"),
            (None, None) => "attempt failed".to_string(),
        };
        return TaskPlan::act(TaskAction::status(requeued(
            task, now, policy, "Retrying", &why,
        )));
    }
    // Keep the health conditions true: a GitOps tool reads them, not the phase.
    let mut fixed = status.clone();
    let finished_at = *fixed.finished_at.get_or_insert(now);
    let (type_, reason) = match status.phase {
        TaskPhase::Succeeded => ("Succeeded", "Completed"),
        TaskPhase::Killed => ("Failed", "Killed"),
        TaskPhase::Lost => ("Failed", "NodeLost"),
        _ => ("Failed", "Error"),
    };
    let holds =
        find_condition(&fixed.conditions, type_).is_some_and(|c| c.status == ConditionStatus::True);
    if !holds {
        let reason = status.reason.as_deref().unwrap_or(reason);
        let g = task.metadata.generation;
        let message = status.message.as_deref();
        set_condition(
            &mut fixed.conditions,
            type_,
            ConditionStatus::True,
            Some(reason),
            message,
            g,
            now,
        );
        set_condition(
            &mut fixed.conditions,
            "Running",
            ConditionStatus::False,
            Some(reason),
            None,
            g,
            now,
        );
    }
    if fixed.observed_generation.is_none() {
        fixed.observed_generation = task.metadata.generation;
    }
    if fixed != *status {
        return TaskPlan::act(TaskAction::status(fixed));
    }
    match task.spec.ttl_seconds_after_finished {
        Some(ttl) => {
            let expiry = plus(finished_at, Duration::from_secs(ttl));
            if now >= expiry {
                TaskPlan::act(TaskAction::Delete)
            } else {
                TaskPlan {
                    action: None,
                    requeue_after: Some(until(now, expiry)),
                }
            }
        }
        None => TaskPlan::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    fn submitted(task: Task) -> Task {
        let mut task = task;
        task.status.submitted_at = Some(at(0));
        task.metadata.generation = Some(1);
        task
    }

    /// Renders a plan as a short line: `status Pending Retrying retryAfter=10`, `kill
    /// DeadlineExceeded`, `delete`, `unfinalize`, `none`, `none requeue=5`.
    fn show(plan: &TaskPlan) -> String {
        let requeue = plan
            .requeue_after
            .map(|d| format!(" requeue={}", d.as_secs()))
            .unwrap_or_default();
        match &plan.action {
            None => format!("none{requeue}"),
            Some(TaskAction::Status(s)) => format!(
                "status {} {} attempts={} retryAfter={}",
                s.phase,
                s.reason.clone().unwrap_or_default(),
                s.attempts,
                s.retry_after
                    .map_or("-".into(), |t| t.timestamp().to_string())
            ),
            Some(TaskAction::Kill { reason, .. }) => format!("kill {reason}"),
            Some(TaskAction::Delete) => "delete".to_string(),
            Some(TaskAction::RemoveFinalizer) => "unfinalize".to_string(),
        }
    }

    fn failed(retries: u32, attempts: u32) -> Task {
        let mut t = submitted(Task::test("t").bound("a", "0", &[]));
        t.spec.retries = retries;
        t.status.phase = TaskPhase::Failed;
        t.status.reason = Some("Error".into());
        t.status.exit_code = Some(3);
        t.status.attempts = attempts;
        t.status.started_at = Some(at(1));
        t.status.finished_at = Some(at(2));
        t
    }

    /// The task after its conditions were filled in.
    fn settle(mut task: Task) -> Task {
        if let Some(TaskAction::Status(s)) = plan_task(&task, at(2), &RetryPolicy::default()).action
        {
            task.status = *s;
        }
        task
    }

    #[test]
    fn lifecycle_cases() {
        let p = RetryPolicy::default();
        let now = at(100);
        let mut with_ttl = failed(0, 1);
        with_ttl.status.phase = TaskPhase::Succeeded;
        with_ttl.spec.ttl_seconds_after_finished = Some(60);
        let with_ttl = settle(with_ttl);
        let mut killed_by_user = failed(3, 1);
        killed_by_user.spec.state = DesiredState::Killed;
        let mut deadline_failure = failed(3, 1);
        deadline_failure.status.reason = Some("DeadlineExceeded".into());
        let mut never_started = failed(1, 0);
        never_started.status.started_at = None;
        let mut timed = submitted(Task::test("t").bound("a", "0", &[]));
        timed.spec.timeout_seconds = Some(60);
        let mut timed_unbound = submitted(Task::test("t"));
        timed_unbound.spec.timeout_seconds = Some(60);
        let mut timed_later = timed.clone();
        timed_later.spec.timeout_seconds = Some(130);
        let mut timed_killed = timed.clone();
        timed_killed.spec.state = DesiredState::Killed;
        let mut deleting_unbound = submitted(Task::test("t"));
        deleting_unbound.metadata.deletion_timestamp = Some(at(50));
        deleting_unbound.metadata.finalizers = vec![CONTAINER_FINALIZER.to_string()];
        let mut deleting_bound = failed(0, 1);
        deleting_bound.metadata.deletion_timestamp = Some(at(50));
        deleting_bound.metadata.finalizers = vec![CONTAINER_FINALIZER.to_string()];
        let mut succeeded_bare = failed(0, 1);
        succeeded_bare.status.phase = TaskPhase::Succeeded;
        succeeded_bare.status.reason = None;
        let cases: Vec<(&str, Task, u64, &str)> = vec![
            (
                "retry 1 of 2",
                failed(2, 1),
                100,
                "status Pending Retrying attempts=1 retryAfter=110",
            ),
            (
                "retry 2 of 2",
                failed(2, 2),
                100,
                "status Pending Retrying attempts=2 retryAfter=120",
            ),
            (
                "no retries left",
                failed(2, 3),
                100,
                "status Failed Error attempts=3 retryAfter=-",
            ),
            (
                "never started counts",
                never_started,
                100,
                "status Pending Retrying attempts=1 retryAfter=110",
            ),
            (
                "killed by user",
                killed_by_user,
                100,
                "status Failed Error attempts=1 retryAfter=-",
            ),
            (
                "deadline not retried",
                deadline_failure,
                100,
                "status Failed DeadlineExceeded attempts=1 retryAfter=-",
            ),
            ("ttl ahead", with_ttl.clone(), 50, "none requeue=12"),
            ("ttl passed", with_ttl, 100, "delete"),
            ("deadline ahead", timed_later, 100, "none requeue=30"),
            ("deadline bound", timed, 100, "kill DeadlineExceeded"),
            ("deadline already killing", timed_killed, 100, "none"),
            (
                "deadline unbound",
                timed_unbound,
                100,
                "status Failed DeadlineExceeded attempts=0 retryAfter=-",
            ),
            (
                "killed while pending",
                submitted(Task::test("t").state(DesiredState::Killed)),
                100,
                "status Killed Killed attempts=0 retryAfter=-",
            ),
            ("pending", submitted(Task::test("t")), 100, "none"),
            (
                "running",
                submitted(Task::test("t").bound("a", "0", &[])),
                100,
                "none",
            ),
            ("deleting unbound", deleting_unbound, 100, "unfinalize"),
            ("deleting bound", deleting_bound, 100, "none"),
            (
                "conditions filled",
                succeeded_bare,
                100,
                "status Succeeded  attempts=1 retryAfter=-",
            ),
        ];
        for (name, task, secs, want) in cases {
            let now = if secs == 100 { now } else { at(secs as i64) };
            let mut task = task;
            task.metadata.name = name.to_string();
            assert_eq!(show(&plan_task(&task, now, &p)), want, "{name}");
        }
    }

    #[test]
    fn a_settled_task_needs_nothing() {
        let p = RetryPolicy::default();
        let t = failed(0, 1);
        let TaskPlan {
            action: Some(TaskAction::Status(fixed)),
            ..
        } = plan_task(&t, at(100), &p)
        else {
            panic!("conditions should be filled in");
        };
        let mut t = t;
        t.status = *fixed;
        assert_eq!(plan_task(&t, at(200), &p), TaskPlan::default());
        assert!(
            find_condition(&t.status.conditions, "Failed")
                .is_some_and(|c| c.status == ConditionStatus::True)
        );
    }
}
