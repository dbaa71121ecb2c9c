//! Admission of `spec.dependsOn`: the rules that need the other stored tasks. Every
//! upstream must exist, and the new dependencies must not close a cycle. (Rules on the
//! dependencies alone — names, no self-dependency, no repeats — are validation, in
//! `kohakuriver_api::dependency::validate_dependencies`.)
//!
//! The store runs this under its lock with the write it judges (through
//! `Served::admit_against`), only when a write sets or changes `dependsOn`: a task whose
//! upstream was deleted later must still take its status writes.

use std::cell::RefCell;

use kohakuriver_api::dependency::{DependencyKind, find_cycle};
use kohakuriver_api::{FieldError, Resource, Task};

use crate::admission::Stored;
use crate::error::AppError;

/// Refuses (422) dependencies on tasks that do not exist, naming each, and a cycle, naming
/// it as `a -> b -> a`.
pub fn admit_dependencies(task: &Task, stored: &dyn Stored) -> Result<(), AppError> {
    let mut missing = Vec::new();
    let mut upstreams = Vec::new();
    for (i, dep) in task.spec.depends_on.iter().enumerate() {
        // A group's members are made by its controller from a template fixed once it
        // started, so a dependency on a group cannot close a cycle through stored tasks;
        // it only has to exist.
        if dep.kind == DependencyKind::TaskGroup {
            if !stored.group_exists(&dep.name)? {
                missing.push(FieldError::new(
                    format!("spec.dependsOn[{i}].name"),
                    format!(
                        "task group {:?} does not exist; create it first (kohakuriver get taskgroups lists them)",
                        dep.name
                    ),
                ));
            }
            continue;
        }
        match stored.task(&dep.name)? {
            Some(_) => upstreams.push(dep.name.clone()),
            None => missing.push(FieldError::new(
                format!("spec.dependsOn[{i}].name"),
                format!(
                    "task {:?} does not exist; create it first (kohakuriver apply creates a file's tasks after the tasks they depend on)",
                    dep.name
                ),
            )),
        }
    }
    if !missing.is_empty() {
        return Err(AppError::invalid(Task::KIND, task.name(), missing));
    }
    // The walk reads stored tasks as it goes; the first read error ends it and is answered.
    let failure: RefCell<Option<AppError>> = RefCell::new(None);
    let cycle = find_cycle(task.name(), &upstreams, |name| {
        if failure.borrow().is_some() {
            return Vec::new();
        }
        match stored.task(name) {
            Ok(found) => found
                .map(|t| {
                    t.spec
                        .depends_on
                        .into_iter()
                        .filter(|d| d.kind == DependencyKind::Task)
                        .map(|d| d.name)
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => {
                *failure.borrow_mut() = Some(e);
                Vec::new()
            }
        }
    });
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    match cycle {
        Some(cycle) => Err(AppError::invalid(
            Task::KIND,
            task.name(),
            vec![FieldError::new(
                "spec.dependsOn",
                format!(
                    "these dependencies make a cycle: {}; no task in it could ever start",
                    cycle.join(" -> ")
                ),
            )],
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{DependencyCondition, Node};

    struct Tasks(Vec<Task>);

    impl Stored for Tasks {
        fn tasks_on_node(&self, _node: &str) -> Result<Vec<Task>, AppError> {
            Ok(Vec::new())
        }
        fn node(&self, _name: &str) -> Result<Option<Node>, AppError> {
            Ok(None)
        }
        fn task(&self, name: &str) -> Result<Option<Task>, AppError> {
            Ok(self.0.iter().find(|t| t.metadata.name == name).cloned())
        }
        fn group_exists(&self, name: &str) -> Result<bool, AppError> {
            Ok(name == "sweep")
        }
    }

    fn after(name: &str, upstreams: &[&str]) -> Task {
        upstreams.iter().fold(Task::test(name), |t, u| {
            t.after(u, DependencyCondition::Succeeded)
        })
    }

    fn check(stored: &[Task], new: Task) -> String {
        match admit_dependencies(&new, &Tasks(stored.to_vec())) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("{} {}", e.0.code, e.0.message),
        }
    }

    #[test]
    fn upstreams_must_exist_and_close_no_cycle() {
        let stored = [after("a", &[]), after("b", &["a"]), after("c", &["b"])];
        let cases = [
            (after("d", &["c", "a"]), "ok"),
            (
                after("d", &["a", "ghost", "phantom"]),
                "422 Task \"d\" is invalid: spec.dependsOn[1].name: task \"ghost\" does not exist; create it first (kohakuriver apply creates a file's tasks after the tasks they depend on); spec.dependsOn[2].name: task \"phantom\" does not exist; create it first (kohakuriver apply creates a file's tasks after the tasks they depend on)",
            ),
            // `a` changed to wait for `c`, which waits (through b) for a.
            (
                after("a", &["c"]),
                "422 Task \"a\" is invalid: spec.dependsOn: these dependencies make a cycle: a -> c -> b -> a; no task in it could ever start",
            ),
            (
                after("b", &["c"]),
                "422 Task \"b\" is invalid: spec.dependsOn: these dependencies make a cycle: b -> c -> b; no task in it could ever start",
            ),
        ];
        for (new, want) in cases {
            assert_eq!(
                check(&stored, new.clone()),
                want,
                "{:?}",
                new.spec.depends_on
            );
        }
    }

    #[test]
    fn a_group_upstream_must_exist() {
        let on_group = |group: &str| {
            let mut t = Task::test("after-group");
            t.spec.depends_on.push(kohakuriver_api::Dependency {
                name: group.into(),
                kind: DependencyKind::TaskGroup,
                condition: DependencyCondition::Succeeded,
            });
            t
        };
        assert_eq!(check(&[], on_group("sweep")), "ok");
        assert_eq!(
            check(&[], on_group("nope")),
            "422 Task \"after-group\" is invalid: spec.dependsOn[0].name: task group \"nope\" does not exist; create it first (kohakuriver get taskgroups lists them)"
        );
    }
}
