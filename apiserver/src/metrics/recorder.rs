//! [`Recorder`]: the store's side of the metrics. The writer thread hands it every batch it
//! committed, and every write its time; it keeps the [`Census`] and the histograms of
//! scheduling and start latency, the binding counter and the write latency.
//!
//! It runs on the write path, so it does little: a task's phase and node come from the
//! selectable fields the write already extracted; a task's JSON is parsed only when it
//! leaves Assigned for anything but Running or Paused (did the container start?), and a
//! node's for its `lastHeartbeat`. Being fed by the writer after each
//! commit, in revision order, it sees every committed change exactly once, whether the
//! controllers run in this process or elsewhere.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kohakuriver_api::{Node, Resource, Selectable, Task, Timestamp};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;

use super::census::{Census, Change, TaskState};
use crate::store::{Event, EventType};

/// The store's metrics: the census and what the commits observed.
#[derive(Debug)]
pub struct Recorder {
    census: Mutex<Census>,
    /// Created (or re-queued) → bound.
    scheduling: Histogram,
    /// Bound → the container started.
    start: Histogram,
    bindings: Counter,
    /// One write, from its request's queueing to its commit.
    writes: Histogram,
}

/// Latencies of tasks: 5 ms to about 40 minutes.
fn task_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

impl Recorder {
    /// A recorder starting from what the store held when it opened.
    pub fn new(census: Census) -> Recorder {
        Recorder {
            census: Mutex::new(census),
            scheduling: task_buckets(),
            start: task_buckets(),
            bindings: Counter::default(),
            // 100 µs to about 3 s.
            writes: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }

    /// The census, read under its lock (held for the caller's short, synchronous `f`).
    pub fn census<T>(&self, f: impl FnOnce(&Census) -> T) -> T {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Census> {
        // The census is only counts and times; a panic half way through a record leaves at
        // worst one count off, which is better than no metrics.
        self.census.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a batch of events committed at `at`, in revision order.
    pub fn committed(&self, events: &[Event], at: Timestamp) {
        let mut census = self.lock();
        for event in events {
            let observed = if event.kind == Task::KIND {
                record_task(&mut census, event, at)
            } else if event.kind == Node::KIND {
                census.record(
                    Change::Node {
                        name: &node_name(event),
                        heartbeat: heartbeat(&event.body),
                        removed: event.event_type == EventType::Deleted,
                    },
                    at,
                )
            } else {
                continue;
            };
            if observed.bound {
                self.bindings.inc();
            }
            if let Some(queued) = observed.queued {
                self.scheduling.observe(queued.as_secs_f64());
            }
            if let Some(started) = observed.started {
                self.start.observe(started.as_secs_f64());
            }
        }
    }

    /// Records how long one write took, from its queueing to its answer.
    pub fn wrote(&self, took: Duration) {
        self.writes.observe(took.as_secs_f64());
    }

    /// Registers the histograms and the counter (names without the `kohakuriver_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "task_scheduling_latency",
            "Time from a task becoming Pending (created or re-queued) to the commit of its binding",
            Unit::Seconds,
            self.scheduling.clone(),
        );
        registry.register_with_unit(
            "task_start_latency",
            "Time from the commit of a task's binding to the commit of the first report that its container started",
            Unit::Seconds,
            self.start.clone(),
        );
        registry.register(
            "task_bindings",
            "Tasks bound to a node (the rate is bindings per second)",
            self.bindings.clone(),
        );
        registry.register_with_unit(
            "store_write_latency",
            "Time of one store write, from its queueing to its commit",
            Unit::Seconds,
            self.writes.clone(),
        );
    }
}

/// A task's state as its selectable fields tell it; `started` only for Running and Paused
/// (see [`started`] for the rest).
fn task_state(fields: &Selectable) -> TaskState<'_> {
    let phase = fields.field("status.phase").unwrap_or("");
    TaskState {
        phase,
        node: fields.field("status.node").filter(|n| !n.is_empty()),
        started: matches!(phase, "Running" | "Paused"),
    }
}

/// The little of a task's status that says whether its container started.
#[derive(Deserialize)]
struct StartedOnly {
    #[serde(default)]
    status: Option<StartedStatus>,
}

#[derive(Deserialize)]
struct StartedStatus {
    #[serde(default, rename = "startedAt")]
    started_at: Option<serde::de::IgnoredAny>,
}

/// True when the task's JSON says its container started (`status.startedAt`).
fn started(body: &str) -> bool {
    serde_json::from_str::<StartedOnly>(body)
        .ok()
        .and_then(|t| t.status)
        .is_some_and(|s| s.started_at.is_some())
}

fn record_task(census: &mut Census, event: &Event, at: Timestamp) -> super::census::Observed {
    // Live events carry their fields; an event without them (the writer makes none today)
    // is parsed rather than skipped, so no count drifts.
    let parsed = |json: &str| {
        serde_json::from_str::<Task>(json)
            .ok()
            .map(|t| Selectable::of(&t))
    };
    let (body_parsed, prev_parsed);
    let body = match &event.body_fields {
        Some(f) => f,
        None => {
            body_parsed = parsed(&event.body);
            match &body_parsed {
                Some(f) => f,
                None => {
                    tracing::warn!(
                        rv = event.rv,
                        "a committed task does not parse; the metrics skip it"
                    );
                    return Default::default();
                }
            }
        }
    };
    let prev = match (&event.prev_fields, &event.prev) {
        (Some(f), _) => Some(f),
        (None, Some(p)) => {
            prev_parsed = parsed(p);
            prev_parsed.as_ref()
        }
        (None, None) => None,
    };
    let (before, mut after) = match event.event_type {
        EventType::Added => (None, Some(task_state(body))),
        EventType::Modified => (prev.map(task_state), Some(task_state(body))),
        // The last stored state is what leaves.
        EventType::Deleted => (Some(task_state(prev.unwrap_or(body))), None),
    };
    // A task leaving Assigned for anything but Running or Paused may have started anyway
    // (an agent that found its container already exited reports the exit at once): only
    // then is the body parsed, once per attempt at most.
    if let (Some(b), Some(a)) = (before, after.as_mut())
        && b.phase == "Assigned"
        && !matches!(a.phase, "Assigned" | "Running" | "Paused")
    {
        a.started = started(&event.body);
    }
    census.record(
        Change::Task {
            name: body.field("metadata.name").unwrap_or(""),
            before,
            after,
        },
        at,
    )
}

/// The little of a node the census reads.
#[derive(Deserialize)]
struct NodeHeartbeat {
    #[serde(default)]
    metadata: NodeName,
    #[serde(default)]
    status: Option<HeartbeatStatus>,
}

#[derive(Deserialize, Default)]
struct NodeName {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct HeartbeatStatus {
    #[serde(default, rename = "lastHeartbeat")]
    last_heartbeat: Option<Timestamp>,
}

fn parse_node(body: &str) -> Option<NodeHeartbeat> {
    serde_json::from_str(body).ok()
}

fn node_name(event: &Event) -> String {
    match &event.body_fields {
        Some(f) => f.field("metadata.name").unwrap_or("").to_string(),
        None => parse_node(&event.body)
            .map(|n| n.metadata.name)
            .unwrap_or_default(),
    }
}

fn heartbeat(body: &str) -> Option<Timestamp> {
    parse_node(body)?.status?.last_heartbeat
}
