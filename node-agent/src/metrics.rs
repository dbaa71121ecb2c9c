//! The agent's Prometheus metrics, served at `GET /metrics` on its endpoint (behind the
//! agent secret, like every route but `/healthz`).
//!
//! Built on `prometheus-client`: the Docker call families are registered metrics updated as
//! calls happen ([`crate::metered_runtime`]); the log byte counter is the capture's own
//! ([`crate::log_capture::LogStore::captured_bytes`]); the per-GPU and per-task gauges are
//! read from the last usage sample at each scrape by a collector, so a GPU or task that is
//! gone has no series left behind, and a node without GPUs has no GPU series at all.
//!
//! | metric | labels |
//! |---|---|
//! | `kohakuriver_agent_running_containers` | |
//! | `kohakuriver_agent_docker_call_duration_seconds` (histogram) | `operation` |
//! | `kohakuriver_agent_docker_call_errors_total` | `operation` |
//! | `kohakuriver_agent_log_captured_bytes_total` | |
//! | `kohakuriver_agent_gpu_utilization_percent`, `…_gpu_memory_used_bytes`, `…_gpu_memory_total_bytes`, `…_gpu_temperature_celsius`, `…_gpu_power_watts` | `gpu` |
//! | `kohakuriver_agent_task_cpu_cores`, `kohakuriver_agent_task_memory_bytes` | `task`, `uid` |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::usage::{UsageBoard, UsageSnapshot};

/// The name prefix of every agent metric.
const PREFIX: &str = "kohakuriver_agent";

/// The `Content-Type` of the answer: the OpenMetrics text format `prometheus-client`
/// writes, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The one label of the Docker call families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// The runtime call: `create`, `start`, `inspect`, `usage`…
    pub operation: &'static str,
}

/// Timing and errors of the calls the agent makes to the container engine: a cheap `Clone`
/// handle (the families share their series).
#[derive(Clone, Debug)]
pub struct DockerMetrics {
    durations: Family<Operation, Histogram>,
    errors: Family<Operation, Counter>,
}

impl Default for DockerMetrics {
    fn default() -> DockerMetrics {
        DockerMetrics {
            // 1 ms to about 4.5 min: an inspect takes milliseconds, a stop up to the kill
            // grace, a pull minutes.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 10))
            }),
            errors: Family::default(),
        }
    }
}

impl DockerMetrics {
    /// Records one call of `operation` that took `took`, and whether it failed.
    pub fn observe(&self, operation: &'static str, took: Duration, failed: bool) {
        let labels = Operation { operation };
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

/// Everything `/metrics` shows: a cheap `Clone` handle over one registry.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
}

impl Default for AgentMetrics {
    /// A registry over fresh Docker families, a fresh log counter and an empty board.
    fn default() -> AgentMetrics {
        AgentMetrics::new(
            &DockerMetrics::default(),
            Counter::default(),
            UsageBoard::default(),
        )
    }
}

impl AgentMetrics {
    /// The registry of an agent whose Docker calls go to `docker`, whose capture counts its
    /// bytes in `log_bytes`, and whose usage sampler publishes on `board`.
    pub fn new(docker: &DockerMetrics, log_bytes: Counter, board: UsageBoard) -> AgentMetrics {
        // The registry ends each help text with a period itself.
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "docker_call_duration_seconds",
            "Time the container engine took to answer a call, by runtime operation",
            docker.durations.clone(),
        );
        registry.register(
            "docker_call_errors",
            "Calls to the container engine that failed, by runtime operation",
            docker.errors.clone(),
        );
        registry.register(
            "log_captured_bytes",
            "Bytes of task output written to the capture files",
            log_bytes,
        );
        registry.register_collector(Box::new(UsageCollector { board }));
        AgentMetrics {
            registry: Arc::new(registry),
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Reads the last usage sample at each scrape.
#[derive(Debug)]
struct UsageCollector {
    board: UsageBoard,
}

/// One gauge family: a name, a help line and `(labels, value)` per series. Nothing is
/// written for a family without series, so no GPU means no GPU family at all.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: Vec<(L, f64)>,
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in &series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// The series of one GPU gauge (label `gpu`) and of one task gauge (labels `task`, `uid`).
type GpuSeries = Vec<([(&'static str, String); 1], f64)>;
type TaskSeries = Vec<([(&'static str, String); 2], f64)>;

fn gpu_series(
    snapshot: &UsageSnapshot,
    value: impl Fn(&kohakuriver_api::GpuUsage) -> Option<f64>,
) -> GpuSeries {
    snapshot
        .gpus
        .iter()
        .filter_map(|g| value(g).map(|v| ([("gpu", g.index.to_string())], v)))
        .collect()
}

fn task_series(
    snapshot: &UsageSnapshot,
    value: impl Fn(&kohakuriver_api::TaskUsage) -> f64,
) -> TaskSeries {
    snapshot
        .tasks
        .iter()
        .map(|t| {
            (
                [("task", t.name.clone()), ("uid", t.usage.uid.clone())],
                value(&t.usage),
            )
        })
        .collect()
}

impl Collector for UsageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.board.get();
        let running = encoder.encode_descriptor(
            "running_containers",
            "Task containers running or paused at the last usage sample.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(s.running_containers)).encode(running)?;
        let gpus: [(&str, &str, GpuSeries); 5] = [
            (
                "gpu_utilization_percent",
                "Percent of the last sample period during which a kernel ran on the GPU (NVML).",
                gpu_series(&s, |g| Some(f64::from(g.utilization_percent))),
            ),
            (
                "gpu_memory_used_bytes",
                "GPU device memory in use (NVML).",
                gpu_series(&s, |g| Some(g.memory_used_bytes as f64)),
            ),
            (
                "gpu_memory_total_bytes",
                "GPU device memory in all (NVML).",
                gpu_series(&s, |g| Some(g.memory_total_bytes as f64)),
            ),
            (
                "gpu_temperature_celsius",
                "GPU die temperature (NVML).",
                gpu_series(&s, |g| g.temperature_celsius.map(f64::from)),
            ),
            (
                "gpu_power_watts",
                "GPU power draw (NVML).",
                gpu_series(&s, |g| g.power_watts),
            ),
        ];
        for (name, help, series) in gpus {
            gauge_family(&mut encoder, name, help, series)?;
        }
        gauge_family(
            &mut encoder,
            "task_cpu_cores",
            "CPU cores a running task's container used over the last usage interval.",
            task_series(&s, |t| t.cpu_millicores as f64 / 1000.0),
        )?;
        gauge_family(
            &mut encoder,
            "task_memory_bytes",
            "Memory a running task's container uses, without the page cache.",
            task_series(&s, |t| t.memory_bytes as f64),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{FakeGpus, GpuInventory};
    use crate::usage::{NamedUsage, UsageSnapshot};
    use kohakuriver_api::TaskUsage;

    fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn no_gpu_means_no_gpu_series() {
        let board = UsageBoard::default();
        let metrics = AgentMetrics::new(&DockerMetrics::default(), Counter::default(), board);
        let text = metrics.render();
        assert!(!text.contains("gpu_"), "{text}");
        assert!(!text.contains("task_cpu"), "{text}");
        assert!(
            text.contains("kohakuriver_agent_running_containers 0\n"),
            "{text}"
        );
        assert!(
            text.contains("kohakuriver_agent_log_captured_bytes_total 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn gpu_task_docker_and_log_series() {
        let gpus = FakeGpus::new(2);
        gpus.set(1, 87, 3 << 30);
        let board = UsageBoard::default();
        board.set(UsageSnapshot {
            gpus: gpus.readings(),
            tasks: vec![NamedUsage {
                name: "train".into(),
                usage: TaskUsage {
                    uid: "u-1".into(),
                    cpu_millicores: 1500,
                    memory_bytes: 4096,
                    gpu_percent: Some(87.0),
                    gpu_memory_used_bytes: Some(3 << 30),
                },
            }],
            running_containers: 1,
        });
        let docker = DockerMetrics::default();
        docker.observe("inspect", Duration::from_millis(3), false);
        docker.observe("create", Duration::from_millis(40), true);
        let log_bytes = Counter::<u64>::default();
        let metrics = AgentMetrics::new(&docker, log_bytes.clone(), board);
        log_bytes.inc_by(1234);
        let text = metrics.render();
        let mut utilisation = lines_with(&text, "kohakuriver_agent_gpu_utilization_percent{");
        utilisation.sort();
        assert_eq!(
            utilisation,
            [
                "kohakuriver_agent_gpu_utilization_percent{gpu=\"0\"} 0.0",
                "kohakuriver_agent_gpu_utilization_percent{gpu=\"1\"} 87.0",
            ]
        );
        assert_eq!(
            lines_with(&text, "kohakuriver_agent_gpu_memory_used_bytes{gpu=\"1\"}"),
            ["kohakuriver_agent_gpu_memory_used_bytes{gpu=\"1\"} 3221225472.0"]
        );
        assert_eq!(
            lines_with(&text, "kohakuriver_agent_gpu_memory_total_bytes{").len(),
            2
        );
        assert_eq!(
            lines_with(&text, "kohakuriver_agent_gpu_temperature_celsius{").len(),
            2
        );
        assert_eq!(
            lines_with(&text, "kohakuriver_agent_gpu_power_watts{").len(),
            2
        );
        assert_eq!(
            lines_with(&text, "kohakuriver_agent_task_"),
            [
                "kohakuriver_agent_task_cpu_cores{task=\"train\",uid=\"u-1\"} 1.5",
                "kohakuriver_agent_task_memory_bytes{task=\"train\",uid=\"u-1\"} 4096.0",
            ]
        );
        assert!(
            text.contains("kohakuriver_agent_running_containers 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kohakuriver_agent_log_captured_bytes_total 1234\n"),
            "{text}"
        );
        assert!(
            text.contains("kohakuriver_agent_docker_call_errors_total{operation=\"create\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "kohakuriver_agent_docker_call_duration_seconds_count{operation=\"inspect\"} 1\n"
            ),
            "{text}"
        );
    }
}
