//! A new user's first hour (issue 13): mistakes get answers at submit time, and waits
//! explain themselves. Real binary, real server.

use std::time::Duration;

use kohakuriver_tests::{Cluster, unique_name, wait_until};

const T: Duration = Duration::from_secs(60);

/// A task pinned to a node that has not registered (a typo, or a machine not joined yet)
/// waits for it, says so on stderr at submit time, and runs once the node joins.
#[test]
fn a_task_for_an_unregistered_node_waits_and_says_so() {
    let mut c = Cluster::start();
    let late = unique_name("late");
    let run = c.kr(&["task", "submit", "-t", &late, "--", "echo", "hi"]);
    run.ok();
    let id = run.stdout.trim().to_string();
    assert!(
        run.stderr.contains(&format!(
            "node {late:?} is not registered; the task waits for it"
        )),
        "{}",
        run.stderr
    );
    wait_until(T, "reason NodeNotFound", || {
        c.task(&id)["status"]["reason"] == "NodeNotFound"
    });
    assert_eq!(c.phase(&id), "Pending");
    // The machine joins under that name: the task runs there.
    let joined = c.add_agent_named(&late);
    assert_eq!(joined, late);
    let done = c.wait_finished(&id, T);
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    assert_eq!(c.kr(&["task", "logs", &id]).stdout, "hi\n");
}

/// The quick start's lines run one after another: `task logs` right after `task submit`
/// shows the output instead of failing because the task has not started yet.
#[test]
fn task_logs_right_after_submit_shows_the_output() {
    let mut c = Cluster::start();
    let node = c.add_agent("quick");
    let id = c.submit(&["-t", &node, "--", "echo", "Hello World"]);
    let logs = c.kr(&["task", "logs", &id]);
    logs.ok();
    assert_eq!(logs.stdout, "Hello World\n", "stderr: {}", logs.stderr);
}

/// `task status` of a finished task labels the spec's state as what was desired, so a
/// Succeeded task does not seem to say "State: Running".
#[test]
fn a_finished_task_shows_its_desired_state_as_such() {
    let mut c = Cluster::start();
    let node = c.add_agent("desired");
    let id = c.submit(&["-t", &node, "-w", "--", "true"]);
    let status = c.kr(&["task", "status", &id]);
    status.ok();
    assert!(
        status.stdout.contains("Desired state: Running"),
        "{}",
        status.stdout
    );
    assert!(
        !status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("State:")),
        "{}",
        status.stdout
    );
}

/// A second server on a port in use says which flag to change.
#[test]
fn a_busy_listen_address_names_the_flag() {
    let c = Cluster::start();
    let port = c.port();
    let dir = tempfile::tempdir().unwrap();
    let run = c.kr_plain(&[
        "server",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--listen"), "{}", run.stderr);
}

/// `task submit --attach` streams stdout and stderr while it waits and exits with the
/// task's code, as `docker run` does.
#[test]
fn submit_attach_streams_both_outputs_and_exits_with_the_code() {
    let mut c = Cluster::start();
    let node = c.add_agent("attach");
    let run = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "--attach",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 4",
    ]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    let id = lines.next().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "{}", run.stdout);
    assert_eq!(lines.collect::<Vec<_>>(), ["to-out"], "{}", run.stdout);
    assert!(run.stderr.contains("to-err"), "{}", run.stderr);
}

/// Ctrl-C on `task submit -w` says that the task keeps running and how to stop it.
#[test]
fn ctrl_c_on_a_wait_says_the_task_keeps_running() {
    let mut c = Cluster::start();
    let node = c.add_agent("ctrlc");
    let mut waiting = c.stream(&["task", "submit", "-t", &node, "-w", "--", "sleep", "30"]);
    wait_until(T, "the task id on stdout", || {
        !waiting.stdout_so_far().is_empty()
    });
    let id = String::from_utf8_lossy(&waiting.stdout_so_far())
        .trim()
        .to_string();
    c.wait_phase(&id, &["Running"], T);
    let pid = waiting.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let code = waiting.wait_exit(T).expect("exits after Ctrl-C");
    assert_eq!(code, 130);
    let (_, stderr) = waiting.finish_readers();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        stderr.contains(&format!("task {id} keeps running"))
            && stderr.contains("kohakuriver task kill"),
        "{stderr}"
    );
    assert_eq!(c.phase(&id), "Running");
    c.kr(&["task", "kill", &id]).ok();
}

/// `task kill` says what its node does while it does it, `--now` skips the grace a
/// SIGTERM-deaf `sleep` would otherwise wait out, `--grace` is stored with the kill, and
/// exit code 137 is explained.
#[test]
fn kill_says_what_happens_and_takes_a_grace() {
    let mut c = Cluster::start();
    let node = c.add_agent("kill");
    let now = c.submit(&["-t", &node, "--", "sleep", "300"]);
    let later = c.submit(&["-t", &node, "--", "sleep", "300"]);
    c.wait_phase(&now, &["Running"], T);
    c.wait_phase(&later, &["Running"], T);

    let run = c.kr(&["task", "kill", "--now", &now]);
    run.ok();
    assert!(
        run.stderr.contains("SIGKILL at once"),
        "kill says what its node does: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains("exit code 137 (killed by SIGKILL"),
        "137 is explained: {}",
        run.stdout
    );
    assert_eq!(c.task(&now)["spec"]["killGraceSeconds"], 0);

    let run = c.kr(&["task", "kill", "--grace", "2s", &later]);
    run.ok();
    assert!(
        run.stderr.contains("SIGTERM, then SIGKILL after 2s"),
        "{}",
        run.stderr
    );
    assert_eq!(c.task(&later)["spec"]["killGraceSeconds"], 2);
    assert_eq!(c.phase(&later), "Killed");
    c.kr(&["describe", "task", &later])
        .ok()
        .stdout_has("137 (killed by SIGKILL");

    // A grace over an hour is refused by the server, naming the field and the limit.
    let waiting = c.submit(&["-t", &unique_name("nowhere"), "--", "true"]);
    c.kr(&["task", "kill", "--grace", "2h", &waiting])
        .fails()
        .stderr_has("spec.killGraceSeconds: 7200 is more than the 3600 allowed");
}

/// With no image anywhere (no `--image`, no `--container`, no default on the server or
/// the node), `task submit` is refused at once with what to do, instead of failing later
/// on the node; naming an image works, and a task sent before any node exists waits.
#[test]
fn a_task_with_no_image_anywhere_is_refused_at_submit() {
    let mut c = Cluster::start_with(kohakuriver_tests::ServerOptions {
        default_image: None,
        ..Default::default()
    });
    let early = c.submit(&["--", "true"]);
    assert_eq!(c.phase(&early), "Pending", "no node yet: it waits");
    let node = c.add_agent("noimage");
    c.kr(&["task", "submit", "-t", &node, "--", "true"])
        .fails()
        .stderr_has("spec.image")
        .stderr_has(&format!(
            "neither the server nor node {node:?} has a default image"
        ))
        .stderr_has("--image IMAGE");
    c.kr(&["task", "submit", "--", "true"])
        .fails()
        .stderr_has("--default-image IMAGE");
    let id = c.submit(&[
        "-t",
        &node,
        "--image",
        kohakuriver_tests::IMAGE,
        "--",
        "true",
    ]);
    let done = c.wait_finished(&id, T);
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
}
