//! Shared fixtures of the real-Docker tests: the test image, an in-process server plus
//! agent per test (unique node name, temp data dir), binding tasks as the scheduler would,
//! and waiting on conditions with deadlines.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kohakuriver_api::{Allocation, Node, Task, TaskPhase};
use kohakuriver_apiserver::testing::{TestServer, spawn_server};
use kohakuriver_client::{Api, Client};
use kohakuriver_node_agent::gpu::StaticGpuSource;
use kohakuriver_node_agent::{AgentConfig, RunningAgent};
use tokio_util::sync::CancellationToken;

/// The image every test task runs, whether the Docker tests can run (true means go ahead)
/// and names unique per run: the whole-system harness's helpers, one for every crate's
/// Docker tests.
// Not every test binary that includes this module runs Docker.
#[allow(unused_imports)]
pub use kohakuriver_tests::{IMAGE, docker_ready, unique_name};

/// An in-process server plus one agent.
pub struct Cluster {
    pub client: Client,
    pub tasks: Api<Task>,
    pub nodes: Api<Node>,
    pub node: String,
    pub server_url: String,
    pub data_dir: tempfile::TempDir,
    pub shared_dir: Option<tempfile::TempDir>,
    pub agent_shutdown: CancellationToken,
    pub agent: Option<RunningAgent>,
    server_shutdown: CancellationToken,
    /// The in-process server; it stops when the cluster is dropped.
    _server: TestServer,
    pub gpus: Option<StaticGpuSource>,
    pub kill_grace: Option<Duration>,
    pub runtime: Option<kohakuriver_node_agent::DockerConnection>,
    pub allow_mounts: Option<Vec<PathBuf>>,
    pub agent_token: Option<String>,
    pub log_limits: Option<kohakuriver_node_agent::container_config::LogLimits>,
    pull_timeout: Option<Duration>,
    fence_after: Option<Duration>,
    configure: Option<Configure>,
}

/// A change to the agent's config, made at every (re)start.
pub type Configure = std::sync::Arc<dyn Fn(&mut AgentConfig) + Send + Sync>;

/// Options for [`Cluster::start`].
#[derive(Default)]
pub struct Options {
    pub gpus: Option<StaticGpuSource>,
    pub shared: bool,
    pub kill_grace: Option<Duration>,
    pub runtime: Option<kohakuriver_node_agent::DockerConnection>,
    /// The server's auth settings (default: no authentication).
    pub server_auth: Option<kohakuriver_apiserver::AuthConfig>,
    /// The agent's `--allow-mounts`.
    pub allow_mounts: Option<Vec<PathBuf>>,
    /// The credential the test's own client sends (with `server_auth`).
    pub client_token: Option<String>,
    /// The agent's `--token`.
    pub agent_token: Option<String>,
    /// Start the agent with a single-use join credential made by the test's client.
    pub join: bool,
    /// The agent's `--log-max-size` and `--log-max-file`.
    pub log_limits: Option<kohakuriver_node_agent::container_config::LogLimits>,
    /// The agent's `--pull-timeout` (default: the agent's).
    pub pull_timeout: Option<Duration>,
    /// The agent's `--fence-after` (default: the agent's).
    pub fence_after: Option<Duration>,
    /// Any other change to the agent's config.
    pub configure: Option<Configure>,
}

impl Cluster {
    /// Server on 127.0.0.1:0 (in memory) and an agent named after `test`.
    pub async fn start(test: &str, options: Options) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let config = kohakuriver_apiserver::Config {
            auth: options
                .server_auth
                .clone()
                .unwrap_or_else(kohakuriver_apiserver::AuthConfig::disabled),
            ..Default::default()
        };
        let server = spawn_server(config).await;
        let (server_url, server_shutdown) = (server.url.clone(), server.shutdown.clone());
        let client = Client::with_options(
            &server_url,
            kohakuriver_client::ClientOptions {
                token: options.client_token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let shared_dir = options.shared.then(|| tempfile::tempdir().unwrap());
        let mut cluster = Cluster {
            tasks: client.api(),
            nodes: client.api(),
            client,
            node: unique_name(test),
            server_url,
            data_dir: tempfile::tempdir().unwrap(),
            shared_dir,
            agent_shutdown: CancellationToken::new(),
            agent: None,
            server_shutdown,
            _server: server,
            gpus: options.gpus,
            kill_grace: None,
            runtime: options.runtime,
            allow_mounts: options.allow_mounts,
            agent_token: options.agent_token,
            log_limits: options.log_limits,
            pull_timeout: options.pull_timeout,
            fence_after: options.fence_after,
            configure: options.configure,
        };
        cluster.kill_grace = options.kill_grace;
        if options.join {
            cluster.agent_token = Some(cluster.join_token().await);
        }
        cluster.start_agent().await;
        cluster
    }

    /// The agent's config for this cluster.
    pub fn agent_config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(&self.node, &self.server_url, self.data_dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.shared_dir = self.shared_dir.as_ref().map(|d| d.path().to_path_buf());
        config.static_gpus = self.gpus.clone();
        config.heartbeat_interval = Duration::from_millis(500);
        config.resync_interval = Duration::from_secs(2);
        config.kill_grace = Duration::from_secs(2);
        config.default_image = Some(IMAGE.to_string());
        if let Some(runtime) = &self.runtime {
            config.docker = runtime.clone();
        }
        config.allow_mounts = self.allow_mounts.clone();
        config.token = self.agent_token.clone();
        if let Some(limits) = self.log_limits {
            config.log_limits = limits;
        }
        if let Some(timeout) = self.pull_timeout {
            config.pull_timeout = timeout;
        }
        if let Some(after) = self.fence_after {
            config.fence_after = after;
        }
        if let Some(configure) = &self.configure {
            configure(&mut config);
        }
        config
    }

    /// (Re)starts the agent; the server waits up to a few seconds for the first start
    /// because it starts concurrently.
    pub async fn start_agent(&mut self) {
        self.agent_shutdown = CancellationToken::new();
        let mut config = self.agent_config();
        if let Some(grace) = self.kill_grace {
            config.kill_grace = grace;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let agent = loop {
            match kohakuriver_node_agent::start(config.clone(), self.agent_shutdown.clone()).await {
                Ok(agent) => break agent,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("agent not started yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("agent did not start: {e}"),
            }
        };
        self.agent = Some(agent);
    }

    /// A single-use join credential, made by the test's client (an admin); the server may
    /// still be starting.
    pub async fn join_token(&self) -> String {
        let request = kohakuriver_api::auth::TokenRequest {
            name: format!("join-{}", self.node),
            role: kohakuriver_api::auth::Role::Join,
            ttl_seconds: None,
            uses: Some(1),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.client.create_token(&request).await {
                Ok(created) => return created.token,
                Err(e) if e.is_connect() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot make a join token: {e}"),
            }
        }
    }

    /// Stops the agent (its containers keep running).
    pub async fn stop_agent(&mut self) {
        self.agent_shutdown.cancel();
        if let Some(agent) = self.agent.take() {
            tokio::time::timeout(Duration::from_secs(15), agent.wait())
                .await
                .expect("agent stops within 15 s");
        }
    }

    /// Stops the server: the agent can no longer reach it (it keeps running).
    pub fn stop_server(&self) {
        self.server_shutdown.cancel();
    }

    /// Creates `task` (image defaulted to the test image) and binds it to this node holding
    /// `allocation`, as the scheduler would. Returns the bound task.
    pub async fn run(&self, mut task: Task, allocation: Allocation) -> Task {
        if task.spec.image.is_none() && task.spec.container.is_none() {
            task.spec.image = Some(IMAGE.to_string());
        }
        let created = self.tasks.create(&task).await.expect("create task");
        self.bind(&created.metadata.name, allocation).await
    }

    /// Binds an existing task to this node.
    pub async fn bind(&self, name: &str, allocation: Allocation) -> Task {
        let node = self.node.clone();
        self.tasks
            .update_status_with(name, |t| {
                t.status.node = Some(node.clone());
                t.status.allocation = Some(allocation.clone());
                t.status.phase = TaskPhase::Assigned;
                true
            })
            .await
            .expect("bind task")
    }

    /// Waits until task `name` satisfies `pred`, failing after `timeout`.
    pub async fn wait_task(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Task) -> bool,
    ) -> Task {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.tasks.get(name).await.expect("get task");
            if pred(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {name} not {what} within {timeout:?}; status: {:#?}",
                    t.status
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for phase `phase`.
    pub async fn wait_phase(&self, name: &str, phase: TaskPhase, timeout: Duration) -> Task {
        self.wait_task(name, timeout, phase.as_str(), |t| t.status.phase == phase)
            .await
    }

    /// The captured log of task `t`, read from the agent's files.
    pub fn log_file(&self, t: &Task, stream: &str) -> PathBuf {
        self.data_dir.path().join("logs").join(format!(
            "{}-{}/{stream}",
            t.metadata.name,
            t.metadata.uid.as_deref().unwrap()
        ))
    }

    /// Reads the agent's endpoint for the task's log, as the server would (with the agent
    /// secret).
    pub async fn endpoint_log(&self, t: &Task, query: &str) -> String {
        let (status, body) = self.endpoint_get(t, query).await;
        assert!(status.is_success(), "{}: {status}: {body}", t.metadata.name);
        body
    }

    /// Reads the agent's endpoint for the task's log: the status and the body.
    pub async fn endpoint_get(&self, t: &Task, query: &str) -> (reqwest::StatusCode, String) {
        let addr = self.agent.as_ref().unwrap().local_addr;
        let url = format!(
            "http://{addr}/v1/tasks/{}/log?uid={}&{query}",
            t.metadata.name,
            t.metadata.uid.as_deref().unwrap()
        );
        // The endpoint is closed by the agent secret, which the server hands out.
        let secret = self
            .client
            .node_credentials(&self.node)
            .await
            .expect("agent secret")
            .agent_secret;
        let resp = kohakuriver_tls::http_client()
            .get(&url)
            .bearer_auth(secret)
            .send()
            .await
            .expect("endpoint reachable");
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

/// The container of task `name`, as `docker inspect` reports it (JSON), if it exists.
pub fn docker_inspect(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker")
        .args(["inspect", &format!("kohakuriver-task-{name}")])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    list.pop()
}

/// Waits until `cond` holds, polling, failing after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("not {what} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agent_shutdown.cancel();
        self.server_shutdown.cancel();
        // Leave no test container behind.
        let label = format!("label=kohakuriver.node={}", self.node);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// An allocation of these cores (and memory limit).
pub fn alloc(cpus: &str, memory: Option<u64>) -> Allocation {
    Allocation {
        cpus: cpus.to_string(),
        numa: None,
        gpus: vec![],
        memory_bytes: memory,
    }
}
