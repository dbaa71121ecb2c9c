//! Table columns of each kind, as `get` prints them.

use kohakuriver_api::meta::find_condition;
use kohakuriver_api::quantity::format_bytes;
use kohakuriver_api::{Allocation, ConditionStatus, Node, Resource, Task, Timestamp};

use crate::output::{age, truncate};

/// A kind that `get` can show as a table.
pub trait Columns: Resource {
    /// The header row; `wide` adds columns.
    fn header(wide: bool) -> Vec<&'static str>;
    /// One row; same length as the header.
    fn row(&self, wide: bool, now: Timestamp) -> Vec<String>;
}

impl Columns for Task {
    fn header(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "PHASE", "NODE", "CPUS", "GPUS", "AGE"];
        if wide {
            h.extend(["OWNER", "IMAGE", "ALLOCATION", "REASON", "COMMAND"]);
        }
        h
    }

    fn row(&self, wide: bool, now: Timestamp) -> Vec<String> {
        let mut row = vec![
            self.metadata.name.clone(),
            task_phase(self),
            or_dash(self.status.node.as_deref()),
            self.spec.resources.cpu.to_string(),
            self.gpu_count().to_string(),
            age(self.metadata.creation_timestamp, now),
        ];
        if wide {
            row.push(or_dash(self.metadata.owner.as_deref()));
            row.push(task_image(self));
            row.push(
                self.status
                    .allocation
                    .as_ref()
                    .map(allocation_summary)
                    .unwrap_or_else(|| "-".to_string()),
            );
            row.push(or_dash(self.status.reason.as_deref()));
            row.push(truncate(&self.spec.command.join(" "), 50));
        }
        row
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

impl Columns for Node {
    fn header(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "STATUS", "CPUS", "MEMORY", "GPUS", "AGE"];
        if wide {
            h.extend(["NUMA", "HEARTBEAT", "VERSION"]);
        }
        h
    }

    fn row(&self, wide: bool, now: Timestamp) -> Vec<String> {
        let alloc = &self.status.allocatable;
        let mut row = vec![
            self.metadata.name.clone(),
            node_status(self),
            alloc.cpu.to_string(),
            format_bytes(alloc.memory_bytes),
            alloc.gpus.to_string(),
            age(self.metadata.creation_timestamp, now),
        ];
        if wide {
            row.push(self.status.numa.len().to_string());
            row.push(match self.status.last_heartbeat {
                Some(t) => format!("{} ago", age(Some(t), now)),
                None => "never".to_string(),
            });
            row.push(or_dash(self.status.agent_version.as_deref()));
        }
        row
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn task_rows() {
        let mut t = Task::test("train").cpu(4).gpus(2);
        t.metadata.creation_timestamp = chrono::DateTime::from_timestamp(1_000_000 - 90, 0);
        assert_eq!(
            t.row(false, now()),
            ["train", "Pending", "-", "4", "2", "90s"]
        );
        let mut t = t.bound("n1", "0-3", &[0, 1]);
        let wide = t.row(true, now());
        assert_eq!(Task::header(true).len(), wide.len());
        assert_eq!(wide[2], "n1");
        assert_eq!(wide[6], "-");
        assert_eq!(wide[7], "<default>");
        assert_eq!(wide[8], "cpus 0-3 gpus 0,1");
        assert_eq!(wide[10], "true");
        t.metadata.owner = Some("alice".into());
        assert_eq!(Task::header(true)[6], "OWNER");
        assert_eq!(t.row(true, now())[6], "alice");
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
        let row = n.row(true, now());
        assert_eq!(Node::header(true).len(), row.len());
        assert_eq!(row[1], "Ready");
        assert_eq!(row[2], "8");
        assert_eq!(row[4], "4");
        assert_eq!(
            node_status(&Node::test("b").cordoned().not_ready()),
            "NotReady,SchedulingDisabled"
        );
    }
}
