//! Node lifecycle: a node whose heartbeat is stale is marked not Ready, and the tasks bound
//! to it are lost (or requeued when retries remain).
//!
//! Pure decisions of (node, task, now, grace); the loop in [`crate::reconcile`] acts on them.
//! The agent sets `Ready=True` on every heartbeat; this controller only flips it to False
//! on staleness (reason `NodeLost`) and back to True when heartbeats resume after that,
//! so it never fights an agent that reports itself not Ready for another reason.

use std::time::Duration;

use kohakuriver_api::meta::{ConditionStatus, Timestamp, find_condition, set_condition};
use kohakuriver_api::{CONTAINER_FINALIZER, Node, NodeStatus, Task};

use crate::clock::{plus, until};
use crate::retry::{RetryPolicy, finished, may_retry, requeued};
use crate::task_lifecycle::TaskAction;

/// How long ago the node last reported (from its creation when it never did), when known.
pub fn silence(node: &Node, now: Timestamp) -> Option<Duration> {
    let last = node
        .status
        .last_heartbeat
        .or(node.metadata.creation_timestamp)?;
    Some(until(last, now))
}

/// True when the node's heartbeat is older than the grace period.
pub fn is_lost(node: &Node, now: Timestamp, grace: Duration) -> bool {
    silence(node, now).is_some_and(|s| s > grace)
}

/// The decision for one node: a new status to write, and when to look again.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NodePlan {
    /// Write this status (Ready condition changed).
    pub status: Option<NodeStatus>,
    /// Look again after this long (when the node would turn stale).
    pub requeue_after: Option<Duration>,
}

/// Decides the node's Ready condition at `now`.
pub fn plan_node(node: &Node, now: Timestamp, grace: Duration) -> NodePlan {
    let ready = find_condition(&node.status.conditions, "Ready");
    let g = node.metadata.generation;
    if is_lost(node, now, grace) {
        let already = ready.is_some_and(|c| c.status == ConditionStatus::False);
        if already {
            return NodePlan::default();
        }
        let secs = silence(node, now).unwrap_or_default().as_secs();
        let mut status = node.status.clone();
        let message = format!("no heartbeat for {secs}s");
        set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::False,
            Some("NodeLost"),
            Some(&message),
            g,
            now,
        );
        return NodePlan {
            status: Some(status),
            requeue_after: None,
        };
    }
    let requeue_after = node
        .status
        .last_heartbeat
        .or(node.metadata.creation_timestamp)
        .map(|last| until(now, plus(last, grace)) + Duration::from_millis(10));
    let lost_by_us = ready.is_some_and(|c| {
        c.status == ConditionStatus::False && c.reason.as_deref() == Some("NodeLost")
    });
    if lost_by_us && node.status.last_heartbeat.is_some() {
        let mut status = node.status.clone();
        set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::True,
            Some("HeartbeatResumed"),
            Some("heartbeats resumed"),
            g,
            now,
        );
        return NodePlan {
            status: Some(status),
            requeue_after,
        };
    }
    NodePlan {
        status: None,
        requeue_after,
    }
}

/// Decides what happens to a task bound to a node that is lost (stale) or gone (`None`):
/// a non-terminal task becomes Lost, or Pending again when retries remain; a task being
/// deleted loses its container finalizer, since no agent will remove it.
pub fn plan_orphan(
    task: &Task,
    node: Option<&Node>,
    now: Timestamp,
    grace: Duration,
    policy: &RetryPolicy,
) -> Option<TaskAction> {
    let bound_to = task.status.node.as_deref()?;
    let why = match node {
        None => format!("node {bound_to} is gone"),
        Some(n) if is_lost(n, now, grace) => format!(
            "node {bound_to} lost (no heartbeat for {}s)",
            silence(n, now).unwrap_or_default().as_secs()
        ),
        Some(_) => return None,
    };
    if task.metadata.is_deleting() {
        let finalized = task
            .metadata
            .finalizers
            .iter()
            .any(|f| f == CONTAINER_FINALIZER);
        return finalized.then_some(TaskAction::RemoveFinalizer);
    }
    if task.status.phase.is_terminal() {
        return None;
    }
    if may_retry(task) {
        return Some(TaskAction::status(requeued(
            task, now, policy, "NodeLost", &why,
        )));
    }
    Some(TaskAction::status(finished(
        task,
        now,
        kohakuriver_api::TaskPhase::Lost,
        "NodeLost",
        &why,
    )))
}

#[cfg(test)]
mod tests {
    use kohakuriver_api::{Task, TaskPhase};

    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(30);

    fn beating(last: i64) -> Node {
        let mut n = Node::test("a");
        n.status.last_heartbeat = Some(at(last));
        n
    }

    fn ready(n: &Node) -> String {
        let c = find_condition(&n.status.conditions, "Ready").unwrap();
        format!("{} {}", c.status, c.message.clone().unwrap_or_default())
    }

    #[test]
    fn stale_nodes_turn_not_ready_and_back() {
        assert_eq!(
            plan_node(&beating(100), at(120), GRACE).requeue_after,
            Some(Duration::from_millis(10_010))
        );
        let plan = plan_node(&beating(100), at(145), GRACE);
        let mut lost = beating(100);
        lost.status = plan.status.expect("marked lost");
        assert_eq!(ready(&lost), "False no heartbeat for 45s");
        assert_eq!(plan_node(&lost, at(150), GRACE), NodePlan::default());
        lost.status.last_heartbeat = Some(at(149));
        let back = plan_node(&lost, at(150), GRACE)
            .status
            .expect("ready again");
        assert!(back.conditions[0].status == ConditionStatus::True);
        // Not ready for a reason of the agent's own: left alone.
        let mut sick = beating(100).not_ready();
        sick.status.conditions[0].reason = Some("DockerDown".into());
        assert_eq!(plan_node(&sick, at(110), GRACE).status, None);
    }

    #[test]
    fn orphans_are_lost_or_requeued() {
        let p = RetryPolicy::default();
        let node = beating(100);
        let show =
            |t: &Task, n: Option<&Node>, now: i64| match plan_orphan(t, n, at(now), GRACE, &p) {
                None => "none".to_string(),
                Some(TaskAction::Status(s)) => {
                    format!("{} {}", s.phase, s.message.unwrap_or_default())
                }
                Some(other) => format!("{other:?}"),
            };
        let running = Task::test("t").bound("a", "0", &[]);
        assert_eq!(show(&running, Some(&node), 120), "none");
        assert_eq!(
            show(&running, Some(&node), 145),
            "Lost node a lost (no heartbeat for 45s)"
        );
        assert_eq!(show(&running, None, 145), "Lost node a is gone");
        let mut retried = running.clone();
        retried.spec.retries = 1;
        retried.status.attempts = 1;
        retried.status.started_at = Some(at(100));
        assert_eq!(
            show(&retried, Some(&node), 145),
            "Pending node a lost (no heartbeat for 45s); retry 1 of 1 in 10s"
        );
        let done = running.clone().phase(TaskPhase::Succeeded);
        assert_eq!(show(&done, Some(&node), 145), "none");
        let mut deleting = done;
        deleting.metadata.deletion_timestamp = Some(at(140));
        deleting.metadata.finalizers = vec![CONTAINER_FINALIZER.to_string()];
        assert_eq!(show(&deleting, Some(&node), 145), "RemoveFinalizer");
        assert_eq!(show(&Task::test("t"), None, 145), "none");
    }
}
