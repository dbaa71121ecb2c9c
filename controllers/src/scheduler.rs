//! The scheduler loop: queued tasks in, bindings out.
//!
//! Each round (on every cache change, at the next `retryAfter`, and every `resync` as a
//! safety net) takes the queued tasks in queue order, builds a [`Cluster`] from the cached
//! nodes, the tasks holding allocations and this scheduler's bindings still in flight, runs
//! [`crate::queue::schedule`] and turns the decisions into status writes. The round itself is
//! synchronous and runs on the blocking pool, so a large queue does not stall the runtime.
//!
//! Writes are pipelined: up to `max_in_flight` run concurrently. A binding in flight counts
//! as held until the cache shows the task at a newer `resourceVersion` (then either the
//! binding is visible, or the write failed and released nothing).
//!
//! Architecture Invariant: every binding is a `PUT …/status` carrying the `resourceVersion`
//! the decision was made from, so a task is bound at most once even when two schedulers
//! race. The API server refuses (409) a binding onto cores, GPUs or memory another task on
//! the node holds, in the same critical section as the write, so two schedulers with
//! different views cannot double-book either: one of them gets the 409. Every 409 is
//! treated alike: the task and the node's tasks are read again into the cache (the watch
//! brings the same news a moment later) and the task is decided again next round. Each
//! scheduler counts every binding it sees plus its own in flight, so decisions from a fresh
//! view do not collide in the first place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kohakuriver_api::meta::{ConditionStatus, Timestamp, set_condition};
use kohakuriver_api::{Allocation, Resource, Task, TaskPhase};
use kohakuriver_client::{Api, ListParams, ObjectRef};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ControllersConfig;
use crate::clock::until;
use crate::placement::{Cluster, Decision};
use crate::queue::{is_queued, order, schedule};
use crate::store::Store;

/// A write this scheduler has sent and not yet seen answered.
#[derive(Clone, Debug)]
struct InFlight {
    /// The version the write was decided from.
    rv: u64,
    /// The binding, for writes that bind.
    hold: Option<(String, Allocation)>,
}

type InFlightMap = Arc<Mutex<HashMap<String, InFlight>>>;

fn lock(map: &InFlightMap) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// One status write decided by a round.
struct Write {
    task: Task,
    hold: Option<(String, Allocation)>,
}

/// What a round decided.
struct Round {
    writes: Vec<Write>,
    /// The soonest `retryAfter` still ahead.
    wake: Option<Duration>,
}

/// Runs the scheduler until shutdown.
pub(crate) async fn run(
    api: Api<Task>,
    store: Store,
    config: ControllersConfig,
    shutdown: CancellationToken,
) {
    let mut changes = store.subscribe();
    let in_flight: InFlightMap = Arc::default();
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut writers = JoinSet::new();
    // When each task's waiting message was last written, on the controllers' monotonic clock.
    let mut last_wait_write: HashMap<String, Duration> = HashMap::new();
    loop {
        changes.borrow_and_update();
        let round = {
            let store = store.clone();
            let in_flight = in_flight.clone();
            let config = config.clone();
            let recent = std::mem::take(&mut last_wait_write);
            let result = tokio::task::spawn_blocking(move || {
                let mut recent = recent;
                let round = decide(&store, &in_flight, &config, &mut recent);
                (round, recent)
            })
            .await;
            match result {
                Ok((round, recent)) => {
                    last_wait_write = recent;
                    round
                }
                Err(error) => {
                    tracing::error!(%error, "scheduling round panicked");
                    Round {
                        writes: Vec::new(),
                        wake: None,
                    }
                }
            }
        };
        for write in round.writes {
            let api = api.clone();
            let store = store.clone();
            let in_flight = in_flight.clone();
            let permits = permits.clone();
            let events = config.events.clone();
            let span = tracing::info_span!("bind", task = %write.task.metadata.name, node = write.hold.as_ref().map(|h| h.0.as_str()).unwrap_or(""));
            writers.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    send(&api, &store, &in_flight, write.task, events.as_ref()).await;
                }
                .instrument(span),
            );
        }
        while writers.try_join_next().is_some() {}
        let wait = round.wake.map_or(config.resync, |w| w.min(config.resync));
        if !crate::round::next_round(&mut changes, wait, config.batch_window, &shutdown).await {
            break;
        }
    }
    // Let the writes already sent finish (they are short) so nothing is left half-done.
    while writers.join_next().await.is_some() {}
}

/// Sends one status write and records the answer.
async fn send(
    api: &Api<Task>,
    store: &Store,
    in_flight: &InFlightMap,
    task: Task,
    events: Option<&kohakuriver_client::Recorder>,
) {
    let name = task.metadata.name.clone();
    let rv = task.resource_version();
    match api.replace_status(&task).await {
        Ok(stored) => {
            tracing::debug!(phase = %stored.status.phase, "written");
            let said = crate::events::scheduling(&stored);
            crate::events::report(events, "scheduler", ObjectRef::of(&stored), said);
            store.upsert_task(stored);
        }
        Err(e) if e.is_conflict() => {
            // Either the task changed since it was read, or (for a binding) the server found
            // its cores, GPUs or memory taken by a binding this cache has not seen yet. Read
            // both again so the next round decides from the server's view.
            tracing::debug!(error = %e, "write refused; deciding again");
            if let Ok(Some(fresh)) = api.get_opt(&name).await {
                store.upsert_task(fresh);
            }
            if let Some(node) = task.status.node.as_deref() {
                let on_node = ListParams::default().fields(&format!("status.node={node}"));
                if let Ok(list) = api.list(&on_node).await {
                    let mut cache = store.lock();
                    for t in list.items {
                        cache.tasks.upsert(t);
                    }
                }
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(error) => tracing::warn!(%error, "status write failed; retrying next round"),
    }
    let mut map = lock(in_flight);
    if map.get(&name).is_some_and(|f| f.rv == rv) {
        map.remove(&name);
    }
    drop(map);
    store.notify();
}

/// One round: reads the cache, decides, and records the writes as in flight. The cache
/// and in-flight locks are held only to take a snapshot, not while deciding, so watch
/// events and write answers are not held up by a long round.
fn decide(
    store: &Store,
    in_flight: &InFlightMap,
    config: &ControllersConfig,
    recent: &mut HashMap<String, Duration>,
) -> Round {
    let now = config.clock.now();
    let (queue, mut cluster, wake) = {
        let cache = store.lock();
        if !cache.synced() {
            return Round {
                writes: Vec::new(),
                wake: None,
            };
        }
        let tasks = &cache.tasks.items;
        let in_flight = lock(in_flight);
        // A write in flight for the version cached: that task is decided; its binding is
        // held until the cache shows the task's next version.
        let pending_write = |t: &Task| {
            in_flight
                .get(&t.metadata.name)
                .is_some_and(|f| f.rv == t.resource_version())
        };
        let queue: Vec<Arc<Task>> = tasks
            .values()
            .filter(|t| is_queued(t, now) && !pending_write(t))
            .cloned()
            .collect();
        let wake = tasks
            .values()
            .filter(|t| t.status.phase == TaskPhase::Pending)
            .filter_map(|t| t.status.retry_after)
            .filter(|&t| t > now)
            .min()
            .map(|t| until(now, t) + Duration::from_millis(5));
        recent.retain(|name, _| tasks.contains_key(name));
        if queue.is_empty() {
            return Round {
                writes: Vec::new(),
                wake,
            };
        }
        let mut cluster = Cluster::new(
            cache.nodes.items.values().map(|n| &**n),
            tasks.values().map(|t| &**t),
        );
        for (name, f) in in_flight.iter() {
            let unseen = tasks
                .get(name)
                .is_some_and(|t| t.resource_version() == f.rv);
            if let (true, Some((node, allocation))) = (unseen, &f.hold) {
                cluster.reserve(node, allocation);
            }
        }
        (queue, cluster, wake)
    };
    let mut queue: Vec<&Task> = queue.iter().map(|t| &**t).collect();
    order(&mut queue);
    let decisions = schedule(&mut cluster, &queue, config.max_reservations);
    let mut decided = Vec::new();
    for (task, decision) in queue.iter().zip(decisions) {
        let write = match decision {
            Decision::Bind { node, allocation } => {
                let bound = bind(task, &node, &allocation, now);
                Some(Write {
                    task: bound,
                    hold: Some((node, allocation)),
                })
            }
            Decision::Wait { message, .. } => {
                waiting(task, "Unschedulable", &message, now, recent, config)
            }
            Decision::NoSuchNode { message } => {
                waiting(task, "NodeNotFound", &message, now, recent, config)
            }
            Decision::Fail { message } => Some(Write {
                task: unschedulable(task, &message, now, true),
                hold: None,
            }),
        };
        if let Some(write) = write {
            decided.push(write);
        }
    }
    let mut in_flight = lock(in_flight);
    for write in &decided {
        // The write carries the version it was decided from as its precondition.
        let f = InFlight {
            rv: write.task.resource_version(),
            hold: write.hold.clone(),
        };
        in_flight.insert(write.task.metadata.name.clone(), f);
    }
    drop(in_flight);
    if !decided.is_empty() {
        tracing::debug!(
            queued = queue.len(),
            writes = decided.len(),
            "scheduling round"
        );
    }
    Round {
        writes: decided,
        wake,
    }
}

/// The task bound to `node` with `allocation`: phase Assigned, condition Scheduled=True.
pub fn bind(task: &Task, node: &str, allocation: &Allocation, now: Timestamp) -> Task {
    let mut t = task.clone();
    let s = &mut t.status;
    s.node = Some(node.to_string());
    s.allocation = Some(allocation.clone());
    s.phase = TaskPhase::Assigned;
    s.reason = None;
    s.message = None;
    s.retry_after = None;
    s.observed_generation = task.metadata.generation;
    let gpus: Vec<String> = allocation.gpus.iter().map(u32::to_string).collect();
    let message = format!(
        "bound to {node} (cpus {:?}, GPUs [{}])",
        allocation.cpus,
        gpus.join(",")
    );
    let g = task.metadata.generation;
    set_condition(
        &mut s.conditions,
        "Scheduled",
        ConditionStatus::True,
        Some("Scheduled"),
        Some(&message),
        g,
        now,
    );
    t
}

/// The write that keeps a task queued with `reason` and `message`: the first time, and
/// then at most once per resync while the message changes (so a busy cluster does not
/// rewrite every queued task on every round).
fn waiting(
    task: &Task,
    reason: &str,
    message: &str,
    now: Timestamp,
    recent: &mut HashMap<String, Duration>,
    config: &ControllersConfig,
) -> Option<Write> {
    let mono = config.clock.elapsed();
    let name = &task.metadata.name;
    let same = task.status.reason.as_deref() == Some(reason)
        && task.status.message.as_deref() == Some(message);
    let first = task.status.reason.as_deref() != Some(reason);
    let stale = recent
        .get(name)
        .is_none_or(|at| mono.saturating_sub(*at) >= config.resync);
    (!same && (first || stale)).then(|| {
        recent.insert(name.clone(), mono);
        Write {
            task: queued(task, reason, message, now),
            hold: None,
        }
    })
}

/// The task left queued (or failed, when it can never fit) with reason Unschedulable.
pub fn unschedulable(task: &Task, message: &str, now: Timestamp, never: bool) -> Task {
    if never {
        let mut t = task.clone();
        t.status = crate::retry::finished(task, now, TaskPhase::Failed, "Unschedulable", message);
        set_scheduled_false(&mut t, "Unschedulable", message, now);
        t
    } else {
        queued(task, "Unschedulable", message, now)
    }
}

/// The task still Pending, with `reason` and `message` saying what it waits for.
pub fn queued(task: &Task, reason: &str, message: &str, now: Timestamp) -> Task {
    let mut t = task.clone();
    t.status.reason = Some(reason.to_string());
    t.status.message = Some(message.to_string());
    t.status.observed_generation = task.metadata.generation;
    set_scheduled_false(&mut t, reason, message, now);
    t
}

fn set_scheduled_false(t: &mut Task, reason: &str, message: &str, now: Timestamp) {
    let g = t.metadata.generation;
    set_condition(
        &mut t.status.conditions,
        "Scheduled",
        ConditionStatus::False,
        Some(reason),
        Some(message),
        g,
        now,
    );
}
