//! The KohakuRiver node agent: one per machine.
//!
//! It discovers the machine (cores, NUMA topology, memory, GPUs), registers its `Node` and
//! heartbeats, watches the tasks bound to it and turns each into one pinned Docker container,
//! captures their output to files and serves them over HTTP. The whole public surface for
//! daemons is [`AgentConfig`] and [`run`] (or [`start`], which also tells where the endpoint
//! listens); the modules are public so tests and tools can use the pure parts.
//!
//! Module map: `discovery` (sysfs/procfs), `gpu` (NVML or static list), `container_config`
//! (pure task → container translation), `runtime` (the engine trait), `docker` (bollard),
//! `fake_runtime` (recording fake), `image` (present/pull/load), `tarball_tags` (what an
//! environment tarball would tag), `plan` (pure reconcile decision), `mount_policy` (host
//! mounts checked on the node), `reconciler` (watch, workers, steps, status reports),
//! `log_capture` (byte-exact capture, capped per task), `log_retention` (which capture
//! directories go, and when), `endpoint` (HTTP, closed by the agent secret),
//! `credential` (the node credential and the agent secret), `address` (where to listen),
//! `heartbeat` (Node registration and usage), `fence` (stopping re-queueable tasks when
//! cut off from the server), `usage` (live GPU and container usage, the idle-GPU flag),
//! `metrics` (the Prometheus registry behind `/metrics`), `metered_runtime` (Docker calls
//! timed and counted).
//!
//! Architecture Invariant: the agent talks to the server only through `kohakuriver-client`.
//! Architecture Invariant: on shutdown the agent stops its loops, waits (at most
//! `shutdown_timeout`) for the steps under way, and leaves containers running; the next
//! start adopts them.

pub mod address;
pub mod container_config;
pub mod credential;
pub mod discovery;
pub mod docker;
pub mod endpoint;
pub mod engine_fault;
#[cfg(any(test, feature = "testing"))]
pub mod fake_runtime;
pub mod fence;
pub mod gpu;
mod heartbeat;
pub mod image;
pub mod log_capture;
pub mod log_retention;
pub mod metered_runtime;
pub mod metrics;
pub mod mount_policy;
pub mod plan;
mod reconciler;
pub mod runtime;
pub mod tarball_tags;
mod task_events;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::{CpuSet, Node, NodeUsage, Task};
use kohakuriver_client::{Client, ClientOptions};
use tokio_util::sync::CancellationToken;

use crate::container_config::AgentSettings;
use crate::credential::{Credential, CredentialError};
use crate::endpoint::AgentSecret;
use crate::gpu::{GpuInventory, NvmlInventory, StaticGpuSource, StaticGpus};
use crate::mount_policy::MountPolicy;
use crate::runtime::ContainerRuntime;

pub use heartbeat::parse_proc_stat;
pub use reconciler::ReconcileError;

/// How the agent reaches its container engine.
#[derive(Clone, Default)]
pub enum DockerConnection {
    /// `DOCKER_HOST` or the local socket, with API version negotiation.
    #[default]
    LocalDefaults,
    /// This runtime (a fake in tests, or a preconfigured client).
    Runtime(Arc<dyn ContainerRuntime>),
}

impl std::fmt::Debug for DockerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerConnection::LocalDefaults => f.write_str("LocalDefaults"),
            DockerConnection::Runtime(_) => f.write_str("Runtime(..)"),
        }
    }
}

/// Everything the agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    /// The node's name (usually the host name).
    pub name: String,
    /// The API server, e.g. `http://127.0.0.1:8000`.
    pub server_url: String,
    /// Where logs and small state live (`<data_dir>/logs`, `<data_dir>/images`).
    pub data_dir: PathBuf,
    /// Shared storage mounted at `/shared` in every task container; environment tarballs
    /// are read from `<shared_dir>/kohakuriver-containers/NAME.tar`.
    pub shared_dir: Option<PathBuf>,
    /// Where the agent's HTTP endpoint listens (port 0 picks one). The default is where the
    /// server can reach it: 127.0.0.1:8001 for a server on loopback, else port 8001 on the
    /// address this machine uses to reach the server (see [`address::default_listen`]).
    pub listen: SocketAddr,
    /// The endpoint's URL as the server should reach it; default `http://<listen>`, with an
    /// unspecified IP replaced by the address this machine uses to reach the server.
    pub advertise_url: Option<String>,
    /// Root of sysfs (`/sys`); tests point it at a fake tree.
    pub sysfs_root: PathBuf,
    /// Root of procfs (`/proc`).
    pub procfs_root: PathBuf,
    /// Use this GPU list instead of NVML.
    pub static_gpus: Option<StaticGpuSource>,
    /// Use this inventory instead of NVML or `static_gpus` (a [`gpu::FakeGpus`] in tests,
    /// whose readings the test sets).
    pub gpu_inventory: Option<Arc<dyn GpuInventory>>,
    /// How often to heartbeat (default 5 s).
    pub heartbeat_interval: Duration,
    /// How often every task is reconciled even without events (default 10 s).
    pub resync_interval: Duration,
    /// How often GPUs and task containers are measured (`--usage-interval`, default
    /// [`usage::DEFAULT_USAGE_INTERVAL`], 10 s); the heartbeat carries the last sample.
    pub usage_interval: Duration,
    /// How long a task's GPUs must stay under 5 % before it is flagged `GPUIdle`
    /// ([`kohakuriver_api::usage::IDLE_GPU_WINDOW_SECONDS`], 10 min; shorter in tests).
    pub idle_gpu_window: Duration,
    /// How long a killed task has between SIGTERM and SIGKILL (default 10 s).
    pub kill_grace: Duration,
    /// How long without reaching the server before the containers of tasks with a retry
    /// left are stopped (default [`DEFAULT_FENCE_AFTER`], 15 s; see [`fence`]).
    pub fence_after: Duration,
    /// Image for tasks naming neither image nor container when the server names none.
    pub default_image: Option<String>,
    /// How long an image pull may take before the task fails with `ImagePullFailed`
    /// (default [`image::DEFAULT_PULL_TIMEOUT`], 10 min).
    pub pull_timeout: Duration,
    /// How long a task not yet started waits for an engine that keeps failing (unreachable,
    /// timing out) before it fails with `EngineUnavailable` (default
    /// [`ENGINE_UNAVAILABLE_AFTER`], 5 min).
    pub engine_patience: Duration,
    /// The container engine.
    pub docker: DockerConnection,
    /// The credential shown to the server (`--token`): a node credential for this node, or
    /// a join credential exchanged at start for one saved in `<data_dir>/node.token`. None:
    /// the saved one if any, else none (a server under `--insecure-no-auth`). A trailing
    /// `@sha256:HEX` is split off into `ca_fingerprint`.
    pub token: Option<String>,
    /// SHA-256 (lowercase hex) of the cluster CA a `TOKEN@sha256:HEX` credential carries.
    /// The agent only carries it: verifying the server's CA against it is the TLS layer's
    /// job, on its first contact with an `https://` server.
    pub ca_fingerprint: Option<String>,
    /// `--allow-mounts`: when set, every host mount's real path must be under one of these.
    pub allow_mounts: Option<Vec<PathBuf>>,
    /// Serve the endpoint over HTTPS with this certificate (`--tls-cert`/`--tls-key`); the
    /// advertised URL is then `https://`. The server's log proxy trusts the cluster CA, so
    /// the certificate should be signed by it.
    pub tls: Option<kohakuriver_tls::ServerTls>,
    /// The cluster CA (PEM) the agent verifies an `https://` server with (`--ca`). Without
    /// it, a credential's CA fingerprint (`ca_fingerprint`, or `@sha256:HEX` on the token or
    /// on the saved node credential) makes the agent fetch the server's `/cacerts` once,
    /// keep it only if it has that fingerprint, save it as `<data_dir>/ca.pem`, and verify
    /// the server with it from then on.
    pub ca_pem: Option<Vec<u8>>,
    /// The engine log retention set on every task container (`--log-max-size`,
    /// `--log-max-file`), whatever the daemon's `log-opts` say.
    pub log_limits: container_config::LogLimits,
    /// How long the captured output of a finished task is kept while the task object is
    /// (`--log-retention`); None keeps it until the task is deleted (see [`log_retention`]).
    pub log_retention: Option<Duration>,
    /// The most bytes of stdout+stderr captured per task before the capture is cut with a
    /// marker (`--max-log-bytes-per-task`, default [`DEFAULT_MAX_LOG_BYTES_PER_TASK`]; 0: no
    /// limit).
    pub max_log_bytes_per_task: u64,
    /// How long shutdown waits for in-flight steps (a container being created, a status
    /// being written) before the agent stops anyway (`--shutdown-timeout`, default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub shutdown_timeout: Duration,
    /// Header and body timeouts and the connection cap of the endpoint
    /// (`--agent-max-connections`; default `HttpLimits::agent()`).
    pub http_limits: kohakuriver_tls::HttpLimits,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("name", &self.name)
            .field("server_url", &self.server_url)
            .field("data_dir", &self.data_dir)
            .field("shared_dir", &self.shared_dir)
            .field("listen", &self.listen)
            .field("advertise_url", &self.advertise_url)
            .field("sysfs_root", &self.sysfs_root)
            .field("procfs_root", &self.procfs_root)
            .field("static_gpus", &self.static_gpus)
            .field("gpu_inventory", &self.gpu_inventory.is_some())
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("resync_interval", &self.resync_interval)
            .field("usage_interval", &self.usage_interval)
            .field("idle_gpu_window", &self.idle_gpu_window)
            .field("kill_grace", &self.kill_grace)
            .field("fence_after", &self.fence_after)
            .field("default_image", &self.default_image)
            .field("pull_timeout", &self.pull_timeout)
            .field("engine_patience", &self.engine_patience)
            .field("docker", &self.docker)
            // Never the token itself.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("allow_mounts", &self.allow_mounts)
            .field("tls", &self.tls.is_some())
            .field("ca_pem", &self.ca_pem.is_some())
            .field("log_limits", &self.log_limits)
            .field("log_retention", &self.log_retention)
            .field("max_log_bytes_per_task", &self.max_log_bytes_per_task)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("http_limits", &self.http_limits)
            .finish()
    }
}

impl AgentConfig {
    /// A config with defaults for everything but the name, server and data dir.
    pub fn new(
        name: impl Into<String>,
        server_url: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> AgentConfig {
        let server_url = server_url.into();
        AgentConfig {
            name: name.into(),
            listen: address::default_listen(&server_url),
            server_url,
            data_dir: data_dir.into(),
            shared_dir: None,
            advertise_url: None,
            sysfs_root: PathBuf::from("/sys"),
            procfs_root: PathBuf::from("/proc"),
            static_gpus: None,
            gpu_inventory: None,
            heartbeat_interval: Duration::from_secs(5),
            resync_interval: Duration::from_secs(10),
            usage_interval: usage::DEFAULT_USAGE_INTERVAL,
            idle_gpu_window: Duration::from_secs(kohakuriver_api::usage::IDLE_GPU_WINDOW_SECONDS),
            kill_grace: Duration::from_secs(10),
            fence_after: DEFAULT_FENCE_AFTER,
            default_image: None,
            pull_timeout: image::DEFAULT_PULL_TIMEOUT,
            engine_patience: ENGINE_UNAVAILABLE_AFTER,
            docker: DockerConnection::LocalDefaults,
            token: None,
            ca_fingerprint: None,
            allow_mounts: None,
            tls: None,
            ca_pem: None,
            log_limits: container_config::LogLimits::default(),
            log_retention: None,
            max_log_bytes_per_task: DEFAULT_MAX_LOG_BYTES_PER_TASK,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            http_limits: kohakuriver_tls::HttpLimits::agent(),
        }
    }
}

/// The default cap on one task's captured stdout+stderr: far above what anyone reads
/// through `task logs`, low enough that one runaway task cannot fill a node's disk.
pub const DEFAULT_MAX_LOG_BYTES_PER_TASK: u64 = 10 << 30;

/// How long the daemons wait at shutdown for in-flight steps before exiting anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an agent cut off from the server waits before it stops the containers of tasks
/// the server would re-queue (see [`fence`]).
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_secs(15);

/// How long a task not yet started waits for an engine that keeps failing transiently
/// (unreachable, timing out) before it fails with reason `EngineUnavailable`: nothing waits
/// forever, and a short engine restart is ridden out.
pub const ENGINE_UNAVAILABLE_AFTER: Duration = Duration::from_secs(5 * 60);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine could not be read.
    #[error("cannot discover this machine: {0}")]
    Discovery(#[from] discovery::DiscoveryError),
    /// The static GPU list could not be read.
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    /// Docker is not reachable.
    #[error("cannot use the docker engine ({0}); is docker running and is its socket readable?")]
    Docker(#[source] runtime::RuntimeError),
    /// The server's CA could not be fetched, or is not the one the credential pins.
    #[error("cannot verify the server at {url} on first contact: {source}")]
    FirstContact {
        /// The server's URL.
        url: String,
        /// Why.
        #[source]
        source: kohakuriver_client::Error,
    },
    /// No usable credential.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The API server rejected or could not be reached for registration.
    #[error("cannot register node with the server: {0}")]
    Server(#[from] kohakuriver_client::Error),
    /// The agent's fencing timing does not fit the server's node grace.
    #[error(transparent)]
    Timing(#[from] fence::TimingError),
    /// A flag names something unusable; the message names the flag and the fix.
    #[error("{0}")]
    Config(String),
    /// The endpoint could not listen, or the data dir is unusable.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// The shared dir must be a directory that exists: every task container mounts it, and a
/// missing one would make every task on this node fail to start.
fn check_shared_dir(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Config(format!(
            "--shared-dir {} is not a directory; give the directory where the cluster share is mounted",
            dir.display()
        ))),
        Err(e) => Err(Error::Config(format!(
            "--shared-dir {} cannot be used ({e}); create it or mount the cluster share there (mkdir -p {}), or leave --shared-dir out",
            dir.display(),
            dir.display()
        ))),
    }
}

/// The data dir must be writable: task output is captured under `<data-dir>/logs`, and a
/// read-only or missing one would fail every task at its first byte. Checked by making the
/// logs dir and writing a probe file in it.
fn check_data_dir(data_dir: &std::path::Path, logs_dir: &std::path::Path) -> Result<(), Error> {
    let probe = logs_dir.join(".kohakuriver-write-probe");
    let result = std::fs::create_dir_all(logs_dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    result.map_err(|e| {
        Error::Config(format!(
            "cannot write task output under {} ({e}): the data dir {} must be writable; give one with --data-dir DIR",
            logs_dir.display(),
            data_dir.display()
        ))
    })
}

/// A started agent.
pub struct RunningAgent {
    /// Where the HTTP endpoint listens.
    pub local_addr: SocketAddr,
    /// The URL advertised in the Node's status.
    pub advertise_url: String,
    /// The CA fingerprint of the credential in use (given, or saved by a join), for the
    /// TLS layer to verify the server against.
    pub ca_fingerprint: Option<String>,
    join: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Waits until the agent has stopped (after shutdown was cancelled).
    pub async fn wait(self) {
        let _ = self.join.await;
    }
}

/// Runs the agent until `shutdown` is cancelled. Containers keep running after it returns.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts the agent: discovers, connects, registers its Node (failing fast when anything is
/// wrong), then runs the reconciler, heartbeat and endpoint in the background until
/// `shutdown` is cancelled.
pub async fn start(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<RunningAgent, Error> {
    if let Some(dir) = &config.shared_dir {
        check_shared_dir(dir)?;
    }
    let topology = discovery::discover(&config.sysfs_root, &config.procfs_root)?;
    let gpus: Arc<dyn GpuInventory> = match (&config.gpu_inventory, &config.static_gpus) {
        (Some(inventory), _) => inventory.clone(),
        (None, Some(source)) => Arc::new(StaticGpus::from_source(source)?),
        (None, None) => Arc::new(NvmlInventory::open(&config.sysfs_root)),
    };
    let runtime: Arc<dyn ContainerRuntime> = match &config.docker {
        DockerConnection::LocalDefaults => Arc::new(
            docker::DockerRuntime::connect()
                .await
                .map_err(Error::Docker)?,
        ),
        DockerConnection::Runtime(r) => r.clone(),
    };
    // Every engine call is timed and its failures counted for `/metrics`.
    let docker_metrics = metrics::DockerMetrics::default();
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(metered_runtime::MeteredRuntime::new(
        runtime,
        docker_metrics.clone(),
    ));
    let docker_version = runtime.version().await.map_err(Error::Docker)?;

    let logs_dir = config.data_dir.join("logs");
    check_data_dir(&config.data_dir, &logs_dir)?;

    let given = config.token.as_deref().map(|raw| {
        let mut credential = credential::split_credential(raw);
        credential.ca_fingerprint = credential
            .ca_fingerprint
            .or_else(|| config.ca_fingerprint.clone());
        credential
    });
    // The CA, before any other contact with the server, so every request is verified: a
    // pin comes with the credential given, else with the one saved by an earlier join.
    let pin = match &given {
        Some(c) => c.ca_fingerprint.clone(),
        None => config.ca_fingerprint.clone().or_else(|| {
            credential::read_saved(&config.data_dir.join(credential::NODE_TOKEN_FILE))
                .ok()
                .flatten()
                .and_then(|c| c.ca_fingerprint)
        }),
    };
    let ca_pem = server_ca(&config, pin.as_deref()).await?;
    let credential: Option<Credential> = credential::resolve(
        &config.server_url,
        ca_pem.as_deref(),
        &config.name,
        &config.data_dir,
        given.as_ref(),
    )
    .await?;
    let ca_fingerprint = credential
        .as_ref()
        .and_then(|c| c.ca_fingerprint.clone())
        .or_else(|| config.ca_fingerprint.clone());
    let client = Client::with_options(
        &config.server_url,
        ClientOptions {
            token: credential.map(|c| c.token),
            ca_pem,
            ..Default::default()
        },
    )?;
    if client.plaintext_token_risk() {
        tracing::warn!(
            server = %config.server_url,
            "the agent's credential goes to the server over plain http; anyone on the network can read it: serve the API over https (server --tls-self-signed or --tls-cert)"
        );
    }
    let info = client.info().await?;
    fence::check_timing(
        config.heartbeat_interval,
        config.fence_after,
        config.kill_grace,
        info.node_grace(),
    )?;
    let secret =
        AgentSecret::new(credential::fetch_secret(&client, &config.name, info.auth).await?);
    let mounts = {
        let prefixes = info.user_mount_prefixes.clone();
        let allow = config.allow_mounts.clone();
        tokio::task::spawn_blocking(move || MountPolicy::resolve(&prefixes, allow.as_deref()))
            .await
            .unwrap_or_default()
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Io {
            what: format!(
                "cannot listen on {} for the agent's endpoint (is another agent running? choose another with --agent-listen ADDR:PORT)",
                config.listen
            ),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Io {
        what: "cannot read the endpoint's address".into(),
        source,
    })?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise_url = match &config.advertise_url {
        Some(url) => url.clone(),
        None => address::advertised(scheme, local_addr, &config.server_url),
    };

    // The real kernel's memory nodes, whatever sysfs root discovery used: a faked NUMA
    // topology must not put a nonexistent memory node into cpuset-mems.
    let memory_nodes = std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|t| CpuSet::parse(&t).ok())
        .unwrap_or_else(|| std::iter::once(0).collect());
    let settings = AgentSettings {
        node_name: config.name.clone(),
        shared_dir: config.shared_dir.clone(),
        default_image: info.default_image.clone().or(config.default_image.clone()),
        memory_nodes,
        // Looked at again before every container is made (see the reconciler).
        protect_environments: false,
        log_limits: config.log_limits,
    };

    let board = usage::UsageBoard::default();
    let sampler = usage::UsageSampler::new(
        runtime.clone(),
        gpus.clone(),
        board.clone(),
        usage::IdlePolicy {
            window: config.idle_gpu_window,
            ..usage::IdlePolicy::standard(config.usage_interval)
        },
    );
    let facts = heartbeat::NodeFacts {
        name: config.name.clone(),
        topology,
        gpus,
        address: advertise_url.clone(),
        docker_version,
        shared_storage: config.shared_dir.is_some(),
        default_image: settings.default_image.clone(),
        procfs_root: config.procfs_root.clone(),
        board: board.clone(),
    };
    let nodes = client.api::<Node>();
    heartbeat::beat(&nodes, &facts, NodeUsage::default()).await?;
    let contact = Arc::new(fence::Contact::now());

    let capture_store = log_capture::LogStore::new(&logs_dir);
    let reconciler = reconciler::Reconciler::new(
        client.api::<Task>(),
        runtime.clone(),
        image::ImageEnsurer::new(runtime.clone(), config.data_dir.join("images"))
            .pull_timeout(config.pull_timeout),
        capture_store.clone(),
        settings,
        mounts,
        config.kill_grace,
        config.engine_patience,
        config.resync_interval,
        config.max_log_bytes_per_task,
        shutdown.clone(),
    )
    .with_events(kohakuriver_client::Recorder::new(
        client.api::<kohakuriver_api::Event>(),
        "agent",
        Some(&config.name),
    ));
    let router = endpoint::router(endpoint::EndpointState {
        logs: log_capture::LogStore::new(&logs_dir),
        shutdown: shutdown.clone(),
        secret: secret.clone(),
        metrics: metrics::AgentMetrics::new(
            &docker_metrics,
            capture_store.captured_bytes(),
            board.clone(),
        ),
    });
    let refresher = credential::SecretRefresher {
        client: client.clone(),
        node: config.name.clone(),
        secret,
    };

    let tasks_api = client.api::<Task>();
    tracing::info!(node = %config.name, endpoint = %advertise_url, "agent started");
    let join = tokio::spawn({
        let shutdown = shutdown.clone();
        let interval = config.heartbeat_interval;
        async move {
            let counter = reconciler.clone();
            let tracker = reconciler.tracker();
            let events = reconciler.events.clone();
            let sweeping = log_retention::run(
                log_capture::LogStore::new(&logs_dir),
                {
                    let reconciler = reconciler.clone();
                    move || reconciler.synced().then(|| reconciler.cached_tasks())
                },
                config.log_retention,
                shutdown.clone(),
            );
            let fencing = fence::run(
                reconciler.clone(),
                contact.clone(),
                config.fence_after,
                shutdown.clone(),
            );
            // Requests carry the peer's `ConnectInfo<SocketAddr>`, with TLS or without.
            let serve = kohakuriver_tls::serve(
                listener,
                router,
                config.tls,
                config.http_limits,
                shutdown.clone(),
            );
            let beats = heartbeat::run(
                nodes,
                facts,
                interval,
                move || counter.active_tasks(),
                refresher,
                contact,
                shutdown.clone(),
            );
            let measuring = usage::run(
                sampler,
                {
                    let reconciler = reconciler.clone();
                    move || reconciler.cached_tasks()
                },
                tasks_api,
                config.name.clone(),
                config.usage_interval,
                shutdown.clone(),
            );
            let (served, _, _, _, _, _) =
                tokio::join!(serve, beats, reconciler.run(), fencing, sweeping, measuring);
            if let Err(err) = served {
                tracing::warn!(error = %err, "agent endpoint failed");
            }
            // Steps under way (a container being created, a status being written) finish;
            // workers take no new step once shutdown is cancelled.
            tracker.close();
            if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = tracker.len(),
                    timeout = ?config.shutdown_timeout,
                    "steps still under way after --shutdown-timeout; stopping anyway (the next start adopts their containers)"
                );
            }
            // Repeats held back by the events' write budgets are counted in before exiting.
            events.flush(config.shutdown_timeout).await;
            tracing::info!("agent stopped; containers keep running");
        }
    });
    Ok(RunningAgent {
        local_addr,
        advertise_url,
        ca_fingerprint,
        join,
    })
}

/// The CA the agent verifies the server with: `--ca` when given; else, for a credential
/// that pins `fingerprint`, the CA fetched from `/cacerts` once on first contact, checked
/// against the fingerprint and saved as `<data_dir>/ca.pem`; else
/// none (the system's roots for `https://`).
pub async fn server_ca(
    config: &AgentConfig,
    fingerprint: Option<&str>,
) -> Result<Option<Vec<u8>>, Error> {
    match (&config.ca_pem, fingerprint) {
        (Some(pem), _) => Ok(Some(pem.clone())),
        (None, Some(fingerprint)) => Ok(Some(pinned_ca(config, fingerprint).await?)),
        (None, None) => Ok(None),
    }
}

/// The cluster CA for a credential that pins `fingerprint`: `<data_dir>/ca.pem` when it
/// has that fingerprint (saved by an earlier first contact), else fetched from the server's
/// `/cacerts`, checked, and saved.
async fn pinned_ca(config: &AgentConfig, fingerprint: &str) -> Result<Vec<u8>, Error> {
    let path = config.data_dir.join("ca.pem");
    if let Ok(saved) = std::fs::read(&path) {
        if kohakuriver_tls::check_pinned(&saved, fingerprint).is_ok() {
            return Ok(saved);
        }
        tracing::warn!(path = %path.display(), "the saved CA is not the one the credential pins; fetching the server's again");
    }
    let pem = kohakuriver_client::fetch_pinned_ca(&config.server_url, fingerprint)
        .await
        .map_err(|source| Error::FirstContact {
            url: config.server_url.clone(),
            source,
        })?;
    std::fs::create_dir_all(&config.data_dir)
        .and_then(|()| std::fs::write(&path, &pem))
        .map_err(|source| Error::Io {
            what: format!("cannot save the server's CA as {}", path.display()),
            source,
        })?;
    tracing::info!(path = %path.display(), "verified the server's CA against the credential's fingerprint and saved it");
    Ok(pem)
}
