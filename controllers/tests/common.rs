//! Shared harness for the in-process cluster tests: a real API server on 127.0.0.1:0 with
//! an in-memory store, controllers started through the public `run`, and helpers that act
//! as a fake node agent (register a node, heartbeat, report phases).
//!
//! Time: the controllers and the fake agent read one [`TokioClock`], and every wait here
//! is on tokio's clock. Tests that run on `#[tokio::test(start_paused = true)]` therefore
//! live in virtual time: a grace, back-off, deadline or TTL passes only when every task in
//! the test (server included) is waiting on a timer, so no amount of machine load makes a
//! step late, and [`DEADLINE`] is 20 virtual seconds, not a race against the wall clock.

#![allow(dead_code)]

use std::time::Duration;

use kohakuriver_api::{Node, Task};
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_client::{Api, Client};
use kohakuriver_controllers::ControllersConfig;
use kohakuriver_controllers::clock::{Clock, TokioClock};
use kohakuriver_controllers::retry::RetryPolicy;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A server, the controllers and a client, all stopped when dropped.
pub struct Harness {
    pub client: Client,
    /// Stops the server, the controllers and the helpers.
    pub shutdown: CancellationToken,
    /// The server, when this harness owns one.
    _server: Option<TestServer>,
    /// The time of the controllers and of the fake agent.
    pub clock: TokioClock,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    pub fn tasks(&self) -> Api<Task> {
        self.client.api::<Task>()
    }

    pub fn nodes(&self) -> Api<Node> {
        self.client.api::<Node>()
    }
}

/// Controller settings scaled down so tests run in seconds.
pub fn fast() -> ControllersConfig {
    ControllersConfig {
        node_grace: Duration::from_secs(2),
        resync: Duration::from_millis(300),
        retry: RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(2),
        },
        sweep_interval: Duration::from_millis(20),
        ..ControllersConfig::default()
    }
}

/// Starts a server only.
pub async fn server() -> Harness {
    let server = spawn_server(kohakuriver_apiserver::Config::insecure()).await;
    let client = Client::new(&server.url).unwrap();
    Harness {
        client,
        shutdown: server.shutdown.clone(),
        _server: Some(server),
        clock: TokioClock::new(),
    }
}

/// Starts controllers with `config` against the harness's server, on the harness's clock
/// (whatever clock `config` names).
pub fn controllers(h: &Harness, config: ControllersConfig) {
    let config = ControllersConfig {
        clock: std::sync::Arc::new(h.clock),
        ..config
    };
    let client = h.client.clone();
    let token = h.shutdown.clone();
    tokio::spawn(async move {
        kohakuriver_controllers::run(client, config, token)
            .await
            .unwrap();
    });
}

/// Starts a server and one set of controllers.
pub async fn cluster(config: ControllersConfig) -> Harness {
    let h = server().await;
    controllers(&h, config);
    h
}

/// Registers `node` as its agent would: create, then report status with a fresh
/// heartbeat and Ready=True.
pub async fn register(h: &Harness, node: Node) {
    let status = node.status.clone();
    let mut created = h.nodes().create(&node).await.unwrap();
    created.status = status;
    created.status.record_heartbeat(h.clock.now(), None);
    h.nodes().replace_status(&created).await.unwrap();
}

/// One heartbeat of the fake agent: fresh `lastHeartbeat`, Ready=True.
pub async fn heartbeat(h: &Harness, name: &str) {
    h.nodes()
        .update_status_with(name, |n| {
            n.status.record_heartbeat(h.clock.now(), None);
            true
        })
        .await
        .unwrap();
}

/// Keeps heartbeating `name` every 200 ms until the returned token is cancelled.
pub fn keep_alive(h: &Harness, name: &str) -> CancellationToken {
    let stop = h.shutdown.child_token();
    let (client, name, token) = (h.client.clone(), name.to_string(), stop.clone());
    let clock = h.clock;
    tokio::spawn(async move {
        let h = Harness {
            client,
            shutdown: CancellationToken::new(),
            _server: None,
            clock,
        };
        while !token.is_cancelled() {
            heartbeat(&h, &name).await;
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    stop
}

/// Polls a task until `pred` holds, failing the test after [`DEADLINE`].
pub async fn wait_task(h: &Harness, name: &str, what: &str, pred: impl Fn(&Task) -> bool) -> Task {
    let start = Instant::now();
    loop {
        let task = h.tasks().get_opt(name).await.unwrap();
        if let Some(task) = task {
            if pred(&task) {
                return task;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "task {name}: timed out waiting for {what}; last seen {:#?}",
                    task.status
                );
            }
        } else if start.elapsed() > DEADLINE {
            panic!("task {name}: timed out waiting for {what}; it is gone");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `check` answers true, failing the test after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reports a phase for a task as the agent would (status subresource).
pub async fn report(h: &Harness, name: &str, edit: impl Fn(&mut Task)) -> Task {
    h.tasks()
        .update_status_with(name, |t| {
            edit(t);
            true
        })
        .await
        .unwrap()
}
