//! Live usage figures an agent measures and carries in its Node's status: per GPU readings
//! and per running task container readings.
//!
//! They ride on the heartbeat, which writes the Node's whole status anyway, so measuring
//! adds no write and no watch event (see ARCHITECTURE.md, Live usage). Tasks are named by
//! uid only: a Node is readable by every viewer, and with `--private-tasks` the names of
//! other people's tasks must not show through it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The task condition the agent sets while a task holds GPUs that have stayed under
/// [`IDLE_GPU_PERCENT`] for [`IDLE_GPU_WINDOW_SECONDS`] (True, reason `GPUIdle`), and clears
/// (False, reason `GPUBusy`) once they are used again.
pub const GPU_IDLE_CONDITION: &str = "GPUIdle";

/// A task's GPUs count as idle below this utilisation, in percent.
pub const IDLE_GPU_PERCENT: f64 = 5.0;

/// How long a task's GPUs must stay under [`IDLE_GPU_PERCENT`] before it is flagged.
pub const IDLE_GPU_WINDOW_SECONDS: u64 = 600;

/// The most task entries one Node's usage may carry (as many as it may have cores).
pub const MAX_USAGE_TASKS: usize = 4096;

/// One GPU's live readings, from NVML.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuUsage {
    /// NVML index, as in `status.gpus[].index`.
    pub index: u32,
    /// Percent of the last sample period during which a kernel ran, 0–100.
    #[serde(default)]
    pub utilization_percent: u32,
    /// Device memory in use, in bytes.
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// Device memory in all, in bytes.
    #[serde(default)]
    pub memory_total_bytes: u64,
    /// Die temperature in °C, when the driver tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
    /// Power draw in watts, when the driver tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
}

/// One running task's container, as last measured.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskUsage {
    /// The task's `metadata.uid`.
    pub uid: String,
    /// CPU in use, in thousandths of a core (`1500` is one and a half cores).
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Memory in use (without the page cache the kernel may drop), in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Mean utilisation of the task's GPUs, 0–100; absent when it holds none or they are
    /// not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_percent: Option<f64>,
    /// Device memory in use on the task's GPUs, in bytes; absent as `gpuPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used_bytes: Option<u64>,
}
