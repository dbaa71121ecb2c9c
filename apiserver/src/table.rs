//! Answers as a `meta.k8s.io` `Table` when the client asks for one (`kubectl get`): lists,
//! single objects and watch streams. The columns and the table shape are pure functions in
//! `kohakuriver_api::{columns, table}`; this module reads the request and rewrites answers.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use kohakuriver_api::table::{IncludeObject, Rendering, TableOptions, negotiate, table};
use serde_json::Value;

use crate::admission::Served;
use crate::error::AppError;

/// How the answer is to be shaped: `Some` when the client asked for a `Table` (by its
/// `Accept` header, with `includeObject` from the query), `None` for the objects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presentation(pub Option<TableOptions>);

impl<S: Send + Sync> FromRequestParts<S> for Presentation {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Presentation, AppError> {
        let accept = parts
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let Rendering::Table(version) = negotiate(&accept) else {
            return Ok(Presentation(None));
        };
        let include = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("includeObject="));
        let include = IncludeObject::parse(include).map_err(|e| {
            AppError::bad_request(format!("unable to convert to Table as requested: {e}"))
        })?;
        Ok(Presentation(Some(TableOptions {
            version,
            include,
            headers: true,
        })))
    }
}

fn now() -> kohakuriver_api::Timestamp {
    chrono::Utc::now()
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => AppError::internal(e.to_string()).into_response(),
    }
}

/// A list (or a page of one) as a table, from the stored bodies that matched; the table
/// carries the list's `continue` token and remaining count.
pub fn list<R: Served>(
    bodies: &[&str],
    meta: kohakuriver_api::ListMeta,
    options: TableOptions,
) -> Result<Response, AppError> {
    let objects = bodies
        .iter()
        .map(|b| serde_json::from_str::<R>(b))
        .collect::<Result<Vec<R>, _>>()
        .map_err(|e| AppError::internal(format!("a stored {} is unreadable: {e}", R::SINGULAR)))?;
    let mut rows = table(&objects, meta.resource_version, options, now());
    rows.metadata.continue_token = meta.continue_token;
    rows.metadata.remaining_item_count = meta.remaining_item_count;
    Ok(json(&rows))
}

/// One object as a table of one row, at the object's own revision.
pub fn object<R: Served>(object: &R, options: TableOptions) -> Response {
    let revision = object.resource_version();
    json(&table(
        std::slice::from_ref(object),
        revision,
        options,
        now(),
    ))
}

/// A watch response with each event's object turned into a table of one row: the first
/// table carries the column definitions, later ones leave them out (as kube-apiserver
/// does). A `BOOKMARK` (sent only when the client asked for them) becomes a table with no
/// rows at its revision; `ERROR` events pass unchanged.
pub fn watch<R: Served>(response: Response, options: TableOptions) -> Response {
    let (mut parts, body) = response.into_parts();
    // A stream of JSON watch events, as kube-apiserver labels it; client-go picks its
    // stream decoder by this type.
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let mut rewriter = EventRewriter::<R> {
        options,
        partial: Vec::new(),
        _kind: std::marker::PhantomData,
    };
    let stream = body
        .into_data_stream()
        .map(move |chunk| chunk.map(|bytes| Bytes::from(rewriter.rewrite(&bytes))));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Rewrites watch lines; a chunk may end inside a line, kept until its end arrives.
struct EventRewriter<R> {
    options: TableOptions,
    partial: Vec<u8>,
    _kind: std::marker::PhantomData<fn() -> R>,
}

impl<R: Served> EventRewriter<R> {
    fn rewrite(&mut self, chunk: &[u8]) -> String {
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return String::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = String::new();
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(mut rewritten) = self.event(line) {
                rewritten.push('\n');
                out.push_str(&rewritten);
            }
        }
        out
    }

    /// One event rewritten, or `None` to leave it out.
    fn event(&mut self, line: &[u8]) -> Option<String> {
        let Ok(mut event) = serde_json::from_slice::<Value>(line) else {
            return Some(String::from_utf8_lossy(line).into_owned());
        };
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED" | "DELETED") => {
                let object: R = serde_json::from_value(event["object"].take()).ok()?;
                let revision = object.resource_version();
                let rows = table(std::slice::from_ref(&object), revision, self.options, now());
                self.options.headers = false;
                event["object"] = serde_json::to_value(rows).ok()?;
            }
            Some("BOOKMARK") => {
                let revision = bookmark_revision(&event);
                let empty = table::<R>(
                    &[],
                    revision,
                    TableOptions {
                        headers: false,
                        ..self.options
                    },
                    now(),
                );
                event = serde_json::json!({ "type": "BOOKMARK", "object": empty });
            }
            _ => {}
        }
        serde_json::to_string(&event).ok()
    }
}

/// The revision of a bookmark, whether it carries it at the top (`resourceVersion`) or in
/// an object's metadata, as a number or a string.
fn bookmark_revision(event: &Value) -> u64 {
    let value = event
        .get("resourceVersion")
        .or_else(|| event.pointer("/object/metadata/resourceVersion"));
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Task;

    fn rewriter() -> EventRewriter<Task> {
        EventRewriter {
            options: TableOptions {
                version: "v1",
                include: IncludeObject::Metadata,
                headers: true,
            },
            partial: Vec::new(),
            _kind: std::marker::PhantomData,
        }
    }

    fn added(name: &str) -> String {
        let mut task = Task::test(name);
        task.metadata.resource_version = Some(4);
        format!(
            "{{\"type\":\"ADDED\",\"object\":{}}}\n",
            serde_json::to_string(&task).unwrap()
        )
    }

    fn lines(text: &str) -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_become_tables_with_headers_once() {
        let mut r = rewriter();
        let out = lines(&r.rewrite(format!("{}{}", added("a"), added("b")).as_bytes()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["type"], "ADDED");
        assert_eq!(out[0]["object"]["kind"], "Table");
        assert_eq!(out[0]["object"]["metadata"]["resourceVersion"], "4");
        assert_eq!(out[0]["object"]["columnDefinitions"][0]["name"], "Name");
        assert_eq!(out[0]["object"]["rows"][0]["cells"][0], "a");
        assert!(out[1]["object"].get("columnDefinitions").is_none());
        assert_eq!(out[1]["object"]["rows"][0]["cells"][0], "b");
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut r = rewriter();
        let line = added("a");
        let (head, tail) = line.split_at(10);
        assert_eq!(r.rewrite(head.as_bytes()), "");
        let out = lines(&r.rewrite(tail.as_bytes()));
        assert_eq!(out[0]["object"]["rows"][0]["cells"][0], "a");
    }

    #[test]
    fn bookmarks_become_empty_tables_and_errors_pass() {
        let bookmark = "{\"type\":\"BOOKMARK\",\"resourceVersion\":9}\n";
        let out = lines(&rewriter().rewrite(bookmark.as_bytes()));
        assert_eq!(out[0]["object"]["kind"], "Table");
        assert_eq!(out[0]["object"]["metadata"]["resourceVersion"], "9");
        assert_eq!(out[0]["object"]["rows"], serde_json::json!([]));
        let typed = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Task\",\"metadata\":{\"resourceVersion\":\"12\"}}}\n";
        let out = lines(&rewriter().rewrite(typed.as_bytes()));
        assert_eq!(out[0]["object"]["metadata"]["resourceVersion"], "12");
        let error = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410}}\n";
        let out = lines(&rewriter().rewrite(error.as_bytes()));
        assert_eq!(out[0]["object"]["code"], 410);
    }
}
