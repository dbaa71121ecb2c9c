//! The agent's HTTP endpoint: captured logs for the API server's log proxy, and a health
//! check.
//!
//! `GET /v1/tasks/{name}/log?uid=UID&stream=stdout|stderr&follow=true|false&tail=N` streams
//! the capture file (whole, or its last N lines) as chunked raw bytes. With `follow` it polls
//! the file for new bytes (every 100 ms, so new output arrives well within a second) and ends
//! once the capture is final and everything was sent. `GET /healthz` answers `ok`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::log_capture::{LogStore, tail_offset};

/// How often a follower looks for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The endpoint's shared state.
#[derive(Clone)]
pub struct EndpointState {
    /// Where the logs are.
    pub logs: LogStore,
    /// Ends follow streams when the agent stops.
    pub shutdown: CancellationToken,
}

/// The endpoint's router.
pub fn router(state: EndpointState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/tasks/{name}/log", get(task_log))
        .with_state(state)
}

/// Query of the log route.
#[derive(Deserialize, Debug)]
pub struct LogQuery {
    /// The task's uid; when absent the newest capture of that name is used.
    pub uid: Option<String>,
    /// `stdout` (default) or `stderr`.
    pub stream: Option<String>,
    /// Keep streaming until the capture is final.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
}

/// The endpoint's one error shape: a status code and a plain sentence.
#[derive(Debug)]
pub struct EndpointError(StatusCode, String);

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

async fn task_log(
    State(state): State<EndpointState>,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, EndpointError> {
    let stream = query.stream.as_deref().unwrap_or("stdout");
    if stream != "stdout" && stream != "stderr" {
        return Err(EndpointError(
            StatusCode::BAD_REQUEST,
            format!("stream must be stdout or stderr, not {stream:?}"),
        ));
    }
    if name.contains(['/', '.']) || query.uid.as_deref().is_some_and(|u| u.contains(['/', '.'])) {
        return Err(EndpointError(
            StatusCode::BAD_REQUEST,
            "invalid task name or uid".to_string(),
        ));
    }
    let dir = match &query.uid {
        Some(uid) => state.logs.dir(&name, uid),
        None => state.logs.find(&name).into_iter().next().ok_or_else(|| {
            EndpointError(
                StatusCode::NOT_FOUND,
                format!("no log for task {name} on this node"),
            )
        })?,
    };
    let path = dir.join(stream);
    let mut file = std::fs::File::open(&path).map_err(|_| {
        EndpointError(
            StatusCode::NOT_FOUND,
            format!("no log for task {name} on this node (it may not have started yet)"),
        )
    })?;
    let offset = match query.tail {
        Some(n) => tail_offset(&mut file, n),
        None => Ok(0),
    }
    .map_err(|e| EndpointError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = Body::from_stream(follow_file(
        path,
        dir.join("final"),
        offset,
        query.follow,
        state.shutdown.clone(),
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

struct Follow {
    path: PathBuf,
    final_marker: PathBuf,
    offset: u64,
    follow: bool,
    final_seen: bool,
    shutdown: CancellationToken,
}

/// Reads `path` from `offset`: to its end, or with `follow` until `final_marker` exists and
/// the file is read to its end after that.
fn follow_file(
    path: PathBuf,
    final_marker: PathBuf,
    offset: u64,
    follow: bool,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let state = Follow {
        path,
        final_marker,
        offset,
        follow,
        final_seen: false,
        shutdown,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            let (path, offset) = (state.path.clone(), state.offset);
            let chunk = tokio::task::spawn_blocking(move || read_at(&path, offset))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            match chunk {
                Err(e) => return Some((Err(e), None)),
                Ok(bytes) if !bytes.is_empty() => {
                    state.offset += bytes.len() as u64;
                    return Some((Ok(Bytes::from(bytes)), Some(state)));
                }
                Ok(_) => {}
            }
            if !state.follow || state.final_seen {
                return None;
            }
            if state.final_marker.exists() {
                // One more read after seeing the marker catches the last bytes.
                state.final_seen = true;
                continue;
            }
            tokio::select! {
                _ = state.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    })
}

fn read_at(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    file.take(256 * 1024).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LogStream;
    use futures::StreamExt;
    use tower::ServiceExt;

    async fn get_body(router: Router, uri: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(
                axum::http::Request::builder()
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let mut body = response.into_body().into_data_stream();
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        (status, String::from_utf8(text).unwrap())
    }

    fn setup() -> (tempfile::TempDir, LogStore, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        store.prepare("t", "u1").unwrap();
        std::fs::write(store.path("t", "u1", LogStream::Stdout), "a\nb\nc\n").unwrap();
        std::fs::write(store.path("t", "u1", LogStream::Stderr), "oops\n").unwrap();
        let router = router(EndpointState {
            logs: store.clone(),
            shutdown: CancellationToken::new(),
        });
        (dir, store, router)
    }

    #[tokio::test]
    async fn whole_tail_and_stderr() {
        let (_d, _store, r) = setup();
        assert_eq!(
            get_body(r.clone(), "/v1/tasks/t/log?uid=u1").await,
            (StatusCode::OK, "a\nb\nc\n".into())
        );
        assert_eq!(
            get_body(r.clone(), "/v1/tasks/t/log?uid=u1&tail=2").await.1,
            "b\nc\n"
        );
        assert_eq!(
            get_body(r.clone(), "/v1/tasks/t/log?stream=stderr").await.1,
            "oops\n"
        );
        assert_eq!(
            get_body(r.clone(), "/v1/tasks/x/log").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get_body(r.clone(), "/v1/tasks/t/log?stream=both").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get_body(r, "/healthz").await.1, "ok");
    }

    #[tokio::test]
    async fn follow_streams_new_bytes_and_ends_when_final() {
        let (_d, store, r) = setup();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(store.path("t", "u1", LogStream::Stdout))
                    .unwrap();
                f.write_all(b"d\n").unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                store.mark_final("t", "u1").unwrap();
            })
        };
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(5),
            get_body(r, "/v1/tasks/t/log?uid=u1&follow=true"),
        )
        .await
        .unwrap();
        writer.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "a\nb\nc\nd\n");
    }
}
