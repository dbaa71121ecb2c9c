//! The client against a real, in-process API server (in-memory SQLite on 127.0.0.1:0).

use std::time::Duration;

use futures::StreamExt;
use kohakuriver_api::{ApplyOutcome, Node, Resource, Task, TaskPhase, WatchEvent};
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{ApplyOptions, Client, Deleted, Error, ListParams};

/// A running server and a client for it; the server stops when dropped.
struct Server {
    client: Client,
    _server: TestServer,
}

async fn server_with(config: kohakuriver_apiserver::Config) -> Server {
    let server = spawn_server(config).await;
    Server {
        client: Client::new(&server.url).unwrap(),
        _server: server,
    }
}

async fn server() -> Server {
    server_with(kohakuriver_apiserver::Config::insecure()).await
}

/// The next item of a stream, failing the test after a deadline instead of hanging.
async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no event within 10 s")
        .expect("stream ended")
}

#[tokio::test]
async fn crud_round_trip() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    assert!(!s.client.info().await.unwrap().version.is_empty());

    let created = tasks.create(&Task::test("a").cpu(2)).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.status.phase, TaskPhase::Pending);
    let err = tasks.create(&Task::test("a")).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");

    assert_eq!(tasks.get("a").await.unwrap().spec.resources.cpu, 2);
    assert!(tasks.get_opt("nope").await.unwrap().is_none());
    let err = tasks.get("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.status().is_some());

    let patched = tasks
        .patch(
            "a",
            &serde_json::json!({"metadata": {"labels": {"team": "x"}}}),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels["team"], "x");
    let listed = tasks
        .list(&ListParams::default().labels("team=x"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version >= patched.resource_version());

    // A stale resourceVersion is a conflict.
    let mut stale = created.clone();
    stale.spec.priority = 5;
    assert!(tasks.replace(&stale).await.unwrap_err().is_conflict());

    let status = tasks
        .patch_status("a", &serde_json::json!({"status": {"reason": "Testing"}}))
        .await
        .unwrap();
    assert_eq!(status.status.reason.as_deref(), Some("Testing"));

    match tasks.delete("a").await.unwrap() {
        Deleted::Gone(t) => assert_eq!(t.metadata.name, "a"),
        Deleted::Pending(_) => panic!("no finalizers, so the task goes at once"),
    }
    assert!(tasks.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn apply_reports_created_configured_unchanged_and_dry_run_stores_nothing() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    let dry = ApplyOptions { dry_run: true };
    let t = Task::test("b");
    assert_eq!(
        tasks.apply(&t, &dry).await.unwrap().result,
        ApplyOutcome::Created
    );
    assert!(tasks.get_opt("b").await.unwrap().is_none());
    let wet = ApplyOptions::default();
    assert_eq!(
        tasks.apply(&t, &wet).await.unwrap().result,
        ApplyOutcome::Created
    );
    assert_eq!(
        tasks.apply(&t, &wet).await.unwrap().result,
        ApplyOutcome::Unchanged
    );
    let changed = t.clone().cpu(3);
    assert_eq!(
        tasks.apply(&changed, &wet).await.unwrap().result,
        ApplyOutcome::Configured
    );
    let mut bad = Task::test("c");
    bad.spec.command.clear();
    let err = tasks.apply(&bad, &wet).await.unwrap_err();
    assert!(err.is_invalid(), "{err}");
}

#[tokio::test]
async fn update_with_retries_conflicts_and_can_decline() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    tasks.create(&Task::test("u")).await.unwrap();

    // Writers racing on one object all land: each conflict is retried on a fresh read.
    let mut writers = Vec::new();
    for i in 0..5 {
        let tasks = tasks.clone();
        writers.push(tokio::spawn(async move {
            tasks
                .update_with("u", |t| {
                    t.metadata.labels.insert(format!("w{i}"), "1".into());
                    true
                })
                .await
        }));
    }
    for w in writers {
        w.await.unwrap().unwrap();
    }
    assert_eq!(tasks.get("u").await.unwrap().metadata.labels.len(), 5);

    let before = tasks.get("u").await.unwrap();
    let same = tasks.update_with("u", |_| false).await.unwrap();
    assert_eq!(same.resource_version(), before.resource_version());

    let updated = tasks
        .update_status_with("u", |t| {
            t.status.phase = TaskPhase::Running;
            true
        })
        .await
        .unwrap();
    assert_eq!(updated.status.phase, TaskPhase::Running);
    let err = tasks.update_with("missing", |_| true).await.unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn delete_with_finalizer_is_pending_until_it_is_removed() {
    let s = server().await;
    let nodes = s.client.api::<Node>();
    let mut n = Node::test("n1");
    n.metadata.finalizers = vec!["example.com/hold".into()];
    nodes.create(&n).await.unwrap();
    let deleted = nodes.delete("n1").await.unwrap();
    assert!(matches!(&deleted, Deleted::Pending(n) if n.metadata.is_deleting()));
    nodes
        .update_with("n1", |n| {
            n.metadata.finalizers.clear();
            true
        })
        .await
        .unwrap();
    assert!(nodes.get_opt("n1").await.unwrap().is_none());
}

#[tokio::test]
async fn raw_watch_streams_events_after_a_revision() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    let a = tasks.create(&Task::test("w1")).await.unwrap();
    let mut events = tasks
        .watch(&ListParams::default(), a.resource_version(), None)
        .await
        .unwrap();
    tasks.create(&Task::test("w2")).await.unwrap();
    tasks.delete("w1").await.unwrap();
    match next(&mut events).await.unwrap() {
        WatchEvent::Added { object } => assert_eq!(object.metadata.name, "w2"),
        other => panic!("want ADDED w2, got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        WatchEvent::Deleted { object } => assert_eq!(object.metadata.name, "w1"),
        other => panic!("want DELETED w1, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_lists_then_follows_with_selectors() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    let mut labelled = Task::test("x1");
    labelled.metadata.labels.insert("app".into(), "demo".into());
    tasks.create(&labelled).await.unwrap();
    tasks.create(&Task::test("other")).await.unwrap();

    let mut events = tasks.watcher(ListParams::default().labels("app=demo"));
    match next(&mut events).await.unwrap() {
        Event::Restarted(items) => {
            let names: Vec<_> = items.iter().map(|t| t.name().to_string()).collect();
            assert_eq!(names, ["x1"]);
        }
        other => panic!("want Restarted, got {other:?}"),
    }
    let mut second = labelled.clone();
    second.metadata.name = "x2".into();
    tasks.create(&Task::test("ignored")).await.unwrap();
    tasks.create(&second).await.unwrap();
    match next(&mut events).await.unwrap() {
        Event::Applied(t) => assert_eq!(t.metadata.name, "x2"),
        other => panic!("want Applied x2, got {other:?}"),
    }
    tasks.delete("x1").await.unwrap();
    match next(&mut events).await.unwrap() {
        Event::Deleted(t) => assert_eq!(t.metadata.name, "x1"),
        other => panic!("want Deleted x1, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_before_the_history_is_gone() {
    let config = kohakuriver_apiserver::Config {
        watch_history: 2,
        ..kohakuriver_apiserver::Config::insecure()
    };
    let s = server_with(config).await;
    let tasks = s.client.api::<Task>();
    for i in 0..6 {
        tasks.create(&Task::test(&format!("g{i}"))).await.unwrap();
    }
    let gone = match tasks.watch(&ListParams::default(), 1, None).await {
        Err(e) => e.is_gone(),
        Ok(mut events) => match next(&mut events).await {
            Ok(WatchEvent::Error { object }) => object.code == 410,
            Err(e) => e.is_gone(),
            other => panic!("want 410, got {other:?}"),
        },
    };
    assert!(gone);
}

/// The list names its store; a watch naming another store (the server was restored from a
/// backup since) is 410, which the watcher answers by listing again.
#[tokio::test]
async fn a_watch_naming_another_store_is_gone() {
    let s = server_with(kohakuriver_apiserver::Config::insecure()).await;
    let tasks = s.client.api::<Task>();
    tasks.create(&Task::test("s0")).await.unwrap();
    let list = tasks.list(&ListParams::default()).await.unwrap();
    let id = list.metadata.store_id.clone().expect("a store id");
    let at = list.metadata.resource_version;
    assert!(
        tasks
            .watch(&ListParams::default(), at, Some(&id))
            .await
            .is_ok()
    );
    let e = tasks
        .watch(&ListParams::default(), at, Some("another"))
        .await
        .err()
        .expect("another store is 410");
    assert!(e.is_gone(), "{e}");
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = client.info().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach the KohakuRiver server at http://127.0.0.1:{port} (connection refused)"
        )
    );
}

#[tokio::test]
async fn list_pages_follows_continue_at_one_revision() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    for i in 0..7 {
        tasks.create(&Task::test(&format!("p{i}"))).await.unwrap();
    }
    let mut pages = tasks.list_pages(&ListParams::default(), 3);
    let mut sizes = Vec::new();
    let mut names = Vec::new();
    let mut revisions = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        if sizes.is_empty() {
            // Changes after the first page are not in this list.
            tasks.create(&Task::test("p00")).await.unwrap();
            tasks.delete("p6").await.unwrap();
        }
        sizes.push(page.items.len());
        revisions.push(page.metadata.resource_version);
        names.extend(page.items.into_iter().map(|t| t.metadata.name));
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    assert!(revisions.iter().all(|r| *r == 7), "{revisions:?}");
}

/// `watch_object` follows one object by name: absent, created, changed, deleted, created
/// again; other objects' changes do not show.
#[tokio::test]
async fn watch_object_follows_one_object_through_its_life() {
    let s = server().await;
    let tasks = s.client.api::<Task>();
    let mut states = tasks.watch_object("w");
    assert!(
        next(&mut states).await.unwrap().is_none(),
        "absent at first"
    );
    tasks.create(&Task::test("other")).await.unwrap();
    tasks.create(&Task::test("w").cpu(2)).await.unwrap();
    let created = next(&mut states).await.unwrap().expect("created");
    assert_eq!(created.spec.resources.cpu, 2);
    tasks
        .patch("w", &serde_json::json!({"spec": {"priority": 7}}))
        .await
        .unwrap();
    let changed = next(&mut states).await.unwrap().expect("changed");
    assert_eq!(changed.spec.priority, 7);
    tasks.delete("w").await.unwrap();
    assert!(next(&mut states).await.unwrap().is_none(), "deleted");
    tasks.create(&Task::test("w")).await.unwrap();
    let again = next(&mut states).await.unwrap().expect("created again");
    assert_eq!(again.spec.resources.cpu, 1);
}
