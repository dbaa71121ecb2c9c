//! The agent's HTTP endpoint: captured logs for the API server's log proxy, and a health
//! check.
//!
//! `GET /v1/tasks/{name}/log?uid=UID&stream=stdout|stderr&follow=true|false&tail=N` streams
//! the capture file (whole, or its last N lines) as chunked raw bytes. With `follow` it polls
//! the file for new bytes (every 100 ms, so new output arrives well within a second) and ends
//! once the capture is final and everything was sent. `GET /metrics` answers the agent's
//! Prometheus metrics ([`crate::metrics`]). `GET /healthz` answers `ok`.
//!
//! Every route but `/healthz` (unknown paths included) needs `Authorization: Bearer
//! <agentSecret>`, the secret the API server presents for this node (see
//! [`crate::credential`]). Closed exactly when a secret is known: an agent whose server has
//! no credentials route (an older server) serves logs to anyone who can reach it, as before,
//! and says so in its log at start. Once a secret is known it is never forgotten, so the
//! endpoint never reopens. Errors are `Status` objects, the API server's one error shape.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kohakuriver_api::agent_url::AgentUrl;
use kohakuriver_api::{Status, StatusReason};
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
    /// The secret callers must present; none known means the endpoint is open.
    pub secret: AgentSecret,
    /// What `/metrics` shows.
    pub metrics: crate::metrics::AgentMetrics,
}

/// The secret the API server presents to this agent: a cheap `Clone` handle shared by the
/// endpoint and the loop that refreshes it. A std `RwLock` is right: it is held only to copy
/// a short string, never across an `.await`.
#[derive(Clone, Default)]
pub struct AgentSecret(Arc<RwLock<Option<String>>>);

impl std::fmt::Debug for AgentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        let known = self.get().is_some();
        f.debug_struct("AgentSecret")
            .field("known", &known)
            .finish()
    }
}

impl AgentSecret {
    /// A handle holding `secret` (None: the endpoint is open until one is set).
    pub fn new(secret: Option<String>) -> AgentSecret {
        AgentSecret(Arc::new(RwLock::new(secret.filter(|s| !s.is_empty()))))
    }

    /// The current secret, if one is known.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the secret (an empty one is ignored: the endpoint never reopens).
    pub fn set(&self, secret: String) {
        if secret.is_empty() {
            return;
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(secret);
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <secret>`.
    Malformed,
    /// A bearer secret that is not this agent's.
    Wrong,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this endpoint needs Authorization: Bearer <agent secret>; only the api server calls it (read logs with kohakuriver task logs)"
            }
            Refusal::Malformed => {
                "the Authorization header must be Bearer <agent secret>; only the api server calls this endpoint"
            }
            Refusal::Wrong => {
                "the agent secret is not this node's; only the api server calls this endpoint (read logs with kohakuriver task logs)"
            }
        }
    }
}

/// Decides whether a request with this `Authorization` header value may pass, given the
/// secret (None: no secret known, everything passes). The comparison takes the same time
/// wherever the first difference is.
pub fn check_authorization(header: Option<&str>, secret: Option<&str>) -> Result<(), Refusal> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let header = header.ok_or(Refusal::Missing)?;
    let (scheme, given) = header.trim().split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed);
    }
    if constant_time_eq(given.trim().as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// True when `a == b`, comparing every byte whatever the first difference (only the length
/// is not hidden, and every agent secret has the same length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The endpoint's router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so refusals name the caller.
pub fn router(state: EndpointState) -> Router {
    Router::new()
        .route(AgentUrl::HEALTHZ_ROUTE, get(|| async { "ok" }))
        .route(AgentUrl::TASK_LOG_ROUTE, get(task_log))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            EndpointError::new(StatusReason::NotFound, "no such path on the agent endpoint")
        })
        .method_not_allowed_fallback(|| async {
            EndpointError::new(
                StatusReason::MethodNotAllowed,
                "the agent endpoint only answers GET",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
        .with_state(state)
}

/// Lets `/healthz` through and every other request only with the agent secret.
async fn require_secret(
    State(state): State<EndpointState>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == AgentUrl::HEALTHZ_ROUTE {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    match check_authorization(header, state.secret.get().as_deref()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
            tracing::warn!(
                peer = %peer,
                path = %request.uri().path(),
                why = ?refusal,
                "agent endpoint refused a request without the agent secret"
            );
            EndpointError::new(StatusReason::Unauthorized, refusal.message()).into_response()
        }
    }
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

/// The endpoint's one error shape: a `Status`, as the API server answers.
#[derive(Debug)]
pub struct EndpointError(pub Status);

impl EndpointError {
    /// A failure with this reason and sentence.
    pub fn new(reason: StatusReason, message: impl Into<String>) -> EndpointError {
        EndpointError(Status::new(reason, message))
    }
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.0)).into_response()
    }
}

/// The agent's metrics, scraped by Prometheus with the agent secret as its bearer token.
async fn metrics_text(State(state): State<EndpointState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn task_log(
    State(state): State<EndpointState>,
    Path(name): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, EndpointError> {
    let Query(query) =
        query.map_err(|e| EndpointError::new(StatusReason::BadRequest, e.body_text()))?;
    let stream = query.stream.as_deref().unwrap_or("stdout");
    if stream != "stdout" && stream != "stderr" {
        return Err(EndpointError::new(
            StatusReason::BadRequest,
            format!("stream must be stdout or stderr, not {stream:?}"),
        ));
    }
    if name.contains(['/', '.']) || query.uid.as_deref().is_some_and(|u| u.contains(['/', '.'])) {
        return Err(EndpointError::new(
            StatusReason::BadRequest,
            "invalid task name or uid: neither may contain / or .",
        ));
    }
    let dir = match &query.uid {
        Some(uid) => state.logs.dir(&name, uid),
        None => state.logs.find(&name).into_iter().next().ok_or_else(|| {
            EndpointError::new(
                StatusReason::NotFound,
                format!("no log for task {name} on this node"),
            )
        })?,
    };
    // Output expired by --log-retention answers why, not a bare 404.
    if let Some(why) = crate::log_capture::read_expired(&dir) {
        return Err(EndpointError::new(StatusReason::Gone, why));
    }
    let path = dir.join(stream);
    let mut file = std::fs::File::open(&path).map_err(|_| {
        EndpointError::new(
            StatusReason::NotFound,
            format!("no log for task {name} on this node (it may not have started yet)"),
        )
    })?;
    let offset = match query.tail {
        Some(n) => tail_offset(&mut file, n),
        None => Ok(0),
    }
    .map_err(|e| {
        EndpointError::new(
            StatusReason::InternalError,
            format!("cannot read the log of task {name}: {e}"),
        )
    })?;
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

    const SECRET: &str = "s3cret-s3cret-s3cret";

    async fn get_body(router: Router, uri: &str) -> (StatusCode, String) {
        get_with(router, uri, Some(&format!("Bearer {SECRET}"))).await
    }

    async fn get_with(router: Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut request = axum::http::Request::builder().uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
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
            secret: AgentSecret::new(Some(SECRET.to_string())),
            metrics: Default::default(),
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

    fn status_of(body: &str) -> Status {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
    }

    #[tokio::test]
    async fn errors_are_status_objects() {
        let (_d, _store, r) = setup();
        let (code, body) = get_body(r.clone(), "/v1/tasks/t/log?stream=both").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let status = status_of(&body);
        assert_eq!((status.kind.as_str(), status.code), ("Status", 400));
        assert!(status.message.contains("\"both\""), "{body}");
        let (code, body) = get_body(r.clone(), "/v1/tasks/t/log?tail=many").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&body).reason, StatusReason::BadRequest);
        let (code, body) = get_body(r.clone(), "/v1/tasks/x/log").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(status_of(&body).message.contains("task x"), "{body}");
        let (code, body) = get_body(r, "/nowhere").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(status_of(&body).reason, StatusReason::NotFound);
    }

    #[tokio::test]
    async fn every_route_but_healthz_needs_the_secret() {
        let (_d, _store, r) = setup();
        let log = "/v1/tasks/t/log?uid=u1";
        let wrong = format!("Bearer {}", SECRET.replace('s', "z"));
        let basic = format!("Basic {SECRET}");
        for auth in [
            None,
            Some("Bearer"),
            Some(wrong.as_str()),
            Some(basic.as_str()),
        ] {
            for path in [log, "/nowhere", "/metrics"] {
                let (code, body) = get_with(r.clone(), path, auth).await;
                assert_eq!(code, StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
                let status = status_of(&body);
                assert_eq!(status.reason, StatusReason::Unauthorized);
                assert!(!body.contains(SECRET), "{body}");
            }
        }
        assert_eq!(get_with(r.clone(), "/healthz", None).await.1, "ok");
        let right = format!("bearer  {SECRET} ");
        assert_eq!(
            get_with(r.clone(), log, Some(&right)).await,
            (StatusCode::OK, "a\nb\nc\n".into())
        );
        let (code, body) = get_with(r, "/metrics", Some(&right)).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("kohakuriver_agent_running_containers 0\n"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn without_a_known_secret_the_endpoint_is_open_until_one_is_set() {
        let (_d, store, _r) = setup();
        let secret = AgentSecret::new(None);
        let r = router(EndpointState {
            logs: store,
            shutdown: CancellationToken::new(),
            secret: secret.clone(),
            metrics: Default::default(),
        });
        let log = "/v1/tasks/t/log?uid=u1";
        assert_eq!(get_with(r.clone(), log, None).await.0, StatusCode::OK);
        secret.set(SECRET.to_string());
        assert_eq!(
            get_with(r.clone(), log, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        // An empty secret never reopens it.
        secret.set(String::new());
        assert_eq!(get_with(r, log, None).await.0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn authorization_header_rules() {
        use Refusal::*;
        let check = |h: Option<&str>, s: Option<&str>| check_authorization(h, s);
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("Bearer x"), None), Ok(()));
        assert_eq!(check(None, Some("abc")), Err(Missing));
        assert_eq!(check(Some(""), Some("abc")), Err(Malformed));
        assert_eq!(check(Some("abc"), Some("abc")), Err(Malformed));
        assert_eq!(check(Some("Token abc"), Some("abc")), Err(Malformed));
        assert_eq!(check(Some("Bearer abd"), Some("abc")), Err(Wrong));
        assert_eq!(check(Some("Bearer ab"), Some("abc")), Err(Wrong));
        assert_eq!(check(Some("Bearer abcd"), Some("abc")), Err(Wrong));
        assert_eq!(check(Some("Bearer abc"), Some("abc")), Ok(()));
        assert_eq!(check(Some("BEARER abc"), Some("abc")), Ok(()));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let text = format!("{:?}", AgentSecret::new(Some(SECRET.into())));
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("known: true"), "{text}");
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
