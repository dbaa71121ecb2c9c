//! The controllers' local cache of tasks, nodes and task groups, fed by the client's watchers.
//!
//! One [`Store`] is shared by every loop of one `run`: a cheap `Clone` handle around a std
//! `Mutex` (it is held only for short, synchronous reads and writes, never across an
//! await) and a `tokio::sync::watch` channel that wakes the loops on every change.
//! Objects are replaced only by a newer `resourceVersion`, so a late write answer never
//! overwrites fresher news from the watch; deleted names keep a tombstone for the same
//! reason. Each object is held in an `Arc`: a round takes its snapshot of thousands of
//! objects by pointer, not by copying each one (copies of 100,000 pending tasks per round
//! once cost the controllers 12 KB of memory per task and most of a core).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use kohakuriver_api::{Node, Resource, Task, TaskGroup};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Api, ListParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How many deleted names keep their tombstone. A tombstone only has to outlive the write
/// answers still in flight for its name, so the newest few thousand are plenty; without a
/// bound every task ever deleted (TTL, `delete`) would stay in memory.
const MAX_TOMBSTONES: usize = 10_000;

/// The cached objects of one kind.
#[derive(Debug)]
pub struct Objects<R> {
    /// By name.
    pub items: HashMap<String, Arc<R>>,
    tombstones: HashMap<String, u64>,
    /// Tombstoned names, oldest first, for dropping the oldest past [`MAX_TOMBSTONES`].
    tombstone_order: VecDeque<String>,
    /// True once the first list arrived.
    pub synced: bool,
}

impl<R> Default for Objects<R> {
    fn default() -> Self {
        Objects {
            items: HashMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            synced: false,
        }
    }
}

impl<R: Resource> Objects<R> {
    /// Stores `obj` unless the cache already holds a newer version (or saw it deleted).
    pub fn upsert(&mut self, obj: R) {
        let rv = obj.resource_version();
        let name = obj.name().to_string();
        if self.tombstones.get(&name).is_some_and(|&t| rv <= t) {
            return;
        }
        match self.items.get(&name) {
            Some(old) if old.resource_version() > rv => {}
            _ => {
                self.items.insert(name, Arc::new(obj));
            }
        }
    }

    /// Keeps a tombstone for `name` deleted at `rv`, dropping the oldest past the bound.
    fn bury(&mut self, name: String, rv: u64) {
        if self.tombstones.insert(name.clone(), rv).is_none() {
            self.tombstone_order.push_back(name);
        }
        while self.tombstone_order.len() > MAX_TOMBSTONES {
            if let Some(oldest) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&oldest);
            }
        }
    }

    fn apply(&mut self, event: Event<R>) {
        match event {
            Event::Restarted(all) => {
                self.items = all
                    .into_iter()
                    .map(|o| (o.name().to_string(), Arc::new(o)))
                    .collect();
                self.tombstones.clear();
                self.tombstone_order.clear();
                self.synced = true;
            }
            Event::Applied(obj) => self.upsert(obj),
            Event::Deleted(obj) => {
                let name = obj.name().to_string();
                let rv = obj.resource_version();
                if self
                    .items
                    .get(&name)
                    .is_none_or(|o| o.resource_version() <= rv)
                {
                    self.items.remove(&name);
                    self.bury(name, rv);
                }
            }
        }
    }
}

/// Everything cached.
#[derive(Debug, Default)]
pub struct Cache {
    /// Tasks by name.
    pub tasks: Objects<Task>,
    /// Nodes by name.
    pub nodes: Objects<Node>,
    /// Task groups by name (fed only when the group controller runs).
    pub groups: Objects<TaskGroup>,
}

impl Cache {
    /// True once both kinds were listed.
    pub fn synced(&self) -> bool {
        self.tasks.synced && self.nodes.synced
    }
}

/// A cheap handle on the shared cache.
#[derive(Clone, Debug)]
pub struct Store {
    cache: Arc<Mutex<Cache>>,
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty, unsynced store.
    pub fn new() -> Store {
        Store {
            cache: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Locks the cache for a short synchronous look or change.
    pub fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes every loop.
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stores a task returned by a write.
    pub fn upsert_task(&self, task: Task) {
        self.lock().tasks.upsert(task);
        self.notify();
    }

    /// Stores a node returned by a write.
    pub fn upsert_node(&self, node: Node) {
        self.lock().nodes.upsert(node);
        self.notify();
    }

    /// Stores a task group returned by a write.
    pub fn upsert_group(&self, group: TaskGroup) {
        self.lock().groups.upsert(group);
        self.notify();
    }

    /// Feeds the store's groups from the task group watcher until shutdown.
    pub async fn feed_groups(self, groups: Api<TaskGroup>, shutdown: CancellationToken) {
        let mut events = groups.watcher(ListParams::default());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(event) = events.next() => match event {
                    Ok(event) => {
                        self.lock().groups.apply(event);
                        self.notify();
                    }
                    Err(error) => tracing::warn!(%error, "task group watch failed; retrying"),
                },
            }
        }
    }

    /// Feeds the store from the task and node watchers until shutdown.
    pub async fn feed(self, tasks: Api<Task>, nodes: Api<Node>, shutdown: CancellationToken) {
        let mut task_events = tasks.watcher(ListParams::default());
        let mut node_events = nodes.watcher(ListParams::default());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(event) = task_events.next() => match event {
                    Ok(event) => {
                        self.lock().tasks.apply(event);
                        self.notify();
                    }
                    Err(error) => tracing::warn!(%error, "task watch failed; retrying"),
                },
                Some(event) = node_events.next() => match event {
                    Ok(event) => {
                        self.lock().nodes.apply(event);
                        self.notify();
                    }
                    Err(error) => tracing::warn!(%error, "node watch failed; retrying"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, rv: u64) -> Task {
        let mut t = Task::test(name);
        t.metadata.resource_version = Some(rv);
        t
    }

    #[test]
    fn a_late_answer_never_brings_back_a_deleted_task() {
        let mut tasks = Objects::<Task>::default();
        tasks.apply(Event::Applied(task("a", 1)));
        tasks.apply(Event::Deleted(task("a", 2)));
        tasks.upsert(task("a", 1));
        assert!(tasks.items.is_empty());
        // The same name made again is a newer object.
        tasks.upsert(task("a", 3));
        assert_eq!(tasks.items["a"].resource_version(), 3);
    }

    #[test]
    fn tombstones_are_bounded_and_the_newest_are_kept() {
        let mut tasks = Objects::<Task>::default();
        let n = MAX_TOMBSTONES + 5;
        for i in 0..n {
            tasks.apply(Event::Deleted(task(&format!("t{i}"), i as u64 + 1)));
        }
        assert_eq!(tasks.tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(tasks.tombstone_order.len(), MAX_TOMBSTONES);
        assert!(!tasks.tombstones.contains_key("t0"));
        let newest = format!("t{}", n - 1);
        tasks.upsert(task(&newest, 1));
        assert!(
            tasks.items.is_empty(),
            "a stale answer for a recent deletion is refused"
        );
    }
}
