//! The agent against a server with authentication on (fake runtime, no Docker): it joins
//! with a join credential, keeps the node credential, closes its endpoint with the agent
//! secret, and the server's log proxy still reads through it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_apiserver::{AuthConfig, generate_token};
use kohakuriver_client::{Client, ClientOptions, LogParams};
use kohakuriver_node_agent::DockerConnection;
use kohakuriver_node_agent::credential::NODE_TOKEN_FILE;
use kohakuriver_node_agent::fake_runtime::FakeRuntime;
use kohakuriver_node_agent::runtime::LogStream;
use support::{Cluster, Options, alloc};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn a_joined_agent_serves_logs_to_the_server_only() {
    let fake = FakeRuntime::new();
    fake.add_image(support::IMAGE);
    let admin = generate_token();
    let auth = AuthConfig {
        static_tokens: vec![(admin.clone(), Identity::new("root", Role::Admin))],
        ..AuthConfig::default()
    };
    let mut c = Cluster::start(
        "auth-join",
        Options {
            runtime: Some(DockerConnection::Runtime(Arc::new(fake.clone()))),
            server_auth: Some(auth),
            client_token: Some(admin),
            join: true,
            ..Default::default()
        },
    )
    .await;
    let join = c.agent_token.clone().unwrap();

    // The join credential was exchanged for a node credential of this node, kept private.
    let saved = c.data_dir.path().join(NODE_TOKEN_FILE);
    let node_token = std::fs::read_to_string(&saved).expect("node.token saved");
    let node_token = node_token.trim().split('@').next().unwrap().to_string();
    assert_ne!(node_token, join);
    let as_node = Client::with_options(
        &c.server_url,
        ClientOptions {
            token: Some(node_token),
            ..Default::default()
        },
    )
    .unwrap();
    let me = as_node.whoami().await.unwrap();
    assert_eq!((me.name.as_str(), me.role), (c.node.as_str(), Role::Node));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let t = c
        .run(Task::test("a").command(&["echo", "hi"]), alloc("0", None))
        .await;
    c.wait_phase("a", TaskPhase::Running, T).await;
    fake.set_output("kohakuriver-task-a", &[(LogStream::Stdout, "hi\n")]);
    fake.exit("kohakuriver-task-a", 0, false);
    c.wait_phase("a", TaskPhase::Succeeded, T).await;

    // Through the server's log proxy: the server presents the agent secret.
    let mut stream = c
        .client
        .task_log("a", &LogParams::default())
        .await
        .expect("log through the server");
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(text).unwrap(), "hi\n");

    // Straight at the agent: refused without the secret, served with it.
    let addr = c.agent.as_ref().unwrap().local_addr;
    let url = format!(
        "http://{addr}/v1/tasks/a/log?uid={}",
        t.metadata.uid.as_deref().unwrap()
    );
    let http = kohakuriver_tls::http_client();
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let secret = as_node
        .node_credentials(&c.node)
        .await
        .unwrap()
        .agent_secret;
    let served = http.get(&url).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.unwrap(), "hi\n");

    // Restarted with the same, now spent, join credential: the saved node credential.
    c.stop_agent().await;
    c.start_agent().await;
    assert!(as_node.whoami().await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_a_credential_is_told_how_to_get_one() {
    let server =
        kohakuriver_apiserver::testing::spawn_server(kohakuriver_apiserver::Config::default())
            .await;
    let (url, shutdown) = (server.url.clone(), server.shutdown.clone());
    let data = tempfile::tempdir().unwrap();
    let mut config = kohakuriver_node_agent::AgentConfig::new("lonely", &url, data.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.docker = DockerConnection::Runtime(Arc::new(FakeRuntime::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match kohakuriver_node_agent::start(config.clone(), shutdown.clone()).await {
            Ok(_) => panic!("started without a credential against a server with auth"),
            Err(e) if e.to_string().contains("cannot reach") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "server never came up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        err.contains(
            "the server requires a credential: start the agent with --token (kohakuriver token create --role node --name lonely)"
        ),
        "{err}"
    );
    shutdown.cancel();
}
