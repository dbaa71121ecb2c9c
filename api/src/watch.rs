//! Lists, watch events and apply results as they travel over HTTP.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Status;

/// Metadata of a list: the global revision the list was read at, from which a watch resumes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// The store's revision when the list was read.
    pub resource_version: u64,
}

/// A list of objects: `{"kind":"TaskList","metadata":{"resourceVersion":N},"items":[…]}`.
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

/// One line of a watch stream (newline-delimited JSON).
///
/// `{"type":"ADDED","object":{…}}`, `{"type":"MODIFIED",…}`, `{"type":"DELETED",…}`,
/// `{"type":"BOOKMARK","resourceVersion":N}` (no change, but the stream has seen every
/// revision up to N), `{"type":"ERROR","status":{…}}` (e.g. 410 Gone: list again).
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
    /// Progress: every revision up to this one has been sent.
    #[serde(rename_all = "camelCase")]
    Bookmark {
        /// The revision reached.
        resource_version: u64,
    },
    /// The watch ended with an error.
    Error {
        /// What went wrong.
        status: Status,
    },
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
