//! The client over TLS against a tiny axum router served by `kohakuriver_tls::serve` with
//! certificates from `kohakuriver_tls::self_signed` in a temp dir: trusted with the CA,
//! refused clearly without it, and a pinned first contact that refuses a wrong CA.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use kohakuriver_client::{Client, ClientOptions, Error, fetch_pinned_ca};
use kohakuriver_tls::{ServerTls, self_signed};
use tokio_util::sync::CancellationToken;

/// A router with `/info` and `/cacerts`; served until the token is cancelled.
struct Server {
    url: String,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(tls: Option<ServerTls>, ca_pem: Vec<u8>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route(
            "/apis/kohakuriver/v1/info",
            // The peer's address must reach handlers (authentication logs it), TLS or not.
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                axum::Json(serde_json::json!({"version": peer.ip().to_string(), "auth": true}))
            }),
        )
        .route("/cacerts", get(move || async move { ca_pem.clone() }));
    let shutdown = CancellationToken::new();
    let done = tokio::spawn(kohakuriver_tls::serve(
        listener,
        router,
        tls,
        kohakuriver_tls::HttpLimits::server(),
        shutdown.clone(),
    ));
    Server {
        url,
        shutdown,
        done,
    }
}

fn names() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

fn client(url: &str, ca_pem: Option<&[u8]>) -> Client {
    Client::with_options(
        url,
        ClientOptions {
            token: Some("krv_test".to_string()),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            ..Default::default()
        },
    )
    .unwrap()
}

fn server_tls(dir: &Path) -> (ServerTls, Vec<u8>) {
    let made = self_signed(dir, &names()).unwrap();
    let tls = ServerTls::from_pem_files(&made.cert_path, &made.key_path).unwrap();
    (tls, made.ca_pem)
}

#[tokio::test]
async fn a_client_with_the_ca_is_served_and_one_without_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = server_tls(dir.path());
    let server = serve(Some(tls), ca.clone()).await;

    // Without the CA: the system's roots do not know it, and the message says what to do.
    let err = client(&server.url, None).info().await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("certificate is not trusted"), "{text}");
    assert!(text.contains("--ca FILE"), "{text}");
    assert!(err.is_connect());

    // A CA of another cluster is no better.
    let other = tempfile::tempdir().unwrap();
    let (_, other_ca) = server_tls(other.path());
    let err = client(&server.url, Some(&other_ca))
        .info()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");

    // Plain http:// to it: told to use https://.
    let http = server.url.replace("https://", "http://");
    let err = client(&http, None).info().await.unwrap_err();
    assert!(
        err.to_string().contains("is it serving https://?"),
        "{err:?}"
    );

    // The failed handshakes did not stop the server: with the CA, by IP and by name.
    let info = client(&server.url, Some(&ca)).info().await.unwrap();
    assert_eq!(info.version, "127.0.0.1");
    let by_name = server.url.replace("127.0.0.1", "localhost");
    client(&by_name, Some(&ca)).info().await.unwrap();

    // Shutdown ends the accept loop.
    server.shutdown.cancel();
    server.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn https_to_a_plain_server_says_so() {
    let server = serve(None, Vec::new()).await;
    let https = server.url.replace("http://", "https://");
    let err = client(&https, None).info().await.unwrap_err();
    assert!(err.to_string().contains("did not answer in TLS"), "{err:?}");
    // And plain http:// still works exactly as before.
    let info = client(&server.url, None).info().await.unwrap();
    assert_eq!(info.version, "127.0.0.1");
}

#[tokio::test]
async fn a_pinned_first_contact_accepts_only_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = server_tls(dir.path());
    let server = serve(Some(tls), ca.clone()).await;
    let fingerprint = kohakuriver_tls::fingerprint(&ca).unwrap();

    let fetched = fetch_pinned_ca(&server.url, &fingerprint).await.unwrap();
    assert_eq!(fetched, ca);
    // From then on the server is verified with what was fetched.
    client(&server.url, Some(&fetched)).info().await.unwrap();

    let wrong = "00".repeat(32);
    let err = fetch_pinned_ca(&server.url, &wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TlsConfig(kohakuriver_tls::Error::FingerprintMismatch { .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("pins sha256:{wrong}")) && text.contains(&fingerprint),
        "{text}"
    );
}

#[tokio::test]
async fn certificates_issued_later_by_the_stored_ca_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let made = self_signed(dir.path(), &names()).unwrap();
    // Made once and kept: a second call changes nothing.
    let again = self_signed(dir.path(), &names()).unwrap();
    assert_eq!(again.ca_pem, made.ca_pem);
    assert_eq!(
        std::fs::read(&again.cert_path).unwrap(),
        std::fs::read(&made.cert_path).unwrap()
    );
    #[cfg(unix)]
    for key in ["ca.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // An agent's certificate, signed by the CA read back from disk.
    let agent = kohakuriver_tls::issue(dir.path(), "agent", &names()).unwrap();
    let tls = ServerTls::from_pem_files(&agent.cert_path, &agent.key_path).unwrap();
    let server = serve(Some(tls), made.ca_pem.clone()).await;
    client(&server.url, Some(&made.ca_pem))
        .info()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_certificate_for_other_names_is_refused_for_that_reason() {
    let dir = tempfile::tempdir().unwrap();
    let made = self_signed(dir.path(), &names()).unwrap();
    let other =
        kohakuriver_tls::issue(dir.path(), "other", &["example.invalid".to_string()]).unwrap();
    let tls = ServerTls::from_pem_files(&other.cert_path, &other.key_path).unwrap();
    let server = serve(Some(tls), made.ca_pem.clone()).await;
    let err = client(&server.url, Some(&made.ca_pem))
        .info()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not name the host in the URL"),
        "{err}"
    );
}

#[test]
fn unusable_files_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let made = self_signed(dir.path(), &names()).unwrap();
    let missing = dir.path().join("nope.pem");
    let err = ServerTls::from_pem_files(&missing, &made.key_path).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    // A key that is not the certificate's.
    let other = kohakuriver_tls::issue(dir.path(), "other", &names()).unwrap();
    let err = ServerTls::from_pem_files(&made.cert_path, &other.key_path).unwrap_err();
    assert!(
        err.to_string()
            .contains("does the key belong to the certificate"),
        "{err}"
    );
    // A key file given as the certificate.
    let err = ServerTls::from_pem_files(&made.key_path, &made.key_path).unwrap_err();
    assert!(
        err.to_string().contains("no usable PEM certificate"),
        "{err}"
    );
}

/// A server that also accepts plain HTTP answers `https://` and `http://` on one port, each
/// with the peer's address; a wrong CA is still refused on the TLS side.
#[tokio::test]
async fn one_port_answers_https_and_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = server_tls(dir.path());
    let server = serve(Some(tls.accepting_plain_http()), ca.clone()).await;
    let plain = server.url.replacen("https://", "http://", 1);

    let info = client(&server.url, Some(&ca)).info().await.unwrap();
    assert_eq!(info.version, "127.0.0.1");
    let info = client(&plain, None).info().await.unwrap();
    assert_eq!(info.version, "127.0.0.1");

    let other = tempfile::tempdir().unwrap();
    let (_, other_ca) = server_tls(other.path());
    let err = client(&server.url, Some(&other_ca))
        .info()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");

    server.shutdown.cancel();
    server.done.await.unwrap().unwrap();
}
