//! Reconciler tests against the recording fake runtime: no Docker needed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_node_agent::DockerConnection;
use kohakuriver_node_agent::fake_runtime::{Call, FakeRuntime};
use kohakuriver_node_agent::runtime::LogStream;
use support::{Cluster, Options, alloc, wait_until};

const T: Duration = Duration::from_secs(20);

async fn cluster(test: &str) -> (Cluster, FakeRuntime) {
    let fake = FakeRuntime::new();
    fake.add_image(support::IMAGE);
    let c = Cluster::start(
        test,
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            ..Default::default()
        },
    )
    .await;
    (c, fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn bound_task_is_created_started_reported_and_cleaned_up() {
    let (c, fake) = cluster("fake-run").await;
    let t = c
        .run(Task::test("a").command(&["echo", "hi"]), alloc("1", None))
        .await;
    c.wait_phase("a", TaskPhase::Running, T).await;
    let spec = fake.spec("kohakuriver-task-a").unwrap();
    assert_eq!(spec.cpuset_cpus.as_deref(), Some("1"));
    fake.set_output(
        "kohakuriver-task-a",
        &[(LogStream::Stdout, "hi\n"), (LogStream::Stderr, "e\n")],
    );
    fake.exit("kohakuriver-task-a", 0, false);
    let done = c.wait_phase("a", TaskPhase::Succeeded, T).await;
    assert_eq!(done.status.exit_code, Some(0));
    wait_until(T, "container removed", || {
        fake.container("kohakuriver-task-a").is_none()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(c.log_file(&t, "stderr")).unwrap(),
        "e\n"
    );
    let creates = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Create(_)))
        .count();
    assert_eq!(creates, 1, "created exactly once: {:?}", fake.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_and_vanished_containers_are_failures_not_reruns() {
    let (c, fake) = cluster("fake-oom").await;
    c.run(Task::test("o").command(&["x"]), alloc("0", None))
        .await;
    c.run(Task::test("v").command(&["x"]), alloc("1", None))
        .await;
    c.wait_phase("o", TaskPhase::Running, T).await;
    c.wait_phase("v", TaskPhase::Running, T).await;
    fake.exit("kohakuriver-task-o", 137, true);
    let o = c.wait_phase("o", TaskPhase::Failed, T).await;
    assert_eq!(o.status.reason.as_deref(), Some("OOMKilled"));
    // Someone removes v's container behind the agent's back.
    use kohakuriver_node_agent::runtime::ContainerRuntime;
    fake.remove("kohakuriver-task-v").await.unwrap();
    let v = c.wait_phase("v", TaskPhase::Failed, T).await;
    assert_eq!(v.status.reason.as_deref(), Some("ContainerLost"));
    let creates = fake
        .calls()
        .iter()
        .filter(|c| **c == Call::Create("kohakuriver-task-v".into()))
        .count();
    assert_eq!(creates, 1);
}
