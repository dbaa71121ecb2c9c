//! Object metadata and conditions, shared by every kind.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A point in time, serialised as RFC 3339 in UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Metadata every object carries. Users write `name`, `labels` and `annotations`; the server
/// owns the rest.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique name within the kind: DNS-1123 (lowercase letters, digits and `-`).
    #[serde(default)]
    pub name: String,
    /// Set by the server at creation; a deleted and recreated object gets a new uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Identifying key/value pairs, used by label selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value pairs, not used for selection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The global revision of the last write to this object. Sent back on writes, a stale
    /// value is refused with 409 Conflict. A decimal string on the wire, as Kubernetes
    /// clients expect (a number is accepted too).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "resource_version::option"
    )]
    #[schemars(with = "Option<String>")]
    pub resource_version: Option<u64>,
    /// Increases by one each time the spec changes (never on status or metadata changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Set by the server at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    /// Set by the server when deletion was asked while finalizers remained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Timestamp>,
    /// Who created the object (a task's owner), stamped by the server from the request's
    /// credential; never taken from a request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Cleanup that must happen before the object goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// The objects this one belongs to (a task group's members name their group): when
    /// the owner is gone, the controllers delete this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Which writer (field manager) set which fields of `spec`, `metadata.labels` and
    /// `metadata.annotations`, as Kubernetes keeps it for server-side apply. Kept by the
    /// server; a value sent in a body is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// A reference to the object that owns this one, in Kubernetes' `ownerReferences` shape.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// The owner's `apiVersion`, `kohakuriver/v1`.
    pub api_version: String,
    /// The owner's kind, e.g. `TaskGroup`.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid: an owner deleted and recreated under the same name owns nothing of
    /// the old one's.
    pub uid: String,
    /// True when the owner is the controller that made this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// True when the owner waits for this object on a foreground delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// How a field manager last wrote its fields.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagedOperation {
    /// Server-side apply (`PATCH` with `application/apply-patch+yaml`).
    Apply,
    /// Any other write: create, replace, merge patch, our own apply endpoint.
    Update,
}

/// The fields one manager owns, in the Kubernetes `managedFields` shape.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedFieldsEntry {
    /// The writer's name (`fieldManager`, else derived from its User-Agent).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: ManagedOperation,
    /// The API version the fields were written through.
    pub api_version: String,
    /// When this manager last changed what it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// Always `FieldsV1`.
    pub fields_type: String,
    /// The owned fields as a `FieldsV1` set: `{"f:spec": {"f:priority": {}}}`.
    #[serde(rename = "fieldsV1", default)]
    pub fields_v1: serde_json::Value,
    /// The subresource written through; none for the main resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The reference to an owner of kind `kind`, if any.
    pub fn owned_by(&self, kind: &str) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|r| r.kind == kind)
    }

    /// True once deletion was asked.
    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// `resourceVersion` on the wire: a decimal string (`"42"`), as Kubernetes writes it and
/// its clients expect, while Rust code and the store keep a `u64`. Reading takes the string
/// or a plain number (older clients, objects stored before the change); anything else is
/// an error naming the value and what was expected.
pub mod resource_version {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// The error for a value that is not a resource version.
    fn expected(shown: &str) -> String {
        format!(
            "{shown} is not a resourceVersion: expected a decimal number as a string, e.g. \"42\""
        )
    }

    /// Parses a resource version from its wire text.
    pub fn parse(text: &str) -> Result<u64, String> {
        text.parse().map_err(|_| expected(&format!("{text:?}")))
    }

    /// Serialises as a decimal string.
    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    /// Reads a decimal string or a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Version;
        impl Visitor<'_> for Version {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a resourceVersion: a decimal number as a string, e.g. \"42\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(expected(&v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
                Err(E::custom(expected(&v.to_string())))
            }
        }
        deserializer.deserialize_any(Version)
    }

    /// The same for `Option<u64>`; `null` is `None`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serialises `Some` as a decimal string (`None` is skipped by the field).
        pub fn serialize<S: Serializer>(
            value: &Option<u64>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => super::serialize(v, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a decimal string, a non-negative integer or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] u64);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
        }
    }
}

/// The truth value of a condition.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (e.g. the node stopped reporting).
    #[default]
    Unknown,
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        })
    }
}

/// One observation about an object, in the Kubernetes manner, so tools such as
/// `kohakuriver wait --for=condition=Succeeded` and GitOps health checks can read it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `Scheduled`, `Running`, `Succeeded`, `Failed` for tasks; `Ready` for nodes.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase word explaining the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// The object's generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets a condition, keeping `lastTransitionTime` unless the status really changed.
/// Returns true when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: Option<&str>,
    message: Option<&str>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let new = |last: Option<Timestamp>| Condition {
        type_: type_.to_string(),
        status,
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        last_transition_time: last,
        observed_generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let last = if existing.status == status {
                existing.last_transition_time.or(Some(now))
            } else {
                Some(now)
            };
            let updated = new(last);
            if *existing == updated {
                false
            } else {
                *existing = updated;
                true
            }
        }
        None => {
            conditions.push(new(Some(now)));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_holds() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            Some("Up"),
            None,
            None,
            at(1)
        ));
        assert!(!set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            Some("Up"),
            None,
            None,
            at(2)
        ));
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            Some("Other"),
            None,
            None,
            at(3)
        ));
        assert_eq!(c[0].last_transition_time, Some(at(1)));
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::False,
            None,
            None,
            None,
            at(4)
        ));
        assert_eq!(c[0].last_transition_time, Some(at(4)));
        assert_eq!(c.len(), 1);
    }
}
