//! Object endpoints: create, get, replace, merge patch, delete, the status subresource and
//! apply. Each parses the body, then hands the store a closure of admission rules that runs
//! in the store's writer against the current object.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kohakuriver_api::auth::{Role, Verb};
use kohakuriver_api::field_manager;
use kohakuriver_api::field_validation::{FieldValidation, drop_unknown_fields};
use kohakuriver_api::validation::unresolvable_image;
use kohakuriver_api::{ApplyOutcome, ApplyResult, Node, Resource};
use serde_json::Value;

use crate::admission::{
    Deletion, Served, admit_apply, admit_create, admit_delete, admit_replace, admit_status,
    check_name,
};
use crate::auth::Caller;
use crate::body::{
    ObjectBody, Patch, PatchKind, Payload, RawBody, Warnings, decode_value, merge_patch,
    strict_refusal, typed,
};
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;
use crate::store::Change;
use crate::table::{self, Presentation};
use kohakuriver_api::json_patch::apply_json_patch;

type Answer<R> = Result<(StatusCode, Json<R>), AppError>;

/// The answer of a write: the object, and warnings about dropped fields.
type Written<R> = Result<(StatusCode, Warnings, Json<R>), AppError>;

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
    // A group's members are created by the controllers, from a template already judged
    // against the group's writer (`admission/group.rs`), and belong to the group's owner.
    let member_by_controllers = caller.is_checked()
        && caller.identity().role == Role::Controllers
        && !body.metadata().owner_references.is_empty();
    let owner = if member_by_controllers {
        body.metadata().owner.clone()
    } else {
        body.admit_spec_by(caller, None, policy)?;
        caller.owner()
    };
    let owner = if R::OWNER_FROM_BODY {
        body.metadata().owner.clone()
    } else {
        owner
    };
    let mut object = admit_create(body, uid, now)?;
    object.stamp_owner(owner);
    Ok(object)
}

/// A new task that could never get an image, refused at once (422) rather than failing
/// on its node: it names neither `image` nor `container`, the server has no
/// `--default-image`, and no node it may run on reports one
/// (`kohakuriver_api::validation::unresolvable_image`). The nodes are read only then.
async fn image_refusal<R: Served>(
    state: &AppState,
    body: &Value,
) -> Result<Option<AppError>, AppError> {
    if !R::RUNS_AN_IMAGE || state.config().default_image.is_some() {
        return Ok(None);
    }
    let spec = R::TASK_SPEC_POINTER;
    let named = |field: &str| {
        body.pointer(&format!("{spec}{field}"))
            .is_some_and(|v| !v.is_null())
    };
    if named("/image") || named("/container") {
        return Ok(None);
    }
    let pinned = body
        .pointer(&format!("{spec}/placement/node"))
        .and_then(Value::as_str);
    // Every create of a task without an image asks this, so read as little as answers it:
    // the pinned node alone, or the nodes up to the first that has a default image (one,
    // on a cluster whose agents report theirs), never every node parsed for every create.
    let nodes: Vec<Node> = match pinned {
        Some(node) => state
            .store()
            .get::<Node>(node.to_string())
            .await?
            .into_iter()
            .collect(),
        None => {
            let (_, bodies) = state.store().list(Node::KIND, None, None).await?;
            let mut nodes = Vec::new();
            for body in &bodies {
                let Ok(node) = serde_json::from_str::<Node>(body) else {
                    continue;
                };
                let enough = node.status.default_image.is_some();
                nodes.push(node);
                if enough {
                    break;
                }
            }
            nodes
        }
    };
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(unresolvable_image(pinned, &nodes).map(|e| AppError::invalid(R::KIND, name, vec![e])))
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
    headers: HeaderMap,
    ObjectBody { value, duplicates }: ObjectBody,
) -> Written<R> {
    let dry_run = params.dry_run()?;
    let (body, sent, warnings) =
        decode_value::<R>(&value, &duplicates, params.field_validation()?)?;
    let manager = params.field_manager(&headers)?;
    let now = now();
    let mut object = created(&state, &caller, body, new_uid(), now)?;
    if let Some(refusal) = image_refusal::<R>(&state, &value).await? {
        return Err(refusal);
    }
    record(None, &sent, &mut object, &manager, now);
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
    Ok((StatusCode::CREATED, Warnings(warnings), Json(object)))
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
    headers: HeaderMap,
    ObjectBody { value, duplicates }: ObjectBody,
) -> Written<R> {
    let dry_run = params.dry_run()?;
    let (mut body, _, warnings) =
        decode_value::<R>(&value, &duplicates, params.field_validation()?)?;
    let manager = params.field_manager(&headers)?;
    check_name(&name, &mut body)?;
    let now = now();
    let st = state.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let current = exists(current, &name)?;
            Ok((replaced(&st, &caller, current, body, &manager, now)?, ()))
        })
        .await?;
    Ok((StatusCode::OK, Warnings(warnings), Json(object)))
}

/// `PATCH /{plural}/{name}`: a JSON merge patch or JSON patch of spec, labels, annotations
/// and finalizers, or a server-side apply (`application/apply-patch+yaml`).
pub async fn patch<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    headers: HeaderMap,
    Patch {
        kind,
        value: patch,
        duplicates,
    }: Patch,
) -> Written<R> {
    let dry_run = params.dry_run()?;
    let validation = params.field_validation()?;
    let manager = params.field_manager(&headers)?;
    check_body_name(&patch, &name)?;
    if kind == PatchKind::Apply {
        let force = params.flag("force")?;
        return server_side_apply(
            state, caller, name, patch, manager, validation, force, dry_run,
        )
        .await;
    }
    let now = now();
    let st = state.clone();
    let (object, _, warnings) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let current = exists(current, &name)?;
            let mut doc = to_value(&current)?;
            if kind == PatchKind::Json {
                apply_json_patch(&mut doc, &patch)
                    .map_err(|e| AppError::new(kohakuriver_api::StatusReason::Invalid, e))?;
            } else {
                merge_patch(&mut doc, &patch);
            }
            // An emptied resourceVersion means "no precondition", as kubectl sends it.
            if doc.pointer("/metadata/resourceVersion") == Some(&Value::from(""))
                && let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.remove("resourceVersion");
            }
            let (body, _, warnings) = decode_value::<R>(&doc, &duplicates, validation)?;
            Ok((
                replaced(&st, &caller, current, body, &manager, now)?,
                warnings,
            ))
        })
        .await?;
    Ok((StatusCode::OK, Warnings(warnings), Json(object)))
}

/// A server-side apply: `field_manager::apply` decides what the manifest does to the
/// stored object (or creates it) and who owns which field; a conflict is 409 with one
/// `FieldManagerConflict` cause per field, as kube-apiserver answers.
#[allow(clippy::too_many_arguments)]
async fn server_side_apply<R: Served>(
    state: AppState,
    caller: Caller,
    name: String,
    config: Value,
    manager: String,
    validation: FieldValidation,
    force: bool,
    dry_run: bool,
) -> Written<R> {
    if !config.is_object() {
        return Err(AppError::bad_request(
            "a server-side apply body must be one object with apiVersion, kind and metadata",
        ));
    }
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = config
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != kohakuriver_api::API_VERSION || kind != R::KIND {
        return Err(AppError::bad_request(format!(
            "a server-side apply body must say apiVersion: {} and kind: {}; got apiVersion {api_version:?}, kind {kind:?}",
            kohakuriver_api::API_VERSION,
            R::KIND
        )));
    }
    let mut config = config;
    let unknown = drop_unknown_fields(&mut config, R::schema());
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            return Err(strict_refusal(&unknown, &[]));
        }
        FieldValidation::Warn => unknown.iter().map(|u| u.warning()).collect(),
        _ => Vec::new(),
    };
    let (uid, now) = (new_uid(), now());
    let mut refusal = image_refusal::<R>(&state, &config).await?;
    let st = state.clone();
    let (object, written, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, _| {
            let writer = field_manager::Writer {
                manager: &manager,
                api_version: kohakuriver_api::API_VERSION,
                now,
            };
            let live = current.as_ref().map(to_value).transpose()?;
            let managed = current
                .as_ref()
                .map(|c| c.metadata().managed_fields.clone())
                .unwrap_or_default();
            let applied = field_manager::apply(live.as_ref(), &managed, &config, writer, force)
                .map_err(|conflicts| apply_conflict(&conflicts))?;
            let mut body: R = typed(&applied.object)?;
            check_name(&name, &mut body)?;
            match current {
                None => {
                    if let Some(refusal) = refusal.take() {
                        return Err(refusal);
                    }
                    let mut object = created(&st, &caller, body, uid, now)?;
                    object.metadata_mut().managed_fields = applied.managed_fields;
                    Ok((Change::Put(object), ()))
                }
                Some(current) => {
                    let mut new = admit_replace(&current, body)?;
                    new.metadata_mut().managed_fields = applied.managed_fields;
                    if new == current {
                        let policy = &st.config().auth.policy;
                        caller.allow(Verb::Get, &current.target(), policy)?;
                        return Ok((Change::Unchanged(current), ()));
                    }
                    changed(&st, &caller, &current, &new)?;
                    Ok((Change::Put(new), ()))
                }
            }
        })
        .await?;
    let code = if written == crate::store::Written::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Warnings(warnings), Json(object)))
}

/// The 409 of an apply that would change fields other managers own.
fn apply_conflict(conflicts: &[field_manager::FieldConflict]) -> AppError {
    let mut status = kohakuriver_api::Status::new(
        kohakuriver_api::StatusReason::Conflict,
        field_manager::conflict_message(conflicts),
    );
    let details = status.details.get_or_insert_with(Default::default);
    details.causes = conflicts
        .iter()
        .map(|c| kohakuriver_api::FieldError {
            reason: Some("FieldManagerConflict".to_string()),
            field: c.field.clone(),
            message: format!("conflict with {}", c.manager),
        })
        .collect();
    AppError::from(status)
}

/// Records `manager`'s update on `object`, whose managed fields are the stored ones (or
/// those the body sent instead): `before` and `after` are the object before and after the
/// write (no `before` on a create, where `after` is the body as sent, so fields the server
/// defaulted belong to no one, as in Kubernetes).
fn record<R: Served>(
    before: Option<&Value>,
    after: &Value,
    object: &mut R,
    manager: &str,
    now: kohakuriver_api::Timestamp,
) {
    let writer = field_manager::Writer {
        manager,
        api_version: kohakuriver_api::API_VERSION,
        now,
    };
    let managed = std::mem::take(&mut object.metadata_mut().managed_fields);
    object.metadata_mut().managed_fields =
        field_manager::record_update(before, after, &managed, writer);
}

/// The change of a replace (`PUT`, or a merge or JSON patch) of the stored `current` by
/// `body`: admitted, allowed to `caller`, and `manager`'s ownership recorded; nothing when
/// the result is the stored object (no new revision, as in Kubernetes).
fn replaced<R: Served>(
    state: &AppState,
    caller: &Caller,
    current: R,
    body: R,
    manager: &str,
    now: kohakuriver_api::Timestamp,
) -> Result<Change<R>, AppError> {
    let mut new = admit_replace(&current, body)?;
    changed(state, caller, &current, &new)?;
    if new == current {
        return Ok(Change::Unchanged(current));
    }
    let (old, after) = (to_value(&current)?, to_value(&new)?);
    record(Some(&old), &after, &mut new, manager, now);
    Ok(Change::Put(new))
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
    write_status(state, caller, name, params, value, StatusBody::Whole).await
}

/// `PATCH /{plural}/{name}/status`: a JSON merge patch of the status only.
pub async fn patch_status<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
    Payload(patch): Payload,
) -> Answer<R> {
    write_status(state, caller, name, params, patch, StatusBody::MergePatch).await
}

/// How a status write's body gives the new status.
#[derive(Clone, Copy, PartialEq)]
enum StatusBody {
    /// The body's `status` (an empty one when absent) is the whole new status.
    Whole,
    /// The body's `status`, when present, is a JSON merge patch of the stored one.
    MergePatch,
}

/// A status write: the status the body gives, checked against the stored object and its
/// preconditions (uid, `resourceVersion`, binding), then admitted for `caller`.
async fn write_status<R: Served>(
    state: AppState,
    caller: Caller,
    name: String,
    params: Params,
    body: Value,
    how: StatusBody,
) -> Answer<R> {
    let dry_run = params.dry_run()?;
    check_body_name(&body, &name)?;
    let sent = match how {
        StatusBody::Whole => Some(
            body.get("status")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default())),
        ),
        StatusBody::MergePatch => body.get("status").cloned(),
    };
    if let Some(status) = &sent {
        R::precheck_status(status)?;
    }
    let version = body
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    let sent_uid = sent_uid(&body);
    let policy = state.config().auth.policy.clone();
    let (object, _, ()) = state
        .store()
        .write(name.clone(), dry_run, move |current: Option<R>, stored| {
            let current = exists(current, &name)?;
            caller.allow(Verb::UpdateStatus, &current.target(), &policy)?;
            let status = match (how, sent) {
                (StatusBody::Whole, Some(status)) => status,
                (_, patch) => {
                    let mut status = to_value(&current)?["status"].take();
                    if let Some(patch) = &patch {
                        merge_patch(&mut status, patch);
                    }
                    status
                }
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
    RawBody(body): RawBody,
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
    headers: HeaderMap,
    ObjectBody { value, duplicates }: ObjectBody,
) -> Result<(StatusCode, Warnings, Json<ApplyResult<R>>), AppError> {
    let dry_run = params.dry_run()?;
    let (mut manifest, sent, warnings) =
        decode_value::<R>(&value, &duplicates, params.field_validation()?)?;
    let manager = params.field_manager(&headers)?;
    check_name(&name, &mut manifest)?;
    let (uid, now) = (new_uid(), now());
    let mut refusal = image_refusal::<R>(&state, &value).await?;
    let st = state.clone();
    let (object, _, result) = state
        .store()
        .write(name, dry_run, move |current: Option<R>, _| match current {
            None => {
                if let Some(refusal) = refusal.take() {
                    return Err(refusal);
                }
                let mut object = created(&st, &caller, manifest, uid, now)?;
                record(None, &sent, &mut object, &manager, now);
                Ok((Change::Put(object), ApplyOutcome::Created))
            }
            Some(current) => match admit_apply(&current, &manifest)? {
                (_, ApplyOutcome::Unchanged) => {
                    let policy = &st.config().auth.policy;
                    caller.allow(Verb::Get, &current.target(), policy)?;
                    Ok((Change::Unchanged(current), ApplyOutcome::Unchanged))
                }
                (mut new, outcome) => {
                    changed(&st, &caller, &current, &new)?;
                    let (old, after) = (to_value(&current)?, to_value(&new)?);
                    record(Some(&old), &after, &mut new, &manager, now);
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
    Ok((
        code,
        Warnings(warnings),
        Json(ApplyResult { result, object }),
    ))
}
