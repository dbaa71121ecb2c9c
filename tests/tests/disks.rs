//! Whole-system tests of the node agent's disk bounds and of graceful shutdown, with the
//! real binary: a task deleted by its TTL loses its captured output on the node; output
//! expired by `--log-retention` makes `task logs` say why; an agent SIGTERMed while it
//! starts tasks exits 0 within its `--shutdown-timeout`, and once restarted every task runs
//! exactly once.

use std::time::{Duration, Instant};

use kohakuriver_tests::{AgentOptions, Cluster, docker, docker_ready, wait_until};

const T: Duration = Duration::from_secs(120);

#[test]
fn a_task_deleted_by_its_ttl_loses_its_captured_output() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent("ttllogs");
    let manifest = c.dir().join("ttl.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: ttl-logs\nspec:\n  command: [echo, hi]\n  placement:\n    node: {node}\n  ttlSecondsAfterFinished: 5\n"
        ),
    )
    .unwrap();
    c.kr(&["apply", "-f", manifest.to_str().unwrap()]).ok();
    let uid = c.task("ttl-logs")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = c
        .agent_data_dir(&node)
        .join("agent")
        .join("logs")
        .join(format!("ttl-logs-{uid}"));
    // Made when the container is, and kept at least until the TTL runs out.
    wait_until(T, "the capture directory made", || dir.exists());
    wait_until(T, "the task deleted by its TTL", || {
        c.get_json("tasks/ttl-logs").is_none()
    });
    wait_until(T, "the capture directory removed", || !dir.exists());
}

#[test]
fn logs_expired_by_retention_say_why() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent_with(
        "retention",
        AgentOptions {
            extra_args: vec!["--log-retention".into(), "2s".into()],
            ..Default::default()
        },
    );
    let id = c.submit(&["-t", &node, "--", "echo", "hi"]);
    c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(c.kr(&["task", "logs", &id]).stdout, "hi\n");
    let logs = kohakuriver_tests::wait_for(T, "the output expired", || {
        let run = c.kr(&["task", "logs", &id]);
        (run.code != 0).then_some(run)
    });
    assert!(
        logs.stderr.contains("--log-retention"),
        "{}",
        logs.describe()
    );
    assert!(logs.stderr.contains("removed"), "{}", logs.describe());
    // The task object is kept.
    assert_eq!(c.phase(&id), "Succeeded");
}

#[test]
fn an_agent_stopped_while_starting_tasks_exits_in_time_and_runs_each_once() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent_with(
        "graceful",
        AgentOptions {
            extra_args: vec!["--shutdown-timeout".into(), "10s".into()],
            ..Default::default()
        },
    );
    let ids: Vec<String> = (0..2)
        .map(|_| c.submit(&["-t", &node, "--", "sh", "-c", "echo one; sleep 2; echo two"]))
        .collect();
    // SIGTERM as soon as the first task is bound to the node: the agent is about to pull,
    // create or start containers.
    wait_until(T, "a task bound", || {
        c.task(&ids[0])["status"]["node"].as_str() == Some(node.as_str())
    });
    let asked = Instant::now();
    let status = c
        .stop_agent_status(&node, Duration::from_secs(60))
        .expect("the agent exits by itself after SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "the agent exits 0: {status}");
    assert!(
        took < Duration::from_secs(60),
        "the agent exited within the bound ({took:?})"
    );
    c.restart_agent(&node);
    for id in &ids {
        let done = c.wait_phase(id, &["Succeeded"], T);
        assert_eq!(
            done["status"]["attempts"], 1,
            "ran once: {:#}",
            done["status"]
        );
        assert_eq!(
            c.kr(&["task", "logs", id]).ok().stdout,
            "one\ntwo\n",
            "one run's output, once"
        );
        wait_until(T, "no container left", || {
            let (ok, out, _) = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("name=^kohakuriver-task-{id}$"),
            ]);
            ok && out.trim().is_empty()
        });
    }
}
