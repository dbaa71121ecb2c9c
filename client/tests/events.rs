//! The event recorder against a real, in-process API server: repeats fold into one event
//! whose count is exact, writes stay within each object's budget, repeats beyond it are
//! written later rather than lost, and a full queue drops and counts.

use std::time::{Duration, Instant};

use kohakuriver_api::{Event, EventType, Task};
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_client::events::bucket::Budget;
use kohakuriver_client::{Client, ListParams, ObjectRef, Recorder, RecorderOptions};

struct Server {
    client: Client,
    _server: TestServer,
}

async fn server() -> Server {
    let server = spawn_server(kohakuriver_apiserver::Config::insecure()).await;
    Server {
        client: Client::new(&server.url).unwrap(),
        _server: server,
    }
}

fn task_ref(name: &str) -> ObjectRef {
    let mut task = Task::test(name);
    task.metadata.uid = Some(format!("uid-{name}"));
    task.metadata.owner = Some("alice".into());
    ObjectRef::of(&task)
}

/// The events about task `name`.
async fn events_of(client: &Client, name: &str) -> Vec<Event> {
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=Task,involvedObject.name={name}"
    ));
    client.api::<Event>().list(&params).await.unwrap().items
}

/// Waits (with a deadline) until `check` holds for the events of task `name`.
async fn wait_events(client: &Client, name: &str, what: &str, check: impl Fn(&[Event]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events_of(client, name).await;
        if check(&events) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; events now: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 50 failures in a row, with Kubernetes' budget (25 writes at once, one more per 5
/// minutes): one event, count 50 once flushed, and at most 25 writes before the flush.
#[tokio::test]
async fn fifty_repeats_make_one_event_with_count_fifty_within_the_budget() {
    let s = server().await;
    let recorder = Recorder::new(s.client.api::<Event>(), "agent", Some("n1"));
    let task = task_ref("crashy");
    for _ in 0..50 {
        recorder.warning(&task, "Exited", "container exited with code 1");
        recorder.normal(&task, "Started", "started container");
    }
    wait_events(&s.client, "crashy", "both events written", |e| e.len() == 2).await;
    // The budget is shared by the object's two events: at most 25 writes in the burst.
    let before_flush = recorder.stats().writes();
    assert!(before_flush <= 25, "{before_flush} writes before the flush");
    recorder.flush().await;
    let events = events_of(&s.client, "crashy").await;
    let exited: Vec<&Event> = events.iter().filter(|e| e.reason == "Exited").collect();
    assert_eq!(exited.len(), 1, "{events:#?}");
    let exited = exited[0];
    assert_eq!(exited.count, 50);
    assert_eq!(exited.type_, EventType::Warning);
    assert_eq!(exited.metadata.owner.as_deref(), Some("alice"));
    assert_eq!(exited.source.host.as_deref(), Some("n1"));
    assert!(exited.first_timestamp <= exited.last_timestamp);
    let started = events.iter().find(|e| e.reason == "Started").unwrap();
    assert_eq!(started.count, 50);
    assert_eq!(recorder.stats().recorded(), 100);
    assert_eq!(recorder.stats().dropped(), 0);
}

/// Repeats beyond the budget are written once a token comes back, without a flush.
#[tokio::test]
async fn repeats_beyond_the_budget_are_written_later() {
    let s = server().await;
    let options = RecorderOptions {
        budget: Budget {
            burst: 2,
            refill: Duration::from_millis(300),
        },
        ..RecorderOptions::default()
    };
    let recorder = Recorder::with_options(s.client.api::<Event>(), "scheduler", None, options);
    let task = task_ref("slow");
    for _ in 0..30 {
        recorder.warning(&task, "FailedScheduling", "no node has 64 free cores");
    }
    wait_events(&s.client, "slow", "count 30 without a flush", |e| {
        e.len() == 1 && e[0].count == 30
    })
    .await;
    // Far fewer writes than occurrences: the repeats were folded while waiting.
    assert!(
        recorder.stats().writes() < 30,
        "{}",
        recorder.stats().writes()
    );
}

/// Another writer (or this one before a restart) made the event already: the recorder reads
/// it and adds to its count instead of failing or starting over.
#[tokio::test]
async fn an_existing_event_is_read_and_added_to() {
    let s = server().await;
    let task = task_ref("shared");
    let first = Recorder::new(s.client.api::<Event>(), "agent", Some("n1"));
    for _ in 0..3 {
        first.normal(&task, "Pulled", "image present");
    }
    first.flush().await;
    let second = Recorder::new(s.client.api::<Event>(), "agent", Some("n1"));
    for _ in 0..4 {
        second.normal(&task, "Pulled", "image present");
    }
    second.flush().await;
    let events = events_of(&s.client, "shared").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].count, 7);
}

/// A full queue drops occurrences at once and counts them; `record` never waits.
#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let s = server().await;
    let options = RecorderOptions {
        queue: 1,
        ..RecorderOptions::default()
    };
    let recorder = Recorder::with_options(s.client.api::<Event>(), "agent", None, options);
    let task = task_ref("flood");
    // On a current-thread runtime the background task cannot run between these calls.
    for i in 0..100 {
        recorder.normal(&task, "Started", &format!("started {i}"));
    }
    let stats = recorder.stats();
    assert_eq!(stats.recorded() + stats.dropped(), 100);
    assert_eq!(stats.recorded(), 1);
    assert_eq!(stats.dropped(), 99);
    recorder.flush().await;
    assert_eq!(events_of(&s.client, "flood").await.len(), 1);
}
