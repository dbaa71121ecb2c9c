//! Node lifecycle: a node whose heartbeats stop is marked not Ready, and the tasks bound
//! to it are lost (or requeued when retries remain).
//!
//! Liveness is measured on the controllers' own monotonic clock, never the agent's: the
//! loop records when it *saw* each node's heartbeat change ([`observe`]), and a node is
//! silent for as long as it has not seen one. The agent's clock plays no part (an agent
//! whose clock is off by minutes is as alive as any), and every node gets a full grace
//! period after the controllers start, so a server that was down for an hour does not
//! declare every node lost the moment it comes back. A node that was deleted keeps its
//! last sighting, so its tasks are lost only after the grace; if its agent heartbeats it
//! back meanwhile, nothing happened to them.
//!
//! Pure decisions of (node, silence, now, grace); the loop in `lifecycle.rs` acts on them.
//! The agent sets `Ready=True` on every heartbeat; this controller only flips it to False
//! on silence (reason `NodeLost`) and back to True when heartbeats resume after that,
//! so it never fights an agent that reports itself not Ready for another reason.

use std::time::Duration;

use kohakuriver_api::meta::{ConditionStatus, Timestamp, find_condition, set_condition};
use kohakuriver_api::{CONTAINER_FINALIZER, Node, NodeStatus, Task, TaskPhase, TaskStatus};

use crate::retry::{RetryPolicy, finished, may_retry, requeued};
use crate::task_lifecycle::TaskAction;

/// What the controllers last saw of a node's heartbeats, on their own monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The node's `status.lastHeartbeat` as the agent wrote it: only whether it changes
    /// matters, never its value.
    pub heartbeat: Option<Timestamp>,
    /// The monotonic time (`Clock::elapsed`) the controllers saw it change, or first saw
    /// the node.
    pub at: Duration,
}

/// Updates what was seen of `node` at monotonic time `now`: a first sighting, or a
/// heartbeat value that changed, counts as a heartbeat received now. `node` is `None` when
/// the node is not (or no longer) in the cache: the last sighting stays.
pub fn observe(previous: Option<&Seen>, node: Option<&Node>, now: Duration) -> Seen {
    let heartbeat = node.and_then(|n| n.status.last_heartbeat);
    match previous {
        Some(seen) if node.is_none() || seen.heartbeat == heartbeat => seen.clone(),
        _ => Seen { heartbeat, at: now },
    }
}

/// How long the controllers have seen no heartbeat from a node, at monotonic `now`.
pub fn silence(seen: &Seen, now: Duration) -> Duration {
    now.saturating_sub(seen.at)
}

/// The decision for one node: a new status to write, and when to look again.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NodePlan {
    /// Write this status (Ready condition changed).
    pub status: Option<NodeStatus>,
    /// Look again after this long (when the node would turn stale).
    pub requeue_after: Option<Duration>,
}

/// Decides the node's Ready condition, given how long it has been `silent`; `now` stamps
/// the condition.
pub fn plan_node(node: &Node, silent: Duration, now: Timestamp, grace: Duration) -> NodePlan {
    let ready = find_condition(&node.status.conditions, "Ready");
    let g = node.metadata.generation;
    if silent > grace {
        let already = ready.is_some_and(|c| c.status == ConditionStatus::False);
        if already {
            return NodePlan::default();
        }
        let secs = silent.as_secs();
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
    let requeue_after = Some(grace.saturating_sub(silent) + Duration::from_millis(10));
    let lost_by_us = ready.is_some_and(|c| {
        c.status == ConditionStatus::False && c.reason.as_deref() == Some("NodeLost")
    });
    if lost_by_us {
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

/// How long a silent node's tasks wait: `grace` before they are re-queued (retries left) or
/// marked Unknown (none left), `lost_after` before an Unknown task is given up as Lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    /// The controllers' `--node-grace`.
    pub grace: Duration,
    /// The controllers' `--lost-after`.
    pub lost_after: Duration,
}

/// Decides what happens to a task bound to a node silent for `silent` (`exists` is false
/// when the node object is gone): within the grace nothing. Past it a task with retries left
/// goes back to Pending (its agent has fenced it by then, see the node agent's `fence`); one
/// with none left becomes Unknown and keeps its allocation, since its container may still
/// run, until the node is deleted or stays silent past `lost_after`, when it is Lost. A
/// task being deleted loses its container finalizer, since no agent will remove it.
pub fn plan_orphan(
    task: &Task,
    exists: bool,
    silent: Duration,
    now: Timestamp,
    patience: Patience,
    policy: &RetryPolicy,
) -> Option<TaskAction> {
    let bound_to = task.status.node.as_deref()?;
    if silent <= patience.grace {
        return None;
    }
    let secs = silent.as_secs();
    let why = if exists {
        format!("node {bound_to} lost (no heartbeat for {secs}s)")
    } else {
        format!("node {bound_to} is gone (deleted, and no heartbeat for {secs}s)")
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
    if exists && silent <= patience.lost_after {
        if task.status.phase == TaskPhase::Unknown {
            return None;
        }
        return Some(TaskAction::status(unreachable(task, now, bound_to, secs)));
    }
    let why = if exists {
        format!(
            "node {bound_to} lost (no heartbeat for {secs}s, longer than --lost-after {}s)",
            patience.lost_after.as_secs()
        )
    } else {
        why
    };
    let mut status = finished(task, now, TaskPhase::Lost, "NodeLost", &why);
    if task.status.phase == TaskPhase::Unknown {
        set_condition(
            &mut status.conditions,
            NODE_UNREACHABLE,
            ConditionStatus::True,
            Some("NodeLost"),
            Some(&why),
            task.metadata.generation,
            now,
        );
    }
    Some(TaskAction::status(status))
}

/// The condition that records a gap in contact with a task's node: True (reason
/// `NodeUnreachable`) while the task is Unknown; the agent sets it False (reason
/// `NodeReachable`) when it reports again.
pub const NODE_UNREACHABLE: &str = kohakuriver_api::NODE_UNREACHABLE_CONDITION;

/// The status of a task whose node went silent and that has no retry left: Unknown, with
/// its allocation kept, and condition NodeUnreachable True.
fn unreachable(task: &Task, now: Timestamp, node: &str, secs: u64) -> TaskStatus {
    let mut s = task.status.clone();
    s.phase = TaskPhase::Unknown;
    s.reason = Some("NodeUnreachable".to_string());
    s.message = Some(format!(
        "node {node} has not answered for {secs}s; the task may still run there and keeps its resources until the node reports again, is deleted, or stays away past --lost-after"
    ));
    s.observed_generation = task.metadata.generation;
    set_condition(
        &mut s.conditions,
        NODE_UNREACHABLE,
        ConditionStatus::True,
        Some("NodeUnreachable"),
        Some(&format!("no heartbeat from node {node} for {secs}s")),
        task.metadata.generation,
        now,
    );
    s
}

#[cfg(test)]
mod tests {
    use kohakuriver_api::{Task, TaskPhase};

    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
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
    fn heartbeats_count_when_seen_whatever_the_agents_clock() {
        // First sight: a full grace from now, whatever the node's own timestamp says
        // (here an hour old, as after a long server outage, or a clock far behind).
        let first = observe(None, Some(&beating(100)), secs(5000));
        assert_eq!(silence(&first, secs(5010)), secs(10));
        // The same value again is no heartbeat.
        let same = observe(Some(&first), Some(&beating(100)), secs(5020));
        assert_eq!(same, first);
        // A new value, even one from the past, is a heartbeat now.
        let new = observe(Some(&first), Some(&beating(50)), secs(5030));
        assert_eq!(silence(&new, secs(5031)), secs(1));
        // A node that vanished keeps its last sighting.
        let gone = observe(Some(&new), None, secs(5040));
        assert_eq!(gone, new);
        // One never seen before, absent: counted from now.
        assert_eq!(observe(None, None, secs(7)).at, secs(7));
    }

    #[test]
    fn silent_nodes_turn_not_ready_and_back() {
        let node = beating(100);
        assert_eq!(
            plan_node(&node, secs(20), at(120), GRACE).requeue_after,
            Some(Duration::from_millis(10_010))
        );
        let plan = plan_node(&node, secs(45), at(145), GRACE);
        let mut lost = node.clone();
        lost.status = plan.status.expect("marked lost");
        assert_eq!(ready(&lost), "False no heartbeat for 45s");
        assert_eq!(
            plan_node(&lost, secs(50), at(150), GRACE),
            NodePlan::default()
        );
        let back = plan_node(&lost, secs(0), at(150), GRACE)
            .status
            .expect("ready again");
        assert!(back.conditions[0].status == ConditionStatus::True);
        // Not ready for a reason of the agent's own: left alone.
        let mut sick = beating(100).not_ready();
        sick.status.conditions[0].reason = Some("DockerDown".into());
        assert_eq!(plan_node(&sick, secs(10), at(110), GRACE).status, None);
    }

    const LOST_AFTER: Duration = Duration::from_secs(3600);

    fn patience() -> Patience {
        Patience {
            grace: GRACE,
            lost_after: LOST_AFTER,
        }
    }

    #[test]
    fn orphans_are_unknown_or_requeued_only_after_the_grace() {
        let p = RetryPolicy::default();
        let show = |t: &Task, exists: bool, silent: u64| match plan_orphan(
            t,
            exists,
            secs(silent),
            at(1000),
            patience(),
            &p,
        ) {
            None => "none".to_string(),
            Some(TaskAction::Status(s)) => {
                format!("{} {}", s.phase, s.message.unwrap_or_default())
            }
            Some(other) => format!("{other:?}"),
        };
        let running = Task::test("t").bound("a", "0", &[]);
        assert_eq!(show(&running, true, 20), "none");
        // No retry left: Unknown, its container may still run.
        assert!(
            show(&running, true, 45).starts_with(
                "Unknown node a has not answered for 45s; the task may still run there"
            ),
            "{}",
            show(&running, true, 45)
        );
        let unknown = running.clone().phase(TaskPhase::Unknown);
        assert_eq!(show(&unknown, true, 45), "none");
        assert_eq!(show(&unknown, true, 3600), "none");
        // Away longer than --lost-after: Lost.
        assert_eq!(
            show(&unknown, true, 3601),
            "Lost node a lost (no heartbeat for 3601s, longer than --lost-after 3600s)"
        );
        assert_eq!(
            show(&running, true, 3601),
            "Lost node a lost (no heartbeat for 3601s, longer than --lost-after 3600s)"
        );
        // A deleted node is not the end of its tasks until the grace has passed; then Lost.
        assert_eq!(show(&running, false, 5), "none");
        assert_eq!(
            show(&running, false, 45),
            "Lost node a is gone (deleted, and no heartbeat for 45s)"
        );
        assert_eq!(
            show(&unknown, false, 45),
            "Lost node a is gone (deleted, and no heartbeat for 45s)"
        );
        let mut retried = running.clone();
        retried.spec.retries = 1;
        retried.status.attempts = 1;
        retried.status.started_at = Some(at(100));
        assert_eq!(
            show(&retried, true, 45),
            "Pending node a lost (no heartbeat for 45s); retry 1 of 1 in 10s"
        );
        let done = running.clone().phase(TaskPhase::Succeeded);
        assert_eq!(show(&done, true, 45), "none");
        let mut deleting = done;
        deleting.metadata.deletion_timestamp = Some(at(140));
        deleting.metadata.finalizers = vec![CONTAINER_FINALIZER.to_string()];
        assert_eq!(show(&deleting, true, 45), "RemoveFinalizer");
        assert_eq!(show(&Task::test("t"), false, 45), "none");
    }

    #[test]
    fn unknown_keeps_the_allocation_and_records_the_gap() {
        let running = Task::test("t").bound("a", "0-1", &[0]);
        let Some(TaskAction::Status(s)) = plan_orphan(
            &running,
            true,
            secs(45),
            at(1000),
            patience(),
            &RetryPolicy::default(),
        ) else {
            panic!("expected a status");
        };
        assert_eq!(s.phase, TaskPhase::Unknown);
        assert!(!s.phase.is_terminal());
        assert_eq!(s.node.as_deref(), Some("a"));
        assert_eq!(s.allocation, running.status.allocation);
        let mut unknown = running.clone();
        unknown.status = (*s).clone();
        assert!(unknown.holds_allocation());
        let c = find_condition(&s.conditions, NODE_UNREACHABLE).unwrap();
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.reason.as_deref(), Some("NodeUnreachable"));
        assert_eq!(s.finished_at, None);
    }
}
