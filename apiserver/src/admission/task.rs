//! How the server admits `Task`s: validation, the spec fixed once a task is bound, the
//! status rules of a task write (the binding stamp, the container finalizer), and the
//! rules that look at other stored tasks: dependencies (`dependency_admission`) and no
//! double-booking of a node's cores, GPUs and memory (`binding_conflict`).

use kohakuriver_api::auth::{Policy, Target, Verb, task_change};
use kohakuriver_api::precondition::{Stale, check_status_precondition, stamp_binding};
use kohakuriver_api::validation::{immutable_changes, validate_task};
use kohakuriver_api::{
    CONTAINER_FINALIZER, CpuSet, FieldError, Node, Resource, Task, TaskStatus, Timestamp,
};

use super::{Holding, Served, Stored, schema_once, spec_and_status};
use crate::auth::Caller;
use crate::error::AppError;

impl Served for Task {
    spec_and_status!(kohakuriver_api::TaskSpec, TaskStatus);
    const RUNS_AN_IMAGE: bool = true;
    fn validate(&self) -> Vec<FieldError> {
        validate_task(self)
    }
    fn schema() -> &'static serde_json::Value {
        static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        schema_once(&SCHEMA, kohakuriver_api::schema::task_schema_json)
    }
    fn target(&self) -> Target<'_> {
        Target::Task(self)
    }
    fn collection(node: Option<&str>) -> Target<'_> {
        Target::Tasks { node }
    }
    fn missing(_name: &str) -> Target<'_> {
        Target::Tasks { node: None }
    }
    fn change_verb(&self, new: &Self) -> Verb {
        task_change(self, new)
    }
    fn stamp_owner(&mut self, owner: Option<String>) {
        self.metadata.owner = owner;
    }
    fn admit_spec_by(
        &self,
        caller: &Caller,
        old: Option<&Self>,
        policy: &Policy,
    ) -> Result<(), AppError> {
        caller.allow_spec(&self.spec, old.map(|o| &o.spec), policy)
    }
    fn admit_status_by(
        &self,
        caller: &Caller,
        current: &Self,
        stored: &dyn Stored,
    ) -> Result<(), AppError> {
        if !caller.is_checked() || self.status == current.status {
            return Ok(());
        }
        let binding_changed = self.status.node != current.status.node
            || self.status.allocation != current.status.allocation;
        let node = match (&self.status.node, binding_changed) {
            (Some(name), true) => stored.node(name)?,
            _ => None,
        };
        caller.allow_task_status(current, self, node.as_ref())
    }
    fn check_status_precondition(
        &self,
        current: &Self,
        sent_uid: Option<&str>,
    ) -> Result<(), AppError> {
        check_status_precondition(current, sent_uid, &self.status)
            .map_err(|Stale(m)| AppError::stale(Task::KIND, &current.metadata.name, m))
    }
    fn start_status(&mut self, now: Timestamp) {
        self.status = TaskStatus {
            submitted_at: Some(now),
            ..TaskStatus::default()
        };
    }
    fn admit_status_change(&mut self, old: &Self) {
        stamp_binding(&old.status, &mut self.status);
        if self.status.submitted_at.is_none() {
            self.status.submitted_at = old.status.submitted_at;
        }
        let newly_bound = old.status.node.is_none() && self.status.node.is_some();
        let finalizers = &mut self.metadata.finalizers;
        if newly_bound && !finalizers.iter().any(|f| f == CONTAINER_FINALIZER) {
            finalizers.push(CONTAINER_FINALIZER.to_string());
        }
    }
    fn frozen_changes(&self, old: &Self) -> Vec<FieldError> {
        if old.status.node.is_some() {
            immutable_changes(&old.spec, &self.spec)
        } else if old.status.binding > 0 && old.spec.depends_on != self.spec.depends_on {
            // Requeued for a retry: its dependencies were met when it was first scheduled,
            // and changing them now could not take that run back.
            vec![FieldError::new(
                "spec.dependsOn",
                "cannot change once the task has been scheduled; delete and recreate it (kohakuriver apply --force)",
            )]
        } else {
            Vec::new()
        }
    }
    fn index_columns(&self) -> (String, String) {
        (
            self.status.node.clone().unwrap_or_default(),
            self.status.phase.to_string(),
        )
    }
    fn holding(&self) -> Option<Holding> {
        match (&self.status.node, &self.status.allocation) {
            (Some(node), Some(allocation)) if self.holds_allocation() => {
                Some((node.clone(), allocation.clone()))
            }
            _ => None,
        }
    }
    /// Dependencies set or changed by this write must name existing tasks and close no
    /// cycle (`dependency_admission`). A task that starts holding cores, GPUs or memory it
    /// did not hold before (a new binding, or a finished task made to hold again) must not
    /// overlap any other holder on its node; rewriting the same holding is always fine.
    fn admit_against(&self, before: Option<&Self>, stored: &dyn Stored) -> Result<(), AppError> {
        let deps_changed = before.is_none_or(|b| b.spec.depends_on != self.spec.depends_on);
        if deps_changed && !self.spec.depends_on.is_empty() {
            crate::dependency_admission::admit_dependencies(self, stored)?;
        }
        let Some(holding) = self.holding() else {
            return Ok(());
        };
        if before.and_then(Served::holding).as_ref() == Some(&holding) {
            return Ok(());
        }
        let (node, allocation) = &holding;
        if let Err(message) = CpuSet::parse(&allocation.cpus) {
            let cause = FieldError::new("status.allocation.cpus", message);
            return Err(AppError::invalid(Task::KIND, self.name(), vec![cause]));
        }
        let holders = stored.tasks_on_node(node)?;
        let node = stored.node(node)?;
        match binding_conflict(self, &holders, node.as_ref()) {
            Some(message) => Err(AppError::binding_conflict(self.name(), &message)),
            None => Ok(()),
        }
    }
}

/// Why binding `new` (bound to a node, holding an allocation) would double-book its node,
/// or `None` when it fits. `holders` are tasks on that node; only those that hold an
/// allocation there (bound, phase not terminal) and are not `new` itself count. Refused:
/// a core or GPU index another holder has, and memory past the node's
/// `status.allocatable.memoryBytes` (when the node exists and reports it; a missing node is
/// not judged on memory, since cores and GPUs are compared between tasks alone). Only
/// tasks with a memory limit use memory, as the allocator counts it. Each overlap names the
/// node, the shared cores or GPUs and the holder: `node n1: cores 2-3 are held by task t7`.
pub fn binding_conflict(new: &Task, holders: &[Task], node: Option<&Node>) -> Option<String> {
    let (node_name, allocation) = match (&new.status.node, &new.status.allocation) {
        (Some(node), Some(allocation)) if new.holds_allocation() => (node.as_str(), allocation),
        _ => return None,
    };
    let cpus = CpuSet::parse(&allocation.cpus).unwrap_or_default();
    let mut problems = Vec::new();
    let mut memory_used: u64 = 0;
    for holder in holders {
        let held = match (&holder.status.node, &holder.status.allocation) {
            (Some(n), Some(held))
                if n == node_name
                    && holder.holds_allocation()
                    && holder.metadata.name != new.metadata.name =>
            {
                held
            }
            _ => continue,
        };
        memory_used = memory_used.saturating_add(held.memory_bytes.unwrap_or(0));
        let theirs = CpuSet::parse(&held.cpus).unwrap_or_default();
        let cores: CpuSet = cpus.iter().filter(|&c| theirs.contains(c)).collect();
        let mut gpus: Vec<u32> = allocation
            .gpus
            .iter()
            .filter(|g| held.gpus.contains(g))
            .copied()
            .collect();
        gpus.sort_unstable();
        gpus.dedup();
        let mut what = Vec::new();
        match cores.len() {
            0 => {}
            1 => what.push(format!("core {cores}")),
            _ => what.push(format!("cores {cores}")),
        }
        match gpus.len() {
            0 => {}
            1 => what.push(format!("GPU {}", gpus[0])),
            _ => {
                let list: Vec<String> = gpus.iter().map(u32::to_string).collect();
                what.push(format!("GPUs {}", list.join(",")));
            }
        }
        if !what.is_empty() {
            let verb = if cores.len() + gpus.len() == 1 {
                "is"
            } else {
                "are"
            };
            problems.push(format!(
                "node {node_name}: {} {verb} held by task {}",
                what.join(" and "),
                holder.metadata.name
            ));
        }
    }
    if let (Some(need), Some(node)) = (allocation.memory_bytes, node) {
        let total = node.status.allocatable.memory_bytes;
        if total > 0 && memory_used.saturating_add(need) > total {
            problems.push(format!(
                "node {node_name}: needs {need} bytes of memory but only {} of {total} allocatable bytes are free",
                total.saturating_sub(memory_used)
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{StatusReason, TaskPhase};
    fn holder(name: &str, cpus: &str, gpus: &[u32]) -> Task {
        Task::test(name).bound("n1", cpus, gpus)
    }

    fn with_memory(mut t: Task, bytes: u64) -> Task {
        t.status.allocation.as_mut().unwrap().memory_bytes = Some(bytes);
        t
    }

    #[test]
    fn binding_conflict_table() {
        let node = Node::test("n1").memory("10G");
        let held = [
            holder("t7", "2-3", &[0]),
            holder("t8", "4", &[]),
            holder("done", "0-1", &[1]).phase(TaskPhase::Succeeded),
            Task::test("elsewhere").bound("n2", "5", &[2]),
            with_memory(holder("big", "", &[]), 6_000_000_000),
        ];
        let cases: Vec<(&str, Task, Option<&str>)> = vec![
            ("disjoint cores", holder("new", "5-6", &[]), None),
            (
                "overlapping cores",
                holder("new", "1-3", &[]),
                Some("node n1: cores 2-3 are held by task t7"),
            ),
            (
                "one core",
                holder("new", "4", &[]),
                Some("node n1: core 4 is held by task t8"),
            ),
            (
                "a GPU",
                holder("new", "", &[3, 0]),
                Some("node n1: GPU 0 is held by task t7"),
            ),
            (
                "cores and GPU, two holders",
                holder("new", "3-4", &[0]),
                Some(
                    "node n1: core 3 and GPU 0 are held by task t7; node n1: core 4 is held by task t8",
                ),
            ),
            (
                "a terminal holder does not block",
                holder("new", "0-1", &[1]),
                None,
            ),
            (
                "another node does not block",
                holder("new", "5", &[2]),
                None,
            ),
            (
                "the task itself does not block",
                holder("t7", "2-3", &[0]),
                None,
            ),
            (
                "a terminal binding holds nothing",
                holder("new", "2", &[]).phase(TaskPhase::Failed),
                None,
            ),
            (
                "memory that fits",
                with_memory(holder("new", "6", &[]), 4_000_000_000),
                None,
            ),
            (
                "memory past allocatable",
                with_memory(holder("new", "6", &[]), 4_000_000_001),
                Some(
                    "node n1: needs 4000000001 bytes of memory but only 4000000000 of 10000000000 allocatable bytes are free",
                ),
            ),
        ];
        for (what, new, want) in cases {
            let got = binding_conflict(&new, &held, Some(&node));
            assert_eq!(got.as_deref(), want, "{what}");
        }
        // Without the node (or without a reported allocatable memory) memory is not judged.
        let hungry = with_memory(holder("new", "6", &[]), 50_000_000_000);
        assert_eq!(binding_conflict(&hungry, &held, None), None);
        let mut unknown = node.clone();
        unknown.status.allocatable.memory_bytes = 0;
        assert_eq!(binding_conflict(&hungry, &held, Some(&unknown)), None);
        // An unbound task conflicts with nothing.
        assert_eq!(
            binding_conflict(&Task::test("new"), &held, Some(&node)),
            None
        );
    }

    struct Fake(Vec<Task>);

    impl Stored for Fake {
        fn tasks_on_node(&self, node: &str) -> Result<Vec<Task>, AppError> {
            Ok(self
                .0
                .iter()
                .filter(|t| t.status.node.as_deref() == Some(node))
                .cloned()
                .collect())
        }
        fn node(&self, _name: &str) -> Result<Option<Node>, AppError> {
            Ok(None)
        }
        fn task(&self, name: &str) -> Result<Option<Task>, AppError> {
            Ok(self.0.iter().find(|t| t.metadata.name == name).cloned())
        }
        fn group_exists(&self, _name: &str) -> Result<bool, AppError> {
            Ok(false)
        }
    }

    #[test]
    fn only_new_holdings_are_checked() {
        // A stored overlap (from before this rule) does not block rewriting the same holding.
        let stored = Fake(vec![holder("t7", "2-3", &[]), holder("t8", "3", &[])]);
        let t8 = holder("t8", "3", &[]);
        assert!(t8.admit_against(Some(&t8), &stored).is_ok());
        let e = t8.admit_against(None, &stored).unwrap_err();
        assert_eq!(e.0.code, 409);
        assert_eq!(e.0.reason, StatusReason::Conflict);
        assert!(
            e.0.message.contains("node n1: core 3 is held by task t7"),
            "{e}"
        );
        // A finished task made to hold again is a new holding.
        let finished = t8.clone().phase(TaskPhase::Failed);
        assert_eq!(finished.holding(), None);
        assert!(finished.admit_against(None, &stored).is_ok());
        // A cpuset that cannot be read is refused naming the field.
        let bad = holder("t9", "x-y", &[]);
        let e = bad.admit_against(None, &stored).unwrap_err();
        assert_eq!(e.0.code, 422);
        assert_eq!(
            e.0.details.unwrap().causes[0].field,
            "status.allocation.cpus"
        );
        // Nodes hold nothing.
        assert!(Node::test("n1").admit_against(None, &stored).is_ok());
    }

    #[test]
    fn dependencies_are_checked_only_when_they_change() {
        use kohakuriver_api::DependencyCondition::Succeeded;
        let stored = Fake(vec![Task::test("up")]);
        let dependent = Task::test("down").after("up", Succeeded);
        assert!(dependent.admit_against(None, &stored).is_ok());
        let orphan = Task::test("down").after("gone", Succeeded);
        let e = orphan.admit_against(None, &stored).unwrap_err();
        assert_eq!(e.0.code, 422, "{e}");
        assert!(e.0.message.contains("task \"gone\" does not exist"), "{e}");
        // Its upstream deleted since, the task still takes status writes.
        let mut reported = orphan.clone();
        reported.status.reason = Some("WaitingForDependencies".into());
        assert!(reported.admit_against(Some(&orphan), &stored).is_ok());
    }
}
