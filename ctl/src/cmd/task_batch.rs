//! `kohakuriver task submit -t a -t b -t c`: one task per target, as KohakuRiver's batch
//! submission does. The tasks are created in the order of the targets and their ids printed
//! one per line as they are made, so a script reads them as they come; `-w` waits for all
//! of them and exits with the first one's (in that order) that did not succeed.

use std::io::Write;

use anyhow::{Context, Result, bail};
use kohakuriver_api::Task;
use kohakuriver_client::Client;

use crate::cmd::task::{SubmitArgs, create, exit_code_of, wait_for_end, warn_if_unregistered};

/// The names of a batch of `count` tasks: `NAME-0`, `NAME-1`… from `--name NAME`, else
/// None each (every task draws its own snowflake id). Pure.
pub fn batch_names(name: Option<&str>, count: usize) -> Vec<Option<String>> {
    (0..count)
        .map(|i| name.map(|n| format!("{n}-{i}")))
        .collect()
}

/// The exit code of a batch waited for, and the task that decided it: 0 when every task
/// succeeded, else the code of the first (in submission order) that did not. Pure.
pub fn batch_outcome(done: &[Task]) -> (i32, Option<&Task>) {
    done.iter()
        .map(|t| (exit_code_of(t), t))
        .find(|(code, _)| *code != 0)
        .map_or((0, None), |(code, t)| (code, Some(t)))
}

/// Submits one task per target; see the module doc.
pub async fn submit_batch(client: &Client, args: SubmitArgs) -> Result<i32> {
    if args.attach {
        bail!(
            "--attach follows one task, and {} targets make {} tasks: use -w to wait for all of them, then `kohakuriver task logs ID` for each",
            args.targets.len(),
            args.targets.len()
        );
    }
    let names = batch_names(args.name.as_deref(), args.targets.len());
    let mut created = Vec::new();
    for (target, name) in args.targets.iter().zip(names) {
        let task = create(client, &args, name, Some(target))
            .await
            .with_context(|| {
                format!(
                    "cannot create the task for target {target} ({} of {} created; their ids are printed above and they stay submitted)",
                    created.len(),
                    args.targets.len()
                )
            })?;
        println!("{}", task.metadata.name);
        std::io::stdout().flush().ok();
        created.push(task.metadata.name);
    }
    let mut nodes: Vec<&str> = args.targets.iter().map(|t| t.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for node in nodes {
        warn_if_unregistered(client, node).await;
    }
    if !args.wait {
        return Ok(0);
    }
    let waits = created.iter().map(|name| wait_for_end(client, name, true));
    tokio::select! {
        done = futures::future::try_join_all(waits) => {
            let done = done?;
            let (code, first) = batch_outcome(&done);
            if let Some(task) = first {
                let failed = done.iter().filter(|t| exit_code_of(t) != 0).count();
                eprintln!(
                    "{failed} of {} tasks did not succeed; exiting with task {}'s code {code}",
                    done.len(),
                    task.metadata.name
                );
            }
            Ok(code)
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nstopped waiting; the tasks keep running. Stop them with: kohakuriver task kill {}",
                created.join(" ")
            );
            Ok(130)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::TaskPhase;

    #[test]
    fn names_of_a_batch() {
        assert_eq!(
            batch_names(Some("job"), 3),
            [
                Some("job-0".into()),
                Some("job-1".into()),
                Some("job-2".into())
            ]
        );
        assert_eq!(batch_names(None, 2), [None, None]);
    }

    #[test]
    fn the_first_task_that_did_not_succeed_decides() {
        let ended = |name: &str, phase, code| {
            let mut t = Task::test(name).phase(phase);
            t.status.exit_code = code;
            t
        };
        let ok = ended("a", TaskPhase::Succeeded, Some(0));
        let three = ended("b", TaskPhase::Failed, Some(3));
        let killed = ended("c", TaskPhase::Killed, None);
        let cases: [(&[&Task], i32, Option<&str>); 4] = [
            (&[&ok, &ok], 0, None),
            (&[&ok, &three, &killed], 3, Some("b")),
            (&[&killed, &three], 1, Some("c")),
            (&[], 0, None),
        ];
        for (tasks, code, name) in cases {
            let tasks: Vec<Task> = tasks.iter().map(|t| (*t).clone()).collect();
            let (got, first) = batch_outcome(&tasks);
            assert_eq!((got, first.map(|t| t.metadata.name.as_str())), (code, name));
        }
    }
}
