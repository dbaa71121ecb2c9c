//! Reading request bodies: the size limit, JSON or YAML by `Content-Type` (sniffed when
//! missing), conversion to typed objects with errors that name the field path, and JSON
//! merge patch (RFC 7386).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use kohakuriver_api::StatusReason;
use kohakuriver_api::field_validation::{FieldValidation, UnknownField, drop_unknown_fields};
use kohakuriver_api::manifest::from_json_value;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admission::Served;
use crate::error::AppError;
use crate::state::AppState;

/// The syntax of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` or `application/merge-patch+json`.
    Json,
    /// `application/yaml`, `application/x-yaml` or `text/yaml`.
    Yaml,
}

/// Picks the format from the `Content-Type` header; without one, a body starting with `{`
/// is JSON and anything else YAML. Other media types are 415.
pub fn format(headers: &HeaderMap, body: &[u8]) -> Result<Format, AppError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        return Ok(if first == Some(&b'{') {
            Format::Json
        } else {
            Format::Yaml
        });
    };
    let text = value.to_str().unwrap_or_default();
    let media = text.split(';').next().unwrap_or_default().trim();
    match media.to_ascii_lowercase().as_str() {
        "application/json" | "application/merge-patch+json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(Format::Yaml),
        _ => Err(AppError::new(
            StatusReason::UnsupportedMediaType,
            format!(
                "content type {text:?} is not supported; send application/json, application/yaml or application/merge-patch+json"
            ),
        )),
    }
}

/// Reads a JSON or YAML body into a JSON value; a key given twice in one object is 400.
pub fn parse_value(format: Format, body: &[u8]) -> Result<Value, AppError> {
    let (value, duplicates) = parse_value_with_duplicates(format, body)?;
    if let Some(first) = duplicates.first() {
        // serde_json keeps the last of two equal keys; YAML refuses them. Refuse them in
        // JSON too, so no two readers of one body can see different objects.
        return Err(AppError::bad_request(format!(
            "malformed JSON: duplicate key {first:?}"
        )));
    }
    Ok(value)
}

/// Reads a JSON or YAML body into a JSON value, answering the paths of keys a JSON body
/// gives twice in one object (`metadata.name`; the last one is kept), so an object write
/// can refuse them (Strict) or report them (Warn). YAML refuses them at parse time.
pub fn parse_value_with_duplicates(
    format: Format,
    body: &[u8],
) -> Result<(Value, Vec<String>), AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::bad_request("the request body is empty"));
    }
    match format {
        Format::Json => {
            let value = serde_json::from_slice(body)
                .map_err(|e| AppError::bad_request(format!("malformed JSON: {e}")))?;
            let mut duplicates = Vec::new();
            let mut de = serde_json::Deserializer::from_slice(body);
            serde::de::DeserializeSeed::deserialize(
                DuplicateKeys {
                    path: String::new(),
                    found: &mut duplicates,
                },
                &mut de,
            )
            .map_err(|e| AppError::bad_request(format!("malformed JSON: {e}")))?;
            Ok((value, duplicates))
        }
        Format::Yaml => {
            let text = std::str::from_utf8(body).map_err(|e| {
                AppError::bad_request(format!("the YAML body is not valid UTF-8: {e}"))
            })?;
            let yaml: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| AppError::bad_request(format!("malformed YAML: {e}")))?;
            let value = serde_json::to_value(yaml).map_err(|e| {
                AppError::bad_request(format!("the YAML body cannot be read as JSON: {e}"))
            })?;
            Ok((value, Vec::new()))
        }
    }
}

/// Converts a JSON value into a typed object; the error names the field path, e.g.
/// `spec.resources.cpus: unknown field `cpus``.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, AppError> {
    if !value.is_object() {
        let shown: String = value.to_string().chars().take(40).collect();
        let got = match value {
            Value::Array(_) => "a list".to_string(),
            Value::String(_) => format!("a string ({shown})"),
            Value::Number(_) => format!("a number ({shown})"),
            Value::Bool(_) => format!("a boolean ({shown})"),
            _ => "null".to_string(),
        };
        return Err(AppError::bad_request(format!(
            "the body must be one object (a JSON object or YAML mapping) with apiVersion, kind, metadata and spec; got {got}"
        )));
    }
    from_json_value(value).map_err(AppError::bad_request)
}

/// Converts a JSON value into a kind-`R` object under `validation`: fields the kind does
/// not have, and keys the body gave twice (`duplicates`), refuse the request (Strict, naming
/// every one), or are dropped and answered as warnings (Warn), or dropped silently
/// (Ignore). Also answers the value with the unknown fields dropped: what the writer set,
/// before any default.
pub fn decode_value<R: Served>(
    value: &Value,
    duplicates: &[String],
    validation: FieldValidation,
) -> Result<(R, Value, Vec<String>), AppError> {
    let mut value = value.clone();
    let unknown = if value.is_object() {
        drop_unknown_fields(&mut value, R::schema())
    } else {
        Vec::new()
    };
    if validation == FieldValidation::Strict && !(unknown.is_empty() && duplicates.is_empty()) {
        return Err(strict_refusal(&unknown, duplicates));
    }
    let object = typed(&value)?;
    let warnings = match validation {
        FieldValidation::Warn => unknown
            .iter()
            .map(|u| u.warning())
            .chain(duplicates.iter().map(|d| duplicate_warning(d)))
            .collect(),
        _ => Vec::new(),
    };
    Ok((object, value, warnings))
}

/// `duplicate field "spec.priority"`, as Kubernetes words it.
pub fn duplicate_warning(path: &str) -> String {
    format!("duplicate field {path:?}")
}

/// The 400 of a strict write with unknown or duplicate fields, naming each (and the fields
/// known where an unknown one was).
pub fn strict_refusal(unknown: &[UnknownField], duplicates: &[String]) -> AppError {
    let named: Vec<String> = unknown
        .iter()
        .map(|u| format!("{} (known there: {})", u.warning(), u.known.join(", ")))
        .chain(duplicates.iter().map(|d| duplicate_warning(d)))
        .collect();
    AppError::bad_request(format!(
        "strict decoding error: {}; fix the field names, or send fieldValidation=Warn or Ignore to drop them",
        named.join(", ")
    ))
}

/// What a `PATCH` body is, by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// A JSON merge patch (RFC 7386): `application/merge-patch+json`, or plain JSON or YAML.
    Merge,
    /// A server-side apply: `application/apply-patch+yaml`.
    Apply,
    /// A JSON patch (RFC 6902): `application/json-patch+json`.
    Json,
}

/// Picks the kind of patch from the `Content-Type`; strategic merge patch
/// is 415 naming what to send instead.
pub fn patch_kind(headers: &HeaderMap, body: &[u8]) -> Result<(PatchKind, Format), AppError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let instead = "send a JSON merge patch (application/merge-patch+json; kubectl patch --type merge), a JSON patch (application/json-patch+json; kubectl patch --type json) or a server-side apply (application/apply-patch+yaml; kubectl apply --server-side)";
    match media.as_str() {
        "application/apply-patch+yaml" => Ok((PatchKind::Apply, Format::Yaml)),
        "application/json-patch+json" => Ok((PatchKind::Json, Format::Json)),
        "application/strategic-merge-patch+json" => Err(AppError::new(
            StatusReason::UnsupportedMediaType,
            format!(
                "strategic merge patch (application/strategic-merge-patch+json) is only for built-in Kubernetes kinds; {instead}"
            ),
        )),
        _ => Ok((PatchKind::Merge, format(headers, body)?)),
    }
}

/// A `PATCH` body: its kind and its value.
#[derive(Debug)]
pub struct Patch {
    /// Merge patch, JSON patch or apply.
    pub kind: PatchKind,
    /// The parsed body.
    pub value: Value,
    /// Paths of keys a JSON body gave twice (the last was kept).
    pub duplicates: Vec<String>,
}

impl FromRequest<AppState> for Patch {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Patch, AppError> {
        let limit = state.config().max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts.headers, body, limit).await?;
        let (kind, format) = patch_kind(&parts.headers, &bytes)?;
        let (value, duplicates) = parse_value_with_duplicates(format, &bytes)?;
        Ok(Patch {
            kind,
            value,
            duplicates,
        })
    }
}

/// A body read whole within the size limit, for endpoints that parse it themselves (a
/// DELETE's optional `DeleteOptions`): a slow, broken or oversized body is answered as a
/// `Status`, as on every other endpoint, never as axum's plain-text rejection.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<RawBody, AppError> {
        let limit = state.config().max_body_bytes;
        let (parts, body) = req.into_parts();
        Ok(RawBody(read_limited(&parts.headers, body, limit).await?))
    }
}

/// Warnings for the client, one `Warning: 299 - "…"` header each, as kube-apiserver sends
/// them (kubectl prints `Warning: …`).
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<String>);

impl axum::response::IntoResponseParts for Warnings {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        for text in self.0 {
            let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
                res.headers_mut().append(header::WARNING, value);
            }
        }
        Ok(res)
    }
}

/// Walks any JSON, collecting the path of every key an object holds twice.
struct DuplicateKeys<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(DuplicateKeys {
                path: format!("{}[{i}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(DuplicateKeys {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A request body, size-limited and parsed into a JSON value.
#[derive(Debug)]
pub struct Payload(pub Value);

impl FromRequest<AppState> for Payload {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Payload, AppError> {
        let limit = state.config().max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts.headers, body, limit).await?;
        let format = format(&parts.headers, &bytes)?;
        parse_value(format, &bytes).map(Payload)
    }
}

/// The body of an object write (create, replace, apply): its value, and the paths of keys
/// a JSON body gave twice, which `fieldValidation` refuses or reports.
#[derive(Debug)]
pub struct ObjectBody {
    /// The parsed body.
    pub value: Value,
    /// Paths of keys given twice (the last was kept).
    pub duplicates: Vec<String>,
}

impl FromRequest<AppState> for ObjectBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<ObjectBody, AppError> {
        let limit = state.config().max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts.headers, body, limit).await?;
        let format = format(&parts.headers, &bytes)?;
        let (value, duplicates) = parse_value_with_duplicates(format, &bytes)?;
        Ok(ObjectBody { value, duplicates })
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::new(
        StatusReason::RequestEntityTooLarge,
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// How much of an oversized body is read and thrown away before answering 413, so a
/// client still sending it sees the answer instead of a broken pipe.
const DRAIN_LIMIT: usize = 16 << 20;

/// How long draining an oversized body may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole body, refusing (413) anything over `limit` bytes.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, AppError> {
    use futures::StreamExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(stream).await;
        return Err(too_large(limit));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and discards what is left of a body, up to [`DRAIN_LIMIT`] bytes and
/// [`DRAIN_TIME`].
async fn drain(mut stream: axum::body::BodyDataStream) {
    use futures::StreamExt;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn picks_format_from_content_type_or_sniffs() {
        assert_eq!(
            format(&headers("application/json; charset=utf-8"), b"").unwrap(),
            Format::Json
        );
        assert_eq!(format(&headers("text/yaml"), b"{").unwrap(), Format::Yaml);
        assert_eq!(
            format(&headers("application/merge-patch+json"), b"").unwrap(),
            Format::Json
        );
        assert_eq!(
            format(&HeaderMap::new(), b"  {\"a\":1}").unwrap(),
            Format::Json
        );
        assert_eq!(format(&HeaderMap::new(), b"a: 1").unwrap(), Format::Yaml);
        assert_eq!(format(&headers("text/plain"), b"").unwrap_err().0.code, 415);
    }

    #[test]
    fn parse_errors_are_bad_requests_that_say_why() {
        let e = parse_value(Format::Json, b"{oops").unwrap_err();
        assert!(
            e.0.code == 400 && e.0.message.starts_with("malformed JSON"),
            "{e}"
        );
        let e = parse_value(Format::Yaml, b"a: [").unwrap_err();
        assert!(e.0.message.starts_with("malformed YAML"), "{e}");
        let e = parse_value(Format::Yaml, b"a: \xff\xfe").unwrap_err();
        assert!(e.0.message.contains("not valid UTF-8"), "{e}");
        assert_eq!(parse_value(Format::Yaml, b"a: 1").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn duplicate_keys_are_found_with_their_paths() {
        let body = br#"{"a": 1, "a": 2, "spec": {"x": [{"k": 1, "k": 2}], "y": 1, "y": 3}}"#;
        let (value, duplicates) = parse_value_with_duplicates(Format::Json, body).unwrap();
        assert_eq!(duplicates, ["a", "spec.x[0].k", "spec.y"]);
        assert_eq!(value["spec"]["y"], 3, "the last one is kept");
        let e = parse_value(Format::Json, body).unwrap_err();
        assert_eq!(e.0.message, "malformed JSON: duplicate key \"a\"");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"c": [1]}));
        assert_eq!(doc, json!({"a": "z", "c": [1]}));
    }
}
