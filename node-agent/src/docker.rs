//! The Docker implementation of [`ContainerRuntime`], through bollard.
//!
//! A thin adapter: each method is one or two engine calls plus the translation of bollard's
//! types and errors into ours. It is tested against a real engine in `tests/`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{
    AttachContainerOptions, CreateImageOptions, ImportImageOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kohakuriver_api::Timestamp;

use crate::container_config::ContainerSpec;
use crate::engine_fault::{Fault, classify};
use crate::runtime::{
    ContainerRuntime, ContainerState, ContainerStatus, ContainerUsage, ImageInfo, LogChunk,
    LogStream, RuntimeError,
};

/// Docker through bollard.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects with the local defaults (`DOCKER_HOST` or the unix socket) and negotiates
    /// the API version, so an older engine (API 1.41) is spoken to in its own version.
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(DockerRuntime { docker })
    }

    /// Wraps an already configured client.
    pub fn from_client(docker: Docker) -> DockerRuntime {
        DockerRuntime { docker }
    }
}

fn engine_error(err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine(message),
        BollardError::HttpClientError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => RuntimeError::Unreachable(err.to_string()),
        other => RuntimeError::Engine(other.to_string()),
    }
}

/// A failed create or start: Refused when retrying cannot fix it, else as [`engine_error`].
fn container_error(err: BollardError) -> RuntimeError {
    match classify(status_code(&err), &message_of(&err)) {
        Fault::Permanent => RuntimeError::Refused(message_of(&err)),
        Fault::Transient => engine_error(err),
    }
}

fn status_code(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Sorts a failed pull into ImageNotFound (the registry answered: no such image) or
/// ImagePullFailed (anything else: network, auth, disk).
pub fn classify_pull_failure(image: &str, message: &str) -> RuntimeError {
    let lower = message.to_ascii_lowercase();
    let not_found = [
        "not found",
        "manifest unknown",
        "does not exist",
        "pull access denied",
        "no such image",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    let (image, message) = (image.to_string(), message.to_string());
    if not_found {
        RuntimeError::ImageNotFound { image, message }
    } else {
        RuntimeError::ImagePullFailed { image, message }
    }
}

/// Splits `repo[:tag]` (or `repo@digest`) into the pull's `fromImage` and `tag`, defaulting
/// the tag to `latest` (an empty tag would pull every tag).
fn split_reference(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Parses Docker's RFC 3339 times; the zero time (`0001-01-01…`) means "never".
pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let t = t.with_timezone(&chrono::Utc);
    (t.timestamp() > 0).then_some(t)
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self.docker.version().await.map_err(engine_error)?;
        Ok(v.version.unwrap_or_default())
    }

    async fn image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(Some(ImageInfo {
                created: info.created.as_deref().and_then(parse_time),
            })),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let (from_image, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag: Some(tag).filter(|t| !t.is_empty()),
            ..Default::default()
        };
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| classify_pull_failure(image, &message_of(&e)))
    }

    async fn load(&self, tarball: &Path) -> Result<(), RuntimeError> {
        let fail = |message: String| RuntimeError::ImagePullFailed {
            image: tarball.display().to_string(),
            message,
        };
        let file = tokio::fs::File::open(tarball)
            .await
            .map_err(|e| fail(format!("cannot open tarball: {e}")))?;
        let body = tokio_util::io::ReaderStream::new(file);
        self.docker
            .import_image_stream(
                ImportImageOptions {
                    quiet: true,
                    ..Default::default()
                },
                body,
                None,
            )
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| fail(message_of(&e)))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let (options, body) = spec.to_bollard();
        match self.docker.create_container(Some(options), body).await {
            Ok(response) => Ok(response.id),
            Err(e) if status_code(&e) == Some(409) => {
                Err(RuntimeError::AlreadyExists(spec.name.clone()))
            }
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::ImageNotFound {
                image: spec.image.image(),
                message: message_of(&e),
            }),
            Err(e) => Err(container_error(e)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            // 304: already started.
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::NotFound(id.into())),
            other => other.map_err(container_error),
        }
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker.pause_container(id).await.map_err(engine_error)
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(engine_error)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // A frozen process cannot handle SIGTERM; thaw it first so the grace period means
        // something.
        if let Some(state) = self.inspect(id).await?
            && state.status == ContainerStatus::Paused
        {
            self.unpause(id).await?;
        }
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs_f64().ceil() as i64).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::NotFound(id.into())),
            other => other.map_err(engine_error),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            other => other.map_err(engine_error),
        }
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let info = match self
            .docker
            .inspect_container(id_or_name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine_error(e)),
        };
        let state = info.state.unwrap_or_default();
        let status = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
            Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
            Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
            Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
                ContainerStatus::Exited
            }
            _ => ContainerStatus::Transitioning,
        };
        let labels: BTreeMap<String, String> = info
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(ContainerState {
            id: info.id.unwrap_or_default(),
            name: info
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            labels,
            status,
            exit_code: (status == ContainerStatus::Exited)
                .then_some(state.exit_code)
                .flatten(),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            started_at: state.started_at.as_deref().and_then(parse_time),
            finished_at: state.finished_at.as_deref().and_then(parse_time),
        }))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(engine_error)?;
        let mut out = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            // Removed between the list and the inspect: simply gone.
            if let Some(state) = self.inspect(&id).await? {
                out.push(state);
            }
        }
        Ok(out)
    }

    async fn usage(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        // One sample, without the engine's second sample a second later (`one-shot`): the
        // agent keeps its own previous sample to compute a rate.
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = match self.docker.stats(id, Some(options)).next().await {
            Some(Ok(stats)) => stats,
            Some(Err(e)) if status_code(&e) == Some(404) => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Some(Err(e)) => return Err(engine_error(e)),
            None => {
                return Err(RuntimeError::Engine(format!(
                    "the engine sent no stats for container {id}"
                )));
            }
        };
        let cpu_nanoseconds = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let memory_bytes = stats.memory_stats.map_or(0, |m| {
            crate::usage::memory_without_cache(m.usage.unwrap_or(0), m.stats.as_ref())
        });
        Ok(ContainerUsage {
            cpu_nanoseconds,
            memory_bytes,
        })
    }

    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            since: 0,
            until: 0,
            timestamps: false,
            tail: "all".to_string(),
        };
        self.docker
            .logs(id, Some(options))
            .filter_map(|item| async move { log_chunk(item) })
            .boxed()
    }

    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
        let options = AttachContainerOptions {
            detach_keys: None,
            logs: false,
            stream: true,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let attached = match self.docker.attach_container(id, Some(options)).await {
            Ok(attached) => attached,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(RuntimeError::NotFound(id.into()));
            }
            Err(e) => return Err(engine_error(e)),
        };
        // The write half is kept with the stream: the connection lives as long as both.
        let input = attached.input;
        Ok(attached
            .output
            .filter_map(move |item| {
                let _keep = &input;
                let chunk = log_chunk(item);
                async move { chunk }
            })
            .boxed())
    }
}

/// One frame of Docker's multiplexed output in our terms (stdin frames are dropped).
fn log_chunk(item: Result<LogOutput, BollardError>) -> Option<Result<LogChunk, RuntimeError>> {
    match item {
        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
            Some(Ok(LogChunk {
                stream: LogStream::Stdout,
                bytes: message,
            }))
        }
        Ok(LogOutput::StdErr { message }) => Some(Ok(LogChunk {
            stream: LogStream::Stderr,
            bytes: message,
        })),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(engine_error(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_a_tag() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("ubuntu:22.04"),
            ("ubuntu".into(), "22.04".into())
        );
        assert_eq!(
            split_reference("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_reference("localhost:5000/a:v1"),
            ("localhost:5000/a".into(), "v1".into())
        );
        assert_eq!(split_reference("a@sha256:00").1, "");
    }

    #[test]
    fn pull_failures_are_sorted() {
        assert!(matches!(
            classify_pull_failure("x", "pull access denied for x, repository does not exist"),
            RuntimeError::ImageNotFound { .. }
        ));
        assert!(matches!(
            classify_pull_failure("x", "manifest for x:1 not found: manifest unknown"),
            RuntimeError::ImageNotFound { .. }
        ));
        assert!(matches!(
            classify_pull_failure("x", "dial tcp: lookup registry-1.docker.io: no such host"),
            RuntimeError::ImagePullFailed { .. }
        ));
    }

    #[test]
    fn zero_time_is_none() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert!(parse_time("2024-05-01T10:00:00.123456789Z").is_some());
    }
}
