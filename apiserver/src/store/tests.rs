//! The store's behaviour: revisions, history, compaction, failures, and concurrent
//! writers and readers.

use super::*;
use kohakuriver_api::Task;

type Decision = Result<(Change<Task>, ()), AppError>;

/// Bounds on the number of events only.
fn events(n: u64) -> HistoryBounds {
    HistoryBounds {
        events: n,
        bytes: u64::MAX / 2,
    }
}

fn put(task: Task) -> impl FnOnce(Option<Task>, &dyn crate::admission::Stored) -> Decision {
    move |_, _| Ok((Change::Put(task), ()))
}

#[tokio::test]
async fn writes_take_consecutive_revisions_and_land_in_history() {
    let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
    let (a, w, ()) = store
        .write("a".into(), false, put(Task::test("a")))
        .await
        .unwrap();
    assert_eq!(
        (a.metadata.resource_version, w),
        (Some(1), Written::Created)
    );
    let (a, w, ()) = store.write("a".into(), false, put(a)).await.unwrap();
    assert_eq!(
        (a.metadata.resource_version, w),
        (Some(2), Written::Updated)
    );
    let (events, reached) = store.history("Task", 0, None, 10).await.unwrap();
    assert_eq!(reached, 2);
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::Added, EventType::Modified]);
}

#[tokio::test]
async fn a_resume_from_a_revision_the_store_never_reached_is_gone() {
    let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
    store
        .write("a".into(), false, put(Task::test("a")))
        .await
        .unwrap();
    assert!(store.subscribe_after(1).await.is_ok());
    let e = store.subscribe_after(5).await.err().unwrap();
    assert_eq!(e.0.code, 410);
    assert!(e.0.message.contains("resourceVersion 5 is newer"), "{e}");
}

#[tokio::test]
async fn a_file_store_keeps_its_id_when_durable_and_changes_it_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = |sync| {
        Store::open(Some(&path), sync, events(100))
            .unwrap()
            .id()
            .to_string()
    };
    let first = id(SyncMode::Full);
    assert_eq!(id(SyncMode::Full), first);
    let normal = id(SyncMode::Normal);
    assert_ne!(normal, first);
    assert_eq!(id(SyncMode::Full), normal);
}

#[tokio::test]
async fn compaction_makes_old_versions_gone() {
    let store = Store::open(None, SyncMode::Normal, events(3)).unwrap();
    for i in 0..10 {
        let name = format!("t{i}");
        store
            .write(name.clone(), false, put(Task::test(&name)))
            .await
            .unwrap();
    }
    let e = store.history("Task", 2, None, 10).await.unwrap_err();
    assert_eq!(e.0.code, 410);
    let (events, _) = store.history("Task", 7, None, 10).await.unwrap();
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn the_history_stays_under_its_byte_bound_and_watchers_behind_it_are_gone() {
    // The case that made the bound: label patches on one large task, each of which
    // keeps the whole task twice (as written, and as it was) in the history; 100 of
    // them on a 900 KB task once grew the database by 180 MB.
    let cap = 20 * 1024 * 1024;
    let bounds = HistoryBounds {
        events: 100_000,
        bytes: cap,
    };
    let store = Store::open(None, SyncMode::Normal, bounds).unwrap();
    let big = Task::test("big").command(&[&"x".repeat(900_000)]);
    let (mut task, _, ()) = store.write("big".into(), false, put(big)).await.unwrap();
    for i in 0..100 {
        task.metadata.labels.insert("round".into(), i.to_string());
        (task, _, ()) = store.write("big".into(), false, put(task)).await.unwrap();
        let counted = store.lock().history_bytes;
        assert!(counted <= cap, "after patch {i}: {counted} bytes kept");
    }
    let (kept, counted) = {
        let db = store.lock();
        (db::history_bytes(&db.conn).unwrap(), db.history_bytes)
    };
    assert_eq!(kept, counted, "the running total is the history's size");
    assert!(kept > cap / 2, "compaction went too far: {kept} bytes kept");
    let used = store.with_conn(|c| {
        let pragma = |name: &str| -> u64 {
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .unwrap() as u64
        };
        (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
    });
    assert!(
        used <= cap + compaction::BATCH_BYTES,
        "the database holds {used} bytes"
    );
    // A watcher (or a continue token) from before the compaction point must list again.
    let e = store.history("Task", 1, None, 10).await.unwrap_err();
    assert_eq!(e.0.code, 410, "{e}");
    let e = store.subscribe_after(1).await.err().unwrap();
    assert_eq!(e.0.code, 410, "{e}");
    // One at the compaction point still reads every event after it.
    let compacted = store.lock().compacted;
    let (events, reached) = store.history("Task", compacted, None, 200).await.unwrap();
    assert_eq!(reached, 101);
    assert_eq!(events.len() as u64, 101 - compacted);
}

#[tokio::test]
async fn the_history_size_is_counted_again_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(Some(&path), SyncMode::Full, events(100)).unwrap();
    let (a, ..) = store
        .write("a".into(), false, put(Task::test("a")))
        .await
        .unwrap();
    store.write("a".into(), false, put(a)).await.unwrap();
    let counted = store.lock().history_bytes;
    assert!(counted > 0);
    drop(store);
    let reopened = Store::open(Some(&path), SyncMode::Full, events(100)).unwrap();
    assert_eq!(reopened.lock().history_bytes, counted);
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind() {
    let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
    store
        .write("a".into(), false, put(Task::test("a")))
        .await
        .unwrap();
    // Simulate a full disk: forbid the database from growing.
    store.with_conn(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        c.pragma_update(None, "max_page_count", pages).unwrap();
    });
    let big = Task::test("b").command(&[&"x".repeat(200_000)]);
    let e = store.write("b".into(), false, put(big)).await.unwrap_err();
    assert_eq!(e.0.code, 500);
    assert!(e.0.message.starts_with("database write failed"), "{e}");
    assert_eq!(store.revision(), 1);
    assert!(store.get::<Task>("b".into()).await.unwrap().is_none());
    let (events, _) = store.history("Task", 0, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
}
