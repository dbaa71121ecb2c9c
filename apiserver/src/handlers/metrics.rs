//! `GET /metrics`: the server's Prometheus metrics, for any person's credential or a
//! metrics-only one (see `crate::metrics`).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use kohakuriver_api::auth::{Target, Verb};

use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::Format;
use crate::state::AppState;

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when `Accept` asks for it.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    caller.allow(Verb::Get, &Target::Metrics, &state.config().auth.policy)?;
    let format = Format::for_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // The database's size is read from the file system: off the runtime's workers.
    let metrics = state.metrics().clone();
    let body = tokio::task::spawn_blocking(move || metrics.render(format))
        .await
        .map_err(|e| AppError::internal(format!("metrics task failed: {e}")))?
        .map_err(|e| AppError::internal(format!("encoding the metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body))
}
