//! Looking at tasks: `task logs` (whole, tail or followed), `task status`, `task watch`
//! (the status redrawn live) and `task list`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kohakuriver_api::group::GROUP_LABEL;
use kohakuriver_api::group::member::member_name;
use kohakuriver_api::{Task, TaskGroup};
use kohakuriver_client::{Client, LogParams, LogStream};

use super::submit::waiting_for;
use super::waiting::{has_started, is_transient, wait_until};
use super::{ListArgs, LogsArgs};
use crate::cmd::describe::describe_task;
use crate::cmd::{get, task_group};

pub(super) async fn logs(client: &Client, args: LogsArgs) -> Result<i32> {
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
pub(super) async fn print_log(
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
pub(super) async fn open_log(
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

pub(super) async fn status(client: &Client, name: &str) -> Result<i32> {
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

pub(super) async fn watch(client: &Client, name: &str) -> Result<i32> {
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

pub(super) async fn list(client: &Client, args: ListArgs) -> Result<i32> {
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
