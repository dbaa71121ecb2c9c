//! The columns each kind shows in a table, and the cells of one object's row.
//!
//! One definition serves both tables: `kohakuriver get` renders it as text, and the API
//! server sends it to kubectl as a `meta.k8s.io/v1` `Table` (see [`crate::table`]), so the
//! two cannot drift. Columns of priority 0 are the default ones; priority 1 columns appear
//! only with `-o wide`, as in Kubernetes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::group::TaskGroup;
use crate::meta::{Timestamp, find_condition};
use crate::quantity::format_bytes;
use crate::resource::Resource;
use crate::task::{Allocation, Task};
use crate::{ConditionStatus, Node};

/// One column of a kind's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name as Kubernetes spells it (`Name`, `CPUs`); printers upper-case it.
    pub name: &'static str,
    /// The OpenAPI type of its cells: `string` or `integer`.
    pub type_: &'static str,
    /// The OpenAPI format: `name` for the object's name column, else empty.
    pub format: &'static str,
    /// What the column shows, for people.
    pub description: &'static str,
    /// 0: shown by default; 1: only with `-o wide`.
    pub priority: u8,
}

const fn column(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: if matches!(name.as_bytes(), b"Name") {
            "name"
        } else {
            ""
        },
        description,
        priority,
    }
}

/// One cell: a number for counts, text for everything else.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Cell {
    /// A count (cores, GPUs).
    Integer(i64),
    /// Anything else.
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Integer(n) => write!(f, "{n}"),
            Cell::Text(s) => f.write_str(s),
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<u32> for Cell {
    fn from(n: u32) -> Cell {
        Cell::Integer(i64::from(n))
    }
}

/// A kind that can be shown as a table.
pub trait Tabular: Resource {
    /// Every column, default ones (priority 0) and wide ones (priority 1), in order.
    const COLUMNS: &'static [Column];

    /// One cell per column of [`Tabular::COLUMNS`]; `now` is the clock for ages.
    fn cells(&self, now: Timestamp) -> Vec<Cell>;
}

/// The names of the columns shown, upper-cased as printers show them; `wide` adds the
/// priority 1 columns.
pub fn header<R: Tabular>(wide: bool) -> Vec<String> {
    R::COLUMNS
        .iter()
        .filter(|c| wide || c.priority == 0)
        .map(|c| c.name.to_uppercase())
        .collect()
}

/// The cells of `object` shown for `wide`, as text.
pub fn text_row<R: Tabular>(object: &R, wide: bool, now: Timestamp) -> Vec<String> {
    R::COLUMNS
        .iter()
        .zip(object.cells(now))
        .filter(|(c, _)| wide || c.priority == 0)
        .map(|(_, cell)| cell.to_string())
        .collect()
}

impl Tabular for Task {
    const COLUMNS: &'static [Column] = &[
        column("Name", "string", 0, "The task's name."),
        column(
            "Phase",
            "string",
            0,
            "Where the task is in its lifecycle (status.phase); (deleting) while finalizers hold it.",
        ),
        column(
            "Node",
            "string",
            0,
            "The node it is bound to (status.node).",
        ),
        column(
            "CPUs",
            "integer",
            0,
            "CPU cores asked (spec.resources.cpu).",
        ),
        column(
            "GPUs",
            "integer",
            0,
            "GPUs asked (spec.resources.gpus, or the count of spec.placement.gpuIds).",
        ),
        column("Age", "string", 0, "Time since the task was created."),
        column("Owner", "string", 1, "Who created it (metadata.owner)."),
        column(
            "Image",
            "string",
            1,
            "The image (spec.image), env:NAME for a container environment, or <default>.",
        ),
        column(
            "Allocation",
            "string",
            1,
            "The cores, NUMA node, GPUs and memory it holds (status.allocation).",
        ),
        column(
            "IdleGPU",
            "string",
            1,
            "True when the task has held GPUs under 5% utilisation for 10 minutes (condition GPUIdle, set by its agent).",
        ),
        column(
            "Exit",
            "string",
            1,
            "The container's exit code (status.exitCode).",
        ),
        column(
            "Reason",
            "string",
            1,
            "Why it is in its phase (status.reason).",
        ),
        column(
            "Command",
            "string",
            1,
            "The command (spec.command), shortened.",
        ),
    ];

    fn cells(&self, now: Timestamp) -> Vec<Cell> {
        vec![
            self.metadata.name.clone().into(),
            task_phase(self).into(),
            or_dash(self.status.node.as_deref()).into(),
            self.spec.resources.cpu.into(),
            self.gpu_count().into(),
            age(self.metadata.creation_timestamp, now).into(),
            or_dash(self.metadata.owner.as_deref()).into(),
            task_image(self).into(),
            self.status
                .allocation
                .as_ref()
                .map(allocation_summary)
                .unwrap_or_else(|| "-".to_string())
                .into(),
            idle_gpu(self).into(),
            self.status
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".to_string())
                .into(),
            or_dash(self.status.reason.as_deref()).into(),
            truncate(&self.spec.command.join(" "), 50).into(),
        ]
    }
}

/// `True` while the task's agent says its GPUs sit idle (condition `GPUIdle` True), else `-`.
fn idle_gpu(task: &Task) -> String {
    match find_condition(&task.status.conditions, crate::usage::GPU_IDLE_CONDITION) {
        Some(c) if c.status == ConditionStatus::True => "True".to_string(),
        _ => "-".to_string(),
    }
}

impl Tabular for Node {
    const COLUMNS: &'static [Column] = &[
        column("Name", "string", 0, "The node's name (its host name)."),
        column(
            "Status",
            "string",
            0,
            "Ready, NotReady or Unknown (the Ready condition), plus SchedulingDisabled when cordoned.",
        ),
        column(
            "CPUs",
            "integer",
            0,
            "CPU cores tasks may use (status.allocatable.cpu).",
        ),
        column(
            "Memory",
            "string",
            0,
            "Memory tasks may use (status.allocatable.memoryBytes).",
        ),
        column(
            "GPUs",
            "integer",
            0,
            "GPUs tasks may use (status.allocatable.gpus).",
        ),
        column("Age", "string", 0, "Time since the node registered."),
        column("NUMA", "integer", 1, "NUMA nodes (status.numa)."),
        column(
            "Address",
            "string",
            1,
            "The agent's endpoint (status.address).",
        ),
        column(
            "Heartbeat",
            "string",
            1,
            "Time since the agent last reported (status.lastHeartbeat).",
        ),
        column(
            "Version",
            "string",
            1,
            "The agent's version (status.agentVersion).",
        ),
    ];

    fn cells(&self, now: Timestamp) -> Vec<Cell> {
        let alloc = &self.status.allocatable;
        vec![
            self.metadata.name.clone().into(),
            node_status(self).into(),
            alloc.cpu.into(),
            format_bytes(alloc.memory_bytes).into(),
            alloc.gpus.into(),
            age(self.metadata.creation_timestamp, now).into(),
            (self.status.numa.len() as u32).into(),
            or_dash(self.status.address.as_deref()).into(),
            match self.status.last_heartbeat {
                Some(t) => format!("{} ago", age(Some(t), now)),
                None => "never".to_string(),
            }
            .into(),
            or_dash(self.status.agent_version.as_deref()).into(),
        ]
    }
}

impl Tabular for TaskGroup {
    const COLUMNS: &'static [Column] = &[
        column("Name", "string", 0, "The group's name."),
        column(
            "Status",
            "string",
            0,
            "Complete, Failed, Killed, Running, or Waiting before the controller started it.",
        ),
        column(
            "Succeeded",
            "string",
            0,
            "Members succeeded out of all (status.counts.succeeded / status.total).",
        ),
        column(
            "Running",
            "integer",
            0,
            "Members created and not finished (pending, assigned, running, paused, unknown).",
        ),
        column(
            "Failed",
            "integer",
            0,
            "Members that ended without success (failed, killed, lost).",
        ),
        column("Age", "string", 0, "Time since the group was created."),
        column(
            "Parallelism",
            "string",
            1,
            "The most members unfinished at once (spec.parallelism), or all.",
        ),
        column("Indexes", "string", 1, "The index set (spec.indexes)."),
        column("Owner", "string", 1, "Who created it (metadata.owner)."),
        column(
            "Command",
            "string",
            1,
            "The template's command (spec.template.spec.command), shortened.",
        ),
    ];

    fn cells(&self, now: Timestamp) -> Vec<Cell> {
        let counts = &self.status.counts;
        vec![
            self.metadata.name.clone().into(),
            group_status(self).into(),
            format!("{}/{}", counts.succeeded, self.status.total).into(),
            counts.unfinished().into(),
            counts.failures().into(),
            age(self.metadata.creation_timestamp, now).into(),
            self.spec
                .parallelism
                .map_or_else(|| "all".to_string(), |p| p.to_string())
                .into(),
            truncate(&self.spec.indexes, 30).into(),
            or_dash(self.metadata.owner.as_deref()).into(),
            truncate(&self.spec.template.spec.command.join(" "), 50).into(),
        ]
    }
}

/// A group's state in one word: `Complete`, `Failed`, `Killed`, `Running` or `Waiting`
/// (not yet started by the controller), with `(deleting)` while it is being deleted.
pub fn group_status(group: &TaskGroup) -> String {
    let word = if group.condition_holds("Complete") {
        "Complete"
    } else if group.condition_holds("Failed") {
        "Failed"
    } else if group.spec.state == crate::group::GroupState::Killed {
        "Killed"
    } else if group.status.started_at.is_some() {
        "Running"
    } else {
        "Waiting"
    };
    if group.metadata.is_deleting() {
        format!("{word} (deleting)")
    } else {
        word.to_string()
    }
}

/// The phase, with `(deleting)` while finalizers hold a deleted task.
fn task_phase(task: &Task) -> String {
    let phase = task.status.phase.to_string();
    if task.metadata.is_deleting() {
        format!("{phase} (deleting)")
    } else {
        phase
    }
}

/// `ubuntu:22.04`, `env:my-pytorch` for a named container environment, or `<default>`.
pub fn task_image(task: &Task) -> String {
    match (&task.spec.image, &task.spec.container) {
        (Some(image), _) => image.clone(),
        (None, Some(env)) => format!("env:{env}"),
        (None, None) => "<default>".to_string(),
    }
}

/// `cpus 0-3 numa 0 gpus 0,1 mem 8G`, leaving out what is not set.
pub fn allocation_summary(a: &Allocation) -> String {
    let mut parts = Vec::new();
    if !a.cpus.is_empty() {
        parts.push(format!("cpus {}", a.cpus));
    }
    if let Some(numa) = a.numa {
        parts.push(format!("numa {numa}"));
    }
    if !a.gpus.is_empty() {
        let ids: Vec<String> = a.gpus.iter().map(u32::to_string).collect();
        parts.push(format!("gpus {}", ids.join(",")));
    }
    if let Some(bytes) = a.memory_bytes {
        parts.push(format!("mem {}", format_bytes(bytes)));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

/// `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Node) -> String {
    let ready = match find_condition(&node.status.conditions, "Ready").map(|c| c.status) {
        Some(ConditionStatus::True) => "Ready",
        Some(ConditionStatus::False) => "NotReady",
        _ => "Unknown",
    };
    let mut status = ready.to_string();
    if node.spec.unschedulable {
        status.push_str(",SchedulingDisabled");
    }
    if node.metadata.is_deleting() {
        status.push_str(",Deleting");
    }
    status
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// A duration as kubectl shows ages (apimachinery's `duration.HumanDuration`): `45s`,
/// `5m30s`, `42m`, `5h30m`, `30h`, `3d4h`, `12d`, `2y5d`, `9y`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return match s % 60 {
            0 => format!("{minutes}m"),
            sec => format!("{minutes}m{sec}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// How long ago `t` was, for an AGE column, as kubectl prints it: `<unknown>` when not set,
/// `<invalid>` when more than a second in the future (clock skew up to that reads `0s`).
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else {
        return "<unknown>".to_string();
    };
    let elapsed = now - t;
    if elapsed.num_seconds() < -1 {
        return "<invalid>".to_string();
    }
    human_duration(elapsed.to_std().unwrap_or_default())
}

/// Shortens `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    fn ago(seconds: i64) -> Option<Timestamp> {
        chrono::DateTime::from_timestamp(1_000_000 - seconds, 0)
    }

    #[test]
    fn ages_like_kubectl() {
        let check = |s: u64, want: &str| assert_eq!(human_duration(Duration::from_secs(s)), want);
        check(0, "0s");
        check(119, "119s");
        check(120, "2m");
        check(303, "5m3s");
        check(330, "5m30s");
        check(2520, "42m");
        check(3 * 3600, "3h");
        check(5 * 3600 + 1800, "5h30m");
        check(30 * 3600, "30h");
        check(2 * 86_400, "2d");
        check(3 * 86_400 + 4 * 3600, "3d4h");
        check(12 * 86_400, "12d");
        check(730 * 86_400, "2y");
        check(735 * 86_400, "2y5d");
        check(9 * 365 * 86_400, "9y");
    }

    #[test]
    fn ages_of_unset_and_future_times() {
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(ago(-1), now()), "0s");
        assert_eq!(age(ago(-100), now()), "<invalid>");
        assert_eq!(age(ago(90), now()), "90s");
    }

    #[test]
    fn every_row_has_a_cell_per_column() {
        let t = Task::test("t").bound("n1", "0-3", &[0]);
        assert_eq!(t.cells(now()).len(), Task::COLUMNS.len());
        let n = Node::test("a");
        assert_eq!(n.cells(now()).len(), Node::COLUMNS.len());
        let g = TaskGroup::new("g", Task::test("x").spec, "0-3");
        assert_eq!(g.cells(now()).len(), TaskGroup::COLUMNS.len());
        assert_eq!(text_row(&g, false, now())[..3], ["g", "Waiting", "0/0"]);
        assert_eq!(Task::COLUMNS[0].format, "name");
        assert_eq!(Task::COLUMNS[1].format, "");
    }

    #[test]
    fn task_rows() {
        let mut t = Task::test("train").cpu(4).gpus(2);
        t.metadata.creation_timestamp = ago(90);
        assert_eq!(
            header::<Task>(false),
            ["NAME", "PHASE", "NODE", "CPUS", "GPUS", "AGE"]
        );
        assert_eq!(
            text_row(&t, false, now()),
            ["train", "Pending", "-", "4", "2", "90s"]
        );
        let mut t = t.bound("n1", "0-3", &[0, 1]);
        t.status.exit_code = Some(3);
        t.metadata.owner = Some("alice".into());
        let wide: Vec<(String, String)> = header::<Task>(true)
            .into_iter()
            .zip(text_row(&t, true, now()))
            .collect();
        let cell = |name: &str| wide.iter().find(|(h, _)| h == name).unwrap().1.clone();
        assert_eq!(cell("NODE"), "n1");
        assert_eq!(cell("OWNER"), "alice");
        assert_eq!(cell("IMAGE"), "<default>");
        assert_eq!(cell("ALLOCATION"), "cpus 0-3 gpus 0,1");
        assert_eq!(cell("EXIT"), "3");
        assert_eq!(cell("REASON"), "-");
        assert_eq!(cell("COMMAND"), "true");
        assert_eq!(cell("IDLEGPU"), "-");
        for (status, want) in [
            (ConditionStatus::True, "True"),
            (ConditionStatus::False, "-"),
            (ConditionStatus::Unknown, "-"),
        ] {
            let mut idle = t.clone();
            crate::meta::set_condition(
                &mut idle.status.conditions,
                crate::usage::GPU_IDLE_CONDITION,
                status,
                Some("GPUIdle"),
                None,
                None,
                now(),
            );
            assert_eq!(idle_gpu(&idle), want, "{status:?}");
        }
        assert_eq!(t.cells(now())[3], Cell::Integer(4));
    }

    #[test]
    fn allocation_summaries() {
        let a = Allocation {
            cpus: "0-3".into(),
            numa: Some(1),
            gpus: vec![],
            memory_bytes: Some(8_000_000_000),
        };
        assert_eq!(allocation_summary(&a), "cpus 0-3 numa 1 mem 8G");
        assert_eq!(allocation_summary(&Allocation::default()), "-");
    }

    #[test]
    fn node_rows() {
        let n = Node::test("a").cores(8).gpus(4);
        assert_eq!(
            header::<Node>(false),
            ["NAME", "STATUS", "CPUS", "MEMORY", "GPUS", "AGE"]
        );
        let row = text_row(&n, true, now());
        assert_eq!(header::<Node>(true).len(), row.len());
        assert_eq!(row[1], "Ready");
        assert_eq!(row[2], "8");
        assert_eq!(row[4], "4");
        assert_eq!(
            node_status(&Node::test("b").cordoned().not_ready()),
            "NotReady,SchedulingDisabled"
        );
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo world", 5), "héll…");
    }
}
