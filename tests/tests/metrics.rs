//! The API server's `/metrics` with the real binary (issue 16): after a task succeeds the
//! exposition passes `promtool check metrics`, and the task counters, the scheduling and
//! start latency histograms and the request metrics moved as the task's life says. Only
//! credentials read it: anonymous is 401, a metrics token reads it and nothing else. The
//! task metrics are observed by the server as the writes commit, so they move the same when
//! the controllers run as a separate `kohakuriver controllers` process.
//!
//! Needs Docker (see `docker_ready`) and `promtool` (Debian package `prometheus`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kohakuriver_tests::{Cluster, Proc, ServerOptions, binary, docker_ready, http_get_auth};

const T: Duration = Duration::from_secs(60);

/// Every sample of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("{value:?} in {line:?} is not a number: {e}"));
            (series.to_string(), value)
        })
        .collect()
}

/// `promtool check metrics` on `text`: panics with promtool's findings when it refuses it,
/// and with how to install it when it is missing.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs promtool to check the exposition format ({e}); \
                 install it: apt-get install -y prometheus"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition ({}):\n{}{}\n--- exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One scrape with `token`: its text, after asserting 200 and the content type's format.
fn scrape(c: &Cluster, token: &str) -> String {
    let response = http_get_auth(&format!("{}/metrics", c.url()), Some(token)).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// The value of `series` in `samples`, 0 when absent (a family with no sample yet).
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_move_with_a_task_and_parse() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::up("metrics");
    let node = c.up_node().to_string();
    a_task_moves_the_metrics(&c, &node);
}

#[test]
fn metrics_move_the_same_with_separate_controllers() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start_with(ServerOptions {
        extra_args: vec!["--no-controllers".into()],
        ..ServerOptions::default()
    });
    let token = c.create_token("controllers", "controllers");
    let args: Vec<String> = ["--server", c.url(), "--token", &token, "controllers"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut controllers = Proc::spawn(
        "controllers",
        binary(),
        &args,
        &c.dir().join("controllers.log"),
    );
    let node = c.add_agent("metrics-sep");
    c.wait_node_ready(&node, T);
    a_task_moves_the_metrics(&c, &node);
    controllers.assert_running();
    controllers.kill();
}

/// Runs a first task, scrapes, runs a second, scrapes again, and checks what moved.
fn a_task_moves_the_metrics(c: &Cluster, node: &str) {
    // Anonymous: 401 Status.
    let anonymous = http_get_auth(&format!("{}/metrics", c.url()), None).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(anonymous.json()["kind"], "Status");
    // A metrics credential reads the metrics, and nothing of the cluster.
    let scraper = c.create_token("prometheus", "metrics");
    let node = node.to_string();
    let denied = c.kr_as(&scraper, &["task", "list"]);
    assert_ne!(
        denied.code, 0,
        "a metrics token listed tasks: {}",
        denied.stdout
    );
    assert!(
        denied.stderr.contains("may not"),
        "the refusal names the permission: {}",
        denied.stderr
    );
    let viewer = c.create_token("vic", "viewer");
    scrape(c, &viewer);

    // A first task, so every family has samples before the measured one.
    c.kr(&["task", "submit", "-t", &node, "-w", "--", "true"])
        .code(0);
    let before_text = scrape(c, &scraper);
    promtool_check(&before_text);
    let before = samples(&before_text);

    let id = c.submit(&["-t", &node, "--", "echo", "hi"]);
    c.wait_phase(&id, &["Succeeded"], T);
    let after_text = scrape(c, &scraper);
    promtool_check(&after_text);
    let after = samples(&after_text);

    let moved = |series: &str| value(&after, series) - value(&before, series);
    let checks = [
        ("kohakuriver_tasks{phase=\"Succeeded\"}", 1.0),
        ("kohakuriver_tasks{phase=\"Pending\"}", 0.0),
        ("kohakuriver_tasks{phase=\"Running\"}", 0.0),
        ("kohakuriver_task_queue_length", 0.0),
        ("kohakuriver_task_bindings_total", 1.0),
        ("kohakuriver_task_scheduling_latency_seconds_count", 1.0),
        ("kohakuriver_task_start_latency_seconds_count", 1.0),
        (
            "kohakuriver_api_requests_total{route=\"/apis/kohakuriver/v1/tasks\",verb=\"POST\",code=\"201\"}",
            1.0,
        ),
        (
            "kohakuriver_api_request_latency_seconds_count{route=\"/apis/kohakuriver/v1/tasks\",verb=\"POST\"}",
            1.0,
        ),
        // The scrape before this one, by the metrics credential.
        (
            "kohakuriver_api_requests_total{route=\"/metrics\",verb=\"GET\",code=\"200\"}",
            1.0,
        ),
    ];
    let mut wrong = Vec::new();
    for (series, want) in checks {
        let got = moved(series);
        if got != want {
            wrong.push(format!("{series}: moved by {got}, expected {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n--- before:\n{before_text}\n--- after:\n{after_text}",
        wrong.join("\n")
    );
    // Counters and histogram counts never go back.
    for (series, v) in &before {
        if series.ends_with("_total") || series.ends_with("_count") {
            assert!(value(&after, series) >= *v, "{series} went back");
        }
    }
    // The task's wait and start were observed as positive durations.
    assert!(value(&after, "kohakuriver_task_scheduling_latency_seconds_sum") > 0.0);
    assert!(value(&after, "kohakuriver_task_start_latency_seconds_sum") > 0.0);
    // Writes were timed, the database has a size, the agent and controllers watch, and
    // the node's heartbeat has an age.
    assert!(value(&after, "kohakuriver_store_write_latency_seconds_count") >= 4.0);
    assert!(value(&after, "kohakuriver_store_size_bytes") > 0.0);
    assert!(value(&after, "kohakuriver_watches_open") >= 1.0);
    let heartbeat = format!("kohakuriver_node_heartbeat_age_seconds{{node=\"{node}\"}}");
    assert!(after.contains_key(&heartbeat), "{heartbeat}:\n{after_text}");
    // Requests are labelled by route template, never by a task's name.
    assert!(!after_text.contains(&id), "{after_text}");
}

#[test]
fn a_deleted_nodes_heartbeat_series_goes() {
    let c = Cluster::start();
    let token = c.admin_token();
    let node = serde_json::json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Node",
        "metadata": {"name": "metrics-gone"},
    });
    let file = c.dir().join("node.json");
    std::fs::write(&file, node.to_string()).unwrap();
    c.kr(&["apply", "-f", file.to_str().unwrap()]).code(0);
    let series = "kohakuriver_node_heartbeat_age_seconds{node=\"metrics-gone\"}";
    let text = scrape(&c, &token);
    assert!(samples(&text).contains_key(series), "{text}");
    c.kr(&["delete", "node", "metrics-gone"]).code(0);
    let text = scrape(&c, &token);
    assert!(!samples(&text).contains_key(series), "{text}");
    promtool_check(&text);
}
