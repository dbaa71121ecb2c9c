//! The `meta.k8s.io/v1` `Table` that kubectl asks for, built from a kind's
//! [`columns`](crate::columns), and the content negotiation that asks for it.
//!
//! `kubectl get` sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,
//! application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`; the server then
//! answers lists, single objects and each watch event's object as a `Table`, whose rows
//! carry the cells and (by `includeObject`) the object's metadata, the whole object, or
//! nothing. Shapes follow kube-apiserver's `endpoints/handlers/response.go`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::columns::{Cell, Tabular};
use crate::media::parse_accept;
use crate::meta::{ObjectMeta, Timestamp};

/// The API group of `Table` and `PartialObjectMetadata`.
pub const META_GROUP: &str = "meta.k8s.io";

/// How a client asked an answer to be shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    /// The objects themselves (JSON).
    Objects,
    /// A `Table` of this `meta.k8s.io` version (`v1` or `v1beta1`).
    Table(&'static str),
}

/// Reads an `Accept` header: the first media range the server can serve decides, as in
/// kube-apiserver. A `Table` of `meta.k8s.io` `v1` or `v1beta1` is served; plain JSON,
/// YAML or `*/*` means the objects; ranges asking for anything else (`as=
/// PartialObjectMetadata`, protobuf) are skipped. With nothing servable the objects are
/// sent, as the server always did.
pub fn negotiate(accept: &str) -> Rendering {
    for range in parse_accept(accept) {
        let json_like = range.accepts_json();
        match range.param("as") {
            None if json_like || range.essence.contains("yaml") => return Rendering::Objects,
            Some("Table") if json_like && range.param("g") == Some(META_GROUP) => {
                match range.param("v") {
                    Some("v1") => return Rendering::Table("v1"),
                    Some("v1beta1") => return Rendering::Table("v1beta1"),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Rendering::Objects
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default): enough for
    /// `--show-labels` and `-o name`.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; absent or empty is `Metadata`.
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, String> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject={other:?} is not supported; use None, Metadata or Object"
            )),
        }
    }
}

/// A column as a `Table` describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ColumnDefinition {
    /// The column's name.
    pub name: String,
    /// `string` or `integer`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `name` for the name column, else empty.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0: default; 1: only with `-o wide`.
    pub priority: i32,
}

/// The list metadata of a `Table`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TableMeta {
    /// The revision the rows were read at (a list's, or the one object's), as a string as
    /// Kubernetes clients expect; `kubectl get -w` watches from it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// The list's `continue` token when it was cut short by `limit`.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// How many rows the later pages hold, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<u64>,
}

/// One row: its cells, one per column definition, and the object it shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TableRow {
    /// The cells.
    pub cells: Vec<Cell>,
    /// The object, its metadata, or nothing (`includeObject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// A `meta.k8s.io/v1` `Table`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// `meta.k8s.io/v1` (or `v1beta1`, as asked).
    pub api_version: String,
    /// Always `Table`.
    pub kind: String,
    /// The revision.
    pub metadata: TableMeta,
    /// The columns; left out on every watch event but the first, as kube-apiserver does
    /// (printers keep the last ones they saw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_definitions: Vec<ColumnDefinition>,
    /// One row per object.
    pub rows: Vec<TableRow>,
}

/// How to build a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The `meta.k8s.io` version asked (`v1` or `v1beta1`).
    pub version: &'static str,
    /// What each row carries.
    pub include: IncludeObject,
    /// False to leave out the column definitions (watch events after the first).
    pub headers: bool,
}

/// The column definitions of kind `R`.
pub fn column_definitions<R: Tabular>() -> Vec<ColumnDefinition> {
    R::COLUMNS
        .iter()
        .map(|c| ColumnDefinition {
            name: c.name.to_string(),
            type_: c.type_.to_string(),
            format: c.format.to_string(),
            description: c.description.to_string(),
            priority: i32::from(c.priority),
        })
        .collect()
}

/// A `PartialObjectMetadata` of `meta` in `meta.k8s.io/{version}`.
pub fn partial_object_metadata(meta: &ObjectMeta, version: &str) -> Value {
    serde_json::json!({
        "apiVersion": format!("{META_GROUP}/{version}"),
        "kind": "PartialObjectMetadata",
        "metadata": meta,
    })
}

/// One object's row.
pub fn row<R: Tabular>(object: &R, options: TableOptions, now: Timestamp) -> TableRow {
    let object_value = match options.include {
        IncludeObject::None => None,
        IncludeObject::Metadata => {
            Some(partial_object_metadata(object.metadata(), options.version))
        }
        IncludeObject::Object => serde_json::to_value(object).ok(),
    };
    TableRow {
        cells: object.cells(now),
        object: object_value,
    }
}

/// A table of `objects` read at `resource_version`.
pub fn table<R: Tabular>(
    objects: &[R],
    resource_version: u64,
    options: TableOptions,
    now: Timestamp,
) -> Table {
    Table {
        api_version: format!("{META_GROUP}/{}", options.version),
        kind: "Table".to_string(),
        metadata: TableMeta {
            resource_version: resource_version.to_string(),
            ..TableMeta::default()
        },
        column_definitions: if options.headers {
            column_definitions::<R>()
        } else {
            Vec::new()
        },
        rows: objects.iter().map(|o| row(o, options, now)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Task;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn negotiates_like_kube_apiserver() {
        let check = |accept: &str, want: Rendering| assert_eq!(negotiate(accept), want, "{accept}");
        check(KUBECTL_GET, Rendering::Table("v1"));
        check(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json",
            Rendering::Table("v1beta1"),
        );
        check("application/json", Rendering::Objects);
        check("", Rendering::Objects);
        check("*/*", Rendering::Objects);
        check(
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
            Rendering::Objects,
        );
        check(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io",
            Rendering::Table("v1"),
        );
        check(
            "application/json;as=Table;v=v2;g=meta.k8s.io",
            Rendering::Objects,
        );
        check(
            "application/json;as=Table;v=v1;g=other.io",
            Rendering::Objects,
        );
    }

    #[test]
    fn include_object_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        let e = IncludeObject::parse(Some("all")).unwrap_err();
        assert!(
            e.contains("\"all\"") && e.contains("None, Metadata or Object"),
            "{e}"
        );
    }

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn table_shape() {
        let mut t = Task::test("a");
        t.metadata.labels.insert("team".into(), "x".into());
        let options = TableOptions {
            version: "v1",
            include: IncludeObject::Metadata,
            headers: true,
        };
        let v = serde_json::to_value(table(&[t.clone()], 7, options, now())).unwrap();
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["columnDefinitions"][0]["name"], "Name");
        assert_eq!(v["columnDefinitions"][0]["format"], "name");
        assert_eq!(v["columnDefinitions"][3]["type"], "integer");
        assert_eq!(v["columnDefinitions"][6]["priority"], 1);
        assert_eq!(v["rows"][0]["cells"][0], "a");
        assert_eq!(v["rows"][0]["cells"][3], 1);
        let object = &v["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["labels"]["team"], "x");

        let bare = TableOptions {
            version: "v1beta1",
            include: IncludeObject::None,
            headers: false,
        };
        let v = serde_json::to_value(table(&[t.clone()], 7, bare, now())).unwrap();
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1beta1");
        assert!(v.get("columnDefinitions").is_none());
        assert!(v["rows"][0].get("object").is_none());

        let whole = TableOptions {
            include: IncludeObject::Object,
            ..options
        };
        let v = serde_json::to_value(table(&[t], 7, whole, now())).unwrap();
        assert_eq!(v["rows"][0]["object"]["kind"], "Task");
        assert_eq!(v["rows"][0]["object"]["spec"]["command"][0], "true");
    }
}
