//! `kohakuriver task …`: the command-task workflow of KohakuRiver (submit, logs, kill,
//! pause, resume, status, watch, list), on top of the same `Task` objects `apply` creates.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use kohakuriver_api::{Memory, Target, TaskPhase};
use kohakuriver_client::Client;

use crate::output::Format;
use crate::wait::parse_duration;

mod control;
mod inspect;
mod submit;
#[cfg(test)]
mod tests;
mod waiting;

use control::{Control, control};
use inspect::{list, logs, status, watch};
use submit::submit;
pub(crate) use submit::{
    create, resolve_upstreams, snowflake_id, task_for_target, warn_if_unregistered,
};
pub(crate) use waiting::{ending_line, exit_code_of, is_transient, signal_meaning, wait_for_end};

/// `kohakuriver task …`.
#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Submit a command task; prints its id alone on stdout.
    #[command(after_help = "Examples:
  kohakuriver task submit -t mynode -- echo \"Hello World\"
  kohakuriver task submit -t mynode -c 4 -m 8G -- python /shared/train.py --batch-size 32
  kohakuriver task submit -t mynode::0,1 -- python multi_gpu_train.py
  kohakuriver task submit --gpus 2 --image ubuntu:22.04 -w -- nvidia-smi
  id=$(kohakuriver task submit -t mynode -- sleep 60)

One task per target, as a batch (one id per line; -w waits for all of them):
  kohakuriver task submit -t node1 -t node2 -t node3 -- hostname

Dependencies (Slurm's --dependency=afterok / afterany):
  pre=$(kohakuriver task submit -- sh -c 'echo preprocess')
  train=$(kohakuriver task submit --after $pre -- sh -c 'echo train')
  kohakuriver task submit --after-any $train -- sh -c 'echo clean up'

Arrays (Slurm's --array), one task per index:
  kohakuriver task submit --array 0-9%3 -- python train.py --seed '$(KOHAKURIVER_ARRAY_INDEX)'
  group=$(kohakuriver task submit --array 0-99%8 -w -- sh -c 'echo $KOHAKURIVER_ARRAY_INDEX')")]
    Submit(Box<SubmitArgs>),
    /// Print a task's captured stdout (or stderr), complete and byte-exact.
    #[command(after_help = "Examples:
  kohakuriver task logs 7234512345678901234
  kohakuriver task logs 7234512345678901234 --stderr
  kohakuriver task logs 7234512345678901234 -f
  kohakuriver task logs GROUP --index 3     # member 3 of a task array")]
    Logs(LogsArgs),
    /// Kill running tasks (SIGTERM, then SIGKILL after a grace period).
    #[command(
        after_help = "The task's node sends SIGTERM, then SIGKILL once the grace has passed: the node's
--kill-grace (10s by default), or --grace. A shell or sleep running as the container's
first process ignores SIGTERM, so such a task ends only at the SIGKILL (exit code 137).

Examples:
  kohakuriver task kill 7234512345678901234
  kohakuriver task kill --grace 60s 7234512345678901234   # time to save a checkpoint
  kohakuriver task kill --now 7234512345678901234         # SIGKILL at once
  kohakuriver task kill GROUP      # a task array: every unfinished member, and no new ones"
    )]
    Kill(KillArgs),
    /// Pause running tasks (docker pause).
    #[command(after_help = "Example:\n  kohakuriver task pause 7234512345678901234")]
    Pause(ControlArgs),
    /// Resume paused tasks (docker unpause).
    #[command(after_help = "Example:\n  kohakuriver task resume 7234512345678901234")]
    Resume(ControlArgs),
    /// Show a task in detail: phase, reason, node, allocation, image, command, times; for a
    /// task array, its members per phase and the failed ones.
    #[command(
        after_help = "Examples:\n  kohakuriver task status 7234512345678901234\n  kohakuriver task status GROUP"
    )]
    Status(NameArg),
    /// Show a task's status live, refreshed in place, until it ends.
    #[command(after_help = "Example:\n  kohakuriver task watch 7234512345678901234")]
    Watch(NameArg),
    /// List tasks.
    #[command(after_help = "Examples:
  kohakuriver task list
  kohakuriver task list --mine
  kohakuriver task list -s running -n mynode
  kohakuriver task list -l team=vision
  kohakuriver task list --group GROUP")]
    List(ListArgs),
}

/// Flags of `task submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Target node: hostname[:numa][::gpu,gpu], e.g. mynode, mynode::0,1, mynode:0::0,1.
    /// Without it the scheduler picks a node. Repeat it to submit one task per target.
    #[arg(short = 't', long = "target", value_name = "TARGET", value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// CPU cores, pinned exclusively (0 = no limit and not counted).
    #[arg(short = 'c', long = "cores", value_name = "N", default_value = "1",
          allow_negative_numbers = true, value_parser = parse_cores)]
    pub cores: u32,
    /// Memory limit, e.g. 4G, 512M (powers of ten) or 4Gi (powers of two).
    #[arg(short = 'm', long = "memory", value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<Memory>,
    /// Number of GPUs; the scheduler picks which (use -t host::0,1 for exact ones).
    #[arg(long = "gpus", value_name = "N", allow_negative_numbers = true, value_parser = parse_gpus)]
    pub gpus: Option<u32>,
    /// Container environment name (image kohakuriver/NAME:base from shared storage).
    #[arg(long, value_name = "NAME", conflicts_with = "image")]
    pub container: Option<String>,
    /// Docker registry image (mutually exclusive with --container).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Run the container with --privileged.
    #[arg(long)]
    pub privileged: bool,
    /// Additional mount HOST:CONTAINER[:ro|rw] (repeatable).
    #[arg(long = "mount", value_name = "HOST:CONTAINER[:ro]")]
    pub mounts: Vec<String>,
    /// Wait for the task to finish and exit with its exit code.
    #[arg(short = 'w', long)]
    pub wait: bool,
    /// Stream the task's stdout and stderr while waiting, then exit with its exit code (as
    /// `docker run` does); implies --wait.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Task name (default: a generated snowflake id).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Label KEY=VALUE (repeatable).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Priority in the queue: higher runs first (default 0).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Re-run the task this many times if it fails.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Deadline in seconds for the whole task.
    #[arg(long = "timeout", value_name = "SECONDS")]
    pub timeout_seconds: Option<u64>,
    /// Working directory in the container (default /shared with shared storage, else /).
    #[arg(long = "workdir", value_name = "DIR")]
    pub working_dir: Option<String>,
    /// Start only after these tasks succeed (Slurm's afterok); if one fails, this task
    /// fails with reason DependencyFailed. Comma-separated, repeatable.
    #[arg(long = "after", value_name = "ID[,ID]", value_delimiter = ',')]
    pub after: Vec<String>,
    /// Start only after these tasks end, however they end (Slurm's afterany).
    /// Comma-separated, repeatable.
    #[arg(long = "after-any", value_name = "ID[,ID]", value_delimiter = ',')]
    pub after_any: Vec<String>,
    /// Submit a task array: one task per index, at most N running at once with %N, as
    /// Slurm's --array (e.g. 0-9%3, 0-9,20,30-32). Prints the group's name; each member gets
    /// KOHAKURIVER_ARRAY_INDEX and KOHAKURIVER_GROUP, and $(KOHAKURIVER_ARRAY_INDEX) in the
    /// command is replaced by its index. With -w, waits for every member and exits with the
    /// first failure's code.
    #[arg(long, value_name = "INDEXES[%N]", conflicts_with = "attach")]
    pub array: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Flags of `task logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The task id (name).
    pub name: String,
    /// Show stderr instead of stdout.
    #[arg(short = 'e', long)]
    pub stderr: bool,
    /// Stream new output as it is written, like tail -f, until the task ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// NAME is a task array: show member N (the task NAME-N).
    #[arg(long, value_name = "N")]
    pub index: Option<u32>,
}

/// Task ids for kill/pause/resume.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Task ids (names).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Return at once instead of waiting for the node to act.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the node to act.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `task kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Time between SIGTERM and SIGKILL, e.g. 30s or 2m (at most 1h) [default: the node's --kill-grace]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "now")]
    pub grace: Option<Duration>,
    /// Kill at once (SIGKILL, no grace); the same as --grace 0s.
    #[arg(long)]
    pub now: bool,
}

impl KillArgs {
    /// The grace asked for, in whole seconds (`--now` is 0).
    fn grace_seconds(&self) -> Option<u64> {
        if self.now {
            return Some(0);
        }
        self.grace.map(|g| g.as_secs_f64().ceil() as u64)
    }
}

/// One task id.
#[derive(Args, Debug)]
pub struct NameArg {
    /// The task id (name).
    pub name: String,
}

/// Filters of `task list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only tasks in this phase (pending, running, succeeded/completed, failed, killed, lost…).
    #[arg(short = 's', long = "status", value_name = "PHASE", value_parser = parse_phase)]
    pub status: Option<TaskPhase>,
    /// Only tasks on this node.
    #[arg(short = 'n', long = "node", value_name = "NODE")]
    pub node: Option<String>,
    /// Label selector, e.g. team=vision.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Only the tasks you submitted (owned by the identity `kohakuriver whoami` shows).
    #[arg(long)]
    pub mine: bool,
    /// Only the members of this task array (label kohakuriver.io/group=GROUP).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s)
}

fn parse_memory(s: &str) -> Result<Memory, String> {
    Memory::parse(s)
}

fn parse_cores(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!("{s:?} is not a number of cores: expected a whole number ≥ 0 (0 = no limit)")
    })
}

fn parse_gpus(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a number of GPUs: expected a whole number ≥ 0"))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_phase(s: &str) -> Result<TaskPhase, String> {
    TaskPhase::parse(s).ok_or_else(|| {
        let all: Vec<&str> = TaskPhase::ALL.iter().map(|p| p.as_str()).collect();
        format!(
            "{s:?} is not a task phase; expected one of {}",
            all.join(", ")
        )
    })
}

/// Runs a `task` subcommand; returns the process exit code.
pub async fn run(client: &Client, command: TaskCommand) -> Result<i32> {
    match command {
        TaskCommand::Submit(args) => submit(client, *args).await,
        TaskCommand::Logs(args) => logs(client, args).await,
        TaskCommand::Kill(args) => {
            let grace = args.grace_seconds();
            control(client, args.control, Control::Kill, grace).await
        }
        TaskCommand::Pause(args) => control(client, args, Control::Pause, None).await,
        TaskCommand::Resume(args) => control(client, args, Control::Resume, None).await,
        TaskCommand::Status(arg) => status(client, &arg.name).await,
        TaskCommand::Watch(arg) => watch(client, &arg.name).await,
        TaskCommand::List(args) => list(client, args).await,
    }
}
