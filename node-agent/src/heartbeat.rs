//! Registering this machine's `Node` and keeping it fresh.
//!
//! The agent creates its Node when missing, then writes the whole status (capacity, NUMA
//! topology, GPUs, endpoint address, versions) plus usage figures (CPU and memory measured
//! here; GPU and task readings from the last sample of [`crate::usage`]) and the `Ready`
//! condition through the status subresource at every heartbeat. Writing everything each time makes a
//! heartbeat also repair a Node that was deleted or edited meanwhile. The same loop asks for
//! the agent secret again every minute.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kohakuriver_api::{Node, NodeResources, NodeStatus, NodeUsage};
use kohakuriver_client::Api;
use tokio_util::sync::CancellationToken;

use crate::credential::SecretRefresher;
use crate::discovery::{Topology, meminfo_field};
use crate::gpu::GpuInventory;

/// What the agent reports about its machine, and where the usage sampler publishes.
pub(crate) struct NodeFacts {
    pub name: String,
    pub topology: Topology,
    pub gpus: Arc<dyn GpuInventory>,
    pub address: String,
    pub docker_version: String,
    pub shared_storage: bool,
    pub default_image: Option<String>,
    pub procfs_root: PathBuf,
    /// The last GPU and task usage sample ([`crate::usage`]), carried by every beat.
    pub board: crate::usage::UsageBoard,
}

/// Whole-machine CPU use from `/proc/stat`, as the difference between two samples.
#[derive(Default)]
pub(crate) struct CpuSampler {
    last: Option<(u64, u64)>,
}

/// `(busy, total)` jiffies from the first line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl CpuSampler {
    /// CPU use since the previous sample, 0–100 (0 at the first sample).
    pub fn sample(&mut self, procfs_root: &Path) -> f64 {
        let Some(now) = std::fs::read_to_string(procfs_root.join("stat"))
            .ok()
            .and_then(|t| parse_proc_stat(&t))
        else {
            return 0.0;
        };
        let percent = match self.last {
            Some((busy, total)) if now.1 > total => {
                (now.0.saturating_sub(busy)) as f64 / (now.1 - total) as f64 * 100.0
            }
            _ => 0.0,
        };
        self.last = Some(now);
        (percent * 10.0).round() / 10.0
    }
}

fn memory_used(procfs_root: &Path) -> u64 {
    let text = std::fs::read_to_string(procfs_root.join("meminfo")).unwrap_or_default();
    match (
        meminfo_field(&text, "MemTotal"),
        meminfo_field(&text, "MemAvailable"),
    ) {
        (Some(total), Some(available)) => total.saturating_sub(available),
        _ => 0,
    }
}

impl NodeFacts {
    /// Writes facts, usage and Ready into `status`.
    fn fill(&self, status: &mut NodeStatus, usage: NodeUsage, generation: Option<i64>) {
        let gpus = self.gpus.gpus();
        let capacity = NodeResources {
            cpu: self.topology.cpu_count(),
            memory_bytes: self.topology.memory_bytes,
            gpus: gpus.len() as u32,
        };
        status.allocatable = NodeResources {
            gpus: gpus.iter().filter(|g| g.healthy).count() as u32,
            ..capacity.clone()
        };
        status.capacity = capacity;
        status.numa = self.topology.numa.clone();
        status.gpus = gpus;
        status.address = Some(self.address.clone());
        status.agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
        status.docker_version = Some(self.docker_version.clone());
        status.shared_storage = self.shared_storage;
        status.default_image = self.default_image.clone();
        status.usage = Some(usage);
        status.record_heartbeat(chrono::Utc::now(), generation);
    }
}

/// Creates the Node when missing and writes its full status once.
pub(crate) async fn beat(
    nodes: &Api<Node>,
    facts: &NodeFacts,
    usage: NodeUsage,
) -> Result<(), kohakuriver_client::Error> {
    if nodes.get_opt(&facts.name).await?.is_none() {
        match nodes.create(&Node::new(facts.name.clone())).await {
            Ok(_) => tracing::info!(node = %facts.name, "node registered"),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
    }
    nodes
        .update_status_with(&facts.name, |n| {
            let generation = n.metadata.generation;
            facts.fill(&mut n.status, usage.clone(), generation);
            true
        })
        .await?;
    Ok(())
}

/// How often the agent secret is asked for again.
const SECRET_REFRESH: Duration = Duration::from_secs(60);

/// Heartbeats every `interval` until shutdown, recording each accepted one in `contact`.
/// `running` counts the tasks running now.
pub(crate) async fn run(
    nodes: Api<Node>,
    facts: NodeFacts,
    interval: Duration,
    running: impl Fn() -> u32,
    secret: SecretRefresher,
    contact: Arc<crate::fence::Contact>,
    shutdown: CancellationToken,
) {
    let mut cpu = CpuSampler::default();
    cpu.sample(&facts.procfs_root);
    let mut secret_fetched = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // GPU and task figures come from the usage sampler's last sample; the beat only
        // carries them.
        let sampled = facts.board.get();
        let usage = NodeUsage {
            cpu_percent: cpu.sample(&facts.procfs_root),
            memory_used_bytes: memory_used(&facts.procfs_root),
            running_tasks: running(),
            gpus: sampled.gpus,
            tasks: sampled.tasks.into_iter().map(|t| t.usage).collect(),
        };
        match beat(&nodes, &facts, usage).await {
            Ok(()) => contact.reached(),
            Err(err) => tracing::warn!(
                error = %err,
                secs_without_contact = contact.since().as_secs(),
                "heartbeat failed"
            ),
        }
        if secret_fetched.elapsed() >= SECRET_REFRESH {
            secret.refresh().await;
            secret_fetched = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_and_total() {
        let (busy, total) =
            parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(total, 1000);
        assert_eq!(busy, 150);
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }

    #[test]
    fn sampler_reports_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  100 0 0 100 0 0 0 0\n").unwrap();
        let mut s = CpuSampler::default();
        assert_eq!(s.sample(dir.path()), 0.0);
        std::fs::write(dir.path().join("stat"), "cpu  150 0 0 150 0 0 0 0\n").unwrap();
        assert_eq!(s.sample(dir.path()), 50.0);
    }

    #[test]
    fn memory_used_is_total_less_available() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal: 10 kB\nMemFree: 1 kB\nMemAvailable: 4 kB\n",
        )
        .unwrap();
        assert_eq!(memory_used(dir.path()), 6 * 1024);
    }
}
