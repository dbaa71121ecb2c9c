//! A real server on 127.0.0.1:0 for the tests and benchmarks of every crate that talks to
//! it: one [`spawn_server`] (on the caller's runtime) and one [`spawn_server_in_thread`]
//! (on its own thread and runtime, for synchronous tests that run the CLI as a child
//! process), instead of a copy of the bind-spawn-cancel dance in each test harness.
//!
//! Compiled only with the `testing` cargo feature, which only dev-dependencies turn on, so
//! the shipped binary never holds it (`cargo tree -p kohakuriver -e features` shows no
//! `testing`).

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, Error, serve};

/// A server serving on the caller's runtime; stops when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, or `https://…` when the config has TLS.
    pub url: String,
    /// Cancel it to stop the server (dropping the `TestServer` does).
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), Error>>>,
}

/// Binds 127.0.0.1:0 and serves `config` there on the current runtime. The listener is
/// bound before this returns, so requests sent at once wait for the server to accept them
/// instead of being refused.
pub async fn spawn_server(config: Config) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the test server");
    let url = url(&listener, &config);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(serve(listener, config, shutdown.clone()));
    TestServer {
        url,
        shutdown,
        handle: Some(handle),
    }
}

impl TestServer {
    /// Stops the server and waits until it has, with what `serve` returned.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("a server is stopped once");
        handle.await.expect("the server task panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A server on its own thread and multi-threaded runtime; stops (and the thread is joined)
/// when dropped.
pub struct ThreadServer {
    /// `http://127.0.0.1:PORT`, or `https://…` when the config has TLS.
    pub url: String,
    /// Cancel it to stop the server (dropping the `ThreadServer` does).
    pub shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves `config` on 127.0.0.1:0 from a thread of its own, for tests with no runtime of
/// their own; returns once the port is bound.
pub fn spawn_server_in_thread(config: Config) -> ThreadServer {
    let shutdown = CancellationToken::new();
    let (bound, url) = std::sync::mpsc::channel();
    let token = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the test server");
        runtime.block_on(async move {
            let server = spawn_server(config).await;
            bound.send(server.url.clone()).expect("the test is waiting");
            token.cancelled().await;
            server.stop().await.expect("the test server stops cleanly");
        });
    });
    let url = url.recv().expect("the test server thread started");
    ThreadServer {
        url,
        shutdown,
        thread: Some(thread),
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            // A panic there was already printed; a second one here would abort.
            let _ = thread.join();
        }
    }
}

fn url(listener: &tokio::net::TcpListener, config: &Config) -> String {
    let address = listener.local_addr().expect("the bound address");
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{address}")
}
