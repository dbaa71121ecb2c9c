//! The limits of `kohakuriver_tls::serve`, which both the API server and the agent's
//! endpoint go through, tested with raw TCP clients: a client dripping its headers or its
//! body is cut, and connections over the cap are closed while those under it are served.
//! Each runs on a plain-only server and on one sniffing plain and TLS on one port, as the
//! API server does without TLS flags. Limits are configured short; the assertions only ask
//! that the server closed the connection within a generous bound.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use kohakuriver_tls::{HttpLimits, ServerTls, self_signed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a test waits for the server to act on a limit of one or two seconds.
const GENEROUS: Duration = Duration::from_secs(30);

struct Server {
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves a tiny router with `limits`; `sniffing` serves plain and TLS on one port.
async fn serve(limits: HttpLimits, sniffing: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tls, dir) = if sniffing {
        let dir = tempfile::tempdir().unwrap();
        let made = self_signed(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let tls = ServerTls::from_pem_files(&made.cert_path, &made.key_path)
            .unwrap()
            .accepting_plain_http();
        (Some(tls), Some(dir))
    } else {
        (None, None)
    };
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/echo",
        post(|body: String| async move { body.len().to_string() }),
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(kohakuriver_tls::serve(
        listener,
        router,
        tls,
        limits,
        shutdown.clone(),
    ));
    Server {
        address,
        shutdown,
        _dir: dir,
    }
}

fn limits(header: u64, body: u64, connections: usize) -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_secs(header),
        body_timeout: Duration::from_secs(body),
        max_connections: connections,
    }
}

/// Reads until the server closes the connection (EOF or reset), within [`GENEROUS`];
/// answers what it read. Panics if the connection is still open by then.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen).to_string();
    assert!(
        closed.is_ok(),
        "the server kept the connection open; it sent {seen:?}"
    );
    seen
}

/// Writes `prefix`, then one more byte every 200 ms, until the server closes the
/// connection (EOF, reset, or a failed write), within [`GENEROUS`]; answers what it read.
async fn drip_until_closed(address: std::net::SocketAddr, prefix: &str) -> String {
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(prefix.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0u8; 1024];
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick() => {
                    if tcp.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen).to_string();
    assert!(
        closed.is_ok(),
        "the server kept a dripping connection open; it sent {seen:?}"
    );
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_dripping_its_headers_is_cut() {
    for sniffing in [false, true] {
        let server = serve(limits(1, 60, 16), sniffing).await;
        let started = Instant::now();
        let seen = drip_until_closed(server.address, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        assert!(!seen.contains("200 OK"), "sniffing={sniffing}: {seen:?}");
        eprintln!("sniffing={sniffing}: cut after {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_dripping_its_body_is_cut() {
    for sniffing in [false, true] {
        let server = serve(limits(60, 1, 16), sniffing).await;
        let seen = drip_until_closed(
            server.address,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        )
        .await;
        eprintln!("sniffing={sniffing}: answered {seen:?}");
        assert!(!seen.contains("200 OK"), "sniffing={sniffing}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_within_its_deadline_is_served() {
    let server = serve(limits(5, 5, 16), false).await;
    let mut tcp = TcpStream::connect(server.address).await.unwrap();
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let seen = read_until_closed(&mut tcp).await;
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen:?}");
    assert!(seen.ends_with("\r\n\r\n5"), "{seen:?}");
}

/// One GET on a fresh connection: the answer, or `None` when the server closed it first.
async fn get_once(address: std::net::SocketAddr) -> Option<String> {
    let mut tcp = TcpStream::connect(address).await.ok()?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let seen = read_until_closed(&mut tcp).await;
    (!seen.is_empty()).then_some(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_closed_and_served_again_once_one_ends() {
    for sniffing in [false, true] {
        let server = serve(limits(60, 60, 2), sniffing).await;
        // Two silent connections take both places.
        let first = TcpStream::connect(server.address).await.unwrap();
        let _second = TcpStream::connect(server.address).await.unwrap();
        // Accepted in order, so by the time a third is accepted both hold their places:
        // it is closed without an answer, however often it tries.
        for _ in 0..3 {
            assert_eq!(get_once(server.address).await, None, "sniffing={sniffing}");
        }
        // One place freed: served again (the server notices the close on its own time).
        drop(first);
        let deadline = Instant::now() + GENEROUS;
        loop {
            if let Some(answer) = get_once(server.address).await {
                assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never served again after a close"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
