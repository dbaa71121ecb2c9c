//! The OpenAPI v3 document of the `kohakuriver/v1` group, as kubectl reads it for `explain`
//! and to learn that the server validates fields itself (`fieldValidation` on PATCH).
//!
//! The schemas are the same schemars schemas as `manifests/schema/` ([`crate::schema`]),
//! turned from JSON Schema 2020-12 into OpenAPI 3.0: `$ref`s point into
//! `#/components/schemas`, a `$ref` with siblings is wrapped in `allOf` (as Kubernetes
//! does), `["T", "null"]` types and `anyOf [X, null]` become `nullable`, and enums of
//! documented constants become `enum` with the variants described in the text. `Task`,
//! `TaskList`, `Node`, `NodeList`, `TaskGroup` and `TaskGroupList` carry `x-kubernetes-group-version-kind`, and so does
//! every operation, which is how kubectl finds them.

use serde_json::{Map, Value, json};

use crate::event::Event;
use crate::group::TaskGroup;
use crate::node::Node;
use crate::resource::Resource;
use crate::task::Task;
use crate::watch::ListMeta;

/// The API group.
pub const GROUP: &str = "kohakuriver";
/// The API version.
pub const VERSION: &str = "v1";
/// The key of this group-version under `/openapi/v3` (`paths`).
pub const GROUP_VERSION_PATH: &str = "apis/kohakuriver/v1";

/// The whole OpenAPI 3.0 document for `/openapi/v3/apis/kohakuriver/v1`.
pub fn document() -> Value {
    let mut schemas = Map::new();
    add_kind::<Task>(&mut schemas, schemars::schema_for!(Task));
    add_kind::<Node>(&mut schemas, schemars::schema_for!(Node));
    add_kind::<TaskGroup>(&mut schemas, schemars::schema_for!(TaskGroup));
    add_kind::<Event>(&mut schemas, schemars::schema_for!(Event));
    add_schema(&mut schemas, "ListMeta", schemars::schema_for!(ListMeta));
    let mut paths = Map::new();
    kind_paths::<Task>(&mut paths);
    kind_paths::<Node>(&mut paths);
    kind_paths::<TaskGroup>(&mut paths);
    kind_paths::<Event>(&mut paths);
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": "KohakuRiver",
            "version": VERSION,
            "description": "Tasks, task groups, nodes and events of a KohakuRiver cluster.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

fn gvk(kind: &str) -> Value {
    json!({ "group": GROUP, "version": VERSION, "kind": kind })
}

/// Adds a kind's schema (and its definitions) plus its list's schema.
fn add_kind<R: Resource>(schemas: &mut Map<String, Value>, schema: schemars::Schema) {
    add_schema(schemas, R::KIND, schema);
    if let Some(Value::Object(kind)) = schemas.get_mut(R::KIND) {
        kind.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([gvk(R::KIND)]),
        );
    }
    let list = format!("{}List", R::KIND);
    schemas.insert(
        list.clone(),
        json!({
            "description": format!("A list of {}, ordered by name.", R::PLURAL),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": "Always `kohakuriver/v1`."},
                "kind": {"type": "string", "description": format!("Always `{list}`.")},
                "metadata": {
                    "allOf": [{"$ref": "#/components/schemas/ListMeta"}],
                    "description": "The revision the list was read at, from which a watch resumes.",
                },
                "items": {
                    "type": "array",
                    "description": format!("The {}.", R::PLURAL),
                    "items": {"$ref": format!("#/components/schemas/{}", R::KIND)},
                },
            },
            "x-kubernetes-group-version-kind": [gvk(&list)],
        }),
    );
}

/// Adds one JSON Schema under `name`, its `$defs` beside it, all converted to OpenAPI 3.0.
fn add_schema(schemas: &mut Map<String, Value>, name: &str, schema: schemars::Schema) {
    let mut root = schema.to_value();
    let defs = root
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .unwrap_or_default();
    if let Value::Object(defs) = defs {
        for (def_name, def) in defs {
            schemas.insert(def_name, openapi_schema(def));
        }
    }
    if let Some(o) = root.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    schemas.insert(name.to_string(), openapi_schema(root));
}

/// One JSON Schema (2020-12, as schemars writes it) as an OpenAPI 3.0 schema.
pub fn openapi_schema(schema: Value) -> Value {
    let Value::Object(mut o) = schema else {
        return match schema {
            Value::Array(items) => Value::Array(items.into_iter().map(openapi_schema).collect()),
            other => other,
        };
    };
    // Doc comments wrap at source width; printers wrap again, so lines join into
    // paragraphs.
    if let Some(Value::String(text)) = o.get_mut("description") {
        *text = reflow(text);
    }
    // `anyOf: [X, {type: null}]` is an optional X.
    if let Some(Value::Array(alternatives)) = o.get("anyOf")
        && alternatives.len() == 2
        && let Some(i) = alternatives
            .iter()
            .position(|a| a == &json!({"type": "null"}))
    {
        let Some(Value::Array(mut alternatives)) = o.remove("anyOf") else {
            unreachable!("checked above")
        };
        let Value::Object(inner) = alternatives.swap_remove(1 - i) else {
            return Value::Object(o);
        };
        for (k, v) in inner {
            o.entry(k).or_insert(v);
        }
        o.insert("nullable".into(), Value::Bool(true));
    }
    // `type: [T, "null"]` is a nullable T.
    if let Some(Value::Array(types)) = o.get("type") {
        let named: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if named.len() == 1 {
            if named.len() < types.len() {
                o.insert("nullable".into(), Value::Bool(true));
            }
            o.insert("type".into(), named[0].clone());
        }
    }
    // A constant is a one-value enum.
    if let Some(value) = o.remove("const") {
        o.insert("enum".into(), json!([value]));
    }
    // An enum of documented constants: the values as `enum`, their meaning in the text.
    if let Some(Value::Array(variants)) = o.get("oneOf")
        && !variants.is_empty()
        && variants.iter().all(|v| v.get("const").is_some())
    {
        let values: Vec<Value> = variants.iter().map(|v| v["const"].clone()).collect();
        let lines: Vec<String> = variants
            .iter()
            .filter_map(|v| {
                let text = v.get("description")?.as_str()?.replace('\n', " ");
                Some(format!(
                    "- `{}`: {text}",
                    v["const"].as_str().unwrap_or_default()
                ))
            })
            .collect();
        o.remove("oneOf");
        o.insert("type".into(), json!("string"));
        o.insert("enum".into(), Value::Array(values));
        if !lines.is_empty() {
            let head = o
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = format!("{head}\n\n{}", lines.join("\n"));
            o.insert("description".into(), json!(text.trim_start()));
        }
    }
    // A string-or-integer (memory sizes) is what Kubernetes calls int-or-string.
    if let Some(Value::Array(alternatives)) = o.get("anyOf") {
        let types: Vec<&str> = alternatives
            .iter()
            .filter_map(|a| a.get("type").and_then(Value::as_str))
            .collect();
        if types.len() == 2 && types.contains(&"string") && types.contains(&"integer") {
            o.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
        }
    }
    // References point into the components; a reference with siblings goes into `allOf`,
    // since OpenAPI 3.0 ignores the siblings of a `$ref`.
    if let Some(Value::String(reference)) = o.remove("$ref") {
        let reference = match reference.strip_prefix("#/$defs/") {
            Some(name) => format!("#/components/schemas/{name}"),
            None => reference,
        };
        if o.is_empty() {
            o.insert("$ref".into(), Value::String(reference));
        } else {
            o.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
    }
    Value::Object(
        o.into_iter()
            .map(|(k, v)| {
                // Property names and enum values are data, not schemas.
                let v = match k.as_str() {
                    "enum" | "default" | "required" | "examples" => v,
                    "properties" => match v {
                        Value::Object(props) => Value::Object(
                            props
                                .into_iter()
                                .map(|(p, s)| (p, openapi_schema(s)))
                                .collect(),
                        ),
                        other => other,
                    },
                    _ => openapi_schema(v),
                };
                (k, v)
            })
            .collect(),
    )
}

/// Joins the lines of each paragraph of a doc comment; paragraphs stay apart.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A query parameter.
fn query(name: &str, type_: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": type_, "uniqueItems": true},
    })
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "`All`: validate and admit the request, store nothing, answer as if stored.",
    )
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "The name of the actor making the change (server-side apply, managedFields).",
    )
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "What to do with unknown or duplicate fields in the body: `Strict` refuses them (422), `Warn` accepts them with a Warning header, `Ignore` drops them.",
    )
}

fn force() -> Value {
    query(
        "force",
        "boolean",
        "Server-side apply: take the conflicting fields from their other managers.",
    )
}

fn list_parameters() -> Vec<Value> {
    vec![
        query(
            "labelSelector",
            "string",
            "Only objects whose labels match, e.g. `team=vision,tier!=batch`.",
        ),
        query(
            "fieldSelector",
            "string",
            "Only objects whose fields match, e.g. `status.phase=Running`.",
        ),
        query(
            "limit",
            "integer",
            "At most this many objects; `metadata.continue` then asks for the next page (0: all).",
        ),
        query(
            "continue",
            "string",
            "The `metadata.continue` token of the previous page: the next page, read at the same revision.",
        ),
        query(
            "watch",
            "boolean",
            "Stream changes as watch events instead of answering a list.",
        ),
        query(
            "resourceVersion",
            "string",
            "With watch: send the changes after this revision.",
        ),
        query(
            "allowWatchBookmarks",
            "boolean",
            "With watch: send BOOKMARK events.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "With watch: end the stream after this long.",
        ),
    ]
}

fn body_of(kind: &str, patch: bool) -> Value {
    let schema = if patch {
        json!({"type": "object"})
    } else {
        json!({"$ref": format!("#/components/schemas/{kind}")})
    };
    let types: &[&str] = if patch {
        &[
            "application/merge-patch+json",
            "application/apply-patch+yaml",
            "application/json",
        ]
    } else {
        &["application/json", "application/yaml"]
    };
    let content: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({"schema": schema.clone()})))
        .collect();
    json!({"required": true, "content": content})
}

fn answer(schema: &str, codes: &[&str]) -> Value {
    let content = json!({
        "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
        "application/yaml": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
    });
    let responses: Map<String, Value> = codes
        .iter()
        .map(|c| {
            (
                c.to_string(),
                json!({"description": "OK", "content": content.clone()}),
            )
        })
        .collect();
    Value::Object(responses)
}

fn operation(
    id: String,
    description: String,
    action: &str,
    kind: &str,
    parameters: Vec<Value>,
    responses: Value,
    body: Option<Value>,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "description": description,
        "tags": [format!("{GROUP}_{VERSION}")],
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind),
    });
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

/// The collection, object and status paths of one kind, with the operations the server
/// takes on them.
fn kind_paths<R: Resource>(paths: &mut Map<String, Value>) {
    let (kind, plural) = (R::KIND, R::PLURAL);
    let base = format!("/{GROUP_VERSION_PATH}/{plural}");
    let list = format!("{kind}List");
    let writes = || vec![dry_run(), field_manager(), field_validation()];
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "description": format!("The {}'s name.", R::SINGULAR),
        "schema": {"type": "string", "uniqueItems": true},
    });
    paths.insert(
        base.clone(),
        json!({
            "get": operation(
                format!("list{kind}"),
                format!("List or watch {plural}."),
                "list", kind, list_parameters(), answer(&list, &["200"]), None),
            "post": operation(
                format!("create{kind}"),
                format!("Create a {}.", R::SINGULAR),
                "post", kind, writes(), answer(kind, &["200", "201"]), Some(body_of(kind, false))),
        }),
    );
    let mut patch_params = writes();
    patch_params.push(force());
    paths.insert(
        format!("{base}/{{name}}"),
        json!({
            "parameters": [name_param.clone()],
            "get": operation(
                format!("read{kind}"),
                format!("Read a {}.", R::SINGULAR),
                "get", kind, vec![], answer(kind, &["200"]), None),
            "put": operation(
                format!("replace{kind}"),
                format!("Replace a {}'s spec, labels, annotations and finalizers.", R::SINGULAR),
                "put", kind, writes(), answer(kind, &["200"]), Some(body_of(kind, false))),
            "patch": operation(
                format!("patch{kind}"),
                format!("Patch a {} (JSON merge patch, or server-side apply).", R::SINGULAR),
                "patch", kind, patch_params.clone(), answer(kind, &["200", "201"]), Some(body_of(kind, true))),
            "delete": operation(
                format!("delete{kind}"),
                format!("Delete a {}; finalizers may hold it until their work is done.", R::SINGULAR),
                "delete", kind, vec![dry_run()], answer(kind, &["200", "202"]), None),
        }),
    );
    // Kinds without a status (events) have no status path.
    if !R::SUBRESOURCES.contains(&crate::resource::STATUS_SUBRESOURCE) {
        return;
    }
    paths.insert(
        format!("{base}/{{name}}/status"),
        json!({
            "parameters": [name_param],
            "get": operation(
                format!("read{kind}Status"),
                format!("Read a {}'s status.", R::SINGULAR),
                "get", kind, vec![], answer(kind, &["200"]), None),
            "put": operation(
                format!("replace{kind}Status"),
                format!("Replace a {}'s status.", R::SINGULAR),
                "put", kind, writes(), answer(kind, &["200"]), Some(body_of(kind, false))),
            "patch": operation(
                format!("patch{kind}Status"),
                format!("Patch a {}'s status.", R::SINGULAR),
                "patch", kind, patch_params, answer(kind, &["200"]), Some(body_of(kind, true))),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_the_document() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} points outside the components"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
    }

    #[test]
    fn kinds_and_operations_carry_their_group_version_kind() {
        let doc = document();
        for kind in [
            "Task",
            "TaskList",
            "Node",
            "NodeList",
            "TaskGroup",
            "TaskGroupList",
            "Event",
            "EventList",
        ] {
            assert_eq!(
                doc["components"]["schemas"][kind]["x-kubernetes-group-version-kind"],
                json!([{"group": "kohakuriver", "version": "v1", "kind": kind}]),
                "{kind}"
            );
        }
        let patch = &doc["paths"]["/apis/kohakuriver/v1/tasks/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "kohakuriver", "version": "v1", "kind": "Task"})
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in ["fieldValidation", "fieldManager", "dryRun", "force"] {
            assert!(params.contains(&p), "{p} missing from {params:?}");
        }
        assert!(
            doc["paths"]
                .get("/apis/kohakuriver/v1/nodes/{name}/status")
                .is_some()
        );
    }

    #[test]
    fn json_schema_becomes_openapi_3_0() {
        let doc = document();
        let text = doc.to_string();
        for gone in [
            "$defs",
            "\"const\"",
            "$schema",
            "\"type\":[",
            "\"type\":\"null\"",
        ] {
            assert!(!text.contains(gone), "{gone} left in the document");
        }
        let schemas = &doc["components"]["schemas"];
        let resources = &schemas["TaskSpec"]["properties"]["resources"];
        assert_eq!(
            resources["allOf"],
            json!([{"$ref": "#/components/schemas/Resources"}])
        );
        assert!(resources["description"].is_string());
        assert_eq!(reflow("one\ntwo\n\nthree\nfour"), "one two\n\nthree four");
        let image = &schemas["TaskSpec"]["properties"]["image"];
        assert_eq!(image["type"], "string");
        assert_eq!(image["nullable"], true);
        let phase = &schemas["TaskPhase"];
        assert_eq!(phase["type"], "string");
        assert!(
            phase["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("Running"))
        );
        assert!(
            phase["description"]
                .as_str()
                .unwrap()
                .contains("- `Pending`: ")
        );
        let memory = &schemas["Resources"]["properties"]["memory"];
        assert_eq!(memory["nullable"], true);
        assert_eq!(
            memory["allOf"],
            json!([{"$ref": "#/components/schemas/Memory"}])
        );
    }

    #[test]
    fn schemas_shared_by_kinds_agree() {
        let task = schemars::schema_for!(Task).to_value();
        let node = schemars::schema_for!(Node).to_value();
        for name in ["ObjectMeta", "Condition", "ConditionStatus"] {
            assert_eq!(task["$defs"][name], node["$defs"][name], "{name}");
        }
    }
}
