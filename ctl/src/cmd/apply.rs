//! `kohakuriver apply -f FILE|DIR|-`: create or update every object in the manifests, in
//! their order except that a task comes after the tasks of the same set it depends on.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kohakuriver_api::manifest::creation_order;
use kohakuriver_api::{ApplyOutcome, Manifest, Node, Resource, Task, TaskGroup};
use kohakuriver_client::{Api, ApplyOptions, Client, Deleted, Error, ListParams};

use crate::manifest_source::{ManifestFiles, Sourced};
use crate::output::kind_name;

/// How long `--force` waits for the old task to go before recreating it.
const FORCE_DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `kohakuriver apply`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver apply -f manifests/hello.yaml
  kohakuriver apply -f manifests/gitops/ --prune -l sweep=lr
  cat task.yaml | kohakuriver apply -f - --dry-run")]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestFiles,
    /// Validate and show what would happen; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete tasks matching -l that are not in the manifests.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector of the tasks --prune may delete, e.g. `app=train`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// When a field cannot change (the task is scheduled), delete the task and create it anew.
    #[arg(long)]
    pub force: bool,
}

/// Applies every object, reporting each on stdout and each failure on stderr; the exit code
/// is 1 when any object failed.
pub async fn run(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let objects = args.manifests.read_all()?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let opts = ApplyOptions {
        dry_run: args.dry_run,
    };
    let mut failed = 0;
    let mut applied_tasks = BTreeSet::new();
    // A task comes after the tasks of the same set it depends on, which must exist first.
    let manifests: Vec<&Manifest> = objects.iter().map(|o| &o.manifest).collect();
    for i in creation_order(&manifests) {
        let Sourced { origin, manifest } = &objects[i];
        let result = match manifest {
            Manifest::Task(task) => {
                applied_tasks.insert(task.metadata.name.clone());
                apply_one(&client.api::<Task>(), task, &opts, args.force).await
            }
            Manifest::Node(node) => apply_one(&client.api::<Node>(), node, &opts, args.force).await,
            Manifest::TaskGroup(group) => {
                apply_one(&client.api::<TaskGroup>(), group, &opts, args.force).await
            }
        };
        let kn = format!(
            "{}/{}",
            manifest.kind().to_ascii_lowercase(),
            manifest.name()
        );
        match result {
            Ok(verb) => println!("{kn} {verb}{suffix}"),
            // One unreachable server fails every object the same way; say it once.
            Err(e) if super::is_unreachable(&e) => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {kn} ({origin}): {}", explain(&e));
            }
        }
    }
    if args.prune {
        let selector = args.selector.as_deref().unwrap_or_default();
        failed += prune(
            &client.api::<Task>(),
            selector,
            &applied_tasks,
            args.dry_run,
            suffix,
        )
        .await?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Applies one object; answers the verb to print (`created`, `configured`, `unchanged`,
/// `replaced`).
async fn apply_one<R: Resource>(
    api: &Api<R>,
    obj: &R,
    opts: &ApplyOptions,
    force: bool,
) -> anyhow::Result<&'static str> {
    match api.apply(obj, opts).await {
        Ok(result) => Ok(match result.result {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }),
        Err(e) if force && is_immutable_change(&e) => {
            if !opts.dry_run {
                replace(api, obj).await?;
            }
            Ok("replaced")
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the object, waits until it is gone (its container stopped), and creates it anew.
async fn replace<R: Resource>(api: &Api<R>, obj: &R) -> anyhow::Result<()> {
    let name = obj.name();
    match api.delete(name).await {
        Ok(Deleted::Gone(_)) => {}
        Ok(Deleted::Pending(_)) => {
            eprintln!(
                "{}/{name} deleting (waiting for its container to stop)",
                R::SINGULAR
            );
            crate::wait::until_deleted(api, name, FORCE_DELETE_TIMEOUT).await?;
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e).context("cannot delete it to recreate it"),
    }
    let mut fresh = obj.clone();
    fresh.metadata_mut().resource_version = None;
    api.create(&fresh)
        .await
        .context("deleted it, but cannot create it again")?;
    Ok(())
}

/// A 422 whose every cause is a field that cannot change once the task is scheduled (as
/// opposed to an invalid manifest, which recreating would not fix).
fn is_immutable_change(e: &Error) -> bool {
    let Some(status) = e.status().filter(|_| e.is_invalid()) else {
        return false;
    };
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    !causes.is_empty() && causes.iter().all(|c| c.message.contains("cannot change"))
}

/// The error, plus a hint when `--force` would help.
fn explain(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Error>() {
        Some(api) if is_immutable_change(api) => {
            format!("{e} (use --force to delete and recreate it)")
        }
        _ => format!("{e:#}"),
    }
}

/// The tasks `--prune` deletes: those listed (by the selector) that the manifests did not
/// name (pure; `diff --prune` shows the same ones).
pub fn to_prune<'a>(
    listed: &'a [Task],
    keep: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a Task> {
    listed.iter().filter(|t| !keep.contains(t.name()))
}

/// Deletes tasks matching `selector` that the manifests did not name; returns how many
/// deletions failed.
async fn prune(
    api: &Api<Task>,
    selector: &str,
    keep: &BTreeSet<String>,
    dry_run: bool,
    suffix: &str,
) -> anyhow::Result<usize> {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("cannot list tasks matching {selector:?} to prune"))?;
    let mut failed = 0;
    for task in to_prune(&list.items, keep) {
        if dry_run || task.metadata.is_deleting() {
            println!("{} pruned{suffix}", kind_name(task));
            continue;
        }
        match api.delete(task.name()).await {
            Ok(_) => println!("{} pruned", kind_name(task)),
            Err(e) if e.is_not_found() => println!("{} pruned", kind_name(task)),
            Err(e) => {
                failed += 1;
                eprintln!("error: cannot prune {}: {e}", kind_name(task));
            }
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{FieldError, Status};

    #[test]
    fn immutable_changes_are_told_from_invalid_manifests() {
        let immutable = Error::Api(Box::new(Status::invalid(
            "Task",
            "a",
            vec![FieldError::new(
                "spec.command",
                "cannot change once the task is scheduled",
            )],
        )));
        assert!(is_immutable_change(&immutable));
        assert!(explain(&immutable.into()).ends_with("(use --force to delete and recreate it)"));
        let invalid = Error::Api(Box::new(Status::invalid(
            "Task",
            "a",
            vec![
                FieldError::new("spec.command", "cannot change once the task is scheduled"),
                FieldError::new("spec.resources.cpu", "must be at most 1024"),
            ],
        )));
        assert!(!is_immutable_change(&invalid));
    }
}
