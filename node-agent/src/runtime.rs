//! The container runtime seen through a small trait that speaks our types.
//!
//! [`ContainerRuntime`] has the Docker implementation in [`crate::docker`] and a recording
//! fake in `fake_runtime` (behind the `testing` feature). Everything the reconciler learns about a container comes
//! through [`ContainerState`], so the reconcile plan never sees a bollard type.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use kohakuriver_api::Timestamp;

use crate::container_config::{ATTEMPT_LABEL, BINDING_LABEL, ContainerSpec};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached at all.
    #[error("docker engine unreachable: {0}")]
    Unreachable(String),
    /// The image is not present and the registry does not have it.
    #[error("image {image} not found: {message}")]
    ImageNotFound {
        /// The image reference.
        image: String,
        /// The engine's words.
        message: String,
    },
    /// The image could not be pulled or loaded for another reason (network, auth, disk).
    #[error("image {image} could not be pulled: {message}")]
    ImagePullFailed {
        /// The image reference.
        image: String,
        /// The engine's words.
        message: String,
    },
    /// An environment tarball would tag images other than its own; it is not loaded.
    #[error("image {image} refused: {message}")]
    ImageRejected {
        /// The environment's image reference.
        image: String,
        /// Which tarball, and what it tags.
        message: String,
    },
    /// A container with this name exists already.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// No such container.
    #[error("container {0} not found")]
    NotFound(String),
    /// The engine refused the container's configuration (create or start), in a way
    /// retrying cannot fix (see [`crate::engine_fault::classify`]); the engine's words.
    #[error("{0}")]
    Refused(String),
    /// Any other engine answer.
    #[error("docker: {0}")]
    Engine(String),
}

/// What a container is doing, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Frozen by `docker pause`.
    Paused,
    /// Exited (or dead).
    Exited,
    /// Restarting or being removed: wait and look again.
    Transitioning,
}

impl ContainerStatus {
    /// True while the container's process is alive (running or frozen).
    pub fn is_alive(self) -> bool {
        matches!(self, ContainerStatus::Running | ContainerStatus::Paused)
    }
}

/// One container, as inspected.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerState {
    /// The engine's container id.
    pub id: String,
    /// The container's name, without the leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it is doing.
    pub status: ContainerStatus,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// True when the kernel's OOM killer ended it (`State.OOMKilled`).
    pub oom_killed: bool,
    /// The engine's error for a container that could not start, if any.
    pub error: Option<String>,
    /// When it started (None before the first start).
    pub started_at: Option<Timestamp>,
    /// When it exited.
    pub finished_at: Option<Timestamp>,
}

impl ContainerState {
    /// The task uid the container was created for.
    pub fn uid(&self) -> Option<&str> {
        self.labels
            .get(kohakuriver_api::labels::UID)
            .map(String::as_str)
    }

    /// The task binding (`status.binding`) the container was created for, if labelled.
    pub fn binding(&self) -> Option<u32> {
        self.labels.get(BINDING_LABEL).and_then(|b| b.parse().ok())
    }

    /// True when the container was made for this very attempt of task `uid`: its uid label
    /// is `uid` and its binding label is `binding`. Only such a container is stopped or
    /// removed on that attempt's behalf.
    pub fn is_attempt(&self, uid: &str, binding: u32) -> bool {
        self.uid() == Some(uid) && self.binding().is_none_or(|b| b == binding)
    }

    /// The attempt number the container was created for (1 for the first run).
    pub fn attempt(&self) -> Option<u32> {
        self.labels.get(ATTEMPT_LABEL).and_then(|a| a.parse().ok())
    }
}

pub use kohakuriver_api::LogStream;

/// A piece of a container's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// The stream it belongs to.
    pub stream: LogStream,
    /// The raw bytes.
    pub bytes: Bytes,
}

/// A container's resource use as the engine counts it, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ContainerUsage {
    /// CPU time used since the container started, in nanoseconds (a counter: the rate is
    /// the difference between two samples over the time between them).
    pub cpu_nanoseconds: u64,
    /// Memory in use now, without the page cache the kernel may drop, in bytes.
    pub memory_bytes: u64,
}

/// Local facts about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// When the image was built (committed), if the engine says.
    pub created: Option<Timestamp>,
}

/// The container engine, as the agent uses it.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine's version string.
    async fn version(&self) -> Result<String, RuntimeError>;
    /// The local image `image`, or None when it is not present.
    async fn image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError>;
    /// Pulls `image` from its registry; the error is ImageNotFound or ImagePullFailed with
    /// the engine's message.
    async fn pull(&self, image: &str) -> Result<(), RuntimeError>;
    /// Loads a `docker save` tarball.
    async fn load(&self, tarball: &Path) -> Result<(), RuntimeError>;
    /// Creates the container; returns its id. AlreadyExists when the name is taken.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Starts a created container.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Freezes a running container.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Thaws a paused container.
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Sends SIGTERM, then SIGKILL once `grace` has passed; returns when it has exited.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes the container (forcefully, with its anonymous volumes).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Inspects a container by id or name; None when it does not exist.
    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerState>, RuntimeError>;
    /// Every container (running or not) carrying all these labels.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError>;
    /// The container's CPU time and memory now (one sample, not a stream); NotFound when it
    /// does not exist.
    async fn usage(&self, id: &str) -> Result<ContainerUsage, RuntimeError>;
    /// The container's whole output from its start, stdout and stderr interleaved as
    /// written; with `follow` the stream ends when the container exits.
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>>;
    /// Attaches to the container's stdout and stderr from now on (nothing is replayed);
    /// returns once attached, so attaching before `start` sees every byte. The stream
    /// ends cleanly when the container's output is closed, with nothing left unsent, and
    /// the container cannot write faster than it is read: the engine's log rotation plays
    /// no part.
    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError>;
}
