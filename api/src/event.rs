//! The `Event` resource: something that happened to a task or a node, as Kubernetes'
//! core/v1 `Event` tells it (`kubectl get events` reads ours the same way).
//!
//! Events are written by machines only: the scheduler (`Scheduled`, `FailedScheduling`),
//! the node agents (`Pulling`, `Started`, `Exited`…) and the lifecycle controllers
//! (`NodeNotReady`, `Retrying`…), through the client crate's `Recorder`, which folds
//! repeats into one event whose `count` grows and rate-limits the writes per object.
//! People read them (`kohakuriver events`, `describe`); an admin may delete them; the
//! controllers delete those older than `--event-ttl`.
//!
//! Like Kubernetes' events, the fields sit at the top level (no `spec` or `status`), and
//! `metadata.owner` is the owner of the involved task, so `--private-tasks` shows a user
//! only the events of their own tasks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::columns::{Cell, Column, Tabular, age, truncate};
use crate::group::TaskGroup;
use crate::meta::{ObjectMeta, Timestamp};
use crate::node::Node;
use crate::resource::{Resource, Subresource};
use crate::task::Task;
use crate::validation::{
    FieldError, check_dns_subdomain, check_labels, check_metadata_size, type_errors,
};

/// The longest `message` stored; the recorder cuts longer ones (as Kubernetes' does).
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// The longest `reason` and `source.component`.
pub const MAX_WORD_CHARS: usize = 128;

/// Something that happened to an object: what (`reason`, `message`), to which
/// (`involvedObject`), how often (`count`, `firstTimestamp`, `lastTimestamp`), and who saw it
/// (`source`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// Always `kohakuriver/v1`.
    pub api_version: String,
    /// Always `Event`.
    pub kind: String,
    /// Name (`<object>.<hash>` from the recorder), and the involved task's owner.
    pub metadata: ObjectMeta,
    /// The object the event is about.
    pub involved_object: InvolvedObject,
    /// A short UpperCamelCase word a program can switch on, e.g. `Scheduled`, `Exited`.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type", default)]
    pub type_: EventType,
    /// How many times it happened (repeats fold into one event).
    #[serde(default = "one")]
    pub count: u32,
    /// When it first happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Timestamp>,
    /// When it last happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Timestamp>,
    /// The component (and host) that reported it.
    pub source: EventSource,
}

fn one() -> u32 {
    1
}

/// The object an event is about, as Kubernetes' `ObjectReference` names it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvolvedObject {
    /// `Task`, `TaskGroup` or `Node`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The object's uid: a task deleted and made again under the same name is another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `kohakuriver/v1`, as Kubernetes clients expect it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

impl InvolvedObject {
    /// The reference to `object`.
    pub fn of<R: Resource>(object: &R) -> InvolvedObject {
        InvolvedObject {
            kind: R::KIND.to_string(),
            name: object.name().to_string(),
            uid: object.metadata().uid.clone(),
            api_version: Some(crate::API_VERSION.to_string()),
        }
    }

    /// `task/NAME`, as `-o name` and kubectl's OBJECT column print it.
    pub fn kind_name(&self) -> String {
        format!("{}/{}", self.kind.to_lowercase(), self.name)
    }
}

/// How much attention an event asks for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum EventType {
    /// Things going as they should.
    #[default]
    Normal,
    /// Something went wrong, or may.
    Warning,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        })
    }
}

/// Who reported an event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// `scheduler`, `node-lifecycle`, `task-lifecycle`, `agent`.
    pub component: String,
    /// The node, for events an agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl std::fmt::Display for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{}, {host}", self.component),
            None => f.write_str(&self.component),
        }
    }
}

impl Event {
    /// A new event, seen once at `now`.
    pub fn new(
        name: impl Into<String>,
        involved_object: InvolvedObject,
        type_: EventType,
        reason: impl Into<String>,
        message: impl Into<String>,
        source: EventSource,
        now: Timestamp,
    ) -> Event {
        Event {
            api_version: crate::API_VERSION.to_string(),
            kind: "Event".to_string(),
            metadata: ObjectMeta::named(name),
            involved_object,
            reason: reason.into(),
            message: message.into(),
            type_,
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source,
        }
    }

    /// When it last happened (or first, or was stored), for sorting and expiry.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.last_timestamp
            .or(self.first_timestamp)
            .or(self.metadata.creation_timestamp)
    }

    /// True when two events say the same things (all but metadata): a write that changes
    /// none of them bumps no generation.
    pub fn same_content(&self, other: &Event) -> bool {
        self.involved_object == other.involved_object
            && self.reason == other.reason
            && self.message == other.message
            && self.type_ == other.type_
            && self.count == other.count
            && self.first_timestamp == other.first_timestamp
            && self.last_timestamp == other.last_timestamp
            && self.source == other.source
    }

    /// Takes every field but metadata from `from`.
    pub fn take_content(&mut self, from: &Event) {
        self.involved_object = from.involved_object.clone();
        self.reason = from.reason.clone();
        self.message = from.message.clone();
        self.type_ = from.type_;
        self.count = from.count;
        self.first_timestamp = from.first_timestamp;
        self.last_timestamp = from.last_timestamp;
        self.source = from.source.clone();
    }
}

impl Resource for Event {
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    // `ev`, as kubectl users type for Kubernetes events: this server serves no core group.
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const CATEGORIES: &'static [&'static str] = &["kohakuriver"];
    // No status: an event is one fact, written whole (as in Kubernetes).
    const SUBRESOURCES: &'static [Subresource] = &[];
    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "metadata.name",
        "metadata.owner",
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.uid",
        "reason",
        "type",
        "source.component",
        "source.host",
    ];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn field(&self, path: &str) -> Option<String> {
        let text = |s: &Option<String>| Some(s.clone().unwrap_or_default());
        match path {
            "metadata.name" => Some(self.metadata.name.clone()),
            "metadata.owner" => text(&self.metadata.owner),
            "involvedObject.kind" => Some(self.involved_object.kind.clone()),
            "involvedObject.name" => Some(self.involved_object.name.clone()),
            "involvedObject.uid" => text(&self.involved_object.uid),
            "reason" => Some(self.reason.clone()),
            "type" => Some(self.type_.to_string()),
            "source.component" => Some(self.source.component.clone()),
            "source.host" => text(&self.source.host),
            _ => None,
        }
    }
}

/// The kinds an event may be about.
const INVOLVED_KINDS: [&str; 3] = [Task::KIND, TaskGroup::KIND, Node::KIND];

/// Field errors of an event, each naming the field and the value.
pub fn validate_event(event: &Event) -> Vec<FieldError> {
    let mut errors = type_errors(&event.api_version, &event.kind, Event::KIND);
    let meta = &event.metadata;
    if let Err(e) = check_dns_subdomain(&meta.name) {
        errors.push(FieldError::new("metadata.name", e));
    }
    check_labels(&mut errors, "metadata.labels", &meta.labels, true);
    check_labels(
        &mut errors,
        "metadata.annotations",
        &meta.annotations,
        false,
    );
    check_metadata_size(&mut errors, &meta.labels, &meta.annotations);
    let involved = &event.involved_object;
    if !INVOLVED_KINDS.contains(&involved.kind.as_str()) {
        errors.push(FieldError::new(
            "involvedObject.kind",
            format!(
                "{:?} is not a kind events are kept for; expected one of {}",
                involved.kind,
                INVOLVED_KINDS.join(", ")
            ),
        ));
    }
    if involved.name.is_empty() {
        errors.push(FieldError::new(
            "involvedObject.name",
            "must name the object the event is about",
        ));
    }
    check_word(&mut errors, "reason", &event.reason);
    check_word(&mut errors, "source.component", &event.source.component);
    let chars = event.message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        errors.push(FieldError::new(
            "message",
            format!("is {chars} characters long; at most {MAX_MESSAGE_CHARS} are allowed"),
        ));
    }
    if event.count == 0 {
        errors.push(FieldError::new(
            "count",
            "0 is not a count of occurrences; expected 1 or more",
        ));
    }
    if let (Some(first), Some(last)) = (event.first_timestamp, event.last_timestamp)
        && last < first
    {
        errors.push(FieldError::new(
            "lastTimestamp",
            format!(
                "{} is before firstTimestamp {}; an event cannot last happen before it first did",
                last.to_rfc3339(),
                first.to_rfc3339()
            ),
        ));
    }
    errors
}

/// A reason or component: one word of at most [`MAX_WORD_CHARS`] characters.
fn check_word(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if value.chars().count() > MAX_WORD_CHARS {
        errors.push(FieldError::new(
            field,
            format!("{value:?} is longer than {MAX_WORD_CHARS} characters"),
        ));
    } else if value.chars().any(char::is_whitespace) {
        errors.push(FieldError::new(
            field,
            format!("{value:?} holds whitespace; expected one word such as Scheduled"),
        ));
    }
}

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

impl Tabular for Event {
    // kubectl's columns for events, plus the count.
    const COLUMNS: &'static [Column] = &[
        col(
            "Last Seen",
            "string",
            0,
            "Time since it last happened (lastTimestamp).",
        ),
        col("Type", "string", 0, "Normal or Warning."),
        col("Reason", "string", 0, "Why (reason)."),
        col(
            "Object",
            "string",
            0,
            "The object it is about (involvedObject), as kind/name.",
        ),
        col("Message", "string", 0, "What happened (message)."),
        col("Count", "integer", 0, "How many times it happened (count)."),
        col(
            "First Seen",
            "string",
            1,
            "Time since it first happened (firstTimestamp).",
        ),
        col("Source", "string", 1, "Who reported it (source)."),
        col("Name", "string", 1, "The event's own name."),
    ];

    fn cells(&self, now: Timestamp) -> Vec<Cell> {
        vec![
            age(self.last_seen(), now).into(),
            self.type_.to_string().into(),
            self.reason.clone().into(),
            self.involved_object.kind_name().into(),
            truncate(&self.message, 120).into(),
            self.count.into(),
            age(self.first_timestamp.or(self.last_seen()), now).into(),
            self.source.to_string().into(),
            self.metadata.name.clone().into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn event() -> Event {
        let task = Task::test("train");
        Event::new(
            "train.0123abcd",
            InvolvedObject::of(&task),
            EventType::Normal,
            "Scheduled",
            "bound to n1",
            EventSource {
                component: "scheduler".into(),
                host: None,
            },
            at(0),
        )
    }

    fn fields(e: &Event) -> Vec<String> {
        validate_event(e).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn validation_names_each_bad_field() {
        assert_eq!(fields(&event()), Vec::<String>::new());
        type Break = fn(&mut Event);
        let cases: Vec<(&str, Break, &str)> = vec![
            (
                "kind",
                |e| e.involved_object.kind = "Pod".into(),
                "involvedObject.kind",
            ),
            (
                "name",
                |e| e.involved_object.name.clear(),
                "involvedObject.name",
            ),
            ("reason", |e| e.reason.clear(), "reason"),
            (
                "spaced reason",
                |e| e.reason = "Was Scheduled".into(),
                "reason",
            ),
            (
                "component",
                |e| e.source.component.clear(),
                "source.component",
            ),
            ("message", |e| e.message = "x".repeat(1025), "message"),
            ("count", |e| e.count = 0, "count"),
            (
                "times",
                |e| e.last_timestamp = Some(at(-1)),
                "lastTimestamp",
            ),
            (
                "own name",
                |e| e.metadata.name = "Bad_Name".into(),
                "metadata.name",
            ),
        ];
        for (what, break_it, field) in cases {
            let mut e = event();
            break_it(&mut e);
            assert_eq!(fields(&e), [field], "{what}");
        }
        let mut pod = event();
        pod.involved_object.kind = "Pod".into();
        let message = &validate_event(&pod)[0].message;
        assert!(message.contains("\"Pod\"") && message.contains("Task, TaskGroup, Node"));
    }

    #[test]
    fn reads_kubernetes_shaped_yaml_with_defaults() {
        let text = "apiVersion: kohakuriver/v1\nkind: Event\nmetadata: {name: a.1}\ninvolvedObject: {kind: Task, name: a}\nreason: Started\ntype: Warning\nsource: {component: agent, host: n1}\n";
        let e: Event = serde_yaml::from_str(text).unwrap();
        assert_eq!((e.count, e.type_), (1, EventType::Warning));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "Warning");
        assert_eq!(json["involvedObject"]["name"], "a");
    }

    #[test]
    fn fields_and_cells() {
        let mut e = event();
        e.metadata.owner = Some("alice".into());
        e.count = 3;
        assert_eq!(e.field("involvedObject.name").as_deref(), Some("train"));
        assert_eq!(e.field("involvedObject.kind").as_deref(), Some("Task"));
        assert_eq!(e.field("metadata.owner").as_deref(), Some("alice"));
        assert_eq!(e.field("type").as_deref(), Some("Normal"));
        assert_eq!(e.field("source.host").as_deref(), Some(""));
        assert_eq!(e.cells(at(90)).len(), Event::COLUMNS.len());
        let row = crate::columns::text_row(&e, false, at(90));
        assert_eq!(
            row,
            [
                "90s",
                "Normal",
                "Scheduled",
                "task/train",
                "bound to n1",
                "3"
            ]
        );
    }
}
