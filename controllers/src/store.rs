//! The controllers' local cache of tasks, nodes and task groups, fed by the client's watchers.
//!
//! One [`Store`] is shared by every loop of one `run`: a cheap `Clone` handle around a std
//! `Mutex` (it is held only for short, synchronous reads and writes, never across an
//! await) and a `tokio::sync::watch` channel that wakes the loops on every change.
//! Objects are replaced only by a newer `resourceVersion`, so a late write answer never
//! overwrites fresher news from the watch; deleted names keep a tombstone for the same
//! reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use kohakuriver_api::{Node, Resource, Task, TaskGroup};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Api, ListParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The cached objects of one kind.
#[derive(Debug)]
pub struct Objects<R> {
    /// By name.
    pub items: HashMap<String, R>,
    tombstones: HashMap<String, u64>,
    /// True once the first list arrived.
    pub synced: bool,
}

impl<R> Default for Objects<R> {
    fn default() -> Self {
        Objects {
            items: HashMap::new(),
            tombstones: HashMap::new(),
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
                self.items.insert(name, obj);
            }
        }
    }

    fn apply(&mut self, event: Event<R>) {
        match event {
            Event::Restarted(all) => {
                self.items = all.into_iter().map(|o| (o.name().to_string(), o)).collect();
                self.tombstones.clear();
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
                    self.tombstones.insert(name, rv);
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
