//! `kohakuriver task …` on task groups (arrays): `submit --array`, waiting for a whole
//! group, `status GROUP`, `kill GROUP`. The pure parts (the group a submit makes, which
//! failure `-w` reports, the progress line) are tested here; `logs --index` and
//! `list --group` are plain name and selector rewrites in `task.rs`.

use std::io::Write;

use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use kohakuriver_api::group::indexes::parse_array_flag;
use kohakuriver_api::group::{FailedMember, GroupState, TaskGroup, TaskGroupStatus};
use kohakuriver_api::{Task, Timestamp};
use kohakuriver_client::Client;

use crate::cmd::describe_group::describe_group;
use crate::cmd::task::{
    SubmitArgs, ending_line, exit_code_of, is_transient, resolve_upstreams, snowflake_id,
    task_for_target,
};

/// The group `task submit --array` makes (pure): the task the other flags describe as its
/// template, the array's indexes and parallelism.
pub fn group_from_submit(
    args: &SubmitArgs,
    name: String,
    array: &str,
) -> Result<TaskGroup, String> {
    let (indexes, parallelism) =
        parse_array_flag(array).map_err(|e| format!("--array {array}: {e}"))?;
    let task = task_for_target(args, name.clone(), args.targets.first());
    let mut group = TaskGroup::new(name, task.spec, indexes);
    group.spec.template.metadata.labels = task.metadata.labels;
    group.spec.parallelism = parallelism;
    Ok(group)
}

/// `task submit --array …`: creates the group, prints its name alone on stdout, and with
/// `-w` waits for every member.
pub async fn submit_array(client: &Client, args: &SubmitArgs, array: &str) -> Result<i32> {
    let groups = client.api::<TaskGroup>();
    let mut attempt = 0;
    let created = loop {
        let name = args.name.clone().unwrap_or_else(snowflake_id);
        let mut group = group_from_submit(args, name, array).map_err(|e| anyhow!(e))?;
        resolve_upstreams(client, &mut group.spec.template.spec.depends_on).await?;
        match groups.create(&group).await {
            Ok(created) => break created,
            Err(e) if e.is_already_exists() && args.name.is_none() && attempt < 3 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let name = created.metadata.name.clone();
    println!("{name}");
    std::io::stdout().flush().ok();
    if !args.wait {
        return Ok(0);
    }
    tokio::select! {
        code = wait_for_group(client, &name) => code,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nstopped waiting; group {name} keeps running. Stop it with: kohakuriver task kill {name}"
            );
            Ok(130)
        }
    }
}

/// The member whose failure `-w` reports (pure): the first to finish, then the lowest index.
pub fn first_failure(status: &TaskGroupStatus) -> Option<&FailedMember> {
    status
        .failed_members
        .iter()
        .min_by_key(|m| (m.finished_at.unwrap_or(Timestamp::MAX_UTC), m.index))
}

/// The line `-w` prints on stderr when the counts change (pure).
pub fn progress_line(group: &TaskGroup) -> String {
    format!(
        "group {}: {}",
        group.metadata.name,
        group.status.counts.summary()
    )
}

/// True once `-w` may stop waiting: every member succeeded, or the group failed (the
/// failure policy tripped, it was killed, or it finished with failures).
pub fn settled(group: &TaskGroup) -> bool {
    group.condition_holds("Complete") || group.condition_holds("Failed")
}

/// Waits for a group to settle; 0 when every member succeeded, else the exit code of the
/// first member that failed, named on stderr.
pub async fn wait_for_group(client: &Client, name: &str) -> Result<i32> {
    let mut states = client.api::<TaskGroup>().watch_object(name);
    let mut last = String::new();
    let group = loop {
        let Some(state) = states.next().await else {
            bail!("the watch on group {name:?} ended unexpectedly");
        };
        let group = match state {
            Ok(Some(g)) => g,
            Ok(None) => bail!("group {name:?} was deleted while waiting for it"),
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let line = progress_line(&group);
        if group.status.started_at.is_some() && line != last {
            eprintln!("{line}");
            last = line;
        }
        if settled(&group) {
            break group;
        }
    };
    if group.condition_holds("Complete") {
        eprintln!("group {name}: all {} members succeeded", group.status.total);
        return Ok(0);
    }
    let Some(failed) = first_failure(&group.status) else {
        eprintln!("group {name} failed: {}", failed_message(&group));
        return Ok(1);
    };
    let member = client.api::<Task>().get(&failed.name).await?;
    eprintln!(
        "group {name} failed ({}); first failure: {}",
        group.status.counts.summary(),
        ending_line(&member)
    );
    Ok(exit_code_of(&member))
}

fn failed_message(group: &TaskGroup) -> String {
    kohakuriver_api::meta::find_condition(&group.status.conditions, "Failed")
        .and_then(|c| c.message.clone())
        .unwrap_or_else(|| group.status.counts.summary())
}

/// `task status GROUP`.
pub fn print_status(group: &TaskGroup) {
    print!("{}", describe_group(group, chrono::Utc::now()));
}

/// `task kill GROUP`: no more members are created and the unfinished ones are killed.
pub async fn kill_group(client: &Client, name: &str) -> Result<String> {
    let groups = client.api::<TaskGroup>();
    let written = groups
        .update_with(name, |g| {
            let change = g.spec.state != GroupState::Killed;
            g.spec.state = GroupState::Killed;
            change
        })
        .await?;
    Ok(format!(
        "taskgroup/{name} kill requested: {} unfinished members are being killed and no more will be created",
        written.status.counts.unfinished()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kohakuriver_api::TaskPhase;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    fn args(argv: &[&str]) -> SubmitArgs {
        let mut full = vec!["submit"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).unwrap().submit
    }

    #[test]
    fn submit_makes_a_group_from_the_flags() {
        let a = args(&[
            "-c",
            "2",
            "-l",
            "team=a",
            "--array",
            "0-9%3",
            "--",
            "echo",
            "$(KOHAKURIVER_ARRAY_INDEX)",
        ]);
        let g = group_from_submit(&a, "sweep".into(), a.array.as_deref().unwrap()).unwrap();
        assert_eq!(g.spec.indexes, "0-9");
        assert_eq!(g.spec.parallelism, Some(3));
        assert_eq!(g.spec.template.spec.resources.cpu, 2);
        assert_eq!(g.spec.template.metadata.labels["team"], "a");
        assert_eq!(
            g.spec.template.spec.command[1],
            "$(KOHAKURIVER_ARRAY_INDEX)"
        );
        let e = group_from_submit(&a, "x".into(), "0-9%0").unwrap_err();
        assert!(e.starts_with("--array 0-9%0: "), "{e}");
    }

    fn member(index: u32, secs: Option<i64>) -> FailedMember {
        FailedMember {
            index,
            name: format!("g-{index}"),
            phase: TaskPhase::Failed,
            exit_code: Some(2),
            reason: None,
            finished_at: secs.map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap()),
        }
    }

    #[test]
    fn the_first_failure_is_the_earliest_then_the_lowest_index() {
        let mut s = TaskGroupStatus::default();
        assert!(first_failure(&s).is_none());
        s.failed_members = vec![member(1, Some(9)), member(4, Some(5)), member(7, None)];
        assert_eq!(first_failure(&s).unwrap().index, 4);
        s.failed_members = vec![member(3, Some(5)), member(2, Some(5))];
        assert_eq!(first_failure(&s).unwrap().index, 2);
    }
}
