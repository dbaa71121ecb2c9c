//! The agent against an HTTPS server it knows only by the CA fingerprint of its credential
//! (the pinned first contact), serving its own endpoint over HTTPS with a certificate from
//! the same CA, so the server's log proxy reaches it. No Docker: the recording fake runtime.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_apiserver::{AuthConfig, Config};
use kohakuriver_client::{Client, ClientOptions, LogParams};
use kohakuriver_node_agent::fake_runtime::FakeRuntime;
use kohakuriver_node_agent::runtime::LogStream;
use kohakuriver_node_agent::{AgentConfig, DockerConnection, RunningAgent};
use kohakuriver_tls::ServerTls;
use support::{IMAGE, alloc, unique_name};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

struct Setup {
    _tls_dir: tempfile::TempDir,
    data_dir: tempfile::TempDir,
    server_url: String,
    ca_pem: Vec<u8>,
    agent_tls: ServerTls,
    /// The HTTPS server; it stops when the setup is dropped.
    _server: TestServer,
}

/// An HTTPS API server with a self-signed cluster CA, and an agent certificate from it.
async fn setup() -> Setup {
    let tls_dir = tempfile::tempdir().unwrap();
    let names = vec!["127.0.0.1".to_string()];
    let made = kohakuriver_tls::self_signed(tls_dir.path(), &names).unwrap();
    let agent = kohakuriver_tls::issue(tls_dir.path(), "agent", &names).unwrap();
    let server = spawn_server(Config {
        tls: Some(ServerTls::from_pem_files(&made.cert_path, &made.key_path).unwrap()),
        ca_pem: Some(made.ca_pem.clone()),
        auth: AuthConfig::disabled(),
        ..Config::default()
    })
    .await;
    Setup {
        data_dir: tempfile::tempdir().unwrap(),
        server_url: server.url.clone(),
        ca_pem: made.ca_pem,
        agent_tls: ServerTls::from_pem_files(&agent.cert_path, &agent.key_path).unwrap(),
        _tls_dir: tls_dir,
        _server: server,
    }
}

fn agent_config(s: &Setup, node: &str, fake: &FakeRuntime, fingerprint: &str) -> AgentConfig {
    let mut config = AgentConfig::new(node, &s.server_url, s.data_dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.heartbeat_interval = Duration::from_millis(500);
    config.resync_interval = Duration::from_secs(2);
    config.default_image = Some(IMAGE.to_string());
    config.docker = DockerConnection::Runtime(Arc::new(fake.clone()));
    config.tls = Some(s.agent_tls.clone());
    config.ca_fingerprint = Some(fingerprint.to_string());
    config
}

/// Starts the agent, retrying while the concurrently started server comes up.
async fn start(
    config: AgentConfig,
    shutdown: &CancellationToken,
) -> Result<RunningAgent, kohakuriver_node_agent::Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match kohakuriver_node_agent::start(config.clone(), shutdown.clone()).await {
            Err(e) if e.to_string().contains("cannot reach") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_agent_verifies_the_server_and_serves_logs_over_https() {
    let s = setup().await;
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let node = unique_name("tls-agent");
    let fingerprint = kohakuriver_tls::fingerprint(&s.ca_pem).unwrap();
    let shutdown = CancellationToken::new();
    let agent = start(agent_config(&s, &node, &fake, &fingerprint), &shutdown)
        .await
        .expect("the agent starts with only the fingerprint");

    // The CA was fetched, checked and kept for next time.
    assert_eq!(
        std::fs::read(s.data_dir.path().join("ca.pem")).unwrap(),
        s.ca_pem
    );
    assert!(
        agent.advertise_url.starts_with("https://127.0.0.1:"),
        "{}",
        agent.advertise_url
    );

    // A task's output travels agent → server's log proxy over https → client.
    let client = Client::with_options(
        &s.server_url,
        ClientOptions {
            token: None,
            ca_pem: Some(s.ca_pem.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let tasks = client.api::<Task>();
    let mut task = Task::test("logged").command(&["echo", "hi"]);
    task.spec.image = Some(IMAGE.to_string());
    tasks.create(&task).await.unwrap();
    let allocation = alloc("1", None);
    tasks
        .update_status_with("logged", |t| {
            t.status.node = Some(node.clone());
            t.status.allocation = Some(allocation.clone());
            t.status.phase = TaskPhase::Assigned;
            true
        })
        .await
        .unwrap();
    support::wait_until(T, "the container exists", || {
        fake.container("kohakuriver-task-logged").is_some()
    })
    .await;
    fake.set_output("kohakuriver-task-logged", &[(LogStream::Stdout, "hi\n")]);
    fake.exit("kohakuriver-task-logged", 0, false);
    let deadline = Instant::now() + T;
    while tasks.get("logged").await.unwrap().status.phase != TaskPhase::Succeeded {
        assert!(Instant::now() < deadline, "the task did not succeed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut stream = client
        .task_log("logged", &LogParams::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, b"hi\n");

    shutdown.cancel();
    agent.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_fingerprint_is_refused_and_nothing_is_saved() {
    let s = setup().await;
    let fake = FakeRuntime::new();
    let node = unique_name("tls-wrong");
    let shutdown = CancellationToken::new();
    let wrong = "00".repeat(32);
    let err = start(agent_config(&s, &node, &fake, &wrong), &shutdown)
        .await
        .err()
        .expect("a wrong fingerprint must be refused");
    let text = err.to_string();
    assert!(
        text.contains("on first contact") && text.contains(&format!("pins sha256:{wrong}")),
        "{text}"
    );
    assert!(!s.data_dir.path().join("ca.pem").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_ca_that_no_longer_matches_is_fetched_again() {
    let s = setup().await;
    // A CA from an earlier, different cluster.
    let old = tempfile::tempdir().unwrap();
    let old_ca = kohakuriver_tls::self_signed(old.path(), &["x".to_string()])
        .unwrap()
        .ca_pem;
    std::fs::write(s.data_dir.path().join("ca.pem"), &old_ca).unwrap();
    let fake = FakeRuntime::new();
    let shutdown = CancellationToken::new();
    let fingerprint = kohakuriver_tls::fingerprint(&s.ca_pem).unwrap();
    let agent = start(
        agent_config(&s, &unique_name("tls-refetch"), &fake, &fingerprint),
        &shutdown,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(s.data_dir.path().join("ca.pem")).unwrap(),
        s.ca_pem
    );
    shutdown.cancel();
    agent.wait().await;
}
