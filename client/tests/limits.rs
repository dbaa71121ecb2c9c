//! The client's own limits: every request is answered within its timeout (a server that
//! never answers is an `Error::Timeout` naming the limit), and a server's 429s are waited
//! out as their `Retry-After` says, so a script over its rate slows down instead of failing.

use std::time::Duration;

use kohakuriver_api::Task;
use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_apiserver::{AuthConfig, Config, Limits, generate_token};
use kohakuriver_client::{Client, ClientOptions, Error};

/// How long a test waits for a one-second limit to act.
const GENEROUS: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_request_to_a_server_that_never_answers_times_out() {
    // Accepts connections and reads them, but never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let client = Client::with_options(
        &url,
        ClientOptions {
            request_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    )
    .unwrap();
    let answer = tokio::time::timeout(GENEROUS, client.info())
        .await
        .expect("the client's own timeout should end the request");
    let err = answer.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("did not answer within 1s"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_rate_waits_and_succeeds() {
    let token = generate_token();
    let config = Config {
        auth: AuthConfig {
            static_tokens: vec![(token.clone(), Identity::new("script", Role::User))],
            ..AuthConfig::default()
        },
        default_image: Some("busybox:latest".into()),
        limits: Limits {
            rate_per_second: 2,
            rate_burst: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = kohakuriver_apiserver::testing::spawn_server(config).await;
    let client = Client::with_options(
        &server.url,
        ClientOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .unwrap();
    // Wait for the server to answer at all.
    let deadline = tokio::time::Instant::now() + GENEROUS;
    while client.whoami().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tasks = client.api::<Task>();
    for i in 0..6 {
        tasks.create(&Task::test(&format!("t{i}"))).await.unwrap();
    }
    assert_eq!(
        tasks.list(&Default::default()).await.unwrap().items.len(),
        6
    );
}
