//! `kohakuriver task …`: the command-task workflow of KohakuRiver (submit, logs, kill,
//! pause, resume, status, watch, list), on top of the same `Task` objects `apply` creates.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use kohakuriver_api::group::GROUP_LABEL;
use kohakuriver_api::group::member::member_name;
use kohakuriver_api::{
    Dependency, DependencyCondition, DesiredState, Memory, Target, Task, TaskGroup, TaskPhase,
};
use kohakuriver_client::{Client, LogParams, LogStream};

use crate::cmd::describe::describe_task;
use crate::cmd::{get, task_group};
use crate::output::Format;
use crate::wait::parse_duration;

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

/// Builds the task `submit` asks for, on its first target (pure, so it is tested without a
/// server).
#[cfg(test)]
pub fn task_from_submit(args: &SubmitArgs, name: String) -> Task {
    task_for_target(args, name, args.targets.first())
}

/// Builds the task `submit` asks for on `target` (each target of a batch has its own).
pub fn task_for_target(args: &SubmitArgs, name: String, target: Option<&Target>) -> Task {
    let mut task = Task::new(name, args.command.clone());
    let spec = &mut task.spec;
    spec.image = args.image.clone();
    spec.container = args.container.clone();
    spec.resources.cpu = args.cores;
    spec.resources.memory = args.memory.clone();
    if let Some(target) = target {
        spec.placement = target.to_placement();
    }
    if let Some(gpus) = args.gpus {
        spec.resources.gpus = gpus;
    }
    spec.privileged = args.privileged;
    spec.mounts = args.mounts.clone();
    spec.env = args.env.iter().cloned().collect::<BTreeMap<_, _>>();
    task.metadata.labels = args.labels.iter().cloned().collect();
    spec.priority = args.priority.unwrap_or(0);
    spec.retries = args.retries.unwrap_or(0);
    spec.timeout_seconds = args.timeout_seconds;
    spec.working_dir = args.working_dir.clone();
    let after = args
        .after
        .iter()
        .map(|id| (id, DependencyCondition::Succeeded));
    let after_any = args
        .after_any
        .iter()
        .map(|id| (id, DependencyCondition::Finished));
    spec.depends_on = after
        .chain(after_any)
        .map(|(id, condition)| Dependency::task(id.clone(), condition))
        .collect();
    task
}

/// A snowflake-style id: milliseconds since 2024-01-01 in the high bits, random low bits.
/// It sorts by submission time and collides with negligible probability (a collision is
/// refused by the server and retried with a fresh id).
pub fn snowflake_id() -> String {
    const EPOCH_MS: u64 = 1_704_067_200_000;
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let random: u64 = rand_bits();
    (((now_ms.saturating_sub(EPOCH_MS)) << 22) | (random & 0x3f_ffff)).to_string()
}

fn rand_bits() -> u64 {
    rand::random()
}

async fn submit(client: &Client, args: SubmitArgs) -> Result<i32> {
    if let Some(array) = &args.array {
        if args.targets.len() > 1 {
            anyhow::bail!(
                "--array takes at most one -t (every member runs on that target); give one, or submit one array per target"
            );
        }
        return task_group::submit_array(client, &args, array).await;
    }
    if args.targets.len() > 1 {
        return crate::cmd::task_batch::submit_batch(client, args).await;
    }
    let created = create(client, &args, args.name.clone(), args.targets.first()).await?;
    let name = created.metadata.name.clone();
    println!("{name}");
    std::io::stdout().flush().ok();
    if let Some(node) = &created.spec.placement.node {
        warn_if_unregistered(client, node).await;
    }
    if !args.wait && !args.attach {
        return Ok(0);
    }
    let waiting = async {
        if args.attach {
            attach(client, &name).await?;
            // The streams end with the task; its final status says how.
            let done = wait_for_end(client, &name, false).await?;
            if done.status.phase != TaskPhase::Succeeded {
                eprintln!("{}", ending_line(&done));
            }
            Ok(done)
        } else {
            wait_for_end(client, &name, true).await
        }
    };
    tokio::select! {
        done = waiting => Ok(exit_code_of(&done?)),
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nstopped waiting; task {name} keeps running. Stop it with: kohakuriver task kill {name}"
            );
            Ok(130)
        }
    }
}

/// Creates the task `args` asks for on `target`, named `name` or, without one, a fresh
/// snowflake id (drawn again on the rare collision).
pub(crate) async fn create(
    client: &Client,
    args: &SubmitArgs,
    name: Option<String>,
    target: Option<&Target>,
) -> Result<Task> {
    let tasks = client.api::<Task>();
    let mut attempt = 0;
    loop {
        let mut task = task_for_target(args, name.clone().unwrap_or_else(snowflake_id), target);
        resolve_upstreams(client, &mut task.spec.depends_on).await?;
        match tasks.create(&task).await {
            Ok(created) => return Ok(created),
            Err(e) if e.is_already_exists() && name.is_none() && attempt < 3 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `--after NAME` names a task or, when no task has that name, a task group (every member):
/// turns the dependencies on names that are only groups into `TaskGroup` ones. A name that
/// is neither is left for the server to refuse, naming it.
pub(crate) async fn resolve_upstreams(client: &Client, deps: &mut [Dependency]) -> Result<()> {
    for dep in deps.iter_mut() {
        if dep.kind == kohakuriver_api::dependency::DependencyKind::Task
            && client.api::<Task>().get_opt(&dep.name).await?.is_none()
            && client
                .api::<TaskGroup>()
                .get_opt(&dep.name)
                .await?
                .is_some()
        {
            dep.kind = kohakuriver_api::dependency::DependencyKind::TaskGroup;
        }
    }
    Ok(())
}

/// Streams a task's stdout to stdout and its stderr to stderr until it ends.
async fn attach(client: &Client, name: &str) -> Result<()> {
    wait_until(client, name, has_started).await?;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let (out, err) = tokio::join!(
        print_log(client, name, LogStream::Stdout, true, None, &mut stdout),
        print_log(client, name, LogStream::Stderr, true, None, &mut stderr),
    );
    out.and(err)
}

/// Says on stderr when the target node has not registered: the task waits for it, which is
/// right for manifests that arrive before machines, and a typo's only symptom otherwise.
pub(crate) async fn warn_if_unregistered(client: &Client, node: &str) {
    if let Ok(None) = client.api::<kohakuriver_api::Node>().get_opt(node).await {
        eprintln!(
            "warning: node {node:?} is not registered; the task waits for it (kohakuriver node list shows the nodes)"
        );
    }
}

/// What a task that has not started waits for, in a few words.
fn waiting_for(task: &Task) -> String {
    match (&task.status.reason, &task.status.node) {
        (Some(reason), _) => format!("{}: {reason}", task.status.phase),
        (None, Some(node)) => format!("{} on {node}", task.status.phase),
        (None, None) => task.status.phase.to_string(),
    }
}

/// The exit code `submit -w` ends with: the command's own code, or 1 with a reason printed
/// when the task ended without one (killed before it started, lost, unschedulable…).
pub fn exit_code_of(task: &Task) -> i32 {
    match (task.status.phase, task.status.exit_code) {
        (TaskPhase::Succeeded, _) => 0,
        (_, Some(code)) if code != 0 => code.clamp(1, 255) as i32,
        _ => 1,
    }
}

/// One line saying how a task ended.
pub fn ending_line(task: &Task) -> String {
    let s = &task.status;
    let mut line = format!(
        "task {} {}",
        task.metadata.name,
        s.phase.as_str().to_lowercase()
    );
    if let Some(code) = s.exit_code {
        line.push_str(&format!(" with exit code {code}"));
        if let Some(signal) = signal_meaning(code) {
            line.push_str(&format!(" ({signal})"));
        }
    }
    if let Some(reason) = &s.reason {
        line.push_str(&format!(" ({reason}"));
        if let Some(message) = &s.message {
            line.push_str(&format!(": {message}"));
        }
        line.push(')');
    }
    line
}

/// What an exit code above 128 says: the process died of signal `code - 128` (pure).
pub fn signal_meaning(code: i64) -> Option<String> {
    let signal = code.checked_sub(128).filter(|s| (1..=64).contains(s))?;
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return Some(format!("killed by signal {signal}")),
    };
    Some(match signal {
        9 => format!(
            "killed by {name}: it did not stop on SIGTERM within the grace, or ran out of memory"
        ),
        _ => format!("killed by {name}"),
    })
}

/// Watches one task until it reaches a terminal phase; with `progress`, prints each phase
/// change on stderr.
pub(crate) async fn wait_for_end(client: &Client, name: &str, progress: bool) -> Result<Task> {
    let mut states = client.api::<Task>().watch_object(name);
    let mut last_phase: Option<TaskPhase> = None;
    let mut last_reason: Option<String> = None;
    while let Some(state) = states.next().await {
        let current = match state {
            Ok(Some(t)) => t,
            Ok(None) => bail!("task {name:?} was deleted while waiting for it"),
            Err(e) if is_transient(&e) => {
                eprintln!("warning: {e}; retrying");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let phase = current.status.phase;
        if progress && (last_phase != Some(phase) || last_reason != current.status.reason) {
            let mut line = format!("task {name}: {phase}");
            if let Some(node) = &current.status.node {
                line.push_str(&format!(" on {node}"));
            }
            if let Some(reason) = &current.status.reason {
                line.push_str(&format!(" ({reason})"));
            }
            eprintln!("{line}");
        }
        last_phase = Some(phase);
        last_reason = current.status.reason.clone();
        if phase.is_terminal() {
            if progress {
                eprintln!("{}", ending_line(&current));
            }
            return Ok(current);
        }
    }
    Err(anyhow!("the watch on task {name:?} ended unexpectedly"))
}

async fn logs(client: &Client, args: LogsArgs) -> Result<i32> {
    let mut args = args;
    if let Some(index) = args.index {
        args.name = member_name(&args.name, index);
    }
    let tasks = client.api::<Task>();
    let task = tasks.get(&args.name).await?;
    if !has_started(&task) && !task.status.phase.is_terminal() && !args.follow {
        // Asked right after `task submit`, there is nothing to show yet: rather than an
        // error, show the whole output, following it until the task ends.
        eprintln!(
            "task {} has not started yet ({}); showing its output as it runs (Ctrl-C stops)",
            args.name,
            waiting_for(&task)
        );
        args.follow = true;
    }
    if args.follow && !has_started(&task) {
        // Like `tail -f` on a file that is not there yet: wait for the container to start,
        // then follow it.
        wait_until(client, &args.name, has_started).await?;
    }
    let stream = if args.stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    print_log(
        client,
        &args.name,
        stream,
        args.follow,
        args.tail,
        &mut std::io::stdout().lock(),
    )
    .await?;
    Ok(0)
}

/// Writes one of a task's streams to `out`: what is captured so far, or with `follow`
/// everything until the task ends.
async fn print_log(
    client: &Client,
    name: &str,
    stream: LogStream,
    follow: bool,
    tail: Option<u64>,
    out: &mut dyn Write,
) -> Result<()> {
    let tasks = client.api::<Task>();
    let params = LogParams {
        stream,
        follow,
        tail,
    };
    // A follower survives a restart of the server or the agent: it reconnects and skips the
    // bytes it already printed (the capture is byte-exact, so the replay is identical).
    // With --tail the offset is unknown, so it does not reconnect.
    let resumable = follow && tail.is_none();
    let mut printed: usize = 0;
    let mut interruptions = 0;
    let mut backoff =
        kohakuriver_client::Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        let outcome = async {
            let mut stream = open_log(client, name, &params, follow).await?;
            let mut skip = printed;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.context("reading the log stream")?;
                let fresh = if skip >= chunk.len() {
                    skip -= chunk.len();
                    continue;
                } else {
                    let fresh = &chunk[skip..];
                    skip = 0;
                    fresh
                };
                out.write_all(fresh)?;
                out.flush()?;
                printed += fresh.len();
            }
            anyhow::Ok(())
        }
        .await;
        match outcome {
            Ok(()) if !follow => return Ok(()),
            // The stream ended: done if the task did, else it was cut and is resumed.
            Ok(()) => match tasks.get(name).await {
                Ok(t) if t.status.phase.is_terminal() => return Ok(()),
                Ok(_) | Err(_) if resumable => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            },
            Err(e) if resumable && interruptions < 120 => {
                if interruptions == 0 {
                    eprintln!("warning: the log stream was interrupted ({e:#}); reconnecting");
                }
            }
            Err(e) => return Err(e),
        }
        interruptions += 1;
        if interruptions > 120 {
            bail!("gave up following task {name} after 120 reconnects");
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Opens a task's log stream. Right after a container starts its agent may not have opened
/// the capture yet; a follower waits for it a little instead of failing.
async fn open_log(
    client: &Client,
    name: &str,
    params: &LogParams,
    follow: bool,
) -> Result<
    kohakuriver_client::BoxStream<
        'static,
        std::result::Result<bytes::Bytes, kohakuriver_client::Error>,
    >,
> {
    let mut tries = 0;
    let mut backoff =
        kohakuriver_client::Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    loop {
        match client.task_log(name, params).await {
            Ok(stream) => return Ok(stream),
            Err(e) if follow && e.is_not_found() && tries < 30 => {
                tries += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// True for watch errors worth waiting out: the server unreachable, a watch cut by a
/// restart, a 410 or a server error. The watcher reconnects by itself after each; only an
/// answer refusing the request itself (a bad selector, say) ends the wait.
pub fn is_transient(e: &kohakuriver_client::Error) -> bool {
    let code = match e {
        kohakuriver_client::Error::Api(status) => status.code,
        kohakuriver_client::Error::Unexpected { code, .. } => *code,
        _ => return true,
    };
    code >= 500 || code == 410
}

/// True once a task's container has started (so it has output to follow), or it ended.
fn has_started(task: &Task) -> bool {
    task.status.started_at.is_some()
        || matches!(task.status.phase, TaskPhase::Running | TaskPhase::Paused)
        || task.status.phase.is_terminal()
}

async fn wait_until(client: &Client, name: &str, done: impl Fn(&Task) -> bool) -> Result<Task> {
    let mut states = client.api::<Task>().watch_object(name);
    while let Some(state) = states.next().await {
        let current = match state {
            Ok(current) => current,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        match current {
            Some(t) if done(&t) => return Ok(t),
            Some(_) => {}
            None => bail!("task {name:?} was deleted while waiting for it"),
        }
    }
    Err(anyhow!("the watch on task {name:?} ended unexpectedly"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Kill,
    Pause,
    Resume,
}

/// Why a control verb cannot apply to a task in its current state, if it cannot (pure).
fn control_refusal(task: &Task, verb: Control) -> Option<String> {
    let name = &task.metadata.name;
    let phase = task.status.phase;
    if phase.is_terminal() {
        return Some(format!(
            "task {name} has already finished ({phase}); there is nothing to {}",
            match verb {
                Control::Kill => "kill",
                Control::Pause => "pause",
                Control::Resume => "resume",
            }
        ));
    }
    match verb {
        Control::Kill if task.spec.state == DesiredState::Killed => {
            Some(format!("task {name} is already being killed"))
        }
        Control::Pause if phase != TaskPhase::Running && phase != TaskPhase::Assigned => Some(
            format!("task {name} is {phase}; only a Running task can be paused"),
        ),
        Control::Resume
            if phase != TaskPhase::Paused && task.spec.state != DesiredState::Paused =>
        {
            Some(format!(
                "task {name} is {phase}, not Paused; there is nothing to resume"
            ))
        }
        _ => None,
    }
}

/// What `task kill` says while the node stops the task (pure).
fn kill_progress(name: &str, grace_seconds: Option<u64>) -> String {
    match grace_seconds {
        Some(0) => format!("task/{name}: kill requested; its node sends SIGKILL at once"),
        Some(s) => format!(
            "task/{name}: kill requested; its node sends SIGTERM, then SIGKILL after {s}s if it is still running"
        ),
        None => format!(
            "task/{name}: kill requested; its node sends SIGTERM, then SIGKILL after its --kill-grace (10s by default) if it is still running (--now kills at once)"
        ),
    }
}

async fn control(
    client: &Client,
    args: ControlArgs,
    verb: Control,
    grace_seconds: Option<u64>,
) -> Result<i32> {
    let timeout = args.timeout + Duration::from_secs(grace_seconds.unwrap_or(0));
    let tasks = client.api::<Task>();
    let mut failures = 0;
    for name in &args.names {
        let result: Result<String> = async {
            let task = match tasks.get(name).await {
                Ok(task) => task,
                Err(e) if e.is_not_found() && verb == Control::Kill => {
                    if client.api::<TaskGroup>().get_opt(name).await?.is_some() {
                        return task_group::kill_group(client, name).await;
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(why) = control_refusal(&task, verb) {
                bail!(why);
            }
            let desired = match verb {
                Control::Kill => DesiredState::Killed,
                Control::Pause => DesiredState::Paused,
                Control::Resume => DesiredState::Running,
            };
            tasks
                .update_with(name, |t| {
                    let mut changed = t.spec.state != desired;
                    t.spec.state = desired;
                    if grace_seconds.is_some() && t.spec.kill_grace_seconds != grace_seconds {
                        t.spec.kill_grace_seconds = grace_seconds;
                        changed = true;
                    }
                    changed
                })
                .await?;
            if args.no_wait {
                return Ok(format!("task/{name} {} requested", verb_word(verb)));
            }
            if verb == Control::Kill && task.status.phase != TaskPhase::Pending {
                eprintln!("{}", kill_progress(name, grace_seconds));
            }
            let reached = tokio::time::timeout(
                timeout,
                wait_until(client, name, move |t| match verb {
                    Control::Kill => t.status.phase.is_terminal(),
                    Control::Pause => t.status.phase == TaskPhase::Paused || t.status.phase.is_terminal(),
                    Control::Resume => t.status.phase == TaskPhase::Running || t.status.phase.is_terminal(),
                }),
            )
            .await;
            match reached {
                Ok(Ok(t)) => Ok(match verb {
                    Control::Kill => ending_line(&t),
                    _ if t.status.phase.is_terminal() => ending_line(&t),
                    Control::Pause => format!("task/{name} paused"),
                    Control::Resume => format!("task/{name} resumed"),
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(format!(
                    "task/{name} {} requested; the node has not acted on it within {}s (see `kohakuriver task status {name}`)",
                    verb_word(verb),
                    timeout.as_secs()
                )),
            }
        }
        .await;
        match result {
            Ok(line) => println!("{line}"),
            Err(e) if crate::cmd::is_unreachable(&e) => return Err(e),
            Err(e) => {
                eprintln!("error: {e:#}");
                failures += 1;
            }
        }
    }
    Ok(if failures > 0 { 1 } else { 0 })
}

fn verb_word(verb: Control) -> &'static str {
    match verb {
        Control::Kill => "kill",
        Control::Pause => "pause",
        Control::Resume => "resume",
    }
}

async fn status(client: &Client, name: &str) -> Result<i32> {
    let task = match client.api::<Task>().get(name).await {
        Ok(task) => task,
        Err(e) if e.is_not_found() => match client.api::<TaskGroup>().get_opt(name).await? {
            Some(group) => {
                task_group::print_status(&group);
                return Ok(0);
            }
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    print!("{}", describe_task(&task, chrono::Utc::now()));
    Ok(0)
}

async fn watch(client: &Client, name: &str) -> Result<i32> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    // The first view comes from a plain read, which also fails fast on a wrong id; the watch
    // then brings every change, and a one-second tick keeps the ages in the view fresh.
    let mut current = client.api::<Task>().get(name).await?;
    let mut states = client.api::<Task>().watch_object(name);
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        let view = describe_task(&current, chrono::Utc::now());
        if view != last {
            if tty {
                // Clear the screen and redraw in place.
                print!("\x1b[H\x1b[2J{view}");
            } else {
                println!("{view}");
            }
            std::io::stdout().flush().ok();
            last = view;
        }
        if current.status.phase.is_terminal() {
            return Ok(0);
        }
        tokio::select! {
            state = states.next() => {
                match state {
                    Some(Ok(Some(t))) => current = t,
                    Some(Ok(None)) | None => bail!("task {name:?} was deleted"),
                    Some(Err(e)) if is_transient(&e) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            _ = ticker.tick(), if tty => {}
        }
    }
}

async fn list(client: &Client, args: ListArgs) -> Result<i32> {
    let mut fields = Vec::new();
    if let Some(phase) = args.status {
        fields.push(format!("status.phase={phase}"));
    }
    if let Some(node) = &args.node {
        fields.push(format!("status.node={node}"));
    }
    if args.mine {
        let me = client
            .whoami()
            .await
            .context("cannot ask the server who you are (for --mine)")?;
        fields.push(format!("metadata.owner={}", me.name));
    }
    let selector = match (&args.group, args.selector) {
        (Some(group), Some(s)) => Some(format!("{GROUP_LABEL}={group},{s}")),
        (Some(group), None) => Some(format!("{GROUP_LABEL}={group}")),
        (None, s) => s,
    };
    let get_args = get::Args {
        kind: "tasks".to_string(),
        names: Vec::new(),
        selector,
        field_selector: (!fields.is_empty()).then(|| fields.join(",")),
        output: args.output,
        watch: false,
        show_managed_fields: false,
        chunk_size: get::DEFAULT_CHUNK_SIZE,
    };
    get::run(client, get_args).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        task: TaskCommand,
    }

    fn submit_args(argv: &[&str]) -> Result<SubmitArgs, String> {
        let mut full = vec!["test", "submit"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full) {
            Ok(Cli {
                task: TaskCommand::Submit(a),
            }) => Ok(*a),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn seed_examples_build_the_right_task() {
        let a = submit_args(&["-t", "mynode", "--", "echo", "Hello World"]).unwrap();
        let t = task_from_submit(&a, "x".into());
        assert_eq!(t.spec.command, ["echo", "Hello World"]);
        assert_eq!(t.spec.placement.node.as_deref(), Some("mynode"));
        assert_eq!(t.spec.resources.cpu, 1);

        let a = submit_args(&[
            "-t",
            "mynode",
            "-c",
            "4",
            "-m",
            "8G",
            "--",
            "python",
            "/shared/train.py",
            "--batch-size",
            "32",
        ])
        .unwrap();
        let t = task_from_submit(&a, "x".into());
        assert_eq!(t.spec.resources.cpu, 4);
        assert_eq!(
            t.spec.resources.memory.as_ref().map(Memory::bytes),
            Some(8_000_000_000)
        );
        assert_eq!(t.spec.command.last().map(String::as_str), Some("32"));

        let a = submit_args(&["-t", "mynode:0::0,1", "--", "python", "train.py"]).unwrap();
        let t = task_from_submit(&a, "x".into());
        assert_eq!(t.spec.placement.numa, Some(0));
        assert_eq!(t.spec.placement.gpu_ids, Some(vec![0, 1]));

        let a = submit_args(&[
            "-t",
            "mynode",
            "--mount",
            "/data:/data",
            "--privileged",
            "--",
            "ls",
            "/data",
        ])
        .unwrap();
        let t = task_from_submit(&a, "x".into());
        assert_eq!(t.spec.mounts, ["/data:/data"]);
        assert!(t.spec.privileged);

        let a = submit_args(&[
            "-t",
            "mynode",
            "--image",
            "ubuntu:22.04",
            "--",
            "apt",
            "list",
        ])
        .unwrap();
        assert_eq!(
            task_from_submit(&a, "x".into()).spec.image.as_deref(),
            Some("ubuntu:22.04")
        );
        let a = submit_args(&[
            "-t",
            "mynode",
            "--container",
            "my-pytorch",
            "--",
            "python",
            "train.py",
        ])
        .unwrap();
        assert_eq!(
            task_from_submit(&a, "x".into()).spec.container.as_deref(),
            Some("my-pytorch")
        );
    }

    #[test]
    fn targets_repeat_and_dependencies_build_depends_on() {
        let a = submit_args(&["-t", "n1", "-t", "n2::0", "--", "hostname"]).unwrap();
        let nodes: Vec<Option<String>> = a
            .targets
            .iter()
            .map(|t| task_for_target(&a, "x".into(), Some(t)).spec.placement.node)
            .collect();
        assert_eq!(nodes, [Some("n1".to_string()), Some("n2".to_string())]);
        assert_eq!(
            task_from_submit(&a, "x".into())
                .spec
                .placement
                .node
                .as_deref(),
            Some("n1")
        );
        let a = submit_args(&[
            "--after",
            "a,b",
            "--after",
            "c",
            "--after-any",
            "d",
            "--",
            "true",
        ])
        .unwrap();
        let deps: Vec<String> = task_from_submit(&a, "x".into())
            .spec
            .depends_on
            .iter()
            .map(|d| format!("{}:{:?}", d.name, d.condition))
            .collect();
        assert_eq!(
            deps,
            ["a:Succeeded", "b:Succeeded", "c:Succeeded", "d:Finished"]
        );
        let plain = submit_args(&["--", "true"]).unwrap();
        assert!(
            task_from_submit(&plain, "x".into())
                .spec
                .depends_on
                .is_empty()
        );
    }

    #[test]
    fn bad_flags_name_the_value() {
        for (argv, want) in [
            (vec!["-m", "8X", "--", "x"], "invalid memory size \"8X\""),
            (vec!["-t", "host:x", "--", "x"], "NUMA node \"x\""),
            (
                vec!["-c", "-1", "--", "x"],
                "\"-1\" is not a number of cores",
            ),
            (
                vec!["--image", "a", "--container", "b", "--", "x"],
                "cannot be used with",
            ),
            (vec!["-t", "n", "echo"], "unexpected argument"),
            (vec!["-t", "n"], "required"),
            (
                vec!["--env", "NOVALUE", "--", "x"],
                "\"NOVALUE\" is not KEY=VALUE",
            ),
        ] {
            let e = submit_args(&argv).unwrap_err();
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }

    #[test]
    fn snowflakes_are_valid_distinct_names() {
        let a = snowflake_id();
        let b = snowflake_id();
        assert_ne!(a, b);
        assert!(kohakuriver_api::validation::check_dns_label(&a).is_ok());
    }

    #[test]
    fn control_refusals() {
        let done = Task::test("t").phase(TaskPhase::Succeeded);
        assert!(
            control_refusal(&done, Control::Pause)
                .unwrap()
                .contains("already finished (Succeeded)")
        );
        let pending = Task::test("t");
        assert!(
            control_refusal(&pending, Control::Pause)
                .unwrap()
                .contains("only a Running task")
        );
        assert!(control_refusal(&pending, Control::Kill).is_none());
        let running = Task::test("t").phase(TaskPhase::Running);
        assert!(
            control_refusal(&running, Control::Resume)
                .unwrap()
                .contains("not Paused")
        );
        assert!(control_refusal(&running, Control::Pause).is_none());
    }

    #[test]
    fn kill_says_what_happens_and_137_is_explained() {
        assert_eq!(
            kill_progress("t1", Some(0)),
            "task/t1: kill requested; its node sends SIGKILL at once"
        );
        assert!(kill_progress("t1", Some(30)).contains("SIGTERM, then SIGKILL after 30s"));
        assert!(kill_progress("t1", None).contains("--kill-grace (10s by default)"));
        assert_eq!(signal_meaning(0), None);
        assert_eq!(signal_meaning(1), None);
        assert_eq!(signal_meaning(128), None);
        assert_eq!(signal_meaning(143).as_deref(), Some("killed by SIGTERM"));
        assert!(
            signal_meaning(137)
                .unwrap()
                .starts_with("killed by SIGKILL: it did not stop on SIGTERM")
        );
        assert_eq!(signal_meaning(138).as_deref(), Some("killed by signal 10"));
        let mut t = Task::new("t1", vec!["sleep".into()]);
        t.status.phase = TaskPhase::Killed;
        t.status.exit_code = Some(137);
        assert!(
            ending_line(&t).starts_with("task t1 killed with exit code 137 (killed by SIGKILL")
        );
    }

    #[test]
    fn exit_codes() {
        let mut t = Task::test("t").phase(TaskPhase::Failed);
        t.status.exit_code = Some(3);
        assert_eq!(exit_code_of(&t), 3);
        t.status.exit_code = None;
        assert_eq!(exit_code_of(&t), 1);
        assert_eq!(
            exit_code_of(&Task::test("t").phase(TaskPhase::Succeeded)),
            0
        );
        let mut k = Task::test("t").phase(TaskPhase::Killed);
        k.status.exit_code = Some(137);
        assert_eq!(exit_code_of(&k), 137);
    }
}
