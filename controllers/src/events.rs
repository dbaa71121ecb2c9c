//! The events the controllers report, decided from what they write (pure), and the one
//! call each loop makes once a write succeeded ([`report`]).
//!
//! - scheduler: `Scheduled` (node, cores, GPUs), `FailedScheduling` (the scheduler's own
//!   message: why no node fits, or that the pinned node has not registered);
//! - node lifecycle: `NodeNotReady`, `NodeReady`; `TaskLost` (the node went silent under a
//!   task) and `Requeued` (sent back to the queue for another node);
//! - task lifecycle: `Retrying` (a failed attempt goes back to the queue after its back-off)
//!   and `DeadlineExceeded`.
//!
//! Messages leave out what changes at every attempt (the attempt number, the back-off), so
//! a crash loop folds into one event per reason whose count tells the attempts.

use kohakuriver_api::meta::find_condition;
use kohakuriver_api::{ConditionStatus, EventType, Node, NodeStatus, Task, TaskPhase};
use kohakuriver_client::{ObjectRef, Recorder};

use crate::task_lifecycle::TaskAction;

/// One event to report: type, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

fn normal(reason: &'static str, message: String) -> Said {
    Said {
        type_: EventType::Normal,
        reason,
        message,
    }
}

fn warning(reason: &'static str, message: String) -> Said {
    Said {
        type_: EventType::Warning,
        reason,
        message,
    }
}

/// Records `said` about `object` as `component`, when the controllers have a recorder.
pub fn report(
    recorder: Option<&Recorder>,
    component: &str,
    object: ObjectRef,
    said: impl IntoIterator<Item = Said>,
) {
    let Some(recorder) = recorder else {
        return;
    };
    let recorder = recorder.with_component(component);
    for s in said {
        recorder.record(&object, s.type_, s.reason, &s.message);
    }
}

/// What the scheduler's stored write of `task` says: bound, or waiting and why.
pub fn scheduling(task: &Task) -> Option<Said> {
    let s = &task.status;
    match (s.phase, s.node.as_deref(), s.reason.as_deref()) {
        (TaskPhase::Assigned, Some(node), _) => {
            let allocation = s
                .allocation
                .as_ref()
                .map(kohakuriver_api::columns::allocation_summary)
                .unwrap_or_else(|| "-".to_string());
            Some(normal(
                "Scheduled",
                format!("assigned to node {node} ({allocation})"),
            ))
        }
        (TaskPhase::Pending | TaskPhase::Failed, None, Some("Unschedulable" | "NodeNotFound")) => {
            Some(warning(
                "FailedScheduling",
                s.message.clone().unwrap_or_default(),
            ))
        }
        _ => None,
    }
}

/// What a lifecycle action on `task` says, once it was written.
pub fn task_action(task: &Task, action: &TaskAction) -> Vec<Said> {
    match action {
        TaskAction::Kill { reason, message } if reason == "DeadlineExceeded" => {
            vec![warning("DeadlineExceeded", message.clone())]
        }
        TaskAction::Status(status) => {
            let why = status.message.clone().unwrap_or_default();
            // The requeue message ends with "; retry N of M in Ss", which changes each time.
            let stable = why.split("; retry ").next().unwrap_or_default().to_string();
            let node = task.status.node.as_deref().unwrap_or("?");
            match (status.phase, status.reason.as_deref()) {
                (TaskPhase::Pending, Some("Retrying")) => {
                    vec![warning(
                        "Retrying",
                        format!("{stable}; retrying after back-off"),
                    )]
                }
                (TaskPhase::Pending, Some("NodeLost")) => vec![
                    warning("TaskLost", stable),
                    normal(
                        "Requeued",
                        format!("node {node} was lost; back in the queue for another node"),
                    ),
                ],
                (TaskPhase::Unknown, _) => vec![warning(
                    "TaskLost",
                    format!(
                        "node {node} stopped answering; the task may still run there and keeps its cores until the node returns or --lost-after passes"
                    ),
                )],
                (TaskPhase::Lost, _) => vec![warning("TaskLost", why)],
                (TaskPhase::Failed, Some("DeadlineExceeded")) => {
                    vec![warning("DeadlineExceeded", why)]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// What a readiness write on `node` says: it turned not ready, or ready again.
pub fn node_readiness(node: &Node, status: &NodeStatus) -> Option<Said> {
    let ready = |s: &NodeStatus| {
        find_condition(&s.conditions, "Ready").map(|c| (c.status, c.message.clone()))
    };
    match (ready(&node.status), ready(status)) {
        (before, Some((ConditionStatus::False, message)))
            if before.as_ref().map(|b| b.0) != Some(ConditionStatus::False) =>
        {
            Some(warning(
                "NodeNotReady",
                format!(
                    "node {} is not ready: {}",
                    node.metadata.name,
                    message.unwrap_or_default()
                ),
            ))
        }
        (Some((ConditionStatus::False, _)), Some((ConditionStatus::True, _))) => Some(normal(
            "NodeReady",
            format!("node {} is ready: heartbeats resumed", node.metadata.name),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{RetryPolicy, requeued};
    use kohakuriver_api::meta::set_condition;

    fn now() -> kohakuriver_api::Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn line(said: &Said) -> String {
        format!("{} {}: {}", said.type_, said.reason, said.message)
    }

    #[test]
    fn scheduling_events() {
        let bound = crate::scheduler::bind(
            &Task::test("t"),
            "n1",
            &kohakuriver_api::Allocation {
                cpus: "0-1".into(),
                gpus: vec![0, 1],
                ..Default::default()
            },
            now(),
        );
        let waiting = crate::scheduler::queued(
            &Task::test("t"),
            "Unschedulable",
            "no node has 64 free cores",
            now(),
        );
        let never = crate::scheduler::unschedulable(
            &Task::test("t"),
            "no node has 9999 cores",
            now(),
            true,
        );
        let cases = [
            (
                bound,
                Some("Normal Scheduled: assigned to node n1 (cpus 0-1 gpus 0,1)"),
            ),
            (
                waiting,
                Some("Warning FailedScheduling: no node has 64 free cores"),
            ),
            (
                never,
                Some("Warning FailedScheduling: no node has 9999 cores"),
            ),
            (Task::test("t"), None),
        ];
        for (task, want) in cases {
            assert_eq!(scheduling(&task).as_ref().map(line).as_deref(), want);
        }
    }

    #[test]
    fn lifecycle_events_fold_across_attempts() {
        let policy = RetryPolicy::default();
        let mut failed = Task::test("t").phase(TaskPhase::Failed);
        failed.spec.retries = 5;
        failed.status.reason = Some("Error".into());
        failed.status.exit_code = Some(1);
        let lines = |task: &Task, action: &TaskAction| -> Vec<String> {
            task_action(task, action).iter().map(line).collect()
        };
        let first = TaskAction::status(requeued(
            &failed,
            now(),
            &policy,
            "Retrying",
            "attempt failed (Error, exit code 1)",
        ));
        failed.status.attempts = 3;
        let later = TaskAction::status(requeued(
            &failed,
            now(),
            &policy,
            "Retrying",
            "attempt failed (Error, exit code 1)",
        ));
        assert_eq!(
            lines(&failed, &first),
            ["Warning Retrying: attempt failed (Error, exit code 1); retrying after back-off"]
        );
        assert_eq!(lines(&failed, &first), lines(&failed, &later));
        let bound = Task::test("t").bound("n1", "0", &[]);
        let lost = TaskAction::status(requeued(
            &bound,
            now(),
            &policy,
            "NodeLost",
            "node n1 lost (no heartbeat for 31s)",
        ));
        assert_eq!(
            lines(&bound, &lost),
            [
                "Warning TaskLost: node n1 lost (no heartbeat for 31s)",
                "Normal Requeued: node n1 was lost; back in the queue for another node"
            ]
        );
        let kill = TaskAction::Kill {
            reason: "DeadlineExceeded".into(),
            message: "ran past its 60s deadline".into(),
        };
        assert_eq!(
            lines(&bound, &kill),
            ["Warning DeadlineExceeded: ran past its 60s deadline"]
        );
        assert_eq!(lines(&bound, &TaskAction::Delete), Vec::<String>::new());
    }

    #[test]
    fn node_readiness_events() {
        let with_ready = |status: Option<ConditionStatus>| {
            let mut n = Node::test("n1");
            if let Some(s) = status {
                set_condition(
                    &mut n.status.conditions,
                    "Ready",
                    s,
                    Some("R"),
                    Some("no heartbeat for 31s"),
                    None,
                    now(),
                );
            }
            n
        };
        let t = Some(ConditionStatus::True);
        let f = Some(ConditionStatus::False);
        let cases = [
            (
                t,
                f,
                Some("Warning NodeNotReady: node n1 is not ready: no heartbeat for 31s"),
            ),
            (
                None,
                f,
                Some("Warning NodeNotReady: node n1 is not ready: no heartbeat for 31s"),
            ),
            (
                f,
                t,
                Some("Normal NodeReady: node n1 is ready: heartbeats resumed"),
            ),
            (t, t, None),
            (f, f, None),
        ];
        for (before, after, want) in cases {
            let got = node_readiness(&with_ready(before), &with_ready(after).status);
            assert_eq!(
                got.as_ref().map(line).as_deref(),
                want,
                "{before:?} -> {after:?}"
            );
        }
    }
}
