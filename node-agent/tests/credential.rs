//! How the agent finds its credential, against a small stand-in for the server's auth
//! routes (`whoami`, `join`): which token is used, when a join happens, what is saved, and
//! what is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kohakuriver_api::auth::{CreatedToken, JoinRequest, Role, TokenInfo, WhoAmI};
use kohakuriver_api::{Status, StatusReason};
use kohakuriver_node_agent::credential::{Credential, NODE_TOKEN_FILE, resolve, split_credential};

/// The stand-in server: known tokens and how many joins it answered.
#[derive(Clone, Default)]
struct Server {
    tokens: Arc<Mutex<HashMap<String, (String, Role)>>>,
    joins: Arc<Mutex<u32>>,
}

impl Server {
    fn add(&self, token: &str, name: &str, role: Role) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), (name.to_string(), role));
    }

    fn revoke(&self, token: &str) {
        self.tokens.lock().unwrap().remove(token);
    }

    fn joins(&self) -> u32 {
        *self.joins.lock().unwrap()
    }

    fn who(&self, headers: &HeaderMap) -> Result<(String, Role), Unknown> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        token
            .and_then(|t| self.tokens.lock().unwrap().get(t).cloned())
            .ok_or(Unknown)
    }
}

/// A request without a known token: 401, as the server answers it.
struct Unknown;

impl IntoResponse for Unknown {
    fn into_response(self) -> Response {
        let status = Status::new(StatusReason::Unauthorized, "who are you");
        (StatusCode::UNAUTHORIZED, Json(status)).into_response()
    }
}

async fn whoami(State(s): State<Server>, headers: HeaderMap) -> Result<Json<WhoAmI>, Unknown> {
    let (name, role) = s.who(&headers)?;
    Ok(Json(WhoAmI {
        name,
        role,
        may: vec![],
        authenticated: true,
    }))
}

async fn join(
    State(s): State<Server>,
    headers: HeaderMap,
    Json(request): Json<JoinRequest>,
) -> Result<Json<CreatedToken>, Response> {
    let (_, role) = s.who(&headers).map_err(IntoResponse::into_response)?;
    if role != Role::Join {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    let n = {
        let mut joins = s.joins.lock().unwrap();
        *joins += 1;
        *joins
    };
    let token = format!("krv_node{n:04}_{}", "s".repeat(32));
    s.add(&token, &request.node, Role::Node);
    Ok(Json(CreatedToken {
        token,
        info: TokenInfo {
            id: format!("node{n:04}"),
            name: request.node,
            role: Role::Node,
            created_at: chrono::Utc::now(),
            expires_at: None,
            last_used_at: None,
            uses_left: None,
        },
        ca_fingerprint: Some("ab12".into()),
    }))
}

async fn start(server: &Server) -> String {
    let app = axum::Router::new()
        .route("/apis/kohakuriver/v1/whoami", get(whoami))
        .route("/apis/kohakuriver/v1/join", post(join))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn given(token: &str) -> Credential {
    split_credential(token)
}

#[tokio::test]
async fn a_node_credential_for_this_node_is_used_and_not_saved() {
    let server = Server::default();
    server.add("krv_n1", "n1", Role::Node);
    let url = start(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let got = resolve(
        &url,
        None,
        "n1",
        dir.path(),
        Some(&given("krv_n1@sha256:FF")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.token, "krv_n1");
    assert_eq!(got.ca_fingerprint.as_deref(), Some("ff"));
    assert!(!dir.path().join(NODE_TOKEN_FILE).exists());
    assert_eq!(server.joins(), 0);
}

#[tokio::test]
async fn a_join_credential_is_exchanged_once_and_the_node_credential_kept() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::default();
    server.add("krv_join", "bootstrap", Role::Join);
    let url = start(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join(NODE_TOKEN_FILE);

    let first = resolve(&url, None, "n1", dir.path(), Some(&given("krv_join")))
        .await
        .unwrap()
        .unwrap();
    assert!(first.token.starts_with("krv_node0001_"), "{first:?}");
    assert_eq!(first.ca_fingerprint.as_deref(), Some("ab12"));
    assert_eq!(server.joins(), 1);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(text, format!("{}@sha256:ab12\n", first.token));
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Restarted with the same join credential: the saved node credential, no new join.
    let again = resolve(&url, None, "n1", dir.path(), Some(&given("krv_join")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, first.token);
    assert_eq!(server.joins(), 1);

    // The join credential was single-use and is gone now: the saved one still counts.
    server.revoke("krv_join");
    let spent = resolve(&url, None, "n1", dir.path(), Some(&given("krv_join")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spent.token, first.token);
    server.add("krv_join", "bootstrap", Role::Join);

    // Restarted with no credential: the saved one.
    let none = resolve(&url, None, "n1", dir.path(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(none.token, first.token);

    // The saved one revoked: the join credential makes a new one.
    server.revoke(&first.token);
    let renewed = resolve(&url, None, "n1", dir.path(), Some(&given("krv_join")))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(renewed.token, first.token);
    assert_eq!(server.joins(), 2);

    // ... and without the join credential the revoked saved one is a clear error.
    server.revoke(&renewed.token);
    let err = resolve(&url, None, "n1", dir.path(), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(NODE_TOKEN_FILE), "{text}");
    assert!(
        text.contains("kohakuriver token create --role node --name n1"),
        "{text}"
    );
}

#[tokio::test]
async fn other_roles_and_other_nodes_are_refused_with_the_fix() {
    let server = Server::default();
    server.add("krv_admin", "alice", Role::Admin);
    server.add("krv_n2", "n2", Role::Node);
    let url = start(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let err = resolve(&url, None, "n1", dir.path(), Some(&given("krv_admin")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin \"alice\""), "{err}");
    assert!(
        err.contains("kohakuriver token create --role node --name n1"),
        "{err}"
    );
    let err = resolve(&url, None, "n1", dir.path(), Some(&given("krv_n2")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"n2\""), "{err}");
    assert!(
        err.contains("kohakuriver token create --role node --name n1"),
        "{err}"
    );
    let err = resolve(&url, None, "n1", dir.path(), Some(&given("krv_unknown")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the credential given"), "{err}");
    assert_eq!(server.joins(), 0);
    assert!(!dir.path().join(NODE_TOKEN_FILE).exists());
}

#[tokio::test]
async fn no_credential_against_a_server_that_needs_one_says_how_to_start() {
    let server = Server::default();
    let url = start(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let err = resolve(&url, None, "n1", dir.path(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "the server requires a credential: start the agent with --token (kohakuriver token create --role node --name n1)"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn no_credential_against_a_server_without_whoami_runs_as_before() {
    // A server predating authentication answers 404 for whoami.
    let app = axum::Router::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        resolve(&url, None, "n1", dir.path(), None).await.unwrap(),
        None
    );
}
