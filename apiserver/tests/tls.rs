//! The server over HTTPS, and `GET /cacerts` for first contacts.

mod common;

use axum::http::StatusCode;
use common::Api;
use kohakuriver_apiserver::{AuthConfig, Config};

fn names() -> Vec<String> {
    vec!["127.0.0.1".to_string()]
}

#[tokio::test]
async fn cacerts_gives_the_ca_or_says_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let made = kohakuriver_tls::self_signed(dir.path(), &names()).unwrap();
    let api = Api::with(Config {
        ca_pem: Some(made.ca_pem.clone()),
        auth: AuthConfig::disabled(),
        ..Config::default()
    });
    let (code, body) = api.get("/cacerts").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body.as_str().unwrap().as_bytes(), made.ca_pem);

    let api = Api::with(Config {
        auth: AuthConfig::disabled(),
        ..Config::default()
    });
    let (code, body) = api.get("/cacerts").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["reason"], "NotFound");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--tls-self-signed"),
        "{body}"
    );
}

#[tokio::test]
async fn the_server_speaks_https_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = kohakuriver_tls::self_signed(dir.path(), &names()).unwrap();
    let tls = kohakuriver_tls::ServerTls::from_pem_files(&made.cert_path, &made.key_path).unwrap();
    let server = kohakuriver_apiserver::testing::spawn_server(Config {
        tls: Some(tls),
        ca_pem: Some(made.ca_pem.clone()),
        auth: AuthConfig::disabled(),
        ..Config::default()
    })
    .await;
    let url = server.url.clone();
    let http = kohakuriver_tls::http_client_builder(Some(&made.ca_pem))
        .unwrap()
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let answer = loop {
        match http.get(format!("{url}/cacerts")).send().await {
            Ok(answer) => break answer,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("the server did not answer over https: {e}"),
        }
    };
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap(), made.ca_pem);
    server.stop().await.unwrap();
}
