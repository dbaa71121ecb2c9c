//! TLS end to end with the real binary. `up --tls-self-signed` makes a cluster CA and
//! certificates in its data dir, serves the API over https, gives its agent a certificate
//! from the same CA, and a task runs and its logs come back through the server's log proxy,
//! all over https. `server --tls-self-signed` with a separate agent that has only a node
//! token, whose `@sha256:` pin makes its first contact verified.

use std::time::Duration;

use kohakuriver_tests::{
    AgentOptions, Cluster, Run, ServerOptions, binary, docker_ready, http_get,
};

const T: Duration = Duration::from_secs(60);

fn tls() -> ServerOptions {
    ServerOptions {
        tls_self_signed: true,
        ..ServerOptions::default()
    }
}

#[test]
fn up_with_tls_self_signed_runs_a_task_over_https() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::up_with("tls-up", tls(), AgentOptions::default());
    let ca = c.ca().expect("a TLS cluster has a CA").to_path_buf();
    assert!(c.url().starts_with("https://"), "{}", c.url());
    let node = c.up_node().to_string();

    // The agent's endpoint is https too, so the log proxy talks TLS to it.
    let address = c.node(&node).unwrap()["status"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(address.starts_with("https://"), "{address}");

    // A task end to end: submitted, run, logs proxied agent → server → CLI.
    let id = c.submit(&["-t", &node, "--", "echo", "hello over tls"]);
    c.wait_phase(&id, &["Succeeded"], T);
    let logs = c.kr(&["task", "logs", &id]);
    logs.ok();
    assert_eq!(logs.stdout, "hello over tls\n");
    // The CLI config `up` wrote names the CA, so plain commands on this machine work.
    c.kr_plain(&["task", "logs", &id])
        .ok()
        .stdout_has("hello over tls");

    // Without the CA the CLI refuses the server and says what to give it.
    let url = c.url().to_string();
    let run = Run::exec(
        binary(),
        &["--server".to_string(), url, "node".into(), "list".into()],
        T,
    );
    run.fails()
        .stderr_has("certificate is not trusted")
        .stderr_has("--ca");
    // And the port does not answer plain HTTP.
    let plain = http_get(&format!("http://127.0.0.1:{}/healthz", c.port()));
    assert!(!matches!(plain, Ok(ref r) if r.status == 200), "{plain:?}");

    // The CA is kept: a restart serves certificates from the same CA, so --ca stays valid.
    let before = std::fs::read(&ca).unwrap();
    c.restart_server();
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    let id = c.submit(&["-t", &node, "--", "echo", "again"]);
    c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "again\n");
}

#[test]
fn an_agent_with_a_pinned_node_token_verifies_the_server_on_first_contact() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start_with(tls());
    let ca = std::fs::read(c.ca().expect("a TLS cluster has a CA")).unwrap();
    // The harness gives the agent only `--token` (from `token create --role node`, which
    // carries the CA's fingerprint over TLS), and no --ca.
    let node = c.add_agent("tls-pin");
    let saved = c.agent_data_dir(&node).join("agent").join("ca.pem");
    assert_eq!(
        std::fs::read(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display())),
        ca
    );
    let id = c.submit(&["-t", &node, "--", "echo", "pinned"]);
    c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "pinned\n");
}
