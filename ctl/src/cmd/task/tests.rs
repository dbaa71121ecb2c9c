//! Unit tests of the `task` commands' pure parts: flags to task, ids, refusals, wording.

use super::control::*;
use super::submit::*;
use super::waiting::*;
use super::*;
use clap::Parser;
use kohakuriver_api::Task;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    task: TaskCommand,
}

fn submit_args(argv: &[&str]) -> Result<SubmitArgs, String> {
    let mut full = vec!["test", "submit"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full) {
        Ok(Cli {
            task: TaskCommand::Submit(a),
        }) => Ok(*a),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn seed_examples_build_the_right_task() {
    let a = submit_args(&["-t", "mynode", "--", "echo", "Hello World"]).unwrap();
    let t = task_from_submit(&a, "x".into());
    assert_eq!(t.spec.command, ["echo", "Hello World"]);
    assert_eq!(t.spec.placement.node.as_deref(), Some("mynode"));
    assert_eq!(t.spec.resources.cpu, 1);

    let a = submit_args(&[
        "-t",
        "mynode",
        "-c",
        "4",
        "-m",
        "8G",
        "--",
        "python",
        "/shared/train.py",
        "--batch-size",
        "32",
    ])
    .unwrap();
    let t = task_from_submit(&a, "x".into());
    assert_eq!(t.spec.resources.cpu, 4);
    assert_eq!(
        t.spec.resources.memory.as_ref().map(Memory::bytes),
        Some(8_000_000_000)
    );
    assert_eq!(t.spec.command.last().map(String::as_str), Some("32"));

    let a = submit_args(&["-t", "mynode:0::0,1", "--", "python", "train.py"]).unwrap();
    let t = task_from_submit(&a, "x".into());
    assert_eq!(t.spec.placement.numa, Some(0));
    assert_eq!(t.spec.placement.gpu_ids, Some(vec![0, 1]));

    let a = submit_args(&[
        "-t",
        "mynode",
        "--mount",
        "/data:/data",
        "--privileged",
        "--",
        "ls",
        "/data",
    ])
    .unwrap();
    let t = task_from_submit(&a, "x".into());
    assert_eq!(t.spec.mounts, ["/data:/data"]);
    assert!(t.spec.privileged);

    let a = submit_args(&[
        "-t",
        "mynode",
        "--image",
        "ubuntu:22.04",
        "--",
        "apt",
        "list",
    ])
    .unwrap();
    assert_eq!(
        task_from_submit(&a, "x".into()).spec.image.as_deref(),
        Some("ubuntu:22.04")
    );
    let a = submit_args(&[
        "-t",
        "mynode",
        "--container",
        "my-pytorch",
        "--",
        "python",
        "train.py",
    ])
    .unwrap();
    assert_eq!(
        task_from_submit(&a, "x".into()).spec.container.as_deref(),
        Some("my-pytorch")
    );
}

#[test]
fn targets_repeat_and_dependencies_build_depends_on() {
    let a = submit_args(&["-t", "n1", "-t", "n2::0", "--", "hostname"]).unwrap();
    let nodes: Vec<Option<String>> = a
        .targets
        .iter()
        .map(|t| task_for_target(&a, "x".into(), Some(t)).spec.placement.node)
        .collect();
    assert_eq!(nodes, [Some("n1".to_string()), Some("n2".to_string())]);
    assert_eq!(
        task_from_submit(&a, "x".into())
            .spec
            .placement
            .node
            .as_deref(),
        Some("n1")
    );
    let a = submit_args(&[
        "--after",
        "a,b",
        "--after",
        "c",
        "--after-any",
        "d",
        "--",
        "true",
    ])
    .unwrap();
    let deps: Vec<String> = task_from_submit(&a, "x".into())
        .spec
        .depends_on
        .iter()
        .map(|d| format!("{}:{:?}", d.name, d.condition))
        .collect();
    assert_eq!(
        deps,
        ["a:Succeeded", "b:Succeeded", "c:Succeeded", "d:Finished"]
    );
    let plain = submit_args(&["--", "true"]).unwrap();
    assert!(
        task_from_submit(&plain, "x".into())
            .spec
            .depends_on
            .is_empty()
    );
}

#[test]
fn bad_flags_name_the_value() {
    for (argv, want) in [
        (vec!["-m", "8X", "--", "x"], "invalid memory size \"8X\""),
        (vec!["-t", "host:x", "--", "x"], "NUMA node \"x\""),
        (
            vec!["-c", "-1", "--", "x"],
            "\"-1\" is not a number of cores",
        ),
        (
            vec!["--image", "a", "--container", "b", "--", "x"],
            "cannot be used with",
        ),
        (vec!["-t", "n", "echo"], "unexpected argument"),
        (vec!["-t", "n"], "required"),
        (
            vec!["--env", "NOVALUE", "--", "x"],
            "\"NOVALUE\" is not KEY=VALUE",
        ),
    ] {
        let e = submit_args(&argv).unwrap_err();
        assert!(e.contains(want), "{argv:?}: {e}");
    }
}

#[test]
fn snowflakes_are_valid_distinct_names() {
    let a = snowflake_id();
    let b = snowflake_id();
    assert_ne!(a, b);
    assert!(kohakuriver_api::validation::check_dns_label(&a).is_ok());
}

#[test]
fn control_refusals() {
    let done = Task::test("t").phase(TaskPhase::Succeeded);
    assert!(
        control_refusal(&done, Control::Pause)
            .unwrap()
            .contains("already finished (Succeeded)")
    );
    let pending = Task::test("t");
    assert!(
        control_refusal(&pending, Control::Pause)
            .unwrap()
            .contains("only a Running task")
    );
    assert!(control_refusal(&pending, Control::Kill).is_none());
    let running = Task::test("t").phase(TaskPhase::Running);
    assert!(
        control_refusal(&running, Control::Resume)
            .unwrap()
            .contains("not Paused")
    );
    assert!(control_refusal(&running, Control::Pause).is_none());
}

#[test]
fn kill_says_what_happens_and_137_is_explained() {
    assert_eq!(
        kill_progress("t1", Some(0)),
        "task/t1: kill requested; its node sends SIGKILL at once"
    );
    assert!(kill_progress("t1", Some(30)).contains("SIGTERM, then SIGKILL after 30s"));
    assert!(kill_progress("t1", None).contains("--kill-grace (10s by default)"));
    assert_eq!(signal_meaning(0), None);
    assert_eq!(signal_meaning(1), None);
    assert_eq!(signal_meaning(128), None);
    assert_eq!(signal_meaning(143).as_deref(), Some("killed by SIGTERM"));
    assert!(
        signal_meaning(137)
            .unwrap()
            .starts_with("killed by SIGKILL: it did not stop on SIGTERM")
    );
    assert_eq!(signal_meaning(138).as_deref(), Some("killed by signal 10"));
    let mut t = Task::new("t1", vec!["sleep".into()]);
    t.status.phase = TaskPhase::Killed;
    t.status.exit_code = Some(137);
    assert!(ending_line(&t).starts_with("task t1 killed with exit code 137 (killed by SIGKILL"));
}

#[test]
fn exit_codes() {
    let mut t = Task::test("t").phase(TaskPhase::Failed);
    t.status.exit_code = Some(3);
    assert_eq!(exit_code_of(&t), 3);
    t.status.exit_code = None;
    assert_eq!(exit_code_of(&t), 1);
    assert_eq!(
        exit_code_of(&Task::test("t").phase(TaskPhase::Succeeded)),
        0
    );
    let mut k = Task::test("t").phase(TaskPhase::Killed);
    k.status.exit_code = Some(137);
    assert_eq!(exit_code_of(&k), 137);
}
