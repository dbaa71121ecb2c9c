//! Lists, watch events and apply results as they travel over HTTP.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Status;

/// Metadata of a list: the global revision the list was read at, from which a watch resumes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// The store's revision when the list was read (a decimal string on the wire).
    #[serde(with = "crate::meta::resource_version")]
    #[schemars(with = "String")]
    pub resource_version: u64,
    /// When the list was cut short by `limit`: the opaque token that asks for the next page
    /// (`continue=TOKEN`), read at the same revision.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// When the list was cut short and no selector was given: how many items the later pages
    /// hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<u64>,
    /// The id of the store the list was read from (see ARCHITECTURE.md "Store identity").
    /// A watch from this list's `resourceVersion` names it (`storeId=`), so it gets 410 Gone
    /// instead of resuming into another store's history. Absent from other servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

impl ListMeta {
    /// The metadata of a whole list read at `resource_version`.
    pub fn at(resource_version: u64) -> ListMeta {
        ListMeta {
            resource_version,
            ..ListMeta::default()
        }
    }
}

/// A list of objects: `{"kind":"TaskList","metadata":{"resourceVersion":"N"},"items":[…]}`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    /// Always `kohakuriver/v1`.
    pub api_version: String,
    /// `TaskList` or `NodeList`.
    pub kind: String,
    /// The revision the list was read at.
    pub metadata: ListMeta,
    /// The objects, ordered by name.
    pub items: Vec<T>,
}

/// The annotation Kubernetes puts on the `BOOKMARK` that ends the initial `ADDED` burst of
/// a fresh watch: every object that existed when the watch began has been sent.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// One line of a watch stream (newline-delimited JSON), in Kubernetes' shape.
///
/// `{"type":"ADDED","object":{…}}`, `{"type":"MODIFIED",…}`, `{"type":"DELETED",…}`,
/// `{"type":"BOOKMARK","object":{"apiVersion":"kohakuriver/v1","kind":"Task","metadata":
/// {"resourceVersion":"N"}}}` (no change, but the stream has seen every revision up to N;
/// only sent to a watch that asked with `allowWatchBookmarks=true`),
/// `{"type":"ERROR","object":{<Status>}}` (e.g. 410 Gone: list again).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchEvent<T> {
    /// The object was created (or, on a fresh watch, already existed).
    Added {
        /// The object as stored.
        object: T,
    },
    /// The object changed.
    Modified {
        /// The object as stored.
        object: T,
    },
    /// The object is gone; this is its last state.
    Deleted {
        /// The object as last stored.
        object: T,
    },
    /// Progress: every revision up to the bookmark's has been sent.
    Bookmark {
        /// An object of the watched kind carrying only the revision reached.
        object: Bookmark,
    },
    /// The watch ended with an error.
    Error {
        /// What went wrong.
        object: Status,
    },
}

/// The object of a `BOOKMARK` event: the watched kind, and only the revision reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bookmark {
    /// `kohakuriver/v1`.
    pub api_version: String,
    /// The watched kind, e.g. `Task`.
    pub kind: String,
    /// The revision reached, and the `k8s.io/initial-events-end` annotation on the bookmark
    /// that ends a fresh watch's initial events.
    pub metadata: BookmarkMeta,
}

/// The metadata of a [`Bookmark`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BookmarkMeta {
    /// Every revision up to this one has been sent (a decimal string on the wire).
    #[serde(with = "crate::meta::resource_version")]
    pub resource_version: u64,
    /// `k8s.io/initial-events-end: "true"` on the first bookmark of a fresh watch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Bookmark {
    /// A bookmark of `kind` at revision `resource_version`; `initial_events_end` marks the
    /// end of a fresh watch's initial `ADDED` events.
    pub fn new(kind: &str, resource_version: u64, initial_events_end: bool) -> Bookmark {
        let mut annotations = BTreeMap::new();
        if initial_events_end {
            annotations.insert(INITIAL_EVENTS_END.to_string(), "true".to_string());
        }
        Bookmark {
            api_version: crate::API_VERSION.to_string(),
            kind: kind.to_string(),
            metadata: BookmarkMeta {
                resource_version,
                annotations,
            },
        }
    }

    /// The revision reached.
    pub fn resource_version(&self) -> u64 {
        self.metadata.resource_version
    }

    /// True on the bookmark that ends a fresh watch's initial events.
    pub fn ends_initial_events(&self) -> bool {
        self.metadata
            .annotations
            .get(INITIAL_EVENTS_END)
            .is_some_and(|v| v == "true")
    }
}

/// What an apply did.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApplyOutcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and was changed.
    Configured,
    /// The object already matched the manifest.
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// The answer to an apply: what happened and the object as stored (or as it would be, on a
/// dry run).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult<T> {
    /// Created, configured or unchanged.
    pub result: ApplyOutcome,
    /// The object after the apply.
    pub object: T,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectMeta, Task};
    use serde_json::json;

    #[test]
    fn resource_version_is_a_string_on_the_wire_and_reads_both() {
        let meta = ObjectMeta {
            resource_version: Some(42),
            ..ObjectMeta::named("a")
        };
        let value = serde_json::to_value(&meta).unwrap();
        assert_eq!(value["resourceVersion"], json!("42"));
        let read = |v: serde_json::Value| serde_json::from_value::<ObjectMeta>(v);
        let rv = |v| read(json!({"name": "a", "resourceVersion": v})).map(|m| m.resource_version);
        assert_eq!(rv(json!("42")).unwrap(), Some(42));
        assert_eq!(rv(json!(42)).unwrap(), Some(42));
        assert_eq!(rv(json!(null)).unwrap(), None);
        assert_eq!(read(json!({"name": "a"})).unwrap().resource_version, None);
        let err = rv(json!("latest")).unwrap_err().to_string();
        assert!(err.contains("\"latest\" is not a resourceVersion"), "{err}");
        assert!(err.contains("decimal number as a string"), "{err}");
        assert!(rv(json!(-1)).unwrap_err().to_string().contains("-1"));
        assert!(rv(json!(1.5)).is_err());
        assert!(rv(json!(true)).is_err());
    }

    #[test]
    fn list_meta_is_a_string_too() {
        let list = List::<Task> {
            api_version: crate::API_VERSION.into(),
            kind: "TaskList".into(),
            metadata: ListMeta {
                resource_version: 7,
                store_id: Some("ab12".into()),
                ..ListMeta::default()
            },
            items: vec![],
        };
        let value = serde_json::to_value(&list).unwrap();
        assert_eq!(value["metadata"]["resourceVersion"], json!("7"));
        assert_eq!(value["metadata"]["storeId"], json!("ab12"));
        let back: List<Task> = serde_json::from_value(value).unwrap();
        assert_eq!(back.metadata.resource_version, 7);
        let old: List<Task> = serde_json::from_value(
            json!({"apiVersion": "kohakuriver/v1", "kind": "TaskList", "metadata": {"resourceVersion": 7}, "items": []}),
        )
        .unwrap();
        assert_eq!(old.metadata.resource_version, 7);
    }

    #[test]
    fn watch_events_have_kubernetes_shapes() {
        let bookmark = WatchEvent::<Task>::Bookmark {
            object: Bookmark::new("Task", 9, true),
        };
        assert_eq!(
            serde_json::to_value(&bookmark).unwrap(),
            json!({"type": "BOOKMARK", "object": {
                "apiVersion": "kohakuriver/v1", "kind": "Task",
                "metadata": {"resourceVersion": "9", "annotations": {"k8s.io/initial-events-end": "true"}}
            }})
        );
        let plain = serde_json::to_value(WatchEvent::<Task>::Bookmark {
            object: Bookmark::new("Task", 3, false),
        })
        .unwrap();
        assert!(plain["object"]["metadata"].get("annotations").is_none());
        let error = WatchEvent::<Task>::Error {
            object: Status::new(crate::StatusReason::Gone, "too old"),
        };
        let value = serde_json::to_value(&error).unwrap();
        assert_eq!(value["type"], "ERROR");
        assert_eq!(value["object"]["kind"], "Status");
        assert_eq!(value["object"]["apiVersion"], "v1");
        assert_eq!(value["object"]["code"], 410);
        let read: WatchEvent<Task> = serde_json::from_value(value).unwrap();
        assert_eq!(read, error);
        let read: WatchEvent<Task> = serde_json::from_value(json!({"type": "BOOKMARK", "object": {
            "apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": {"resourceVersion": "12"}
        }}))
        .unwrap();
        assert!(
            matches!(read, WatchEvent::Bookmark { object } if object.resource_version() == 12 && !object.ends_initial_events())
        );
    }
}
