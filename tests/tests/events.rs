//! Events (#16) with the real binary, a real server, a real agent and real Docker:
//! `events --for task/X` tells a task's life in order, `describe` ends with it, a task that
//! fails 50 times in a row has one `Exited` event counting 50, events expire after
//! `--event-ttl`, and people may not write them.

use std::time::Duration;

use kohakuriver_tests::{Cluster, ServerOptions, docker_ready, wait_for, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// The events about task `id`, oldest first, as `events --for task/ID -o json` prints them.
fn events(c: &Cluster, id: &str) -> Vec<Value> {
    let run = c.kr(&["events", "--for", &format!("task/{id}"), "-o", "json"]);
    run.ok();
    let list: Value = serde_json::from_str(&run.stdout).expect("a JSON list");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The position of the first line of `text` naming `reason`.
fn line_of(text: &str, reason: &str) -> usize {
    text.lines()
        .position(|l| l.split_whitespace().any(|w| w == reason))
        .unwrap_or_else(|| panic!("no {reason} in:\n{text}"))
}

#[test]
fn a_tasks_events_tell_its_life_in_order() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent("events-life");
    let id = c.submit(&["-t", &node, "--", "sh", "-c", "exit 3"]);
    c.wait_phase(&id, &["Failed"], T);
    wait_until(T, "Scheduled, Started and Exited recorded", || {
        let r = reasons(&events(&c, &id));
        ["Scheduled", "Started", "Exited"]
            .iter()
            .all(|want| r.iter().any(|got| got == want))
    });
    let text = c
        .kr(&["events", "--for", &format!("task/{id}")])
        .ok()
        .stdout
        .clone();
    let header = text.lines().next().unwrap();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE", "COUNT"] {
        assert!(header.contains(column), "{header}");
    }
    let (scheduled, started, exited) = (
        line_of(&text, "Scheduled"),
        line_of(&text, "Started"),
        line_of(&text, "Exited"),
    );
    assert!(scheduled < started && started < exited, "{text}");
    assert!(text.contains(&format!("task/{id}")), "{text}");
    assert!(text.contains(&format!("assigned to node {node}")), "{text}");
    assert!(text.contains("container exited with code 3"), "{text}");
    let exited_event = events(&c, &id)
        .into_iter()
        .find(|e| e["reason"] == "Exited")
        .unwrap();
    assert_eq!(exited_event["type"], "Warning");
    assert_eq!(exited_event["source"]["component"], "agent");
    assert_eq!(exited_event["source"]["host"], node.as_str());

    // describe ends with the same story.
    let described = c.kr(&["describe", "task", &id]).ok().stdout.clone();
    let section = &described[described.find("Events:").expect("an Events section")..];
    assert!(
        line_of(section, "Scheduled") < line_of(section, "Exited"),
        "{section}"
    );

    // `get events` lists them too, and people may not forge or delete them.
    c.kr(&["get", "events"]).ok().stdout_has("Exited");
    let name = exited_event["metadata"]["name"].as_str().unwrap();
    let user = c.create_token("eve", "user");
    let refused = c.kr_as(&user, &["delete", "event", name]);
    refused.fails();
    assert!(
        refused.stderr.contains("may not delete event"),
        "{}",
        refused.describe()
    );
    c.kr(&["delete", "event", name]).ok();
}

/// 50 failures in a row: one `Exited` event, count 50 once the agent has written what its
/// write budget (25 at once, one more per 5 minutes) held back, which it does at shutdown.
#[test]
fn fifty_failures_in_a_row_make_one_event_counting_fifty() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start_with(ServerOptions {
        retry_backoff: Some("10ms".into()),
        extra_args: vec!["--retry-backoff-max".into(), "10ms".into()],
        ..ServerOptions::default()
    });
    let node = c.add_agent("events-crash");
    let id = c.submit(&["-t", &node, "--retries", "49", "--", "false"]);
    wait_until(Duration::from_secs(900), "the 50th attempt failed", || {
        let task = c.task(&id);
        task["status"]["phase"] == "Failed" && task["status"]["attempts"] == 50
    });
    // While the agent runs, its budget bounds the writes: the count is behind.
    let seen = wait_for(T, "an Exited event", || {
        events(&c, &id)
            .into_iter()
            .find(|e| e["reason"] == "Exited")
    });
    let early = seen["count"].as_u64().unwrap();
    assert!((1..=50).contains(&early), "{seen}");
    assert!(c.stop_agent(&node, T), "the agent stops on SIGTERM");
    wait_until(T, "the Exited event counts all 50 failures", || {
        let exited: Vec<Value> = events(&c, &id)
            .into_iter()
            .filter(|e| e["reason"] == "Exited")
            .collect();
        exited.len() == 1 && exited[0]["count"] == 50
    });
    let all = events(&c, &id);
    let exited_events = all.iter().filter(|e| e["reason"] == "Exited").count();
    assert_eq!(exited_events, 1, "{all:#?}");
    let retrying: Vec<&Value> = all.iter().filter(|e| e["reason"] == "Retrying").collect();
    assert_eq!(retrying.len(), 1, "{all:#?}");
    assert!(retrying[0]["count"].as_u64().unwrap() >= 1);
    eprintln!(
        "count before the agent's shutdown: {early}; events of the task: {:?}",
        all.iter()
            .map(|e| format!("{} x{}", e["reason"].as_str().unwrap(), e["count"]))
            .collect::<Vec<_>>()
    );
}

#[test]
fn events_expire_after_the_ttl() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start_with(ServerOptions {
        extra_args: vec!["--event-ttl".into(), "3s".into()],
        ..ServerOptions::default()
    });
    let node = c.add_agent("events-ttl");
    let id = c.submit(&["-t", &node, "--", "true"]);
    let recorded = wait_for(T, "the task's events", || {
        let e = events(&c, &id);
        (reasons(&e).contains(&"Exited".to_string())).then_some(e)
    });
    assert!(!recorded.is_empty());
    wait_until(T, "every event of the task expired", || {
        events(&c, &id).is_empty()
    });
}
