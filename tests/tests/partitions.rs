//! Whole-system partitions (issue 10, item 2): an agent reaches the server only through a
//! TCP proxy the test cuts and restores. A task with a retry left is fenced by its agent
//! before the server re-queues it (it never runs in two places); a task with no retry left
//! keeps running, is Unknown on the server while holding its cores, and reports its real
//! outcome once the partition heals. Real processes, real Docker, the test image; each
//! prints its wall time on stderr.

use std::time::{Duration, Instant};

use kohakuriver_tests::{
    AgentOptions, Cluster, Proxy, ServerOptions, docker, docker_ready, wait_for, wait_until,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

fn timed<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    eprintln!("[partitions] {name}: ok, wall time {:.1?}", start.elapsed());
    r
}

/// A server with a short grace: above the partitioned agent's 2 s fence-after plus its
/// 1 s kill grace, as the agent checks at start.
fn cluster() -> Cluster {
    Cluster::start_with(ServerOptions {
        node_grace: Some("6s".into()),
        retry_backoff: Some("1s".into()),
        ..ServerOptions::default()
    })
}

/// An agent that reaches the server only through `proxy`.
fn behind(proxy: &Proxy, shared_dir: Option<std::path::PathBuf>) -> AgentOptions {
    AgentOptions {
        server_url: Some(proxy.url()),
        fence_after: "2s".into(),
        kill_grace: "1s".into(),
        shared_dir,
        ..AgentOptions::default()
    }
}

/// `(running, startedAt, finishedAt)` of a container, by id; None once it is gone.
fn container_state(id: &str) -> Option<(bool, String, String)> {
    let (ok, out, _) = docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.StartedAt}} {{.State.FinishedAt}}",
        id,
    ]);
    if !ok {
        return None;
    }
    let mut parts = out.split_whitespace();
    let running = parts.next()? == "true";
    Some((
        running,
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

fn time(text: &str) -> kohakuriver_api::Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("docker time {text:?}: {e}"))
}

fn status_str<'a>(t: &'a Value, field: &str) -> &'a str {
    t["status"][field].as_str().unwrap_or("")
}

fn condition<'a>(t: &'a Value, type_: &str) -> Option<&'a Value> {
    t["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A task with `--retries 1` runs on node A; A is cut off from the server. A's agent stops
/// the container after its fence-after, before the server's grace runs out; the server then
/// re-queues the task onto node B. The old container finished before the new one started:
/// the task never ran in two places.
#[test]
fn a_task_with_a_retry_left_is_fenced_before_it_runs_elsewhere() {
    assert!(docker_ready());
    timed("task with a retry left, fenced then re-queued", || {
        let mut c = cluster();
        let upstream = ([127, 0, 0, 1], c.port()).into();
        let proxy = Proxy::start(upstream);
        let a = c.add_agent_with("fence-a", behind(&proxy, None));
        let id = c.submit(&[
            "--retries",
            "1",
            "--",
            "sh",
            "-c",
            "echo attempt $KOHAKURIVER_ATTEMPT on $KOHAKURIVER_NODE; sleep 300",
        ]);
        let first = c.wait_phase(&id, &["Running"], T);
        assert_eq!(status_str(&first, "node"), a, "only A existed");
        let old = status_str(&first, "containerId").to_string();
        assert!(!old.is_empty(), "{:#}", first["status"]);
        let b = c.add_agent("fence-b");

        proxy.cut();
        let cut = Instant::now();
        // Fenced by its own agent, before the server re-queued the task: the container is
        // seen stopped, and only then is the task read, still Running on A. (Both agents
        // share this Docker engine, so B, creating the new attempt under the same container
        // name, would also stop the old one, but only after the re-queue.)
        let finished_at = wait_for(T, "the old container to be stopped by its agent", || {
            let finished = match container_state(&old) {
                Some((false, _, finished)) => finished,
                Some((true, _, _)) => return None,
                None => panic!("container {old} vanished before it was seen stopped"),
            };
            let t = c.task(&id);
            assert!(
                status_str(&t, "phase") == "Running" && status_str(&t, "node") == a,
                "the old container stopped only after the server re-queued the task: {:#}",
                t["status"]
            );
            Some(finished)
        });
        eprintln!("fenced {:?} after the cut", cut.elapsed());

        let second = wait_for(T, "the task to run again on B", || {
            let t = c.task(&id);
            (status_str(&t, "phase") == "Running" && status_str(&t, "node") == b).then_some(t)
        });
        assert_eq!(second["status"]["attempts"], 2, "{:#}", second["status"]);
        let new = status_str(&second, "containerId").to_string();
        assert_ne!(new, old);
        let (_, started_at, _) = container_state(&new).expect("the new container exists");
        assert!(
            time(&finished_at) < time(&started_at),
            "the old attempt finished at {finished_at}, after the new one started at {started_at}"
        );

        // Healed: A's late report of the old attempt is refused and changes nothing.
        proxy.restore();
        wait_until(T, "node A Ready again", || c.node_ready(&a));
        let after = c.task(&id);
        assert_eq!(
            status_str(&after, "phase"),
            "Running",
            "{:#}",
            after["status"]
        );
        assert_eq!(status_str(&after, "node"), b);
        assert_eq!(status_str(&after, "containerId"), new);
    });
}

/// A task with no retry left runs on node A, holding all of A's cores; A is cut off. The
/// task keeps running and goes Unknown on the server, still bound and holding its cores, so
/// a task needing them stays Pending. It ends during the partition; once the proxy is
/// restored its agent reports the real exit code, the logs are complete, and condition
/// NodeUnreachable (False again) records the gap. Then its cores go to the waiting task.
#[test]
fn a_task_with_no_retry_left_rides_out_the_partition_and_reports_its_outcome() {
    assert!(docker_ready());
    timed("task with no retry left through a partition", || {
        let mut c = cluster();
        let upstream = ([127, 0, 0, 1], c.port()).into();
        let proxy = Proxy::start(upstream);
        let shared = tempfile::tempdir().unwrap();
        let a = c.add_agent_with(
            "unknown-a",
            behind(&proxy, Some(shared.path().to_path_buf())),
        );
        let cores = c.node(&a).unwrap()["status"]["capacity"]["cpu"]
            .as_u64()
            .expect("node capacity")
            .to_string();
        let id = c.submit(&[
            "-t",
            &a,
            "-c",
            &cores,
            "--",
            "sh",
            "-c",
            "echo begin; while [ ! -e /shared/go ]; do sleep 0.2; done; echo end; exit 7",
        ]);
        let running = c.wait_phase(&id, &["Running"], T);
        let container = status_str(&running, "containerId").to_string();

        proxy.cut();
        let unknown = c.wait_phase(&id, &["Unknown"], T);
        assert_eq!(status_str(&unknown, "node"), a, "{:#}", unknown["status"]);
        assert!(
            unknown["status"]["allocation"].is_object(),
            "{:#}",
            unknown["status"]
        );
        let gap = condition(&unknown, "NodeUnreachable").expect("condition NodeUnreachable");
        assert_eq!(gap["status"], "True", "{gap:#}");
        assert!(
            container_state(&container).is_some_and(|s| s.0),
            "the container keeps running through the partition"
        );

        // Its cores are still held: a task needing them is not placed.
        let blocked = c.submit(&["-t", &a, "-c", "1", "--", "echo", "after"]);
        let waiting = wait_for(T, "the blocked task to be found unschedulable", || {
            let t = c.task(&blocked);
            (status_str(&t, "reason") == "Unschedulable").then_some(t)
        });
        assert_eq!(
            status_str(&waiting, "phase"),
            "Pending",
            "{:#}",
            waiting["status"]
        );
        assert!(
            waiting["status"]["node"].is_null(),
            "{:#}",
            waiting["status"]
        );

        // The task ends while its node is still cut off; the server cannot know yet.
        std::fs::write(shared.path().join("go"), "").unwrap();
        wait_until(T, "the task's container to exit", || {
            container_state(&container).is_some_and(|s| !s.0)
        });
        assert_eq!(c.phase(&id), "Unknown");

        proxy.restore();
        let done = c.wait_finished(&id, T);
        assert_eq!(status_str(&done, "phase"), "Failed", "{:#}", done["status"]);
        assert_eq!(done["status"]["exitCode"], 7, "{:#}", done["status"]);
        assert_eq!(done["status"]["attempts"], 1, "{:#}", done["status"]);
        let gap = condition(&done, "NodeUnreachable").expect("condition NodeUnreachable");
        assert_eq!(gap["status"], "False", "{gap:#}");
        assert_eq!(gap["reason"], "NodeReachable", "{gap:#}");
        let logs = c.kr(&["task", "logs", &id]);
        logs.ok();
        assert_eq!(logs.stdout, "begin\nend\n");

        // The cores are free again.
        let after = c.wait_finished(&blocked, T);
        assert_eq!(
            status_str(&after, "phase"),
            "Succeeded",
            "{:#}",
            after["status"]
        );
    });
}

/// A partition longer than fence-after but shorter than the server's grace: the agent has
/// stopped the task (it had a retry left), the server never declared the node lost, and
/// once the proxy is restored the agent reports what really happened: the attempt ended,
/// reason Fenced. The task lifecycle then retries it as any failed attempt.
#[test]
fn a_short_partition_reports_the_fenced_attempt_as_such() {
    assert!(docker_ready());
    timed("short partition, fenced attempt reported", || {
        // A grace far above fence-after + kill grace, so the server never acts here.
        let mut c = Cluster::start_with(ServerOptions {
            node_grace: Some("20s".into()),
            retry_backoff: Some("1s".into()),
            ..ServerOptions::default()
        });
        let upstream = ([127, 0, 0, 1], c.port()).into();
        let proxy = Proxy::start(upstream);
        let a = c.add_agent_with("short-a", behind(&proxy, None));
        let id = c.submit(&[
            "-t",
            &a,
            "--retries",
            "1",
            "--",
            "sh",
            "-c",
            "if [ \"$KOHAKURIVER_ATTEMPT\" = 1 ]; then sleep 300; fi; echo attempt $KOHAKURIVER_ATTEMPT",
        ]);
        let first = c.wait_phase(&id, &["Running"], T);
        let old = status_str(&first, "containerId").to_string();

        proxy.cut();
        wait_until(T, "the container to be stopped by its agent", || {
            container_state(&old).is_some_and(|s| !s.0)
        });
        proxy.restore();

        // The attempt's end is reported with its cause (Fenced), then retried on A.
        let reported = wait_for(T, "the fenced attempt to be reported", || {
            let t = c.task(&id);
            let text = format!("{} {}", status_str(&t, "reason"), status_str(&t, "message"));
            text.contains("Fenced").then_some(t)
        });
        assert_eq!(
            reported["status"]["attempts"], 1,
            "{:#}",
            reported["status"]
        );
        let done = wait_for(T, "the second attempt to end", || {
            let t = c.task(&id);
            let ended = matches!(
                status_str(&t, "phase"),
                "Succeeded" | "Failed" | "Killed" | "Lost"
            );
            (ended && t["status"]["attempts"] == 2).then_some(t)
        });
        assert_eq!(
            status_str(&done, "phase"),
            "Succeeded",
            "{:#}",
            done["status"]
        );
        assert_eq!(done["status"]["attempts"], 2, "{:#}", done["status"]);
        assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "attempt 2\n");
    });
}
