//! `kohakuriver top nodes|tasks`: what nodes and running tasks use now, like `kubectl top`.
//!
//! Both read the Nodes' status: each agent measures its machine, its GPUs and its task
//! containers every `--usage-interval` and its heartbeat carries the last sample
//! (`status.usage`, tasks named by uid). `top tasks` joins that with the running tasks the
//! caller may see, so a task someone else owns under `--private-tasks` is never shown.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_api::quantity::format_bytes;
use kohakuriver_api::{GpuUsage, Node, Task, TaskUsage};
use kohakuriver_client::{Client, ListParams};

use crate::output::Table;

/// `kohakuriver top`.
#[derive(clap::Subcommand, Debug)]
pub enum TopCommand {
    /// CPU, memory and GPU use of each node.
    #[command(after_help = "Examples:
  kohakuriver top nodes
  kohakuriver top nodes gpu-01
  kohakuriver top nodes --sort-by gpu

Figures come from each agent's last usage sample (every --usage-interval, 10s by default),
carried by its heartbeat. CPU% is of the node's cores, MEMORY% of its memory, GPU% the mean
utilisation of its GPUs, GPU-MEMORY the device memory in use of all its GPUs.")]
    Nodes(NodesArgs),
    /// CPU, memory and GPU use of each running task.
    #[command(after_help = "Examples:
  kohakuriver top tasks
  kohakuriver top tasks train-42
  kohakuriver top tasks --node gpu-01 --sort-by cpu
  kohakuriver top tasks -l team=vision

CPU is in cores used (1500m is one and a half), CPU% of the cores the task holds, MEMORY%
of its memory limit (- without one), GPU% the mean utilisation of the GPUs it holds and
GPU-MEMORY their device memory in use. A task started since its agent's last sample shows
<unknown>. `get tasks -o wide` flags tasks whose GPUs sat under 5% for 10 minutes (IdleGPU).")]
    Tasks(TasksArgs),
}

/// What to sort rows by (largest first); by name when not given.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// CPU cores in use.
    Cpu,
    /// Memory in use.
    Memory,
    /// GPU utilisation.
    Gpu,
}

/// Options of `top nodes`.
#[derive(clap::Args, Debug)]
pub struct NodesArgs {
    /// Only this node.
    pub name: Option<String>,
    /// Sort by this figure, largest first.
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
}

/// Options of `top tasks`.
#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// Only this task.
    pub name: Option<String>,
    /// Only tasks on this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only tasks whose labels match this selector (`team=vision,tier!=batch`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Sort by this figure, largest first.
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
}

/// Runs `top`.
pub async fn run(client: &Client, command: TopCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopCommand::Nodes(args) => top_nodes(client, args).await,
        TopCommand::Tasks(args) => top_tasks(client, args).await,
    }
}

async fn top_nodes(client: &Client, args: NodesArgs) -> anyhow::Result<ExitCode> {
    let nodes = client.api::<Node>();
    let mut items = match &args.name {
        Some(name) => vec![
            nodes
                .get(name)
                .await
                .with_context(|| format!("cannot read node {name}"))?,
        ],
        None => {
            nodes
                .list(&ListParams::default())
                .await
                .context("cannot list nodes")?
                .items
        }
    };
    if items.is_empty() {
        eprintln!("no nodes have registered yet");
        return Ok(ExitCode::SUCCESS);
    }
    sort_nodes(&mut items, args.sort_by);
    let mut table = Table::new(&NODE_HEADER);
    for node in &items {
        table.push(node_row(node));
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

async fn top_tasks(client: &Client, args: TasksArgs) -> anyhow::Result<ExitCode> {
    let tasks = client.api::<Task>();
    let mut running = Vec::new();
    if let Some(name) = &args.name {
        let task = tasks
            .get(name)
            .await
            .with_context(|| format!("cannot read task {name}"))?;
        if !is_alive(&task) {
            anyhow::bail!(
                "task {name} is {}, not running: top shows running and paused tasks only (see kohakuriver task status {name})",
                task.status.phase
            );
        }
        running.push(task);
    } else {
        for phase in ["Running", "Paused"] {
            let mut fields = format!("status.phase={phase}");
            if let Some(node) = &args.node {
                fields.push_str(&format!(",status.node={node}"));
            }
            let mut params = ListParams::default().fields(&fields);
            if let Some(selector) = &args.selector {
                params = params.labels(selector);
            }
            running.extend(
                tasks
                    .list(&params)
                    .await
                    .with_context(|| format!("cannot list {phase} tasks"))?
                    .items,
            );
        }
    }
    if running.is_empty() {
        eprintln!("no running tasks");
        return Ok(ExitCode::SUCCESS);
    }
    let nodes = client
        .api::<Node>()
        .list(&ListParams::default())
        .await
        .context("cannot list nodes for their usage figures")?
        .items;
    let usage = usage_by_uid(&nodes);
    let mut rows: Vec<(&Task, Option<&TaskUsage>)> = running
        .iter()
        .map(|t| {
            (
                t,
                t.metadata
                    .uid
                    .as_deref()
                    .and_then(|uid| usage.get(uid).copied()),
            )
        })
        .collect();
    sort_tasks(&mut rows, args.sort_by);
    let mut table = Table::new(&TASK_HEADER);
    for (task, usage) in rows {
        table.push(task_row(task, usage));
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

/// The columns of `top nodes`.
pub const NODE_HEADER: [&str; 7] = [
    "NAME",
    "CPU(cores)",
    "CPU%",
    "MEMORY(bytes)",
    "MEMORY%",
    "GPU%",
    "GPU-MEMORY",
];

/// The columns of `top tasks`.
pub const TASK_HEADER: [&str; 8] = [
    "NAME",
    "NODE",
    "CPU(cores)",
    "CPU%",
    "MEMORY(bytes)",
    "MEMORY%",
    "GPU%",
    "GPU-MEMORY",
];

const UNKNOWN: &str = "<unknown>";

fn is_alive(task: &Task) -> bool {
    matches!(
        task.status.phase,
        kohakuriver_api::TaskPhase::Running | kohakuriver_api::TaskPhase::Paused
    )
}

/// Thousandths of a core as `kubectl top` writes them: `250m`.
pub fn millicores(m: u64) -> String {
    format!("{m}m")
}

/// `part` of `whole` as a whole percentage; `-` when there is no whole.
pub fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "-".to_string();
    }
    format!("{:.0}%", part / whole * 100.0)
}

/// The GPU cells of a set of readings: mean utilisation and `used/total` device memory;
/// `-` for none.
pub fn gpu_cells(gpus: &[GpuUsage]) -> (String, String) {
    if gpus.is_empty() {
        return ("-".into(), "-".into());
    }
    let mean = gpus
        .iter()
        .map(|g| f64::from(g.utilization_percent))
        .sum::<f64>()
        / gpus.len() as f64;
    let used: u64 = gpus.iter().map(|g| g.memory_used_bytes).sum();
    let total: u64 = gpus.iter().map(|g| g.memory_total_bytes).sum();
    (
        format!("{mean:.0}%"),
        format!("{}/{}", format_bytes(used), format_bytes(total)),
    )
}

/// One row of `top nodes` (pure).
pub fn node_row(node: &Node) -> Vec<String> {
    let name = node.metadata.name.clone();
    let Some(usage) = &node.status.usage else {
        let mut row = vec![name];
        row.extend(std::iter::repeat_n(
            UNKNOWN.to_string(),
            NODE_HEADER.len() - 1,
        ));
        return row;
    };
    let cores = node.status.capacity.cpu;
    let used_millicores = (usage.cpu_percent / 100.0 * f64::from(cores) * 1000.0).round() as u64;
    let memory_total = node.status.capacity.memory_bytes;
    let (gpu, gpu_memory) = gpu_cells(&usage.gpus);
    vec![
        name,
        millicores(used_millicores),
        format!("{:.0}%", usage.cpu_percent),
        format_bytes(usage.memory_used_bytes),
        percent(usage.memory_used_bytes as f64, memory_total as f64),
        gpu,
        gpu_memory,
    ]
}

/// One row of `top tasks` (pure): the task, and its last sample if its agent has one.
pub fn task_row(task: &Task, usage: Option<&TaskUsage>) -> Vec<String> {
    let mut row = vec![
        task.metadata.name.clone(),
        task.status.node.clone().unwrap_or_else(|| "-".into()),
    ];
    let Some(usage) = usage else {
        row.extend(std::iter::repeat_n(
            UNKNOWN.to_string(),
            TASK_HEADER.len() - 2,
        ));
        return row;
    };
    let cores = f64::from(task.spec.resources.cpu);
    let limit = task
        .status
        .allocation
        .as_ref()
        .and_then(|a| a.memory_bytes)
        .or_else(|| task.spec.resources.memory.as_ref().map(|m| m.bytes()))
        .unwrap_or(0);
    row.extend([
        millicores(usage.cpu_millicores),
        percent(usage.cpu_millicores as f64 / 1000.0, cores),
        format_bytes(usage.memory_bytes),
        percent(usage.memory_bytes as f64, limit as f64),
        usage
            .gpu_percent
            .map_or_else(|| "-".into(), |p| format!("{p:.0}%")),
        usage
            .gpu_memory_used_bytes
            .map_or_else(|| "-".into(), format_bytes),
    ]);
    row
}

/// Every task entry of every node's usage, by task uid.
pub fn usage_by_uid(nodes: &[Node]) -> HashMap<&str, &TaskUsage> {
    nodes
        .iter()
        .filter_map(|n| n.status.usage.as_ref())
        .flat_map(|u| u.tasks.iter())
        .map(|t| (t.uid.as_str(), t))
        .collect()
}

fn sort_nodes(nodes: &mut [Node], by: Option<SortBy>) {
    let key = |n: &Node| -> f64 {
        let Some(u) = &n.status.usage else {
            return -1.0;
        };
        match by {
            Some(SortBy::Cpu) => u.cpu_percent * f64::from(n.status.capacity.cpu),
            Some(SortBy::Memory) => u.memory_used_bytes as f64,
            Some(SortBy::Gpu) => u
                .gpus
                .iter()
                .map(|g| f64::from(g.utilization_percent))
                .sum::<f64>(),
            None => 0.0,
        }
    };
    nodes.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

fn sort_tasks(rows: &mut [(&Task, Option<&TaskUsage>)], by: Option<SortBy>) {
    let key = |u: Option<&TaskUsage>| -> f64 {
        let Some(u) = u else {
            return -1.0;
        };
        match by {
            Some(SortBy::Cpu) => u.cpu_millicores as f64,
            Some(SortBy::Memory) => u.memory_bytes as f64,
            Some(SortBy::Gpu) => u.gpu_percent.unwrap_or(-0.5),
            None => 0.0,
        }
    };
    rows.sort_by(|a, b| {
        key(b.1)
            .total_cmp(&key(a.1))
            .then_with(|| a.0.metadata.name.cmp(&b.0.metadata.name))
    });
}

#[cfg(test)]
mod tests;
