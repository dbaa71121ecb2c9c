//! Paged lists (`limit`, `continue`): every object that existed at the first page's revision
//! is served exactly once, as it was then, whatever is written between pages; 410 Expired
//! when the history no longer reaches back; 400 for a token the server did not make.

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Api, NODES, TASKS, task_json};
use kohakuriver_apiserver::{Config, router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn create(api: &Api, name: &str, team: &str) {
    let mut task = task_json(name);
    task["metadata"]["labels"] = json!({ "team": team });
    let (code, body) = api.json("POST", TASKS, &task).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

async fn relabel(api: &Api, name: &str, team: &str) {
    let patch = json!({"metadata": {"labels": {"team": team}}}).to_string();
    let (code, body) = api
        .call(
            "PATCH",
            &format!("{TASKS}/{name}"),
            Some("application/merge-patch+json"),
            patch,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

async fn delete(api: &Api, name: &str) {
    let (code, body) = api
        .call("DELETE", &format!("{TASKS}/{name}"), None, Body::empty())
        .await;
    assert!(code.is_success(), "{body}");
}

/// The query string's value for `continue`, escaped for a URL.
fn continue_query(token: &str) -> String {
    token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Follows `continue` from `first` to the end, running `between` before each later page;
/// answers every item served (name to its team label) and the pages' revision.
async fn all_pages(
    api: &Api,
    query: &str,
    mut between: impl AsyncFnMut(usize),
) -> (Vec<(String, String)>, u64) {
    let (code, mut page) = api.get(&format!("{TASKS}?{query}")).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let revision = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut served = Vec::new();
    for n in 0.. {
        for item in page["items"].as_array().unwrap() {
            let rv: u64 = item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                rv <= revision.parse().unwrap(),
                "{item} is newer than the list"
            );
            served.push((
                item["metadata"]["name"].as_str().unwrap().to_string(),
                item["metadata"]["labels"]["team"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
        assert_eq!(page["metadata"]["resourceVersion"], revision.as_str());
        let Some(token) = page["metadata"]["continue"].as_str() else {
            break;
        };
        between(n).await;
        let (code, next) = api
            .get(&format!(
                "{TASKS}?{query}&continue={}",
                continue_query(token)
            ))
            .await;
        assert_eq!(code, StatusCode::OK, "{next}");
        page = next;
    }
    (served, revision.parse().unwrap())
}

#[tokio::test]
async fn pages_serve_every_object_once_as_of_the_first_page_while_writes_go_on() {
    let api = Api::new();
    for i in 0..30 {
        create(&api, &format!("t{i:02}"), "a").await;
    }
    let (code, first) = api.get(&format!("{TASKS}?limit=7")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(names(&first).len(), 7);
    assert_eq!(first["metadata"]["remainingItemCount"], 23);

    // Between pages: change objects already served and not yet served, delete some not yet
    // served, create some before and after the cursor, and change a created one again.
    let (served, revision) = all_pages(&api, "limit=7", async |n| {
        let n = n as u32;
        relabel(&api, &format!("t{:02}", n), "changed").await;
        relabel(&api, &format!("t{:02}", 29 - n), "changed").await;
        relabel(&api, &format!("t{:02}", 29 - n), "changed-again").await;
        delete(&api, &format!("t{:02}", 20 + n)).await;
        create(&api, &format!("t{:02}x", n), "new").await;
        create(&api, &format!("zz{n}"), "new").await;
        relabel(&api, &format!("zz{n}"), "newer").await;
    })
    .await;
    assert_eq!(revision, 30);
    let want: Vec<(String, String)> = (0..30).map(|i| (format!("t{i:02}"), "a".into())).collect();
    assert_eq!(
        served, want,
        "every object once, in name order, as it was at revision 30"
    );

    // The store did change: a whole list now shows it.
    let (_, now) = api.get(TASKS).await;
    assert!(names(&now).contains(&"zz0".to_string()));
    assert!(!names(&now).contains(&"t20".to_string()));
    // Without a limit there is no token.
    assert!(
        now["metadata"].get("continue").is_none(),
        "{}",
        now["metadata"]
    );
}

#[tokio::test]
async fn selectors_apply_to_each_object_as_of_the_list_revision() {
    let api = Api::new();
    for i in 0..10 {
        create(&api, &format!("t{i}"), if i % 2 == 0 { "a" } else { "b" }).await;
    }
    let (served, _) = all_pages(&api, "limit=2&labelSelector=team%3Da", async |n| {
        if n == 0 {
            // t8 leaves the selection and t9 enters it after the list's revision.
            relabel(&api, "t8", "b").await;
            relabel(&api, "t9", "a").await;
        }
    })
    .await;
    let got: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, ["t0", "t2", "t4", "t6", "t8"]);
    // With a selector the remaining count is not known, as in Kubernetes.
    let (_, page) = api
        .get(&format!("{TASKS}?limit=1&labelSelector=team%3Da"))
        .await;
    assert!(page["metadata"]["continue"].is_string());
    assert!(page["metadata"].get("remainingItemCount").is_none());
}

#[tokio::test]
async fn a_token_older_than_the_history_is_expired() {
    let api = Api::with(Config {
        watch_history: 4,
        ..Config::insecure()
    });
    for i in 0..5 {
        create(&api, &format!("t{i}"), "a").await;
    }
    let (_, first) = api.get(&format!("{TASKS}?limit=2")).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..3 {
        relabel(&api, &format!("t{i}"), "b").await;
    }
    // Still within the history: the page is served.
    let (code, body) = api
        .get(&format!(
            "{TASKS}?limit=2&continue={}",
            continue_query(&token)
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for i in 0..20 {
        relabel(&api, &format!("t{}", i % 5), &format!("c{i}")).await;
    }
    let (code, body) = api
        .get(&format!(
            "{TASKS}?limit=2&continue={}",
            continue_query(&token)
        ))
        .await;
    assert_eq!(code, StatusCode::GONE, "{body}");
    assert_eq!(body["reason"], "Expired");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("list again from the start"), "{message}");
}

#[tokio::test]
async fn a_bad_token_is_a_400_naming_it() {
    let api = Api::new();
    let (code, body) = api.get(&format!("{TASKS}?limit=2&continue=not-ours")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("\"not-ours\""), "{message}");
    let (code, body) = api.get(&format!("{TASKS}?limit=x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn nodes_and_tables_page_too() {
    let api = Api::new();
    for i in 0..3 {
        let node = json!({
            "apiVersion": "kohakuriver/v1",
            "kind": "Node",
            "metadata": {"name": format!("n{i}")},
        });
        let (code, body) = api.json("POST", NODES, &node).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        create(&api, &format!("t{i}"), "a").await;
    }
    let (code, page) = api.get(&format!("{NODES}?limit=2")).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["n0", "n1"]);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!(
            "{NODES}?limit=2&continue={}",
            continue_query(token)
        ))
        .await;
    assert_eq!(names(&rest), ["n2"]);
    assert!(rest["metadata"].get("continue").is_none());

    let mut rows = BTreeMap::new();
    let mut uri = format!("{TASKS}?limit=2");
    loop {
        let request = Request::get(&uri)
            .header(
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .body(Body::empty())
            .unwrap();
        let response = router(api.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let table: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(table["kind"], "Table");
        for row in table["rows"].as_array().unwrap() {
            *rows
                .entry(row["cells"][0].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        match table["metadata"]["continue"].as_str() {
            Some(token) => uri = format!("{TASKS}?limit=2&continue={}", continue_query(token)),
            None => break,
        }
    }
    assert_eq!(
        rows,
        BTreeMap::from([("t0".into(), 1), ("t1".into(), 1), ("t2".into(), 1)])
    );
}

#[tokio::test]
async fn the_remaining_count_follows_the_pages_of_one_list() {
    let api = Api::new();
    for i in 0..10 {
        create(&api, &format!("t{i}"), "a").await;
    }
    let mut uri = format!("{TASKS}?limit=3");
    let mut counts = Vec::new();
    loop {
        let (_, page) = api.get(&uri).await;
        counts.push(page["metadata"]["remainingItemCount"].as_u64());
        // Writes between pages change neither the list nor its count.
        create(&api, &format!("s{}", counts.len()), "a").await;
        delete(&api, &format!("t{}", 9 - counts.len())).await;
        match page["metadata"]["continue"].as_str() {
            Some(token) => uri = format!("{TASKS}?limit=3&continue={}", continue_query(token)),
            None => break,
        }
    }
    assert_eq!(counts, [Some(7), Some(4), Some(1), None]);
}
