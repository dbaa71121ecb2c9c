//! Dependencies between tasks (`spec.dependsOn`), as Slurm's `--dependency=afterok:ID` and
//! `afterany:ID`: the types, their validation, and the two pure decisions every other crate
//! asks — whether a task's dependencies are met ([`dependency_state`]) and whether a set of
//! dependencies closes a cycle ([`find_cycle`]).
//!
//! The decisions take an abstract view of each upstream ([`Upstream`]) rather than stored
//! objects, so the controllers (from their watch cache) and the tests (from a table) ask the
//! same question the same way, and a kind of upstream other than a task only needs a way to
//! be seen as an [`Upstream`].

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{ConditionStatus, find_condition};
use crate::task::{Task, TaskPhase};
use crate::validation::{FieldError, check_dns_label};

/// The condition on `status.conditions` the dependency controller keeps on a task with
/// `dependsOn`: False (reason [`WAITING_FOR_DEPENDENCIES`]) while an upstream has not ended
/// as required, True once every one has. The scheduler binds such a task only once it is
/// True for the task's current generation.
pub const DEPENDENCIES_MET: &str = "DependenciesMet";
/// `status.reason` of a Pending task whose dependencies are not met yet.
pub const WAITING_FOR_DEPENDENCIES: &str = "WaitingForDependencies";
/// `status.reason` of a task that ended Failed because a dependency can never be met.
pub const DEPENDENCY_FAILED: &str = "DependencyFailed";

/// One upstream a task waits for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    /// The upstream's name (a task's id).
    pub name: String,
    /// What kind of object `name` names; default `Task`.
    #[serde(default, skip_serializing_if = "DependencyKind::is_task")]
    pub kind: DependencyKind,
    /// How the upstream must end; default `Succeeded`.
    #[serde(default, skip_serializing_if = "DependencyCondition::is_succeeded")]
    pub condition: DependencyCondition,
}

impl Dependency {
    /// A dependency on task `name` ending with `condition`.
    pub fn task(name: impl Into<String>, condition: DependencyCondition) -> Dependency {
        Dependency {
            name: name.into(),
            kind: DependencyKind::Task,
            condition,
        }
    }
}

/// What a dependency names.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DependencyKind {
    /// A task.
    #[default]
    Task,
    /// Every member of the task group of that name.
    TaskGroup,
}

impl DependencyKind {
    /// The kind's name, as manifests write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            DependencyKind::Task => "Task",
            DependencyKind::TaskGroup => "TaskGroup",
        }
    }

    /// True for the default, `Task`.
    pub fn is_task(&self) -> bool {
        *self == DependencyKind::Task
    }
}

/// How an upstream must end for its dependent to run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DependencyCondition {
    /// It succeeded (exit 0); Slurm's `afterok`. A failed, killed, lost or deleted upstream
    /// fails the dependent with reason `DependencyFailed`.
    #[default]
    Succeeded,
    /// It ended, however; Slurm's `afterany`.
    Finished,
}

impl DependencyCondition {
    /// True for the default, `Succeeded`.
    pub fn is_succeeded(&self) -> bool {
        *self == DependencyCondition::Succeeded
    }
}

/// What a decision needs to know of one upstream.
#[derive(Clone, Debug, PartialEq)]
pub enum Upstream {
    /// A task as it is now. `retrying` is true when a Failed attempt will be run again (so it
    /// is not the task's final outcome).
    Task {
        /// Its phase.
        phase: TaskPhase,
        /// Its exit code, once it exited.
        exit_code: Option<i64>,
        /// Its `status.reason`.
        reason: Option<String>,
        /// A Failed phase that the retry policy will turn back into Pending.
        retrying: bool,
    },
    /// A group of tasks: `complete` once every member succeeded, `failed` once the group can
    /// no longer complete, `finished` once no member will run any more.
    Group {
        /// Every member succeeded.
        complete: bool,
        /// The group cannot complete.
        failed: bool,
        /// No member will run again.
        finished: bool,
    },
    /// No longer stored; `last` is the last phase the observer saw it in (None when it never
    /// saw it, e.g. it was deleted while the observer was away).
    Gone {
        /// The last phase seen.
        last: Option<TaskPhase>,
    },
}

/// Where a task stands with its dependencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependencyState {
    /// Every upstream ended as required: the task may be scheduled.
    Met,
    /// These upstreams (in `dependsOn` order) have not ended as required yet.
    Waiting(Vec<Dependency>),
    /// `upstream` ended in a way that can never meet its condition.
    Failed {
        /// The upstream's name.
        upstream: String,
        /// How it ended, e.g. `ended Failed (exit code 1)`.
        why: String,
    },
}

impl DependencyState {
    /// The sentence a waiting or failed task carries as `status.message`.
    pub fn message(&self) -> String {
        match self {
            DependencyState::Met => "every dependency is met".to_string(),
            DependencyState::Waiting(deps) => waiting_message(deps),
            DependencyState::Failed { upstream, why } => format!("upstream {upstream} {why}"),
        }
    }
}

/// True when `task` may be scheduled as far as its dependencies go: it has none, or the
/// dependency controller found them all met for the task's current generation (condition
/// [`DEPENDENCIES_MET`] True). A change of spec asks the controller again.
pub fn released(task: &Task) -> bool {
    task.spec.depends_on.is_empty()
        || find_condition(&task.status.conditions, DEPENDENCIES_MET).is_some_and(|c| {
            c.status == ConditionStatus::True && c.observed_generation == task.metadata.generation
        })
}

/// Where a task with dependencies `deps` stands, given how `lookup` sees each upstream. The
/// first failed dependency (in order) decides a failure; otherwise every unmet one is
/// listed. Pure: the caller looks the upstreams up.
pub fn dependency_state(
    deps: &[Dependency],
    mut lookup: impl FnMut(&Dependency) -> Upstream,
) -> DependencyState {
    let mut waiting = Vec::new();
    for dep in deps {
        match judge(dep.condition, &lookup(dep)) {
            Verdict::Met => {}
            Verdict::Wait => waiting.push(dep.clone()),
            Verdict::Never(why) => {
                return DependencyState::Failed {
                    upstream: dep.name.clone(),
                    why,
                };
            }
        }
    }
    if waiting.is_empty() {
        DependencyState::Met
    } else {
        DependencyState::Waiting(waiting)
    }
}

enum Verdict {
    Met,
    Wait,
    Never(String),
}

fn judge(condition: DependencyCondition, upstream: &Upstream) -> Verdict {
    use DependencyCondition::{Finished, Succeeded};
    match upstream {
        Upstream::Task {
            phase,
            exit_code,
            reason,
            retrying,
        } => {
            if !phase.is_terminal() || *retrying {
                return Verdict::Wait;
            }
            if condition == Finished || *phase == TaskPhase::Succeeded {
                return Verdict::Met;
            }
            let mut why = format!("ended {phase}");
            match (reason, exit_code) {
                (Some(r), Some(c)) => why.push_str(&format!(" ({r}, exit code {c})")),
                (Some(r), None) => why.push_str(&format!(" ({r})")),
                (None, Some(c)) => why.push_str(&format!(" (exit code {c})")),
                (None, None) => {}
            }
            Verdict::Never(why)
        }
        Upstream::Group {
            complete,
            failed,
            finished,
        } => match condition {
            _ if *complete => Verdict::Met,
            Succeeded if *failed => Verdict::Never("failed".to_string()),
            Finished if *finished => Verdict::Met,
            _ => Verdict::Wait,
        },
        Upstream::Gone { last } => match (condition, last) {
            (Finished, _) | (Succeeded, Some(TaskPhase::Succeeded)) => Verdict::Met,
            (Succeeded, _) => Verdict::Never("was deleted before it succeeded".to_string()),
        },
    }
}

/// `waiting for task a to succeed`, `waiting for tasks a, b to succeed and task c to finish`.
fn waiting_message(deps: &[Dependency]) -> String {
    let mut by_condition: BTreeMap<(u8, &str), Vec<&str>> = BTreeMap::new();
    for dep in deps {
        let (order, verb) = match dep.condition {
            DependencyCondition::Succeeded => (0, "succeed"),
            DependencyCondition::Finished => (1, "finish"),
        };
        by_condition
            .entry((order, verb))
            .or_default()
            .push(&dep.name);
    }
    let parts: Vec<String> = by_condition
        .into_iter()
        .map(|((_, verb), names)| {
            let noun = if names.len() == 1 { "task" } else { "tasks" };
            format!("{noun} {} to {verb}", names.join(", "))
        })
        .collect();
    format!("waiting for {}", parts.join(" and "))
}

/// Field errors of a task's `dependsOn` that need no other object: each name must be a
/// valid task name, not the task itself (`own_name`), and named once; a `TaskGroup`
/// dependency needs the TaskGroup kind, which this server does not serve yet.
pub fn validate_dependencies(own_name: &str, deps: &[Dependency]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, dep) in deps.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}].name");
        if let Err(e) = check_dns_label(&dep.name) {
            errors.push(FieldError::new(field, e));
            continue;
        }
        if dep.name == own_name && dep.kind == DependencyKind::Task {
            errors.push(FieldError::new(
                field,
                format!("task {own_name:?} cannot depend on itself"),
            ));
        } else if !seen.insert((dep.kind == DependencyKind::Task, dep.name.as_str())) {
            errors.push(FieldError::new(
                field,
                format!("{:?} is named twice; name each upstream once", dep.name),
            ));
        }
    }
    errors
}

/// The cycle `start`'s new dependencies (`deps`) would close, as the names along it from
/// `start` back to `start` (`[a, b, a]`), or None. `deps_of` answers the stored dependencies
/// of any other task (empty for one that does not exist). Each task is visited once, so the
/// cost is the size of the graph reachable from `deps`.
pub fn find_cycle(
    start: &str,
    deps: &[String],
    mut deps_of: impl FnMut(&str) -> Vec<String>,
) -> Option<Vec<String>> {
    let mut visited: BTreeSet<String> = BTreeSet::new();
    // Depth-first, keeping the path to the task being explored: (task, its upstreams left,
    // reversed so `pop` takes them in order).
    let left = |deps: Vec<String>| deps.into_iter().rev().collect::<Vec<_>>();
    let mut path: Vec<(String, Vec<String>)> = vec![(start.to_string(), left(deps.to_vec()))];
    while let Some((_, next)) = path.last_mut() {
        let Some(upstream) = next.pop() else {
            path.pop();
            continue;
        };
        if upstream == start {
            let mut cycle: Vec<String> = path.iter().map(|(name, _)| name.clone()).collect();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if visited.insert(upstream.clone()) {
            let further = left(deps_of(&upstream));
            path.push((upstream, further));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyCondition::{Finished, Succeeded};

    fn task(phase: TaskPhase) -> Upstream {
        Upstream::Task {
            phase,
            exit_code: None,
            reason: None,
            retrying: false,
        }
    }

    fn one(condition: DependencyCondition, upstream: Upstream) -> String {
        let deps = [Dependency::task("a", condition)];
        match dependency_state(&deps, |_| upstream.clone()) {
            DependencyState::Met => "met".to_string(),
            DependencyState::Waiting(_) => "wait".to_string(),
            DependencyState::Failed { why, .. } => format!("failed: {why}"),
        }
    }

    #[test]
    fn one_upstream_case_table() {
        let exited = |phase, code| Upstream::Task {
            phase,
            exit_code: Some(code),
            reason: None,
            retrying: false,
        };
        let retrying = Upstream::Task {
            phase: TaskPhase::Failed,
            exit_code: Some(1),
            reason: Some("Error".into()),
            retrying: true,
        };
        let dep_failed = Upstream::Task {
            phase: TaskPhase::Failed,
            exit_code: None,
            reason: Some(DEPENDENCY_FAILED.into()),
            retrying: false,
        };
        let group = |complete, failed, finished| Upstream::Group {
            complete,
            failed,
            finished,
        };
        let gone = |last| Upstream::Gone { last };
        let cases = [
            (Succeeded, exited(TaskPhase::Succeeded, 0), "met"),
            (Succeeded, task(TaskPhase::Pending), "wait"),
            (Succeeded, task(TaskPhase::Assigned), "wait"),
            (Succeeded, task(TaskPhase::Running), "wait"),
            (Succeeded, task(TaskPhase::Paused), "wait"),
            (Succeeded, task(TaskPhase::Unknown), "wait"),
            (
                Succeeded,
                exited(TaskPhase::Failed, 3),
                "failed: ended Failed (exit code 3)",
            ),
            (Succeeded, retrying.clone(), "wait"),
            (
                Succeeded,
                dep_failed.clone(),
                "failed: ended Failed (DependencyFailed)",
            ),
            (
                Succeeded,
                exited(TaskPhase::Killed, 137),
                "failed: ended Killed (exit code 137)",
            ),
            (Succeeded, task(TaskPhase::Lost), "failed: ended Lost"),
            (Succeeded, gone(Some(TaskPhase::Succeeded)), "met"),
            (
                Succeeded,
                gone(Some(TaskPhase::Running)),
                "failed: was deleted before it succeeded",
            ),
            (
                Succeeded,
                gone(None),
                "failed: was deleted before it succeeded",
            ),
            (Finished, exited(TaskPhase::Succeeded, 0), "met"),
            (Finished, exited(TaskPhase::Failed, 3), "met"),
            (Finished, retrying, "wait"),
            (Finished, dep_failed, "met"),
            (Finished, task(TaskPhase::Killed), "met"),
            (Finished, task(TaskPhase::Lost), "met"),
            (Finished, task(TaskPhase::Running), "wait"),
            (Finished, task(TaskPhase::Unknown), "wait"),
            (Finished, gone(None), "met"),
            (Succeeded, group(true, false, true), "met"),
            (Succeeded, group(false, false, false), "wait"),
            (Succeeded, group(false, true, false), "failed: failed"),
            (Finished, group(false, true, false), "wait"),
            (Finished, group(false, true, true), "met"),
        ];
        for (condition, upstream, want) in cases {
            let got = one(condition, upstream.clone());
            assert_eq!(got, want, "{condition:?} on {upstream:?}");
        }
    }

    #[test]
    fn the_first_failure_decides_and_every_waiting_upstream_is_named() {
        let deps = [
            Dependency::task("a", Succeeded),
            Dependency::task("b", Finished),
            Dependency::task("c", Succeeded),
            Dependency::task("d", Succeeded),
        ];
        let phases = |failed: &'static str| {
            move |d: &Dependency| {
                task(match d.name.as_str() {
                    "a" => TaskPhase::Succeeded,
                    n if n == failed => TaskPhase::Failed,
                    _ => TaskPhase::Running,
                })
            }
        };
        let waiting = dependency_state(&deps, phases("none"));
        assert_eq!(
            waiting.message(),
            "waiting for tasks c, d to succeed and task b to finish"
        );
        let failed = dependency_state(&deps, phases("d"));
        assert_eq!(
            failed,
            DependencyState::Failed {
                upstream: "d".into(),
                why: "ended Failed".into()
            }
        );
        assert_eq!(failed.message(), "upstream d ended Failed");
        assert_eq!(
            dependency_state(&deps[..1], phases("none")),
            DependencyState::Met
        );
        assert_eq!(dependency_state(&[], phases("none")), DependencyState::Met);
    }

    #[test]
    fn validation_names_the_field_and_the_value() {
        let dep = |name: &str| Dependency::task(name, Succeeded);
        let group = Dependency {
            name: "sweep".into(),
            kind: DependencyKind::TaskGroup,
            condition: Succeeded,
        };
        let errors = validate_dependencies(
            "me",
            &[dep("a"), dep("Bad_Name"), dep("me"), dep("a"), group],
        );
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "a group dependency is valid: {got:#?}");
        assert!(got[0].starts_with("spec.dependsOn[1].name: \"Bad_Name\" is not a valid name"));
        assert_eq!(
            got[1],
            "spec.dependsOn[2].name: task \"me\" cannot depend on itself"
        );
        assert_eq!(
            got[2],
            "spec.dependsOn[3].name: \"a\" is named twice; name each upstream once"
        );
        assert!(validate_dependencies("me", &[dep("a"), dep("b")]).is_empty());
    }

    fn cycle(start: &str, deps: &[&str], graph: Edges) -> Option<String> {
        let graph: BTreeMap<&str, Vec<String>> = graph
            .iter()
            .map(|(k, v)| (*k, v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let deps: Vec<String> = deps.iter().map(|s| s.to_string()).collect();
        find_cycle(start, &deps, |n| graph.get(n).cloned().unwrap_or_default())
            .map(|c| c.join(" -> "))
    }

    /// A task's name and what it depends on.
    type Edges<'a> = &'a [(&'a str, &'a [&'a str])];

    #[test]
    fn cycles_are_found_and_named() {
        let cases: [(&str, &[&str], Edges, Option<&str>); 6] = [
            ("a", &["b"], &[("b", &[])], None),
            ("a", &["b"], &[("b", &["a"])], Some("a -> b -> a")),
            (
                "a",
                &["x", "b"],
                &[("b", &["c"]), ("c", &["d", "a"]), ("x", &[])],
                Some("a -> b -> c -> a"),
            ),
            // A diamond is no cycle: d is reached twice, explored once.
            (
                "a",
                &["b", "c"],
                &[("b", &["d"]), ("c", &["d"]), ("d", &[])],
                None,
            ),
            // A cycle elsewhere in the graph is not this task's to refuse.
            ("a", &["b"], &[("b", &["c"]), ("c", &["b"])], None),
            // Missing upstreams have no dependencies.
            ("a", &["ghost"], &[], None),
        ];
        for (start, deps, graph, want) in cases {
            assert_eq!(
                cycle(start, deps, graph).as_deref(),
                want,
                "{deps:?} {graph:?}"
            );
        }
    }
}
