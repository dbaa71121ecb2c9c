//! Helpers shared by the integration tests: in-process calls through the router, a real
//! server on 127.0.0.1:0, and a line reader for watch streams.

#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_apiserver::{AppState, Config, router};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const TASKS: &str = "/apis/kohakuriver/v1/tasks";
pub const NODES: &str = "/apis/kohakuriver/v1/nodes";

/// A task manifest as JSON.
pub fn task_json(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"command": ["echo", "hi"]}
    })
}

/// An in-process API over an in-memory store.
pub struct Api {
    pub state: AppState,
}

impl Api {
    pub fn new() -> Api {
        Api::with(Config::insecure())
    }

    pub fn with(config: Config) -> Api {
        Api {
            state: AppState::open(config).unwrap(),
        }
    }

    /// Sends one request; answers the code and the body as JSON (or as a string value).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = router(self.state.clone())
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, value)
    }

    pub async fn json(&self, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.call(method, uri, Some("application/json"), body.to_string())
            .await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None, Body::empty()).await
    }

    /// Creates a task and answers it as stored.
    pub async fn create_task(&self, name: &str) -> Value {
        let (code, body) = self.json("POST", TASKS, &task_json(name)).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        body
    }
}

/// A real server on 127.0.0.1:0 (the crate's `testing::spawn_server`) and a client for it.
pub struct Server {
    pub url: String,
    /// Cancelling it stops the server.
    pub token: CancellationToken,
    server: TestServer,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let server = spawn_server(config).await;
        let server = Server {
            url: server.url.clone(),
            token: server.shutdown.clone(),
            server,
            client: kohakuriver_tls::http_client(),
        };
        // Wait until it answers.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = server
                .client
                .get(format!("{}/healthz", server.url))
                .send()
                .await
                && r.status().is_success()
            {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Stops the server and waits until it has.
    pub async fn stop(self) {
        tokio::time::timeout(DEADLINE, self.server.stop())
            .await
            .expect("server stops in time")
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, value)
    }

    pub async fn create_task(&self, name: &str) -> Value {
        let (code, body) = self
            .send(reqwest::Method::POST, TASKS, Some(&task_json(name)))
            .await;
        assert_eq!(code, 201, "{body}");
        body
    }

    /// Opens a watch stream at `path` (which carries the query), with bookmarks
    /// (`allowWatchBookmarks=true`) unless the path says otherwise.
    pub async fn watch(&self, path: &str) -> Watch {
        let path = if path.contains("allowWatchBookmarks") {
            path.to_string()
        } else {
            format!("{path}&allowWatchBookmarks=true")
        };
        let response = self.client.get(self.url(&path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "watch {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "a watch is JSON, one object per line"
        );
        Watch {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A watch stream read line by line.
pub struct Watch {
    stream: ByteStream,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event; panics after the deadline. `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("watch event in time")
    }

    async fn next_inner(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next event that is not a bookmark.
    pub async fn next_change(&mut self) -> Value {
        loop {
            let event = self.next().await.expect("stream still open");
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }
}

/// A `resourceVersion` as the wire carries it (a decimal string), as a number.
pub fn rv(value: &Value) -> u64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("resourceVersion {value} is a string"))
        .parse()
        .unwrap()
}

/// A `BOOKMARK` event of kind Task at `rv`, as the server writes it.
pub fn bookmark(rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = serde_json::json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
    }
    serde_json::json!({"type": "BOOKMARK", "object": {
        "apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": metadata
    }})
}

/// `(type, name)` of an event.
pub fn summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap_or_default().to_string(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
