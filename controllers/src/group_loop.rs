//! The group controller's loop: acts on [`plan_group`] and [`plan_orphans`].
//!
//! Each round (on cache changes, at most every `sweep_interval`, and every `resync`) groups
//! the cached tasks by their `kohakuriver.io/group` label, asks [`plan_group`] about every
//! cached group and carries out the plan, a bounded number of writes at a time. Nothing is
//! decided before both the task and the group caches are listed.
//!
//! Creates in flight are expectations, as in Kubernetes' job controller: an index is
//! expected from the moment its create is sent until the cache shows its member; the answer
//! of a create is put into the cache before the expectation is dropped, so no round ever
//! sees neither. A create whose outcome is unknown (a timeout, a lost answer, a 409 because
//! it already exists) stays expected until the watch shows the member or `resync` passes,
//! so the parallelism limit holds even then. Status writes, kills and deletions are marked
//! with the version acted on and skipped until the cache shows a newer one, as in the
//! lifecycle loop. Lock order: the cache, then the expectations, then the marks; a worker
//! never takes the cache's lock while holding another.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kohakuriver_api::group::GROUP_LABEL;
use kohakuriver_api::group::member::{member_index, member_task};
use kohakuriver_api::{DesiredState, Resource, Task, TaskGroup, TaskGroupStatus};
use kohakuriver_client::{Api, Error};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ControllersConfig;
use crate::group::{GroupPlan, name_of, plan_group, plan_orphans};
use crate::store::Store;

/// One expected member: by group uid and index; `None` while its create is in flight,
/// else the monotonic time after which it is no longer expected.
type Expected = Arc<Mutex<HashMap<(String, u32), Option<Duration>>>>;
/// Objects acted on, by (what, name), with the version acted on.
type Acted = Arc<Mutex<HashMap<(&'static str, String), u64>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Job {
    Create(Box<Task>, String, u32),
    Kill(String),
    Status(Box<TaskGroup>, Box<TaskGroupStatus>),
    DeleteOrphan(String, String),
}

/// Everything the workers share.
#[derive(Clone)]
struct Shared {
    tasks: Api<Task>,
    groups: Api<TaskGroup>,
    store: Store,
    expected: Expected,
    acted: Acted,
    config: ControllersConfig,
}

/// Runs the group controller until shutdown.
pub(crate) async fn run(
    tasks: Api<Task>,
    groups: Api<TaskGroup>,
    store: Store,
    config: ControllersConfig,
    shutdown: CancellationToken,
) {
    let mut changes = store.subscribe();
    let shared = Shared {
        tasks,
        groups,
        store,
        expected: Arc::default(),
        acted: Arc::default(),
        config: config.clone(),
    };
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut workers = JoinSet::new();
    loop {
        changes.borrow_and_update();
        for job in decide(&shared) {
            let (shared, permits) = (shared.clone(), permits.clone());
            let span = match &job {
                Job::Create(t, _, _) => tracing::info_span!("group", task = %t.metadata.name),
                Job::Kill(name) | Job::DeleteOrphan(name, _) => {
                    tracing::info_span!("group", task = %name)
                }
                Job::Status(g, _) => tracing::info_span!("group", group = %g.metadata.name),
            };
            workers.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    act(&shared, job).await;
                }
                .instrument(span),
            );
        }
        while workers.try_join_next().is_some() {}
        if !crate::round::next_round(
            &mut changes,
            config.resync,
            config.sweep_interval,
            &shutdown,
        )
        .await
        {
            break;
        }
    }
    while workers.join_next().await.is_some() {}
}

fn decide(shared: &Shared) -> Vec<Job> {
    let now = shared.config.clock.now();
    let mono = shared.config.clock.elapsed();
    let cache = shared.store.lock();
    if !cache.tasks.synced || !cache.groups.synced {
        return Vec::new();
    }
    let mut members: HashMap<&str, Vec<&Task>> = HashMap::new();
    for task in cache.tasks.items.values() {
        if let Some(group) = task.metadata.labels.get(GROUP_LABEL) {
            members.entry(group.as_str()).or_default().push(task);
        }
    }
    let mut expected = lock(&shared.expected);
    let mut acted = lock(&shared.acted);
    acted.retain(|(what, name), rv| match *what {
        "TaskGroup" => cache
            .groups
            .items
            .get(name)
            .is_some_and(|g| g.resource_version() == *rv),
        _ => cache
            .tasks
            .items
            .get(name)
            .is_some_and(|t| t.resource_version() == *rv),
    });
    // An expectation ends when its member is cached, its deadline passed, or its group is
    // gone.
    let uids: HashMap<&str, &TaskGroup> = cache
        .groups
        .items
        .values()
        .filter_map(|g| g.metadata.uid.as_deref().map(|u| (u, &**g)))
        .collect();
    expected.retain(|(uid, index), deadline| {
        let Some(group) = uids.get(uid.as_str()) else {
            return false;
        };
        let cached = cache
            .tasks
            .items
            .get(&name_of(group, *index))
            .is_some_and(|t| member_index(t, group) == Some(*index));
        !cached && deadline.is_none_or(|d| mono < d)
    });
    let mut jobs = Vec::new();
    for group in cache.groups.items.values() {
        let uid = group.metadata.uid.clone().unwrap_or_default();
        let in_flight: BTreeSet<u32> = expected
            .keys()
            .filter(|(u, _)| *u == uid)
            .map(|(_, i)| *i)
            .collect();
        let mine = members
            .get(group.metadata.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        let GroupPlan {
            create,
            kill,
            status,
        } = plan_group(group, mine, &in_flight, now);
        for index in create {
            let name = name_of(group, index);
            if cache.tasks.items.contains_key(&name) {
                // A task of that name that is not this group's member: it cannot be made.
                tracing::warn!(group = %group.metadata.name, task = %name, "a task of the member's name exists and does not belong to the group; not creating it");
                continue;
            }
            expected.insert((uid.clone(), index), None);
            jobs.push(Job::Create(
                Box::new(member_task(group, index)),
                uid.clone(),
                index,
            ));
        }
        for name in kill {
            let Some(task) = cache.tasks.items.get(&name) else {
                continue;
            };
            let key = ("Task", name.clone());
            if let Entry::Vacant(e) = acted.entry(key) {
                e.insert(task.resource_version());
                jobs.push(Job::Kill(name));
            }
        }
        if let Some(status) = status {
            let key = ("TaskGroup", group.metadata.name.clone());
            if let Entry::Vacant(e) = acted.entry(key) {
                e.insert(group.resource_version());
                jobs.push(Job::Status(
                    Box::new(TaskGroup::clone(group)),
                    Box::new(status),
                ));
            }
        }
    }
    for (name, task_uid) in plan_orphans(
        &cache.groups.items,
        cache.tasks.items.values().map(|t| &**t),
    ) {
        let key = ("Orphan", name.clone());
        if let (false, Some(task)) = (acted.contains_key(&key), cache.tasks.items.get(&name)) {
            acted.insert(key, task.resource_version());
            jobs.push(Job::DeleteOrphan(name, task_uid));
        }
    }
    jobs
}

async fn act(shared: &Shared, job: Job) {
    let (key, result): (Option<(&'static str, String)>, Result<(), Error>) = match job {
        Job::Create(task, uid, index) => {
            // Lock order: `decide` holds the cache's lock and then takes the expectations',
            // so the expectations' lock is never held here while the cache's is taken.
            match shared.tasks.create(&task).await {
                Ok(created) => {
                    // Into the cache first, then the expectation goes: a round in between
                    // counts the member twice, never zero times.
                    shared.store.upsert_task(created);
                    lock(&shared.expected).remove(&(uid, index));
                    return;
                }
                Err(e) if e.is_invalid() || e.is_forbidden() => {
                    // Refused for good: not created, so no longer expected.
                    tracing::warn!(error = %e, "member refused");
                    lock(&shared.expected).remove(&(uid, index));
                    (None, Err(e))
                }
                Err(e) => {
                    // Maybe created: expected until the watch shows it or a resync passes.
                    let until = shared.config.clock.elapsed() + shared.config.resync;
                    lock(&shared.expected).insert((uid, index), Some(until));
                    (None, Err(e))
                }
            }
        }
        Job::Kill(name) => {
            tracing::info!("killing member: its group stopped");
            let written = shared
                .tasks
                .update_with(&name, |t| {
                    let change = t.spec.state != DesiredState::Killed;
                    t.spec.state = DesiredState::Killed;
                    change
                })
                .await;
            match written {
                Ok(t) => {
                    shared.store.upsert_task(t);
                    return;
                }
                Err(e) if e.is_not_found() => return,
                Err(e) => (Some(("Task", name)), Err(e)),
            }
        }
        Job::Status(group, status) => {
            let mut g = *group;
            g.status = *status;
            match shared.groups.replace_status(&g).await {
                Ok(stored) => {
                    shared.store.upsert_group(stored);
                    return;
                }
                Err(e) if e.is_not_found() => return,
                Err(e) => (Some(("TaskGroup", g.metadata.name)), Err(e)),
            }
        }
        Job::DeleteOrphan(name, uid) => {
            tracing::info!("deleting member: its group is gone");
            match shared.tasks.delete_uid(&name, &uid).await {
                Ok(_) => return,
                Err(e) if e.is_not_found() || e.is_conflict() => return,
                Err(e) => (Some(("Orphan", name)), Err(e)),
            }
        }
    };
    if let Err(error) = result {
        if !error.is_conflict() {
            tracing::warn!(%error, "group controller action failed; retrying next round");
        }
        if let Some(key) = key {
            lock(&shared.acted).remove(&key);
        }
        shared.store.notify();
    }
}
