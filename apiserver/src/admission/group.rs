//! How the server admits `TaskGroup`s: validation (`kohakuriver_api::group::validate`), the
//! template and indexes fixed once the group has started, the owner stamped from the
//! caller, and the template's spec judged against the caller's role as a task's would be
//! (the controllers later create the members under their own identity, so this is where a
//! group's privileged or mounting template is refused).

use kohakuriver_api::auth::{Policy, Target};
use kohakuriver_api::group::validate::{frozen_group_changes, validate_group};
use kohakuriver_api::{FieldError, TaskGroup, TaskGroupStatus, Timestamp};

use super::{Served, Stored, schema_once, spec_and_status};
use crate::auth::Caller;
use crate::error::AppError;

impl Served for TaskGroup {
    spec_and_status!(kohakuriver_api::TaskGroupSpec, TaskGroupStatus);
    // A group whose members could never get an image is refused when it is written, not
    // member by member.
    const RUNS_AN_IMAGE: bool = true;
    const TASK_SPEC_POINTER: &'static str = "/spec/template/spec";
    fn validate(&self) -> Vec<FieldError> {
        validate_group(self)
    }
    fn schema() -> &'static serde_json::Value {
        static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        schema_once(&SCHEMA, kohakuriver_api::schema::task_group_schema_json)
    }
    fn start_status(&mut self, _now: Timestamp) {
        self.status = TaskGroupStatus::default();
    }
    fn admit_status_change(&mut self, _old: &Self) {}
    fn frozen_changes(&self, old: &Self) -> Vec<FieldError> {
        frozen_group_changes(old, self)
    }
    fn index_columns(&self) -> (String, String) {
        (String::new(), String::new())
    }
    fn target(&self) -> Target<'_> {
        Target::TaskGroup(self)
    }
    fn collection(_node: Option<&str>) -> Target<'_> {
        Target::TaskGroups
    }
    fn missing(_name: &str) -> Target<'_> {
        Target::TaskGroups
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
        caller.allow_spec(
            &self.spec.template.spec,
            old.map(|o| &o.spec.template.spec),
            policy,
        )
    }
    fn admit_status_by(
        &self,
        _caller: &Caller,
        _current: &Self,
        _stored: &dyn Stored,
    ) -> Result<(), AppError> {
        // Who may write a group's status at all is `authorize`'s (the controllers and
        // admins); its contents are the controller's own count of the members.
        Ok(())
    }
}
