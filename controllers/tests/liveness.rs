//! Node liveness is judged on the controllers' own clock: an agent whose clock is far off
//! stays Ready, a server that was down longer than the grace does not lose its nodes when
//! it comes back, and a node deleted while its agent still heartbeats keeps its tasks.
//!
//! A node's loss takes the grace period to happen, so "still alive after the grace" is
//! checked against a probe: a second node that never heartbeats. Once the controllers have
//! marked the probe lost, the grace has passed on their clock too.
//!
//! The tests run on a paused runtime (`start_paused`): the grace passes in virtual time
//! (see `common.rs`), so a heartbeat every 200 ms is never 2 s late on a loaded machine.

mod common;

use std::time::Duration;

use common::*;
use kohakuriver_api::meta::find_condition;
use kohakuriver_api::{ConditionStatus, Node, Task, TaskPhase};
use kohakuriver_controllers::clock::Clock;
use tokio_util::sync::CancellationToken;

fn bound(t: &Task) -> bool {
    t.status.phase == TaskPhase::Assigned && t.status.node.is_some()
}

fn lost_by_controllers(n: &Node) -> bool {
    find_condition(&n.status.conditions, "Ready").is_some_and(|c| {
        c.status == ConditionStatus::False && c.reason.as_deref() == Some("NodeLost")
    })
}

/// Heartbeats `name` every 200 ms with timestamps `skew` behind the real time (as an agent
/// with a slow clock writes them), until the token is cancelled.
fn skewed_keep_alive(h: &Harness, name: &str, skew: chrono::Duration) -> CancellationToken {
    let stop = h.shutdown.child_token();
    let (nodes, name, token) = (h.nodes(), name.to_string(), stop.clone());
    let clock = h.clock;
    tokio::spawn(async move {
        while !token.is_cancelled() {
            let _ = nodes
                .update_status_with(&name, |n| {
                    n.status.record_heartbeat(clock.now() - skew, None);
                    true
                })
                .await;
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    stop
}

/// Registers a node that never heartbeats again, and waits until the controllers have
/// declared it lost: by then the grace has passed on their clock.
async fn grace_passed(h: &Harness) {
    register(h, Node::test("probe").cores(1)).await;
    wait_until("the probe node lost", || async {
        lost_by_controllers(&h.nodes().get("probe").await.unwrap())
    })
    .await;
}

async fn assert_alive(h: &Harness, node: &str, task: &str) {
    let n = h.nodes().get(node).await.unwrap();
    assert!(
        !lost_by_controllers(&n),
        "node {node} was declared lost: {:#?}",
        n.status.conditions
    );
    let t = h.tasks().get(task).await.unwrap();
    assert!(
        !t.status.phase.is_terminal() && t.status.node.as_deref() == Some(node),
        "task {task} was taken off {node}: {:#?}",
        t.status
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_whose_clock_is_behind_stays_ready() {
    let h = cluster(fast()).await;
    let skew = chrono::Duration::minutes(20);
    let mut node = Node::test("a").cores(2);
    node.status.record_heartbeat(h.clock.now() - skew, None);
    let mut created = h.nodes().create(&node).await.unwrap();
    created.status = node.status.clone();
    h.nodes().replace_status(&created).await.unwrap();
    let _alive = skewed_keep_alive(&h, "a", skew);
    h.tasks().create(&Task::test("t").on("a")).await.unwrap();
    wait_task(&h, "t", "binding", bound).await;
    grace_passed(&h).await;
    assert_alive(&h, "a", "t").await;
}

#[tokio::test(start_paused = true)]
async fn a_server_down_longer_than_the_grace_keeps_its_nodes() {
    // The state a server finds after an hour down: the node's last heartbeat is an hour
    // old and a task is bound to it. The agent resumes heartbeating once the server is back.
    let h = server().await;
    let hour_ago = h.clock.now() - chrono::Duration::hours(1);
    let mut node = Node::test("a").cores(2);
    node.status.record_heartbeat(hour_ago, None);
    let mut created = h.nodes().create(&node).await.unwrap();
    created.status = node.status.clone();
    h.nodes().replace_status(&created).await.unwrap();
    h.tasks().create(&Task::test("t")).await.unwrap();
    report(&h, "t", |t| {
        t.status.phase = TaskPhase::Assigned;
        t.status.node = Some("a".into());
        t.status.allocation = Some(kohakuriver_api::Allocation {
            cpus: "0".into(),
            ..Default::default()
        });
    })
    .await;
    report(&h, "t", |t| t.status.phase = TaskPhase::Running).await;
    controllers(&h, fast());
    let _alive = keep_alive(&h, "a");
    grace_passed(&h).await;
    assert_alive(&h, "a", "t").await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_node_that_heartbeats_keeps_its_tasks() {
    let config = kohakuriver_controllers::ControllersConfig {
        node_grace: Duration::from_secs(5),
        ..fast()
    };
    let h = cluster(config).await;
    register(&h, Node::test("a").cores(2)).await;
    let alive = keep_alive(&h, "a");
    h.tasks().create(&Task::test("t").on("a")).await.unwrap();
    wait_task(&h, "t", "binding", bound).await;
    // Deleted by someone; the agent's next heartbeat registers it again, as agents do, half
    // a (virtual) second later: well within the 5 s grace, whatever the machine's load.
    alive.cancel();
    h.nodes().delete("a").await.unwrap();
    wait_until("the node gone", || async {
        h.nodes().get_opt("a").await.unwrap().is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    register(&h, Node::test("a").cores(2)).await;
    let _alive = keep_alive(&h, "a");
    grace_passed(&h).await;
    assert_alive(&h, "a", "t").await;
}
