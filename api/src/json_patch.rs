//! JSON patch (RFC 6902): a list of `add`, `remove`, `replace`, `move`, `copy` and `test`
//! operations on JSON pointers (RFC 6901). kubectl sends one with `patch --type json`, and
//! to hand a client-side-applied object's fields over to server-side apply.

use serde_json::Value;

/// Applies `patch` (a JSON array of operations) to `doc`. On error `doc` may be partly
/// changed; callers patch a copy. The error names the operation (0-based) and what failed.
pub fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for (i, op) in ops.iter().enumerate() {
        apply_one(doc, op).map_err(|e| format!("JSON patch operation {i}: {e}"))?;
    }
    Ok(())
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a Value, String> {
    op.get(name).ok_or_else(|| format!("missing {name:?}"))
}

fn pointer_of<'a>(op: &'a Value, name: &str) -> Result<&'a str, String> {
    field(op, name)?
        .as_str()
        .ok_or_else(|| format!("{name:?} must be a string (a JSON pointer)"))
}

fn apply_one(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = field(op, "op")?.as_str().unwrap_or_default();
    let path = pointer_of(op, "path")?;
    match kind {
        "add" => add(doc, path, field(op, "value")?.clone()),
        "remove" => remove(doc, path).map(drop),
        "replace" => {
            remove(doc, path)?;
            add(doc, path, field(op, "value")?.clone())
        }
        "move" => {
            let from = pointer_of(op, "from")?;
            let value = remove(doc, from)?;
            add(doc, path, value)
        }
        "copy" => {
            let from = pointer_of(op, "from")?;
            let value = doc
                .pointer(from)
                .cloned()
                .ok_or_else(|| format!("\"from\" {from:?} does not exist"))?;
            add(doc, path, value)
        }
        "test" => {
            let want = field(op, "value")?;
            match doc.pointer(path) {
                Some(got) if got == want => Ok(()),
                Some(got) => Err(format!("test failed: {path} is {got}, not {want}")),
                None => Err(format!("test failed: {path} does not exist")),
            }
        }
        other => Err(format!(
            "op {other:?} is not one of add, remove, replace, move, copy, test"
        )),
    }
}

/// The parent pointer and the last token (unescaped) of `path`.
fn split(path: &str) -> Result<(&str, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be the target".into());
    }
    let at = path
        .rfind('/')
        .ok_or_else(|| format!("{path:?} is not a JSON pointer (it must start with /)"))?;
    let token = path[at + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..at], token))
}

fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let (parent, token) = split(path)?;
    let node = doc
        .pointer_mut(parent)
        .ok_or_else(|| format!("{parent:?} does not exist"))?;
    Ok((node, token))
}

fn index(token: &str, len: usize, path: &str) -> Result<usize, String> {
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| format!("{path:?}: no list item {token:?}"))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (node, token) = parent(doc, path)?;
    match node {
        Value::Object(map) => {
            map.insert(token, value);
            Ok(())
        }
        Value::Array(items) => {
            let at = if token == "-" {
                items.len()
            } else {
                index(&token, items.len() + 1, path)?
            };
            items.insert(at, value);
            Ok(())
        }
        _ => Err(format!("{path:?}: the parent is not an object or a list")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (node, token) = parent(doc, path)?;
    match node {
        Value::Object(map) => map
            .remove(&token)
            .ok_or_else(|| format!("{path:?} does not exist")),
        Value::Array(items) => {
            let at = index(&token, items.len(), path)?;
            Ok(items.remove(at))
        }
        _ => Err(format!("{path:?} does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(doc: Value, patch: Value, want: Result<Value, &str>) {
        let mut doc = doc;
        match (apply_json_patch(&mut doc, &patch), want) {
            (Ok(()), Ok(want)) => assert_eq!(doc, want),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e} lacks {want}"),
            (got, want) => panic!("got {got:?} ({doc}), want {want:?}"),
        }
    }

    #[test]
    fn follows_rfc_6902() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "d", "x/y": 1});
        check(
            doc.clone(),
            json!([{"op": "add", "path": "/a/b/-", "value": 3}]),
            Ok(json!({"a": {"b": [1, 2, 3]}, "c": "d", "x/y": 1})),
        );
        check(
            doc.clone(),
            json!([{"op": "add", "path": "/a/b/0", "value": 0}]),
            Ok(json!({"a": {"b": [0, 1, 2]}, "c": "d", "x/y": 1})),
        );
        check(
            doc.clone(),
            json!([{"op": "remove", "path": "/x~1y"}, {"op": "replace", "path": "/c", "value": 5}]),
            Ok(json!({"a": {"b": [1, 2]}, "c": 5})),
        );
        check(
            doc.clone(),
            json!([{"op": "move", "from": "/c", "path": "/e"}, {"op": "copy", "from": "/a/b/1", "path": "/f"}]),
            Ok(json!({"a": {"b": [1, 2]}, "e": "d", "f": 2, "x/y": 1})),
        );
        check(
            doc.clone(),
            json!([{"op": "test", "path": "/c", "value": "d"}]),
            Ok(doc.clone()),
        );
        check(
            doc.clone(),
            json!([{"op": "test", "path": "/c", "value": "e"}]),
            Err("operation 0: test failed: /c is \"d\", not \"e\""),
        );
        check(
            doc.clone(),
            json!([{"op": "replace", "path": "/nope", "value": 1}]),
            Err("\"/nope\" does not exist"),
        );
        check(
            doc.clone(),
            json!([{"op": "remove", "path": "/a/b/5"}]),
            Err("no list item \"5\""),
        );
        check(
            doc.clone(),
            json!([{"op": "jump", "path": "/c"}]),
            Err("is not one of add"),
        );
        check(doc, json!({"op": "add"}), Err("must be a list"));
    }
}
