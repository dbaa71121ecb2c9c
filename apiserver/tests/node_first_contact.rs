//! An agent's first contact with a node credential: its own Node does not exist yet, so
//! reading it must be a 404 (then it registers), not a 403; another missing node stays 403.

use axum::body::Body;
use axum::http::{Method, Request};
use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_apiserver::{AppState, AuthConfig, Config, generate_token, router};
use tower::ServiceExt;

async fn code(state: &AppState, token: &str, method: Method, path: &str, body: &str) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(format!("/apis/kohakuriver/v1{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    router(state.clone())
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_node_reads_its_own_missing_node_as_404_then_registers() {
    let token = generate_token();
    let config = Config {
        auth: AuthConfig {
            static_tokens: vec![(token.clone(), Identity::new("n1", Role::Node))],
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let state = tokio::task::spawn_blocking(move || AppState::open(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        code(&state, &token, Method::GET, "/nodes/n1", "").await,
        404
    );
    assert_eq!(
        code(&state, &token, Method::GET, "/nodes/n2", "").await,
        403
    );
    let node = r#"{"apiVersion":"kohakuriver/v1","kind":"Node","metadata":{"name":"n1"}}"#;
    assert_eq!(
        code(&state, &token, Method::POST, "/nodes", node).await,
        201
    );
    assert_eq!(
        code(&state, &token, Method::GET, "/nodes/n1", "").await,
        200
    );
}
