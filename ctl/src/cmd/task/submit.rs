//! `task submit`: the task the flags describe (pure, `task_for_target`), its snowflake id,
//! its creation, and `-a`/`-w`: attaching to its output or waiting for it to end.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use kohakuriver_api::{Dependency, DependencyCondition, Target, Task, TaskGroup, TaskPhase};
use kohakuriver_client::{Client, LogStream};

use super::SubmitArgs;
use super::inspect::print_log;
use super::waiting::{ending_line, exit_code_of, has_started, wait_for_end, wait_until};
use crate::cmd::task_group;

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

pub(super) fn rand_bits() -> u64 {
    rand::random()
}

pub(super) async fn submit(client: &Client, args: SubmitArgs) -> Result<i32> {
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
pub(super) async fn attach(client: &Client, name: &str) -> Result<()> {
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
pub(super) fn waiting_for(task: &Task) -> String {
    match (&task.status.reason, &task.status.node) {
        (Some(reason), _) => format!("{}: {reason}", task.status.phase),
        (None, Some(node)) => format!("{} on {node}", task.status.phase),
        (None, None) => task.status.phase.to_string(),
    }
}
