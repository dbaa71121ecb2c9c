//! Reconciler tests against the recording fake runtime: no Docker needed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_node_agent::DockerConnection;
use kohakuriver_node_agent::fake_runtime::{Call, FakeRuntime};
use kohakuriver_node_agent::runtime::{LogStream, RuntimeError};
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

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_outside_the_agents_allow_list_fails_the_task_before_any_container() {
    let fake = FakeRuntime::new();
    fake.add_image(support::IMAGE);
    let allowed = tempfile::tempdir().unwrap();
    let inside = allowed.path().join("data");
    std::fs::create_dir(&inside).unwrap();
    let escape = allowed.path().join("escape");
    std::os::unix::fs::symlink("/", &escape).unwrap();
    let c = Cluster::start(
        "fake-mounts",
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            allow_mounts: Some(vec![allowed.path().to_path_buf()]),
            ..Default::default()
        },
    )
    .await;
    let mut bad = Task::test("bad").command(&["x"]);
    bad.spec.mounts = vec![format!("{}:/m", escape.display())];
    c.run(bad, alloc("0", None)).await;
    let mut good = Task::test("good").command(&["x"]);
    good.spec.mounts = vec![format!("{}:/m:ro", inside.display())];
    c.run(good, alloc("1", None)).await;

    let failed = c.wait_phase("bad", TaskPhase::Failed, T).await;
    assert_eq!(failed.status.reason.as_deref(), Some("MountNotAllowed"));
    let message = failed.status.message.unwrap();
    assert!(message.contains(&escape.display().to_string()), "{message}");
    assert!(message.contains("real path / "), "{message}");
    assert!(message.contains("--allow-mounts"), "{message}");
    assert!(fake.container("kohakuriver-task-bad").is_none());

    c.wait_phase("good", TaskPhase::Running, T).await;
    // Docker is handed the checked real path.
    let spec = fake.spec("kohakuriver-task-good").unwrap();
    let real = std::fs::canonicalize(&inside).unwrap();
    assert_eq!(spec.binds, vec![format!("{}:/m:ro", real.display())]);
    assert!(
        !fake
            .calls()
            .contains(&Call::Create("kohakuriver-task-bad".into())),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarball_tagging_another_image_fails_the_task_and_is_not_loaded() {
    let fake = FakeRuntime::new();
    let c = Cluster::start(
        "fake-poison",
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            shared: true,
            ..Default::default()
        },
    )
    .await;
    let dir = c
        .shared_dir
        .as_ref()
        .unwrap()
        .path()
        .join("kohakuriver-containers");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("torch.tar");
    std::fs::write(
        &tar,
        tar_tagging(&["kohakuriver/torch:base", "ubuntu:22.04"]),
    )
    .unwrap();
    fake.on_load(&tar, "kohakuriver/torch:base");
    let mut t = Task::test("poison").command(&["x"]);
    t.spec.container = Some("torch".into());
    c.tasks.create(&t).await.unwrap();
    c.bind("poison", alloc("0", None)).await;
    let failed = c.wait_phase("poison", TaskPhase::Failed, T).await;
    assert_eq!(failed.status.reason.as_deref(), Some("ImageRejected"));
    let message = failed.status.message.unwrap();
    assert!(message.contains("ubuntu:22.04"), "{message}");
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::Load(_))));
    assert!(fake.container("kohakuriver-task-poison").is_none());
}

/// A minimal `docker save`-shaped tarball: one header and a manifest tagging `tags`.
fn tar_tagging(tags: &[&str]) -> Vec<u8> {
    let manifest = serde_json::json!([{ "Config": "c.json", "RepoTags": tags, "Layers": [] }])
        .to_string()
        .into_bytes();
    let mut header = [0u8; 512];
    header[..13].copy_from_slice(b"manifest.json");
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", manifest.len()).as_bytes());
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| *b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(&manifest);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn creates(fake: &FakeRuntime) -> usize {
    fake.calls()
        .iter()
        .filter(|c| matches!(c, Call::Create(_)))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_the_engine_refuses_fails_the_task_at_once_with_its_message() {
    let (c, fake) = cluster("fake-refused").await;
    let refusal = "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-fake";
    fake.fail_creates(vec![RuntimeError::Refused(refusal.to_string())]);
    c.run(Task::test("r").command(&["true"]), alloc("0", None))
        .await;
    let failed = c
        .wait_phase("r", TaskPhase::Failed, Duration::from_secs(10))
        .await;
    assert_eq!(failed.status.reason.as_deref(), Some("StartFailed"));
    assert_eq!(failed.status.message.as_deref(), Some(refusal));
    assert_eq!(creates(&fake), 1, "not retried: {:?}", fake.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_engine_error_is_retried() {
    let (c, fake) = cluster("fake-transient").await;
    fake.fail_creates(vec![
        RuntimeError::Unreachable("error trying to connect: connection refused".into()),
        RuntimeError::Engine("context deadline exceeded".into()),
    ]);
    c.run(Task::test("t").command(&["true"]), alloc("0", None))
        .await;
    let running = c.wait_phase("t", TaskPhase::Running, T).await;
    assert!(running.status.reason.is_none(), "{:?}", running.status);
    assert_eq!(creates(&fake), 3, "{:?}", fake.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_killed_during_a_slow_pull_is_never_created() {
    let (c, fake) = cluster("fake-slow-pull").await;
    // Longer than the test waits for the kill: only abandoning the pull can end it in time.
    fake.on_pull("registry.test/slow:1", Duration::from_secs(120));
    let mut task = Task::test("p").command(&["true"]);
    task.spec.image = Some("registry.test/slow:1".into());
    c.run(task, alloc("0", None)).await;
    wait_until(T, "the pull started", || {
        fake.calls()
            .contains(&Call::Pull("registry.test/slow:1".into()))
    })
    .await;
    c.tasks
        .update_with("p", |t| {
            t.spec.state = kohakuriver_api::DesiredState::Killed;
            true
        })
        .await
        .unwrap();
    let killed = c.wait_phase("p", TaskPhase::Killed, T).await;
    assert_eq!(killed.status.reason.as_deref(), Some("Killed"));
    assert_eq!(creates(&fake), 0, "{:?}", fake.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_for_an_old_attempt_is_dropped_and_its_container_removed() {
    let (c, fake) = cluster("fake-stale").await;
    fake.slow_starts(Duration::from_secs(3));
    let first = c
        .run(Task::test("s").command(&["true"]), alloc("0", None))
        .await;
    assert_eq!(first.status.binding, 1);
    wait_until(T, "the first start began", || {
        fake.calls().iter().any(|c| matches!(c, Call::Start(_)))
    })
    .await;
    let old_id = fake.container("kohakuriver-task-s").unwrap().id;
    // While the agent starts attempt 1, the task is re-queued and bound here again.
    c.tasks
        .update_status_with("s", |t| {
            t.status.phase = TaskPhase::Pending;
            t.status.node = None;
            t.status.allocation = None;
            true
        })
        .await
        .unwrap();
    let second = c.bind("s", alloc("0", None)).await;
    assert_eq!(second.status.binding, 2);
    // Attempt 1's Running report must not land on attempt 2; its container goes.
    let running = c.wait_phase("s", TaskPhase::Running, T).await;
    assert_eq!(running.status.binding, 2);
    assert_ne!(
        running.status.container_id.as_deref(),
        Some(old_id.as_str())
    );
    assert!(
        fake.calls().contains(&Call::Remove(old_id.clone())),
        "{:?}",
        fake.calls()
    );
    let now = fake.container("kohakuriver-task-s").unwrap();
    assert_eq!(now.binding(), Some(2));
}

/// Partition: once the agent has gone `fence_after` without reaching the server, it stops
/// the container of a task that has a retry left (the server will run it elsewhere) and
/// leaves the one with no retry left running.
#[tokio::test(flavor = "multi_thread")]
async fn cut_off_agent_fences_tasks_with_retries_left_and_keeps_the_others() {
    let fake = FakeRuntime::new();
    fake.add_image(support::IMAGE);
    let c = Cluster::start(
        "fake-fence",
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            fence_after: Some(Duration::from_secs(2)),
            ..Default::default()
        },
    )
    .await;
    let mut retried = Task::test("retried").command(&["sleep", "600"]);
    retried.spec.retries = 1;
    c.run(retried, alloc("0", None)).await;
    c.run(
        Task::test("last").command(&["sleep", "600"]),
        alloc("1", None),
    )
    .await;
    c.wait_phase("retried", TaskPhase::Running, T).await;
    c.wait_phase("last", TaskPhase::Running, T).await;
    // Connected, well past fence_after: nothing is stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !fake.calls().iter().any(|c| matches!(c, Call::Stop(_))),
        "{:?}",
        fake.calls()
    );

    let cut = std::time::Instant::now();
    c.stop_server();
    let retried_id = fake.container("kohakuriver-task-retried").unwrap().id;
    wait_until(
        T,
        "the container of the task with a retry left stopped",
        || fake.calls().contains(&Call::Stop(retried_id.clone())),
    )
    .await;
    assert!(
        cut.elapsed() >= Duration::from_secs(1),
        "fenced {:?} after the cut, before fence_after could pass",
        cut.elapsed()
    );
    // Long enough for a second fencing round: the other task still runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = fake.container("kohakuriver-task-last").unwrap();
    assert!(last.status.is_alive(), "{last:?}");
    assert!(
        !fake.calls().contains(&Call::Stop(last.id.clone())),
        "{:?}",
        fake.calls()
    );
}

/// The timing inequality is checked at start: an agent whose fence-after plus kill grace
/// is not below the server's node grace refuses to start, naming the three values.
#[tokio::test(flavor = "multi_thread")]
async fn agent_refuses_to_start_when_it_would_fence_after_the_server_requeues() {
    let server = kohakuriver_apiserver::testing::spawn_server(kohakuriver_apiserver::Config {
        node_grace: Some(Duration::from_secs(12)),
        ..kohakuriver_apiserver::Config::insecure()
    })
    .await;
    let server_url = server.url.clone();
    let client = kohakuriver_client::Client::new(&server_url).unwrap();
    let info = wait_for_info(&client).await;
    assert_eq!(info.node_grace(), Some(Duration::from_secs(12)));

    let fake = FakeRuntime::new();
    let data = tempfile::tempdir().unwrap();
    let start = |fence_after: u64, kill_grace: u64| {
        let mut config = kohakuriver_node_agent::AgentConfig::new(
            support::unique_name("timing"),
            &server_url,
            data.path(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.docker = DockerConnection::Runtime(Arc::new(fake.clone()));
        config.fence_after = Duration::from_secs(fence_after);
        config.kill_grace = Duration::from_secs(kill_grace);
        let shutdown = tokio_util::sync::CancellationToken::new();
        async move {
            let result = kohakuriver_node_agent::start(config, shutdown.clone()).await;
            shutdown.cancel();
            result.map(|_| ())
        }
    };
    // 10 s + 2 s equals the grace, which is not below it.
    let err = start(10, 2).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, kohakuriver_node_agent::Error::Timing(_)),
        "{text}"
    );
    for needle in ["10s", "2s", "12s", "--fence-after", "--node-grace"] {
        assert!(text.contains(needle), "{text} lacks {needle}");
    }
    assert!(start(9, 3).await.is_err());
    start(9, 2)
        .await
        .expect("9 s + 2 s is below the 12 s grace");
}

async fn wait_for_info(client: &kohakuriver_client::Client) -> kohakuriver_api::ServerInfo {
    let deadline = std::time::Instant::now() + T;
    loop {
        match client.info().await {
            Ok(info) => return info,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("server not up yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("server did not answer within {T:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn agent_refuses_to_start_with_a_missing_shared_dir() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-such-share");
    let file = data.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for (dir, want) in [(&missing, "mkdir -p"), (&file, "is not a directory")] {
        let mut config = kohakuriver_node_agent::AgentConfig::new(
            support::unique_name("share"),
            "http://127.0.0.1:9",
            data.path(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.docker = DockerConnection::Runtime(Arc::new(FakeRuntime::new()));
        config.shared_dir = Some(dir.clone());
        let err = match kohakuriver_node_agent::start(config, Default::default()).await {
            Ok(_) => panic!("started with --shared-dir {}", dir.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--shared-dir"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains(want), "{err} lacks {want}");
    }
}

/// A data dir where task output cannot be written (here: below a plain file, which even
/// root cannot write into) stops the agent at start, naming the path and the flag.
#[tokio::test]
async fn agent_refuses_to_start_with_an_unwritable_data_dir() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let data = file.join("data");
    let mut config = kohakuriver_node_agent::AgentConfig::new(
        support::unique_name("data"),
        "http://127.0.0.1:9",
        &data,
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.docker = DockerConnection::Runtime(Arc::new(FakeRuntime::new()));
    let err = match kohakuriver_node_agent::start(config, Default::default()).await {
        Ok(_) => panic!("started with data dir {}", data.display()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--data-dir"), "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
}
