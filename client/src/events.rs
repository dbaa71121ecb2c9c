//! [`Recorder`]: how the controllers and the node agents write events, as client-go's
//! event broadcaster does.
//!
//! `record` never waits: it puts the occurrence on a bounded channel to a background task
//! and, when the channel is full (the server is slow or away), drops it and counts the drop
//! ([`RecorderStats::dropped`]). The background task folds repeats (same object, type,
//! reason, message and source; [`fold`]) into one event named `<object>.<hash>` whose
//! `count` grows and `lastTimestamp` moves: it creates the event, or, when it exists (another
//! writer, or this one before a restart), reads it and adds to its count; a write refused as
//! stale reads again and retries. Writes about one object draw on a token bucket
//! ([`bucket`], 25 at once and one more per 5 minutes by default), so a crash-looping task
//! cannot flood the store: repeats beyond the budget wait in memory, folded, and are written
//! once a token comes back (or by [`Recorder::flush`]), so the count loses nothing.

pub mod bucket;
pub mod fold;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kohakuriver_api::{Event, EventSource, EventType, InvolvedObject, Resource, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::api::Api;
use crate::error::Error;
use bucket::{Bucket, Budget};
use fold::{Aggregate, FoldKey, to_write};

/// How long a key whose write failed waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The object an event is about, with the owner its event is kept under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Kind, name and uid.
    pub involved: InvolvedObject,
    /// The owner of the object (a task's `metadata.owner`), so `--private-tasks` shows
    /// its events only to them.
    pub owner: Option<String>,
}

impl ObjectRef {
    /// The reference to `object`.
    pub fn of<R: Resource>(object: &R) -> ObjectRef {
        ObjectRef {
            involved: InvolvedObject::of(object),
            owner: object.metadata().owner.clone(),
        }
    }
}

/// Settings of a recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Occurrences waiting for the background task; more are dropped (default 1024).
    pub queue: usize,
    /// The write budget of each object (default 25, one more per 5 minutes).
    pub budget: Budget,
    /// Writes in flight at once (default 8).
    pub max_in_flight: usize,
    /// Folded events remembered (default 4096); the oldest fully written are forgotten
    /// first, and a forgotten one is read back from the server on its next repeat.
    pub max_remembered: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            queue: 1024,
            budget: Budget::default(),
            max_in_flight: 8,
            max_remembered: 4096,
        }
    }
}

/// What a recorder did so far.
#[derive(Debug, Default)]
pub struct RecorderStats {
    recorded: AtomicU64,
    dropped: AtomicU64,
    writes: AtomicU64,
    failed: AtomicU64,
}

impl RecorderStats {
    /// Occurrences accepted by `record`.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
    /// Occurrences dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Events written (created or updated).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    /// Writes that failed (they are tried again later).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One occurrence: the object, its fold key and when it happened.
struct Occurrence {
    object: ObjectRef,
    key: FoldKey,
    at: Timestamp,
}

enum Message {
    // Boxed: the queue holds up to `queue` messages, most of them flush-sized otherwise.
    Occurred(Box<Occurrence>),
    Flush(oneshot::Sender<()>),
}

/// A cheap `Clone` handle that records events from one component (and host); clones made
/// with [`Recorder::with_component`] share the background task, its budgets and its queue.
#[derive(Clone, Debug)]
pub struct Recorder {
    source: EventSource,
    queue: mpsc::Sender<Message>,
    stats: Arc<RecorderStats>,
}

impl Recorder {
    /// A recorder writing through `api` as `component` (on `host`, for a node agent), with
    /// the default options. Spawns its background task on the current Tokio runtime; the
    /// task ends once every handle is dropped.
    pub fn new(api: Api<Event>, component: &str, host: Option<&str>) -> Recorder {
        Recorder::with_options(api, component, host, RecorderOptions::default())
    }

    /// As [`Recorder::new`], with `options`.
    pub fn with_options(
        api: Api<Event>,
        component: &str,
        host: Option<&str>,
        options: RecorderOptions,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(RecorderStats::default());
        tokio::spawn(run(api, rx, options, stats.clone()));
        Recorder {
            source: EventSource {
                component: component.to_string(),
                host: host.map(str::to_string),
            },
            queue: tx,
            stats,
        }
    }

    /// A handle reporting as another component, sharing this one's background task.
    pub fn with_component(&self, component: &str) -> Recorder {
        Recorder {
            source: EventSource {
                component: component.to_string(),
                host: self.source.host.clone(),
            },
            ..self.clone()
        }
    }

    /// Records that `reason` happened to `object` now. Never waits: when the queue is full
    /// the occurrence is dropped and counted.
    pub fn record(&self, object: &ObjectRef, type_: EventType, reason: &str, message: &str) {
        let key = FoldKey::new(
            object.involved.clone(),
            type_,
            reason,
            message,
            self.source.clone(),
        );
        let message = Message::Occurred(Box::new(Occurrence {
            object: object.clone(),
            key,
            at: chrono::Utc::now(),
        }));
        match self.queue.try_send(message) {
            Ok(()) => {
                self.stats.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason, "event queue full; event dropped");
            }
        }
    }

    /// A `Normal` event.
    pub fn normal(&self, object: &ObjectRef, reason: &str, message: &str) {
        self.record(object, EventType::Normal, reason, message);
    }

    /// A `Warning` event.
    pub fn warning(&self, object: &ObjectRef, reason: &str, message: &str) {
        self.record(object, EventType::Warning, reason, message);
    }

    /// Writes everything recorded so far, whatever the budgets say, and returns once each
    /// write was answered (or failed); for shutdown and tests.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// What the recorder did so far.
    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }
}

/// The background task's state.
struct Worker {
    api: Api<Event>,
    options: RecorderOptions,
    stats: Arc<RecorderStats>,
    start: tokio::time::Instant,
    aggregates: HashMap<FoldKey, Aggregate>,
    /// Keys with unwritten occurrences, oldest first.
    pending: VecDeque<FoldKey>,
    buckets: HashMap<InvolvedObject, Bucket>,
    in_flight: HashSet<FoldKey>,
    /// Keys whose last write failed, and when to try them again.
    retry_at: HashMap<FoldKey, Duration>,
    writes: JoinSet<(FoldKey, u32, Result<Event, Error>)>,
    flushes: Vec<oneshot::Sender<()>>,
}

async fn run(
    api: Api<Event>,
    mut rx: mpsc::Receiver<Message>,
    options: RecorderOptions,
    stats: Arc<RecorderStats>,
) {
    let mut w = Worker {
        api,
        options,
        stats,
        start: tokio::time::Instant::now(),
        aggregates: HashMap::new(),
        pending: VecDeque::new(),
        buckets: HashMap::new(),
        in_flight: HashSet::new(),
        retry_at: HashMap::new(),
        writes: JoinSet::new(),
        flushes: Vec::new(),
    };
    let mut open = true;
    loop {
        let forced = !w.flushes.is_empty() || !open;
        let wake = w.send_writes(forced);
        if !open && w.writes.is_empty() && w.pending.is_empty() {
            break;
        }
        if forced && w.writes.is_empty() && w.settled() {
            for done in w.flushes.drain(..) {
                let _ = done.send(());
            }
            if !open {
                break;
            }
            continue;
        }
        let sleep = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            message = rx.recv(), if open => match message {
                Some(Message::Occurred(o)) => {
                    let Occurrence { object, key, at } = *o;
                    w.observe(object, key, at);
                }
                Some(Message::Flush(done)) => w.flushes.push(done),
                None => open = false,
            },
            Some(done) = w.writes.join_next(), if !w.writes.is_empty() => match done {
                Ok((key, count, result)) => w.written(key, count, result),
                Err(error) => tracing::warn!(%error, "an event write panicked"),
            },
            () = sleep => {}
        }
    }
}

impl Worker {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// True when nothing is left to write but what failed (a flush does not wait on a
    /// server that is away).
    fn settled(&self) -> bool {
        let now = self.now();
        self.pending
            .iter()
            .all(|k| self.in_flight.contains(k) || self.retry_at.get(k).is_some_and(|&t| t > now))
    }

    fn observe(&mut self, object: ObjectRef, key: FoldKey, at: Timestamp) {
        match self.aggregates.get_mut(&key) {
            Some(aggregate) => {
                let idle = aggregate.unwritten == 0;
                aggregate.repeat(at);
                if idle {
                    self.pending.push_back(key);
                }
            }
            None => {
                self.forget_some();
                self.aggregates
                    .insert(key.clone(), Aggregate::new(object.owner, at));
                self.pending.push_back(key);
            }
        }
    }

    /// Keeps the memory bounded: drops written, idle aggregates (and full buckets) once over
    /// `max_remembered`.
    fn forget_some(&mut self) {
        if self.aggregates.len() < self.options.max_remembered {
            return;
        }
        let in_flight = &self.in_flight;
        self.aggregates
            .retain(|k, a| a.unwritten > 0 || in_flight.contains(k));
        let aggregates = &self.aggregates;
        self.retry_at.retain(|k, _| aggregates.contains_key(k));
        let (budget, now) = (self.options.budget, self.now());
        self.buckets.retain(|_, b| !b.is_full(&budget, now));
    }

    /// Starts the writes the budgets (or a flush: `forced`) allow; answers how long until
    /// the next token of a waiting object.
    fn send_writes(&mut self, forced: bool) -> Option<Duration> {
        let (budget, now) = (self.options.budget, self.now());
        let mut wake: Option<Duration> = None;
        let mut waiting = VecDeque::new();
        while let Some(key) = self.pending.pop_front() {
            if self.in_flight.contains(&key) || self.writes.len() >= self.options.max_in_flight {
                waiting.push_back(key);
                continue;
            }
            // A key whose write failed waits a moment, flush or not, so a server that is
            // away is not asked in a tight loop.
            if let Some(&at) = self.retry_at.get(&key) {
                if at > now {
                    let w = at - now;
                    wake = Some(wake.map_or(w, |x| x.min(w)));
                    waiting.push_back(key);
                    continue;
                }
                self.retry_at.remove(&key);
            }
            let bucket = self
                .buckets
                .entry(key.object().clone())
                .or_insert_with(|| Bucket::full(&budget, now));
            if !forced && !bucket.take(&budget, now) {
                let w = bucket.wait(&budget, now);
                wake = Some(wake.map_or(w, |x| x.min(w)));
                waiting.push_back(key);
                continue;
            }
            let Some(aggregate) = self.aggregates.get(&key) else {
                continue;
            };
            let count = aggregate.unwritten;
            let event = to_write(&key, aggregate, count);
            self.in_flight.insert(key.clone());
            let api = self.api.clone();
            // The key stays out of `pending` until its write is answered (`written`).
            self.writes.spawn(async move {
                let result = write(&api, event, count).await;
                (key, count, result)
            });
        }
        self.pending = waiting;
        wake
    }

    fn written(&mut self, key: FoldKey, count: u32, result: Result<Event, Error>) {
        self.in_flight.remove(&key);
        let Some(aggregate) = self.aggregates.get_mut(&key) else {
            return;
        };
        match result {
            Ok(stored) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                aggregate.unwritten = aggregate.unwritten.saturating_sub(count);
                aggregate.stored = Some(stored);
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, event = %key.event_name(), "event write failed; trying again later");
                // Read afresh next time: the stored copy may be stale or gone.
                aggregate.stored = None;
                self.retry_at
                    .insert(key.clone(), self.start.elapsed() + RETRY_AFTER);
            }
        }
        if aggregate.unwritten > 0 && !self.pending.contains(&key) {
            self.pending.push_back(key);
        }
    }
}

/// Writes `event` (the stored one raised by `added`, or a new one): create, or replace with
/// its `resourceVersion`. An existing event (create answered `AlreadyExists`) or a stale one
/// (`Conflict`) is read again and `added` put on top of its count; a vanished one (expired)
/// is created anew.
async fn write(api: &Api<Event>, event: Event, added: u32) -> Result<Event, Error> {
    let mut event = event;
    for _ in 0..5 {
        let result = if event.metadata.resource_version.is_some() {
            api.replace(&event).await
        } else {
            api.create(&event).await
        };
        match result {
            Ok(stored) => return Ok(stored),
            Err(e) if e.is_already_exists() || e.is_conflict() => {
                let Some(current) = api.get_opt(event.name()).await? else {
                    event.metadata.resource_version = None;
                    continue;
                };
                let last = event.last_timestamp;
                event = Event {
                    count: current.count.saturating_add(added),
                    last_timestamp: current.last_timestamp.max(last),
                    ..current
                };
            }
            Err(e) if e.is_not_found() => {
                event.metadata.resource_version = None;
                event.metadata.uid = None;
                event.count = added.max(1);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Decode(format!(
        "event {} kept changing under this writer; giving up for now",
        event.name()
    )))
}
