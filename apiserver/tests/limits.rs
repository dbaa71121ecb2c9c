//! The API server's own limits: open watches per identity and in total, each identity's
//! request rate (429 `TooManyRequests` with `Retry-After`, recovering), and the size of
//! selectors and of labels plus annotations. The HTTP limits (header and body timeouts,
//! the connection cap) are tested where they live, in `tls/tests/limits.rs`.

mod common;

use std::time::Duration;

use common::{Api, DEADLINE, Server, TASKS, task_json};
use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_apiserver::{AuthConfig, Config, Limits, generate_token};
use serde_json::Value;
use tokio::time::Instant;

/// A server with authentication, the tokens of `who`, and `limits`.
async fn server(who: &[(&str, Role)], limits: Limits) -> (Server, Vec<String>) {
    let tokens: Vec<String> = who.iter().map(|_| generate_token()).collect();
    let config = Config {
        auth: AuthConfig {
            static_tokens: who
                .iter()
                .zip(&tokens)
                .map(|((name, role), token)| (token.clone(), Identity::new(*name, *role)))
                .collect(),
            ..AuthConfig::default()
        },
        default_image: Some("busybox:latest".into()),
        // Short, so a watch whose client went away notices at once and frees its place.
        bookmark_interval: Duration::from_millis(200),
        limits,
        ..Config::default()
    };
    (Server::start(config).await, tokens)
}

/// A GET as `token`: the response (its stream unread, for watches).
async fn get(server: &Server, token: &str, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 `Status` with `Retry-After`, its message naming `flag`; answers the wait.
async fn assert_throttled(response: reqwest::Response, flag: &str) -> u64 {
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 429);
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], retry_after);
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(flag), "{message}");
    retry_after
}

const WATCH: &str = "/apis/kohakuriver/v1/tasks?watch=true&allowWatchBookmarks=true";

#[tokio::test(flavor = "multi_thread")]
async fn watches_are_capped_per_identity_and_in_total() {
    let limits = Limits {
        watches_per_identity: 2,
        watches_total: 3,
        ..Limits::default()
    };
    let (server, tokens) = server(&[("alice", Role::User), ("bob", Role::User)], limits).await;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let first = get(&server, alice, WATCH).await;
    assert_eq!(first.status(), 200);
    let _second = get(&server, alice, WATCH).await;
    let third = get(&server, alice, WATCH).await;
    let message_flag = "--max-watches-per-identity";
    assert_throttled(third, message_flag).await;
    // Others still may, up to the total.
    let bobs = get(&server, bob, WATCH).await;
    assert_eq!(bobs.status(), 200);
    assert_throttled(get(&server, bob, WATCH).await, "--max-watches").await;
    // Lists are not watches.
    assert_eq!(get(&server, alice, TASKS).await.status(), 200);
    // A watch whose client went away frees its place.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let again = get(&server, alice, WATCH).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed watch was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_identity_has_a_request_rate_and_recovers() {
    let limits = Limits {
        rate_per_second: 1,
        rate_burst: 3,
        ..Limits::default()
    };
    let who = [
        ("alice", Role::User),
        ("bob", Role::User),
        ("controllers", Role::Controllers),
        ("node-a", Role::Node),
    ];
    let (server, tokens) = server(&who, limits).await;
    let alice = &tokens[0];
    // The burst passes; soon after (however slow this machine) one is refused.
    let mut passed = 0;
    let refused = loop {
        let response = get(&server, alice, TASKS).await;
        if response.status() != 200 {
            break response;
        }
        passed += 1;
        assert!(passed < 50, "never throttled");
    };
    assert!(passed >= 3, "the burst of 3 passes: {passed}");
    let wait = assert_throttled(refused, "--rate-limit").await;
    assert!(wait <= 1, "one token a second: {wait}");
    // Another identity has its own bucket; controllers and nodes are not limited.
    assert_eq!(get(&server, &tokens[1], TASKS).await.status(), 200);
    for _ in 0..20 {
        assert_eq!(get(&server, &tokens[2], TASKS).await.status(), 200);
        let node = get(&server, &tokens[3], "/apis/kohakuriver/v1/whoami").await;
        assert_eq!(node.status(), 200);
    }
    // Alice recovers once a token is back.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = get(&server, alice, TASKS).await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(Instant::now() < deadline, "the rate limit never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_of_zero_is_off() {
    let limits = Limits {
        rate_per_second: 0,
        rate_burst: 1,
        ..Limits::default()
    };
    let (server, tokens) = server(&[("alice", Role::User)], limits).await;
    for _ in 0..50 {
        assert_eq!(get(&server, &tokens[0], TASKS).await.status(), 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn selectors_over_four_kibibytes_are_refused_by_name() {
    let api = Api::new();
    let long = format!("app={}", "a".repeat(4096));
    for key in ["labelSelector", "fieldSelector"] {
        let (code, body) = api.get(&format!("{TASKS}?{key}={long}")).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["reason"], "BadRequest");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(key), "{message}");
        assert!(message.contains("4100 bytes"), "{message}");
        assert!(message.contains("4096"), "{message}");
    }
    // At the limit it is read.
    let fits = format!("metadata.name={}", "a".repeat(4096 - 14));
    let (code, body) = api.get(&format!("{TASKS}?fieldSelector={fits}")).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn labels_and_annotations_over_256_kibibytes_are_invalid() {
    let api = Api::new();
    let mut task = task_json("big");
    task["metadata"]["annotations"] = serde_json::json!({"note": "x".repeat(300 * 1024)});
    let (code, body) = api.json("POST", TASKS, &task).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    let cause = &body["details"]["causes"][0];
    assert_eq!(cause["field"], "metadata.annotations");
    let message = cause["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{} bytes", 4 + 300 * 1024)),
        "{message}"
    );
    assert!(message.contains("262144"), "{message}");
}

/// A body that stops arriving is cut at the body timeout and answered with a `Status` on
/// every endpoint that reads one, DELETE's optional `DeleteOptions` included.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_is_a_status_on_every_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut limits = Limits::default();
    limits.http.body_timeout = Duration::from_secs(1);
    let (server, tokens) = server(&[("alice", Role::Admin)], limits).await;
    let address = server.url.trim_start_matches("http://").to_string();
    for (method, path) in [
        ("POST", TASKS.to_string()),
        ("PUT", format!("{TASKS}/a")),
        ("DELETE", format!("{TASKS}/a")),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"kind\":",
            tokens[0]
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: the server kept waiting for the body"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{method} {path}: {answer}"
        );
        assert!(
            answer.contains("\"kind\":\"Status\""),
            "{method} {path}: {answer}"
        );
        assert!(
            answer.contains("did not arrive within 1s"),
            "{method} {path}: {answer}"
        );
    }
}
