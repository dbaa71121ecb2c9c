//! JSON Schema of the resources, generated from the types (served by the API server and
//! written to `manifests/schema/`).

use crate::event::Event;
use crate::group::TaskGroup;
use crate::node::Node;
use crate::task::Task;

/// The JSON Schema of `Task`, pretty-printed.
pub fn task_schema_json() -> String {
    pretty(serde_json::to_value(schemars::schema_for!(Task)).unwrap_or_default())
}

/// The JSON Schema of `TaskGroup`, pretty-printed.
pub fn task_group_schema_json() -> String {
    pretty(serde_json::to_value(schemars::schema_for!(TaskGroup)).unwrap_or_default())
}

/// The JSON Schema of `Event`, pretty-printed.
pub fn event_schema_json() -> String {
    pretty(serde_json::to_value(schemars::schema_for!(Event)).unwrap_or_default())
}

/// The JSON Schema of `Node`, pretty-printed.
pub fn node_schema_json() -> String {
    pretty(serde_json::to_value(schemars::schema_for!(Node)).unwrap_or_default())
}

fn pretty(value: serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// The schema files and their contents, as kept under `manifests/schema/`.
pub fn schema_files() -> Vec<(&'static str, String)> {
    vec![
        ("task.schema.json", task_schema_json()),
        ("node.schema.json", node_schema_json()),
        ("taskgroup.schema.json", task_group_schema_json()),
        ("event.schema.json", event_schema_json()),
    ]
}
