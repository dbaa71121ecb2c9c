//! Live usage: what the node's GPUs and each running task's container use now, measured
//! every `--usage-interval` (default 10 s).
//!
//! The sampler reads the GPUs through [`GpuInventory::readings`] and each container's CPU
//! time and memory through [`ContainerRuntime::usage`], keeps the last CPU counter of every
//! container (a rate needs two samples) and a window of GPU samples of every task holding
//! GPUs, and publishes the result on a [`UsageBoard`]. The heartbeat carries the board's
//! figures in the Node's status and the agent's `/metrics` shows them; neither measures
//! anything itself. A task whose GPUs stayed under 5 % for 10 minutes gets condition
//! `GPUIdle` True (and False once they are used again), decided by the pure [`idle_gpu`]
//! over the samples this module keeps: the window belongs to whoever keeps the samples.
//!
//! Why the usage rides on the heartbeat instead of each task's status: the heartbeat writes
//! the Node's whole status every few seconds anyway, so usage adds bytes to a write that
//! happens regardless, while a write per running task every 10 s would be an event in the
//! watch history, and in every task watcher's stream, per task. Only the idle flag, which
//! changes rarely, is written to the task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kohakuriver_api::meta::{find_condition, set_condition};
use kohakuriver_api::usage::{GPU_IDLE_CONDITION, IDLE_GPU_PERCENT, IDLE_GPU_WINDOW_SECONDS};
use kohakuriver_api::{ConditionStatus, GpuUsage, Task, TaskPhase, TaskUsage};
use kohakuriver_client::Api;
use tokio_util::sync::CancellationToken;

use crate::gpu::GpuInventory;
use crate::runtime::ContainerRuntime;

/// The default time between two usage samples.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(10);

/// One running task's usage, with the name the agent knows it by (for its own metrics; the
/// Node's status names tasks by uid only).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedUsage {
    /// The task's name.
    pub name: String,
    /// What it uses.
    pub usage: TaskUsage,
}

/// The last sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageSnapshot {
    /// Each GPU's readings.
    pub gpus: Vec<GpuUsage>,
    /// Each running (or paused) task's container, ordered by name.
    pub tasks: Vec<NamedUsage>,
    /// Task containers alive (running or paused) at the sample.
    pub running_containers: u32,
}

/// Where the last sample is published: a cheap `Clone` handle. A std `Mutex` is right: it
/// is held only to copy the snapshot, never across an `.await`.
#[derive(Clone, Debug, Default)]
pub struct UsageBoard(Arc<Mutex<UsageSnapshot>>);

impl UsageBoard {
    /// The last sample (empty before the first).
    pub fn get(&self) -> UsageSnapshot {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes a sample.
    pub fn set(&self, snapshot: UsageSnapshot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

/// When a task's GPUs count as idle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdlePolicy {
    /// How long they must stay under `percent`.
    pub window: Duration,
    /// The utilisation under which they are idle.
    pub percent: f64,
    /// The longest gap between two samples that still counts as watching the whole time
    /// (a sampler that stalled, or a task the agent could not measure, proves nothing).
    pub max_gap: Duration,
}

impl IdlePolicy {
    /// 10 minutes under 5 %, with samples every `interval` (a gap of three missed samples
    /// breaks the watch).
    pub fn standard(interval: Duration) -> IdlePolicy {
        IdlePolicy {
            window: Duration::from_secs(IDLE_GPU_WINDOW_SECONDS),
            percent: IDLE_GPU_PERCENT,
            max_gap: interval * 3,
        }
    }
}

/// True when the samples (time since the sampler started, mean GPU utilisation), oldest
/// first, show the GPUs under `policy.percent` for the whole of the last `policy.window`:
/// a sample at or before the window's start (within `max_gap`), no gap wider than
/// `max_gap` after it, the last one within `max_gap` of `now`, and every one from the
/// window's start on under the threshold.
pub fn idle_gpu(samples: &VecDeque<(Duration, f64)>, now: Duration, policy: &IdlePolicy) -> bool {
    let Some(start) = now.checked_sub(policy.window) else {
        return false;
    };
    let Some(&(last, _)) = samples.back() else {
        return false;
    };
    if now.saturating_sub(last) > policy.max_gap {
        return false;
    }
    // The watch must begin by the window's start: the first sample in it, or the last one
    // before it, is at most `max_gap` after `start`.
    let first_in = samples.iter().position(|&(t, _)| t >= start);
    let from = match first_in {
        Some(0) => {
            if samples[0].0 > start + policy.max_gap {
                return false;
            }
            0
        }
        Some(i) => i - 1,
        None => samples.len() - 1,
    };
    let watched: Vec<&(Duration, f64)> = samples.iter().skip(from).collect();
    let gaps_ok = watched
        .windows(2)
        .all(|pair| pair[1].0.saturating_sub(pair[0].0) <= policy.max_gap);
    let all_idle = watched
        .iter()
        .filter(|(t, _)| *t >= start)
        .all(|(_, percent)| *percent < policy.percent);
    gaps_ok && all_idle
}

/// What the task's `GPUIdle` condition should become, or None when it is right already:
/// True when idle and not True now; False when not idle and True now. A task never flagged
/// gets no condition at all.
pub fn idle_condition_change(task: &Task, idle: bool) -> Option<ConditionStatus> {
    let now = find_condition(&task.status.conditions, GPU_IDLE_CONDITION).map(|c| c.status);
    match (idle, now) {
        (true, Some(ConditionStatus::True)) => None,
        (true, _) => Some(ConditionStatus::True),
        (false, Some(ConditionStatus::True)) => Some(ConditionStatus::False),
        (false, _) => None,
    }
}

/// CPU in thousandths of a core between two samples of a container's CPU counter
/// (nanoseconds used, time of the sample); 0 for the first sample, or when the counter went
/// back (a restarted container).
pub fn cpu_millicores(previous: Option<(u64, Duration)>, now: (u64, Duration)) -> u64 {
    let Some((used_before, at_before)) = previous else {
        return 0;
    };
    let elapsed = now.1.saturating_sub(at_before).as_nanos();
    if elapsed == 0 || now.0 < used_before {
        return 0;
    }
    (u128::from(now.0 - used_before) * 1000 / elapsed) as u64
}

/// Memory in use as `docker stats` shows it: the cgroup's usage less the file pages the
/// kernel may drop (`inactive_file` on cgroup v2, `total_inactive_file` on v1).
pub fn memory_without_cache(usage: u64, stats: Option<&HashMap<String, u64>>) -> u64 {
    let cache = stats
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(cache)
}

/// The mean utilisation and the memory in use of the GPUs `indices` (a task's allocation),
/// from the node's readings; None for a task without GPUs or whose GPUs have no reading.
pub fn task_gpu_usage(indices: &[u32], readings: &[GpuUsage]) -> Option<(f64, u64)> {
    let mine: Vec<&GpuUsage> = readings
        .iter()
        .filter(|r| indices.contains(&r.index))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let percent = mine
        .iter()
        .map(|r| f64::from(r.utilization_percent))
        .sum::<f64>()
        / mine.len() as f64;
    let memory = mine.iter().map(|r| r.memory_used_bytes).sum();
    Some(((percent * 10.0).round() / 10.0, memory))
}

/// A task whose container the sampler measures: alive on this node, with a container.
fn measured(task: &Task) -> Option<&str> {
    let alive = matches!(task.status.phase, TaskPhase::Running | TaskPhase::Paused);
    let id = task.status.container_id.as_deref()?;
    (alive && task.metadata.deletion_timestamp.is_none()).then_some(id)
}

/// A flag to write on a task: its `GPUIdle` condition becomes `status`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleChange {
    /// The task, as the sampler saw it.
    pub task: Task,
    /// The condition's new status.
    pub status: ConditionStatus,
}

/// Measures GPUs and containers, and keeps what a rate and the idle flag need.
pub struct UsageSampler {
    runtime: Arc<dyn ContainerRuntime>,
    gpus: Arc<dyn GpuInventory>,
    board: UsageBoard,
    policy: IdlePolicy,
    started: Instant,
    /// Last CPU counter of each container id, with when it was read.
    cpu: HashMap<String, (u64, Duration)>,
    /// GPU samples of each task uid holding GPUs, oldest first, spanning the window.
    gpu_samples: HashMap<String, VecDeque<(Duration, f64)>>,
}

impl UsageSampler {
    /// A sampler publishing on `board`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        gpus: Arc<dyn GpuInventory>,
        board: UsageBoard,
        policy: IdlePolicy,
    ) -> UsageSampler {
        UsageSampler {
            runtime,
            gpus,
            board,
            policy,
            started: Instant::now(),
            cpu: HashMap::new(),
            gpu_samples: HashMap::new(),
        }
    }

    /// Takes one sample of `tasks` (the tasks bound to this node) at the current time.
    pub async fn sample(&mut self, tasks: &[Task]) -> Vec<IdleChange> {
        let at = self.started.elapsed();
        self.sample_at(tasks, at).await
    }

    /// Takes one sample at `at` (time since the sampler started): measures, publishes on
    /// the board, and returns the idle flags that must change.
    pub async fn sample_at(&mut self, tasks: &[Task], at: Duration) -> Vec<IdleChange> {
        let gpus = self.gpus.readings();
        let mut measured_tasks: Vec<&Task> =
            tasks.iter().filter(|t| measured(t).is_some()).collect();
        measured_tasks.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut usages = Vec::new();
        let mut changes = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut seen_uids = HashSet::new();
        for task in measured_tasks {
            let Some(id) = measured(task) else { continue };
            let counter = match self.runtime.usage(id).await {
                Ok(u) => u,
                Err(err) => {
                    // Gone between the list and the sample, or the engine is busy: no
                    // figure this time rather than a made-up one.
                    tracing::debug!(task = %task.metadata.name, error = %err, "cannot read the container's usage");
                    continue;
                }
            };
            seen_ids.insert(id.to_string());
            let millicores =
                cpu_millicores(self.cpu.get(id).copied(), (counter.cpu_nanoseconds, at));
            self.cpu
                .insert(id.to_string(), (counter.cpu_nanoseconds, at));
            let indices: Vec<u32> = task
                .status
                .allocation
                .as_ref()
                .map(|a| a.gpus.clone())
                .unwrap_or_default();
            let gpu = if indices.is_empty() {
                None
            } else {
                task_gpu_usage(&indices, &gpus)
            };
            if let Some((percent, _)) = gpu {
                let uid = task.metadata.uid.clone().unwrap_or_default();
                seen_uids.insert(uid.clone());
                let samples = self.gpu_samples.entry(uid).or_default();
                samples.push_back((at, percent));
                // Keep the window, plus the last sample before it (it proves the watch
                // began in time).
                let start = at.saturating_sub(self.policy.window);
                while samples.len() > 1 && samples[1].0 <= start {
                    samples.pop_front();
                }
                let idle = idle_gpu(samples, at, &self.policy);
                if let Some(status) = idle_condition_change(task, idle) {
                    changes.push(IdleChange {
                        task: task.clone(),
                        status,
                    });
                }
            }
            usages.push(NamedUsage {
                name: task.metadata.name.clone(),
                usage: TaskUsage {
                    uid: task.metadata.uid.clone().unwrap_or_default(),
                    cpu_millicores: millicores,
                    memory_bytes: counter.memory_bytes,
                    gpu_percent: gpu.map(|(p, _)| p),
                    gpu_memory_used_bytes: gpu.map(|(_, m)| m),
                },
            });
        }
        // Forget containers and tasks no longer measured.
        self.cpu.retain(|id, _| seen_ids.contains(id));
        self.gpu_samples.retain(|uid, _| seen_uids.contains(uid));
        let running_containers = tasks.iter().filter(|t| measured(t).is_some()).count() as u32;
        self.board.set(UsageSnapshot {
            gpus,
            tasks: usages,
            running_containers,
        });
        changes
    }
}

/// Writes a task's `GPUIdle` condition, only while the task is still the same attempt on
/// this node and not finished.
async fn write_idle(tasks: &Api<Task>, node: &str, change: &IdleChange, policy: &IdlePolicy) {
    let task = &change.task;
    let (uid, binding) = (task.metadata.uid.clone(), task.status.binding);
    let gpus = task
        .status
        .allocation
        .as_ref()
        .map(|a| {
            a.gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let minutes = policy.window.as_secs() / 60;
    let (reason, message) = match change.status {
        ConditionStatus::True => (
            "GPUIdle",
            format!(
                "GPUs {gpus} stayed under {}% utilisation for {minutes}m while held by this task",
                policy.percent
            ),
        ),
        _ => ("GPUBusy", format!("GPUs {gpus} are in use again")),
    };
    let written = tasks
        .update_status_with(&task.metadata.name, |t| {
            if t.metadata.uid != uid
                || t.status.binding != binding
                || t.status.node.as_deref() != Some(node)
                || t.status.phase.is_terminal()
            {
                return false;
            }
            set_condition(
                &mut t.status.conditions,
                GPU_IDLE_CONDITION,
                change.status,
                Some(reason),
                Some(&message),
                None,
                chrono::Utc::now(),
            )
        })
        .await;
    match written {
        Ok(_) => {
            tracing::info!(task = %task.metadata.name, node, idle = ?change.status, "{message}")
        }
        Err(err) => {
            tracing::warn!(task = %task.metadata.name, node, error = %err, "cannot write the GPUIdle condition; trying again at the next sample")
        }
    }
}

/// Samples every `interval` until shutdown: `tasks` gives the tasks bound to this node.
pub(crate) async fn run(
    mut sampler: UsageSampler,
    tasks: impl Fn() -> Vec<Task>,
    api: Api<Task>,
    node: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let changes = sampler.sample(&tasks()).await;
        for change in &changes {
            write_idle(&api, &node, change, &sampler.policy).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests;
