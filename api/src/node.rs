//! The `Node` resource: one machine running an agent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{
    Condition, ConditionStatus, ObjectMeta, Timestamp, find_condition, set_condition,
};
use crate::resource::{Resource, STATUS_SUBRESOURCE, Subresource};

/// A machine that runs tasks. The agent creates it and writes its status; users may cordon
/// it (`spec.unschedulable`) and label it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Always `kohakuriver/v1`.
    pub api_version: String,
    /// Always `Node`.
    pub kind: String,
    /// `name` is the host name.
    pub metadata: ObjectMeta,
    /// What the operator wants of the node.
    #[serde(default)]
    pub spec: NodeSpec,
    /// What the agent reports.
    #[serde(default)]
    pub status: NodeStatus,
}

fn default_api_version() -> String {
    crate::API_VERSION.to_string()
}

fn default_node_kind() -> String {
    "Node".to_string()
}

/// What the operator wants of a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: no new task is placed here; running ones keep running.
    #[serde(default)]
    pub unschedulable: bool,
}

/// What a node has and how it is doing, as its agent reports.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// Everything the machine has.
    #[serde(default)]
    pub capacity: NodeResources,
    /// What tasks may use (capacity less what the agent keeps for itself).
    #[serde(default)]
    pub allocatable: NodeResources,
    /// NUMA nodes with their cores and memory; one entry on a machine without NUMA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa: Vec<NumaNode>,
    /// GPUs found through NVML (or a static list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    /// Base URL of the agent's HTTP endpoint (logs), e.g. `http://10.0.0.5:8001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The Docker engine's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Whether shared storage is mounted at `/shared` in task containers.
    #[serde(default)]
    pub shared_storage: bool,
    /// The image this node runs for a task that names neither `image` nor `container`
    /// (the server's `--default-image`, else the agent's); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    /// Load figures from the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<NodeUsage>,
    /// When the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Countable resources of a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResources {
    /// CPU cores (logical CPUs).
    #[serde(default)]
    pub cpu: u32,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
}

/// One NUMA node: its cores and memory.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NumaNode {
    /// NUMA node id as the kernel numbers it.
    pub id: u32,
    /// Its logical CPUs as a cpuset list (`0-15,32-47`).
    pub cpus: String,
    /// Its memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
}

/// One GPU.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// NVML index, as given to `--gpus device=`.
    pub index: u32,
    /// NVML UUID.
    #[serde(default)]
    pub uuid: String,
    /// Product name, e.g. `NVIDIA A100-SXM4-80GB`.
    #[serde(default)]
    pub name: String,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The NUMA node the GPU is attached to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<u32>,
    /// False when NVML reports the GPU unusable; unhealthy GPUs are not allocated.
    #[serde(default = "default_true")]
    pub healthy: bool,
}

fn default_true() -> bool {
    true
}

/// Load figures from a heartbeat.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeUsage {
    /// Whole-machine CPU use, 0–100.
    #[serde(default)]
    pub cpu_percent: f64,
    /// Memory in use, in bytes.
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// Task containers the agent runs now.
    #[serde(default)]
    pub running_tasks: u32,
    /// Each GPU's live readings (NVML); empty without GPUs or a driver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<crate::usage::GpuUsage>,
    /// Each running task's container, named by task uid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::usage::TaskUsage>,
}

impl NodeStatus {
    /// Records an agent heartbeat at `now`: `lastHeartbeat` and `Ready=True`.
    pub fn record_heartbeat(&mut self, now: Timestamp, observed_generation: Option<i64>) {
        self.last_heartbeat = Some(now);
        set_condition(
            &mut self.conditions,
            "Ready",
            ConditionStatus::True,
            Some("AgentReady"),
            Some("the agent is heartbeating"),
            observed_generation,
            now,
        );
    }
}

impl Node {
    /// A node with this name and an empty status.
    pub fn new(name: impl Into<String>) -> Node {
        Node {
            api_version: default_api_version(),
            kind: default_node_kind(),
            metadata: ObjectMeta::named(name),
            spec: NodeSpec::default(),
            status: NodeStatus::default(),
        }
    }

    /// True when the `Ready` condition is True.
    pub fn is_ready(&self) -> bool {
        find_condition(&self.status.conditions, "Ready")
            .is_some_and(|c| c.status == ConditionStatus::True)
    }
}

impl Resource for Node {
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";
    const SINGULAR: &'static str = "node";
    // `no`, as kubectl users type for Kubernetes nodes: this server serves no core group,
    // so nothing else can claim it, and our nodes are the same idea.
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const CATEGORIES: &'static [&'static str] = &["kohakuriver"];
    const SUBRESOURCES: &'static [Subresource] = &[STATUS_SUBRESOURCE];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["metadata.name", "spec.unschedulable"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "metadata.name" => Some(self.metadata.name.clone()),
            "spec.unschedulable" => Some(self.spec.unschedulable.to_string()),
            _ => None,
        }
    }
}
