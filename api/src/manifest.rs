//! Reading manifests: one or more YAML documents (or a JSON object), each a `Task`, a
//! `TaskGroup` or a `Node`, with errors that name the document, the field path and the problem.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::dependency::Dependency;
use crate::group::TaskGroup;

use crate::node::Node;
use crate::task::Task;

/// One object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// A task.
    Task(Box<Task>),
    /// A node.
    Node(Box<Node>),
    /// A task group.
    TaskGroup(Box<TaskGroup>),
}

impl Manifest {
    /// `Task` or `Node`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Task(_) => "Task",
            Manifest::Node(_) => "Node",
            Manifest::TaskGroup(_) => "TaskGroup",
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        match self {
            Manifest::Task(t) => &t.metadata.name,
            Manifest::Node(n) => &n.metadata.name,
            Manifest::TaskGroup(g) => &g.metadata.name,
        }
    }

    /// The objects this one depends on (`spec.dependsOn`, a group's through its template);
    /// none for nodes.
    pub fn depends_on(&self) -> &[Dependency] {
        match self {
            Manifest::Task(t) => &t.spec.depends_on,
            Manifest::TaskGroup(g) => &g.spec.template.spec.depends_on,
            Manifest::Node(_) => &[],
        }
    }
}

/// The order to create `objects` in: as given, except that an object comes after the
/// objects of the same set it depends on, since the server refuses a dependency on an
/// object that does not exist yet. Stable: a set already in order keeps it; a cycle keeps
/// the given order (the server then refuses it, naming the cycle). Answers indices into
/// `objects`. Pure.
pub fn creation_order(objects: &[&Manifest]) -> Vec<usize> {
    let key = |kind: &str, name: &str| format!("{kind}/{name}");
    let index: HashMap<String, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, m)| (key(m.kind(), m.name()), i))
        .collect();
    let upstreams = |i: usize| -> Vec<usize> {
        objects[i]
            .depends_on()
            .iter()
            .filter_map(|d| index.get(&key(d.kind.as_str(), &d.name)).copied())
            .collect()
    };
    // 0: not placed, 1: being placed (its upstreams first), 2: placed.
    let mut state = vec![0u8; objects.len()];
    let mut order = Vec::with_capacity(objects.len());
    for root in 0..objects.len() {
        // Depth-first over upstreams, iteratively: (object, its upstreams left to place).
        let mut stack: Vec<(usize, std::vec::IntoIter<usize>)> = Vec::new();
        if state[root] == 0 {
            state[root] = 1;
            stack.push((root, upstreams(root).into_iter()));
        }
        while let Some((i, next)) = stack.last_mut() {
            let i = *i;
            match next.next() {
                Some(up) if state[up] == 0 => {
                    state[up] = 1;
                    stack.push((up, upstreams(up).into_iter()));
                }
                Some(_) => {}
                None => {
                    state[i] = 2;
                    order.push(i);
                    stack.pop();
                }
            }
        }
    }
    order
}

/// A manifest that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct ManifestError {
    /// Which document (1-based) in the text.
    pub document: usize,
    /// What is wrong, with the field path.
    pub message: String,
}

/// Reads every document of a YAML (or JSON) text. Empty documents are skipped.
pub fn parse_manifests(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError {
            document,
            message: format!("malformed YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(
            manifest_from_value(value).map_err(|message| ManifestError { document, message })?,
        );
    }
    Ok(out)
}

fn manifest_from_value(value: serde_yaml::Value) -> Result<Manifest, String> {
    let mapping = value
        .as_mapping()
        .ok_or_else(|| "expected an object with apiVersion, kind, metadata and spec".to_string())?;
    let kind = mapping
        .get("kind")
        .ok_or_else(|| "missing field `kind` (Task, TaskGroup or Node)".to_string())?;
    let api_version = mapping.get("apiVersion").ok_or_else(|| {
        format!(
            "missing field `apiVersion` (expected {})",
            crate::API_VERSION
        )
    })?;
    if api_version.as_str() != Some(crate::API_VERSION) {
        return Err(format!(
            "apiVersion: {} is not supported; expected {}",
            yaml_scalar(api_version),
            crate::API_VERSION
        ));
    }
    match kind.as_str() {
        Some("Task") => Ok(Manifest::Task(Box::new(from_yaml_value(value)?))),
        Some("Node") => Ok(Manifest::Node(Box::new(from_yaml_value(value)?))),
        Some("TaskGroup") => Ok(Manifest::TaskGroup(Box::new(from_yaml_value(value)?))),
        _ => Err(format!(
            "kind: {} is not a known kind; expected Task, TaskGroup or Node",
            yaml_scalar(kind)
        )),
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Deserializes a YAML value into `T`, naming the field path on error
/// (`spec.resources: unknown field `cpus`, expected one of …`).
pub fn from_yaml_value<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| path_message(e.path().to_string(), e.inner()))
}

/// Parses a JSON body into `T`, naming the field path on error.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else {
            path_message(e.path().to_string(), inner)
        }
    })
}

/// Converts a parsed JSON value into `T`, naming the field path on error (without the
/// line/column of a text the user never wrote).
pub fn from_json_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| path_message(e.path().to_string(), e.inner()))
}

/// Parses a YAML body (one document) into `T`, naming the field path on error.
pub fn from_yaml<T: DeserializeOwned>(body: &str) -> Result<T, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(body).map_err(|e| format!("malformed YAML: {e}"))?;
    from_yaml_value(value)
}

fn path_message(path: String, inner: &dyn std::fmt::Display) -> String {
    if path.is_empty() || path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, want: &str) {
        let e = parse_manifests(text).unwrap_err().to_string();
        assert!(e.contains(want), "{e} lacks {want}");
    }

    #[test]
    fn reads_several_documents() {
        let text = "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec: {command: [echo]}\n---\n---\napiVersion: kohakuriver/v1\nkind: Node\nmetadata: {name: n1}\n";
        let m = parse_manifests(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind(), "Task");
        assert_eq!(m[1].name(), "n1");
    }

    #[test]
    fn errors_name_document_and_field() {
        err("a: [", "document 1: malformed YAML");
        err("- 1\n- 2\n", "expected an object");
        err(
            "apiVersion: kohakuriver/v1\nmetadata: {}\n",
            "missing field `kind`",
        );
        err("kind: Task\n", "missing field `apiVersion`");
        err(
            "apiVersion: v9\nkind: Task\n",
            "apiVersion: v9 is not supported",
        );
        err(
            "apiVersion: kohakuriver/v1\nkind: Pod\n",
            "kind: Pod is not a known kind",
        );
        err(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  command: [x]\n  resources: {cpus: 2}\n",
            "spec.resources.cpus: unknown field `cpus`, expected one of `cpu`",
        );
        err(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  command: [x]\n  resources: {cpu: -1}\n",
            "spec.resources.cpu: invalid value: integer `-1`",
        );
        err(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  command: [x]\n  resources: {memory: 8X}\n",
            "spec.resources.memory",
        );
        err(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec: {command: [x]}\n---\nkind: Task\napiVersion: kohakuriver/v1\nmetadata: {name: b}\n",
            "document 2: missing field `spec`",
        );
    }

    #[test]
    fn objects_are_created_after_their_upstreams() {
        use crate::dependency::DependencyCondition::Succeeded;
        let task = |name: &str, deps: &[&str]| {
            let t = deps
                .iter()
                .fold(Task::test(name), |t, d| t.after(d, Succeeded));
            Manifest::Task(Box::new(t))
        };
        let node = Manifest::Node(Box::new(crate::Node::test("n1")));
        let names = |objects: &[&Manifest]| -> String {
            let order = creation_order(objects);
            let names: Vec<&str> = order.iter().map(|&i| objects[i].name()).collect();
            names.join(" ")
        };
        let (a, b, c) = (task("a", &[]), task("b", &["a"]), task("c", &["b"]));
        let (x, y) = (task("x", &["y"]), task("y", &["x"]));
        let cases: [(Vec<&Manifest>, &str); 5] = [
            (vec![&a, &b, &c], "a b c"),
            (vec![&c, &b, &a], "a b c"),
            (vec![&node, &c, &a, &b], "n1 a b c"),
            // An upstream outside the set (already stored) does not move anything.
            (vec![&c, &node], "c n1"),
            (vec![&x, &y], "y x"),
        ];
        for (objects, want) in cases {
            assert_eq!(names(&objects), want);
        }
    }

    #[test]
    fn json_errors_name_the_path() {
        let e =
            from_json::<Task>(br#"{"metadata":{"name":"a"},"spec":{"command":["x"],"bogus":1}}"#)
                .unwrap_err();
        assert!(e.contains("spec.bogus: unknown field `bogus`"), "{e}");
        let e = from_json::<Task>(b"{not json").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
    }
}
