//! What paging costs and saves: the time to read a list of many tasks, and the largest
//! single answer body, whole (`GET /tasks`) against paged (`limit=500`, following
//! `continue`), in-process through the router. A third figure pages while the store
//! changes after the first page, so the later pages are rebuilt from the history.
//!
//! Run: `cargo bench -p kohakuriver-apiserver --bench pages`
//! Knobs: `KR_BENCH_TASKS` (default 20,000), `KR_BENCH_PAGE` (default 500),
//! `KR_BENCH_ROUNDS` (default 3), `KR_BENCH_CHANGES` (writes after the first page in the
//! third figure, default 2,000).

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use kohakuriver_apiserver::{AppState, Config, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const TASKS: &str = "/apis/kohakuriver/v1/tasks";

fn main() {
    support::run(bench());
}

async fn call(state: &AppState, method: &str, uri: &str, body: Option<Value>) -> Vec<u8> {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(b) => {
            request = request.header("content-type", "application/merge-patch+json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let response = router(state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{method} {uri}: {}",
        response.status()
    );
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

/// Reads the whole list page by page, making `changes` writes after the first page;
/// answers (items, pages, largest body, time spent reading).
async fn paged(state: &AppState, page: usize, changes: usize) -> (usize, usize, usize, Duration) {
    let (mut items, mut pages, mut peak) = (0, 0, 0);
    // Only the requests are timed, not the bench's own parse of each page.
    let mut reading = Duration::ZERO;
    let mut uri = format!("{TASKS}?limit={page}");
    loop {
        let t = Instant::now();
        let body = call(state, "GET", &uri, None).await;
        reading += t.elapsed();
        peak = peak.max(body.len());
        pages += 1;
        let list: Value = serde_json::from_slice(&body).unwrap();
        items += list["items"].as_array().unwrap().len();
        if pages == 1 {
            for i in 0..changes {
                let patch = json!({"metadata": {"labels": {"round": format!("{i}")}}});
                call(
                    state,
                    "PATCH",
                    &format!("{TASKS}/t{:06}", i * 7 % 20_000),
                    Some(patch),
                )
                .await;
            }
        }
        match list["metadata"]["continue"].as_str() {
            Some(token) => uri = format!("{TASKS}?limit={page}&continue={token}"),
            None => return (items, pages, peak, reading),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn bench() {
    let tasks = support::env("KR_BENCH_TASKS", 20_000);
    let page = support::env("KR_BENCH_PAGE", 500);
    let rounds = support::env("KR_BENCH_ROUNDS", 3);
    let changes = support::env("KR_BENCH_CHANGES", 2_000);
    let state = AppState::open(Config::insecure()).unwrap();
    let started = Instant::now();
    for i in 0..tasks {
        let task = json!({
            "apiVersion": "kohakuriver/v1",
            "kind": "Task",
            "metadata": {"name": format!("t{i:06}"), "labels": {"team": "bench"}},
            "spec": {"command": ["echo", "hi"]}
        });
        let request = Request::post(TASKS)
            .header("content-type", "application/json")
            .body(Body::from(task.to_string()))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert!(response.status().is_success());
    }
    println!("created {tasks} tasks in {}", ms(started.elapsed()));
    for round in 1..=rounds {
        let t = Instant::now();
        let body = call(&state, "GET", TASKS, None).await;
        let whole = t.elapsed();
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), tasks);
        println!(
            "round {round}: whole list: {} , one body of {:.1} MB",
            ms(whole),
            body.len() as f64 / 1e6
        );
        let (items, pages, peak, took) = paged(&state, page, 0).await;
        assert_eq!(items, tasks);
        println!(
            "round {round}: paged by {page}: {} for {pages} pages, largest body {:.2} MB",
            ms(took),
            peak as f64 / 1e6
        );
        let (items, pages, peak, took) = paged(&state, page, changes).await;
        assert_eq!(items, tasks, "a paged list serves every task once");
        println!(
            "round {round}: paged by {page} with {changes} writes after page 1: {} for {pages} pages (reads only), largest body {:.2} MB",
            ms(took),
            peak as f64 / 1e6
        );
    }
}
