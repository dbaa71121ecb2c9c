//! `kohakuriver node …`: list nodes, show one in detail, cordon and uncordon.

use anyhow::Result;
use clap::{Args, Subcommand};
use kohakuriver_api::{Node, Task};
use kohakuriver_client::{Client, ListParams};

use crate::cmd::describe::describe_node;
use crate::cmd::get;
use crate::output::{Format, Table, age};

/// `kohakuriver node …`.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List nodes with their state and free resources.
    #[command(after_help = "Examples:\n  kohakuriver node list\n  kohakuriver node list -o wide")]
    List(NodeListArgs),
    /// Show a node: capacity, allocatable, NUMA topology, GPUs, running tasks, heartbeat.
    #[command(after_help = "Example:\n  kohakuriver node status mynode")]
    Status(NodeName),
    /// Stop placing new tasks on a node; running tasks keep running.
    #[command(after_help = "Example:\n  kohakuriver node cordon mynode")]
    Cordon(NodeName),
    /// Allow new tasks on a cordoned node again.
    #[command(after_help = "Example:\n  kohakuriver node uncordon mynode")]
    Uncordon(NodeName),
}

/// Flags of `node list`.
#[derive(Args, Debug)]
pub struct NodeListArgs {
    /// Label selector, e.g. gpu=a100.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

/// One node name.
#[derive(Args, Debug)]
pub struct NodeName {
    /// The node's name (its host name).
    pub name: String,
}

/// Runs a `node` subcommand; returns the exit code.
pub async fn run(client: &Client, command: NodeCommand) -> Result<i32> {
    let nodes = client.api::<Node>();
    match command {
        NodeCommand::List(args) => {
            let get_args = get::Args {
                kind: "nodes".to_string(),
                names: Vec::new(),
                selector: args.selector,
                field_selector: None,
                output: args.output,
                watch: false,
                show_managed_fields: false,
                chunk_size: get::DEFAULT_CHUNK_SIZE,
            };
            get::run(client, get_args).await?;
        }
        NodeCommand::Status(arg) => {
            let node = nodes.get(&arg.name).await?;
            let tasks = client
                .api::<Task>()
                .list(&ListParams::default().fields(&format!("status.node={}", arg.name)))
                .await?;
            let holding: Vec<&Task> = tasks
                .items
                .iter()
                .filter(|t| !t.status.phase.is_terminal())
                .collect();
            print!(
                "{}",
                describe_node_with_tasks(&node, &holding, chrono::Utc::now())
            );
        }
        NodeCommand::Cordon(arg) => set_cordon(client, &arg.name, true).await?,
        NodeCommand::Uncordon(arg) => set_cordon(client, &arg.name, false).await?,
    }
    Ok(0)
}

async fn set_cordon(client: &Client, name: &str, cordon: bool) -> Result<()> {
    let mut was = false;
    client
        .api::<Node>()
        .update_with(name, |n| {
            was = n.spec.unschedulable;
            n.spec.unschedulable = cordon;
            was != cordon
        })
        .await?;
    let word = if cordon { "cordoned" } else { "uncordoned" };
    if was == cordon {
        println!("node/{name} already {word}");
    } else {
        println!("node/{name} {word}");
    }
    Ok(())
}

/// The node's detail view followed by the tasks that hold resources on it.
fn describe_node_with_tasks(
    node: &Node,
    tasks: &[&Task],
    now: kohakuriver_api::Timestamp,
) -> String {
    let mut out = describe_node(node, now);
    out.push_str("Tasks:\n");
    if tasks.is_empty() {
        out.push_str("  <none>\n");
        return out;
    }
    let mut table = Table::new(&["NAME", "PHASE", "CPUS", "NUMA", "GPUS", "AGE"]);
    for t in tasks {
        let a = t.status.allocation.clone().unwrap_or_default();
        let gpus: Vec<String> = a.gpus.iter().map(u32::to_string).collect();
        table.push(vec![
            t.metadata.name.clone(),
            t.status.phase.to_string(),
            if a.cpus.is_empty() {
                "-".to_string()
            } else {
                a.cpus.clone()
            },
            a.numa
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".to_string()),
            if gpus.is_empty() {
                "-".to_string()
            } else {
                gpus.join(",")
            },
            age(t.metadata.creation_timestamp, now),
        ]);
    }
    for line in table.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}
