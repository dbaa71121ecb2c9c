//! How the server admits `Event`s: validation (`kohakuriver_api::event::validate_event`),
//! no spec or status (every field but metadata is the event's content), and the owner taken
//! from the body. Only machine identities may write events (`authorize`), and the recorder
//! that writes them names the involved task's owner as the event's, so that
//! `--private-tasks` can show a user only the events of their own tasks; a node may also
//! only report events as itself (`source.host`), on create and on every update.

use kohakuriver_api::auth::{Policy, Role, Target};
use kohakuriver_api::event::validate_event;
use kohakuriver_api::{Event, FieldError, Timestamp};

use super::{Served, Stored, schema_once};
use crate::auth::Caller;
use crate::error::AppError;

impl Served for Event {
    // An event has neither a spec nor a status: every field but metadata is its content,
    // which `same_spec` and `take_spec` below compare and copy whole.
    type Spec = ();
    type Status = ();
    fn spec(&self) -> &() {
        &()
    }
    fn spec_mut(&mut self) -> &mut () {
        // A zero-sized value: leaking its box allocates nothing.
        Box::leak(Box::new(()))
    }
    fn status(&self) -> &() {
        &()
    }
    fn status_mut(&mut self) -> &mut () {
        Box::leak(Box::new(()))
    }
    const OWNER_FROM_BODY: bool = true;
    fn validate(&self) -> Vec<FieldError> {
        validate_event(self)
    }
    fn schema() -> &'static serde_json::Value {
        static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        schema_once(&SCHEMA, kohakuriver_api::schema::event_schema_json)
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.same_content(other)
    }
    fn take_spec(&mut self, from: &Self) {
        self.take_content(from);
    }
    // An event has no status: a status write (there is no route for one) changes nothing.
    fn take_status(&mut self, _from: &Self) {}
    fn start_status(&mut self, _now: Timestamp) {}
    fn admit_status_change(&mut self, _old: &Self) {}
    fn frozen_changes(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
    fn index_columns(&self) -> (String, String) {
        (String::new(), String::new())
    }
    fn target(&self) -> Target<'_> {
        Target::Event(self)
    }
    fn collection(_node: Option<&str>) -> Target<'_> {
        Target::Events
    }
    fn missing(_name: &str) -> Target<'_> {
        Target::Events
    }
    fn stamp_owner(&mut self, owner: Option<String>) {
        self.metadata.owner = owner;
    }
    /// A node reports only as itself, also when it rewrites one of its events.
    fn admit_spec_by(
        &self,
        caller: &Caller,
        _old: Option<&Self>,
        _policy: &Policy,
    ) -> Result<(), AppError> {
        let me = caller.identity();
        if caller.is_checked()
            && me.role == Role::Node
            && self.source.host.as_deref() != Some(me.name.as_str())
        {
            return Err(AppError::forbidden(format!(
                "node {:?} may report events only as itself: source.host must be {:?}, not {:?}",
                me.name,
                me.name,
                self.source.host.as_deref().unwrap_or("")
            )));
        }
        Ok(())
    }
    fn admit_status_by(
        &self,
        _caller: &Caller,
        _current: &Self,
        _stored: &dyn Stored,
    ) -> Result<(), AppError> {
        Ok(())
    }
}
