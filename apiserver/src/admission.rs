//! Admission: the pure rules that turn a request body and the stored object into the object
//! to store. No IO and no clock (callers pass `now` and the new uid), so every rule is unit
//! tested here.
//!
//! The store's one writer runs these functions inside its transaction, between reading the
//! current object and writing the new one, so a check such as the `resourceVersion`
//! precondition can never race with another write.

mod event;
mod group;

use kohakuriver_api::auth::{Policy, Role, Target, Verb, task_change, validate_node_status};
use kohakuriver_api::columns::Tabular;
use kohakuriver_api::precondition::{Stale, check_status_precondition, stamp_binding};
use kohakuriver_api::validation::{immutable_changes, validate_node, validate_task};
use kohakuriver_api::{
    Allocation, ApplyOutcome, CONTAINER_FINALIZER, CpuSet, FieldError, Node, Resource, Task,
    TaskStatus, Timestamp,
};

use crate::auth::Caller;
use crate::error::AppError;

/// What the server needs to know of a kind beyond `Resource`: how to validate it and how its
/// spec and status are kept apart.
pub trait Served: Tabular + PartialEq {
    /// True for kinds whose objects run in an image (tasks): a new one that names none
    /// needs a default image somewhere (`objects::image_refusal`).
    const RUNS_AN_IMAGE: bool = false;
    /// Where the task spec is in a body of this kind (`/spec`, or a group's template).
    const TASK_SPEC_POINTER: &'static str = "/spec";
    /// True for kinds whose owner is the one the (machine) writer names in the body rather
    /// than the caller: events carry the owner of the task they are about.
    const OWNER_FROM_BODY: bool = false;
    /// Field errors of the user-written parts (metadata and spec).
    fn validate(&self) -> Vec<FieldError>;
    /// The kind's JSON Schema, against which unknown fields are found.
    fn schema() -> &'static serde_json::Value;
    /// True when both specs are equal.
    fn same_spec(&self, other: &Self) -> bool;
    /// Replaces this object's spec with `from`'s.
    fn take_spec(&mut self, from: &Self);
    /// Replaces this object's status with `from`'s.
    fn take_status(&mut self, from: &Self);
    /// Resets the status of a new object; tasks start `Pending`, stamped `submittedAt`.
    fn start_status(&mut self, now: Timestamp);
    /// Server rules on a status write, given the stored object: a task newly bound to a
    /// node gets the container finalizer and keeps its `submittedAt`.
    fn admit_status_change(&mut self, old: &Self);
    /// Spec changes refused because the object is past the point where they may change
    /// (a task bound to a node).
    fn frozen_changes(&self, old: &Self) -> Vec<FieldError>;
    /// The values of the indexed columns `node` and `phase` (empty when the kind has none).
    fn index_columns(&self) -> (String, String);
    /// The object as an authorization target.
    fn target(&self) -> Target<'_>;
    /// The collection as an authorization target; `node` is the node a field selector
    /// limits a task list to.
    fn collection(node: Option<&str>) -> Target<'_>;
    /// The authorization target for an object named `name` that does not exist (a read of
    /// it answers 404 only to those who could read it if it did).
    fn missing(name: &str) -> Target<'_>;
    /// The verb a change of spec and metadata from `self` to `new` amounts to.
    fn change_verb(&self, new: &Self) -> Verb {
        let _ = new;
        Verb::Update
    }
    /// Sets the owner of a new object (tasks only).
    fn stamp_owner(&mut self, _owner: Option<String>) {}
    /// Refuses spec contents the caller may not ask for (privileged tasks, host mounts);
    /// `old` is the stored object on an update.
    fn admit_spec_by(
        &self,
        _caller: &Caller,
        _old: Option<&Self>,
        _policy: &Policy,
    ) -> Result<(), AppError> {
        Ok(())
    }
    /// Checks the status in a status write's body (a whole status, or a merge patch of one)
    /// before the write is queued to the store's writer, so an oversized report never holds it.
    fn precheck_status(_status: &serde_json::Value) -> Result<(), AppError> {
        Ok(())
    }
    /// Refuses a status write the caller may not make, or that no one may: run by the
    /// store's writer with the other stored objects at hand.
    fn admit_status_by(
        &self,
        caller: &Caller,
        current: &Self,
        stored: &dyn Stored,
    ) -> Result<(), AppError>;
    /// Refuses (409) a status write whose preconditions (`sent_uid`, the uid in the body,
    /// and what the body's status names) do not hold for `current`; run on the body before
    /// the server stamps its own fields.
    fn check_status_precondition(
        &self,
        _current: &Self,
        _sent_uid: Option<&str>,
    ) -> Result<(), AppError> {
        Ok(())
    }
    /// What the object holds on a node (a task bound and not finished); none for other
    /// kinds.
    fn holding(&self) -> Option<Holding> {
        None
    }
    /// Rules that look at other stored objects. The store's writer runs this just before
    /// it stages a put, in the same transaction, with the stored object it replaces
    /// (`before`, None on a create), so the check and the write are one atomic step.
    fn admit_against(&self, _before: Option<&Self>, _stored: &dyn Stored) -> Result<(), AppError> {
        Ok(())
    }
}

/// What a task holds: its node's name and its allocation there.
pub type Holding = (String, Allocation);

/// Read access to the other stored objects, for rules that span objects. The store
/// implements it over the connection it holds locked.
pub trait Stored {
    /// The tasks whose `status.node` is `node` and whose phase is not terminal (read
    /// through the indexed `node` column, so the cost is the node's own tasks).
    fn tasks_on_node(&self, node: &str) -> Result<Vec<Task>, AppError>;
    /// The node named `name`, if it exists.
    fn node(&self, name: &str) -> Result<Option<Node>, AppError>;
    /// The task named `name`, if it exists.
    fn task(&self, name: &str) -> Result<Option<Task>, AppError>;
    /// Whether a task group named `name` exists.
    fn group_exists(&self, name: &str) -> Result<bool, AppError>;
}

/// A schema generated once, on first use.
fn schema_once(
    cell: &'static std::sync::OnceLock<serde_json::Value>,
    text: fn() -> String,
) -> &'static serde_json::Value {
    cell.get_or_init(|| serde_json::from_str(&text()).unwrap_or_default())
}

impl Served for Task {
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
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec(&mut self, from: &Self) {
        self.spec = from.spec.clone();
    }
    fn take_status(&mut self, from: &Self) {
        self.status = from.status.clone();
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

impl Served for Node {
    fn validate(&self) -> Vec<FieldError> {
        validate_node(self)
    }
    fn schema() -> &'static serde_json::Value {
        static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        schema_once(&SCHEMA, kohakuriver_api::schema::node_schema_json)
    }
    fn target(&self) -> Target<'_> {
        Target::Node(&self.metadata.name)
    }
    fn collection(_node: Option<&str>) -> Target<'_> {
        Target::Nodes
    }
    fn missing(name: &str) -> Target<'_> {
        Target::Node(name)
    }
    /// What a body says of a node's status is bounded before anything else reads it.
    fn precheck_status(status: &serde_json::Value) -> Result<(), AppError> {
        let Ok(partial) = serde_json::from_value::<kohakuriver_api::NodeStatus>(status.clone())
        else {
            // Unreadable as a status: the full check after merging answers with the field.
            return Ok(());
        };
        let errors = validate_node_status(&partial);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::invalid(Node::KIND, "", errors))
        }
    }
    /// A node's status is bounded for every writer, and only the node itself sets the
    /// address the server will call.
    fn admit_status_by(
        &self,
        caller: &Caller,
        current: &Self,
        _stored: &dyn Stored,
    ) -> Result<(), AppError> {
        let errors = validate_node_status(&self.status);
        if !errors.is_empty() {
            return Err(AppError::invalid(Node::KIND, self.name(), errors));
        }
        let me = caller.identity();
        let is_self = me.role == Role::Node && me.name == self.metadata.name;
        if caller.is_checked() && self.status.address != current.status.address && !is_self {
            return Err(AppError::forbidden(format!(
                "{} {:?} may not set the address of node {}: only the node's own agent does",
                me.role, me.name, self.metadata.name
            )));
        }
        Ok(())
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec(&mut self, from: &Self) {
        self.spec = from.spec.clone();
    }
    fn take_status(&mut self, from: &Self) {
        self.status = from.status.clone();
    }
    fn start_status(&mut self, _now: Timestamp) {
        self.status = Default::default();
    }
    fn admit_status_change(&mut self, _old: &Self) {}
    fn frozen_changes(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
    fn index_columns(&self) -> (String, String) {
        (String::new(), String::new())
    }
}

/// Makes the body's name agree with the URL's: an empty body name takes the URL's, a
/// different one is refused naming both.
pub fn check_name<R: Served>(url_name: &str, body: &mut R) -> Result<(), AppError> {
    let meta = body.metadata_mut();
    if meta.name.is_empty() {
        meta.name = url_name.to_string();
    } else if meta.name != url_name {
        return Err(AppError::bad_request(format!(
            "the name in the body ({:?}) does not match the name in the URL ({url_name:?})",
            meta.name
        )));
    }
    Ok(())
}

/// The optimistic-concurrency check: a `resourceVersion` sent with a write must be the
/// stored one.
pub fn check_version<R: Served>(current: &R, sent: Option<u64>) -> Result<(), AppError> {
    match sent {
        Some(sent) if sent != current.resource_version() => Err(AppError::conflict(
            R::KIND,
            current.name(),
            sent,
            current.resource_version(),
        )),
        _ => Ok(()),
    }
}

fn validated<R: Served>(object: &R, mut causes: Vec<FieldError>) -> Result<(), AppError> {
    causes.extend(object.validate());
    if causes.is_empty() {
        Ok(())
    } else {
        Err(AppError::invalid(R::KIND, object.name(), causes))
    }
}

/// A new object from a create (or an apply that creates): validated, with server-owned
/// metadata set and the body's status dropped.
pub fn admit_create<R: Served>(mut body: R, uid: String, now: Timestamp) -> Result<R, AppError> {
    validated(&body, Vec::new())?;
    let meta = body.metadata_mut();
    meta.uid = Some(uid);
    meta.creation_timestamp = Some(now);
    meta.deletion_timestamp = None;
    meta.generation = Some(1);
    meta.resource_version = None;
    meta.owner = None;
    meta.managed_fields = Vec::new();
    body.start_status(now);
    Ok(body)
}

/// Carries the server-owned metadata and the status of `current` over to `new`, and bumps
/// the generation when the spec changed.
fn keep_server_fields<R: Served>(current: &R, new: &mut R) {
    let old = current.metadata();
    let generation = old.generation.unwrap_or(1) + i64::from(!new.same_spec(current));
    let meta = new.metadata_mut();
    meta.uid = old.uid.clone();
    meta.creation_timestamp = old.creation_timestamp;
    meta.deletion_timestamp = old.deletion_timestamp;
    meta.resource_version = old.resource_version;
    meta.generation = Some(generation);
    meta.owner = old.owner.clone();
    // Set once, by whoever created the object (the group controller for members).
    meta.owner_references = old.owner_references.clone();
    // Managed fields a write sends are taken as sent (how a client resets or hands over
    // ownership, as in Kubernetes); a write that sends none keeps the stored ones.
    if meta.managed_fields.is_empty() {
        meta.managed_fields = old.managed_fields.clone();
    }
    new.take_status(current);
}

/// A replace (`PUT` or merge patch of the main resource): spec, labels, annotations and
/// finalizers come from the body; status and server-owned metadata from the stored object.
pub fn admit_replace<R: Served>(current: &R, body: R) -> Result<R, AppError> {
    check_version(current, body.metadata().resource_version)?;
    let mut new = body;
    keep_server_fields(current, &mut new);
    validated(&new, new.frozen_changes(current))?;
    Ok(new)
}

/// A status write: only the status comes from the body.
pub fn admit_status<R: Served>(current: &R, body: &R) -> Result<R, AppError> {
    check_version(current, body.metadata().resource_version)?;
    let mut new = current.clone();
    new.take_status(body);
    new.admit_status_change(current);
    Ok(new)
}

/// An apply onto an existing object: spec, labels and annotations come from the manifest;
/// finalizers, status and server-owned metadata stay. Answers `Unchanged` (and the stored
/// object) when the manifest changes nothing.
pub fn admit_apply<R: Served>(current: &R, manifest: &R) -> Result<(R, ApplyOutcome), AppError> {
    validated(manifest, Vec::new())?;
    check_version(current, manifest.metadata().resource_version)?;
    let mut new = current.clone();
    new.take_spec(manifest);
    let meta = new.metadata_mut();
    meta.labels = manifest.metadata().labels.clone();
    meta.annotations = manifest.metadata().annotations.clone();
    let spec_changed = !new.same_spec(current);
    let meta_changed = new.metadata() != current.metadata();
    if !spec_changed && !meta_changed {
        return Ok((new, ApplyOutcome::Unchanged));
    }
    let frozen = new.frozen_changes(current);
    if !frozen.is_empty() {
        return Err(AppError::invalid(R::KIND, new.name(), frozen));
    }
    if spec_changed {
        let meta = new.metadata_mut();
        meta.generation = Some(meta.generation.unwrap_or(1) + 1);
    }
    Ok((new, ApplyOutcome::Configured))
}

/// What a delete does to a stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion<R> {
    /// No finalizers: the object goes now.
    Remove(R),
    /// Finalizers remain: `deletionTimestamp` is set and the object stays until they go.
    MarkDeleting(R),
    /// Deletion was already asked; nothing changes.
    AlreadyDeleting(R),
}

/// Decides a delete.
pub fn admit_delete<R: Served>(mut current: R, now: Timestamp) -> Deletion<R> {
    if current.metadata().finalizers.is_empty() {
        Deletion::Remove(current)
    } else if current.metadata().is_deleting() {
        Deletion::AlreadyDeleting(current)
    } else {
        current.metadata_mut().deletion_timestamp = Some(now);
        Deletion::MarkDeleting(current)
    }
}

/// True when a write leaves a deleting object with no finalizers: the object must go.
pub fn finalized<R: Served>(object: &R) -> bool {
    object.metadata().is_deleting() && object.metadata().finalizers.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{DesiredState, StatusReason, TaskPhase};

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn stored(task: Task) -> Task {
        let mut t = admit_create(task, "uid-1".into(), now()).unwrap();
        t.metadata.resource_version = Some(5);
        t
    }

    fn reason(result: Result<impl std::fmt::Debug, AppError>) -> StatusReason {
        result.unwrap_err().0.reason
    }

    #[test]
    fn create_sets_server_fields_and_drops_status() {
        let body = Task::test("a").bound("n1", "0", &[]);
        let t = admit_create(body, "u".into(), now()).unwrap();
        assert_eq!(t.metadata.uid.as_deref(), Some("u"));
        assert_eq!(t.metadata.generation, Some(1));
        assert_eq!(t.status.phase, TaskPhase::Pending);
        assert_eq!(t.status.node, None);
        assert_eq!(t.status.submitted_at, Some(now()));
    }

    #[test]
    fn create_refuses_invalid_naming_the_field() {
        let e = admit_create(Task::test("Bad_Name"), "u".into(), now()).unwrap_err();
        assert_eq!(e.0.code, 422);
        let causes = e.0.details.unwrap().causes;
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn replace_keeps_status_and_bumps_generation_on_spec_change() {
        let mut current = stored(Task::test("a"));
        current.status.phase = TaskPhase::Running;
        let mut body = Task::test("a").cpu(2).phase(TaskPhase::Failed);
        body.metadata.uid = Some("forged".into());
        let new = admit_replace(&current, body).unwrap();
        assert_eq!(new.status.phase, TaskPhase::Running);
        assert_eq!(new.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(new.metadata.generation, Some(2));
        let same = admit_replace(&current, current.clone()).unwrap();
        assert_eq!(same.metadata.generation, Some(1));
    }

    #[test]
    fn stale_version_conflicts() {
        let current = stored(Task::test("a"));
        let mut body = current.clone();
        body.metadata.resource_version = Some(4);
        assert_eq!(
            reason(admit_replace(&current, body.clone())),
            StatusReason::Conflict
        );
        assert_eq!(
            reason(admit_status(&current, &body)),
            StatusReason::Conflict
        );
        body.metadata.resource_version = Some(5);
        assert!(admit_status(&current, &body).is_ok());
    }

    #[test]
    fn status_write_keeps_spec_and_adds_finalizer_on_binding() {
        let current = stored(Task::test("a"));
        let body = Task::test("a").cpu(9).bound("n1", "0", &[]);
        let new = admit_status(&current, &body).unwrap();
        assert_eq!(new.spec.resources.cpu, 1);
        assert_eq!(new.status.node.as_deref(), Some("n1"));
        assert_eq!(new.status.submitted_at, Some(now()));
        assert_eq!(new.metadata.finalizers, [CONTAINER_FINALIZER]);
        assert_eq!(new.metadata.generation, Some(1));
        // Once bound, a later status write does not add it back.
        let mut unfinalized = new.clone();
        unfinalized.metadata.finalizers.clear();
        let again = admit_status(&unfinalized, &body).unwrap();
        assert!(again.metadata.finalizers.is_empty());
    }

    #[test]
    fn apply_is_idempotent_and_bumps_generation_only_on_spec() {
        let current = stored(Task::test("a"));
        let (_, outcome) = admit_apply(&current, &Task::test("a")).unwrap();
        assert_eq!(outcome, ApplyOutcome::Unchanged);
        let labelled = Task::test("a").selector("gpu", "a100");
        let (new, outcome) = admit_apply(&current, &labelled).unwrap();
        assert_eq!(outcome, ApplyOutcome::Configured);
        assert_eq!(new.metadata.generation, Some(2));
        let mut only_label = Task::test("a");
        only_label.metadata.labels.insert("team".into(), "x".into());
        let (new, outcome) = admit_apply(&current, &only_label).unwrap();
        assert_eq!(outcome, ApplyOutcome::Configured);
        assert_eq!(new.metadata.generation, Some(1));
    }

    #[test]
    fn bound_task_refuses_frozen_changes_naming_each_field() {
        let mut current = stored(Task::test("a"));
        current.status.node = Some("n1".into());
        let manifest = Task::test("a").cpu(2).command(&["echo"]);
        let e = admit_apply(&current, &manifest).unwrap_err();
        let fields: Vec<String> =
            e.0.details
                .unwrap()
                .causes
                .into_iter()
                .map(|c| c.field)
                .collect();
        assert_eq!(fields, ["spec.command", "spec.resources"]);
        let killed = Task::test("a").state(DesiredState::Killed);
        let (new, outcome) = admit_apply(&current, &killed).unwrap();
        assert_eq!(outcome, ApplyOutcome::Configured);
        assert_eq!(new.spec.state, DesiredState::Killed);
        assert_eq!(
            reason(admit_replace(&current, manifest)),
            StatusReason::Invalid
        );
    }

    #[test]
    fn delete_honours_finalizers() {
        let plain = stored(Task::test("a"));
        assert!(matches!(
            admit_delete(plain.clone(), now()),
            Deletion::Remove(_)
        ));
        let mut held = plain;
        held.metadata.finalizers.push(CONTAINER_FINALIZER.into());
        let Deletion::MarkDeleting(marked) = admit_delete(held, now()) else {
            panic!("expected MarkDeleting")
        };
        assert_eq!(marked.metadata.deletion_timestamp, Some(now()));
        assert!(!finalized(&marked));
        assert!(matches!(
            admit_delete(marked.clone(), now()),
            Deletion::AlreadyDeleting(_)
        ));
        let mut emptied = marked;
        emptied.metadata.finalizers.clear();
        assert!(finalized(&emptied));
    }

    #[test]
    fn name_must_match_the_url() {
        let mut t = Task::test("");
        check_name("a", &mut t).unwrap();
        assert_eq!(t.metadata.name, "a");
        let e = check_name("b", &mut t).unwrap_err();
        assert!(e.0.message.contains("\"a\"") && e.0.message.contains("\"b\""));
    }

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

    #[test]
    fn dependencies_freeze_once_scheduled() {
        use kohakuriver_api::DependencyCondition::{Finished, Succeeded};
        let pending = stored(Task::test("a").after("up", Succeeded));
        let changed = Task::test("a").after("up", Finished);
        assert!(admit_apply(&pending, &changed).is_ok());
        let mut bound = pending.clone();
        bound.status.node = Some("n1".into());
        let mut requeued = pending.clone();
        requeued.status.binding = 1;
        for scheduled in [bound, requeued] {
            let e = admit_apply(&scheduled, &changed).unwrap_err();
            let causes = e.0.details.unwrap().causes;
            assert_eq!(causes[0].field, "spec.dependsOn");
            assert!(causes[0].message.starts_with("cannot change once"));
        }
    }
}
