//! `--log-format json`: every line a daemon writes on stderr is one JSON object, and the
//! lines about a task carry the task and its node as fields (in the spans of the agent's
//! worker and the controllers' jobs), so a log collector selects them without parsing
//! messages.

use std::time::Duration;

use kohakuriver_tests::{AgentOptions, Cluster, ServerOptions, docker_ready, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// The value of `field` in the line's own fields or in any of its spans.
fn field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    let spans = line.get("spans").and_then(Value::as_array);
    std::iter::once(line)
        .chain(line.get("span"))
        .chain(spans.into_iter().flatten())
        .find_map(|v| v.get(field).and_then(Value::as_str))
}

#[test]
fn json_lines_name_the_task_and_its_node() {
    if !docker_ready() {
        return;
    }
    let server = ServerOptions {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..ServerOptions::default()
    };
    let c = Cluster::up_with("jsonlog", server, AgentOptions::default());
    let node = c.up_node().to_string();
    let id = c.submit(&["-t", &node, "--", "echo", "hello"]);
    let task = c.wait_finished(&id, T);
    assert_eq!(task["status"]["phase"], "Succeeded", "{task}");
    let log = c.dir().join("up.log");
    // The agent logs the exit right after its status write, so the line may trail the
    // phase by a moment.
    let about_task = wait_for(T, "a log line about the task", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect();
        let found: Vec<Value> = lines
            .into_iter()
            .filter(|l| field(l, "task") == Some(id.as_str()))
            .collect();
        let exit = found
            .iter()
            .any(|l| l["message"].as_str() == Some("reported exit"));
        exit.then_some(found)
    });
    for line in &about_task {
        for key in ["timestamp", "level", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
        assert_eq!(field(line, "node"), Some(node.as_str()), "{line}");
    }
    let exit = about_task
        .iter()
        .find(|l| l["message"] == "reported exit")
        .unwrap();
    assert_eq!(exit["phase"], "Succeeded", "{exit}");
    assert_eq!(exit["exit_code"], 0, "{exit}");
}
