//! `kohakuriver describe task|taskgroup|node NAME`: one object in a readable, multi-line form.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use kohakuriver_api::quantity::format_bytes;
use kohakuriver_api::{
    Condition, DependencyCondition, Node, ObjectMeta, Task, TaskGroup, Timestamp,
};
use kohakuriver_client::Client;

use crate::cmd::describe_group::describe_group;
use crate::kind::{Kind, split_kind_name};
use crate::output::{Table, age};
use crate::rows::{allocation_summary, node_status, task_image};

/// Options of `kohakuriver describe`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver describe task train-resnet
  kohakuriver describe node gpu-01
  kohakuriver describe tg sweep")]
pub struct Args {
    /// `task`, `taskgroup` (`tg`) or `node` (or `task/NAME`).
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// The object's name.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

/// Prints the object.
pub async fn run(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let (kind, name) = match split_kind_name(&args.kind) {
        Some((kind, name)) => (kind, name.to_string()),
        None => {
            let kind = args.kind.parse::<Kind>().map_err(anyhow::Error::msg)?;
            let name = args.name.ok_or_else(|| {
                anyhow::anyhow!(
                    "describe needs a NAME, e.g. `kohakuriver describe {} my-name`",
                    args.kind
                )
            })?;
            (kind, name)
        }
    };
    let now = chrono::Utc::now();
    let text = match kind {
        Kind::Task => {
            let task = client.api::<Task>().get(&name).await?;
            describe_task(&task, now) + &super::events::section(client, &task, now).await
        }
        Kind::Node => {
            let node = client.api::<Node>().get(&name).await?;
            describe_node(&node, now) + &super::events::section(client, &node, now).await
        }
        Kind::TaskGroup => describe_group(&client.api::<TaskGroup>().get(&name).await?, now),
        Kind::Event => anyhow::bail!(
            "describe shows tasks, task groups and nodes (with their events); for one event: kohakuriver get event {name} -o yaml"
        ),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Label and value lines, labels padded to one width.
pub(crate) struct Section {
    pub(crate) out: String,
    pub(crate) indent: usize,
}

const LABEL_WIDTH: usize = 16;

impl Section {
    pub(crate) fn new() -> Section {
        Section {
            out: String::new(),
            indent: 0,
        }
    }

    pub(crate) fn line(&mut self, label: &str, value: impl std::fmt::Display) {
        // A label longer than the column still gets a space before its value.
        let pad = LABEL_WIDTH.saturating_sub(self.indent).max(label.len() + 2);
        let _ = writeln!(
            self.out,
            "{:indent$}{:<pad$}{value}",
            "",
            format!("{label}:"),
            indent = self.indent
        );
    }

    pub(crate) fn opt(&mut self, label: &str, value: Option<impl std::fmt::Display>) {
        if let Some(v) = value {
            self.line(label, v);
        }
    }

    pub(crate) fn heading(&mut self, title: &str) {
        let _ = writeln!(self.out, "{:indent$}{title}:", "", indent = self.indent);
    }

    pub(crate) fn map(&mut self, label: &str, map: &BTreeMap<String, String>) {
        if map.is_empty() {
            self.line(label, "<none>");
            return;
        }
        let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.line(label, pairs.join(", "));
    }

    pub(crate) fn when(&mut self, label: &str, t: Option<Timestamp>, now: Timestamp) {
        if let Some(t) = t {
            self.line(
                label,
                format!(
                    "{} ({} ago)",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    age(Some(t), now)
                ),
            );
        }
    }
}

pub(crate) fn metadata(s: &mut Section, meta: &ObjectMeta, now: Timestamp) {
    s.line("Name", &meta.name);
    s.opt("Owner", meta.owner.as_deref());
    s.map("Labels", &meta.labels);
    s.map("Annotations", &meta.annotations);
    s.opt("UID", meta.uid.as_deref());
    s.when("Created", meta.creation_timestamp, now);
    if let Some(t) = meta.deletion_timestamp {
        s.line("Deleting since", format!("{} ago", age(Some(t), now)));
    }
    if !meta.finalizers.is_empty() {
        s.line("Finalizers", meta.finalizers.join(", "));
    }
    s.opt("Generation", meta.generation);
    s.opt("Version", meta.resource_version);
}

pub(crate) fn conditions(s: &mut Section, conditions: &[Condition], now: Timestamp) {
    s.heading("Conditions");
    if conditions.is_empty() {
        s.out.push_str("  <none>\n");
        return;
    }
    let mut t = Table::new(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
    for c in conditions {
        t.push(vec![
            c.type_.clone(),
            c.status.to_string(),
            c.reason.clone().unwrap_or_else(|| "-".into()),
            age(c.last_transition_time, now),
            c.message.clone().unwrap_or_default(),
        ]);
    }
    for line in t.render().lines() {
        let _ = writeln!(s.out, "  {line}");
    }
}

/// The detail view of a task.
pub fn describe_task(task: &Task, now: Timestamp) -> String {
    let mut s = Section::new();
    metadata(&mut s, &task.metadata, now);
    let spec = &task.spec;
    s.heading("Spec");
    s.indent = 2;
    s.line("Command", shell_words(&spec.command));
    s.line("Image", task_image(task));
    if !spec.env.is_empty() {
        s.map("Env", &spec.env);
    }
    s.opt("Working dir", spec.working_dir.as_deref());
    let mut resources = format!("cpu {}", spec.resources.cpu);
    if let Some(m) = &spec.resources.memory {
        let _ = write!(resources, ", memory {m}");
    }
    if task.gpu_count() > 0 {
        let _ = write!(resources, ", gpus {}", task.gpu_count());
    }
    s.line("Resources", resources);
    let p = &spec.placement;
    if !p.is_empty() {
        let mut parts = Vec::new();
        if let Some(n) = &p.node {
            parts.push(format!("node {n}"));
        }
        if let Some(n) = p.numa {
            parts.push(format!("numa {n}"));
        }
        if let Some(ids) = &p.gpu_ids {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            parts.push(format!("gpus {}", ids.join(",")));
        }
        for (k, v) in &p.node_selector {
            parts.push(format!("{k}={v}"));
        }
        s.line("Placement", parts.join(", "));
    }
    if !spec.mounts.is_empty() {
        s.line("Mounts", spec.mounts.join(", "));
    }
    if spec.privileged {
        s.line("Privileged", "true");
    }
    s.line("Desired state", spec.state);
    if spec.priority != 0 {
        s.line("Priority", spec.priority);
    }
    if spec.retries != 0 {
        s.line("Retries", spec.retries);
    }
    s.opt("Timeout", spec.timeout_seconds.map(|t| format!("{t}s")));
    s.opt(
        "TTL",
        spec.ttl_seconds_after_finished
            .map(|t| format!("{t}s after finishing")),
    );
    if !spec.depends_on.is_empty() {
        let deps: Vec<String> = spec
            .depends_on
            .iter()
            .map(|d| match d.condition {
                DependencyCondition::Succeeded => format!("{} (to succeed)", d.name),
                DependencyCondition::Finished => format!("{} (to finish)", d.name),
            })
            .collect();
        s.line("Depends on", deps.join(", "));
    }

    let st = &task.status;
    s.indent = 0;
    s.heading("Status");
    s.indent = 2;
    s.line("Phase", st.phase);
    s.opt("Reason", st.reason.as_deref());
    s.opt("Message", st.message.as_deref());
    s.opt("Node", st.node.as_deref());
    s.opt("Allocation", st.allocation.as_ref().map(allocation_summary));
    s.opt(
        "Container",
        st.container_id.as_deref().map(|id| &id[..id.len().min(12)]),
    );
    s.opt(
        "Exit code",
        st.exit_code
            .map(|code| match crate::cmd::task::signal_meaning(code) {
                Some(meaning) => format!("{code} ({meaning})"),
                None => code.to_string(),
            }),
    );
    if st.attempts > 0 {
        s.line("Attempts", st.attempts);
    }
    s.when("Submitted", st.submitted_at, now);
    s.when("Started", st.started_at, now);
    s.when("Finished", st.finished_at, now);
    s.when("Retry after", st.retry_after, now);
    s.indent = 0;
    conditions(&mut s, &st.conditions, now);
    s.out
}

/// The detail view of a node.
pub fn describe_node(node: &Node, now: Timestamp) -> String {
    let mut s = Section::new();
    metadata(&mut s, &node.metadata, now);
    let st = &node.status;
    s.line("Status", node_status(node));
    s.opt("Address", st.address.as_deref());
    s.opt("Agent version", st.agent_version.as_deref());
    s.opt("Docker version", st.docker_version.as_deref());
    s.line(
        "Shared storage",
        if st.shared_storage { "yes" } else { "no" },
    );
    s.line(
        "Heartbeat",
        match st.last_heartbeat {
            Some(t) => format!("{} ago", age(Some(t), now)),
            None => "never".to_string(),
        },
    );
    let res = |r: &kohakuriver_api::NodeResources| {
        format!(
            "cpu {}, memory {}, gpus {}",
            r.cpu,
            format_bytes(r.memory_bytes),
            r.gpus
        )
    };
    s.line("Capacity", res(&st.capacity));
    s.line("Allocatable", res(&st.allocatable));
    if let Some(u) = &st.usage {
        s.line(
            "Usage",
            format!(
                "cpu {:.0}%, memory {}, {} running tasks",
                u.cpu_percent,
                format_bytes(u.memory_used_bytes),
                u.running_tasks
            ),
        );
    }
    s.heading("NUMA");
    if st.numa.is_empty() {
        s.out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["ID", "CPUS", "MEMORY"]);
        for n in &st.numa {
            t.push(vec![
                n.id.to_string(),
                n.cpus.clone(),
                format_bytes(n.memory_bytes),
            ]);
        }
        indented(&mut s.out, &t);
    }
    s.heading("GPUs");
    if st.gpus.is_empty() {
        s.out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["INDEX", "NAME", "MEMORY", "NUMA", "HEALTHY", "UUID"]);
        for g in &st.gpus {
            t.push(vec![
                g.index.to_string(),
                g.name.clone(),
                format_bytes(g.memory_bytes),
                g.numa.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                if g.healthy { "yes" } else { "no" }.to_string(),
                g.uuid.clone(),
            ]);
        }
        indented(&mut s.out, &t);
    }
    conditions(&mut s, &st.conditions, now);
    s.out
}

fn indented(out: &mut String, table: &Table) {
    for line in table.render().lines() {
        let _ = writeln!(out, "  {line}");
    }
}

/// The command as a shell would need it typed: arguments with spaces or quotes are quoted.
pub(crate) fn shell_words(argv: &[String]) -> String {
    let quote = |a: &String| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn task_view_has_spec_status_and_conditions() {
        let mut t = Task::test("train")
            .cpu(4)
            .memory("8G")
            .gpus(2)
            .bound("n1", "0-3", &[0, 1]);
        t.spec.command = vec!["sh".into(), "-c".into(), "echo 'hi'".into()];
        t.metadata.owner = Some("alice".into());
        t.status.conditions.push(Condition {
            type_: "Scheduled".into(),
            status: kohakuriver_api::ConditionStatus::True,
            reason: Some("Bound".into()),
            message: Some("placed on n1".into()),
            last_transition_time: chrono::DateTime::from_timestamp(1_000_000 - 300, 0),
            observed_generation: None,
        });
        let text = describe_task(&t, now());
        for want in [
            "Name:           train\nOwner:          alice\n",
            "  Command:      sh -c 'echo '\\''hi'\\'''\n",
            "  Resources:    cpu 4, memory 8G, gpus 2\n",
            "  Phase:        Running\n",
            "  Allocation:   cpus 0-3 gpus 0,1 mem 8G\n",
            "Conditions:\n  TYPE        STATUS   REASON   AGE   MESSAGE\n  Scheduled   True     Bound    5m    placed on n1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn node_view_lists_numa_and_gpus() {
        let n = Node::test("a").numa(2).cores(8).gpus(2);
        let text = describe_node(&n, now());
        assert!(text.contains("Status:         Ready\n"), "{text}");
        assert!(
            text.contains("NUMA:\n  ID   CPUS   MEMORY\n  0    0-3    32G\n"),
            "{text}"
        );
        assert!(text.contains("GPUs:\n  INDEX"), "{text}");
    }
}
