//! Dependencies between tasks (`spec.dependsOn`, `task submit --after/--after-any`) and
//! batch submission with several `-t`, against the real binary, server, agents and Docker
//! (#15). The refusals at admission and an upstream deleted before it ran need no Docker.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kohakuriver_tests::{AgentOptions, Cluster, docker_ready, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A cluster with one agent whose shared dir is a temp dir (at `/shared` in tasks); `None`
/// when Docker tests are skipped.
fn cluster(prefix: &str) -> Option<(Cluster, tempfile::TempDir)> {
    if !docker_ready() {
        return None;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start();
    c.add_agent_with(
        prefix,
        AgentOptions {
            shared_dir: Some(shared.path().to_path_buf()),
            ..AgentOptions::default()
        },
    );
    Some((c, shared))
}

/// Waits until the task's `status.reason` is `reason`; returns the task.
fn wait_reason(c: &Cluster, id: &str, reason: &str) -> Value {
    wait_for(T, &format!("task {id} with reason {reason}"), || {
        let t = c.task(id);
        (t["status"]["reason"] == reason).then_some(t)
    })
}

fn time(task: &Value, field: &str) -> DateTime<Utc> {
    let text = task["status"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no status.{field} in {:#}", task["status"]));
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339 time")
        .with_timezone(&Utc)
}

/// Asserts that `later` started only once `earlier` had finished.
fn ran_after(c: &Cluster, earlier: &str, later: &str) {
    let (e, l) = (c.task(earlier), c.task(later));
    assert!(
        time(&l, "startedAt") >= time(&e, "finishedAt"),
        "{later} started at {} before {earlier} finished at {}",
        l["status"]["startedAt"],
        e["status"]["finishedAt"]
    );
}

#[test]
fn a_then_b_then_c_runs_in_order() {
    let Some((c, shared)) = cluster("chain") else {
        return;
    };
    // `a` runs until the test lets it finish, so the waiting can be looked at.
    let a = c.submit(&[
        "--",
        "sh",
        "-c",
        "while [ ! -e /shared/go ]; do sleep 0.1; done; echo a",
    ]);
    let b = c.submit(&["--after", &a, "--", "echo", "b"]);
    let last = c.submit(&["--after", &b, "--", "echo", "c"]);
    c.wait_phase(&a, &["Running"], T);
    let waiting = wait_reason(&c, &b, "WaitingForDependencies");
    assert_eq!(
        waiting["status"]["message"],
        format!("waiting for task {a} to succeed").as_str()
    );
    assert_eq!(waiting["status"]["phase"], "Pending");
    assert!(waiting["status"]["node"].is_null(), "{waiting:#}");
    let waiting = wait_reason(&c, &last, "WaitingForDependencies");
    assert_eq!(
        waiting["status"]["message"],
        format!("waiting for task {b} to succeed").as_str()
    );
    // Users see what it waits for in `task status` (describe) and `get -o wide`.
    c.kr(&["task", "status", &b])
        .ok()
        .stdout_has("WaitingForDependencies")
        .stdout_has(&format!("waiting for task {a} to succeed"))
        .stdout_has(&format!("{a} (to succeed)"));
    c.kr(&["get", "tasks", &b, "-o", "wide"])
        .ok()
        .stdout_has("WaitingForDependencies");

    std::fs::write(shared.path().join("go"), "").expect("write the go file");
    c.wait_phase(&last, &["Succeeded"], T);
    assert_eq!(c.phase(&b), "Succeeded");
    ran_after(&c, &a, &b);
    ran_after(&c, &b, &last);
    assert_eq!(c.kr(&["task", "logs", &last]).ok().stdout, "c\n");
}

#[test]
fn the_pipeline_manifest_applies_as_it_stands_and_runs_in_order() {
    let Some((c, _shared)) = cluster("pipeline") else {
        return;
    };
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/pipeline.yaml");
    let file = file.display().to_string();
    let run = c.kr(&["apply", "-f", &file]);
    assert_eq!(
        run.ok().stdout,
        "task/pipeline-preprocess created\ntask/pipeline-train created\ntask/pipeline-eval created\n"
    );
    c.wait_phase("pipeline-eval", &["Succeeded"], T);
    ran_after(&c, "pipeline-preprocess", "pipeline-train");
    ran_after(&c, "pipeline-train", "pipeline-eval");
    assert_eq!(
        c.kr(&["task", "logs", "pipeline-eval"]).ok().stdout,
        "accuracy 0.93\n"
    );
    let again = c.kr(&["apply", "-f", &file]);
    assert_eq!(again.ok().stdout.matches(" unchanged\n").count(), 3);
}

#[test]
fn a_failure_fails_the_dependents_each_naming_its_upstream() {
    let Some((c, _shared)) = cluster("fail") else {
        return;
    };
    let a = c.submit(&["--", "sh", "-c", "sleep 1; exit 3"]);
    let b = c.submit(&["--after", &a, "--", "echo", "b"]);
    let last = c.submit(&["--after", &b, "--retries", "2", "--", "echo", "c"]);
    let any = c.submit(&["--after-any", &a, "--", "echo", "after any"]);
    let ended = c.wait_finished(&last, T);
    assert_eq!(ended["status"]["phase"], "Failed", "{ended:#}");
    assert_eq!(ended["status"]["reason"], "DependencyFailed");
    assert_eq!(
        ended["status"]["message"],
        format!("upstream {b} ended Failed (DependencyFailed)").as_str()
    );
    assert!(
        ended["status"]["startedAt"].is_null(),
        "never started: {ended:#}"
    );
    let b_task = c.task(&b);
    assert_eq!(b_task["status"]["phase"], "Failed");
    assert_eq!(b_task["status"]["reason"], "DependencyFailed");
    assert_eq!(
        b_task["status"]["message"],
        format!("upstream {a} ended Failed (Error, exit code 3)").as_str()
    );
    // afterany runs whatever the upstream's outcome.
    c.wait_phase(&any, &["Succeeded"], T);
    // `-w` on a dependent that can never run exits 1 and says why.
    let run = c.kr(&["task", "submit", "--after", &a, "-w", "--", "true"]);
    run.code(1).stderr_has("DependencyFailed");
    // A DependencyFailed task is not retried, whatever its retries say.
    assert_eq!(c.task(&last)["status"]["phase"], "Failed");
    assert!(c.task(&last)["status"]["retryAfter"].is_null());
}

#[test]
fn a_dependent_waits_for_the_upstreams_final_outcome_not_a_retried_attempt() {
    if !docker_ready() {
        return;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start_with(kohakuriver_tests::ServerOptions {
        retry_backoff: Some("1s".into()),
        ..Default::default()
    });
    c.add_agent_with(
        "retry",
        AgentOptions {
            shared_dir: Some(shared.path().to_path_buf()),
            ..AgentOptions::default()
        },
    );
    // Fails its first attempt, succeeds its second.
    let a = c.submit(&[
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        "if [ -e /shared/tried ]; then echo ok; else touch /shared/tried; exit 3; fi",
    ]);
    let b = c.submit(&["--after", &a, "--", "echo", "b"]);
    c.wait_phase(&b, &["Succeeded"], T);
    assert_eq!(c.task(&a)["status"]["attempts"], 2);
    ran_after(&c, &a, &b);
}

#[test]
fn three_targets_run_one_task_per_node() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let nodes: Vec<String> = (0..3).map(|i| c.add_agent(&format!("batch{i}"))).collect();
    let mut args = vec!["task", "submit"];
    for node in &nodes {
        args.extend(["-t", node.as_str()]);
    }
    args.extend(["-w", "--", "echo", "batch"]);
    let run = c.kr(&args);
    run.ok();
    let ids: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(ids.len(), 3, "one id per line: {:?}", run.stdout);
    for (id, node) in ids.iter().zip(&nodes) {
        let task = c.task(id);
        assert_eq!(task["status"]["phase"], "Succeeded", "{task:#}");
        assert_eq!(task["status"]["node"], node.as_str());
    }
    // With -w, the first task that did not succeed gives the exit code.
    let run = c.kr(&[
        "task", "submit", "-t", &nodes[0], "-t", &nodes[1], "-w", "--", "sh", "-c", "exit 4",
    ]);
    run.code(4)
        .stderr_has("2 of 2 tasks did not succeed; exiting with task");
    assert_eq!(run.stdout.lines().count(), 2);
}

#[test]
fn a_cycle_a_missing_upstream_and_a_self_dependency_are_refused() {
    // No agent: the tasks stay Pending, which is all admission needs.
    let c = Cluster::start();
    let a = c.submit(&["--name", "cyc-a", "--", "true"]);
    c.submit(&["--name", "cyc-b", "--after", &a, "--", "true"]);
    let path = c.dir().join("cycle.yaml");
    std::fs::write(
        &path,
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: cyc-a}\nspec:\n  command: [\"true\"]\n  dependsOn: [{name: cyc-b}]\n",
    )
    .expect("write manifest");
    c.kr(&["apply", "-f", &path.display().to_string()])
        .fails()
        .stderr_has("these dependencies make a cycle: cyc-a -> cyc-b -> cyc-a");
    c.kr(&["task", "submit", "--after", "ghost", "--", "true"])
        .fails()
        .stderr_has("task \"ghost\" does not exist");
    c.kr(&[
        "task", "submit", "--name", "me", "--after", "me", "--", "true",
    ])
    .fails()
    .stderr_has("task \"me\" cannot depend on itself");
    // A file listing dependents first is created upstream first.
    let path = c.dir().join("reversed.yaml");
    std::fs::write(
        &path,
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: rev-c}\nspec:\n  command: [\"true\"]\n  dependsOn: [{name: rev-b}]\n---\napiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: rev-b}\nspec:\n  command: [\"true\"]\n  dependsOn: [{name: rev-a}]\n---\napiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: rev-a}\nspec:\n  command: [\"true\"]\n",
    )
    .expect("write manifest");
    assert_eq!(
        c.kr(&["apply", "-f", &path.display().to_string()])
            .ok()
            .stdout,
        "task/rev-a created\ntask/rev-b created\ntask/rev-c created\n"
    );
}

#[test]
fn an_upstream_deleted_before_it_succeeded_fails_its_dependents() {
    let c = Cluster::start();
    let a = c.submit(&["--", "true"]);
    let b = c.submit(&["--after", &a, "--", "true"]);
    wait_reason(&c, &b, "WaitingForDependencies");
    c.kr(&["delete", "task", &a]).ok();
    let ended = wait_reason(&c, &b, "DependencyFailed");
    assert_eq!(ended["status"]["phase"], "Failed");
    assert_eq!(
        ended["status"]["message"],
        format!("upstream {a} was deleted before it succeeded").as_str()
    );
}
