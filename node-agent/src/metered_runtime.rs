//! A [`ContainerRuntime`] that times every call to the one it wraps and counts its errors,
//! for the agent's metrics ([`crate::metrics::DockerMetrics`]). The agent wraps its engine
//! in it once, so every caller (reconciler, image ensurer, capture, usage sampler) is
//! measured without knowing it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::container_config::ContainerSpec;
use crate::metrics::DockerMetrics;
use crate::runtime::{
    ContainerRuntime, ContainerState, ContainerUsage, ImageInfo, LogChunk, RuntimeError,
};

/// The wrapper.
pub struct MeteredRuntime {
    inner: Arc<dyn ContainerRuntime>,
    metrics: DockerMetrics,
}

impl MeteredRuntime {
    /// Measures the calls made to `inner` into `metrics`.
    pub fn new(inner: Arc<dyn ContainerRuntime>, metrics: DockerMetrics) -> MeteredRuntime {
        MeteredRuntime { inner, metrics }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        self.metrics
            .observe(operation, started.elapsed(), result.is_err());
        result
    }
}

#[async_trait]
impl ContainerRuntime for MeteredRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        let t = Instant::now();
        self.record("version", t, self.inner.version().await)
    }

    async fn image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let t = Instant::now();
        self.record("image", t, self.inner.image(image).await)
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("pull", t, self.inner.pull(image).await)
    }

    async fn load(&self, tarball: &Path) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("load", t, self.inner.load(tarball).await)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let t = Instant::now();
        self.record("create", t, self.inner.create(spec).await)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("start", t, self.inner.start(id).await)
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("pause", t, self.inner.pause(id).await)
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("unpause", t, self.inner.unpause(id).await)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("stop", t, self.inner.stop(id, grace).await)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        self.record("remove", t, self.inner.remove(id).await)
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let t = Instant::now();
        self.record("inspect", t, self.inner.inspect(id_or_name).await)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>, RuntimeError> {
        let t = Instant::now();
        self.record("list", t, self.inner.list(labels).await)
    }

    async fn usage(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        let t = Instant::now();
        self.record("usage", t, self.inner.usage(id).await)
    }

    /// A log stream lasts as long as the container writes: only the engine's answer to
    /// opening it would be a call's latency, and the stream opens lazily, so it is not timed.
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        self.inner.logs(id, follow)
    }

    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
        let t = Instant::now();
        self.record("attach", t, self.inner.attach(id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_runtime::FakeRuntime;
    use crate::metrics::AgentMetrics;
    use crate::usage::UsageBoard;

    #[tokio::test]
    async fn every_call_is_timed_and_failures_counted() {
        let docker = DockerMetrics::default();
        let runtime = MeteredRuntime::new(Arc::new(FakeRuntime::new()), docker.clone());
        runtime.version().await.unwrap();
        assert!(runtime.inspect("nothing").await.unwrap().is_none());
        assert!(runtime.start("nothing").await.is_err());
        assert!(runtime.usage("nothing").await.is_err());
        let text = AgentMetrics::new(&docker, Default::default(), UsageBoard::default()).render();
        for operation in ["version", "inspect", "start", "usage"] {
            assert!(
                text.contains(&format!(
                    "kohakuriver_agent_docker_call_duration_seconds_count{{operation=\"{operation}\"}} 1\n"
                )),
                "{operation}: {text}"
            );
        }
        let mut errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kohakuriver_agent_docker_call_errors_total{"))
            .collect();
        errors.sort();
        assert_eq!(
            errors,
            [
                "kohakuriver_agent_docker_call_errors_total{operation=\"start\"} 1",
                "kohakuriver_agent_docker_call_errors_total{operation=\"usage\"} 1",
            ]
        );
    }
}
