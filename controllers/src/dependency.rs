//! The dependency controller's decision: what to write on a task with `spec.dependsOn`
//! while it waits, once its dependencies are met, and when one never can be.
//!
//! [`plan_dependencies`] is pure (task, now, how each upstream looks); the lifecycle loop
//! (`lifecycle.rs`) calls it for every task the other lifecycle rules leave alone, with
//! upstreams seen through the controllers' watch cache and [`Outcomes`]. The scheduler
//! never decides about dependencies: it binds a task with `dependsOn` only once condition
//! `DependenciesMet` is True for the task's generation
//! ([`kohakuriver_api::dependency::released`]), a check on the task alone, so its round
//! costs the same with or without dependencies.
//!
//! Rules:
//! - Only a Pending, unbound task that is not being deleted or killed, and not yet released
//!   for its generation, is judged.
//! - Waiting: reason `WaitingForDependencies`, the message naming every upstream not yet
//!   ended as required, condition `DependenciesMet` False.
//! - Met: condition `DependenciesMet` True; the waiting reason and message are cleared so
//!   the scheduler's own (`Unschedulable`…) take over.
//! - Never met: phase Failed, reason `DependencyFailed`, the message naming the upstream and
//!   how it ended. Such a failure is never retried, and the task's own dependents fail the
//!   same way, each naming its own upstream.
//! - An upstream no longer stored is judged by the last phase this process saw it in
//!   ([`Outcomes`]): Succeeded (say, deleted by its TTL) still counts as succeeded; anything
//!   else, or never seen (deleted while the controllers were down), is "deleted before it
//!   succeeded".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kohakuriver_api::dependency::{
    DEPENDENCIES_MET, DEPENDENCY_FAILED, DependencyKind, DependencyState, Upstream,
    WAITING_FOR_DEPENDENCIES, dependency_state, released,
};
use kohakuriver_api::meta::find_condition;
use kohakuriver_api::meta::{ConditionStatus, Timestamp, set_condition};
use kohakuriver_api::{Dependency, DesiredState, Task, TaskGroup, TaskPhase, TaskStatus};

use crate::retry::finished;

/// The status to write on `task` about its dependencies, or None when nothing changes.
/// `lookup` says how each upstream looks now.
pub fn plan_dependencies(
    task: &Task,
    now: Timestamp,
    lookup: impl FnMut(&Dependency) -> Upstream,
) -> Option<TaskStatus> {
    let status = &task.status;
    let judged = !task.spec.depends_on.is_empty()
        && status.phase == TaskPhase::Pending
        && status.node.is_none()
        && !task.metadata.is_deleting()
        && task.spec.state != DesiredState::Killed
        && !released(task);
    if !judged {
        return None;
    }
    let state = dependency_state(&task.spec.depends_on, lookup);
    let message = state.message();
    let g = task.metadata.generation;
    let mut s = status.clone();
    match state {
        DependencyState::Met => {
            if s.reason.as_deref() == Some(WAITING_FOR_DEPENDENCIES) {
                s.reason = None;
                s.message = None;
            }
            set_condition(
                &mut s.conditions,
                DEPENDENCIES_MET,
                ConditionStatus::True,
                Some(DEPENDENCIES_MET),
                Some(&message),
                g,
                now,
            );
        }
        DependencyState::Waiting(_) => {
            s.reason = Some(WAITING_FOR_DEPENDENCIES.to_string());
            s.message = Some(message.clone());
            s.observed_generation = g;
            set_condition(
                &mut s.conditions,
                DEPENDENCIES_MET,
                ConditionStatus::False,
                Some(WAITING_FOR_DEPENDENCIES),
                Some(&message),
                g,
                now,
            );
        }
        DependencyState::Failed { .. } => {
            s = finished(task, now, TaskPhase::Failed, DEPENDENCY_FAILED, &message);
            set_condition(
                &mut s.conditions,
                DEPENDENCIES_MET,
                ConditionStatus::False,
                Some(DEPENDENCY_FAILED),
                Some(&message),
                g,
                now,
            );
        }
    }
    (s != *status).then_some(s)
}

/// How a cached task looks as an upstream: a Failed phase the retry policy will undo is not
/// its outcome (the same rule the task lifecycle retries by).
pub fn as_upstream(task: &Task) -> Upstream {
    let phase = task.status.phase;
    Upstream::Task {
        phase,
        exit_code: task.status.exit_code,
        reason: task.status.reason.clone(),
        retrying: phase == TaskPhase::Failed && task.may_retry(),
    }
}

/// The last phase seen of every task some unreleased dependent waits for, kept across
/// rounds so an upstream deleted after it succeeded still counts as succeeded. Only names
/// a waiting task refers to are kept, so it is as large as the dependencies in flight.
#[derive(Debug, Default)]
pub struct Outcomes {
    last: HashMap<String, TaskPhase>,
}

impl Outcomes {
    /// Records the phase of every upstream named by a task still to be judged, and forgets
    /// the names no such task refers to any more.
    pub fn observe<'a>(&mut self, tasks: impl Iterator<Item = &'a Task> + Clone) {
        let referenced: HashSet<&str> = tasks
            .clone()
            .filter(|t| !t.spec.depends_on.is_empty() && !released(t))
            .flat_map(|t| t.spec.depends_on.iter().map(|d| d.name.as_str()))
            .collect();
        self.last
            .retain(|name, _| referenced.contains(name.as_str()));
        if referenced.is_empty() {
            // Nothing waits: spare a lookup per task in every round.
            return;
        }
        for task in tasks {
            if referenced.contains(task.metadata.name.as_str()) {
                self.last
                    .insert(task.metadata.name.clone(), task.status.phase);
            }
        }
    }

    /// How `dep` looks, given the cached tasks and task groups.
    pub fn upstream(
        &self,
        tasks: &HashMap<String, Arc<Task>>,
        groups: &HashMap<String, Arc<TaskGroup>>,
        dep: &Dependency,
    ) -> Upstream {
        match dep.kind {
            DependencyKind::Task => match tasks.get(&dep.name) {
                Some(task) => as_upstream(task),
                None => Upstream::Gone {
                    last: self.last.get(&dep.name).copied(),
                },
            },
            DependencyKind::TaskGroup => match groups.get(&dep.name) {
                Some(group) => group_upstream(group),
                // A group is never a waiting task's only record of its members' outcome;
                // gone, it is judged as deleted before it completed.
                None => Upstream::Gone { last: None },
            },
        }
    }
}

/// A group as an upstream: complete once its `Complete` condition is True, failed once its
/// `Failed` condition is, finished once every member that will run has (or either holds).
fn group_upstream(group: &TaskGroup) -> Upstream {
    let holds = |type_: &str| {
        find_condition(&group.status.conditions, type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    };
    let (complete, failed) = (holds("Complete"), holds("Failed"));
    Upstream::Group {
        complete,
        failed,
        finished: complete || failed || group.status.finished_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::DependencyCondition::{Finished, Succeeded};
    use kohakuriver_api::meta::find_condition;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn pending(mut task: Task) -> Task {
        task.metadata.generation = Some(1);
        task
    }

    /// The plan rendered as one line: `-` for nothing, else phase, reason, message and
    /// the DependenciesMet condition.
    fn render(task: &Task, cache: &[Task]) -> String {
        let tasks: HashMap<String, Arc<Task>> = cache
            .iter()
            .map(|t| (t.metadata.name.clone(), Arc::new(t.clone())))
            .collect();
        let outcomes = Outcomes::default();
        match plan_dependencies(task, now(), |d| {
            outcomes.upstream(&tasks, &HashMap::new(), d)
        }) {
            None => "-".to_string(),
            Some(s) => {
                let c = find_condition(&s.conditions, DEPENDENCIES_MET).unwrap();
                format!(
                    "{} {} {:?} {:?}={:?}",
                    s.phase,
                    s.reason.as_deref().unwrap_or("-"),
                    s.message.as_deref().unwrap_or("-"),
                    c.reason.as_deref().unwrap_or("-"),
                    c.status,
                )
            }
        }
    }

    #[test]
    fn plans_case_table() {
        let mut failed = Task::test("a").phase(TaskPhase::Failed);
        failed.status.exit_code = Some(1);
        let mut retried = failed.clone();
        retried.spec.retries = 2;
        let ok = Task::test("a").phase(TaskPhase::Succeeded);
        let running = Task::test("a").phase(TaskPhase::Running);
        let b = pending(Task::test("b").after("a", Succeeded));
        let b_any = pending(Task::test("b").after("a", Finished));
        let cases: Vec<(&str, Task, Vec<Task>, &str)> = vec![
            (
                "waits while a runs",
                b.clone(),
                vec![running.clone()],
                "Pending WaitingForDependencies \"waiting for task a to succeed\" \"WaitingForDependencies\"=False",
            ),
            (
                "met once a succeeded",
                b.clone(),
                vec![ok.clone()],
                "Pending - \"-\" \"DependenciesMet\"=True",
            ),
            (
                "fails when a failed",
                b.clone(),
                vec![failed.clone()],
                "Failed DependencyFailed \"upstream a ended Failed (exit code 1)\" \"DependencyFailed\"=False",
            ),
            (
                "waits for a's retry",
                b.clone(),
                vec![retried],
                "Pending WaitingForDependencies \"waiting for task a to succeed\" \"WaitingForDependencies\"=False",
            ),
            (
                "afterany runs after a failure",
                b_any,
                vec![failed],
                "Pending - \"-\" \"DependenciesMet\"=True",
            ),
            (
                "a deleted before it succeeded",
                b.clone(),
                vec![],
                "Failed DependencyFailed \"upstream a was deleted before it succeeded\" \"DependencyFailed\"=False",
            ),
            (
                "no dependencies, nothing to do",
                pending(Task::test("b")),
                vec![],
                "-",
            ),
            (
                "a bound task is not judged",
                b.clone().bound("n1", "0", &[]),
                vec![running.clone()],
                "-",
            ),
            (
                "a killed task is left to the lifecycle",
                b.clone().state(DesiredState::Killed),
                vec![running.clone()],
                "-",
            ),
        ];
        for (what, task, cache, want) in cases {
            assert_eq!(render(&task, &cache), want, "{what}");
        }
    }

    #[test]
    fn writes_only_changes_and_releases_once_per_generation() {
        let ok = Task::test("a").phase(TaskPhase::Succeeded);
        let running = Task::test("a").phase(TaskPhase::Running);
        let tasks = |t: &Task| HashMap::from([("a".to_string(), Arc::new(t.clone()))]);
        let outcomes = Outcomes::default();
        let mut b = pending(Task::test("b").after("a", Succeeded));
        let waiting = plan_dependencies(&b, now(), |d| {
            outcomes.upstream(&tasks(&running), &HashMap::new(), d)
        });
        b.status = waiting.expect("first look writes the waiting reason");
        assert!(!released(&b));
        assert_eq!(
            plan_dependencies(&b, now(), |d| outcomes.upstream(
                &tasks(&running),
                &HashMap::new(),
                d
            )),
            None,
            "nothing new to say"
        );
        b.status = plan_dependencies(&b, now(), |d| {
            outcomes.upstream(&tasks(&ok), &HashMap::new(), d)
        })
        .unwrap();
        assert!(released(&b));
        assert_eq!(b.status.reason, None);
        assert_eq!(
            plan_dependencies(&b, now(), |d| outcomes.upstream(
                &tasks(&ok),
                &HashMap::new(),
                d
            )),
            None
        );
        // A new generation (its spec changed) is judged again before it is scheduled.
        b.metadata.generation = Some(2);
        assert!(!released(&b));
        assert!(
            plan_dependencies(&b, now(), |d| outcomes.upstream(
                &tasks(&ok),
                &HashMap::new(),
                d
            ))
            .is_some()
        );
    }

    #[test]
    fn an_upstream_deleted_after_it_succeeded_still_counts() {
        let b = pending(Task::test("b").after("a", Succeeded));
        let c = pending(Task::test("c").after("b", Succeeded));
        let a = Task::test("a").phase(TaskPhase::Succeeded);
        let mut outcomes = Outcomes::default();
        outcomes.observe([&a, &b, &c].into_iter());
        let without_a: HashMap<String, Arc<Task>> =
            [(b.metadata.name.clone(), Arc::new(b.clone()))]
                .into_iter()
                .collect();
        let dep = &b.spec.depends_on[0];
        assert_eq!(
            outcomes.upstream(&without_a, &HashMap::new(), dep),
            Upstream::Gone {
                last: Some(TaskPhase::Succeeded)
            }
        );
        // Once no waiting task names it, it is forgotten.
        let mut released_b = b.clone();
        released_b
            .status
            .conditions
            .push(kohakuriver_api::Condition {
                type_: DEPENDENCIES_MET.into(),
                status: ConditionStatus::True,
                reason: None,
                message: None,
                last_transition_time: None,
                observed_generation: Some(1),
            });
        outcomes.observe([&released_b, &c].into_iter());
        assert_eq!(
            outcomes.upstream(&without_a, &HashMap::new(), dep),
            Upstream::Gone { last: None }
        );
    }

    #[test]
    fn a_group_is_an_upstream_through_its_conditions() {
        use kohakuriver_api::meta::Condition;
        let group = |conditions: &[(&str, ConditionStatus)]| {
            let mut g = TaskGroup::new("sweep", Task::test("t").spec, "0-3");
            g.status.conditions = conditions
                .iter()
                .map(|(t, s)| Condition {
                    type_: t.to_string(),
                    status: *s,
                    reason: None,
                    message: None,
                    last_transition_time: None,
                    observed_generation: None,
                })
                .collect();
            g
        };
        let look = |g: &TaskGroup| {
            let outcomes = Outcomes::default();
            let groups = HashMap::from([("sweep".to_string(), Arc::new(g.clone()))]);
            let dep = Dependency {
                name: "sweep".into(),
                kind: DependencyKind::TaskGroup,
                condition: Succeeded,
            };
            outcomes.upstream(&HashMap::new(), &groups, &dep)
        };
        let running = Upstream::Group {
            complete: false,
            failed: false,
            finished: false,
        };
        assert_eq!(look(&group(&[])), running);
        assert_eq!(
            look(&group(&[("Complete", ConditionStatus::True)])),
            Upstream::Group {
                complete: true,
                failed: false,
                finished: true
            }
        );
        assert_eq!(
            look(&group(&[
                ("Complete", ConditionStatus::False),
                ("Failed", ConditionStatus::True)
            ])),
            Upstream::Group {
                complete: false,
                failed: true,
                finished: true
            }
        );
        let outcomes = Outcomes::default();
        let dep = Dependency {
            name: "gone".into(),
            kind: DependencyKind::TaskGroup,
            condition: Succeeded,
        };
        assert_eq!(
            outcomes.upstream(&HashMap::new(), &HashMap::new(), &dep),
            Upstream::Gone { last: None }
        );
    }
}
