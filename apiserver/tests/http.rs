//! Tests over real HTTP on 127.0.0.1:0: concurrency, watches (resume, 410, slow watchers,
//! selectors), persistence across restarts, finalizers and the log proxy.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::get;
use common::{DEADLINE, Server, TASKS, bookmark, rv, summary, task_json};
use kohakuriver_apiserver::Config;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn two_stale_writers_one_wins() {
    let server = Server::start(Config::insecure()).await;
    let created = server.create_task("a").await;
    for round in 0..5 {
        let (_, current) = server.send(Method::GET, &format!("{TASKS}/a"), None).await;
        let write = |priority: i64| {
            let mut body = current.clone();
            body["spec"]["priority"] = json!(priority + round * 10);
            let path = format!("{TASKS}/a");
            let server = &server;
            async move { server.send(Method::PUT, &path, Some(&body)).await.0 }
        };
        let (a, b) = tokio::join!(write(1), write(2));
        let mut codes = [a, b];
        codes.sort();
        assert_eq!(codes, [200, 409], "round {round}");
    }
    let (_, last) = server.send(Method::GET, &format!("{TASKS}/a"), None).await;
    assert_eq!(last["metadata"]["resourceVersion"], "6");
    assert_eq!(last["metadata"]["uid"], created["metadata"]["uid"]);
    server.stop().await;
}

#[tokio::test]
async fn fresh_watch_lists_then_streams() {
    let server = Server::start(Config::insecure()).await;
    server.create_task("a").await;
    let mut watch = server.watch(&format!("{TASKS}?watch=true")).await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "a".into())
    );
    assert_eq!(watch.next().await.unwrap(), bookmark(1, true));
    server.create_task("b").await;
    let event = watch.next_change().await;
    assert_eq!(summary(&event), ("ADDED".into(), "b".into()));
    assert_eq!(event["object"]["metadata"]["resourceVersion"], "2");
    server.stop().await;
}

#[tokio::test]
async fn watch_resumes_after_disconnect_without_gaps_or_repeats() {
    let server = Server::start(Config::insecure()).await;
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion=0"))
        .await;
    assert_eq!(watch.next().await.unwrap()["type"], "BOOKMARK");
    server.create_task("t0").await;
    server.create_task("t1").await;
    let mut last = 0;
    for _ in 0..2 {
        last = rv(&watch.next_change().await["object"]["metadata"]["resourceVersion"]);
    }
    assert_eq!(last, 2);
    drop(watch);
    // Changes while nobody watches.
    for i in 2..6 {
        server.create_task(&format!("t{i}")).await;
    }
    server
        .send(Method::DELETE, &format!("{TASKS}/t0"), None)
        .await;
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion={last}"))
        .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = watch.next_change().await;
        seen.push((
            summary(&event),
            rv(&event["object"]["metadata"]["resourceVersion"]),
        ));
    }
    let want: Vec<((String, String), u64)> = vec![
        (("ADDED".into(), "t2".into()), 3),
        (("ADDED".into(), "t3".into()), 4),
        (("ADDED".into(), "t4".into()), 5),
        (("ADDED".into(), "t5".into()), 6),
        (("DELETED".into(), "t0".into()), 7),
    ];
    assert_eq!(seen, want);
    server.create_task("t6").await;
    let event = watch.next_change().await;
    assert_eq!(summary(&event), ("ADDED".into(), "t6".into()));
    assert_eq!(event["object"]["metadata"]["resourceVersion"], "8");
    server.stop().await;
}

#[tokio::test]
async fn gone_after_compaction_over_http() {
    let server = Server::start(Config {
        watch_history: 3,
        ..Config::insecure()
    })
    .await;
    for i in 0..10 {
        server.create_task(&format!("t{i}")).await;
    }
    let (code, body) = server
        .send(
            Method::GET,
            &format!("{TASKS}?watch=true&resourceVersion=2"),
            None,
        )
        .await;
    assert_eq!(code, 410);
    assert_eq!(body["reason"], "Gone");
    // A list gives a revision to watch from again.
    let (_, list) = server.send(Method::GET, TASKS, None).await;
    let at = rv(&list["metadata"]["resourceVersion"]);
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion={at}"))
        .await;
    server.create_task("after").await;
    assert_eq!(summary(&watch.next_change().await).1, "after");
    server.stop().await;
}

/// A resume the store cannot vouch for is 410, so the watcher lists again: a revision the
/// store never reached (it is another, or a rolled-back one), or another store's id.
#[tokio::test]
async fn a_resume_from_the_future_or_another_store_is_gone() {
    let server = Server::start(Config::insecure()).await;
    server.create_task("a").await;
    let (_, list) = server.send(Method::GET, TASKS, None).await;
    let at = rv(&list["metadata"]["resourceVersion"]);
    let id = list["metadata"]["storeId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{list}");
    let resume = |from: u64, store: &str| {
        format!("{TASKS}?watch=true&resourceVersion={from}&storeId={store}")
    };
    let (code, body) = server.send(Method::GET, &resume(at + 5, &id), None).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Gone")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is newer than the store's revision"),
        "{body}"
    );
    let (code, body) = server
        .send(Method::GET, &resume(at, "0123abcd"), None)
        .await;
    assert_eq!(code, 410, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("storeId \"0123abcd\" is not this server's store"),
        "{body}"
    );
    let mut watch = server.watch(&resume(at, &id)).await;
    server.create_task("b").await;
    assert_eq!(summary(&watch.next_change().await).1, "b");
    server.stop().await;
}

#[tokio::test]
async fn everything_survives_a_restart_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        db_path: Some(dir.path().join("state.db")),
        ..Config::insecure()
    };
    let server = Server::start(config.clone()).await;
    let a = server.create_task("a").await;
    server.create_task("b").await;
    server
        .send(Method::DELETE, &format!("{TASKS}/b"), None)
        .await;
    server.stop().await;

    let server = Server::start(config).await;
    let (_, got) = server.send(Method::GET, &format!("{TASKS}/a"), None).await;
    assert_eq!(got, a);
    let (_, list) = server.send(Method::GET, TASKS, None).await;
    assert_eq!(list["metadata"]["resourceVersion"], "3");
    let c = server.create_task("c").await;
    assert_eq!(
        c["metadata"]["resourceVersion"], "4",
        "the revision counter carries on"
    );
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion=1"))
        .await;
    let events: Vec<_> = [
        watch.next_change().await,
        watch.next_change().await,
        watch.next_change().await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        events,
        [
            ("ADDED".to_string(), "b".to_string()),
            ("DELETED".to_string(), "b".to_string()),
            ("ADDED".to_string(), "c".to_string())
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_does_not_stop_writes() {
    let server = Server::start(Config::insecure()).await;
    // Opened, then not read until every write is done.
    let mut stalled = server.watch(&format!("{TASKS}?watch=true")).await;
    let writers = 4;
    let per_writer = 2000;
    let filler = json!({"filler": "y".repeat(2_000)});
    for w in 0..writers {
        let mut body = task_json(&format!("w{w}"));
        body["metadata"]["annotations"] = filler.clone();
        assert_eq!(server.send(Method::POST, TASKS, Some(&body)).await.0, 201);
    }
    // 8000 events of 2 KB each are far more than the socket buffers plus the live buffer
    // (4096 events) hold, so the stalled watcher falls behind and must catch up from SQLite.
    let started = Instant::now();
    let writes: Vec<_> = (0..writers)
        .map(|w| {
            let client = server.client.clone();
            let url = server.url(&format!("{TASKS}/w{w}/status"));
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let r = client
                        .patch(&url)
                        .header("content-type", "application/merge-patch+json")
                        .body(json!({"status": {"attempts": i + 1}}).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(writes))
        .await
        .expect("writes are not blocked by a stalled watcher");
    eprintln!(
        "{} writes with a stalled watcher: {:?}",
        writers * per_writer,
        started.elapsed()
    );
    // The stalled watcher now reads: every event, in order, none repeated.
    let last = (writers + writers * per_writer) as u64;
    let mut expected = 1;
    while expected <= last {
        let event = stalled.next().await.unwrap();
        match event["type"].as_str().unwrap() {
            "BOOKMARK" => assert!(rv(&event["object"]["metadata"]["resourceVersion"]) < expected),
            _ => {
                assert_eq!(
                    rv(&event["object"]["metadata"]["resourceVersion"]),
                    expected
                );
                expected += 1;
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = Server::start(Config::insecure()).await;
    server.create_task("a").await;
    let (code, bound) = server
        .send(
            Method::PATCH,
            &format!("{TASKS}/a/status"),
            Some(&json!({"status": {"node": "n1", "phase": "Assigned"}})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        bound["metadata"]["finalizers"],
        json!([kohakuriver_api::CONTAINER_FINALIZER])
    );
    let at = rv(&bound["metadata"]["resourceVersion"]);
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion={at}"))
        .await;
    let (code, _) = server
        .send(Method::DELETE, &format!("{TASKS}/a"), None)
        .await;
    assert_eq!(code, 202);
    let marked = watch.next_change().await;
    assert_eq!(marked["type"], "MODIFIED");
    assert!(marked["object"]["metadata"]["deletionTimestamp"].is_string());
    // The agent removes its finalizer once the container is gone.
    let mut done = marked["object"].clone();
    done["metadata"]["finalizers"] = json!([]);
    let (code, last) = server
        .send(Method::PUT, &format!("{TASKS}/a"), Some(&done))
        .await;
    assert_eq!(code, 200, "{last}");
    let deleted = watch.next_change().await;
    assert_eq!(summary(&deleted), ("DELETED".into(), "a".into()));
    let (code, _) = server.send(Method::GET, &format!("{TASKS}/a"), None).await;
    assert_eq!(code, 404);
    server.stop().await;
}

#[tokio::test]
async fn field_selector_on_status_node_for_list_and_watch() {
    let server = Server::start(Config::insecure()).await;
    for name in ["a", "b", "c"] {
        server.create_task(name).await;
    }
    let bind = |name: &'static str, node: &'static str| {
        let server = &server;
        async move {
            let (code, _) = server
                .send(
                    Method::PATCH,
                    &format!("{TASKS}/{name}/status"),
                    Some(&json!({"status": {"node": node}})),
                )
                .await;
            assert_eq!(code, 200);
        }
    };
    bind("a", "n1").await;
    bind("b", "n2").await;
    let (_, list) = server
        .send(
            Method::GET,
            &format!("{TASKS}?fieldSelector=status.node%3Dn1"),
            None,
        )
        .await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    let (_, unbound) = server
        .send(
            Method::GET,
            &format!("{TASKS}?fieldSelector=status.node%3D,status.phase%3DPending"),
            None,
        )
        .await;
    assert_eq!(unbound["items"].as_array().unwrap().len(), 1);

    let mut watch = server
        .watch(&format!(
            "{TASKS}?watch=true&fieldSelector=status.node%3Dn2"
        ))
        .await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "b".into())
    );
    assert_eq!(watch.next().await.unwrap()["type"], "BOOKMARK");
    bind("c", "n1").await;
    bind("c", "n2").await; // Rebinding is not something the scheduler does; it just moves c.
    // c enters the n2 selection: ADDED, as in Kubernetes.
    let event = watch.next_change().await;
    assert_eq!(summary(&event), ("ADDED".into(), "c".into()));
    assert_eq!(event["object"]["status"]["node"], "n2");
    // c leaves it: DELETED, with its new state.
    bind("c", "n1").await;
    let event = watch.next_change().await;
    assert_eq!(summary(&event), ("DELETED".into(), "c".into()));
    assert_eq!(event["object"]["status"]["node"], "n1");
    // A watch resumed from before the moves replays the same transitions from the history.
    let at = rv(&event["object"]["metadata"]["resourceVersion"]);
    let mut resumed = server
        .watch(&format!(
            "{TASKS}?watch=true&fieldSelector=status.node%3Dn2&resourceVersion={}",
            at - 3
        ))
        .await;
    let replayed: Vec<(String, String)> = vec![
        summary(&resumed.next_change().await),
        summary(&resumed.next_change().await),
    ];
    assert_eq!(
        replayed,
        [("ADDED".into(), "c".into()), ("DELETED".into(), "c".into())]
    );
    server.stop().await;
}

#[tokio::test]
async fn bookmarks_arrive_on_idle_watches_and_shutdown_ends_watches() {
    let server = Server::start(Config {
        bookmark_interval: Duration::from_millis(50),
        ..Config::insecure()
    })
    .await;
    server.create_task("a").await;
    let mut watch = server
        .watch(&format!("{TASKS}?watch=true&resourceVersion=1"))
        .await;
    let started = Instant::now();
    assert_eq!(watch.next().await.unwrap(), bookmark(1, false));
    assert!(started.elapsed() < DEADLINE);
    server.token.cancel();
    while watch.next().await.is_some() {}
    server.stop().await;
}

/// A stand-in agent that serves `/v1/tasks/{name}/log`, echoes its query and whether a
/// bearer credential came along, and answers with an HTML content type the proxy must not
/// pass on.
async fn fake_agent() -> (String, tokio::task::JoinHandle<()>) {
    async fn log(
        Path(name): Path<String>,
        Query(q): Query<std::collections::HashMap<String, String>>,
        headers: axum::http::HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if name == "missing" {
            return (axum::http::StatusCode::NOT_FOUND, "no such log").into_response();
        }
        let mut keys: Vec<_> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() == 7 + 64);
        (
            [("content-type", "text/html")],
            format!("log of {name}: {} bearer={bearer}\n", keys.join("&")),
        )
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/tasks/{name}/log", get(log));
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, handle)
}

#[tokio::test]
async fn log_proxy_streams_from_the_agent_and_reports_it_down() {
    let server = Server::start(Config::insecure()).await;
    let (agent, agent_task) = fake_agent().await;
    let node = json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "n1"}});
    assert_eq!(
        server
            .send(Method::POST, "/apis/kohakuriver/v1/nodes", Some(&node))
            .await
            .0,
        201
    );
    let (code, _) = server
        .send(
            Method::PATCH,
            "/apis/kohakuriver/v1/nodes/n1/status",
            Some(&json!({"status": {"address": agent}})),
        )
        .await;
    assert_eq!(code, 200);
    for name in ["a", "missing"] {
        server.create_task(name).await;
        server
            .send(
                Method::PATCH,
                &format!("{TASKS}/{name}/status"),
                Some(&json!({"status": {"node": "n1"}})),
            )
            .await;
    }
    let (_, task) = server.send(Method::GET, &format!("{TASKS}/a"), None).await;
    let uid = task["metadata"]["uid"].as_str().unwrap().to_string();

    let response = server
        .client
        .get(server.url(&format!("{TASKS}/a/log?stream=stderr&follow=true&tail=5")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "text/plain; charset=utf-8");
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        format!("log of a: follow=true&stream=stderr&tail=5&uid={uid} bearer=true\n")
    );

    let (code, body) = server
        .send(Method::GET, &format!("{TASKS}/missing/log"), None)
        .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(
        body["message"], "the agent of node n1: no such log",
        "{body}"
    );

    let (code, body) = server
        .send(Method::GET, &format!("{TASKS}/a/log?stream=both"), None)
        .await;
    assert_eq!(code, 400, "{body}");

    agent_task.abort();
    let _ = agent_task.await;
    let (code, body) = server
        .send(Method::GET, &format!("{TASKS}/a/log"), None)
        .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert!(
        body["message"].as_str().unwrap().contains("node n1"),
        "{body}"
    );

    server.create_task("elsewhere").await;
    server
        .send(
            Method::PATCH,
            &format!("{TASKS}/elsewhere/status"),
            Some(&json!({"status": {"node": "n9"}})),
        )
        .await;
    let (code, body) = server
        .send(Method::GET, &format!("{TASKS}/elsewhere/log"), None)
        .await;
    assert_eq!(code, 503);
    assert!(
        body["message"].as_str().unwrap().contains("node n9"),
        "{body}"
    );
    server.stop().await;
}

/// Measures status writes per second through HTTP with a few concurrent writers (printed;
/// the assertion is loose so a busy machine does not fail it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_write_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config {
        db_path: Some(dir.path().join("bench.db")),
        ..Config::insecure()
    })
    .await;
    let writers = 8;
    let per_writer = 250;
    for w in 0..writers {
        server.create_task(&format!("w{w}")).await;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = server.client.clone();
            let url = server.url(&format!("{TASKS}/w{w}/status"));
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let r = client
                        .patch(&url)
                        .header("content-type", "application/merge-patch+json")
                        .body(
                            json!({"status": {"attempts": i + 1, "phase": "Running"}}).to_string(),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rate = (writers * per_writer) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "status writes through http: {rate:.0}/s ({} in {elapsed:?})",
        writers * per_writer
    );

    // A list of many tasks is fast.
    let bodies: Vec<_> = (0..2000).map(|i| task_json(&format!("l{i}"))).collect();
    for body in &bodies {
        server.send(Method::POST, TASKS, Some(body)).await;
    }
    let started = Instant::now();
    let (code, list) = server.send(Method::GET, TASKS, None).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2000 + writers);
    eprintln!("list of {} tasks: {:?}", 2000 + writers, started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn bookmarks_only_when_asked_and_timeout_seconds_ends_a_watch() {
    let server = Server::start(Config {
        bookmark_interval: Duration::from_millis(20),
        ..Config::insecure()
    })
    .await;
    server.create_task("a").await;
    let mut quiet = server
        .watch(&format!("{TASKS}?watch=true&allowWatchBookmarks=false"))
        .await;
    assert_eq!(
        summary(&quiet.next().await.unwrap()),
        ("ADDED".into(), "a".into())
    );
    // Many bookmark intervals pass; the next line is still the next change.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.create_task("b").await;
    assert_eq!(
        summary(&quiet.next().await.unwrap()),
        ("ADDED".into(), "b".into())
    );

    let started = Instant::now();
    let mut timed = server
        .watch(&format!(
            "{TASKS}?watch=true&resourceVersion=2&timeoutSeconds=1"
        ))
        .await;
    while timed.next().await.is_some() {}
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < DEADLINE,
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn send_initial_events_lists_first_whatever_the_resource_version() {
    let server = Server::start(Config::insecure()).await;
    server.create_task("a").await;
    server.create_task("b").await;
    let mut watch = server
        .watch(&format!(
            "{TASKS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=1"
        ))
        .await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "a".into())
    );
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "b".into())
    );
    assert_eq!(watch.next().await.unwrap(), bookmark(2, true));
    // `sendInitialEvents=false` with no revision starts now, with nothing before.
    let mut now = server
        .watch(&format!("{TASKS}?watch=true&sendInitialEvents=false"))
        .await;
    server.create_task("c").await;
    assert_eq!(
        summary(&now.next_change().await),
        ("ADDED".into(), "c".into())
    );
    server.stop().await;
}
