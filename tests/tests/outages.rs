//! Whole-system outages of issue 10 that lost work before: the server down for longer than
//! the node grace, and a node deleted while its agent keeps heartbeating. Real processes,
//! real Docker, the test image. Each prints its wall time on stderr.

use std::time::{Duration, Instant};

use kohakuriver_tests::{Cluster, ServerOptions, docker_ready, wait_until};

const T: Duration = Duration::from_secs(60);

/// A short grace, so the outage below is longer than it (above the agents' fence-after
/// plus kill grace, 3 s + 2 s, as the agent checks at start).
const GRACE: &str = "6s";

fn timed<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    eprintln!("[outages] {name}: ok, wall time {:.1?}", start.elapsed());
    r
}

fn cluster() -> Cluster {
    Cluster::start_with(ServerOptions {
        node_grace: Some(GRACE.into()),
        ..ServerOptions::default()
    })
}

/// The server is killed while a task runs and stays down for longer than the node grace.
/// When it comes back, the task keeps running and ends with its real exit code and output:
/// liveness is judged on the controllers' clock, and each node gets a full grace after a
/// start, so the agent (which kept heartbeating into the void) is not declared lost.
#[test]
fn a_server_down_longer_than_the_grace_loses_nothing() {
    assert!(docker_ready());
    timed("server down longer than the grace", || {
        let mut c = cluster();
        let node = c.add_agent("outage");
        let id = c.submit(&[
            "-t",
            &node,
            "--",
            "sh",
            "-c",
            "echo started; sleep 14; echo done; exit 3",
        ]);
        c.wait_phase(&id, &["Running"], T);
        c.kill_server();
        // The outage itself: longer than the 6 s grace.
        std::thread::sleep(Duration::from_secs(8));
        c.restart_server();
        let done = c.wait_finished(&id, T);
        assert_eq!(done["status"]["phase"], "Failed", "{:#}", done["status"]);
        assert_eq!(done["status"]["exitCode"], 3, "{:#}", done["status"]);
        assert_eq!(
            done["status"]["attempts"], 1,
            "ran once: {:#}",
            done["status"]
        );
        let logs = c.kr(&["task", "logs", &id]);
        logs.ok();
        assert_eq!(logs.stdout, "started\ndone\n");
    });
}

/// An operator deletes a Node whose agent is alive; the agent registers it again at its
/// next heartbeat. Its running task is not touched: a deleted node's tasks are lost only
/// after the grace.
#[test]
fn a_node_deleted_while_heartbeating_keeps_its_tasks() {
    assert!(docker_ready());
    timed("node deleted while heartbeating", || {
        let mut c = cluster();
        let node = c.add_agent("deleted");
        let id = c.submit(&["-t", &node, "--", "sh", "-c", "sleep 8; echo fine"]);
        c.wait_phase(&id, &["Running"], T);
        c.kr(&["delete", "node", &node]).ok();
        wait_until(T, "the agent registers its node again", || {
            c.node(&node).is_some()
        });
        let done = c.wait_finished(&id, T);
        assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
        assert_eq!(c.kr(&["task", "logs", &id]).stdout, "fine\n");
    });
}
