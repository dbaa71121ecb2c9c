//! Unknown fields, found against a kind's JSON Schema (the one `schema.rs` generates from
//! the types), so a request can be refused naming every unknown field at once
//! (`fieldValidation=Strict`), or have them dropped and reported (`Warn`) or dropped
//! silently (`Ignore`), as Kubernetes does.

use serde_json::{Map, Value};

/// How a write treats fields the kind does not have (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request, naming each unknown field (the default).
    #[default]
    Strict,
    /// Drop them and say so in a `Warning` header per field.
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Reads a `fieldValidation` parameter; absent or empty is `Strict`.
    pub fn parse(text: Option<&str>) -> Result<FieldValidation, String> {
        match text {
            None | Some("" | "Strict") => Ok(FieldValidation::Strict),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(format!(
                "fieldValidation={other:?} is not supported; use Strict, Warn or Ignore"
            )),
        }
    }
}

/// One unknown field: its path (`spec.foo`, `spec.mounts[0].x`) and the fields known there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Where, e.g. `spec.resources.cpus`.
    pub path: String,
    /// The fields the schema has at that place, sorted.
    pub known: Vec<String>,
}

impl UnknownField {
    /// `unknown field "spec.foo"`, the words Kubernetes uses in errors and warnings.
    pub fn warning(&self) -> String {
        format!("unknown field {:?}", self.path)
    }
}

/// Removes from `value` every field `schema` does not know and answers them in document
/// order. `schema` is a schemars JSON Schema whose `$ref`s point into its own `$defs`.
pub fn drop_unknown_fields(value: &mut Value, schema: &Value) -> Vec<UnknownField> {
    let mut out = Vec::new();
    walk(value, schema, schema, "", &mut out);
    out
}

/// Every field of `value` that `schema` does not know, leaving `value` as it is.
pub fn unknown_fields(value: &Value, schema: &Value) -> Vec<UnknownField> {
    drop_unknown_fields(&mut value.clone(), schema)
}

/// The subschemas `node` stands for: itself, what its `$ref` points to, and the members of
/// its `anyOf`/`oneOf`/`allOf` (an `Option<Struct>` is `anyOf: [{$ref}, {type: null}]`).
fn alternatives<'a>(node: &'a Value, root: &'a Value, out: &mut Vec<&'a Map<String, Value>>) {
    let Some(map) = node.as_object() else {
        return;
    };
    if out.len() > 64 {
        return;
    }
    out.push(map);
    if let Some(target) = map
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        alternatives(target, root, out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for member in map.get(key).and_then(Value::as_array).into_iter().flatten() {
            alternatives(member, root, out);
        }
    }
}

fn walk(value: &mut Value, node: &Value, root: &Value, path: &str, out: &mut Vec<UnknownField>) {
    let mut schemas = Vec::new();
    alternatives(node, root, &mut schemas);
    match value {
        Value::Object(map) => {
            let mut properties: Map<String, Value> = Map::new();
            let mut closed = false;
            let mut values_schema = None;
            for s in &schemas {
                if let Some(p) = s.get("properties").and_then(Value::as_object) {
                    properties.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => closed = true,
                    Some(extra @ Value::Object(_)) => values_schema = Some(extra),
                    _ => {}
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let here = join(path, &key);
                if let Some(child) = properties.get(&key) {
                    if let Some(v) = map.get_mut(&key) {
                        walk(v, child, root, &here, out);
                    }
                } else if let Some(extra) = values_schema {
                    if let Some(v) = map.get_mut(&key) {
                        walk(v, extra, root, &here, out);
                    }
                } else if closed && values_schema.is_none() {
                    map.remove(&key);
                    let mut known: Vec<String> = properties.keys().cloned().collect();
                    known.sort();
                    out.push(UnknownField { path: here, known });
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schemas.iter().find_map(|s| s.get("items"));
            if let Some(item_schema) = item_schema {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, root, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task_schema() -> Value {
        serde_json::to_value(schemars::schema_for!(crate::Task)).unwrap()
    }

    fn unknown(value: Value) -> Vec<String> {
        unknown_fields(&value, &task_schema())
            .into_iter()
            .map(|u| u.path)
            .collect()
    }

    #[test]
    fn finds_every_unknown_field_with_its_path() {
        assert_eq!(
            unknown(json!({
                "apiVersion": "kohakuriver/v1", "kind": "Task", "bogus": 1,
                "metadata": {"name": "a", "nmae": "x", "labels": {"any": "key"}},
                "spec": {"command": ["x"], "cmd": 1, "resources": {"cpus": 2, "cpu": 1},
                         "placement": {"host": "n"}, "env": {"FREE": "form"}},
                "status": {"phaze": "x", "conditions": [{"type": "A", "status": "True", "x": 1}]}
            })),
            [
                "bogus",
                "metadata.nmae",
                "spec.cmd",
                "spec.placement.host",
                "spec.resources.cpus",
                "status.conditions[0].x",
                "status.phaze"
            ]
        );
        assert!(unknown(json!({"metadata": {"name": "a"}, "spec": {"command": ["x"]}})).is_empty());
    }

    #[test]
    fn dropping_leaves_a_body_that_decodes() {
        let mut body = json!({"apiVersion": "kohakuriver/v1", "kind": "Task",
            "metadata": {"name": "a"}, "spec": {"command": ["x"], "foo": 1, "resources": {"cpus": 2}}});
        let dropped = drop_unknown_fields(&mut body, &task_schema());
        assert_eq!(dropped[0].warning(), "unknown field \"spec.foo\"");
        assert!(dropped[1].known.contains(&"cpu".to_string()), "{dropped:?}");
        assert!(serde_json::from_value::<crate::Task>(body).is_ok());
    }

    #[test]
    fn reads_the_parameter() {
        assert_eq!(FieldValidation::parse(None), Ok(FieldValidation::Strict));
        assert_eq!(
            FieldValidation::parse(Some("Warn")),
            Ok(FieldValidation::Warn)
        );
        assert_eq!(
            FieldValidation::parse(Some("Ignore")),
            Ok(FieldValidation::Ignore)
        );
        assert!(
            FieldValidation::parse(Some("strict"))
                .unwrap_err()
                .contains("Strict, Warn or Ignore")
        );
    }
}
