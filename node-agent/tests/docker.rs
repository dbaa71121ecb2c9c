//! Real-Docker tests of the agent: an in-process server and agent per test, real containers
//! from the locally built busybox image. They fail with a clear message when Docker is not
//! usable, unless `KOHAKURIVER_SKIP_DOCKER_TESTS=1`.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_node_agent::DockerConnection;
use kohakuriver_node_agent::container_config::ContainerSpec;
use kohakuriver_node_agent::docker::DockerRuntime;
use kohakuriver_node_agent::gpu::StaticGpuSource;
use kohakuriver_node_agent::runtime::{
    ContainerRuntime, ContainerState, ContainerUsage, ImageInfo, LogChunk, RuntimeError,
};
use kohakuriver_node_agent::tarball_tags;
use serde_json::json;
use support::{Cluster, Options, alloc, docker_inspect, wait_until};

const T: Duration = Duration::from_secs(30);

fn sh(name: &str, script: &str) -> Task {
    Task::test(name).command(&["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_captured_and_the_container_is_pinned() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("pin", Options::default()).await;
    let pin = support::unique_name("pin");
    let script = "echo hello; echo oops >&2; grep Cpus_allowed_list /proc/self/status; \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  echo \"task=$KOHAKURIVER_TASK cpus=$KOHAKURIVER_CPUS\"; pwd";
    let t = c.run(sh(&pin, script), alloc("1", Some(64 << 20))).await;
    let done = c.wait_phase(&pin, TaskPhase::Succeeded, T).await;
    assert_eq!(done.status.exit_code, Some(0));
    assert_eq!(done.status.attempts, 1);
    assert!(done.status.container_id.is_some());
    assert!(done.status.started_at.is_some() && done.status.finished_at.is_some());

    let stdout = std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap();
    let stderr = std::fs::read_to_string(c.log_file(&t, "stderr")).unwrap();
    assert!(stdout.starts_with("hello\n"), "{stdout}");
    assert!(stdout.contains("Cpus_allowed_list:\t1\n"), "{stdout}");
    assert!(stdout.contains("67108864\n"), "{stdout}");
    assert!(stdout.contains(&format!("task={pin} cpus=1\n")), "{stdout}");
    assert!(
        stdout.ends_with("\n/\n"),
        "working dir / without shared storage: {stdout}"
    );
    assert_eq!(stderr, "oops\n");

    // Served by the endpoint, whole, tailed and followed (ends since the capture is final).
    assert_eq!(c.endpoint_log(&t, "stream=stdout").await, stdout);
    assert_eq!(
        c.endpoint_log(&t, "stream=stderr&follow=true").await,
        stderr
    );
    assert_eq!(c.endpoint_log(&t, "tail=1").await, "/\n");

    // The container goes once the logs are safe; the logs stay.
    wait_until(T, "container removed", || docker_inspect(&pin).is_none()).await;
    assert!(c.log_file(&t, "stdout").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_are_reported() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("exit", Options::default()).await;
    let (exit3, nocmd) = (support::unique_name("exit3"), support::unique_name("nocmd"));
    c.run(sh(&exit3, "echo bye; exit 3"), alloc("0", None))
        .await;
    c.run(
        Task::test(&nocmd).command(&["no-such-command"]),
        alloc("", None),
    )
    .await;
    let t = c.wait_phase(&exit3, TaskPhase::Failed, T).await;
    assert_eq!(t.status.exit_code, Some(3));
    assert_eq!(t.status.reason.as_deref(), Some("Error"));
    assert!(t.status.message.unwrap().contains("code 3"));
    let t = c
        .wait_task(&nocmd, T, "failed", |t| t.status.phase == TaskPhase::Failed)
        .await;
    assert!(t.status.message.is_some(), "{:?}", t.status);
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_kill_with_sigterm_first() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("prk", Options::default()).await;
    let prk = support::unique_name("prk");
    let script = "trap 'echo got-term; exit 7' TERM; echo started; while true; do sleep 0.1; done";
    let t = c.run(sh(&prk, script), alloc("0", None)).await;
    c.wait_phase(&prk, TaskPhase::Running, T).await;

    c.tasks
        .patch(&prk, &json!({"spec": {"state": "Paused"}}))
        .await
        .unwrap();
    c.wait_phase(&prk, TaskPhase::Paused, T).await;
    assert_eq!(
        docker_inspect(&prk).unwrap()["State"]["Paused"],
        json!(true)
    );

    c.tasks
        .patch(&prk, &json!({"spec": {"state": "Running"}}))
        .await
        .unwrap();
    c.wait_phase(&prk, TaskPhase::Running, T).await;
    assert_eq!(
        docker_inspect(&prk).unwrap()["State"]["Running"],
        json!(true)
    );
    assert_eq!(
        docker_inspect(&prk).unwrap()["State"]["Paused"],
        json!(false)
    );

    c.tasks
        .patch(&prk, &json!({"spec": {"state": "Killed"}}))
        .await
        .unwrap();
    let killed = c.wait_phase(&prk, TaskPhase::Killed, T).await;
    // The trap ran: SIGTERM came first, and its exit code is reported.
    assert_eq!(killed.status.exit_code, Some(7));
    wait_until(T, "container removed", || docker_inspect(&prk).is_none()).await;
    let stdout = std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap();
    assert_eq!(stdout, "started\ngot-term\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_oom_killed() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("oom", Options::default()).await;
    let oom = support::unique_name("oom");
    c.run(
        sh(&oom, "head -c 200m /dev/zero | tail"),
        alloc("0", Some(32 << 20)),
    )
    .await;
    // Generous: on a loaded two-core machine the hog can be slow to reach its limit.
    let t = c
        .wait_phase(&oom, TaskPhase::Failed, Duration::from_secs(90))
        .await;
    assert_eq!(
        t.status.reason.as_deref(),
        Some("OOMKilled"),
        "{:?}",
        t.status
    );
    assert!(t.status.exit_code.is_some_and(|c| c != 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_fails_the_task_with_the_engines_message() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("img", Options::default()).await;
    let (img, env) = (support::unique_name("img"), support::unique_name("env"));
    let mut task = Task::test(&img).command(&["true"]);
    task.spec.image = Some("kohakuriver-no-such-image:1".into());
    let t = c.run(task, alloc("0", None)).await;
    let t2 = c.wait_phase(&img, TaskPhase::Failed, T).await;
    let reason = t2.status.reason.clone().unwrap();
    assert!(
        reason == "ImageNotFound" || reason == "ImagePullFailed",
        "{reason}"
    );
    assert!(
        t2.status
            .message
            .as_deref()
            .unwrap()
            .contains("kohakuriver-no-such-image"),
        "{:?}",
        t2.status.message
    );
    // Followers of its (empty) log are not left hanging.
    assert_eq!(c.endpoint_log(&t, "follow=true").await, "");

    // A named environment without tarball is ImageNotFound, naming the image.
    let mut task = Task::test(&env).command(&["true"]);
    task.spec.container = Some("nope".into());
    c.run(task, alloc("0", None)).await;
    let t = c.wait_phase(&env, TaskPhase::Failed, T).await;
    assert_eq!(t.status.reason.as_deref(), Some("ImageNotFound"));
    assert!(t.status.message.unwrap().contains("kohakuriver/nope:base"));
}

fn expected_lines(prefix: &str, n: u32) -> String {
    (1..=n).map(|i| format!("{prefix}{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_restart_mid_task_loses_and_duplicates_nothing() {
    if !support::docker_ready() {
        return;
    }
    let mut c = Cluster::start("restart", Options::default()).await;
    let rs = support::unique_name("rs");
    let script = "for i in $(seq 1 60); do echo out$i; echo err$i >&2; sleep 0.05; done; exit 5";
    let t = c.run(sh(&rs, script), alloc("0", None)).await;
    c.wait_phase(&rs, TaskPhase::Running, T).await;
    let stdout_path = c.log_file(&t, "stdout");
    wait_until(T, "some output captured", || {
        std::fs::read_to_string(&stdout_path).is_ok_and(|s| s.contains("out5\n"))
    })
    .await;
    c.stop_agent().await;
    // The container keeps running and writing while the agent is down.
    assert_eq!(
        docker_inspect(&rs).unwrap()["State"]["Running"],
        json!(true)
    );
    let before = std::fs::read_to_string(&stdout_path).unwrap();
    wait_until(T, "more output while the agent is down", || {
        std::process::Command::new("docker")
            .args(["logs", &format!("kohakuriver-task-{rs}")])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("out30\n"))
    })
    .await;
    assert_eq!(std::fs::read_to_string(&stdout_path).unwrap(), before);
    c.start_agent().await;
    let done = c.wait_phase(&rs, TaskPhase::Failed, T).await;
    assert_eq!(done.status.exit_code, Some(5));
    assert_eq!(done.status.attempts, 1, "never run twice");
    wait_until(T, "container removed", || docker_inspect(&rs).is_none()).await;
    assert_eq!(
        std::fs::read_to_string(&stdout_path).unwrap(),
        expected_lines("out", 60)
    );
    assert_eq!(
        std::fs::read_to_string(c.log_file(&t, "stderr")).unwrap(),
        expected_lines("err", 60)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_while_agent_is_down_is_reported_with_the_real_code() {
    if !support::docker_ready() {
        return;
    }
    let mut c = Cluster::start("down", Options::default()).await;
    let dn = support::unique_name("dn");
    let t = c
        .run(
            sh(&dn, "echo a; sleep 0.5; echo b; exit 9"),
            alloc("0", None),
        )
        .await;
    c.wait_phase(&dn, TaskPhase::Running, T).await;
    c.stop_agent().await;
    wait_until(T, "container exited", || {
        docker_inspect(&dn).is_some_and(|v| v["State"]["Status"] == json!("exited"))
    })
    .await;
    // A container of a task that no longer exists, left by an earlier life: removed.
    let ghost = std::process::Command::new("docker")
        .args([
            "create",
            "--label",
            &format!("kohakuriver.node={}", c.node),
            "--label",
            "kohakuriver.task=ghost",
            "--name",
            &format!("kohakuriver-task-ghost-{}", c.node),
            support::IMAGE,
            "true",
        ])
        .output()
        .unwrap();
    assert!(ghost.status.success());
    let ghost_id = String::from_utf8_lossy(&ghost.stdout).trim().to_string();
    c.start_agent().await;
    let done = c.wait_phase(&dn, TaskPhase::Failed, T).await;
    assert_eq!(done.status.exit_code, Some(9));
    // The phase is reported independently of the capture; its files are complete once it
    // is final (and the container goes only then).
    wait_until(T, "capture final", || c.log_file(&t, "final").exists()).await;
    assert_eq!(
        std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap(),
        "a\nb\n"
    );
    wait_until(T, "orphan removed", || {
        !std::process::Command::new("docker")
            .args(["inspect", &ghost_id])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_task_removes_its_container_and_finalizer() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("del", Options::default()).await;
    let del = support::unique_name("del");
    c.run(
        Task::test(&del).command(&["sleep", "1000"]),
        alloc("0", None),
    )
    .await;
    let running = c.wait_phase(&del, TaskPhase::Running, T).await;
    assert!(
        running
            .metadata
            .finalizers
            .contains(&kohakuriver_api::CONTAINER_FINALIZER.to_string()),
        "{:?}",
        running.metadata
    );
    c.tasks.delete(&del).await.unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        if c.tasks.get_opt(&del).await.unwrap().is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "task not gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(docker_inspect(&del).is_none());
}

/// Delegates to Docker and remembers the `HostConfig` of every created container, so the
/// test can see the GPU request even though no nvidia runtime can start it.
struct Recording {
    inner: DockerRuntime,
    host_configs: Arc<Mutex<Vec<serde_json::Value>>>,
}

#[async_trait]
impl ContainerRuntime for Recording {
    async fn version(&self) -> Result<String, RuntimeError> {
        self.inner.version().await
    }
    async fn image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.inner.image(image).await
    }
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        self.inner.pull(image).await
    }
    async fn load(&self, tarball: &Path) -> Result<(), RuntimeError> {
        self.inner.load(tarball).await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = self.inner.create(spec).await?;
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{json .HostConfig}}", &id])
            .output()
            .unwrap();
        self.host_configs
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&out.stdout).unwrap());
        Ok(id)
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.start(id).await
    }
    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.pause(id).await
    }
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.unpause(id).await
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.inner.stop(id, grace).await
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.remove(id).await
    }
    async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        self.inner.inspect(id).await
    }
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError> {
        self.inner.list(labels).await
    }
    async fn usage(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        self.inner.usage(id).await
    }
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        self.inner.logs(id, follow)
    }
    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
        self.inner.attach(id).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gpu_allocation_reaches_the_container_config() {
    if !support::docker_ready() {
        return;
    }
    let host_configs = Arc::new(Mutex::new(Vec::new()));
    let runtime = Recording {
        inner: DockerRuntime::connect().await.unwrap(),
        host_configs: host_configs.clone(),
    };
    let c = Cluster::start(
        "gpu",
        Options {
            gpus: Some(StaticGpuSource::Count(2)),
            runtime: Some(DockerConnection::Runtime(Arc::new(runtime))),
            ..Default::default()
        },
    )
    .await;
    let node = c.nodes.get(&c.node).await.unwrap();
    assert_eq!(node.status.capacity.gpus, 2);
    assert_eq!(node.status.gpus.len(), 2);

    let gpu = support::unique_name("gpu");
    let mut a = alloc("0", None);
    a.gpus = vec![1];
    c.run(Task::test(&gpu).command(&["true"]).gpus(1), a).await;
    // No nvidia runtime here: the engine refuses to start it, and the task fails with its
    // words instead of hanging.
    let t = c.wait_phase(&gpu, TaskPhase::Failed, T).await;
    assert_eq!(
        t.status.reason.as_deref(),
        Some("StartFailed"),
        "{:?}",
        t.status
    );
    let configs = host_configs.lock().unwrap().clone();
    assert_eq!(configs.len(), 1);
    let requests = &configs[0]["DeviceRequests"];
    assert_eq!(requests[0]["Driver"], json!("nvidia"));
    assert_eq!(requests[0]["DeviceIDs"], json!(["1"]));
    assert_eq!(requests[0]["Capabilities"], json!([["gpu"]]));
    assert_eq!(configs[0]["CpusetCpus"], json!("0"));
    wait_until(T, "container removed", || docker_inspect(&gpu).is_none()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_is_registered_with_topology_and_heartbeats() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("node", Options::default()).await;
    let n1 = c.nodes.get(&c.node).await.unwrap();
    assert!(n1.is_ready());
    assert!(n1.status.capacity.cpu >= 1);
    assert!(!n1.status.numa.is_empty());
    assert!(n1.status.docker_version.is_some());
    let addr = n1.status.address.clone().unwrap();
    assert_eq!(
        addr,
        format!("http://{}", c.agent.as_ref().unwrap().local_addr)
    );
    let first = n1.status.last_heartbeat.unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        let n = c.nodes.get(&c.node).await.unwrap();
        if n.status.last_heartbeat.unwrap() > first && n.status.usage.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = kohakuriver_tls::http_client()
        .get(format!("{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_writers_are_captured_completely_and_byte_exact() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("fast", Options::default()).await;
    let (fastseq, fastmix) = (
        support::unique_name("fastseq"),
        support::unique_name("fastmix"),
    );
    // 1,288,895 bytes of stdout as fast as the container can write them.
    let t = c.run(sh(&fastseq, "seq 1 200000"), alloc("0", None)).await;
    // Interleaved stdout and stderr, also fast.
    let mixed = "i=1; while [ $i -le 30000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let m = c.run(sh(&fastmix, mixed), alloc("1", None)).await;
    let long = Duration::from_secs(120);
    c.wait_phase(&fastseq, TaskPhase::Succeeded, long).await;
    c.wait_phase(&fastmix, TaskPhase::Succeeded, long).await;
    // The container goes only after its capture is final, so the files are complete then.
    wait_until(long, "containers removed", || {
        docker_inspect(&fastseq).is_none() && docker_inspect(&fastmix).is_none()
    })
    .await;

    let seq: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert_eq!(seq.len(), 1_288_895);
    let stdout = std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap();
    assert_eq!(stdout.len(), seq.len(), "stdout of seq is complete");
    assert!(stdout == seq, "stdout of seq is byte-exact");
    assert_eq!(
        std::fs::metadata(c.log_file(&t, "stderr")).unwrap().len(),
        0
    );
    let served = c.endpoint_log(&t, "stream=stdout").await;
    assert_eq!(served.len(), seq.len());
    assert!(served == seq, "the endpoint serves the complete output");

    let out = std::fs::read_to_string(c.log_file(&m, "stdout")).unwrap();
    let err = std::fs::read_to_string(c.log_file(&m, "stderr")).unwrap();
    let (want_out, want_err) = (expected_lines("out", 30000), expected_lines("err", 30000));
    assert_eq!(out.len(), want_out.len(), "mixed stdout is complete");
    assert!(out == want_out, "mixed stdout is byte-exact");
    assert_eq!(err.len(), want_err.len(), "mixed stderr is complete");
    assert!(err == want_err, "mixed stderr is byte-exact");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_out_of_a_user_mount_prefix_is_refused_before_any_container() {
    if !support::docker_ready() {
        return;
    }
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("data.txt"), "inside\n").unwrap();
    let escape = allowed.path().join("escape");
    std::os::unix::fs::symlink("/", &escape).unwrap();
    let auth = kohakuriver_apiserver::AuthConfig {
        policy: kohakuriver_api::Policy {
            user_mount_prefixes: vec![allowed.path().display().to_string()],
            ..Default::default()
        },
        ..kohakuriver_apiserver::AuthConfig::disabled()
    };
    let c = Cluster::start(
        "symlink",
        Options {
            server_auth: Some(auth),
            ..Default::default()
        },
    )
    .await;
    let bad = support::unique_name("escape");
    let mut t = sh(&bad, "cat /host/etc/hostname");
    t.spec.mounts = vec![format!("{}:/host", escape.display())];
    c.run(t, alloc("0", None)).await;
    let good = support::unique_name("inside");
    let mut t = sh(&good, "cat /host/data.txt");
    t.spec.mounts = vec![format!("{}:/host:ro", allowed.path().display())];
    let good_task = c.run(t, alloc("0", None)).await;

    let failed = c.wait_phase(&bad, TaskPhase::Failed, T).await;
    assert_eq!(failed.status.reason.as_deref(), Some("MountNotAllowed"));
    let message = failed.status.message.unwrap();
    assert!(message.contains("real path / "), "{message}");
    assert!(message.contains("symlink"), "{message}");
    assert!(docker_inspect(&bad).is_none(), "no container for {bad}");
    assert_eq!(failed.status.container_id, None);

    c.wait_phase(&good, TaskPhase::Succeeded, T).await;
    let out = std::fs::read_to_string(c.log_file(&good_task, "stdout")).unwrap();
    assert_eq!(out, "inside\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_cannot_write_the_environment_tarballs() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start(
        "tarballs",
        Options {
            shared: true,
            ..Default::default()
        },
    )
    .await;
    let shared = c.shared_dir.as_ref().unwrap().path().to_path_buf();
    let envs = shared.join("kohakuriver-containers");
    std::fs::create_dir(&envs).unwrap();
    std::fs::write(envs.join("torch.tar"), "original").unwrap();
    let name = support::unique_name("poison");
    let script = "echo evil > /shared/kohakuriver-containers/torch.tar || echo refused-replace; \
                  echo evil > /shared/kohakuriver-containers/new.tar || echo refused-new; \
                  echo fine > /shared/result.txt && echo wrote-shared";
    let t = c.run(sh(&name, script), alloc("0", None)).await;
    c.wait_phase(&name, TaskPhase::Succeeded, T).await;
    let out = std::fs::read_to_string(c.log_file(&t, "stdout")).unwrap();
    assert_eq!(out, "refused-replace\nrefused-new\nwrote-shared\n");
    assert_eq!(
        std::fs::read_to_string(envs.join("torch.tar")).unwrap(),
        "original"
    );
    assert!(!envs.join("new.tar").exists());
    assert_eq!(
        std::fs::read_to_string(shared.join("result.txt")).unwrap(),
        "fine\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_are_read_from_a_real_docker_save() {
    if !support::docker_ready() {
        return;
    }
    let env = support::unique_name("tags");
    let image = format!("kohakuriver/{env}:base");
    let other = format!("kohakuriver-extra-{env}:latest");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["tag", support::IMAGE, &image]);
    run(&["tag", support::IMAGE, &other]);
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.tar");
    let both = dir.path().join("both.tar");
    run(&["save", "-o", own.to_str().unwrap(), &image]);
    run(&["save", "-o", both.to_str().unwrap(), &image, &other]);
    run(&["rmi", &image, &other]);

    let read = |p: &Path| {
        let file = std::io::BufReader::new(std::fs::File::open(p).unwrap());
        let mut tags = tarball_tags::read_tags(file).unwrap();
        tags.sort();
        tags
    };
    let own_tags = read(&own);
    assert!(own_tags.iter().all(|t| t.ends_with(&image)), "{own_tags:?}");
    assert!(!own_tags.is_empty());
    assert_eq!(tarball_tags::check_tags(&env, &own_tags), Ok(()));
    let both_tags = read(&both);
    assert!(
        both_tags.iter().any(|t| t.ends_with(&other)),
        "{both_tags:?}"
    );
    let refusal = tarball_tags::check_tags(&env, &both_tags).unwrap_err();
    assert!(refusal.contains(&other), "{refusal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_mount_fails_within_seconds_with_the_engines_message() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("badmount", Options::default()).await;
    let missing = format!("/nonexistent-{}", support::unique_name("mount"));
    let m = support::unique_name("m");
    let mut task = Task::test(&m).command(&["true"]);
    task.spec.mounts = vec![format!("{missing}:/data")];
    let started = std::time::Instant::now();
    c.run(task, alloc("0", None)).await;
    let failed = c
        .wait_phase(&m, TaskPhase::Failed, Duration::from_secs(10))
        .await;
    assert_eq!(failed.status.reason.as_deref(), Some("StartFailed"));
    let message = failed.status.message.unwrap();
    assert!(
        message.contains("bind source path does not exist"),
        "{message}"
    );
    assert!(message.contains(&missing), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !std::path::Path::new(&missing).exists(),
        "docker made {missing}"
    );
}

/// A registry that accepts connections and never answers; counts the connections.
async fn stalled_registry() -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let handle = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pull_times_out_and_a_kill_during_it_creates_nothing() {
    if !support::docker_ready() {
        return;
    }
    let (port, accepted, registry) = stalled_registry().await;
    let c = Cluster::start(
        "stall",
        Options {
            pull_timeout: Some(Duration::from_secs(3)),
            ..Default::default()
        },
    )
    .await;
    let image = format!("127.0.0.1:{port}/stall:1");
    let slow = support::unique_name("slow");
    let mut task = Task::test(&slow).command(&["true"]);
    task.spec.image = Some(image.clone());
    c.run(task, alloc("0", None)).await;
    let failed = c.wait_phase(&slow, TaskPhase::Failed, T).await;
    assert_eq!(failed.status.reason.as_deref(), Some("ImagePullFailed"));
    assert!(
        failed
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("--pull-timeout"),
        "{:?}",
        failed.status.message
    );

    // Killed while it pulls (the default timeout is far away): Killed, and no container.
    let c = Cluster::start("stallkill", Options::default()).await;
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let killed = support::unique_name("k");
    let mut task = Task::test(&killed).command(&["true"]);
    task.spec.image = Some(image);
    c.run(task, alloc("0", None)).await;
    wait_until(T, "the engine is pulling from the stalled registry", || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) > before
    })
    .await;
    c.tasks
        .update_with(&killed, |t| {
            t.spec.state = kohakuriver_api::DesiredState::Killed;
            true
        })
        .await
        .unwrap();
    c.wait_phase(&killed, TaskPhase::Killed, T).await;
    assert!(
        docker_inspect(&killed).is_none(),
        "a container was created for {killed}"
    );
    registry.abort();
}
