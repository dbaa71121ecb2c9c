//! Live usage through a real in-process server, with the fake runtime and fake GPUs: the
//! heartbeat carries the GPU readings and the running task's usage (by uid) in the Node's
//! status, and the agent writes the task's `GPUIdle` condition when its GPUs sit idle for
//! the window, and clears it once they are used again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::meta::find_condition;
use kohakuriver_api::usage::GPU_IDLE_CONDITION;
use kohakuriver_api::{Allocation, ConditionStatus, Task, TaskPhase};
use kohakuriver_node_agent::DockerConnection;
use kohakuriver_node_agent::fake_runtime::FakeRuntime;
use kohakuriver_node_agent::gpu::FakeGpus;
use kohakuriver_node_agent::runtime::ContainerUsage;
use support::{Cluster, Options};

const T: Duration = Duration::from_secs(30);

fn idle(task: &Task) -> Option<ConditionStatus> {
    find_condition(&task.status.conditions, GPU_IDLE_CONDITION).map(|c| c.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_rides_on_the_heartbeat_and_idle_gpus_are_flagged_then_cleared() {
    let fake = FakeRuntime::new();
    fake.add_image(support::IMAGE);
    let gpus = FakeGpus::new(2);
    let inventory = gpus.clone();
    let c = Cluster::start(
        "usage-idle",
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            configure: Some(Arc::new(move |config| {
                config.gpu_inventory = Some(Arc::new(inventory.clone()));
                config.usage_interval = Duration::from_secs(1);
                config.idle_gpu_window = Duration::from_secs(3);
            })),
            ..Default::default()
        },
    )
    .await;
    let task = c
        .run(
            Task::test("g").gpus(1).command(&["train"]),
            Allocation {
                cpus: "0".into(),
                numa: None,
                gpus: vec![1],
                memory_bytes: None,
            },
        )
        .await;
    let uid = task.metadata.uid.clone().expect("a uid");
    c.wait_phase("g", TaskPhase::Running, T).await;
    fake.set_usage(
        "kohakuriver-task-g",
        ContainerUsage {
            cpu_nanoseconds: 1_000_000_000,
            memory_bytes: 5 << 20,
        },
    );
    gpus.set(1, 2, 3 << 30);

    // The heartbeat carries both GPUs' readings and the task, by uid, with its GPU's figures.
    let deadline = std::time::Instant::now() + T;
    loop {
        let node = c.nodes.get(&c.node).await.expect("the node");
        let usage = node.status.usage.unwrap_or_default();
        let entry = usage.tasks.iter().find(|t| t.uid == uid);
        if let Some(entry) = entry
            && usage.gpus.len() == 2
            && entry.memory_bytes == 5 << 20
        {
            assert_eq!(entry.gpu_percent, Some(2.0), "{entry:?}");
            assert_eq!(entry.gpu_memory_used_bytes, Some(3 << 30), "{entry:?}");
            assert_eq!(usage.gpus[1].utilization_percent, 2);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the heartbeat never carried the task's usage: {usage:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Idle for the window: flagged, with the GPU named.
    let flagged = c
        .wait_task("g", T, "flagged GPUIdle", |t| {
            idle(t) == Some(ConditionStatus::True)
        })
        .await;
    let condition = find_condition(&flagged.status.conditions, GPU_IDLE_CONDITION).unwrap();
    assert_eq!(condition.reason.as_deref(), Some("GPUIdle"));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap_or("")
            .contains("GPUs 1 "),
        "{condition:?}"
    );
    assert_eq!(flagged.status.phase, TaskPhase::Running);

    // Used again: cleared.
    gpus.set(1, 85, 3 << 30);
    let cleared = c
        .wait_task("g", T, "cleared GPUIdle", |t| {
            idle(t) == Some(ConditionStatus::False)
        })
        .await;
    let condition = find_condition(&cleared.status.conditions, GPU_IDLE_CONDITION).unwrap();
    assert_eq!(condition.reason.as_deref(), Some("GPUBusy"));
}
