//! The `Resource` trait: what the server, client and controllers need to know of a kind.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::meta::ObjectMeta;

/// A subresource of a kind (`tasks/status`), as discovery tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object's name, e.g. `status`.
    pub name: &'static str,
    /// The Kubernetes verbs it takes (`get`, `patch`, `update`).
    pub verbs: &'static [&'static str],
}

/// The `status` subresource every kind has: read, replaced or merge-patched.
pub const STATUS_SUBRESOURCE: Subresource = Subresource {
    name: "status",
    verbs: &["get", "patch", "update"],
};

/// A kind of object served by the API server (`Task`, `Node`).
pub trait Resource:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// `kind` as written in manifests, e.g. `Task`.
    const KIND: &'static str;
    /// The lowercase plural used in URLs, e.g. `tasks`.
    const PLURAL: &'static str;
    /// The lowercase singular used by the CLI, e.g. `task`.
    const SINGULAR: &'static str;
    /// Short names kubectl accepts for the plural (`kubectl get tk`), told in discovery.
    const SHORT_NAMES: &'static [&'static str];
    /// The categories the kind belongs to (`kubectl get all`, `kubectl get kohakuriver`).
    const CATEGORIES: &'static [&'static str];
    /// The subresources served under `/{plural}/{name}/…`, told in discovery.
    const SUBRESOURCES: &'static [Subresource];

    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, mutably.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;

    /// The object's name.
    fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The object's resource version, 0 when unset.
    fn resource_version(&self) -> u64 {
        self.metadata().resource_version.unwrap_or(0)
    }

    /// The value of a field for field selectors (`metadata.name`, `status.node`,
    /// `status.phase`, …); `None` when the kind has no such field.
    fn field(&self, path: &str) -> Option<String>;

    /// Field paths this kind supports in field selectors.
    const SELECTABLE_FIELDS: &'static [&'static str];
}
