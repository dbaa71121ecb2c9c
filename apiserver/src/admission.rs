//! Admission: the pure rules that turn a request body and the stored object into the object
//! to store. No IO and no clock (callers pass `now` and the new uid), so every rule is unit
//! tested here.
//!
//! The store's one writer runs these functions inside its transaction, between reading the
//! current object and writing the new one, so a check such as the `resourceVersion`
//! precondition can never race with another write.

mod event;
mod group;
mod node;
mod task;

use kohakuriver_api::auth::{Policy, Target, Verb};
use kohakuriver_api::columns::Tabular;
use kohakuriver_api::{Allocation, ApplyOutcome, FieldError, Node, Task, Timestamp};

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
    /// The part users write (`spec`).
    type Spec: Clone + PartialEq;
    /// The part controllers and agents report (`status`).
    type Status: Clone;
    /// The object's spec.
    fn spec(&self) -> &Self::Spec;
    /// The object's spec, mutably.
    fn spec_mut(&mut self) -> &mut Self::Spec;
    /// The object's status.
    fn status(&self) -> &Self::Status;
    /// The object's status, mutably.
    fn status_mut(&mut self) -> &mut Self::Status;
    /// True when both specs are equal.
    fn same_spec(&self, other: &Self) -> bool {
        self.spec() == other.spec()
    }
    /// Replaces this object's spec with `from`'s.
    fn take_spec(&mut self, from: &Self) {
        *self.spec_mut() = from.spec().clone();
    }
    /// Replaces this object's status with `from`'s.
    fn take_status(&mut self, from: &Self) {
        *self.status_mut() = from.status().clone();
    }
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

/// The `Spec` and `Status` of a kind whose fields are named `spec` and `status`, with
/// their accessors: written once here rather than in every `Served` impl.
macro_rules! spec_and_status {
    ($spec:ty, $status:ty) => {
        type Spec = $spec;
        type Status = $status;
        fn spec(&self) -> &$spec {
            &self.spec
        }
        fn spec_mut(&mut self) -> &mut $spec {
            &mut self.spec
        }
        fn status(&self) -> &$status {
            &self.status
        }
        fn status_mut(&mut self) -> &mut $status {
            &mut self.status
        }
    };
}
use spec_and_status;

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
    use kohakuriver_api::{CONTAINER_FINALIZER, DesiredState, StatusReason, TaskPhase};

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
