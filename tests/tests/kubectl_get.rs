//! The real kubectl reading the cluster: `get` through the server-side `Table` (default and
//! wide columns, one object, nodes, selectors), the formats that ask for plain JSON
//! (`jsonpath`, `name`, `custom-columns`), `get -w` (a header once, then a row per change),
//! and `explain` through the OpenAPI v3 document.
//!
//! The cluster speaks TLS: kubectl sends no bearer token to a plain-http server.

use std::time::Duration;

use kohakuriver_tests::{Cluster, Kubectl, docker_ready, kubectl_cluster, wait_for, wait_until};

const T: Duration = Duration::from_secs(60);

fn cluster() -> Option<Cluster> {
    if !docker_ready() {
        return None;
    }
    Some(kubectl_cluster("kg"))
}

/// The words of the line of `text` whose first word is `name`.
fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{text}"))
}

fn header(text: &str) -> Vec<&str> {
    text.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

#[test]
fn get_shows_server_side_tables_and_plain_formats() {
    let Some(c) = cluster() else { return };
    let node = c.up_node().to_string();
    let k = Kubectl::admin(&c);
    let id = c.submit(&["--name", "kg-done", "--", "echo", "hi"]);
    c.wait_phase(&id, &["Succeeded"], T);

    let out = k.run(&["get", "tasks"]).ok().stdout.clone();
    assert_eq!(
        header(&out),
        ["NAME", "PHASE", "NODE", "CPUS", "GPUS", "AGE"],
        "{out}"
    );
    let r = row(&out, "kg-done");
    assert_eq!(
        &r[..5],
        ["kg-done", "Succeeded", node.as_str(), "1", "0"],
        "{out}"
    );

    let wide = k.run(&["get", "tasks", "-o", "wide"]).ok().stdout.clone();
    let h = header(&wide);
    for column in ["OWNER", "IMAGE", "ALLOCATION", "EXIT", "REASON", "COMMAND"] {
        assert!(h.contains(&column), "{column} missing from:\n{wide}");
    }
    let r = row(&wide, "kg-done");
    assert_eq!(r[6], "admin", "{wide}");
    assert_eq!(&r[r.len() - 2..], ["echo", "hi"], "{wide}");

    let one = k.run(&["get", "task", "kg-done"]).ok().stdout.clone();
    assert_eq!(one.lines().count(), 2, "{one}");
    assert_eq!(row(&one, "kg-done")[1], "Succeeded");

    // describe: kubectl's generic view of the object, spec and status included.
    let described = k.run(&["describe", "task", "kg-done"]).ok().stdout.clone();
    for line in ["Name:", "Kind:         Task", "Phase:", "Succeeded", "echo"] {
        assert!(
            described.contains(line),
            "{line:?} missing from:\n{described}"
        );
    }

    let nodes = k.run(&["get", "nodes"]).ok().stdout.clone();
    assert_eq!(
        header(&nodes),
        ["NAME", "STATUS", "CPUS", "MEMORY", "GPUS", "AGE"],
        "{nodes}"
    );
    assert_eq!(row(&nodes, &node)[1], "Ready", "{nodes}");

    k.run(&["get", "task", "kg-done", "-o", "jsonpath={.status.phase}"])
        .ok()
        .stdout_has("Succeeded");
    assert_eq!(
        k.run(&["get", "tasks", "-o", "name"]).ok().stdout,
        "task.kohakuriver/kg-done\n"
    );
    let custom = k
        .run(&[
            "get",
            "tasks",
            "-o",
            "custom-columns=N:.metadata.name,P:.status.phase",
        ])
        .ok()
        .stdout
        .clone();
    assert_eq!(row(&custom, "kg-done"), ["kg-done", "Succeeded"]);
    k.run(&["get", "task", "kg-done", "-o", "yaml"])
        .ok()
        .stdout_has("kind: Task");

    let running = k
        .run(&["get", "tasks", "--field-selector", "status.phase=Running"])
        .ok()
        .clone();
    assert!(!running.stdout.contains("kg-done"), "{}", running.stdout);
    let labels = k
        .run(&["get", "tasks", "--show-labels"])
        .ok()
        .stdout
        .clone();
    assert_eq!(header(&labels).last(), Some(&"LABELS"), "{labels}");
    let none = k.run(&["get", "tasks", "-l", "team=nobody"]).ok().clone();
    assert!(none.stdout.is_empty(), "{}", none.stdout);
}

#[test]
fn get_watch_prints_a_header_once_and_a_row_per_change() {
    let Some(c) = cluster() else { return };
    let k = Kubectl::admin(&c);
    let first = c.submit(&["--name", "kg-first", "--", "true"]);
    c.wait_phase(&first, &["Succeeded"], T);

    let mut watch = k.stream(&["get", "tasks", "-w"]);
    let mut events = k.stream(&["get", "tasks", "-w", "--output-watch-events"]);
    let text =
        |s: &kohakuriver_tests::Stream| String::from_utf8_lossy(&s.stdout_so_far()).into_owned();
    wait_until(T, "the watch lists the current task", || {
        text(&watch).contains("kg-first") && text(&events).contains("kg-first")
    });

    c.submit(&["--name", "kg-new", "--", "sh", "-c", "sleep 1"]);
    let phases = wait_for(T, "kg-new reaches Succeeded in the watch", || {
        let out = text(&watch);
        let phases: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.first() == Some(&"kg-new"))
            .map(|w| w[1].to_string())
            .collect();
        phases.contains(&"Succeeded".to_string()).then_some(phases)
    });
    assert!(phases.len() >= 2, "kg-new changed phase: {phases:?}");
    assert_eq!(
        phases.first().map(String::as_str),
        Some("Pending"),
        "{phases:?}"
    );
    let out = text(&watch);
    assert_eq!(out.matches("NAME").count(), 1, "one header:\n{out}");
    assert!(out.starts_with("NAME "), "{out}");

    wait_until(T, "the events watch sees kg-new succeed", || {
        text(&events)
            .lines()
            .any(|l| l.starts_with("MODIFIED") && l.contains("kg-new") && l.contains("Succeeded"))
    });
    let out = text(&events);
    assert!(out.starts_with("EVENT "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ADDED") && l.contains("kg-new")),
        "{out}"
    );
    watch.kill();
    events.kill();
}

#[test]
fn explain_reads_the_field_docs() {
    let Some(c) = cluster() else { return };
    let k = Kubectl::admin(&c);
    k.run(&["explain", "task"])
        .ok()
        .stdout_has("KIND:       Task")
        .stdout_has("spec\t<TaskSpec>");
    k.run(&["explain", "task.spec.resources"])
        .ok()
        .stdout_has("FIELD: resources <Resources>")
        .stdout_has("Whole CPU cores");
    k.run(&["explain", "node.status"])
        .ok()
        .stdout_has("allocatable");
}

/// `kubectl get tg` shows task groups through the same server-side table as
/// `kohakuriver get tg`, by short name and by plural.
#[test]
fn get_shows_task_groups() {
    let Some(c) = cluster() else { return };
    let k = Kubectl::admin(&c);
    let g = c.submit(&[
        "--name", "kg-arr", "--array", "0-1", "-c", "0", "--", "echo", "hi",
    ]);
    c.kr(&[
        "wait",
        &format!("group/{g}"),
        "--for=condition=Complete",
        "--timeout",
        "60s",
    ])
    .ok();
    let out = k.run(&["get", "tg"]).ok().stdout.clone();
    assert_eq!(
        header(&out),
        ["NAME", "STATUS", "SUCCEEDED", "RUNNING", "FAILED", "AGE"],
        "{out}"
    );
    assert_eq!(
        &row(&out, "kg-arr")[..5],
        ["kg-arr", "Complete", "2/2", "0", "0"]
    );
    k.run(&["get", "taskgroups", "kg-arr", "-o", "yaml"])
        .ok()
        .stdout_has("kind: TaskGroup");
}

/// `kubectl get events` (and `ev`) shows a task's events through the server-side table,
/// with kubectl's columns and the count; a field selector narrows them to one task.
#[test]
fn get_shows_events() {
    let Some(c) = cluster() else { return };
    let k = Kubectl::admin(&c);
    let id = c.submit(&["--name", "kg-ev", "--", "echo", "hi"]);
    c.wait_phase(&id, &["Succeeded"], T);
    let selector = format!("--field-selector=involvedObject.name={id}");
    let out = wait_for(T, "the task's Exited event", || {
        let out = k.run(&["get", "events", &selector]).ok().stdout.clone();
        out.contains("Exited").then_some(out)
    });
    assert_eq!(
        header(&out),
        [
            "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE", "COUNT"
        ],
        "{out}"
    );
    for reason in ["Scheduled", "Started", "Exited"] {
        assert!(out.contains(reason), "{out}");
    }
    assert!(out.contains(&format!("task/{id}")), "{out}");
    k.run(&["get", "ev", &selector, "-o", "yaml"])
        .ok()
        .stdout_has("kind: Event")
        .stdout_has("involvedObject:");
}
