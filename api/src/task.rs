//! The `Task` resource: one command run once in a container on one node.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dependency::Dependency;
use crate::meta::{Condition, ObjectMeta, Timestamp};
use crate::quantity::Memory;
use crate::resource::{Resource, STATUS_SUBRESOURCE, Subresource};

/// A command task. Users write `metadata` and `spec`; the scheduler, the controllers and the
/// node agent write `status`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Task {
    /// Always `kohakuriver/v1`.
    pub api_version: String,
    /// Always `Task`.
    pub kind: String,
    /// Name, labels and server-owned bookkeeping.
    pub metadata: ObjectMeta,
    /// What the user wants run.
    pub spec: TaskSpec,
    /// What happened so far; ignored on writes to the main endpoint.
    #[serde(default)]
    pub status: TaskStatus,
}

fn default_api_version() -> String {
    crate::API_VERSION.to_string()
}

fn default_task_kind() -> String {
    "Task".to_string()
}

/// What the user wants run and where.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The command and its arguments, run without a shell (write `[sh, -c, "…"]` for one).
    pub command: Vec<String>,
    /// A registry image, used when present locally and pulled otherwise. Not with `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A named environment: image `kohakuriver/NAME:base`, loaded from shared storage when
    /// missing. Not with `image`. With neither, the server's default image is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Environment variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container; default `/shared` when the node has shared
    /// storage, else `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Cores, memory and GPUs the task needs.
    #[serde(default)]
    pub resources: Resources,
    /// Where the task may or must run.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Extra bind mounts, `HOST:CONTAINER[:ro|rw]`, both absolute paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// Run the container with `--privileged`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// The desired state: `Running` (default), `Paused` or `Killed`.
    #[serde(default)]
    pub state: DesiredState,
    /// Higher runs first when the cluster is full; default 0.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// How many times to run the task again after it fails (or its node is lost).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    /// Deadline for the whole task, counted from submission; past it the task is killed with
    /// reason `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Delete the task this long after it finished; by default finished tasks are kept so
    /// their logs stay readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
    /// When the task is killed: seconds between SIGTERM and SIGKILL (0 kills at once).
    /// Without it the node's `--kill-grace` (10 s by default) applies. At most 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_seconds: Option<u64>,
    /// Tasks that must end first (Slurm's `--dependency`): the task stays Pending with
    /// reason `WaitingForDependencies` until each has ended as its `condition` asks, and
    /// ends Failed with reason `DependencyFailed` when one never can. Each must exist when
    /// it is named; a cycle is refused. Cannot change once the task was scheduled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Cores, memory and GPUs a task needs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Whole CPU cores, pinned exclusively; 0 means no limit and not counted. Default 1.
    #[serde(default = "default_cpu")]
    pub cpu: u32,
    /// Memory limit: `512M`, `8G` (powers of ten), `4Gi` (powers of two) or plain bytes.
    /// None means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// How many GPUs; the scheduler picks which unless `placement.gpuIds` names them.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gpus: u32,
}

fn default_cpu() -> u32 {
    1
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: None,
            gpus: 0,
        }
    }
}

/// Where a task may or must run. `kohakuriver task submit -t host:numa::gpus` fills it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Run on exactly this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Take every core (and the memory) from this NUMA node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<u32>,
    /// Exactly these GPU indices (needs `node`); implies `resources.gpus` = their count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_ids: Option<Vec<u32>>,
    /// Only nodes whose labels include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

impl Placement {
    /// True when nothing constrains placement.
    pub fn is_empty(&self) -> bool {
        *self == Placement::default()
    }
}

/// What the user wants the task to be doing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DesiredState {
    /// Run (or keep running) the command.
    #[default]
    Running,
    /// Freeze the container (`docker pause`).
    Paused,
    /// Stop it: SIGTERM, then SIGKILL after a grace period.
    Killed,
}

impl std::fmt::Display for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DesiredState::Running => "Running",
            DesiredState::Paused => "Paused",
            DesiredState::Killed => "Killed",
        })
    }
}

/// Where a task is in its life, as users see it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TaskPhase {
    /// Waiting for a node (queued).
    #[default]
    Pending,
    /// Bound to a node, container not yet running (pulling, creating).
    Assigned,
    /// The container runs.
    Running,
    /// The container is frozen.
    Paused,
    /// Its node stopped answering while it ran, and no retry is left: its container may still
    /// run, so it keeps its cores, GPUs and memory there. The node's agent reports the real
    /// outcome when it comes back; it becomes Lost if the node is deleted or stays away past
    /// the controllers' `--lost-after`.
    Unknown,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, could not start, or ran past its deadline.
    Failed,
    /// Killed on request.
    Killed,
    /// Its node stopped answering and no retry is left.
    Lost,
}

impl TaskPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [TaskPhase; 9] = [
        TaskPhase::Pending,
        TaskPhase::Assigned,
        TaskPhase::Running,
        TaskPhase::Paused,
        TaskPhase::Unknown,
        TaskPhase::Succeeded,
        TaskPhase::Failed,
        TaskPhase::Killed,
        TaskPhase::Lost,
    ];

    /// True for phases a task never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Killed | TaskPhase::Lost
        )
    }

    /// The phase's name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskPhase::Pending => "Pending",
            TaskPhase::Assigned => "Assigned",
            TaskPhase::Running => "Running",
            TaskPhase::Paused => "Paused",
            TaskPhase::Unknown => "Unknown",
            TaskPhase::Succeeded => "Succeeded",
            TaskPhase::Failed => "Failed",
            TaskPhase::Killed => "Killed",
            TaskPhase::Lost => "Lost",
        }
    }

    /// Parses a phase name, case-insensitively, also accepting KohakuRiver's words
    /// (`completed`, `assigning`, `killed_oom`…).
    pub fn parse(s: &str) -> Option<TaskPhase> {
        let lower = s.to_ascii_lowercase();
        let phase = match lower.as_str() {
            "pending" => TaskPhase::Pending,
            "assigned" | "assigning" => TaskPhase::Assigned,
            "running" => TaskPhase::Running,
            "paused" => TaskPhase::Paused,
            "unknown" => TaskPhase::Unknown,
            "succeeded" | "completed" => TaskPhase::Succeeded,
            "failed" | "killed_oom" => TaskPhase::Failed,
            "killed" => TaskPhase::Killed,
            "lost" => TaskPhase::Lost,
            _ => return None,
        };
        Some(phase)
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the cluster did with the task so far.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskStatus {
    /// Where the task is in its life.
    #[serde(default)]
    pub phase: TaskPhase,
    /// A CamelCase word for the last notable event: `Unschedulable`, `OOMKilled`, `Error`,
    /// `DeadlineExceeded`, `NodeLost`, `ImageNotFound`, `ImagePullFailed`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence explaining `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec generation the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The node the task is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The exact cores, NUMA node, GPUs and memory the scheduler reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// The Docker container running the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The command's exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// How many times the task was started (1 for the first run).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    /// Which binding of the task this is: the server counts every bind to a node (1 for
    /// the first) and stamps the count here, so each attempt has its own name. An agent's
    /// status write carries the binding it reports on, and a write for another one (a late
    /// report of an earlier attempt) is refused with 409 (see
    /// [`crate::precondition::check_status_precondition`]).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub binding: u32,
    /// When the server accepted the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Timestamp>,
    /// When the current attempt's container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the task reached a terminal phase (or the last attempt ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// While waiting to be retried: not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Timestamp>,
    /// `Scheduled`, `Running`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The exact resources reserved for a task on its node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allocation {
    /// Pinned cores as a cpuset list (`0-3,8`); empty when the task asked for no cores.
    #[serde(default)]
    pub cpus: String,
    /// The NUMA node the cores (and memory) come from, when they all come from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<u32>,
    /// GPU indices on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    /// Memory limit in bytes; none means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl Task {
    /// Attempts made so far, counting an attempt that ended before its container started
    /// (`startedAt` unset: it was never counted by an agent).
    pub fn attempts_made(&self) -> u32 {
        if self.status.started_at.is_none() {
            self.status.attempts + 1
        } else {
            self.status.attempts.max(1)
        }
    }

    /// True when this task's attempt, should it end now, may run again: retries remain,
    /// the user did not kill it, it did not run past its deadline or fail for a dependency,
    /// and it is not being deleted. The controllers re-queue by this rule and a partitioned agent fences by it,
    /// so both sides agree on which containers must stop.
    pub fn may_retry(&self) -> bool {
        !self.metadata.is_deleting()
            && self.spec.state != DesiredState::Killed
            && self.status.reason.as_deref() != Some("DeadlineExceeded")
            && self.status.reason.as_deref() != Some(crate::dependency::DEPENDENCY_FAILED)
            && self.attempts_made() <= self.spec.retries
    }

    /// A task with this name and command and default everything else.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Task {
        Task {
            api_version: default_api_version(),
            kind: default_task_kind(),
            metadata: ObjectMeta::named(name),
            spec: TaskSpec {
                command,
                ..Default::default()
            },
            status: TaskStatus::default(),
        }
    }

    /// True when the task holds (or may still hold) resources on its node: bound and not
    /// terminal. A task being killed still holds them until its container is gone.
    pub fn holds_allocation(&self) -> bool {
        self.status.node.is_some()
            && self.status.allocation.is_some()
            && !self.status.phase.is_terminal()
    }

    /// GPUs the task needs: the named ids' count when given, else `resources.gpus`.
    pub fn gpu_count(&self) -> u32 {
        match &self.spec.placement.gpu_ids {
            Some(ids) => ids.len() as u32,
            None => self.spec.resources.gpus,
        }
    }
}

impl Resource for Task {
    const KIND: &'static str = "Task";
    const PLURAL: &'static str = "tasks";
    const SINGULAR: &'static str = "task";
    const SHORT_NAMES: &'static [&'static str] = &["tk"];
    const CATEGORIES: &'static [&'static str] = &["all", "kohakuriver"];
    const SUBRESOURCES: &'static [Subresource] = &[
        STATUS_SUBRESOURCE,
        Subresource {
            name: "log",
            verbs: &["get"],
        },
    ];
    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "metadata.name",
        "metadata.owner",
        "status.node",
        "status.phase",
        "spec.state",
    ];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "metadata.name" => Some(self.metadata.name.clone()),
            "metadata.owner" => Some(self.metadata.owner.clone().unwrap_or_default()),
            "status.node" => Some(self.status.node.clone().unwrap_or_default()),
            "status.phase" => Some(self.status.phase.to_string()),
            "spec.state" => Some(self.spec.state.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_parse_accepts_kohakuriver_words() {
        assert_eq!(TaskPhase::parse("completed"), Some(TaskPhase::Succeeded));
        assert_eq!(TaskPhase::parse("RUNNING"), Some(TaskPhase::Running));
        assert_eq!(TaskPhase::parse("assigning"), Some(TaskPhase::Assigned));
        assert_eq!(TaskPhase::parse("nope"), None);
    }

    #[test]
    fn minimal_yaml_gets_defaults() {
        let t: Task = serde_yaml::from_str(
            "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec: {command: [echo, hi]}\n",
        )
        .unwrap();
        assert_eq!(t.spec.resources.cpu, 1);
        assert_eq!(t.spec.state, DesiredState::Running);
        assert_eq!(t.status.phase, TaskPhase::Pending);
    }
}
