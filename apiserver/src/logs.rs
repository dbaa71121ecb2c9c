//! The log proxy: `GET /tasks/{name}/log` is streamed from the agent of the node the task is
//! bound to (`GET {address}/v1/tasks/{name}/log?uid=…`), bytes passed through as they come.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kohakuriver_api::{Node, StatusReason, Task};

use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;

/// Streams a task's stdout or stderr from its agent.
pub async fn proxy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Response, AppError> {
    let stream = params.get("stream").unwrap_or("stdout");
    if stream != "stdout" && stream != "stderr" {
        return Err(AppError::bad_request(format!(
            "stream={stream:?} is not a log stream; use stdout or stderr"
        )));
    }
    let follow = params.flag("follow")?;
    let tail = params.number("tail")?;
    let task = state
        .store()
        .get::<Task>(name.clone())
        .await?
        .ok_or_else(|| AppError::not_found("Task", &name))?;
    let Some(node_name) = task.status.node.clone() else {
        return Err(AppError::new(
            StatusReason::NotFound,
            format!("task {name} has no logs yet: it is {}", task.status.phase),
        ));
    };
    let node = state.store().get::<Node>(node_name.clone()).await?;
    let Some(address) = node.and_then(|n| n.status.address) else {
        return Err(AppError::unavailable(format!(
            "node {node_name} (running task {name}) has no agent address; is its agent registered?"
        )));
    };
    let url = format!("{}/v1/tasks/{name}/log", address.trim_end_matches('/'));
    let mut query = vec![
        ("uid", task.metadata.uid.clone().unwrap_or_default()),
        ("stream", stream.to_string()),
        ("follow", follow.to_string()),
    ];
    if let Some(tail) = tail {
        query.push(("tail", tail.to_string()));
    }
    let answer = state
        .http()
        .get(&url)
        .query(&query)
        .send()
        .await
        .map_err(|e| {
            AppError::unavailable(format!(
                "the agent of node {node_name} at {address} is unreachable: {e}"
            ))
        })?;
    let code = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    // The stream ends with the server, so a followed log does not hold up shutdown.
    let bytes = answer
        .bytes_stream()
        .take_until(state.shutdown().clone().cancelled_owned());
    Ok((
        code,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(bytes),
    )
        .into_response())
}
