//! Object endpoints: create, get, replace, merge patch, delete, the status subresource and
//! apply. Each parses the body, then hands the store a closure of admission rules that runs
//! under the store's lock against the current object.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kohakuriver_api::auth::Verb;
use kohakuriver_api::{ApplyOutcome, ApplyResult};
use serde_json::Value;

use crate::admission::{
    Deletion, Served, admit_apply, admit_create, admit_delete, admit_replace, admit_status,
    check_name,
};
use crate::auth::Caller;
use crate::body::{Payload, merge_patch, typed};
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;
use crate::store::Change;
use crate::table::{self, Presentation};

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

/// The checks of a create (or an apply that creates): the caller may create this object
/// with this spec; the object is admitted and stamped with its owner.
fn created<R: Served>(
    state: &AppState,
    caller: &Caller,
    body: R,
    uid: String,
    now: kohakuriver_api::Timestamp,
) -> Result<R, AppError> {
    let policy = &state.config().auth.policy;
    caller.allow(Verb::Create, &body.target(), policy)?;
    body.admit_spec_by(caller, None, policy)?;
    let mut object = admit_create(body, uid, now)?;
    object.stamp_owner(caller.owner());
    Ok(object)
}

/// The checks of a change to a stored object's spec or metadata.
fn changed<R: Served>(
    state: &AppState,
    caller: &Caller,
    current: &R,
    new: &R,
) -> Result<(), AppError> {
    let policy = &state.config().auth.policy;
    caller.allow(current.change_verb(new), &current.target(), policy)?;
    new.admit_spec_by(caller, Some(current), policy)
}

/// `POST /{plural}`: 201 with the stored object; 409 AlreadyExists.
pub async fn create<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
    Payload(value): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    let body: R = typed(&value)?;
    let object = created(&state, &caller, body, new_uid(), now())?;
    let name = object.name().to_string();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            if current.is_some() {
                return Err(AppError::already_exists(R::KIND, &name));
            }
            Ok((Change::Put(object), ()))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(object)))
}

/// `GET /{plural}/{name}` (and `…/status`), as a `Table` of one row when the client asks
/// for one.
pub async fn get<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Presentation(presentation): Presentation,
) -> Result<Response, AppError> {
    let policy = &state.config().auth.policy;
    let object = state.store().get::<R>(name.clone()).await?;
    match &object {
        Some(o) => caller.allow(Verb::Get, &o.target(), policy)?,
        None => caller.allow(Verb::Get, &R::missing(&name), policy)?,
    }
    let object = exists(object, &name)?;
    Ok(match presentation {
        Some(options) => table::object(&object, options),
        None => (StatusCode::OK, Json(object)).into_response(),
    })
}

/// `PUT /{plural}/{name}`: replaces spec, labels, annotations and finalizers.
pub async fn replace<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    Payload(value): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    let mut body: R = typed(&value)?;
    check_name(&name, &mut body)?;
    let st = state.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let current = exists(current, &name)?;
            let new = admit_replace(&current, body)?;
            changed(&st, &caller, &current, &new)?;
            Ok((Change::Put(new), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// `PATCH /{plural}/{name}`: a JSON merge patch of spec, labels, annotations and finalizers.
pub async fn patch<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    Payload(patch): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&patch, &name)?;
    let st = state.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let current = exists(current, &name)?;
            let mut doc = to_value(&current)?;
            merge_patch(&mut doc, &patch);
            let body: R = typed(&doc)?;
            let new = admit_replace(&current, body)?;
            changed(&st, &caller, &current, &new)?;
            Ok((Change::Put(new), ()))
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

/// The uid a body names (`metadata.uid`), a precondition of the write when present.
fn sent_uid(body: &Value) -> Option<String> {
    body.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `PUT /{plural}/{name}/status`: replaces the status only.
pub async fn replace_status<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
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
    let sent_uid = sent_uid(&value);
    R::precheck_status(&status)?;
    let policy = state.config().auth.policy.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, stored| {
            let current = exists(current, &name)?;
            caller.allow(Verb::UpdateStatus, &current.target(), &policy)?;
            let body = with_status(&current, status, version)?;
            body.check_status_precondition(&current, sent_uid.as_deref())?;
            let new = admit_status(&current, &body)?;
            new.admit_status_by(&caller, &current, stored)?;
            Ok((Change::Put(new), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// `PATCH /{plural}/{name}/status`: a JSON merge patch of the status only.
pub async fn patch_status<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    Payload(patch): Payload,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&patch, &name)?;
    if let Some(status) = patch.get("status") {
        R::precheck_status(status)?;
    }
    let sent_uid = sent_uid(&patch);
    let policy = state.config().auth.policy.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, stored| {
            let current = exists(current, &name)?;
            caller.allow(Verb::UpdateStatus, &current.target(), &policy)?;
            let mut status = to_value(&current)?["status"].take();
            if let Some(p) = patch.get("status") {
                merge_patch(&mut status, p);
            }
            let version = match patch.pointer("/metadata/resourceVersion") {
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let body = with_status(&current, status, version)?;
            body.check_status_precondition(&current, sent_uid.as_deref())?;
            let new = admit_status(&current, &body)?;
            new.admit_status_by(&caller, &current, stored)?;
            Ok((Change::Put(new), ()))
        })
        .await?;
    Ok((StatusCode::OK, Json(object)))
}

/// An optional `DeleteOptions` body as Kubernetes clients send it: `preconditions` (uid,
/// `resourceVersion`) are checked, `dryRun: ["All"]` (how kubectl asks for a server dry
/// run of a delete) stores nothing; `propagationPolicy` and `gracePeriodSeconds` are
/// accepted and have no effect (no object owns another here, and a task's container is
/// stopped with the agent's own kill grace); `kind`, `apiVersion` and other fields are
/// ignored.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Preconditions,
    #[serde(default)]
    dry_run: Vec<String>,
    #[serde(default)]
    propagation_policy: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // Read so a non-integer is refused; it has no effect.
    grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    fn parse(body: &[u8]) -> Result<DeleteOptions, AppError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(DeleteOptions::default());
        }
        let options = serde_json::from_slice::<DeleteOptions>(body).map_err(|e| {
            AppError::bad_request(format!("the delete options are not readable: {e}"))
        })?;
        if let Some(other) = options.dry_run.iter().find(|d| *d != "All") {
            return Err(AppError::bad_request(format!(
                "dryRun {other:?} in the delete options is not supported; use [\"All\"]"
            )));
        }
        if let Some(policy) = &options.propagation_policy
            && !["Orphan", "Background", "Foreground"].contains(&policy.as_str())
        {
            return Err(AppError::bad_request(format!(
                "propagationPolicy {policy:?} is not one of Orphan, Background, Foreground"
            )));
        }
        Ok(options)
    }

    /// True when the body asks for a dry run.
    fn dry_run(&self) -> bool {
        !self.dry_run.is_empty()
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    #[serde(default, with = "kohakuriver_api::meta::resource_version::option")]
    resource_version: Option<u64>,
}

impl Preconditions {
    /// 409 unless the stored object is the one the caller meant.
    fn check<R: Served>(&self, current: &R) -> Result<(), AppError> {
        let meta = current.metadata();
        if let Some(uid) = &self.uid
            && meta.uid.as_deref() != Some(uid.as_str())
        {
            return Err(AppError::new(
                kohakuriver_api::StatusReason::Conflict,
                format!(
                    "{} {} has uid {}, not {uid}: it was deleted and made again; nothing was deleted",
                    R::SINGULAR,
                    current.name(),
                    meta.uid.as_deref().unwrap_or("none")
                ),
            ));
        }
        if let Some(sent) = self.resource_version {
            crate::admission::check_version(current, Some(sent))?;
        }
        Ok(())
    }
}

/// `DELETE /{plural}/{name}`: 200 with the last object when it went, 202 when finalizers
/// hold it (deletion marked). A `DeleteOptions` body may name the uid (and
/// `resourceVersion`) the caller means: another object of the same name is a 409.
pub async fn delete<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    body: axum::body::Bytes,
) -> Answer<R> {
    let options = DeleteOptions::parse(&body)?;
    let dry_run = params.dry_run()? || options.dry_run();
    let preconditions = options.preconditions;
    let now = now();
    let policy = state.config().auth.policy.clone();
    let (object, _, code) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let current = exists(current, &name)?;
            caller.allow(Verb::Delete, &current.target(), &policy)?;
            preconditions.check(&current)?;
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
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    Payload(value): Payload,
) -> Result<(StatusCode, Json<ApplyResult<R>>), AppError> {
    let dry_run = params.dry_run()?;
    let mut manifest: R = typed(&value)?;
    check_name(&name, &mut manifest)?;
    let (uid, now) = (new_uid(), now());
    let st = state.clone();
    let (object, _, result) = state
        .store()
        .write(name, dry_run, move |current: Option<R>, _| match current {
            None => Ok((
                Change::Put(created(&st, &caller, manifest, uid, now)?),
                ApplyOutcome::Created,
            )),
            Some(current) => match admit_apply(&current, &manifest)? {
                (_, ApplyOutcome::Unchanged) => {
                    let policy = &st.config().auth.policy;
                    caller.allow(Verb::Get, &current.target(), policy)?;
                    Ok((Change::Unchanged(current), ApplyOutcome::Unchanged))
                }
                (new, outcome) => {
                    changed(&st, &caller, &current, &new)?;
                    Ok((Change::Put(new), outcome))
                }
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
