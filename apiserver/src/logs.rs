//! The log proxy: `GET /tasks/{name}/log` is streamed from the agent of the node the task is
//! bound to (`GET {address}/v1/tasks/{name}/log?uid=…`, `kohakuriver_api::agent_url`), bytes
//! passed through as they come.
//!
//! The server calls only an address the node's own agent reported (`http(s)://HOST:PORT`,
//! checked again here), presents that node's agent secret, and answers with a fixed content
//! type whatever the agent sent, so the API's origin never serves anything but plain text.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kohakuriver_api::agent_url::AgentUrl;
use kohakuriver_api::auth::{Target, Verb};
use kohakuriver_api::{Node, Status, StatusReason, Task};

use crate::auth::Caller;
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;

/// Streams a task's stdout or stderr from its agent.
pub async fn proxy(
    State(state): State<AppState>,
    caller: Caller,
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
    caller.allow(
        Verb::Logs,
        &Target::Task(&task),
        &state.config().auth.policy,
    )?;
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
    let agent = AgentUrl::parse(&address).map_err(|e| {
        AppError::unavailable(format!(
            "node {node_name} reported an agent address the server will not call: {e}"
        ))
    })?;
    let url = agent.task_log(&name);
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
        .bearer_auth(state.agent_secret(&node_name))
        .send()
        .await
        .map_err(|e| {
            AppError::unavailable(format!(
                "the agent of node {node_name} at {address} is unreachable: {e}"
            ))
        })?;
    if !answer.status().is_success() {
        let code = answer.status().as_u16();
        let body = answer.bytes().await.unwrap_or_default();
        // The agent answers errors as `Status`; anything else goes into a `Status` message,
        // never relayed as it is.
        let message = match serde_json::from_slice::<Status>(&body) {
            Ok(status) => status.message,
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(500).collect();
                if text.is_empty() {
                    format!("answered HTTP {code}")
                } else {
                    text
                }
            }
        };
        let reason = match code {
            404 => StatusReason::NotFound,
            400 => StatusReason::BadRequest,
            // The agent expired the output (--log-retention); its message says so.
            410 => StatusReason::Gone,
            _ => StatusReason::ServiceUnavailable,
        };
        return Err(AppError::new(
            reason,
            format!("the agent of node {node_name}: {message}"),
        ));
    }
    // The stream ends with the server, so a followed log does not hold up shutdown.
    let bytes = answer
        .bytes_stream()
        .take_until(state.shutdown().clone().cancelled_owned());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(bytes),
    )
        .into_response())
}
