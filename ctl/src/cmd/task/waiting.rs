//! Waiting on one task (until it starts, until it ends, with the phases it goes through on
//! stderr) and saying how it ended: the closing line and the exit code `-w` ends with.

use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_client::Client;

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
pub(super) fn has_started(task: &Task) -> bool {
    task.status.started_at.is_some()
        || matches!(task.status.phase, TaskPhase::Running | TaskPhase::Paused)
        || task.status.phase.is_terminal()
}

pub(super) async fn wait_until(
    client: &Client,
    name: &str,
    done: impl Fn(&Task) -> bool,
) -> Result<Task> {
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
