//! `task kill`, `pause` and `resume`: the refusals that need no server (pure), the desired
//! state written to the spec, and the wait for the node to act on it.

use std::time::Duration;

use anyhow::{Result, bail};
use kohakuriver_api::{DesiredState, Task, TaskGroup, TaskPhase};
use kohakuriver_client::Client;

use super::ControlArgs;
use super::waiting::{ending_line, wait_until};
use crate::cmd::task_group;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
    Kill,
    Pause,
    Resume,
}

/// Why a control verb cannot apply to a task in its current state, if it cannot (pure).
pub(super) fn control_refusal(task: &Task, verb: Control) -> Option<String> {
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
pub(super) fn kill_progress(name: &str, grace_seconds: Option<u64>) -> String {
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

pub(super) async fn control(
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

pub(super) fn verb_word(verb: Control) -> &'static str {
    match verb {
        Control::Kill => "kill",
        Control::Pause => "pause",
        Control::Resume => "resume",
    }
}
