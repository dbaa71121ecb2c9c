//! Answers as a `meta.k8s.io/v1` `Table`, as `kubectl get` asks for them: lists, single
//! objects, `includeObject`, selectors and watch streams.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Api, DEADLINE, NODES, TASKS};
use futures::StreamExt;
use kohakuriver_apiserver::router;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The `Accept` header kubectl 1.32's `get` sends.
const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async fn table(api: &Api, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .header("accept", KUBECTL_TABLE)
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    let code = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap())
}

fn names(table: &Value) -> Vec<String> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap().to_string())
        .collect()
}

fn column_names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_as_table() {
    let api = Api::new();
    api.create_task("a").await;
    api.create_task("b").await;
    let (code, t) = table(&api, TASKS).await;
    assert_eq!(code, StatusCode::OK, "{t}");
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert!(t["metadata"]["resourceVersion"].is_string(), "{t}");
    assert_eq!(t["metadata"]["resourceVersion"], "2");
    assert_eq!(
        &column_names(&t)[..6],
        ["Name", "Phase", "Node", "CPUs", "GPUs", "Age"]
    );
    let priorities: Vec<i64> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert!(priorities[..6].iter().all(|p| *p == 0));
    assert!(priorities[6..].iter().all(|p| *p == 1));
    assert_eq!(names(&t), ["a", "b"]);
    let row = &t["rows"][0];
    assert_eq!(row["cells"][1], "Pending");
    assert_eq!(row["cells"][2], "-");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(row["object"]["metadata"]["name"], "a");

    // Plain JSON is still the answer without the header.
    let (_, list) = api.get(TASKS).await;
    assert_eq!(list["kind"], "TaskList");
}

#[tokio::test]
async fn selectors_and_include_object() {
    let api = Api::new();
    api.create_task("a").await;
    let mut labelled = common::task_json("b");
    labelled["metadata"]["labels"] = json!({"team": "x"});
    let (code, _) = api.json("POST", TASKS, &labelled).await;
    assert_eq!(code, StatusCode::CREATED);

    let (_, t) = table(&api, &format!("{TASKS}?labelSelector=team%3Dx")).await;
    assert_eq!(names(&t), ["b"]);
    assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["team"], "x");
    let (_, t) = table(
        &api,
        &format!("{TASKS}?fieldSelector=status.phase%3DRunning"),
    )
    .await;
    assert_eq!(names(&t), Vec::<String>::new());

    let (_, t) = table(&api, &format!("{TASKS}?includeObject=Object")).await;
    assert_eq!(t["rows"][0]["object"]["kind"], "Task");
    assert_eq!(t["rows"][0]["object"]["spec"]["command"][0], "echo");
    let (_, t) = table(&api, &format!("{TASKS}?includeObject=None")).await;
    assert!(t["rows"][0].get("object").is_none(), "{t}");
    let (code, status) = table(&api, &format!("{TASKS}?includeObject=All")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        status["message"].as_str().unwrap().contains("\"All\""),
        "{status}"
    );
}

#[tokio::test]
async fn one_object_as_table() {
    let api = Api::new();
    let created = api.create_task("a").await;
    let (code, t) = table(&api, &format!("{TASKS}/a")).await;
    assert_eq!(code, StatusCode::OK, "{t}");
    assert_eq!(t["kind"], "Table");
    assert_eq!(names(&t), ["a"]);
    assert_eq!(
        t["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
            .to_string()
            .trim_matches('"')
    );
    let (code, status) = table(&api, &format!("{TASKS}/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["kind"], "Status");
}

#[tokio::test]
async fn nodes_as_table() {
    let api = Api::new();
    let node = json!({
        "apiVersion": "kohakuriver/v1", "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"unschedulable": true},
    });
    let (code, body) = api.json("POST", NODES, &node).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (_, t) = table(&api, NODES).await;
    assert_eq!(
        &column_names(&t)[..6],
        ["Name", "Status", "CPUs", "Memory", "GPUs", "Age"]
    );
    assert_eq!(t["rows"][0]["cells"][0], "n1");
    assert_eq!(t["rows"][0]["cells"][1], "Unknown,SchedulingDisabled");
}

/// Reads watch lines from a response body until `count` arrived, within the deadline.
async fn watch_lines(api: &Api, uri: &str, count: usize, during: impl AsyncFnOnce()) -> Vec<Value> {
    let request = Request::get(uri)
        .header("accept", KUBECTL_TABLE)
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    during().await;
    let mut buffer = Vec::new();
    let mut lines = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while lines.len() < count {
            let chunk = body.next().await.expect("stream open").unwrap();
            buffer.extend_from_slice(&chunk);
            while let Some(i) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=i).collect();
                lines.push(serde_json::from_slice::<Value>(&line).unwrap());
            }
        }
    })
    .await
    .expect("watch events in time");
    lines
}

#[tokio::test]
async fn watch_events_carry_one_row_tables_with_headers_once() {
    let api = Api::new();
    api.create_task("a").await;
    let (_, list) = table(&api, TASKS).await;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let uri = format!("{TASKS}?watch=true&resourceVersion={from}");
    let events = watch_lines(&api, &uri, 2, async || {
        api.create_task("b").await;
        let (code, _) = api
            .call("DELETE", &format!("{TASKS}/a"), None, Body::empty())
            .await;
        assert!(code.is_success());
    })
    .await;
    // No bookmark was asked for, so none is sent.
    assert_eq!(events[0]["type"], "ADDED", "{events:?}");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(names(&events[0]["object"]), ["b"]);
    assert_eq!(column_names(&events[0]["object"])[0], "Name");
    assert_eq!(events[1]["type"], "DELETED");
    assert_eq!(names(&events[1]["object"]), ["a"]);
    assert!(events[1]["object"].get("columnDefinitions").is_none());
    assert_eq!(
        events[1]["object"]["rows"][0]["object"]["kind"],
        "PartialObjectMetadata"
    );

    // A fresh watch (from 0) starts with the current objects; a bookmark, when asked for,
    // is a table without rows.
    let uri = format!("{TASKS}?watch=true&allowWatchBookmarks=true");
    let events = watch_lines(&api, &uri, 2, async || {}).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(names(&events[0]["object"]), ["b"]);
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["kind"], "Table");
    assert_eq!(events[1]["object"]["rows"], json!([]));
}
