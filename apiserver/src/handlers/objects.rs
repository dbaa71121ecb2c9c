//! Object endpoints: create, get, replace, merge patch, delete, the status subresource and
//! apply. Each parses the body, then hands the store a closure of admission rules that runs
//! under the store's lock against the current object.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kohakuriver_api::{ApplyOutcome, ApplyResult};
use serde_json::Value;

use crate::admission::{
    Deletion, Served, admit_apply, admit_create, admit_delete, admit_replace, admit_status,
    check_name,
};
use crate::body::{Payload, merge_patch, typed};
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;
use crate::store::Change;

type Answer<R> = Result<(StatusCode, Json<R>), AppError>;

fn now() -> kohakuriver_api::Timestamp {
    chrono::Utc::now()
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn exists<R: Served>(current: Option<R>, name: &str) -> Result<R, AppError> {
    current.ok_or_else(|| AppError::not_found(R::KIND, name))
}

fn to_value<R: Served>(object: &R) -> Result<Value, AppError> {
    serde_json::to_value(object).map_err(|e| AppError::internal(e.to_string()))
}

/// Refuses a body whose `metadata.name` names another object than the URL.
fn check_body_name(value: &Value, url_name: &str) -> Result<(), AppError> {
    match value.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && name != url_name => Err(AppError::bad_request(format!(
            "the name in the body ({name:?}) does not match the name in the URL ({url_name:?})"
        ))),
        _ => Ok(()),
    }
}

/// `POST /{plural}`: 201 with the stored object; 409 AlreadyExists.
pub async fn create<R: Served>(
    State(state): State<AppState>,
    params: Params,
    Payload(value): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    let body: R = typed(&value)?;
    let object = admit_create(body, new_uid(), now())?;
    let name = object.name().to_string();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            if current.is_some() {
                return Err(AppError::already_exists(R::KIND, &name));
            }
            Ok((Change::Put(object), ()))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(object)))
}

/// `GET /{plural}/{name}` (and `…/status`).
pub async fn get<R: Served>(State(state): State<AppState>, Path(name): Path<String>) -> Answer<R> {
    let object = state.store().get::<R>(name.clone()).await?;
    Ok((StatusCode::OK, Json(exists(object, &name)?)))
}

/// `PUT /{plural}/{name}`: replaces spec, labels, annotations and finalizers.
pub async fn replace<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
    Payload(value): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    let mut body: R = typed(&value)?;
    check_name(&name, &mut body)?;
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            let current = exists(current, &name)?;
            Ok((Change::Put(admit_replace(&current, body)?), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// `PATCH /{plural}/{name}`: a JSON merge patch of spec, labels, annotations and finalizers.
pub async fn patch<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
    Payload(patch): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&patch, &name)?;
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            let current = exists(current, &name)?;
            let mut doc = to_value(&current)?;
            merge_patch(&mut doc, &patch);
            let body: R = typed(&doc)?;
            Ok((Change::Put(admit_replace(&current, body)?), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// The stored object with the status and `resourceVersion` of a status write put in, so a
/// status body need not carry a valid spec.
fn with_status<R: Served>(current: &R, status: Value, version: Value) -> Result<R, AppError> {
    let mut doc = to_value(current)?;
    doc["status"] = status;
    doc["metadata"]["resourceVersion"] = version;
    typed(&doc)
}

/// `PUT /{plural}/{name}/status`: replaces the status only.
pub async fn replace_status<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
    Payload(value): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&value, &name)?;
    let status = value
        .get("status")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let version = value
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            let current = exists(current, &name)?;
            let body = with_status(&current, status, version)?;
            Ok((Change::Put(admit_status(&current, &body)?), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// `PATCH /{plural}/{name}/status`: a JSON merge patch of the status only.
pub async fn patch_status<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
    Payload(patch): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&patch, &name)?;
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            let current = exists(current, &name)?;
            let mut status = to_value(&current)?["status"].take();
            if let Some(p) = patch.get("status") {
                merge_patch(&mut status, p);
            }
            let version = match patch.pointer("/metadata/resourceVersion") {
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let body = with_status(&current, status, version)?;
            Ok((Change::Put(admit_status(&current, &body)?), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// `DELETE /{plural}/{name}`: 200 with the last object when it went, 202 when finalizers
/// hold it (deletion marked).
pub async fn delete<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    let now = now();
    let (object, _, code) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>| {
            let current = exists(current, &name)?;
            Ok(match admit_delete(current, now) {
                Deletion::Remove(o) => (Change::Remove(o), StatusCode::OK),
                Deletion::MarkDeleting(o) => (Change::Put(o), StatusCode::ACCEPTED),
                Deletion::AlreadyDeleting(o) => (Change::Unchanged(o), StatusCode::ACCEPTED),
            })
        })
        .await?;
    Ok((code, Json(object)))
}

/// `POST /{plural}/{name}/apply`: create, or update spec, labels and annotations; answers
/// created (201), configured or unchanged (200).
pub async fn apply<R: Served>(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
    Payload(value): Payload,
) -> Result<(StatusCode, Json<ApplyResult<R>>), AppError> {
    let dry_run = params.dry_run()?;
    let mut manifest: R = typed(&value)?;
    check_name(&name, &mut manifest)?;
    let (uid, now) = (new_uid(), now());
    let (object, _, result) = state
        .store()
        .write(name, dry_run, move |current: Option<R>| match current {
            None => Ok((
                Change::Put(admit_create(manifest, uid, now)?),
                ApplyOutcome::Created,
            )),
            Some(current) => match admit_apply(&current, &manifest)? {
                (_, ApplyOutcome::Unchanged) => {
                    Ok((Change::Unchanged(current), ApplyOutcome::Unchanged))
                }
                (new, outcome) => Ok((Change::Put(new), outcome)),
            },
        })
        .await?;
    let code = if result == ApplyOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(ApplyResult { result, object })))
}
