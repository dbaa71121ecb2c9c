//! The agent's endpoint over a real socket: closed by the agent secret, open at `/healthz`,
//! errors as `Status` objects.

use std::net::SocketAddr;
use std::time::Duration;

use kohakuriver_api::{Status, StatusReason};
use kohakuriver_node_agent::endpoint::{AgentSecret, EndpointState, router};
use kohakuriver_node_agent::log_capture::LogStore;
use kohakuriver_node_agent::runtime::LogStream;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "agent-secret-0123456789abcdefghij";

/// Serves the endpoint on 127.0.0.1:0 with one captured log; its base URL.
async fn serve(dir: &std::path::Path, secret: AgentSecret, shutdown: CancellationToken) -> String {
    let logs = LogStore::new(dir);
    logs.prepare("t", "u1").unwrap();
    std::fs::write(logs.path("t", "u1", LogStream::Stdout), "hello\n").unwrap();
    let app = router(EndpointState {
        logs,
        shutdown: shutdown.clone(),
        secret,
        metrics: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    });
    format!("http://{addr}")
}

async fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let client = kohakuriver_tls::http_client_builder(None)
        .unwrap()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    let response = request.send().await.expect("endpoint reachable");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_log_route_needs_the_agent_secret() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let base = serve(
        dir.path(),
        AgentSecret::new(Some(SECRET.to_string())),
        shutdown.clone(),
    )
    .await;
    let log = format!("{base}/v1/tasks/t/log?uid=u1");

    for bearer in [None, Some("wrong"), Some(&SECRET[1..])] {
        let (code, body) = get(&log, bearer).await;
        assert_eq!(code, 401, "{bearer:?}: {body}");
        let status: Status = serde_json::from_str(&body).expect("a Status object");
        assert_eq!(status.reason, StatusReason::Unauthorized);
        assert_eq!(status.code, 401);
        assert!(
            status.message.contains("agent secret"),
            "{}",
            status.message
        );
    }
    assert_eq!(get(&log, Some(SECRET)).await, (200, "hello\n".to_string()));
    assert_eq!(
        get(&format!("{base}/healthz"), None).await,
        (200, "ok".to_string())
    );
    // Unknown paths are closed too: nothing tells a stranger what exists.
    assert_eq!(get(&format!("{base}/v1/other"), None).await.0, 401);
    assert_eq!(get(&format!("{base}/v1/other"), Some(SECRET)).await.0, 404);
    shutdown.cancel();
}

#[tokio::test]
async fn a_secret_learned_later_closes_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let secret = AgentSecret::new(None);
    let base = serve(dir.path(), secret.clone(), shutdown.clone()).await;
    let log = format!("{base}/v1/tasks/t/log?uid=u1");
    assert_eq!(get(&log, None).await.0, 200);
    secret.set(SECRET.to_string());
    assert_eq!(get(&log, None).await.0, 401);
    assert_eq!(get(&log, Some(SECRET)).await.0, 200);
    shutdown.cancel();
}
