//! A recording, in-memory [`ContainerRuntime`] for tests without Docker.
//!
//! It keeps containers and images in a map, records every call, and lets a test make a
//! container exit (with a code, or OOM-killed) and give it output, make creates fail, and
//! make a pull slow.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::container_config::ContainerSpec;
use crate::runtime::{
    ContainerRuntime, ContainerState, ContainerStatus, ContainerUsage, ImageInfo, LogChunk,
    LogStream, RuntimeError,
};

/// One call made to the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `pull(image)`.
    Pull(String),
    /// `load(tarball)`.
    Load(PathBuf),
    /// `create(spec)`, by container name.
    Create(String),
    /// `start(id)`.
    Start(String),
    /// `pause(id)`.
    Pause(String),
    /// `unpause(id)`.
    Unpause(String),
    /// `stop(id)`.
    Stop(String),
    /// `remove(id)`.
    Remove(String),
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    images: HashSet<String>,
    loads: HashMap<PathBuf, String>,
    containers: BTreeMap<String, (ContainerState, ContainerSpec)>,
    output: HashMap<String, Vec<LogChunk>>,
    create_failures: VecDeque<RuntimeError>,
    pulls: HashMap<String, Duration>,
    start_delay: Option<Duration>,
    usage: HashMap<String, ContainerUsage>,
    next_id: u64,
}

/// The fake; a cheap `Clone` handle.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    // A std Mutex: every method holds it for a few map operations, never across an await.
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    /// An engine with no images and no containers.
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `image` present.
    pub fn add_image(&self, image: &str) {
        self.state().images.insert(image.to_string());
    }

    /// Loading `tarball` makes `image` present.
    pub fn on_load(&self, tarball: &Path, image: &str) {
        self.state()
            .loads
            .insert(tarball.to_path_buf(), image.to_string());
    }

    /// The next creates fail with these errors, one each, in order (each is recorded).
    pub fn fail_creates(&self, failures: Vec<RuntimeError>) {
        self.state().create_failures.extend(failures);
    }

    /// Pulling `image` succeeds after `delay` (instead of failing as not found).
    pub fn on_pull(&self, image: &str, delay: Duration) {
        self.state().pulls.insert(image.to_string(), delay);
    }

    /// Every start takes `delay` after it is recorded, before the container runs.
    pub fn slow_starts(&self, delay: Duration) {
        self.state().start_delay = Some(delay);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The spec container `name` was created with.
    pub fn spec(&self, name: &str) -> Option<ContainerSpec> {
        self.state().containers.get(name).map(|(_, s)| s.clone())
    }

    /// The state of container `name`.
    pub fn container(&self, name: &str) -> Option<ContainerState> {
        self.state().containers.get(name).map(|(c, _)| c.clone())
    }

    /// Makes container `name` exit with `code` (OOM-killed when `oom`).
    pub fn exit(&self, name: &str, code: i64, oom: bool) {
        if let Some((c, _)) = self.state().containers.get_mut(name) {
            c.status = ContainerStatus::Exited;
            c.exit_code = Some(code);
            c.oom_killed = oom;
            c.finished_at = Some(chrono::Utc::now());
        }
    }

    /// What `usage` answers for container `name` from now on (a container never given one
    /// reads as zero).
    pub fn set_usage(&self, name: &str, usage: ContainerUsage) {
        self.state().usage.insert(name.to_string(), usage);
    }

    /// Gives container `name` this output.
    pub fn set_output(&self, name: &str, chunks: &[(LogStream, &str)]) {
        let chunks = chunks
            .iter()
            .map(|(stream, text)| LogChunk {
                stream: *stream,
                bytes: Bytes::from(text.to_string()),
            })
            .collect();
        self.state().output.insert(name.to_string(), chunks);
    }

    fn with<T>(
        &self,
        id: &str,
        call: Call,
        f: impl FnOnce(&mut ContainerState) -> T,
    ) -> Result<T, RuntimeError> {
        self.state().calls.push(call);
        self.apply(id, f)
    }

    fn apply<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerState) -> T,
    ) -> Result<T, RuntimeError> {
        let mut state = self.state();
        let entry = state
            .containers
            .values_mut()
            .find(|(c, _)| c.id == id || c.name == id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(f(&mut entry.0))
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".to_string())
    }

    async fn image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Ok(self
            .state()
            .images
            .contains(image)
            .then_some(ImageInfo { created: None }))
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let delay = {
            let mut state = self.state();
            state.calls.push(Call::Pull(image.to_string()));
            state.pulls.get(image).copied()
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
            self.state().images.insert(image.to_string());
            return Ok(());
        }
        Err(RuntimeError::ImageNotFound {
            image: image.to_string(),
            message: "pull access denied, repository does not exist".to_string(),
        })
    }

    async fn load(&self, tarball: &Path) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.calls.push(Call::Load(tarball.to_path_buf()));
        if let Some(image) = state.loads.get(tarball).cloned() {
            state.images.insert(image);
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut state = self.state();
        state.calls.push(Call::Create(spec.name.clone()));
        if let Some(failure) = state.create_failures.pop_front() {
            return Err(failure);
        }
        if state.containers.contains_key(&spec.name) {
            return Err(RuntimeError::AlreadyExists(spec.name.clone()));
        }
        if !state.images.contains(&spec.image.image()) {
            return Err(RuntimeError::ImageNotFound {
                image: spec.image.image(),
                message: "no such image".to_string(),
            });
        }
        state.next_id += 1;
        let id = format!("fake{:04}", state.next_id);
        let container = ContainerState {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            status: ContainerStatus::Created,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
        };
        state
            .containers
            .insert(spec.name.clone(), (container, spec.clone()));
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let delay = {
            let mut state = self.state();
            state.calls.push(Call::Start(id.into()));
            state.start_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.apply(id, |c| {
            if c.status == ContainerStatus::Created {
                c.status = ContainerStatus::Running;
                c.started_at = Some(chrono::Utc::now());
            }
        })
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.with(id, Call::Pause(id.into()), |c| {
            c.status = ContainerStatus::Paused
        })
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.with(id, Call::Unpause(id.into()), |c| {
            c.status = ContainerStatus::Running
        })
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.with(id, Call::Stop(id.into()), |c| {
            if c.status.is_alive() {
                c.status = ContainerStatus::Exited;
                c.exit_code = Some(143);
                c.finished_at = Some(chrono::Utc::now());
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.calls.push(Call::Remove(id.to_string()));
        state
            .containers
            .retain(|_, (c, _)| c.id != id && c.name != id);
        Ok(())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(self
            .state()
            .containers
            .values()
            .find(|(c, _)| c.id == id_or_name || c.name == id_or_name)
            .map(|(c, _)| c.clone()))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError> {
        Ok(self
            .state()
            .containers
            .values()
            .filter(|(c, _)| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(c, _)| c.clone())
            .collect())
    }

    async fn usage(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        let state = self.state();
        let (container, _) = state
            .containers
            .values()
            .find(|(c, _)| c.id == id || c.name == id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(state
            .usage
            .get(&container.name)
            .copied()
            .unwrap_or_default())
    }

    fn logs(&self, id: &str, _follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let state = self.state();
        let name = state
            .containers
            .values()
            .find(|(c, _)| c.id == id || c.name == id)
            .map(|(c, _)| c.name.clone())
            .unwrap_or_default();
        let chunks = state.output.get(&name).cloned().unwrap_or_default();
        futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
    }

    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
        let name = {
            let state = self.state();
            state
                .containers
                .values()
                .find(|(c, _)| c.id == id || c.name == id)
                .map(|(c, _)| c.name.clone())
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?
        };
        let this = self.clone();
        // The output arrives once the container has exited (or is gone), as a real attach
        // ends when the container's output closes.
        Ok(futures::stream::once(async move {
            loop {
                let ended = this
                    .state()
                    .containers
                    .get(&name)
                    .is_none_or(|(c, _)| c.status == ContainerStatus::Exited);
                if ended {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let chunks = this.state().output.get(&name).cloned().unwrap_or_default();
            futures::stream::iter(chunks.into_iter().map(Ok))
        })
        .flatten()
        .boxed())
    }
}
