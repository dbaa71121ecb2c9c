//! KohakuRiver controllers: scheduler and allocator, node lifecycle, task lifecycle, task
//! groups.
//!
//! Decisions are pure functions with their own unit tests: [`allocator`] (exact cores,
//! NUMA node, GPUs and memory on one node), [`placement`] (filter and score over the
//! cluster), [`queue`] (order, starvation rule, one scheduling round), [`task_lifecycle`]
//! and [`node_lifecycle`] (what to do with one object at a given time), [`dependency`]
//! (waiting for, releasing or failing a task with `dependsOn`), [`retry`]
//! (attempts and back-off), [`group`] (a task group's members to create, kill and count).
//! The loops — [`scheduler`], the lifecycle loop and the group loop — observe the
//! server through the `client` crate's watchers into a shared [`store::Store`], call the
//! decisions and write the results back with `resourceVersion` preconditions.
//!
//! Entry point: [`run`].

pub mod allocator;
pub mod clock;
pub mod dependency;
pub mod event_expiry;
pub mod events;
pub mod group;
mod group_loop;
mod lifecycle;
pub mod node_lifecycle;
pub mod placement;
pub mod queue;
pub mod retry;
mod round;
pub mod scheduler;
pub mod store;
pub mod task_lifecycle;

use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::{Event, Node, Task, TaskGroup};
use kohakuriver_client::{Client, Recorder};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::retry::RetryPolicy;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// A node silent for longer than this is not Ready and its tasks are lost (default 30 s).
    pub node_grace: Duration,
    /// A task with no retry left whose node is silent is Unknown (keeping its resources)
    /// until the node comes back, is deleted, or stays silent this long; then it is Lost
    /// (default 1 h).
    pub lost_after: Duration,
    /// Every loop looks at everything at least this often, even without news (default 10 s).
    /// Also the shortest interval between two rewrites of one task's Unschedulable message.
    pub resync: Duration,
    /// Back-off between retries of a failed task (default 10 s doubling up to 5 min).
    pub retry: RetryPolicy,
    /// Status writes each loop keeps in flight at once (default 64).
    pub max_in_flight: usize,
    /// How many blocked tasks at the head of the queue may reserve a node (default 1); see
    /// [`queue`].
    pub max_reservations: usize,
    /// The lifecycle loop's shortest interval between rounds driven by changes (default
    /// 100 ms), so a burst of events costs one sweep.
    pub sweep_interval: Duration,
    /// The scheduler's wait after a change before its next round (default 10 ms), so the
    /// answers to a batch of bindings cost one round, not one each.
    pub batch_window: Duration,
    /// Run the scheduler (default true).
    pub scheduler: bool,
    /// Run node and task lifecycle (default true).
    pub lifecycle: bool,
    /// Run the task group controller (default true).
    pub groups: bool,
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
    /// Events that last happened longer ago than this are deleted (default 1 h).
    pub event_ttl: Duration,
    /// Where the loops report events; `run` makes one on the controllers' own client when
    /// none is given.
    pub events: Option<Recorder>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            node_grace: Duration::from_secs(30),
            lost_after: Duration::from_secs(3600),
            resync: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_in_flight: 64,
            max_reservations: 1,
            sweep_interval: Duration::from_millis(100),
            batch_window: Duration::from_millis(10),
            scheduler: true,
            lifecycle: true,
            groups: true,
            clock: Arc::new(SystemClock),
            event_ttl: Duration::from_secs(3600),
            events: None,
        }
    }
}

/// Why the controllers stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached before the controllers started.
    #[error("controllers cannot reach the server")]
    Client(#[from] kohakuriver_client::Error),
    /// A loop ended abnormally.
    #[error("a controller loop failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the scheduler and the lifecycle loops against the server behind `client` until
/// `shutdown` is cancelled, then returns once every loop has finished its in-flight writes.
pub async fn run(
    client: Client,
    config: ControllersConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut config = config;
    let events = client.api::<Event>();
    config
        .events
        .get_or_insert_with(|| Recorder::new(events.clone(), "controllers", None));
    let store = store::Store::new();
    let tasks = client.api::<Task>();
    let nodes = client.api::<Node>();
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(
        store
            .clone()
            .feed(tasks.clone(), nodes.clone(), shutdown.clone()),
    );
    if config.scheduler {
        loops.spawn(scheduler::run(
            tasks.clone(),
            store.clone(),
            config.clone(),
            shutdown.clone(),
        ));
    }
    if config.groups {
        let groups = client.api::<TaskGroup>();
        loops.spawn(store.clone().feed_groups(groups.clone(), shutdown.clone()));
        loops.spawn(group_loop::run(
            tasks.clone(),
            groups,
            store.clone(),
            config.clone(),
            shutdown.clone(),
        ));
    }
    if config.lifecycle {
        loops.spawn(event_expiry::run(events, config.clone(), shutdown.clone()));
        loops.spawn(lifecycle::run(
            tasks,
            nodes,
            store,
            config.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!("controllers started");
    while let Some(done) = loops.join_next().await {
        done?;
    }
    // Repeats held back by the events' write budgets are counted in before stopping.
    if let Some(events) = &config.events
        && tokio::time::timeout(Duration::from_secs(5), events.flush())
            .await
            .is_err()
    {
        tracing::warn!("events not all written before the controllers stopped");
    }
    tracing::info!("controllers stopped");
    Ok(())
}
