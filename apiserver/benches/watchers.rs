//! What filtered watchers cost the write path: the time for a run of task creates with no
//! watchers, and with many agent-style watchers (`fieldSelector=status.node=NODE`, one node
//! each) open, in-process through the router. Every create is an event each watcher must
//! judge against its selector, so this measures how a selector is evaluated per event.
//! A figure ends when every watcher has judged every create: each watcher asks for
//! bookmarks, and a bookmark carries the last revision its watcher has handled.
//!
//! Run: `cargo bench -p kohakuriver-apiserver --bench watchers`
//! Knobs: `KR_BENCH_WATCHERS` (default 300), `KR_BENCH_CREATES` (default 100),
//! `KR_BENCH_ROUNDS` (default 3).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt;
use kohakuriver_apiserver::{AppState, Config, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const TASKS: &str = "/apis/kohakuriver/v1/tasks";

fn main() {
    support::run(bench());
}

/// A large task, as real ones are (an environment, a long command line), so that reading
/// it costs what reading a real one does.
fn task(name: &str) -> Value {
    let env: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("VAR_{i}"), json!("x".repeat(40))))
        .collect();
    json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Task",
        "metadata": {"name": name, "labels": {"team": "bench", "run": name}},
        "spec": {"command": ["python", "train.py", "--config", "x".repeat(2000)], "env": env}
    })
}

async fn create(state: &AppState, name: &str) -> u64 {
    let request = Request::post(TASKS)
        .header("content-type", "application/json")
        .body(Body::from(task(name).to_string()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let task: Value = serde_json::from_slice(&body).unwrap();
    task["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a resourceVersion")
}

/// Opens a watch on one node's tasks; answers the last revision its bookmarks reported.
async fn watch(state: &AppState, node: usize) -> Arc<AtomicU64> {
    let uri =
        format!("{TASKS}?watch=true&allowWatchBookmarks=true&fieldSelector=status.node=n{node}");
    let response = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let seen = Arc::new(AtomicU64::new(0));
    let reported = seen.clone();
    tokio::spawn(async move {
        let mut stream = response.into_body().into_data_stream();
        let mut pending = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).unwrap();
                if event["type"] == "BOOKMARK"
                    && let Some(rv) = event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                {
                    reported.fetch_max(rv, Ordering::Relaxed);
                }
            }
        }
    });
    seen
}

/// Creates `creates` tasks; answers the time for the creates and the time until every
/// watcher has handled them.
async fn run(
    state: &AppState,
    round: usize,
    creates: usize,
    seen: &[Arc<AtomicU64>],
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut last = 0;
    for i in 0..creates {
        last = create(state, &format!("r{round}-t{i:04}")).await;
    }
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.iter().any(|s| s.load(Ordering::Relaxed) < last) {
        assert!(Instant::now() < deadline, "watchers did not catch up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (created, started.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn bench() {
    let watchers = support::env("KR_BENCH_WATCHERS", 300);
    let creates = support::env("KR_BENCH_CREATES", 100);
    let rounds = support::env("KR_BENCH_ROUNDS", 3);
    let mut config = Config::insecure();
    config.bookmark_interval = Duration::from_millis(100);
    config.limits.rate_per_second = 0;
    config.limits.watches_per_identity = watchers + 1;
    config.limits.watches_total = watchers + 1;
    let state = AppState::open(config).unwrap();
    for round in 1..=rounds {
        let (created, _) = run(&state, round, creates, &[]).await;
        println!(
            "round {round}: {creates} creates, no watchers: {}",
            ms(created)
        );
    }
    let mut seen = Vec::new();
    for node in 0..watchers {
        seen.push(watch(&state, node).await);
    }
    for round in 1..=rounds {
        let (created, handled) = run(&state, rounds + round, creates, &seen).await;
        println!(
            "round {round}: {creates} creates, {watchers} filtered watchers: {} to create, {} until every watcher handled them",
            ms(created),
            ms(handled)
        );
    }
}
