//! Scheduler benchmark: bindings per second end to end through the API.
//!
//! Starts the real API server in-process (in-memory SQLite) on 127.0.0.1:0, registers
//! KR_BENCH_NODES fake nodes (default 1,000; 8 GPUs, 2 NUMA nodes, 64 cores each), creates
//! KR_BENCH_TASKS pending tasks of mixed shapes (default 10,000; creation rate measured),
//! then starts the controllers and watches the bindings arrive through the API. Prints the
//! binding rate (tasks / time from controller start to the last binding seen by a watch),
//! the p50/p99 latency from controller start to each binding, and checks that no core or
//! GPU is held twice on any node.
//!
//! Then, with the controllers still running, it creates one `TaskGroup` of KR_BENCH_ARRAY
//! members (default 10,000; 0 skips it; one core each) and prints how long the group
//! controller took to create every member and the members' binding rate, for comparison
//! with the single tasks above.
//!
//! Run: `cargo bench -p kohakuriver-controllers --bench scheduler`
//! Quick: `KR_BENCH_NODES=100 KR_BENCH_TASKS=1000 cargo bench -p kohakuriver-controllers --bench scheduler`

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kohakuriver_api::{Node, Task, TaskGroup};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Client, ListParams};
use kohakuriver_controllers::ControllersConfig;
use kohakuriver_controllers::allocator::Holdings;

/// (cores, GPUs) of the task mix: 4.75 cores and 0.5 GPUs per task on average.
const SHAPES: [(u32, u32); 8] = [
    (1, 0),
    (2, 0),
    (4, 0),
    (4, 1),
    (8, 2),
    (1, 0),
    (2, 1),
    (16, 0),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let nodes = env("KR_BENCH_NODES", 1000);
    let tasks = env("KR_BENCH_TASKS", 10_000);
    let server =
        kohakuriver_apiserver::testing::spawn_server(kohakuriver_apiserver::Config::insecure())
            .await;
    let shutdown = server.shutdown.clone();
    let client = Client::new(&server.url).expect("client");
    let node_api = client.api::<Node>();
    let task_api = client.api::<Task>();

    let start = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|i| {
            let api = node_api.clone();
            async move {
                let fixture = Node::test(&format!("node-{i:04}"))
                    .numa(2)
                    .cores(64)
                    .gpus(8)
                    .memory("512G");
                let mut created = api.create(&fixture).await?;
                created.status = fixture.status;
                created.status.record_heartbeat(chrono::Utc::now(), None);
                api.replace_status(&created).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("register nodes");
    println!(
        "registered {nodes} nodes in {:.2}s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    futures::stream::iter(0..tasks)
        .map(|i| {
            let api = task_api.clone();
            let (cpu, gpus) = SHAPES[i % SHAPES.len()];
            async move {
                api.create(&Task::test(&format!("task-{i:05}")).cpu(cpu).gpus(gpus))
                    .await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .expect("create tasks");
    let created = start.elapsed();
    println!(
        "created {tasks} tasks in {:.2}s: {:.0} creates/s",
        created.as_secs_f64(),
        tasks as f64 / created.as_secs_f64()
    );

    // Watch bindings as a client would see them, then start the controllers.
    let mut events = task_api.watcher(ListParams::default());
    match events.next().await {
        Some(Ok(Event::Restarted(_))) => {}
        other => panic!("expected the initial list, got {other:?}"),
    }
    let config = ControllersConfig {
        node_grace: Duration::from_secs(3600),
        ..ControllersConfig::default()
    };
    let started = Instant::now();
    let controllers = tokio::spawn(kohakuriver_controllers::run(
        client.clone(),
        config,
        shutdown.clone(),
    ));
    let mut bound_at: HashMap<String, Duration> = HashMap::new();
    let limit = Duration::from_secs(600);
    while bound_at.len() < tasks && started.elapsed() < limit {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
        let Ok(Some(Ok(event))) = event else { continue };
        let seen = match event {
            Event::Applied(t) => vec![t],
            Event::Restarted(all) => all,
            Event::Deleted(_) => vec![],
        };
        for t in seen {
            if t.status.node.is_some() {
                bound_at
                    .entry(t.metadata.name.clone())
                    .or_insert_with(|| started.elapsed());
            }
        }
    }
    let mut latencies: Vec<Duration> = bound_at.values().copied().collect();
    latencies.sort();
    let total = latencies.last().copied().unwrap_or_default();
    println!(
        "bound {}/{tasks} tasks in {:.2}s: {:.0} bindings/s end to end",
        bound_at.len(),
        total.as_secs_f64(),
        bound_at.len() as f64 / total.as_secs_f64().max(1e-9)
    );
    println!(
        "time from controller start to binding: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );

    let list = task_api.list(&ListParams::default()).await.expect("list");
    let mut per_node: BTreeMap<String, Holdings> = BTreeMap::new();
    for t in list.items.iter().filter(|t| t.holds_allocation()) {
        if let (Some(node), Some(a)) = (&t.status.node, &t.status.allocation) {
            per_node
                .entry(node.clone())
                .or_default()
                .add(&t.metadata.name, a);
        }
    }
    let overlaps: Vec<String> = per_node
        .iter()
        .flat_map(|(n, h)| h.overlaps().into_iter().map(move |o| format!("{n}: {o}")))
        .collect();
    println!(
        "double-booked cores or GPUs: {} (over {} nodes in use)",
        overlaps.len(),
        per_node.len()
    );
    let members = env("KR_BENCH_ARRAY", 10_000);
    if members > 0 {
        bench_array(&client, &mut events, members).await;
    }
    shutdown.cancel();
    let _ = controllers.await;
    let _ = server.stop().await;
    assert!(overlaps.is_empty(), "double booking: {overlaps:?}");
    assert_eq!(bound_at.len(), tasks, "not every task was bound");
}

/// Creates one group of `members` one-core members and watches them being created and
/// bound; prints the creation time and the binding rate.
async fn bench_array(
    client: &Client,
    events: &mut (impl futures::Stream<Item = Result<Event<Task>, kohakuriver_client::Error>> + Unpin),
    members: usize,
) {
    let template = Task::test("member").spec;
    let group = TaskGroup::new("sweep", template, format!("0-{}", members - 1));
    let started = Instant::now();
    client
        .api::<TaskGroup>()
        .create(&group)
        .await
        .expect("create the group");
    let mut created_at: HashMap<String, Duration> = HashMap::new();
    let mut bound_at: HashMap<String, Duration> = HashMap::new();
    let limit = Duration::from_secs(600);
    while bound_at.len() < members && started.elapsed() < limit {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
        let Ok(Some(Ok(event))) = event else { continue };
        let seen = match event {
            Event::Applied(t) => vec![t],
            Event::Restarted(all) => all,
            Event::Deleted(_) => vec![],
        };
        for t in seen
            .into_iter()
            .filter(|t| t.metadata.name.starts_with("sweep-"))
        {
            let now = started.elapsed();
            created_at.entry(t.metadata.name.clone()).or_insert(now);
            if t.status.node.is_some() {
                bound_at.entry(t.metadata.name.clone()).or_insert(now);
            }
        }
    }
    let last = |m: &HashMap<String, Duration>| m.values().max().copied().unwrap_or_default();
    let (created, bound) = (last(&created_at), last(&bound_at));
    println!(
        "array of {members}: every member created in {:.2}s ({:.0} creates/s by the group controller)",
        created.as_secs_f64(),
        created_at.len() as f64 / created.as_secs_f64().max(1e-9)
    );
    println!(
        "array of {members}: bound {}/{members} in {:.2}s: {:.0} bindings/s end to end (from the group's creation)",
        bound_at.len(),
        bound.as_secs_f64(),
        bound_at.len() as f64 / bound.as_secs_f64().max(1e-9)
    );
    assert_eq!(bound_at.len(), members, "not every member was bound");
}
