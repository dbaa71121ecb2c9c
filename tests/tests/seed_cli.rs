//! The seed's command-task workflow (`/work/shared/seed/command-tasks.md`) against the real
//! binary, a real server, real agents and real Docker. The seed's `mynode` is a unique test
//! node name; commands are adapted to what busybox runs.
//!
//! Each test starts its own small cluster (server + agent processes, < 1 s), so tests run
//! in parallel and clean up after themselves.

use std::time::Duration;

use kohakuriver_tests::{
    AgentOptions, Cluster, IMAGE, ServerOptions, docker, docker_ready, privileged_containers_work,
    unique_name, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// A cluster with one agent; `None` when Docker tests are skipped.
fn cluster(prefix: &str) -> Option<(Cluster, String)> {
    if !docker_ready() {
        return None;
    }
    let mut c = Cluster::start();
    let node = c.add_agent(prefix);
    Some((c, node))
}

/// A shell loop printing `line N` every 200 ms, `n` times.
fn ticker(n: u32) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo line $i; i=$((i+1)); sleep 0.2; done")
}

fn lines(n: u32) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

// ---------------------------------------------------------------- basic submission + logs

#[test]
fn basic_submission_prints_id_and_logs_are_exact() {
    let Some((c, node)) = cluster("basic") else {
        return;
    };
    // kohakuriver task submit -t mynode -- echo "Hello World"
    let id = c.submit(&["-t", &node, "--", "echo", "Hello World"]);
    let task = c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(task["status"]["node"], node.as_str());
    assert_eq!(task["status"]["exitCode"], 0);
    // kohakuriver task logs <task_id>
    let logs = c.kr(&["task", "logs", &id]);
    logs.ok();
    assert_eq!(logs.stdout_bytes, b"Hello World\n");
}

#[test]
fn stderr_is_separate() {
    let Some((c, node)) = cluster("stderr") else {
        return;
    };
    let id = c.submit(&[
        "-t",
        &node,
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; echo more-out",
    ]);
    c.wait_phase(&id, &["Succeeded"], T);
    // kohakuriver task logs <task_id> --stderr
    assert_eq!(
        c.kr(&["task", "logs", &id]).ok().stdout,
        "to-out\nmore-out\n"
    );
    assert_eq!(
        c.kr(&["task", "logs", &id, "--stderr"]).ok().stdout,
        "to-err\n"
    );
}

#[test]
fn submit_without_target_is_scheduled() {
    let Some((c, node)) = cluster("notarget") else {
        return;
    };
    let id = c.submit(&["--", "echo", "placed"]);
    let task = c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(task["status"]["node"], node.as_str());
    assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "placed\n");
}

// ---------------------------------------------------------------- -w exit codes

#[test]
fn wait_flag_exits_with_the_task_exit_code() {
    let Some((c, node)) = cluster("waitcode") else {
        return;
    };
    let failed = c.kr(&[
        "task", "submit", "-t", &node, "-w", "--", "sh", "-c", "exit 3",
    ]);
    failed.code(3);
    let id = failed.stdout.trim();
    assert_eq!(
        failed.stdout,
        format!("{id}\n"),
        "-w still prints the id alone"
    );
    assert_eq!(c.phase(id), "Failed");

    let ok = c.kr(&["task", "submit", "-t", &node, "-w", "--", "echo", "fine"]);
    ok.code(0);
    let id = ok.stdout.trim();
    assert_eq!(ok.stdout, format!("{id}\n"));
    assert_eq!(c.kr(&["task", "logs", id]).ok().stdout, "fine\n");
}

#[test]
fn wait_flag_on_a_killed_task_fails_with_a_reason() {
    let Some((c, node)) = cluster("waitkill") else {
        return;
    };
    let mut waiting = c.stream(&["task", "submit", "-t", &node, "-w", "--", "sleep", "60"]);
    let id = kohakuriver_tests::wait_for(T, "the id on stdout", || {
        let out = String::from_utf8_lossy(&waiting.stdout_so_far()).into_owned();
        out.ends_with('\n').then(|| out.trim().to_string())
    });
    c.wait_phase(&id, &["Running"], T);
    c.kr(&["task", "kill", &id]).ok();
    let code = waiting
        .wait_exit(T)
        .expect("task submit -w ends once the task is killed");
    let (out, err) = waiting.finish_readers();
    let err = String::from_utf8_lossy(&err).into_owned();
    assert_ne!(code, 0, "a killed task's -w exit code is non-zero");
    assert_eq!(String::from_utf8_lossy(&out), format!("{id}\n"));
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.to_lowercase().contains("kill"),
        "the last stderr line gives the reason, got {err:?}"
    );
    assert_eq!(c.phase(&id), "Killed");
}

#[test]
fn more_cores_than_the_node_has_fails_as_unschedulable() {
    let Some((c, node)) = cluster("toomany") else {
        return;
    };
    let cores = c.node(&node).unwrap()["status"]["capacity"]["cpu"]
        .as_u64()
        .expect("capacity.cpu");
    let too_many = (cores * 2).to_string();
    // `-c 4` on this 2-core machine: the task can never fit on the named node.
    let id = c.submit(&["-t", &node, "-c", &too_many, "--", "echo", "never"]);
    let task = c.wait_phase(&id, &["Failed", "Pending"], T);
    println!("-c {too_many} on a {cores}-core node: {:#}", task["status"]);
    let task = c.wait_phase(&id, &["Failed"], T);
    assert_eq!(task["status"]["reason"], "Unschedulable");
    let message = task["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&too_many),
        "the reason names the request: {message}"
    );
    assert!(task["status"]["node"].is_null(), "never bound");
    // With -w: non-zero exit and a one-line reason.
    let w = c.kr(&[
        "task", "submit", "-t", &node, "-c", &too_many, "-w", "--", "true",
    ]);
    w.fails();
    assert!(
        w.last_stderr_line().contains("Unschedulable"),
        "reason on stderr: {}",
        w.stderr
    );
}

// ---------------------------------------------------------------- complete logs

#[test]
fn logs_of_many_lines_are_complete_and_in_order() {
    let Some((c, node)) = cluster("manylines") else {
        return;
    };
    let run = c.kr(&[
        "task", "submit", "-t", &node, "-w", "--", "seq", "1", "200000",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    let logs = c.kr(&["task", "logs", id]);
    logs.ok();
    let got = String::from_utf8_lossy(&logs.stdout_bytes);
    assert_eq!(
        logs.stdout_bytes.len(),
        expected.len(),
        "`task logs` of `seq 1 200000` is incomplete: its last line is {:?} (the agent's \
         captured file holds the same bytes; `docker logs` of the container has them all)",
        got.lines().next_back()
    );
    assert!(
        logs.stdout_bytes == expected.as_bytes(),
        "logs differ from seq 1 200000"
    );
}

#[test]
fn follow_streams_output_as_it_is_written_and_ends_with_the_task() {
    let Some((c, node)) = cluster("follow") else {
        return;
    };
    // The task prints its second line only once the test has seen the first through
    // `logs -f`: the stream is proven live by order, not by timing.
    let gate = tempfile::tempdir().unwrap();
    let mount = format!("{}:/gate", gate.path().display());
    let script = "echo one; while [ ! -e /gate/go ]; do sleep 0.1; done; echo two";
    let id = c.submit(&["-t", &node, "--mount", &mount, "--", "sh", "-c", script]);
    c.wait_phase(&id, &["Running"], T);
    // kohakuriver task logs <task_id> -f
    let mut follow = c.stream(&["task", "logs", &id, "-f"]);
    wait_until(T, "the first followed line", || {
        follow.stdout_so_far() == b"one\n"
    });
    assert!(
        follow.wait_exit(Duration::ZERO).is_none(),
        "logs -f stays open while the task runs"
    );
    std::fs::write(gate.path().join("go"), "").unwrap();
    let code = follow
        .wait_exit(T)
        .expect("logs -f ends when the task ends");
    let (out, err) = follow.finish_readers();
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "one\ntwo\n");
    assert_eq!(c.wait_finished(&id, T)["status"]["phase"], "Succeeded");
}

#[test]
fn follow_from_submission_gets_everything() {
    let Some((c, node)) = cluster("followearly") else {
        return;
    };
    let id = c.submit(&["-t", &node, "--", "sh", "-c", &ticker(5)]);
    // Follow at once, while the task may still be Pending.
    let run = c.kr(&["task", "logs", &id, "-f"]);
    run.ok();
    assert_eq!(run.stdout, lines(5));
}

// ---------------------------------------------------------------- task control

#[test]
fn kill_pause_resume_round_trip() {
    let Some((c, node)) = cluster("control") else {
        return;
    };
    let id = c.submit(&["-t", &node, "--", "sh", "-c", &ticker(600)]);
    c.wait_phase(&id, &["Running"], T);
    let log_len = || c.kr(&["task", "logs", &id]).ok().stdout.len();
    wait_until(T, "first output", || log_len() > 0);

    // kohakuriver task pause <task_id>
    let pause = c.kr(&["task", "pause", &id]);
    pause.ok();
    assert!(pause.stdout.contains("paused"), "{}", pause.stdout);
    assert_eq!(
        c.phase(&id),
        "Paused",
        "pause returns once the task is paused"
    );
    let frozen = log_len();
    std::thread::sleep(Duration::from_millis(1200)); // an observation window, not a sync
    assert_eq!(log_len(), frozen, "a paused task prints nothing");
    assert_eq!(c.phase(&id), "Paused");
    // Pausing twice is harmless or a clear message; resume of a paused task works.
    // kohakuriver task resume <task_id>
    let resume = c.kr(&["task", "resume", &id]);
    resume.ok();
    assert!(resume.stdout.contains("resumed"), "{}", resume.stdout);
    assert_eq!(c.phase(&id), "Running");
    wait_until(T, "output growing again after resume", || {
        log_len() > frozen
    });

    // kohakuriver task kill <task_id>
    let kill = c.kr(&["task", "kill", &id]);
    kill.ok();
    let task = c.wait_phase(&id, &["Killed"], T);
    assert_eq!(task["status"]["reason"], "Killed");
    // The container is gone and a second kill/pause/resume says the task has finished.
    for verb in ["kill", "pause", "resume"] {
        let again = c.kr(&["task", verb, &id]);
        again.fails().stderr_has(&id).stderr_has("finished");
    }
}

#[test]
fn pausing_a_finished_task_is_a_clear_error() {
    let Some((c, node)) = cluster("pausedone") else {
        return;
    };
    let id = c.submit(&["-t", &node, "--", "true"]);
    c.wait_phase(&id, &["Succeeded"], T);
    c.kr(&["task", "pause", &id])
        .fails()
        .stderr_has(&id)
        .stderr_has("already finished");
}

// ---------------------------------------------------------------- resources

#[test]
fn cores_are_pinned_inside_the_container() {
    let Some((c, node)) = cluster("cores") else {
        return;
    };
    let cpus_of = |cores: &str| {
        let run = c.kr(&[
            "task",
            "submit",
            "-t",
            &node,
            "-c",
            cores,
            "-w",
            "--",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ]);
        run.code(0);
        let id = run.stdout.trim().to_string();
        let out = c.kr(&["task", "logs", &id]).ok().stdout.clone();
        let inside = out.split(':').nth(1).unwrap_or("").trim().to_string();
        let alloc = c.task(&id)["status"]["allocation"]["cpus"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (inside, alloc)
    };
    let (inside, alloc) = cpus_of("1");
    assert_eq!(inside, alloc, "-c 1: the container sees exactly its core");
    assert!(!inside.contains(['-', ',']), "one core: {inside}");
    let (inside, alloc) = cpus_of("2");
    assert_eq!(inside, alloc, "-c 2");
    assert_eq!(inside, "0-1", "both cores of this 2-core machine");
}

#[test]
fn memory_limit_is_the_cgroup_limit() {
    let Some((c, node)) = cluster("memory") else {
        return;
    };
    for (flag, bytes) in [("8G", 8_000_000_000u64), ("512M", 512_000_000)] {
        // kohakuriver task submit -t mynode -c 4 -m 8G -- … (with -c 1 on 2 cores)
        let run = c.kr(&[
            "task",
            "submit",
            "-t",
            &node,
            "-c",
            "1",
            "-m",
            flag,
            "-w",
            "--",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]);
        run.code(0);
        let id = run.stdout.trim();
        let limit = c.kr(&["task", "logs", id]).ok().stdout.trim().to_string();
        assert_eq!(limit, bytes.to_string(), "-m {flag}");
        assert_eq!(c.task(id)["status"]["allocation"]["memoryBytes"], bytes);
    }
}

// ---------------------------------------------------------------- container options

/// Removes a docker image tag on drop.
struct ImageTag(String);
impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn container_environment_is_loaded_from_shared_storage() {
    if !docker_ready() {
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("input.txt"), "shared data\n").unwrap();
    let env = unique_name("env");
    let image = format!("kohakuriver/{env}:base");
    let _cleanup = ImageTag(image.clone());
    let tar_dir = shared.path().join("kohakuriver-containers");
    std::fs::create_dir_all(&tar_dir).unwrap();
    let tar = tar_dir.join(format!("{env}.tar"));
    let (ok, _, err) = docker(&["tag", IMAGE, &image]);
    assert!(ok, "docker tag: {err}");
    let (ok, _, err) = docker(&["save", "-o", tar.to_str().unwrap(), &image]);
    assert!(ok, "docker save: {err}");
    let (ok, _, err) = docker(&["rmi", &image]);
    assert!(ok, "docker rmi: {err}");

    let mut c = Cluster::start();
    let node = c.add_agent_with(
        "container",
        AgentOptions {
            shared_dir: Some(shared.path().to_path_buf()),
            ..AgentOptions::default()
        },
    );
    // kohakuriver task submit -t mynode --container my-pytorch -- python train.py
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "--container",
        &env,
        "-w",
        "--",
        "sh",
        "-c",
        "pwd; cat input.txt",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    assert_eq!(
        c.kr(&["task", "logs", id]).ok().stdout,
        "/shared\nshared data\n",
        "shared storage at /shared is the working directory"
    );
    assert!(
        docker(&["image", "inspect", &image]).0,
        "{image} was loaded"
    );
}

#[test]
fn unknown_container_environment_fails_clearly() {
    let Some((c, node)) = cluster("noenv") else {
        return;
    };
    let env = unique_name("missing-env");
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "--container",
        &env,
        "-w",
        "--",
        "true",
    ]);
    run.fails();
    let id = run.stdout.trim();
    let task = c.task(id);
    assert_eq!(task["status"]["phase"], "Failed");
    let message = task["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&env),
        "the reason names the environment: {message}"
    );
}

#[test]
fn image_flag_runs_that_image() {
    if !docker_ready() {
        return;
    }
    // No default image on this server: the task names its image.
    let mut c = Cluster::start_with(ServerOptions {
        default_image: None,
        ..ServerOptions::default()
    });
    let node = c.add_agent("image");
    // kohakuriver task submit -t mynode --image ubuntu:22.04 -- apt list
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "--image",
        IMAGE,
        "-w",
        "--",
        "ls",
        "/bin/busybox",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    assert_eq!(c.kr(&["task", "logs", id]).ok().stdout, "/bin/busybox\n");
    assert_eq!(c.task(id)["spec"]["image"], IMAGE);
    c.kr(&["task", "status", id]).ok().stdout_has(IMAGE);
}

#[test]
fn mount_flag_mounts_a_host_directory() {
    let Some((c, node)) = cluster("mount") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("sample.bin"), "x").unwrap();
    std::fs::write(data.path().join("notes.txt"), "y").unwrap();
    let mount = format!("{}:/data", data.path().display());
    // kohakuriver task submit -t mynode --mount /data:/data -- ls /data
    let run = c.kr(&[
        "task", "submit", "-t", &node, "--mount", &mount, "-w", "--", "ls", "/data",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    assert_eq!(
        c.kr(&["task", "logs", id]).ok().stdout,
        "notes.txt\nsample.bin\n"
    );

    // Repeatable, and `:ro` is read-only.
    let other = tempfile::tempdir().unwrap();
    let ro = format!("{}:/ro:ro", other.path().display());
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "--mount",
        &mount,
        "--mount",
        &ro,
        "-w",
        "--",
        "sh",
        "-c",
        "touch /data/new && ! touch /ro/new 2>/dev/null && echo ok",
    ]);
    run.code(0);
    assert!(data.path().join("new").exists());
    assert!(!other.path().join("new").exists());
}

#[test]
fn privileged_flag() {
    let Some((c, node)) = cluster("priv") else {
        return;
    };
    let id = c.submit(&[
        "-t",
        &node,
        "--privileged",
        "--",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    let task = c.wait_finished(&id, T);
    assert_eq!(task["spec"]["privileged"], true);
    c.kr(&["task", "status", &id]).ok().stdout_has("Privileged");
    if privileged_containers_work() {
        assert_eq!(task["status"]["phase"], "Succeeded", "{:#}", task["status"]);
        let caps = c.kr(&["task", "logs", &id]).ok().stdout.clone();
        assert!(
            !caps.contains("00000000a80425fb"),
            "full capabilities: {caps}"
        );
    } else {
        // This Docker engine refuses privileged containers (`docker run --privileged`
        // fails the same way): the task must fail at once with the engine's reason.
        println!(
            "docker cannot run --privileged here; task status: {:#}",
            task["status"]
        );
        assert_eq!(task["status"]["phase"], "Failed");
        assert_eq!(task["status"]["reason"], "StartFailed");
        assert!(!task["status"]["message"].as_str().unwrap_or("").is_empty());
    }
}

#[test]
fn gpu_targeting_allocates_the_named_gpus() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent_with(
        "gpu",
        AgentOptions {
            fake_gpus: Some(2),
            ..AgentOptions::default()
        },
    );
    // kohakuriver task submit -t mynode::0,1 -- python multi_gpu_train.py
    let both = c.submit(&["-t", &format!("{node}::0,1"), "--", "echo", "gpus"]);
    let t = c.wait_finished(&both, T);
    assert_eq!(t["status"]["allocation"]["gpus"], serde_json::json!([0, 1]));
    println!("-t {node}::0,1 → {:#}", t["status"]);
    // kohakuriver task submit -t mynode:0::0,1 -- python train.py
    let numa = c.submit(&["-t", &format!("{node}:0::0,1"), "--", "echo", "gpus"]);
    let t2 = c.wait_finished(&numa, T);
    assert_eq!(
        t2["status"]["allocation"]["gpus"],
        serde_json::json!([0, 1])
    );
    assert_eq!(t2["status"]["allocation"]["numa"], 0);
    let status = c.kr(&["task", "status", &numa]);
    status.ok().stdout_has("gpus 0,1");
    let json = c.kr(&["get", "task", &numa, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(v["status"]["allocation"]["gpus"], serde_json::json!([0, 1]));
    // Fake GPUs and no nvidia runtime: the task fails with a clear reason, no hang.
    for t in [&t, &t2] {
        if t["status"]["phase"] != "Succeeded" {
            assert_eq!(t["status"]["phase"], "Failed");
            let message = t["status"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("nvidia") || message.to_lowercase().contains("gpu"),
                "the reason explains the GPU failure: {message}"
            );
        }
    }
}

// ---------------------------------------------------------------- monitoring

#[test]
fn task_status_shows_the_details() {
    let Some((c, node)) = cluster("status") else {
        return;
    };
    let id = c.submit(&["-t", &node, "-m", "256M", "--", "sh", "-c", "exit 7"]);
    c.wait_phase(&id, &["Failed"], T);
    // kohakuriver task status <task_id>
    let s = c.kr(&["task", "status", &id]);
    s.ok();
    for needle in [
        id.as_str(),
        "Failed",
        node.as_str(),
        "Exit code:",
        "7",
        "exit 7",
        "Allocation:",
        "Attempts:",
        "Submitted:",
        "Finished:",
        "Conditions:",
    ] {
        s.stdout_has(needle);
    }
}

#[test]
fn task_watch_ends_when_the_task_ends() {
    let Some((c, node)) = cluster("watch") else {
        return;
    };
    // Watch a few tasks from right after submission: every watch must follow its task to
    // the end (this also catches a start-up race in `task watch`).
    for round in 0..3 {
        let id = c.submit(&["-t", &node, "--", "sh", "-c", "sleep 1; echo done"]);
        // kohakuriver task watch <task_id>
        let w = c.kr(&["task", "watch", &id]);
        assert_eq!(
            w.code, 0,
            "round {round}: `task watch {id}` right after submit failed: {}",
            w.stderr
        );
        assert!(!w.stdout.contains('\x1b'), "no escape codes when not a TTY");
        let last_phase = w
            .stdout
            .lines()
            .rfind(|l| l.trim_start().starts_with("Phase:"))
            .unwrap_or("");
        assert!(last_phase.contains("Succeeded"), "{}", w.stdout);
        assert_eq!(c.phase(&id), "Succeeded");
    }
}

#[test]
fn task_watch_of_a_running_task() {
    let Some((c, node)) = cluster("watchrun") else {
        return;
    };
    let id = c.submit(&["-t", &node, "--", "sh", "-c", "sleep 2"]);
    c.wait_phase(&id, &["Running"], T);
    let w = c.kr(&["task", "watch", &id]);
    assert_eq!(w.code, 0, "`task watch` of a running task: {}", w.stderr);
    assert!(w.stdout.contains("Running") && w.stdout.contains("Succeeded"));
}

#[test]
fn node_list_status_and_task_list() {
    let Some((c, node)) = cluster("nodes") else {
        return;
    };
    let done = c.submit(&["-t", &node, "--", "true"]);
    c.wait_phase(&done, &["Succeeded"], T);
    let running = c.submit(&["-t", &node, "--", "sleep", "60"]);
    c.wait_phase(&running, &["Running"], T);

    let list = c.kr(&["node", "list"]);
    list.ok();
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&node))
        .unwrap_or_else(|| panic!("node list lacks {node}: {}", list.stdout));
    assert!(row.contains("Ready"), "{row}");

    let status = c.kr(&["node", "status", &node]);
    status.ok();
    for needle in [
        "Capacity:",
        "Allocatable:",
        "NUMA",
        "Heartbeat",
        "Tasks:",
        &running,
    ] {
        status.stdout_has(needle);
    }
    c.kr(&["node", "status", "no-such-node"])
        .fails()
        .stderr_has("no-such-node");

    // task list -s running -n NODE
    let tl = c.kr(&["task", "list", "-s", "running", "-n", &node]);
    tl.ok().stdout_has(&running);
    assert!(
        !tl.stdout.contains(&done),
        "only running tasks: {}",
        tl.stdout
    );
    let all = c.kr(&["task", "list"]);
    all.ok().stdout_has(&running).stdout_has(&done);
    c.kr(&["task", "kill", &running]).ok();
}

#[test]
fn wait_for_condition_and_for_delete() {
    let Some((c, node)) = cluster("waitcmd") else {
        return;
    };
    let id = c.submit(&["-t", &node, "--", "sh", "-c", "sleep 1"]);
    let target = format!("task/{id}");
    c.kr(&[
        "wait",
        &target,
        "--for=condition=Succeeded",
        "--timeout",
        "60s",
    ])
    .ok();
    assert_eq!(c.phase(&id), "Succeeded");
    // A condition that cannot be met times out with a non-zero exit.
    c.kr(&["wait", &target, "--for=condition=Failed", "--timeout", "1s"])
        .fails();
    c.kr(&["delete", "task", &id]).ok();
    c.kr(&["wait", &target, "--for=delete", "--timeout", "60s"])
        .ok();
    assert!(c.get_json(&format!("tasks/{id}")).is_none());
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_flag_values_name_the_value_and_the_expectation() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::start();
    let cases: &[(&[&str], &[&str])] = &[
        (&["-t", "n", "-m", "8X", "--", "true"], &["8X", "512M"]),
        (
            &["-t", "host:x", "--", "true"],
            &["host:x", "hostname[:numa][::gpu"],
        ),
        (&["-t", "n", "-c", "-1", "--", "true"], &["-1", "cores"]),
        (
            &["-t", "n", "--image", "a", "--container", "b", "--", "true"],
            &["--image", "--container"],
        ),
    ];
    for (args, needles) in cases {
        let mut full = vec!["task", "submit"];
        full.extend_from_slice(args);
        let run = c.kr(&full);
        run.code(2);
        assert!(run.stdout.is_empty(), "no id on stdout: {}", run.stdout);
        for n in *needles {
            run.stderr_has(n);
        }
    }
    // The `--` is required, and forgetting it says so.
    let run = c.kr(&["task", "submit", "-t", "n", "echo", "hi"]);
    run.fails();
    assert!(run.stdout.is_empty());
    run.stderr_has("put the command after `--`");
    // Nothing was created.
    let list = c.get_json("tasks").unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list:#}");
}

#[test]
fn unknown_task_ids_are_clear_errors() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::start();
    let id = "7234512345678901234";
    for verb in ["logs", "kill", "status", "pause", "resume", "watch"] {
        let run = c.kr(&["task", verb, id]);
        run.fails().stderr_has(id).stderr_has("not found");
    }
    c.kr(&[
        "wait",
        &format!("task/{id}"),
        "--for=condition=Succeeded",
        "--timeout",
        "2s",
    ])
    .fails()
    .stderr_has(id);
}

#[test]
fn every_command_help_shows_an_example() {
    let commands: &[&[&str]] = &[
        &["server"],
        &["controllers"],
        &["agent"],
        &["up"],
        &["apply"],
        &["diff"],
        &["get"],
        &["describe"],
        &["delete"],
        &["task", "submit"],
        &["task", "logs"],
        &["task", "kill"],
        &["task", "pause"],
        &["task", "resume"],
        &["task", "status"],
        &["task", "watch"],
        &["task", "list"],
        &["node", "list"],
        &["node", "status"],
        &["node", "cordon"],
        &["node", "uncordon"],
        &["wait"],
        &["login"],
        &["whoami"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
    ];
    let mut missing = Vec::new();
    for cmd in commands {
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.push("--help".into());
        let run = kohakuriver_tests::Run::exec(kohakuriver_tests::binary(), &args, T);
        run.ok();
        if !run.stdout.contains("Example") {
            missing.push(cmd.join(" "));
        }
    }
    assert!(
        missing.is_empty(),
        "`--help` shows no example for: {}",
        missing.join(", ")
    );
}

// ---------------------------------------------------------------- kohakuriver up

#[test]
fn up_starts_fast_and_runs_a_task() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::up("up");
    let node = c.up_node().to_string();
    println!(
        "kohakuriver up answered /healthz {:?} after spawning",
        c.startup
    );
    let banner = c
        .server_proc()
        .wait_stdout("Stop with Ctrl-C", Duration::from_secs(30));
    assert!(
        banner.contains(c.url()),
        "up prints where it listens: {banner}"
    );
    assert!(
        banner.contains("task submit"),
        "and how to submit: {banner}"
    );
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "-w",
        "--",
        "echo",
        "Hello World",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    assert_eq!(c.kr(&["task", "logs", id]).ok().stdout, "Hello World\n");
}
