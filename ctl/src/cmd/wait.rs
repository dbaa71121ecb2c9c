//! `kohakuriver wait task/NAME|group/NAME --for=condition=Succeeded|--for=delete [--timeout 30s]`.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use kohakuriver_api::meta::find_condition;
use kohakuriver_api::{ConditionStatus, Resource, Task, TaskGroup};
use kohakuriver_client::Client;

use crate::wait::parse_duration;

/// Flags of `wait`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver wait task/train-resnet --for=condition=Succeeded --timeout 1h
  kohakuriver wait task/7234512345678901234 --for=delete
  kohakuriver wait task/a task/b --for=condition=Running
  kohakuriver wait group/sweep --for=condition=Complete --timeout 2h")]
pub struct WaitArgs {
    /// What to wait on: task/NAME (or a bare task name) or group/NAME (taskgroup/, tg/),
    /// one or more.
    #[arg(required = true, value_name = "task/NAME")]
    pub targets: Vec<String>,
    /// condition=TYPE[=True|False] (tasks: Scheduled, Running, Succeeded, Failed; groups:
    /// Complete, Failed) or delete.
    #[arg(long = "for", value_name = "CONDITION", value_parser = parse_for)]
    pub for_: WaitFor,
    /// Give up after this long (e.g. 30s, 10m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What `wait` waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// A condition of this type with this status.
    Condition(String, ConditionStatus),
    /// The object is gone.
    Delete,
}

fn parse_for(s: &str) -> Result<WaitFor, String> {
    if s == "delete" {
        return Ok(WaitFor::Delete);
    }
    let Some(rest) = s.strip_prefix("condition=") else {
        return Err(format!(
            "{s:?}: expected condition=TYPE[=True|False] or delete"
        ));
    };
    let (type_, status) = match rest.split_once('=') {
        Some((t, v)) => {
            let status = match v.to_ascii_lowercase().as_str() {
                "true" => ConditionStatus::True,
                "false" => ConditionStatus::False,
                "unknown" => ConditionStatus::Unknown,
                _ => {
                    return Err(format!(
                        "{s:?}: the condition status must be True, False or Unknown"
                    ));
                }
            };
            (t, status)
        }
        None => (rest, ConditionStatus::True),
    };
    if type_.is_empty() {
        return Err(format!(
            "{s:?}: no condition type; e.g. condition=Succeeded"
        ));
    }
    Ok(WaitFor::Condition(type_.to_string(), status))
}

/// What a target names: a task or a task group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waited {
    Task,
    Group,
}

impl Waited {
    fn word(self) -> &'static str {
        match self {
            Waited::Task => "task",
            Waited::Group => "group",
        }
    }
}

fn target_name(target: &str) -> Result<(Waited, &str)> {
    match target.split_once('/') {
        Some(("task" | "tasks", name)) if !name.is_empty() => Ok((Waited::Task, name)),
        Some(("group" | "groups" | "taskgroup" | "taskgroups" | "tg", name))
            if !name.is_empty() =>
        {
            Ok((Waited::Group, name))
        }
        Some((kind, _)) => {
            bail!(
                "{target:?}: only tasks (task/NAME) and task groups (group/NAME) can be waited on, not {kind:?}"
            )
        }
        None => Ok((Waited::Task, target)),
    }
}

/// The outcome for one group as it is now (pure): Some(Ok) met, Some(Err) can never be met.
fn check_group(group: &TaskGroup, want: &WaitFor) -> Option<Result<(), String>> {
    match want {
        WaitFor::Delete => None,
        WaitFor::Condition(type_, status) => {
            let met = find_condition(&group.status.conditions, type_)
                .is_some_and(|c| c.status == *status);
            if met {
                Some(Ok(()))
            } else if group.is_finished() {
                Some(Err(format!(
                    "group {} finished ({}); condition {type_}={status} will never be met",
                    group.metadata.name,
                    group.status.counts.summary()
                )))
            } else {
                None
            }
        }
    }
}

/// The outcome for one task as it is now (pure): Some(Ok) met, Some(Err) can never be met.
fn check(task: &Task, want: &WaitFor) -> Option<Result<(), String>> {
    match want {
        WaitFor::Delete => None,
        WaitFor::Condition(type_, status) => {
            let met =
                find_condition(&task.status.conditions, type_).is_some_and(|c| c.status == *status);
            if met {
                Some(Ok(()))
            } else if task.status.phase.is_terminal() {
                Some(Err(format!(
                    "task {} ended {} ({}); condition {type_}={status} will never be met",
                    task.metadata.name,
                    task.status.phase,
                    task.status.reason.as_deref().unwrap_or("no reason given")
                )))
            } else {
                None
            }
        }
    }
}

/// Runs `wait`; returns the exit code.
pub async fn run(client: &Client, args: WaitArgs) -> Result<i32> {
    let mut failures = 0;
    for target in &args.targets {
        let (what, name) = target_name(target)?;
        let waiting = async {
            match what {
                Waited::Task => wait_object(client, name, "task", &args.for_, check).await,
                Waited::Group => wait_object(client, name, "group", &args.for_, check_group).await,
            }
        };
        let outcome = tokio::time::timeout(args.timeout, waiting).await;
        let word = what.word();
        match outcome {
            Ok(Ok(())) => println!(
                "{word}/{name} {}",
                match &args.for_ {
                    WaitFor::Delete => "deleted".to_string(),
                    WaitFor::Condition(t, s) => format!("condition met ({t}={s})"),
                }
            ),
            Ok(Err(e)) => {
                eprintln!("error: {e:#}");
                failures += 1;
            }
            Err(_) => {
                eprintln!(
                    "error: timed out after {}s waiting for {word}/{name}",
                    args.timeout.as_secs()
                );
                failures += 1;
            }
        }
    }
    Ok(if failures > 0 { 1 } else { 0 })
}

/// Waits until `check` says the object named `name` is as `want`ed (or, for `delete`, that
/// it is gone); `noun` names the kind in messages.
async fn wait_object<R: Resource>(
    client: &Client,
    name: &str,
    noun: &str,
    want: &WaitFor,
    check: fn(&R, &WaitFor) -> Option<Result<(), String>>,
) -> Result<()> {
    let api = client.api::<R>();
    if api.get_opt(name).await?.is_none() {
        return match want {
            WaitFor::Delete => Ok(()),
            WaitFor::Condition(..) => Err(anyhow!("{noun} {name:?} not found")),
        };
    }
    let mut states = api.watch_object(name);
    while let Some(state) = states.next().await {
        let current = match state {
            Ok(current) => current,
            Err(e) if super::task::is_transient(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        match (current, want) {
            (None, WaitFor::Delete) => return Ok(()),
            (None, WaitFor::Condition(..)) => bail!("{noun} {name:?} was deleted"),
            (Some(object), _) => match check(&object, want) {
                Some(Ok(())) => return Ok(()),
                Some(Err(why)) => bail!(why),
                None => {}
            },
        }
    }
    Err(anyhow!("the watch on {noun} {name:?} ended unexpectedly"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::TaskPhase;
    use kohakuriver_api::meta::set_condition;

    #[test]
    fn parses_for() {
        assert_eq!(parse_for("delete"), Ok(WaitFor::Delete));
        assert_eq!(
            parse_for("condition=Succeeded"),
            Ok(WaitFor::Condition(
                "Succeeded".into(),
                ConditionStatus::True
            ))
        );
        assert_eq!(
            parse_for("condition=Running=false"),
            Ok(WaitFor::Condition("Running".into(), ConditionStatus::False))
        );
        assert!(
            parse_for("jsonpath={.x}")
                .unwrap_err()
                .contains("expected condition=")
        );
        assert!(
            parse_for("condition=X=maybe")
                .unwrap_err()
                .contains("True, False or Unknown")
        );
    }

    #[test]
    fn targets() {
        assert_eq!(target_name("task/abc").unwrap(), (Waited::Task, "abc"));
        assert_eq!(target_name("abc").unwrap(), (Waited::Task, "abc"));
        assert_eq!(target_name("group/g").unwrap(), (Waited::Group, "g"));
        assert_eq!(target_name("tg/g").unwrap(), (Waited::Group, "g"));
        assert_eq!(target_name("taskgroup/g").unwrap(), (Waited::Group, "g"));
        assert!(target_name("node/x").is_err());
    }

    #[test]
    fn terminal_tasks_end_the_wait() {
        let want = WaitFor::Condition("Succeeded".into(), ConditionStatus::True);
        let running = Task::test("t").phase(TaskPhase::Running);
        assert_eq!(check(&running, &want), None);
        let mut failed = Task::test("t").phase(TaskPhase::Failed);
        failed.status.reason = Some("Error".into());
        assert!(
            check(&failed, &want)
                .unwrap()
                .unwrap_err()
                .contains("will never be met")
        );
        let mut ok = Task::test("t").phase(TaskPhase::Succeeded);
        set_condition(
            &mut ok.status.conditions,
            "Succeeded",
            ConditionStatus::True,
            None,
            None,
            None,
            chrono::Utc::now(),
        );
        assert_eq!(check(&ok, &want), Some(Ok(())));
    }

    #[test]
    fn group_conditions() {
        let want = WaitFor::Condition("Complete".into(), ConditionStatus::True);
        let mut g = TaskGroup::new("g", Task::test("x").spec, "0-1");
        assert_eq!(check_group(&g, &want), None);
        g.status.finished_at = Some(chrono::Utc::now());
        assert!(
            check_group(&g, &want)
                .unwrap()
                .unwrap_err()
                .contains("will never be met")
        );
        set_condition(
            &mut g.status.conditions,
            "Complete",
            ConditionStatus::True,
            None,
            None,
            None,
            chrono::Utc::now(),
        );
        assert_eq!(check_group(&g, &want), Some(Ok(())));
    }
}
