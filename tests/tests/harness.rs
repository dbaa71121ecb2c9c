//! The harness itself: processes can be SIGKILLed and restarted on the same database, data
//! directories and ports (what the fault scenarios of issue 6 build on), and several agents
//! share one server.

use std::time::Duration;

use kohakuriver_tests::{Cluster, docker_ready};

const T: Duration = Duration::from_secs(60);

#[test]
fn agent_and_server_survive_kill_and_restart() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let a = c.add_agent("harness-a");
    let b = c.add_agent("harness-b");
    assert_ne!(a, b);

    // kill -9 the agent while its task runs, restart it on the same dirs and port.
    let id = c.submit(&[
        "-t",
        &a,
        "--",
        "sh",
        "-c",
        "echo before; sleep 3; echo after",
    ]);
    c.wait_phase(&id, &["Running"], T);
    let port = c.agent_port(&a);
    c.kill_agent(&a);
    assert!(c.agent_proc(&a).is_none());
    c.restart_agent(&a);
    assert_eq!(c.agent_port(&a), port);
    c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "before\nafter\n");

    // kill -9 the server and restart it on the same database: everything is still there.
    c.kill_server();
    assert!(c.kr(&["node", "list"]).code != 0, "the server is down");
    c.restart_server();
    assert_eq!(c.phase(&id), "Succeeded");
    c.wait_node_ready(&a, T);
    c.wait_node_ready(&b, T);
    let run = c.kr(&["task", "submit", "-t", &b, "-w", "--", "echo", "again"]);
    run.code(0);
    assert!(c.dump_logs(5).contains("server.log"));
}
