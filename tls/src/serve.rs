//! Serving an axum router: one accept loop for plain HTTP, TLS, or both on one port, with
//! the limits of [`HttpLimits`] on every connection whichever it is.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ServerTls;
use crate::limits::{DeadlineBody, HttpLimits};

/// A client that connects and says nothing must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Pause after a failed accept (out of file descriptors, say), as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Connections refused over the cap are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for open
/// connections to finish their requests.
///
/// Without `tls` every connection is plain HTTP/1.1; with it, each is a TLS handshake (a
/// failed one is logged at debug and never stops the loop) followed by HTTP/1.1; when it
/// also accepts plain HTTP, a connection whose first byte is not a TLS handshake record is
/// served as plain HTTP/1.1. Requests carry the peer's address as axum's
/// `ConnectInfo<SocketAddr>`.
///
/// Every connection, plain or not, holds to `limits`: its request heads must arrive within
/// `header_timeout` and bodies within `body_timeout`. Past `max_connections` open
/// connections a new one is accepted and closed at once, without a word: answering 503
/// would mean a TLS handshake and reading a request head first, the very work a flood of
/// connections asks for, while a closed connection costs nothing and every client of ours
/// retries with backoff. Leaving it in the kernel's backlog instead would make a client
/// hang with no sign of why.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let plain_too = tls.as_ref().is_none_or(ServerTls::plain_too);
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.config()));
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(tcp);
            refused_since_log += 1;
            if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                tracing::warn!(
                    %peer,
                    refused = refused_since_log,
                    max_connections = limits.max_connections,
                    "closed new connections: the connection limit is reached (raise --max-connections)"
                );
                last_refusal_log = Some(Instant::now());
                refused_since_log = 0;
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let body_timeout = limits.body_timeout;
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(|body| DeadlineBody::new(body, body_timeout));
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let serve_http = |io| async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(io), service);
                if let Err(err) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
            };
            let Some(acceptor) = acceptor else {
                return serve_http(Box::new(tcp) as Box<dyn Io>).await;
            };
            if plain_too {
                let mut first = [0u8; 1];
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
                        return serve_http(Box::new(tcp)).await;
                    }
                    Ok(Ok(1)) => {}
                    _ => {
                        tracing::debug!(%peer, "connection closed or silent before its first byte");
                        return;
                    }
                }
            }
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            serve_http(Box::new(stream)).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
