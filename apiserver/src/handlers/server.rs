//! The server's own endpoints: health, info, schemas, and the `Status` answers for unknown
//! paths and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::IntoResponse;
use kohakuriver_api::{ServerInfo, StatusReason, discovery, schema};

use crate::error::AppError;
use crate::state::AppState;

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /cacerts` (anonymous): the cluster CA as PEM, for a first contact that checks it
/// against the fingerprint in its credential; 404 when the server has no CA.
pub async fn cacerts(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let pem = state.config().ca_pem.clone().ok_or_else(|| {
        AppError::new(
            StatusReason::NotFound,
            "this server has no cluster CA to give: it was started without --tls-self-signed or --ca",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

/// `GET /apis/kohakuriver/v1/info`.
pub async fn info(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        default_image: state.config().default_image.clone(),
        user_mount_prefixes: state.config().auth.policy.user_mount_prefixes.clone(),
        auth: state.config().auth.enabled,
        node_grace_seconds: state.config().node_grace.map(|g| g.as_secs_f64()),
    })
}

/// `GET /apis/kohakuriver/v1/schemas/task`.
pub async fn task_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        schema::task_schema_json(),
    )
}

/// `GET /apis/kohakuriver/v1/schemas/node`.
pub async fn node_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        schema::node_schema_json(),
    )
}

/// `GET /apis/kohakuriver/v1/schemas/taskgroup`.
pub async fn task_group_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        schema::task_group_schema_json(),
    )
}

/// `GET /apis/kohakuriver/v1/schemas/event`.
pub async fn event_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        schema::event_schema_json(),
    )
}

/// Any path the API does not have; a namespaced or core-group path (as kubectl asks
/// before it has read discovery, or with a guessed path) says why it cannot exist.
pub async fn not_found(method: Method, uri: Uri) -> AppError {
    let message = discovery::unserved_path_message(uri.path())
        .unwrap_or_else(|| format!("no such path: {method} {}", uri.path()));
    AppError::new(StatusReason::NotFound, message)
}

/// A known path asked with a method it does not take.
pub async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        StatusReason::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
