//! The lifecycle loop: acts on the node and task lifecycle decisions.
//!
//! Each round (on cache changes, at most every `sweep_interval`; at the soonest deadline,
//! TTL or heartbeat expiry ahead; and every `resync`) records the heartbeats it sees
//! ([`observe`], on the controllers' monotonic clock), asks [`plan_node`], [`plan_orphan`],
//! [`plan_task`] and then [`plan_dependencies`] about every cached object and carries out
//! the actions, a bounded number at a time. An object acted on is skipped until the cache shows a newer version of
//! it, so one decision is never sent twice; a failed write forgets that mark, so the next
//! round decides again (level-triggered, in the kube-runtime manner).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kohakuriver_api::{
    CONTAINER_FINALIZER, DesiredState, Node, NodeStatus, Resource, Task, TaskPhase,
};
use kohakuriver_client::{Api, Error, ObjectRef};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ControllersConfig;
use crate::dependency::{Outcomes, plan_dependencies};
use crate::node_lifecycle::{Patience, Seen, observe, plan_node, plan_orphan, silence};
use crate::store::Store;
use crate::task_lifecycle::{TaskAction, plan_task};

/// Objects acted on, by (kind, name), with the version acted on.
type Acted = Arc<Mutex<HashMap<(&'static str, String), u64>>>;

fn lock(acted: &Acted) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), u64>> {
    acted.lock().unwrap_or_else(|e| e.into_inner())
}

enum Job {
    Task(Box<Task>, TaskAction),
    Node(Box<Node>, Box<NodeStatus>),
}

/// Runs node and task lifecycle until shutdown.
pub(crate) async fn run(
    tasks: Api<Task>,
    nodes: Api<Node>,
    store: Store,
    config: ControllersConfig,
    shutdown: CancellationToken,
) {
    let mut changes = store.subscribe();
    let acted: Acted = Arc::default();
    // Kept for the life of the loop only: after a (re)start every node gets a full grace.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    // Also for the life of the loop: the last phase of every upstream a task waits for.
    let mut outcomes = Outcomes::default();
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut workers = JoinSet::new();
    loop {
        changes.borrow_and_update();
        let (jobs, wake) = decide(&store, &acted, &mut seen, &mut outcomes, &config);
        for job in jobs {
            let events = config.events.clone();
            let (tasks, nodes, store, acted, permits) = (
                tasks.clone(),
                nodes.clone(),
                store.clone(),
                acted.clone(),
                permits.clone(),
            );
            let span = match &job {
                Job::Task(t, _) => tracing::info_span!(
                    "task",
                    task = %t.metadata.name,
                    node = t.status.node.as_deref().unwrap_or("")
                ),
                Job::Node(n, _) => tracing::info_span!("node", node = %n.metadata.name),
            };
            workers.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    let (key, result) = match job {
                        Job::Task(task, action) => {
                            let key = ("Task", task.metadata.name.clone());
                            let said = (
                                crate::events::task_action(&task, &action),
                                ObjectRef::of(&*task),
                            );
                            let result = act_on_task(&tasks, &store, *task, action).await;
                            if result.is_ok() {
                                crate::events::report(events.as_ref(), "lifecycle", said.1, said.0);
                            }
                            (key, result)
                        }
                        Job::Node(node, status) => {
                            let key = ("Node", node.metadata.name.clone());
                            let said = (
                                crate::events::node_readiness(&node, &status),
                                ObjectRef::of(&*node),
                            );
                            let result = act_on_node(&nodes, &store, *node, *status).await;
                            if result.is_ok() {
                                crate::events::report(
                                    events.as_ref(),
                                    "node-lifecycle",
                                    said.1,
                                    said.0,
                                );
                            }
                            (key, result)
                        }
                    };
                    if let Err(error) = result {
                        if !error.is_conflict() {
                            tracing::warn!(%error, "lifecycle action failed; retrying next round");
                        }
                        lock(&acted).remove(&key);
                        store.notify();
                    }
                }
                .instrument(span),
            );
        }
        while workers.try_join_next().is_some() {}
        let wait = wake.map_or(config.resync, |w| w.min(config.resync));
        if !crate::round::next_round(&mut changes, wait, config.sweep_interval, &shutdown).await {
            break;
        }
    }
    while workers.join_next().await.is_some() {}
}

fn decide(
    store: &Store,
    acted: &Acted,
    seen: &mut HashMap<String, Seen>,
    outcomes: &mut Outcomes,
    config: &ControllersConfig,
) -> (Vec<Job>, Option<Duration>) {
    let now = config.clock.now();
    let mono = config.clock.elapsed();
    let cache = store.lock();
    if !cache.synced() {
        return (Vec::new(), None);
    }
    // Heartbeats as seen now: every cached node, and every node a task is bound to (a
    // deleted node keeps its last sighting). Sightings of nodes nothing refers to go.
    let mut referenced: std::collections::HashSet<&str> =
        cache.nodes.items.keys().map(String::as_str).collect();
    referenced.extend(
        cache
            .tasks
            .items
            .values()
            .filter_map(|t| t.status.node.as_deref()),
    );
    seen.retain(|name, _| referenced.contains(name.as_str()));
    for name in referenced {
        let updated = observe(
            seen.get(name),
            cache.nodes.items.get(name).map(|n| &**n),
            mono,
        );
        seen.insert(name.to_string(), updated);
    }
    let silent = |name: &str| seen.get(name).map_or(Duration::ZERO, |s| silence(s, mono));
    let mut acted = lock(acted);
    let mut wake: Option<Duration> = None;
    let mut soon = |d: Option<Duration>| {
        if let Some(d) = d {
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
    };
    let mut jobs = Vec::new();
    acted.retain(|(kind, name), rv| match *kind {
        "Task" => cache
            .tasks
            .items
            .get(name)
            .is_some_and(|t| t.resource_version() == *rv),
        _ => cache
            .nodes
            .items
            .get(name)
            .is_some_and(|n| n.resource_version() == *rv),
    });
    for node in cache.nodes.items.values() {
        let plan = plan_node(node, silent(&node.metadata.name), now, config.node_grace);
        soon(plan.requeue_after);
        let key = ("Node", node.metadata.name.clone());
        if let (Some(status), false) = (plan.status, acted.contains_key(&key)) {
            acted.insert(key, node.resource_version());
            jobs.push(Job::Node(Box::new(Node::clone(node)), Box::new(status)));
        }
    }
    outcomes.observe(cache.tasks.items.values().map(|t| &**t));
    for task in cache.tasks.items.values() {
        let key = ("Task", task.metadata.name.clone());
        if acted.contains_key(&key) {
            continue;
        }
        let bound_to = task.status.node.as_deref();
        let orphan = bound_to.and_then(|n| {
            let exists = cache.nodes.items.contains_key(n);
            let patience = Patience {
                grace: config.node_grace,
                lost_after: config.lost_after,
            };
            let action = plan_orphan(task, exists, silent(n), now, patience, &config.retry);
            if action.is_none() && !exists {
                // Look again when the grace of a deleted node runs out.
                soon(Some(
                    config.node_grace.saturating_sub(silent(n)) + Duration::from_millis(10),
                ));
            }
            if action.is_none()
                && task.status.phase == TaskPhase::Unknown
                && silent(n) <= config.lost_after
            {
                // Look again when an unreachable task's node has been away too long.
                soon(Some(
                    config.lost_after.saturating_sub(silent(n)) + Duration::from_millis(10),
                ));
            }
            action
        });
        let action = match orphan {
            Some(action) => Some(action),
            None => {
                let plan = plan_task(task, now, &config.retry);
                soon(plan.requeue_after);
                plan.action.or_else(|| {
                    let upstream =
                        |d: &_| outcomes.upstream(&cache.tasks.items, &cache.groups.items, d);
                    plan_dependencies(task, now, upstream).map(TaskAction::status)
                })
            }
        };
        if let Some(action) = action {
            acted.insert(key, task.resource_version());
            jobs.push(Job::Task(Box::new(Task::clone(task)), action));
        }
    }
    (jobs, wake.map(|w| w + Duration::from_millis(5)))
}

async fn act_on_task(
    api: &Api<Task>,
    store: &Store,
    task: Task,
    action: TaskAction,
) -> Result<(), Error> {
    let name = task.metadata.name.clone();
    match action {
        TaskAction::Status(status) => {
            tracing::info!(phase = %status.phase, reason = status.reason.as_deref().unwrap_or(""), "updating status");
            let mut t = task;
            t.status = *status;
            store.upsert_task(api.replace_status(&t).await?);
        }
        TaskAction::Kill { reason, message } => {
            tracing::info!(%reason, "killing task");
            let written = api
                .update_status_with(&name, |t| {
                    if t.status.phase.is_terminal() || t.status.reason.as_deref() == Some(&reason) {
                        return false;
                    }
                    t.status.reason = Some(reason.clone());
                    t.status.message = Some(message.clone());
                    true
                })
                .await?;
            store.upsert_task(written);
            let written = api
                .update_with(&name, |t| {
                    let change = t.spec.state != DesiredState::Killed;
                    t.spec.state = DesiredState::Killed;
                    change
                })
                .await?;
            store.upsert_task(written);
        }
        TaskAction::Delete => {
            tracing::info!("deleting finished task after its TTL");
            // Only this task: a newer one of the same name (deleted and made again since the
            // cache saw it) answers 409 and is left alone.
            let uid = task.metadata.uid.clone().unwrap_or_default();
            match api.delete_uid(&name, &uid).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_conflict() => {
                    tracing::info!("not deleted: the task of this name is a newer one");
                }
                Err(e) => return Err(e),
            }
        }
        TaskAction::RemoveFinalizer => {
            tracing::info!("removing the container finalizer: no agent holds a container for it");
            let mut t = task;
            t.metadata.finalizers.retain(|f| f != CONTAINER_FINALIZER);
            match api.replace(&t).await {
                Ok(stored) => store.upsert_task(stored),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn act_on_node(
    api: &Api<Node>,
    store: &Store,
    node: Node,
    status: NodeStatus,
) -> Result<(), Error> {
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    tracing::info!(ready = ?ready.map(|c| c.status), message = ready.and_then(|c| c.message.as_deref()).unwrap_or(""), "updating node readiness");
    let mut n = node;
    n.status = status;
    store.upsert_node(api.replace_status(&n).await?);
    Ok(())
}
