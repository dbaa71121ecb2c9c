//! The queue: which tasks wait for a node, in which order, and one scheduling round.
//!
//! Order: `spec.priority` (higher first), then `status.submittedAt` (older first; unknown
//! last), then name. Pure: no IO, the time comes in as an argument.
//!
//! Starvation rule (head-of-line reservation): walking the queue in order, the first
//! `max_reservations` tasks that fit nowhere *only because of capacity in use* each reserve
//! the node they are closest to fitting on (smallest shortfall; see
//! [`crate::allocator::Shortfall::distance`]). Tasks behind them in the queue may not be
//! placed on a reserved node; they still fill every other node (backfill). A reserved node
//! therefore only drains until the blocked task fits, and the smallest shortfall over the
//! cluster never grows while the task waits, so a large task is placed once enough of the
//! tasks already running finish, however many small tasks keep arriving. Reservations are
//! recomputed every round from the objects, so they survive restarts and need no state.

use std::cmp::Reverse;

use kohakuriver_api::dependency::released;
use kohakuriver_api::meta::Timestamp;
use kohakuriver_api::{DesiredState, Task, TaskPhase};

use crate::placement::{Cluster, Decision};

/// True when the scheduler should look for a node for `task` at `now`: Pending, unbound,
/// not being deleted, wanted Running or Paused, past its retry back-off, and released by
/// the dependency controller when it has dependencies.
pub fn is_queued(task: &Task, now: Timestamp) -> bool {
    task.status.phase == TaskPhase::Pending
        && task.status.node.is_none()
        && !task.metadata.is_deleting()
        && task.spec.state != DesiredState::Killed
        && task.status.retry_after.is_none_or(|t| t <= now)
        && released(task)
}

/// The sort key of the queue order.
pub fn queue_key(task: &Task) -> (Reverse<i32>, bool, Option<Timestamp>, &str) {
    (
        Reverse(task.spec.priority),
        task.status.submitted_at.is_none(),
        task.status.submitted_at,
        task.metadata.name.as_str(),
    )
}

/// Sorts tasks into queue order.
pub fn order(tasks: &mut [&Task]) {
    tasks.sort_by(|a, b| queue_key(a).cmp(&queue_key(b)));
}

/// One scheduling round over an ordered queue: a decision per task, in queue order. Bound
/// tasks' allocations are marked in `cluster` as the round goes, so later tasks see them.
pub fn schedule(cluster: &mut Cluster, queue: &[&Task], max_reservations: usize) -> Vec<Decision> {
    let mut closed = vec![false; cluster.len()];
    let mut reservations = 0;
    queue
        .iter()
        .map(|task| {
            let decision = cluster.place(task, &closed);
            if let Decision::Wait {
                closest: Some(i), ..
            } = &decision
                && reservations < max_reservations
            {
                closed[*i] = true;
                reservations += 1;
            }
            decision
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kohakuriver_api::{Node, Task};

    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    fn submitted(task: Task, s: i64) -> Task {
        let mut task = task;
        task.status.submitted_at = Some(at(s));
        task
    }

    fn names(tasks: &[&Task]) -> Vec<String> {
        tasks.iter().map(|t| t.metadata.name.clone()).collect()
    }

    #[test]
    fn orders_by_priority_then_submission_then_name() {
        let a = submitted(Task::test("a"), 5);
        let b = submitted(Task::test("b").priority(10), 9);
        let c = submitted(Task::test("c"), 1);
        let d = Task::test("d");
        let e = submitted(Task::test("e"), 5);
        let f = submitted(Task::test("f").priority(-1), 0);
        let mut q = vec![&a, &b, &c, &d, &e, &f];
        order(&mut q);
        assert_eq!(names(&q), ["b", "c", "a", "e", "d", "f"]);
    }

    #[test]
    fn queued_means_pending_unbound_alive_and_due() {
        let t = Task::test;
        assert!(is_queued(&t("t"), at(0)));
        assert!(!is_queued(&t("t").phase(TaskPhase::Running), at(0)));
        assert!(!is_queued(&t("t").state(DesiredState::Killed), at(0)));
        assert!(is_queued(&t("t").state(DesiredState::Paused), at(0)));
        let mut later = t("t");
        later.status.retry_after = Some(at(10));
        assert!(!is_queued(&later, at(9)));
        assert!(is_queued(&later, at(10)));
        let mut deleting = t("t");
        deleting.metadata.deletion_timestamp = Some(at(0));
        assert!(!is_queued(&deleting, at(0)));
        // With dependencies, only once they are met for the current generation.
        let mut dependent = t("t").after("up", kohakuriver_api::DependencyCondition::Succeeded);
        dependent.metadata.generation = Some(1);
        assert!(!is_queued(&dependent, at(0)));
        let met = |g| kohakuriver_api::Condition {
            type_: kohakuriver_api::dependency::DEPENDENCIES_MET.into(),
            status: kohakuriver_api::ConditionStatus::True,
            reason: None,
            message: None,
            last_transition_time: None,
            observed_generation: Some(g),
        };
        dependent.status.conditions.push(met(1));
        assert!(is_queued(&dependent, at(0)));
        dependent.metadata.generation = Some(2);
        assert!(!is_queued(&dependent, at(0)));
    }

    fn bound_names(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Bind { node, .. } => node.clone(),
                Decision::Wait { .. } => "wait".to_string(),
                Decision::Fail { .. } => "fail".to_string(),
                Decision::NoSuchNode { .. } => "absent".to_string(),
            })
            .collect()
    }

    #[test]
    fn a_blocked_head_reserves_its_closest_node() {
        // Two 8-core nodes: a has 6 cores busy, b has 2 busy. The head wants 8 cores: it
        // is closest on b (2 short), so b is reserved; the small tasks behind it go to a
        // only, and the third one waits.
        let nodes = [Node::test("a"), Node::test("b")];
        let running = [
            Task::test("x").cpu(6).bound("a", "0-5", &[]),
            Task::test("y").cpu(2).bound("b", "0-1", &[]),
        ];
        let big = Task::test("big").cpu(8).priority(1);
        let small: Vec<Task> = (0..3).map(|i| Task::test(&format!("s{i}"))).collect();
        let mut queue = vec![&big];
        queue.extend(small.iter());
        let mut cluster = Cluster::new(&nodes, &running);
        let decisions = schedule(&mut cluster, &queue, 1);
        assert_eq!(bound_names(&decisions), ["wait", "a", "a", "wait"]);
        // Without the reservation, the third small task would take a core on b.
        let mut cluster = Cluster::new(&nodes, &running);
        let decisions = schedule(&mut cluster, &queue, 0);
        assert_eq!(bound_names(&decisions), ["wait", "a", "a", "b"]);
    }

    #[test]
    fn a_head_that_can_never_fit_reserves_nothing() {
        let nodes = [Node::test("a")];
        let big = Task::test("big").cpu(64);
        let small = Task::test("s");
        let mut cluster = Cluster::new(&nodes, &[]);
        let decisions = schedule(&mut cluster, &[&big, &small], 1);
        assert_eq!(bound_names(&decisions), ["fail", "a"]);
    }
}
