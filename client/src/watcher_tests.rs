//! The watcher's state machine against a scripted [`Source`], on a paused tokio clock: the
//! fake records every call with the (virtual) time it came, so the tests can check what was
//! asked, from which revision and store, and how long the watcher waited in between.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kohakuriver_api::{Bookmark, List, ListMeta, Status, StatusReason, Task, WatchEvent};
use tokio::time::Instant;

use super::{Event, Events, Source, watcher};
use crate::error::Error;
use crate::params::ListParams;

/// What the watcher asked of its source.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    List,
    Watch { from: u64, store: Option<String> },
}

/// What the fake answers to one call.
enum Reply {
    List(Result<List<Task>, Error>),
    /// A watch connection that delivers these and then closes.
    Closes(Vec<Result<WatchEvent<Task>, Error>>),
    /// A watch connection that delivers these and then stays open.
    Open(Vec<Result<WatchEvent<Task>, Error>>),
    /// A watch refused outright.
    Refused(Error),
}

type Script = Box<dyn FnMut(&Call) -> Reply + Send>;

/// More calls than any of these tests needs: past it the watcher is spinning, and the fake
/// fails the test instead of letting it hang on a clock that never gets to advance.
const SPIN_LIMIT: usize = 1000;

/// A source that answers from a script and records each call with its time since start.
#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    start: Instant,
    calls: Vec<(Duration, Call)>,
    script: Script,
}

impl Fake {
    /// Answers computed from each call (for servers with state, or unending behaviour).
    fn new(script: impl FnMut(&Call) -> Reply + Send + 'static) -> Fake {
        Fake {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                calls: Vec::new(),
                script: Box::new(script),
            })),
        }
    }

    /// Answers in this order; once they run out, a watch stays open and silent.
    fn scripted(replies: Vec<Reply>) -> Fake {
        let mut replies = VecDeque::from(replies);
        Fake::new(move |call| match replies.pop_front() {
            Some(reply) => reply,
            None if matches!(call, Call::Watch { .. }) => Reply::Open(vec![]),
            None => panic!("the script has no answer left for {call:?}"),
        })
    }

    fn answer(&self, call: Call) -> Reply {
        let mut inner = self.inner.lock().unwrap();
        assert!(
            inner.calls.len() < SPIN_LIMIT,
            "{SPIN_LIMIT} calls: the watcher is spinning"
        );
        let at = inner.start.elapsed();
        inner.calls.push((at, call.clone()));
        (inner.script)(&call)
    }

    fn calls(&self) -> Vec<Call> {
        let inner = self.inner.lock().unwrap();
        inner.calls.iter().map(|(_, c)| c.clone()).collect()
    }

    /// When each watch was opened, since the start.
    fn watch_times(&self) -> Vec<Duration> {
        let inner = self.inner.lock().unwrap();
        let watches = inner.calls.iter().filter(|(_, c)| c != &Call::List);
        watches.map(|(at, _)| *at).collect()
    }
}

impl Source<Task> for Fake {
    async fn list(&self, _params: &ListParams) -> Result<List<Task>, Error> {
        match self.answer(Call::List) {
            Reply::List(list) => list,
            _ => panic!("the script answered a list with a watch"),
        }
    }

    async fn watch(
        &self,
        _params: &ListParams,
        resource_version: u64,
        store_id: Option<&str>,
    ) -> Result<Events<Task>, Error> {
        let call = Call::Watch {
            from: resource_version,
            store: store_id.map(str::to_string),
        };
        match self.answer(call) {
            Reply::Closes(events) => Ok(stream::iter(events).boxed()),
            Reply::Open(events) => Ok(stream::iter(events).chain(stream::pending()).boxed()),
            Reply::Refused(err) => Err(err),
            Reply::List(_) => panic!("the script answered a watch with a list"),
        }
    }
}

fn task(name: &str, revision: u64) -> Task {
    let mut task = Task::test(name);
    task.metadata.resource_version = Some(revision);
    task
}

fn listed(revision: u64, store: &str, names: &[&str]) -> Reply {
    Reply::List(Ok(List {
        api_version: "kohakuriver/v1".into(),
        kind: "TaskList".into(),
        metadata: ListMeta {
            store_id: Some(store.into()),
            ..ListMeta::at(revision)
        },
        items: names.iter().map(|n| task(n, revision)).collect(),
    }))
}

fn gone() -> Error {
    Error::Api(Box::new(Status::new(StatusReason::Gone, "too old")))
}

fn modified(name: &str, revision: u64) -> Result<WatchEvent<Task>, Error> {
    Ok(WatchEvent::Modified {
        object: task(name, revision),
    })
}

fn bookmark(revision: u64) -> Result<WatchEvent<Task>, Error> {
    Ok(WatchEvent::Bookmark {
        object: Bookmark::new("Task", revision, false),
    })
}

fn watch(from: u64, store: &str) -> Call {
    Call::Watch {
        from,
        store: Some(store.into()),
    }
}

/// The watcher's next report, rendered short: `restarted a,b`, `applied a@6`, `error …`.
async fn next(w: &mut BoxStream<'static, Result<Event<Task>, Error>>) -> String {
    let event = tokio::time::timeout(Duration::from_secs(3600), w.next())
        .await
        .expect("the watcher reported nothing for an hour")
        .expect("the watcher's stream never ends");
    let at = |t: &Task| {
        format!(
            "{}@{}",
            t.metadata.name,
            t.metadata.resource_version.unwrap()
        )
    };
    match event {
        Ok(Event::Restarted(items)) => {
            let names: Vec<_> = items.iter().map(|t| t.metadata.name.as_str()).collect();
            format!("restarted {}", names.join(","))
        }
        Ok(Event::Applied(t)) => format!("applied {}", at(&t)),
        Ok(Event::Deleted(t)) => format!("deleted {}", at(&t)),
        Err(e) => format!("error {e}"),
    }
}

/// Lets the watcher run until it waits on its source for good (an hour of virtual time),
/// asserting it reports nothing meanwhile.
async fn settle(w: &mut BoxStream<'static, Result<Event<Task>, Error>>) {
    let more = tokio::time::timeout(Duration::from_secs(3600), w.next()).await;
    assert!(more.is_err(), "unexpected report: {:?}", more.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_410_on_opening_the_watch_lists_again_at_once() {
    let fake = Fake::scripted(vec![
        listed(5, "s1", &["a"]),
        Reply::Refused(gone()),
        listed(9, "s1", &["a", "b"]),
    ]);
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted a");
    assert_eq!(next(&mut w).await, "restarted a,b");
    settle(&mut w).await;
    let expected = [Call::List, watch(5, "s1"), Call::List, watch(9, "s1")];
    assert_eq!(fake.calls(), expected);
    // Gone is not a failure: the re-list and the new watch follow without a backoff.
    assert_eq!(fake.watch_times(), [Duration::ZERO, Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn a_410_inside_the_stream_lists_again() {
    let fake = Fake::scripted(vec![
        listed(5, "s1", &["a"]),
        Reply::Open(vec![
            modified("a", 6),
            Ok(WatchEvent::Error {
                object: Status::new(StatusReason::Gone, "too old"),
            }),
        ]),
        listed(9, "s1", &["a", "b"]),
    ]);
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted a");
    assert_eq!(next(&mut w).await, "applied a@6");
    assert_eq!(next(&mut w).await, "restarted a,b");
    settle(&mut w).await;
    let expected = [Call::List, watch(5, "s1"), Call::List, watch(9, "s1")];
    assert_eq!(fake.calls(), expected);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_resumes_from_the_last_bookmark_after_a_backoff() {
    let fake = Fake::scripted(vec![
        listed(5, "s1", &["a"]),
        Reply::Closes(vec![
            modified("a", 6),
            bookmark(12),
            Err(Error::Idle(Duration::from_secs(30))),
        ]),
    ]);
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted a");
    assert_eq!(next(&mut w).await, "applied a@6");
    assert!(
        next(&mut w)
            .await
            .starts_with("error watch stream was silent")
    );
    settle(&mut w).await;
    let expected = [Call::List, watch(5, "s1"), watch(12, "s1")];
    assert_eq!(fake.calls(), expected);
    let reconnect = fake.watch_times()[1];
    let first_step = Duration::from_millis(800);
    assert!(
        first_step / 2 <= reconnect && reconnect <= first_step,
        "reconnected after {reconnect:?}, not within the first backoff step"
    );
}

#[tokio::test(start_paused = true)]
async fn a_clean_close_after_progress_resumes_from_the_bookmark_at_once() {
    let fake = Fake::scripted(vec![listed(5, "s1", &[]), Reply::Closes(vec![bookmark(7)])]);
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted ");
    settle(&mut w).await;
    assert_eq!(fake.calls(), [Call::List, watch(5, "s1"), watch(7, "s1")]);
    assert_eq!(fake.watch_times(), [Duration::ZERO, Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_closes_at_once_backs_off_instead_of_spinning() {
    let fake = Fake::new(|call| match call {
        Call::List => listed(5, "s1", &[]),
        Call::Watch { .. } => Reply::Closes(vec![]),
    });
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted ");
    // A minute of virtual time; a watcher without backoff would hit the fake's spin limit.
    let quiet = tokio::time::timeout(Duration::from_secs(60), w.next()).await;
    assert!(quiet.is_err(), "an empty connection reported something");
    let times = fake.watch_times();
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Steps of 800 ms doubling (each delay in its step's upper half) fit 6 to 8 reconnects
    // after the first in 60 s.
    assert!(
        (7..=9).contains(&times.len()),
        "{} watches in 60 s: {times:?}",
        times.len()
    );
    // Each gap lies in its own step: [step / 2, step], the step doubling from 800 ms up to
    // 30 s. Neighbouring ranges overlap, so a later gap may be shorter than the one before.
    let mut step = Duration::from_millis(800);
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            step / 2 <= *gap && *gap <= step,
            "gap {i} is {gap:?}, outside its backoff step [{:?}, {step:?}]: {gaps:?}",
            step / 2
        );
        step = (step * 2).min(Duration::from_secs(30));
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_store_id_makes_the_watcher_list_again() {
    // A server that refuses a watch naming another store, as the API server does; after the
    // first connection it is restored from a backup whose revisions start lower.
    let mut serving = "s1";
    let fake = Fake::new(move |call| match call {
        Call::List if serving == "s1" => listed(5, "s1", &["a"]),
        Call::List => listed(3, "s2", &["a"]),
        Call::Watch { store, .. } if store.as_deref() != Some(serving) => Reply::Refused(gone()),
        Call::Watch { from: 5, .. } => {
            serving = "s2";
            Reply::Closes(vec![Ok(WatchEvent::Added {
                object: task("b", 6),
            })])
        }
        Call::Watch { .. } => Reply::Open(vec![]),
    });
    let mut w = watcher(fake.clone(), ListParams::default());
    assert_eq!(next(&mut w).await, "restarted a");
    assert_eq!(next(&mut w).await, "applied b@6");
    assert_eq!(next(&mut w).await, "restarted a");
    settle(&mut w).await;
    let expected = [
        Call::List,
        watch(5, "s1"),
        watch(6, "s1"),
        Call::List,
        // The new store's own revision, not the higher one seen in the old store.
        watch(3, "s2"),
    ];
    assert_eq!(fake.calls(), expected);
}
