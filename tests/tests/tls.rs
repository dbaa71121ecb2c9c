//! TLS end to end with the real binary: `kohakuriver up --tls-self-signed` makes a cluster CA
//! and certificates in its data dir, serves the API over https, gives its agent a
//! certificate from the same CA, and a task runs and its logs come back through the
//! server's log proxy, all over https, with the CLI given `--ca <data-dir>/tls/ca.pem`.

use std::time::Duration;

use kohakuriver_tests::{AgentOptions, Cluster, ServerOptions, binary, docker_ready, http_get};

const T: Duration = Duration::from_secs(60);

fn tls_up(prefix: &str) -> Option<Cluster> {
    if !docker_ready() {
        return None;
    }
    Some(Cluster::up_with(
        prefix,
        ServerOptions {
            tls_self_signed: true,
            ..ServerOptions::default()
        },
        AgentOptions::default(),
    ))
}

#[test]
fn up_with_tls_self_signed_runs_a_task_over_https() {
    let Some(mut c) = tls_up("tls") else {
        return;
    };
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

    // Without the CA the CLI refuses the server and says what to give it.
    let port = c.port().to_string();
    let run = kohakuriver_tests::Run::exec(
        binary(),
        &[
            "--server".to_string(),
            format!("https://127.0.0.1:{port}"),
            "node".to_string(),
            "list".to_string(),
        ],
        T,
    );
    run.fails()
        .stderr_has("certificate is not trusted")
        .stderr_has("--ca");
    // And the port does not answer plain HTTP.
    let plain = http_get(&format!("http://127.0.0.1:{port}/healthz"));
    assert!(!matches!(plain, Ok(ref r) if r.status == 200), "{plain:?}");

    // The CA is kept: a restart serves certificates from the same CA, so --ca stays valid.
    let before = std::fs::read(&ca).unwrap();
    c.restart_server();
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    let id = c.submit(&["-t", &node, "--", "echo", "again"]);
    c.wait_phase(&id, &["Succeeded"], T);
    assert_eq!(c.kr(&["task", "logs", &id]).ok().stdout, "again\n");
}
