//! In-process cluster tests: a real API server on 127.0.0.1:0 (in-memory SQLite), the
//! controllers through their public `run`, and the test acting as a fake node agent.
//!
//! All but the scheduler race run on a paused runtime (`start_paused`): graces, back-offs,
//! deadlines and TTLs pass in virtual time (see `common.rs`), so a loaded machine makes
//! them slower to run, never wrong.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kohakuriver_api::meta::find_condition;
use kohakuriver_api::{ConditionStatus, DesiredState, Node, Task, TaskPhase};
use kohakuriver_client::ListParams;
use kohakuriver_controllers::ControllersConfig;
use kohakuriver_controllers::allocator::Holdings;
use kohakuriver_controllers::clock::Clock;

fn bound(t: &Task) -> bool {
    t.status.phase == TaskPhase::Assigned && t.status.node.is_some()
}

#[tokio::test(start_paused = true)]
async fn queues_then_places_when_capacity_frees() {
    let h = cluster(fast()).await;
    register(&h, Node::test("a").cores(2)).await;
    let _alive = keep_alive(&h, "a");
    h.tasks().create(&Task::test("first").cpu(2)).await.unwrap();
    let first = wait_task(&h, "first", "binding", bound).await;
    assert_eq!(first.status.allocation.as_ref().unwrap().cpus, "0-1");
    let scheduled = find_condition(&first.status.conditions, "Scheduled").unwrap();
    assert_eq!(scheduled.status, ConditionStatus::True);
    assert_eq!(first.status.observed_generation, first.metadata.generation);

    h.tasks()
        .create(&Task::test("second").cpu(2))
        .await
        .unwrap();
    let waiting = wait_task(&h, "second", "Unschedulable", |t| {
        t.status.reason.as_deref() == Some("Unschedulable")
    })
    .await;
    assert_eq!(waiting.status.phase, TaskPhase::Pending);
    let message = waiting.status.message.unwrap();
    assert!(message.contains("a: needs 2 cores, 0 free"), "{message}");

    report(&h, "first", |t| {
        t.status.phase = TaskPhase::Succeeded;
        t.status.exit_code = Some(0);
    })
    .await;
    let second = wait_task(&h, "second", "binding after capacity freed", bound).await;
    assert_eq!(second.status.allocation.unwrap().cpus, "0-1");
    // The finished task gets its health condition filled in.
    let first = wait_task(&h, "first", "Succeeded condition", |t| {
        find_condition(&t.status.conditions, "Succeeded")
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert!(first.status.finished_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_task_for_a_node_not_yet_registered_waits_for_it() {
    let h = cluster(fast()).await;
    h.tasks()
        .create(&Task::test("early").on("late"))
        .await
        .unwrap();
    let waiting = wait_task(&h, "early", "NodeNotFound", |t| {
        t.status.reason.as_deref() == Some("NodeNotFound")
    })
    .await;
    assert_eq!(waiting.status.phase, TaskPhase::Pending);
    let message = waiting.status.message.unwrap();
    assert!(
        message.contains("node \"late\" is not registered"),
        "{message}"
    );
    register(&h, Node::test("late")).await;
    let _alive = keep_alive(&h, "late");
    let bound = wait_task(&h, "early", "binding once the node joined", bound).await;
    assert_eq!(bound.status.node.as_deref(), Some("late"));
}

#[tokio::test(start_paused = true)]
async fn impossible_requests_fail_at_once() {
    let h = cluster(fast()).await;
    register(&h, Node::test("a").numa(2).cores(8).gpus(4)).await;
    let _alive = keep_alive(&h, "a");
    h.tasks()
        .create(&Task::test("greedy").gpus(9))
        .await
        .unwrap();
    h.tasks()
        .create(&Task::test("badgpu").on("a").gpu_ids(&[7]))
        .await
        .unwrap();
    for (name, want) in [
        ("greedy", "a: needs 9 GPUs, has 4"),
        ("badgpu", "a: GPU 7 does not exist (4 GPUs)"),
    ] {
        let t = wait_task(&h, name, "Failed", |t| t.status.phase == TaskPhase::Failed).await;
        assert_eq!(t.status.reason.as_deref(), Some("Unschedulable"));
        let message = t.status.message.unwrap();
        assert!(message.contains(want), "{name}: {message:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_node_loses_its_tasks_and_comes_back() {
    let h = cluster(fast()).await;
    register(&h, Node::test("a").cores(4)).await;
    // Heartbeats until both tasks are bound, so the grace starts only after the bindings
    // were seen: however long binding takes, the node cannot be lost before it.
    let alive = keep_alive(&h, "a");
    h.tasks().create(&Task::test("doomed")).await.unwrap();
    let mut retried = Task::test("retried");
    retried.spec.retries = 1;
    h.tasks().create(&retried).await.unwrap();
    wait_task(&h, "doomed", "binding", bound).await;
    wait_task(&h, "retried", "binding", bound).await;
    alive.cancel();
    // No heartbeat from here on: after the 2 s grace the node is lost.
    wait_until("node a not ready", || async {
        let n = h.nodes().get("a").await.unwrap();
        find_condition(&n.status.conditions, "Ready").is_some_and(|c| {
            c.status == ConditionStatus::False && c.reason.as_deref() == Some("NodeLost")
        })
    })
    .await;
    // No retry left: Unknown, still bound and holding its cores (its container may run).
    let doomed = wait_task(&h, "doomed", "Unknown", |t| {
        t.status.phase == TaskPhase::Unknown
    })
    .await;
    assert_eq!(doomed.status.reason.as_deref(), Some("NodeUnreachable"));
    assert_eq!(doomed.status.node.as_deref(), Some("a"));
    assert!(doomed.holds_allocation());
    assert!(
        find_condition(&doomed.status.conditions, "NodeUnreachable")
            .is_some_and(|c| c.status == ConditionStatus::True)
    );
    let retried = wait_task(&h, "retried", "requeued", |t| {
        t.status.phase == TaskPhase::Pending
    })
    .await;
    assert_eq!(retried.status.node, None);
    assert_eq!(retried.status.attempts, 1);
    assert!(retried.status.retry_after.is_some());
    // The agent comes back: Ready again, and the retried task is placed again.
    let _alive = keep_alive(&h, "a");
    wait_task(&h, "retried", "bound again", bound).await;
    let n = h.nodes().get("a").await.unwrap();
    assert!(n.is_ready());
    // The Unknown task waits for its agent's report; the controllers leave it alone.
    let doomed = h.tasks().get("doomed").await.unwrap();
    assert_eq!(doomed.status.phase, TaskPhase::Unknown);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_task_is_lost_once_its_node_stays_away_past_lost_after() {
    let h = cluster(ControllersConfig {
        lost_after: Duration::from_secs(4),
        ..fast()
    })
    .await;
    register(&h, Node::test("a").cores(4)).await;
    h.tasks().create(&Task::test("doomed")).await.unwrap();
    wait_task(&h, "doomed", "binding", bound).await;
    wait_task(&h, "doomed", "Unknown", |t| {
        t.status.phase == TaskPhase::Unknown
    })
    .await;
    let lost = wait_task(&h, "doomed", "Lost", |t| t.status.phase == TaskPhase::Lost).await;
    assert_eq!(lost.status.reason.as_deref(), Some("NodeLost"));
    let message = lost.status.message.clone().unwrap_or_default();
    assert!(message.contains("--lost-after"), "{message}");
    assert!(!lost.holds_allocation());
}

#[tokio::test(start_paused = true)]
async fn failed_tasks_retry_with_backoff_until_retries_run_out() {
    let h = cluster(fast()).await;
    register(&h, Node::test("a")).await;
    let _alive = keep_alive(&h, "a");
    let mut task = Task::test("flaky");
    task.spec.retries = 1;
    h.tasks().create(&task).await.unwrap();
    wait_task(&h, "flaky", "binding", bound).await;
    let fail = |attempts: u32| {
        let now = h.clock.now();
        move |t: &mut Task| {
            t.status.phase = TaskPhase::Failed;
            t.status.reason = Some("Error".into());
            t.status.exit_code = Some(1);
            t.status.attempts = attempts;
            t.status.started_at = Some(now);
            t.status.finished_at = Some(now);
        }
    };
    report(&h, "flaky", fail(1)).await;
    let requeued = wait_task(&h, "flaky", "requeued", |t| {
        t.status.phase == TaskPhase::Pending
    })
    .await;
    assert_eq!(requeued.status.reason.as_deref(), Some("Retrying"));
    assert_eq!(requeued.status.attempts, 1);
    let after = requeued.status.retry_after.expect("retryAfter set");
    let rebound = wait_task(&h, "flaky", "bound again", bound).await;
    assert!(h.clock.now() >= after, "rebound before its back-off");
    assert_eq!(rebound.status.exit_code, None);
    report(&h, "flaky", fail(2)).await;
    let done = wait_task(&h, "flaky", "Failed condition", |t| {
        find_condition(&t.status.conditions, "Failed")
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(done.status.phase, TaskPhase::Failed);
}

#[tokio::test(start_paused = true)]
async fn deadlines_kill_running_tasks_and_fail_queued_ones() {
    let h = cluster(fast()).await;
    register(&h, Node::test("a").cores(1)).await;
    let _alive = keep_alive(&h, "a");
    let mut slow = Task::test("slow");
    slow.spec.timeout_seconds = Some(1);
    h.tasks().create(&slow).await.unwrap();
    wait_task(&h, "slow", "binding", bound).await;
    // The only core is taken: this one stays queued until its deadline.
    let mut stuck = Task::test("stuck").on("a");
    stuck.spec.timeout_seconds = Some(1);
    h.tasks().create(&stuck).await.unwrap();
    let killed = wait_task(&h, "slow", "desired state Killed", |t| {
        t.spec.state == DesiredState::Killed
    })
    .await;
    assert_eq!(killed.status.reason.as_deref(), Some("DeadlineExceeded"));
    let stuck = wait_task(&h, "stuck", "Failed", |t| {
        t.status.phase == TaskPhase::Failed
    })
    .await;
    assert_eq!(stuck.status.reason.as_deref(), Some("DeadlineExceeded"));
}

#[tokio::test(start_paused = true)]
async fn finished_tasks_are_deleted_after_their_ttl() {
    let h = cluster(fast()).await;
    // No node: the task is killed while queued, finishes, and is deleted one second later.
    let mut task = Task::test("brief").state(DesiredState::Killed);
    task.spec.ttl_seconds_after_finished = Some(1);
    h.tasks().create(&task).await.unwrap();
    let killed = wait_task(&h, "brief", "Killed", |t| {
        t.status.phase == TaskPhase::Killed
    })
    .await;
    assert!(killed.status.finished_at.is_some());
    wait_until("TTL deletion", || async {
        h.tasks().get_opt("brief").await.unwrap().is_none()
    })
    .await;
}

/// Two schedulers over the same queue, racing from divergent views: every task is bound
/// once (the `resourceVersion` precondition) and no core or GPU is ever held twice (the
/// server refuses an overlapping binding with 409; the loser re-reads and decides again).
/// A watcher started before the schedulers checks the holdings after every single event,
/// so even a momentary overlap fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_schedulers_never_double_book() {
    let h = server().await;
    let only_scheduler = ControllersConfig {
        lifecycle: false,
        ..fast()
    };
    for name in ["a", "b", "c"] {
        register(&h, Node::test(name).numa(2).cores(16).gpus(4)).await;
    }
    let shapes = [(1, 0), (2, 1), (4, 0), (3, 2), (1, 1), (0, 1)];
    let mut names = Vec::new();
    for i in 0..60 {
        let (cpu, gpus) = shapes[i % shapes.len()];
        let name = format!("t{i:03}");
        h.tasks()
            .create(&Task::test(&name).cpu(cpu).gpus(gpus))
            .await
            .unwrap();
        names.push(name);
    }
    let observer = observe_holdings(&h).await;
    // Both schedulers start on the same queue at once.
    controllers(&h, only_scheduler.clone());
    controllers(&h, only_scheduler);
    // Finish some tasks while they race, so both keep deciding from moving views.
    for round in 0..3 {
        wait_until("a round of bindings", || async {
            let list = h.tasks().list(&ListParams::default()).await.unwrap();
            list.items
                .iter()
                .filter(|t| t.status.node.is_some())
                .count()
                >= 10 * (round + 1)
        })
        .await;
        let list = h.tasks().list(&ListParams::default()).await.unwrap();
        for t in list.items.iter().filter(|t| bound(t)).take(5) {
            report(&h, &t.metadata.name, |t| {
                t.status.phase = TaskPhase::Succeeded
            })
            .await;
        }
        assert_eq!(overlaps(&h).await, Vec::<String>::new());
    }
    wait_until("every task bound or waiting", || async {
        let list = h.tasks().list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .all(|t| t.status.node.is_some() || t.status.reason.as_deref() == Some("Unschedulable"))
    })
    .await;
    assert_eq!(overlaps(&h).await, Vec::<String>::new());
    // The watcher has seen every binding (the list above), and no overlap at any moment.
    let list = h.tasks().list(&ListParams::default()).await.unwrap();
    let bindings = list
        .items
        .iter()
        .filter(|t| t.status.node.is_some())
        .count();
    wait_until("the watcher to catch up", || async {
        observer.bindings_seen() >= bindings
    })
    .await;
    let seen = observer.stop();
    assert!(
        seen.events > 60,
        "the watcher saw the race: {} events",
        seen.events
    );
    assert!(
        seen.violations.is_empty(),
        "double-booked at some moment: {:#?}",
        seen.violations
    );
}

/// What the watcher saw: how many events, and each overlap with the event that made it.
#[derive(Default)]
struct Seen {
    events: usize,
    bindings: std::collections::BTreeSet<String>,
    violations: Vec<String>,
}

struct Observer {
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Observer {
    fn bindings_seen(&self) -> usize {
        self.seen.lock().unwrap().bindings.len()
    }

    fn stop(self) -> Seen {
        self.stop.cancel();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Watches every task and, after each event, checks that no two holders share a core or
/// GPU on any node (events arrive in revision order, so this is every state the store
/// went through).
async fn observe_holdings(h: &Harness) -> Observer {
    use futures::StreamExt;
    use kohakuriver_client::watcher::Event;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let stop = h.shutdown.child_token();
    let mut events = h.tasks().watcher(ListParams::default());
    // The initial list arrives before the schedulers start.
    let mut tasks: BTreeMap<String, Task> = match events.next().await {
        Some(Ok(Event::Restarted(all))) => all
            .into_iter()
            .map(|t| (t.metadata.name.clone(), t))
            .collect(),
        other => panic!("expected the initial list, got {other:?}"),
    };
    let (record, token) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = token.cancelled() => return,
                event = events.next() => event,
            };
            let what = match event {
                Some(Ok(Event::Restarted(all))) => {
                    tasks = all
                        .into_iter()
                        .map(|t| (t.metadata.name.clone(), t))
                        .collect();
                    "re-list".to_string()
                }
                Some(Ok(Event::Applied(t))) => {
                    let what = format!(
                        "{} at rv {} ({} on {:?})",
                        t.metadata.name,
                        t.metadata.resource_version.unwrap_or(0),
                        t.status.phase,
                        t.status.node
                    );
                    if t.status.node.is_some() {
                        record
                            .lock()
                            .unwrap()
                            .bindings
                            .insert(t.metadata.name.clone());
                    }
                    tasks.insert(t.metadata.name.clone(), t);
                    what
                }
                Some(Ok(Event::Deleted(t))) => {
                    tasks.remove(&t.metadata.name);
                    format!("{} deleted", t.metadata.name)
                }
                Some(Err(_)) => continue,
                None => return,
            };
            let mut seen = record.lock().unwrap();
            seen.events += 1;
            for overlap in holdings_overlaps(tasks.values()) {
                seen.violations.push(format!("after {what}: {overlap}"));
            }
        }
    });
    Observer { seen, stop }
}

fn holdings_overlaps<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
    let mut per_node: BTreeMap<String, Holdings> = BTreeMap::new();
    for t in tasks.filter(|t| t.holds_allocation()) {
        per_node
            .entry(t.status.node.clone().unwrap())
            .or_default()
            .add(&t.metadata.name, t.status.allocation.as_ref().unwrap());
    }
    per_node
        .into_iter()
        .flat_map(|(n, h)| h.overlaps().into_iter().map(move |o| format!("{n}: {o}")))
        .collect()
}

async fn overlaps(h: &Harness) -> Vec<String> {
    let list = h.tasks().list(&ListParams::default()).await.unwrap();
    holdings_overlaps(list.items.iter())
}
