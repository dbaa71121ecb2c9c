//! Live usage end to end (issue 16), with the real binary and Docker: a busy-loop task shows
//! real, non-zero CPU and memory in `top tasks`, `top nodes` lists its node with figures,
//! and the agent's `/metrics` refuses a caller without the agent secret, parses with
//! `promtool check metrics` (Debian package `prometheus`) and carries the running task's
//! series.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kohakuriver_tests::{AgentOptions, Cluster, docker_ready, http_get_auth, wait_for};

const T: Duration = Duration::from_secs(90);

/// The cells of the row of `top` output whose first cell is `name`.
fn row_of(out: &str, name: &str) -> Option<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
}

/// Thousandths of a core from a `250m` cell.
fn millicores(cell: &str) -> Option<u64> {
    cell.strip_suffix('m')?.parse().ok()
}

/// A figure cell that shows a measurement (not `<unknown>`, not `-`, not zero).
fn measured(cell: &str) -> bool {
    !matches!(cell, "<unknown>" | "-" | "0" | "0m")
}

/// Runs `promtool check metrics` on `text`: its exit code and what it printed.
fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): this test checks the agent's /metrics with it; \
                 install the Debian package prometheus (apt-get install -y prometheus)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

/// Checks the exposition with promtool: it must parse (exit 1 is a parse error). promtool
/// reads the classic text format, whose counters are named with their `_total`; the
/// OpenMetrics format `prometheus-client` writes names the family without it in `# HELP`,
/// so promtool's linter (exit 3) says "no help text" for each counter. Those findings, and
/// only those, are accepted: any other lint finding fails.
fn assert_promtool_accepts(text: &str) {
    let (code, said) = promtool_check(text);
    match code {
        0 => {}
        3 => {
            for line in said.lines().filter(|l| !l.trim().is_empty()) {
                let family = line
                    .strip_suffix(" no help text")
                    .and_then(|name| name.strip_suffix("_total"));
                let documented = family.is_some_and(|f| {
                    text.contains(&format!("# HELP {f} "))
                        && text.contains(&format!("# TYPE {f} counter"))
                });
                assert!(
                    documented,
                    "promtool found a problem other than an OpenMetrics counter's _total name: {line}\n{text}"
                );
            }
        }
        _ => panic!("promtool check metrics failed (exit {code}): {said}\n{text}"),
    }
}

#[test]
fn top_shows_a_busy_task_and_the_agent_metrics_parse() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent_with(
        "top",
        AgentOptions {
            extra_args: vec!["--usage-interval".into(), "1s".into()],
            ..Default::default()
        },
    );
    let id = c.submit(&["-t", &node, "--", "sh", "-c", "while :; do :; done"]);
    c.wait_phase(&id, &["Running"], T);

    // top tasks: the busy task's row with real CPU and memory, once a rate was sampled.
    let (tasks_out, row) = wait_for(
        T,
        "top tasks to show the busy task's CPU and memory",
        || {
            let run = c.kr(&["top", "tasks"]);
            if run.code != 0 {
                return None;
            }
            let row = row_of(&run.stdout, &id)?;
            (millicores(&row[2]).is_some_and(|m| m > 0) && measured(&row[4]))
                .then(|| (run.stdout.clone(), row))
        },
    );
    assert!(tasks_out.starts_with("NAME"), "a header first: {tasks_out}");
    for column in [
        "NODE",
        "CPU(cores)",
        "CPU%",
        "MEMORY(bytes)",
        "MEMORY%",
        "GPU%",
        "GPU-MEMORY",
    ] {
        assert!(
            tasks_out.lines().next().unwrap().contains(column),
            "{column}: {tasks_out}"
        );
    }
    assert_eq!(row[1], node, "{tasks_out}");
    assert!(row[3].ends_with('%'), "CPU% of the held core: {tasks_out}");
    assert_eq!(row[6..], ["-", "-"], "no GPUs held: {tasks_out}");
    // The same row for the task by name and for its node.
    let by_name = c.kr(&["top", "tasks", &id]);
    by_name.code(0);
    assert!(row_of(&by_name.stdout, &id).is_some(), "{}", by_name.stdout);
    let by_node = c.kr(&["top", "tasks", "--node", &node, "--sort-by", "cpu"]);
    by_node.code(0);
    assert!(row_of(&by_node.stdout, &id).is_some(), "{}", by_node.stdout);

    // top nodes: the node with measured CPU and memory.
    let run = c.kr(&["top", "nodes"]);
    run.code(0);
    let node_row = row_of(&run.stdout, &node).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(millicores(&node_row[1]).is_some(), "{}", run.stdout);
    assert!(measured(&node_row[3]), "memory in use: {}", run.stdout);
    assert!(node_row[4].ends_with('%'), "{}", run.stdout);

    // The agent's /metrics: refused without the agent secret, then parsed and checked.
    let metrics_url = format!("http://127.0.0.1:{}/metrics", c.agent_port(&node));
    let refused = http_get_auth(&metrics_url, None).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = http_get_auth(&metrics_url, Some("not-the-agent-secret")).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.text());
    // The secret, as the node itself reads it (a second credential for the same node).
    let node_token = c.create_token(&node, "node");
    let credentials = http_get_auth(
        &format!("{}/apis/kohakuriver/v1/nodes/{node}/credentials", c.url()),
        Some(&node_token),
    )
    .unwrap();
    assert_eq!(credentials.status, 200, "{}", credentials.text());
    let secret = credentials.json()["agentSecret"]
        .as_str()
        .expect("agentSecret")
        .to_string();
    let text = wait_for(
        T,
        "the agent's /metrics to carry the busy task's series",
        || {
            let got = http_get_auth(&metrics_url, Some(&secret)).ok()?;
            assert_eq!(got.status, 200, "{}", got.text());
            let text = got.text();
            let cpu = text.lines().find(|l| {
                l.starts_with("kohakuriver_agent_task_cpu_cores{")
                    && l.contains(&format!("task=\"{id}\""))
            })?;
            let cores: f64 = cpu.rsplit(' ').next()?.parse().ok()?;
            (cores > 0.0).then_some(text)
        },
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("kohakuriver_agent_task_memory_bytes{")
                && l.contains(&format!("task=\"{id}\""))),
        "{text}"
    );
    assert!(
        text.contains("kohakuriver_agent_running_containers 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "kohakuriver_agent_docker_call_duration_seconds_count{operation=\"create\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE kohakuriver_agent_log_captured_bytes counter"),
        "{text}"
    );
    let node_obj = c.node(&node).expect("the node");
    if node_obj["status"]["gpus"]
        .as_array()
        .is_none_or(|g| g.is_empty())
    {
        assert!(
            !text.contains("kohakuriver_agent_gpu_"),
            "no GPU, no GPU series: {text}"
        );
    }
    assert_promtool_accepts(&text);
}
