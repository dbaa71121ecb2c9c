//! Real-Docker tests of the agent's bounds on its node's disk: the per-task cap on captured
//! output, the expiry of finished tasks' output (`--log-retention`), the removal of the
//! output of tasks deleted while the agent was away, and a full disk failing only the
//! task whose output cannot be written. They fail with a clear message when Docker is not
//! usable, unless `KOHAKURIVER_SKIP_DOCKER_TESTS=1`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_node_agent::log_capture::{LogStore, cut_marker};
use support::{Cluster, Options, alloc, docker_inspect, wait_until};

const T: Duration = Duration::from_secs(90);

fn sh(name: &str, script: &str) -> Task {
    Task::test(name).command(&["sh", "-c", script])
}

fn condition(t: &Task, type_: &str) -> Option<(String, String)> {
    t.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn with(
    configure: impl Fn(&mut kohakuriver_node_agent::AgentConfig) + Send + Sync + 'static,
) -> Options {
    Options {
        configure: Some(Arc::new(configure)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_cap_is_cut_with_a_marker_and_the_task_still_finishes() {
    if !support::docker_ready() {
        return;
    }
    const CAP: u64 = 1 << 20;
    let c = Cluster::start("logcap", with(|c| c.max_log_bytes_per_task = CAP)).await;
    let logcap = support::unique_name("logcap");
    // 20 MB through a pipe that is only read: the task ends only if the agent keeps
    // draining its output past the cap.
    let t = c
        .run(
            sh(&logcap, "yes kohakuriver | head -c 20000000; echo done >&2"),
            alloc("0", None),
        )
        .await;
    let done = c.wait_phase(&logcap, TaskPhase::Succeeded, T).await;
    let (reason, message) = condition(&done, "LogsTruncated").expect("condition LogsTruncated");
    assert_eq!(reason, "LogLimit");
    assert!(message.contains("--max-log-bytes-per-task"), "{message}");
    assert!(message.contains(&CAP.to_string()), "{message}");
    let stdout = std::fs::read(c.log_file(&t, "stdout")).unwrap();
    let stderr = std::fs::read(c.log_file(&t, "stderr")).unwrap();
    let marker = cut_marker(CAP);
    assert!(
        stdout.ends_with(marker.as_bytes()),
        "the log ends with the marker: …{:?}",
        String::from_utf8_lossy(&stdout[stdout.len().saturating_sub(200)..])
    );
    assert!(
        (stdout.len() + stderr.len()) as u64 <= CAP + marker.len() as u64 + 1,
        "{} + {} bytes kept under a cap of {CAP}",
        stdout.len(),
        stderr.len()
    );
    assert!(stdout.starts_with(b"kohakuriver\nkohakuriver\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_only_the_task_whose_output_cannot_be_written() {
    if !support::docker_ready() {
        return;
    }
    // /dev/full answers every write with ENOSPC, as a full data disk does: the task's
    // stdout file points there, so the capture's real writer meets a full disk.
    assert!(
        std::path::Path::new("/dev/full").exists(),
        "this test needs /dev/full to stand for a full disk"
    );
    let c = Cluster::start("diskfull", Options::default()).await;
    let diskfull = support::unique_name("diskfull");
    let mut full = sh(&diskfull, "while true; do echo filling; sleep 0.1; done");
    full.spec.image = Some(support::IMAGE.to_string());
    let created = c.tasks.create(&full).await.unwrap();
    let store = LogStore::new(c.data_dir.path().join("logs"));
    let uid = created.metadata.uid.clone().unwrap();
    store.prepare(&diskfull, &uid).unwrap();
    let stdout = store.path(&diskfull, &uid, kohakuriver_api::LogStream::Stdout);
    std::fs::remove_file(&stdout).unwrap();
    std::os::unix::fs::symlink("/dev/full", &stdout).unwrap();
    c.bind(&diskfull, alloc("0", None)).await;
    let (fine_name, after) = (support::unique_name("fine"), support::unique_name("after"));
    let fine = c.run(sh(&fine_name, "echo ok"), alloc("1", None)).await;

    let failed = c.wait_phase(&diskfull, TaskPhase::Failed, T).await;
    assert_eq!(failed.status.reason.as_deref(), Some("LogCaptureFailed"));
    let message = failed.status.message.clone().unwrap_or_default();
    assert!(message.starts_with("no space left on device"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
    // Its container was stopped, not left writing unseen.
    wait_until(T, "the container of the failed task stopped", || {
        docker_inspect(&diskfull)
            .is_none_or(|c| c["State"]["Running"] != serde_json::Value::Bool(true))
    })
    .await;
    // The agent and the other tasks go on.
    c.wait_phase(&fine_name, TaskPhase::Succeeded, T).await;
    assert_eq!(c.endpoint_log(&fine, "stream=stdout").await, "ok\n");
    c.run(sh(&after, "echo still"), alloc("1", None)).await;
    c.wait_phase(&after, TaskPhase::Succeeded, T).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_of_long_finished_tasks_expires_and_reads_say_why() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start(
        "retain",
        with(|c| c.log_retention = Some(Duration::from_secs(2))),
    )
    .await;
    let retain = support::unique_name("retain");
    let t = c.run(sh(&retain, "echo hi"), alloc("0", None)).await;
    c.wait_phase(&retain, TaskPhase::Succeeded, T).await;
    let dir = c.log_file(&t, "stdout").parent().unwrap().to_path_buf();
    wait_until(T, "the output expired", || dir.join("expired").exists()).await;
    assert!(!dir.join("stdout").exists());
    let (status, body) = c.endpoint_get(&t, "stream=stdout").await;
    assert_eq!(status.as_u16(), 410, "{body}");
    assert!(body.contains("--log-retention"), "{body}");
    assert!(body.contains(&format!("task {retain}")), "{body}");
    // The task object is kept.
    assert_eq!(
        c.tasks.get(&retain).await.unwrap().status.phase,
        TaskPhase::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn output_of_a_task_deleted_while_the_agent_was_away_goes() {
    if !support::docker_ready() {
        return;
    }
    let mut c = Cluster::start("away", Options::default()).await;
    let (away, kept_name) = (support::unique_name("away"), support::unique_name("kept"));
    let t = c.run(sh(&away, "echo hi"), alloc("0", None)).await;
    c.wait_phase(&away, TaskPhase::Succeeded, T).await;
    let dir = c.log_file(&t, "stdout").parent().unwrap().to_path_buf();
    wait_until(T, "capture final", || dir.join("final").exists()).await;
    // Keep one that is not deleted.
    let kept = c.run(sh(&kept_name, "echo kept"), alloc("1", None)).await;
    c.wait_phase(&kept_name, TaskPhase::Succeeded, T).await;
    c.stop_agent().await;
    c.tasks.delete(&away).await.unwrap();
    // Its finalizer is dropped by hand (as when its node is deleted): the task is gone
    // without this agent ever seeing it go.
    c.tasks
        .update_with(&away, |t| {
            t.metadata.finalizers.clear();
            true
        })
        .await
        .unwrap();
    assert!(c.tasks.get(&away).await.unwrap_err().is_not_found());
    c.start_agent().await;
    wait_until(T, "the deleted task's output removed", || !dir.exists()).await;
    assert_eq!(
        std::fs::read_to_string(c.log_file(&kept, "stdout")).unwrap(),
        "kept\n"
    );
}
